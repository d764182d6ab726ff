//! Many `customer.*` events at once: each customer's events are folded in
//! memory through the same ordering rules as the per-event path
//! ([`customer::decide`]), then written with one statement per table (the
//! deletions through [`fanout::tombstone`], as on every path).
//!
//! A customer whose events need more than the rules and the stored link
//! goes to the per-event path instead, all of its events in order:
//! - a same-second tie, or a report that may be older than a write of
//!   ours acknowledged since (needs a re-read from Stripe);
//! - a local change Stripe has not acknowledged yet (the conflict policy
//!   reads and merges it field by field);
//! - an unlinked customer naming a local row in its metadata (the echo of
//!   our own create, to be attached to that row);
//! - with changes passed on to other services, echoes of our own writes
//!   mixed with reports (what each changed is passed on, or not, alone).

use std::collections::HashMap;

use crate::customers::CustomerId;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Uuid as SqlUuid};
use serde_json::Value;

use super::customer;
use super::order::{Step, Watermark};
use super::{Applied, ApplyError};
use crate::customers::fanout::{self, SharedRow};
use crate::customers::settings::FanOut;
use crate::db::models::NewIdMapEntry;
use crate::db::schema::customers;
use crate::outbox;
use crate::stripe::StripeEvent;
use crate::sync::idmap::{self, Advance};
use crate::sync::{entity, service};

/// What folding a batch produced: outcomes for the events it applied
/// (ledger outcomes still to be recorded by the caller), and the batch
/// positions of events left to the per-event path.
#[derive(Debug, Default)]
pub(super) struct Folded {
    pub applied: Vec<(usize, Applied)>,
    pub per_event: Vec<usize>,
}

/// One customer's events of the batch and what they add up to.
struct Fold<'e> {
    account: &'e str,
    external_id: &'e str,
    events: Vec<(usize, &'e StripeEvent)>,
    /// The link as stored before the batch.
    stored: Option<(CustomerId, Watermark)>,
    /// Set when the customer is new: the row and link are inserted.
    created: Option<CustomerId>,
    /// The last snapshot written to the row, if any.
    row: Option<&'e Value>,
    tombstone: bool,
    /// Set when the deleting event's snapshot is written too.
    tombstone_snapshot: bool,
    /// The steps that change an existing row (every snapshot written, and
    /// the deletion): one `customers.version` bump each, as on the
    /// per-event path, but for a deletion that writes no snapshot to a row
    /// deleted here already (see [`update_customers`]).
    writes: i64,
    /// The link's state after the batch and the event that set it.
    mark: Option<(Watermark, &'e str)>,
    /// Set when an event that changed the row is not an echo of our own
    /// write: what the fold changed is passed on to the other services.
    reported: bool,
    outcomes: Vec<(usize, Applied)>,
}

impl<'e> Fold<'e> {
    /// Runs the customer's events through the rules; false when one of them
    /// needs the per-event path.
    /// `newest_change`: the customer's newest outbox row bound for Stripe.
    /// `last_acknowledged`: when Stripe last acknowledged a change of ours
    /// to the customer.
    fn run(
        &mut self,
        has_pending_change: bool,
        newest_change: Option<i64>,
        last_acknowledged: Option<DateTime<Utc>>,
        fan_out: FanOut,
    ) -> bool {
        let mut link = self.stored.map(|(_, mark)| mark);
        let mut echoed = false;
        for &(i, event) in &self.events {
            let (step, next) = customer::decide(event, link);
            match customer::settled_by_reading(event, step, last_acknowledged) {
                Step::ReRead => return false,
                Step::Create { .. } if customer::local_id_in_metadata(&event.object).is_some() => {
                    return false
                }
                Step::Write if has_pending_change => return false,
                // An echo of an older write of ours: the fields our later
                // changes set keep their local value (see
                // `customer::keep_pending_local_fields`).
                Step::Write
                    if customer::echoed_row(event)
                        .is_some_and(|echoed| newest_change.is_some_and(|n| n > echoed)) =>
                {
                    return false
                }
                Step::Create { deleted } => {
                    self.created = Some(CustomerId::random());
                    self.row = Some(&event.object);
                    self.tombstone = deleted;
                }
                Step::Delete { columns } => {
                    if columns {
                        self.row = Some(&event.object);
                    }
                    self.tombstone = true;
                    self.tombstone_snapshot = columns;
                    self.writes += 1;
                }
                Step::Write => {
                    self.row = Some(&event.object);
                    self.writes += 1;
                }
                Step::Stale | Step::AfterTombstone => {}
            }
            if matches!(
                step,
                Step::Create { .. } | Step::Delete { .. } | Step::Write
            ) {
                self.mark = Some((next, event.id.as_str()));
                self.reported |= !event.is_own_echo();
                echoed |= event.is_own_echo();
            }
            link = Some(next);
            self.outcomes.push((i, step.applied()));
        }
        // What an echo changed is not passed on and what a report changed
        // is: mixed, only the per-event path can tell the two apart.
        !(fan_out == FanOut::ToOtherServices && echoed && self.reported)
    }
}

/// Applies `events` (batch position, event), none of them in the ledger
/// yet and all with a customer id, inside the caller's transaction; the
/// caller ledgers the ones applied.
pub(super) fn apply(
    conn: &mut PgConnection,
    events: &[(usize, &StripeEvent)],
    fan_out: FanOut,
) -> Result<Folded, ApplyError> {
    let mut folds: Vec<Fold<'_>> = Vec::new();
    let mut by_key: HashMap<(&str, &str), usize> = HashMap::new();
    for &(i, event) in events {
        let key = (event.account.as_str(), customer::customer_id(event)?);
        let at = *by_key.entry(key).or_insert_with(|| {
            folds.push(Fold {
                account: key.0,
                external_id: key.1,
                events: Vec::new(),
                stored: None,
                created: None,
                row: None,
                tombstone: false,
                tombstone_snapshot: false,
                writes: 0,
                mark: None,
                reported: false,
                outcomes: Vec::new(),
            });
            folds.len() - 1
        });
        folds[at].events.push((i, event));
    }

    let keys: Vec<(&str, &str)> = folds.iter().map(|f| (f.account, f.external_id)).collect();
    for link in idmap::lock_many(conn, service::STRIPE, entity::CUSTOMER, &keys)? {
        if let Some(&at) = by_key.get(&(link.account.as_str(), link.external_id.as_str())) {
            let mark = Watermark {
                version: link.remote_version,
                deleted: link.remote_deleted,
            };
            folds[at].stored = Some((link.local_id, mark));
        }
    }
    // Lock the live rows before reading their pending changes, as the
    // per-event path does, so a concurrent API write lands either before
    // the read or after this transaction.
    let mut live: Vec<CustomerId> = folds
        .iter()
        .filter_map(|f| f.stored.filter(|(_, m)| !m.deleted).map(|(id, _)| id))
        .collect();
    live.sort_unstable();
    // The shared columns come along: what a change is passed on with is
    // the difference the batch makes to them. NO KEY, as every customer
    // row lock is (see `customers::lock`).
    let before: HashMap<CustomerId, SharedRow> = customers::table
        .filter(customers::id.eq_any(&live))
        .order(customers::id)
        .select(SharedRow::as_select())
        .for_no_key_update()
        .load::<SharedRow>(conn)?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let pending = outbox::with_undelivered(conn, &live, service::STRIPE)?;
    let newest = outbox::newest_bound_for(conn, &live, service::STRIPE)?;
    let acknowledged = outbox::last_acknowledged_at(conn, &live, service::STRIPE)?;

    let mut folded = Folded::default();
    let mut ready = Vec::with_capacity(folds.len());
    for mut fold in folds {
        let has_pending = fold.stored.is_some_and(|(id, _)| pending.contains(&id));
        let newest_change = fold.stored.and_then(|(id, _)| newest.get(&id).copied());
        let last_acknowledged = fold
            .stored
            .and_then(|(id, _)| acknowledged.get(&id).copied());
        if fold.run(has_pending, newest_change, last_acknowledged, fan_out) {
            folded.applied.append(&mut fold.outcomes);
            ready.push(fold);
        } else {
            folded.per_event.extend(fold.events.iter().map(|&(i, _)| i));
        }
    }
    insert_customers(conn, &ready)?;
    let tombstoned = tombstone(conn, &ready, fan_out)?;
    update_customers(conn, &ready, &tombstoned)?;
    write_links(conn, &ready)?;
    if fan_out == FanOut::ToOtherServices {
        pass_on(conn, &ready, &before)?;
    }
    Ok(folded)
}

/// Tombstones the existing customers the batch deletes, through the one
/// function every path deletes with, which passes on what Stripe reported
/// (see `customer::passes_on`) and was live here. Returns the ids it
/// tombstoned (in id order).
fn tombstone(
    conn: &mut PgConnection,
    folds: &[Fold<'_>],
    fan_out: FanOut,
) -> QueryResult<Vec<CustomerId>> {
    let deletions: Vec<(CustomerId, Option<&str>)> = folds
        .iter()
        .filter(|f| f.tombstone && f.created.is_none())
        .map(|f| {
            let local_id = f.stored.expect("an existing customer has a link").0;
            let origin =
                (fan_out == FanOut::ToOtherServices && f.reported).then_some(service::STRIPE);
            (local_id, origin)
        })
        .collect();
    fanout::tombstone(conn, &deletions)
}

/// Appends, with Stripe as the origin, what the folds Stripe reported
/// changed of the shared columns, as the per-event path does (see
/// `customer::passes_on`): a new customer, or the columns an update
/// changed ([`tombstone`] passes deletions on).
fn pass_on(
    conn: &mut PgConnection,
    folds: &[Fold<'_>],
    before: &HashMap<CustomerId, SharedRow>,
) -> QueryResult<()> {
    let mut rows = Vec::new();
    for f in folds.iter().filter(|f| f.reported) {
        let after = f.row.map(|object| customer::columns(object).shared());
        if let Some(local_id) = f.created {
            if !f.tombstone {
                let fields = fanout::created(after.expect("a created customer has a snapshot"));
                rows.push(outbox::Appended {
                    local_id,
                    operation: outbox::Operation::Create,
                    fields,
                });
            }
            continue;
        }
        let Some(old) = f.stored.and_then(|(id, _)| before.get(&id)) else {
            continue;
        };
        // A deletion is passed on by [`tombstone`] alone, and a row deleted
        // here before passes no update on (its deletion went out, if at
        // all, from the path that made it).
        if old.deleted_at.is_some() || f.tombstone {
            continue;
        }
        let Some(after) = after else { continue };
        let fields = fanout::changed(old.shared(), after);
        if fields.is_empty() {
            continue;
        }
        rows.push(outbox::Appended {
            local_id: old.id,
            operation: outbox::Operation::Update,
            fields,
        });
    }
    outbox::append_many_from(conn, service::STRIPE, rows)
}

fn insert_customers(conn: &mut PgConnection, folds: &[Fold<'_>]) -> QueryResult<()> {
    let now = chrono::Utc::now();
    let rows: Vec<_> = folds
        .iter()
        .filter_map(|f| {
            let id = f.created?;
            let object = f.row.expect("a created customer has a snapshot");
            let c = customer::columns(object);
            Some((
                customers::id.eq(id),
                (
                    customers::email.eq(c.email),
                    customers::name.eq(c.name),
                    customers::phone.eq(c.phone),
                    customers::description.eq(c.description),
                    customers::metadata.eq(c.metadata),
                    customers::stripe_object.eq(Some(c.stripe_object)),
                ),
                customers::deleted_at.eq(f.tombstone.then_some(now)),
                customers::version.eq(1 + f.writes),
            ))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    diesel::insert_into(customers::table)
        .values(rows)
        .execute(conn)
        .map(drop)
}

/// Writes the last snapshot of every existing row the batch wrote one to,
/// in one statement, with a version bump per change; the deletion's is
/// [`tombstone`]'s when it tombstoned the row (`tombstoned`, the ids it
/// returned).
fn update_customers<'e>(
    conn: &mut PgConnection,
    folds: &[Fold<'e>],
    tombstoned: &[CustomerId],
) -> QueryResult<()> {
    let changed: Vec<(CustomerId, &Fold<'_>)> = folds
        .iter()
        .filter(|f| f.created.is_none() && f.row.is_some())
        .map(|f| (f.stored.expect("an existing customer has a link").0, f))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    // Borrowed from the snapshots: nothing of them is copied but the bytes
    // sent to Postgres.
    let projections: Vec<customer::Columns<'e>> = changed
        .iter()
        .map(|(_, f)| customer::columns(f.row.expect("filtered on a snapshot")))
        .collect();
    let column = |get: fn(customer::Columns<'e>) -> Option<&'e str>| -> Vec<Option<&'e str>> {
        projections.iter().map(|&p| get(p)).collect()
    };
    diesel::sql_query(
        "UPDATE customers AS c SET \
           email = v.email, name = v.name, phone = v.phone, description = v.description, \
           metadata = v.metadata, stripe_object = v.stripe_object, \
           updated_at = now(), \
           version = c.version + v.writes \
         FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) \
           AS v(id, email, name, phone, description, metadata, stripe_object, writes) \
         WHERE c.id = ANY($1) AND c.id = v.id",
    )
    .bind::<Array<SqlUuid>, _>(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(column(|p| p.email))
    .bind::<Array<Nullable<Text>>, _>(column(|p| p.name))
    .bind::<Array<Nullable<Text>>, _>(column(|p| p.phone))
    .bind::<Array<Nullable<Text>>, _>(column(|p| p.description))
    .bind::<Array<Jsonb>, _>(projections.iter().map(|p| p.metadata).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(
        projections
            .iter()
            .map(|p| p.stripe_object)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<BigInt>, _>(
        changed
            .iter()
            .map(|(id, f)| {
                // The deletion counts as a change of this statement's only
                // when it wrote its snapshot to a row deleted here already:
                // a row it tombstoned had its version bumped by
                // [`tombstone`], and a deletion without a snapshot changed
                // nothing of a row deleted here (as on the per-event path).
                let tombstoned_now = tombstoned.contains(id);
                let uncounted = f.tombstone && (tombstoned_now || !f.tombstone_snapshot);
                f.writes - i64::from(uncounted)
            })
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .map(drop)
}

/// Inserts the links of new customers and advances the changed ones.
fn write_links(conn: &mut PgConnection, folds: &[Fold<'_>]) -> QueryResult<()> {
    let mut new = Vec::new();
    let mut advanced = Vec::new();
    for f in folds {
        let Some((mark, event_id)) = f.mark else {
            continue;
        };
        match f.created {
            Some(local_id) => new.push(NewIdMapEntry {
                service: service::STRIPE,
                account: f.account,
                entity: entity::CUSTOMER,
                external_id: f.external_id,
                local_id,
                remote_version: mark.version,
                remote_event_id: Some(event_id),
                remote_deleted: mark.deleted,
            }),
            None => advanced.push(Advance {
                account: f.account,
                external_id: f.external_id,
                version: mark.version,
                event_id,
                deleted: mark.deleted,
            }),
        }
    }
    idmap::insert_many(conn, &new)?;
    idmap::advance_many(conn, service::STRIPE, entity::CUSTOMER, &advanced)
}
