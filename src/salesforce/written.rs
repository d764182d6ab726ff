//! What we wrote to a customer's Contact, and so which of a version's
//! values are our own writes reported back.
//!
//! Salesforce reports a Contact's state, not each change: one version can
//! carry a person's edit and our later write together, last modified by
//! the integration user. So an echo is recognised field by field, by
//! value: our write reported back holds what the local row holds, and
//! changes nothing. What is left to judge is a value that differs from
//! the local row: someone's edit to apply, or an older state reported
//! after our newer write (our own earlier write, an edit ours
//! overwrote), which must not roll the row back. What we wrote tells
//! them apart: the outbox itself, i.e. the customer's changes of other
//! origins that salesforce-outbound has delivered (`outbox_deliveries`,
//! with the time the delivery was recorded), and those it has not
//! delivered yet (in flight: their fields keep the local value, the
//! conflict policy).
//!
//! Our acknowledgement times are the database's clock and
//! `SystemModstamp` is Salesforce's, so "around" is [`CLOCK_SKEW_MS`] wide.
//! Within it the order of a person's edit and our write of one field cannot
//! be told from the stamp: such a value is [`Verdict::Unsure`], and the
//! apply reads the Contact's current state instead, judged against our
//! writes by the database's clock alone ([`Writes::judge_current`]).

use std::collections::{HashMap, HashSet};

use crate::customers::CustomerId;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use crate::customers::fanout;
use crate::db::schema::{outbox, outbox_deliveries};
use crate::outbox::DeliveryStatus;
use crate::sync::{entity, service};

/// How far the host clock may be from Salesforce's.
pub const CLOCK_SKEW_MS: i64 = 60_000;

/// How many of a customer's delivered changes are looked at: far more than
/// fit in [`CLOCK_SKEW_MS`] at the pace changes are made.
const RECENT: i64 = 100;

/// What a version's value of one field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ours (written by us, or about to be): the local value stands.
    Ours,
    /// Someone else's: it is applied.
    Theirs,
    /// Cannot tell from the stamp: read the Contact's current state.
    Unsure,
}

/// One delivered write of a field: its value and when its acknowledgement
/// was recorded (`outbox_deliveries.delivered_at`, milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Write {
    value: Option<String>,
    acked: i64,
}

/// Our writes to one customer's Contact.
#[derive(Debug, Default)]
pub struct Writes {
    /// Per customer column, in the order Salesforce acknowledged them.
    delivered: HashMap<String, Vec<Write>>,
    /// Columns of changes salesforce-outbound has not delivered yet.
    pending: HashSet<String>,
    /// Columns whose last change Salesforce refused (dead-lettered, to be
    /// fixed and replayed): the local value stands, as for one in flight.
    refused: HashSet<String>,
}

impl Writes {
    /// Reads them from the outbox (in the apply's transaction, after the
    /// customer's row is locked, so no delivery of it is recorded meanwhile
    /// by the locking writers).
    pub fn load(conn: &mut PgConnection, local_id: CustomerId) -> QueryResult<Self> {
        let pending = fanout::pending_for(conn, local_id, service::SALESFORCE)?;
        let mut rows: Vec<(Value, DateTime<Utc>, DeliveryStatus)> = outbox::table
            .inner_join(
                outbox_deliveries::table.on(outbox_deliveries::outbox_id
                    .eq(outbox::id)
                    .and(outbox_deliveries::service.eq(service::SALESFORCE))),
            )
            .filter(outbox::entity.eq(entity::CUSTOMER))
            .filter(outbox::local_id.eq(local_id))
            .filter(outbox::origin.ne(service::SALESFORCE))
            .order(outbox_deliveries::delivered_at.desc())
            .limit(RECENT)
            .select((
                outbox::fields,
                outbox_deliveries::delivered_at,
                outbox_deliveries::status,
            ))
            .load(conn)?;
        rows.reverse();
        let mut writes = Self {
            pending,
            ..Self::default()
        };
        for (fields, acked, status) in rows {
            if status == DeliveryStatus::Synced {
                writes.record(&fields, acked.timestamp_millis());
            } else {
                writes.refused(&fields);
            }
        }
        Ok(writes)
    }

    /// A change Salesforce refused: its columns keep the local value
    /// until a later change of them is delivered.
    fn refused(&mut self, fields: &Value) {
        for (column, _) in shared(fields) {
            self.refused.insert(column.clone());
        }
    }

    fn record(&mut self, fields: &Value, acked: i64) {
        for (column, value) in shared(fields) {
            self.refused.remove(column);
            self.delivered
                .entry(column.clone())
                .or_default()
                .push(Write {
                    value: normalized(value.as_str()),
                    acked,
                });
        }
    }

    /// Judges the value a version stamped `stamp` (Salesforce's clock)
    /// reports for `column`, a value the local row does not hold. Our
    /// writes acknowledged around the stamp may have landed after the
    /// version was stamped.
    pub fn judge(&self, column: &str, value: Option<&str>, stamp: i64) -> Verdict {
        self.verdict(column, value, |w| w.acked >= stamp - CLOCK_SKEW_MS)
    }

    /// Judges the value the Contact's current state, read from `read_at`
    /// on (the database's clock, taken before the read), has for `column`,
    /// a value the local row does not hold. Our writes recorded since
    /// `read_at` raced the read.
    pub fn judge_current(&self, column: &str, value: Option<&str>, read_at: i64) -> Verdict {
        self.verdict(column, value, |w| w.acked >= read_at)
    }

    /// The rules, for a value that differs from the local row's:
    /// - a column with a change in flight is ours: the local value stands
    ///   (the conflict policy);
    /// - when no write of ours to the column may have landed after the
    ///   report was made, the report is newer than everything we wrote,
    ///   so its value is someone's edit (a person's, or a revert of one)
    ///   and is applied;
    /// - when one may have, a report of our latest value is applied too
    ///   (it is what we want the field to hold anyway), but any other
    ///   value may be an older state (our earlier write reported late, an
    ///   edit our write overwrote) or a later edit: only the current
    ///   state can say.
    fn verdict(
        &self,
        column: &str,
        value: Option<&str>,
        may_follow: impl Fn(&Write) -> bool,
    ) -> Verdict {
        if self.pending.contains(column) || self.refused.contains(column) {
            return Verdict::Ours;
        }
        let Some(writes) = self.delivered.get(column) else {
            return Verdict::Theirs;
        };
        if !writes.iter().any(may_follow) {
            return Verdict::Theirs;
        }
        match writes.last() {
            Some(latest) if latest.value == normalized(value) => Verdict::Theirs,
            _ => Verdict::Unsure,
        }
    }
}

/// The customer columns a change sets, with their values.
fn shared(fields: &Value) -> impl Iterator<Item = (&String, &Value)> {
    fields
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(column, _)| fanout::SHARED_FIELDS.contains(&column.as_str()))
}

/// Whether two values are the same across the two systems.
pub fn same(a: Option<&str>, b: Option<&str>) -> bool {
    normalized(a) == normalized(b)
}

/// A value as it compares across the two systems: Salesforce trims fields
/// and splits a name on its last space, so spacing is not a difference.
fn normalized(value: Option<&str>) -> Option<String> {
    let words: Vec<&str> = value?.split_whitespace().collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_764_628_080_000;

    fn writes(delivered: &[(Value, i64)], pending: &[&str]) -> Writes {
        let mut w = Writes {
            pending: pending.iter().map(|c| (*c).to_owned()).collect(),
            ..Writes::default()
        };
        for (fields, acked) in delivered {
            w.record(fields, *acked);
        }
        w
    }

    #[test]
    fn an_edit_newer_than_all_our_writes_is_theirs_and_one_near_our_write_is_unsure() {
        let w = writes(&[(json!({"email": "ours@example.com"}), T + 300)], &[]);
        // A person's phone: we never wrote the field.
        assert_eq!(w.judge("phone", Some("+1 555"), T), Verdict::Theirs);
        // Another email near our write: which came last cannot be told
        // from the stamp.
        assert_eq!(
            w.judge("email", Some("theirs@example.com"), T),
            Verdict::Unsure
        );
        // Our latest value, whatever its order: applying it is safe.
        assert_eq!(
            w.judge("email", Some(" ours@example.com "), T),
            Verdict::Theirs
        );
        // Long after our write: someone's edit.
        let later = T + 300 + CLOCK_SKEW_MS + 1;
        assert_eq!(
            w.judge("email", Some("theirs@example.com"), later),
            Verdict::Theirs
        );
    }

    #[test]
    fn an_older_write_reported_late_is_unsure_and_a_field_in_flight_is_kept() {
        let w = writes(
            &[
                (json!({"name": "Ada Lovelace", "email": "a@example.com"}), T),
                (json!({"email": "b@example.com"}), T + 1_000),
            ],
            &["phone"],
        );
        // Our first write reported after the second was acknowledged.
        assert_eq!(w.judge("email", Some("a@example.com"), T), Verdict::Unsure);
        assert_eq!(w.judge("email", Some("b@example.com"), T), Verdict::Theirs);
        assert_eq!(w.judge("phone", Some("+1 555"), T), Verdict::Ours);
        // Long after both: a revert to our first value is someone's.
        let later = T + 1_000 + CLOCK_SKEW_MS + 1;
        assert_eq!(
            w.judge("email", Some("a@example.com"), later),
            Verdict::Theirs
        );
        // Metadata is not a Contact field.
        let w = writes(&[(json!({"metadata": {"a": 1}}), T)], &[]);
        assert!(w.delivered.is_empty());
    }

    #[test]
    fn a_field_whose_last_change_was_refused_keeps_the_local_value() {
        let mut w = writes(&[(json!({"email": "a@example.com"}), T)], &[]);
        w.refused(&json!({"email": "bad@exa_mple", "metadata": {}}));
        let later = T + CLOCK_SKEW_MS + 1;
        assert_eq!(
            w.judge("email", Some("a@example.com"), later),
            Verdict::Ours
        );
        w.record(&json!({"email": "c@example.com"}), later);
        assert_eq!(
            w.judge("email", Some("d@example.com"), later + CLOCK_SKEW_MS + 1),
            Verdict::Theirs
        );
    }

    #[test]
    fn the_current_state_is_theirs_unless_our_write_raced_the_read() {
        let w = writes(&[(json!({"email": "ours@example.com"}), T)], &["phone"]);
        let theirs = Some("theirs@example.com");
        assert_eq!(w.judge_current("email", theirs, T + 1), Verdict::Theirs);
        assert_eq!(w.judge_current("email", theirs, T), Verdict::Unsure);
        assert_eq!(
            w.judge_current("email", Some("ours@example.com"), T),
            Verdict::Theirs
        );
        assert_eq!(w.judge_current("phone", Some("+1"), T + 1), Verdict::Ours);
        assert_eq!(w.judge_current("name", None, T + 1), Verdict::Theirs);
    }
}
