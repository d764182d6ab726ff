//! Objects a batch's objects name that Stripe sends no events for (a
//! charge's balance transaction, [`crate::registry::NAMED`]): read when the mirror
//! does not hold them settled, and written to their own relation as
//! snapshots, ordered like any snapshot, in the same transaction as the
//! object that names them.
//!
//! Such a read is the apply's business only as far as it is cheap and
//! harmless: at most [`READS_PER_BATCH`] a batch, and one that fails but
//! for a passing reason (429, 5xx, the network) is left to `refresh`
//! rather than refusing the event that named it or holding its partition.

use std::borrow::Cow;
use std::collections::HashSet;

use diesel::PgConnection;
use serde_json::Value;

use super::{load_stored, row_account, Locking, ObjectPlan, Row};
use crate::apply::order::{self, Facts, Step};
use crate::apply::{ApplyError, RemoteReader};
use crate::registry::Resource;
use crate::stripe::{AccountId, RemoteObject, StripeEvent};

/// The ids `event`'s object names, with their type (a string id, or the
/// `id` of an expanded object).
fn named_in<'e>(
    resource: &'static Resource,
    event: &'e StripeEvent,
) -> impl Iterator<Item = (&'static Resource, &'e str)> + 'e {
    resource.names().filter_map(move |(field, named)| {
        let value = event.object.get(field)?;
        let id = value
            .as_str()
            .or_else(|| value.get("id").and_then(Value::as_str))?;
        (!id.is_empty()).then_some((named, id))
    })
}

/// Plans for the objects the rows `plans` will write name, each once and
/// none `plans` holds already: read from Stripe unless stored settled, and
/// written unless the stored state is newer than the read. Their rows are
/// locked after the batch's own, so a batch holding one of them from its
/// own round (a refresh's snapshot) can meet another in a deadlock, which
/// Postgres breaks and the consume loop retries.
pub(super) fn plans<'e>(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    plans: &[ObjectPlan<'e>],
    locking: Locking,
) -> Result<Vec<ObjectPlan<'e>>, ApplyError> {
    // An object the batch already plans (a refresh's snapshot of it) is
    // written once, by that plan.
    let mut seen: HashSet<(&str, &AccountId, &str)> = plans
        .iter()
        .map(|p| (p.resource.relation, p.account, p.id))
        .collect();
    let mut named: Vec<ObjectPlan<'e>> = Vec::new();
    for plan in plans {
        let Some(row) = &plan.row else { continue };
        if row.deleted {
            continue;
        }
        for &(_, event) in &plan.events {
            for (resource, id) in named_in(plan.resource, event) {
                if seen.insert((resource.relation, plan.account, id)) {
                    named.push(ObjectPlan::named(resource, plan.account, id, event));
                }
            }
        }
    }
    if named.is_empty() {
        return Ok(named);
    }
    load_stored(conn, &mut named, locking)?;
    let read_at = crate::ingest::unix_now();
    let mut reads = 0;
    for plan in &mut named {
        if plan.stored_settled() {
            continue;
        }
        reads += 1;
        if reads > READS_PER_BATCH {
            break;
        }
        plan.read_named(remote, read_at)?;
    }
    Ok(named)
}

/// The most named objects one batch reads: each read is a call on the
/// account's rate budget before the batch's transaction, so a backlog of
/// charges costs at most this many per batch; the rest are left to
/// `refresh` (or the next event naming them).
pub(in crate::apply) const READS_PER_BATCH: usize = 64;

/// Whether a failed read of a named object is worth retrying the batch
/// for: only what passes by itself (429, 5xx, the network). Anything else
/// (a 403 for an account the platform no longer sees, a key without the
/// permission, a 404 from a wrong base URL) would hold the batch, and
/// everything behind it, for a read it can do without.
pub(in crate::apply) fn worth_retrying(error: &ApplyError) -> bool {
    match error {
        ApplyError::Transient { source, .. } => source
            .downcast_ref::<crate::stripe::StripeError>()
            .is_some_and(crate::stripe::StripeError::is_transient),
        ApplyError::Permanent(_) => false,
    }
}

/// The (account, type, id) of each named object the events' objects name
/// that the mirror does not hold settled, for reading before the
/// transaction (`super::super::prefetch_lists`).
pub(in crate::apply) fn to_read(
    conn: &mut PgConnection,
    events: &[(&'static Resource, &StripeEvent)],
) -> Result<Vec<(AccountId, &'static Resource, String)>, ApplyError> {
    let mut seen = HashSet::new();
    let mut named: Vec<ObjectPlan<'_>> = Vec::new();
    for &(resource, event) in events {
        if super::facts(resource, event).delete {
            continue;
        }
        let account = row_account(resource, event);
        for (target, id) in named_in(resource, event) {
            if seen.insert((target.relation, account, id)) {
                named.push(ObjectPlan::named(target, account, id, event));
            }
        }
    }
    load_stored(conn, &mut named, Locking::None)?;
    Ok(named
        .into_iter()
        .filter(|p| !p.stored_settled())
        .take(READS_PER_BATCH)
        .map(|p| (p.account.clone(), p.resource, p.id.to_owned()))
        .collect())
}

impl<'e> ObjectPlan<'e> {
    fn named(
        resource: &'static Resource,
        account: &'e AccountId,
        id: &'e str,
        by: &'e StripeEvent,
    ) -> Self {
        Self {
            resource,
            account,
            id,
            // No events of its own: the row records the naming event.
            events: Vec::new(),
            stored: None,
            stored_status: None,
            row: None,
            outcomes: Vec::new(),
            refused: None,
            named_by: Some(by),
        }
    }

    fn stored_settled(&self) -> bool {
        self.stored
            .is_some_and(|s| s.deleted || self.resource.settled(self.stored_status.as_deref()))
    }

    /// Reads the named object unless stored settled, and plans its row as a
    /// snapshot read at `read_at`.
    fn read_named(&mut self, remote: &dyn RemoteReader, read_at: i64) -> Result<(), ApplyError> {
        // Not read before the transaction (the stored state moved since,
        // or past the batch's reads): left for later, never a miss.
        let Some(answer) = remote.current_if_read(self.account, self.resource.path, self.id) else {
            return Ok(());
        };
        let current = match answer {
            Ok(RemoteObject::Live(current)) => current,
            // Never deleted by Stripe; nothing to write.
            Ok(RemoteObject::Deleted) => return Ok(()),
            Err(e) if worth_retrying(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    objects = self.resource.relation, id = self.id, error = %e,
                    "a named object could not be read; refresh will list it"
                );
                return Ok(());
            }
        };
        let facts = Facts {
            delete: false,
            snapshot: true,
            revives: false,
        };
        let (step, mark) = order::decide(facts, read_at, self.stored);
        if !matches!(step, Step::Create { .. } | Step::Write | Step::ReRead) {
            return Ok(());
        }
        let by = self.named_by.expect("a named object's plan");
        self.row = Some(Row {
            data: Some(Cow::Owned(current)),
            deleted: false,
            mark,
            event_id: by.id.as_str(),
            children: Vec::new(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn a_charge_names_its_balance_transaction_as_an_id_or_expanded() {
        let charge = registry::by_object("charge").unwrap();
        let event = |bt: Value| {
            StripeEvent::parse(
                serde_json::json!({
                    "id": "evt_1", "type": "charge.succeeded", "created": 1,
                    "data": {"object": {"id": "ch_1", "object": "charge", "balance_transaction": bt}},
                })
                .to_string()
                .as_bytes(),
            )
            .unwrap()
        };
        let ids = |e: &StripeEvent| {
            named_in(charge, e)
                .map(|(r, id)| (r.object, id.to_owned()))
                .collect::<Vec<_>>()
        };
        let plain = event(serde_json::json!("txn_1"));
        assert_eq!(ids(&plain), [("balance_transaction", "txn_1".to_owned())]);
        let expanded = event(serde_json::json!({"id": "txn_2", "object": "balance_transaction"}));
        assert_eq!(
            ids(&expanded),
            [("balance_transaction", "txn_2".to_owned())]
        );
        assert!(ids(&event(Value::Null)).is_empty());
    }
}
