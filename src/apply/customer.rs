//! `customer.*` events → `customers` + `id_map`.
//!
//! Ordering (invariant 4), per Stripe customer, follows [`order`]'s rules
//! with the watermark kept on the link (`id_map.remote_version`,
//! `remote_deleted`).
//!
//! [`decide`] applies the rules to a customer event; [`apply`] carries one
//! decision out against the database, and the batch applier
//! (`super::customer_batch`) folds many decisions in memory before writing.

use std::collections::HashMap;

use crate::customers::CustomerId;
use diesel::prelude::*;
use serde_json::Value;

use super::order::{self, Step, Watermark};
use super::{Applied, ApplyError, Recording, Refusal, RemoteReader};
use crate::customers::fanout::{self, Shared, SharedRow};
use crate::customers::input::LOCAL_ID_METADATA_KEY;
use crate::customers::settings::FanOut;
use crate::db::models::{Customer, CustomerProjection, NewIdMapEntry};
use crate::db::schema::customers;
use crate::outbox;
use crate::stripe::{RemoteObject, StripeEvent};
use crate::sync::idmap::{self, ExternalKey};
use crate::sync::{entity, service};

/// Synthetic event type of a customer's current state read from the list
/// API (backfill) or a diff repair.
pub const SNAPSHOT_TYPE: &str = "customer.snapshot";

/// The customer id an event is about, refused when it is not one.
pub(super) fn customer_id(event: &StripeEvent) -> Result<&str, ApplyError> {
    let id = event.object_id();
    if crate::stripe::ObjectId::of_kind(id, "cus_").is_some() {
        Ok(id)
    } else {
        Err(ApplyError::Permanent(Refusal::Malformed(format!(
            "{} carries no customer id (data.object.id = {id:?})",
            event.kind
        ))))
    }
}

/// Applies the ordering rules ([`order::decide`]) to a customer event.
pub(super) fn decide(event: &StripeEvent, link: Option<Watermark>) -> (Step, Watermark) {
    let snapshot = event.kind == SNAPSHOT_TYPE;
    // A snapshot of a customer Stripe no longer has is `{"deleted": true}`.
    let delete =
        event.kind == "customer.deleted" || (snapshot && order::marked_deleted(&event.object));
    order::decide(
        order::Facts {
            delete,
            snapshot,
            revives: false,
        },
        event.created,
        link,
    )
}

/// How far Stripe's clock (an event's `created`) and the database's (when
/// a delivery of ours was recorded) may be apart.
pub(super) const CLOCK_SKEW_SECS: i64 = 60;

/// [`decide`]'s step, but a report that may be older than a write of ours
/// Stripe acknowledged at `last_acknowledged` (the database's clock) is
/// settled by reading the customer, as a same-second tie is. Newer than
/// the stored version, its state may still lack that write (a person's
/// edit made just before it, delivered late), and written as it is it
/// would roll the write back and pass the rollback on, while the write's
/// own echo, arriving next, is passed on nowhere. An echo of ours names
/// the write it follows instead (see [`echoed_row`]).
pub(super) fn settled_by_reading(
    event: &StripeEvent,
    step: Step,
    last_acknowledged: Option<chrono::DateTime<chrono::Utc>>,
) -> Step {
    let may_predate =
        last_acknowledged.is_some_and(|at| at.timestamp() >= event.created - CLOCK_SKEW_SECS);
    if step == Step::Write && !event.is_own_echo() && may_predate {
        Step::ReRead
    } else {
        step
    }
}

/// Reads through `remote` the customers whose events of the batch tie
/// with their stored state, as the apply will (the read-only pass before
/// the transaction; see [`super::prefetch`]). A customer Stripe refuses to
/// return for good is left to the apply to refuse.
///
/// Before each read it notes which of our changes Stripe had acknowledged
/// ([`Recording::note_acknowledged`]): the apply runs later, and a change
/// acknowledged in between may be newer than what the read returned.
pub(super) fn read_ties(
    conn: &mut PgConnection,
    remote: &Recording<'_>,
    events: &[&StripeEvent],
) -> Result<(), ApplyError> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for event in events {
        keys.push((event.account.as_str(), customer_id(event)?));
    }
    let links = idmap::find_many(conn, service::STRIPE, entity::CUSTOMER, &keys)?;
    let mut local_ids: HashMap<(String, String), CustomerId> = links
        .iter()
        .map(|l| ((l.account.clone(), l.external_id.clone()), l.local_id))
        .collect();
    let mut marks: HashMap<(String, String), Watermark> = links
        .into_iter()
        .map(|l| {
            let mark = Watermark {
                version: l.remote_version,
                deleted: l.remote_deleted,
            };
            ((l.account, l.external_id), mark)
        })
        .collect();
    // The rows whose acknowledged changes the apply will weigh: the linked
    // ones, and those our create's echo names (linked by the time a later
    // event of the batch is applied, so asked about here too; left out, a
    // later edit's re-read would be missing from the plan on every try).
    let mut weighed: Vec<CustomerId> = local_ids.values().copied().collect();
    weighed.extend(
        events
            .iter()
            .zip(&keys)
            .filter(|(_, (account, id))| {
                !local_ids.contains_key(&((*account).to_owned(), (*id).to_owned()))
            })
            .filter_map(|(event, _)| local_id_in_metadata(&event.object)),
    );
    let acknowledged = outbox::last_acknowledged_at(conn, &weighed, service::STRIPE)?;
    for (event, (account, id)) in events.iter().zip(keys) {
        let k = (account.to_owned(), id.to_owned());
        let (step, mut next) = decide(event, marks.get(&k).copied());
        let last_acknowledged = local_ids.get(&k).and_then(|l| acknowledged.get(l)).copied();
        let step = settled_by_reading(event, step, last_acknowledged);
        if let (Step::Create { .. }, Some(named)) = (step, local_id_in_metadata(&event.object)) {
            // Our own create's echo: the apply attaches it to the local row
            // it names (or, should stripe-outbound record the link first,
            // finds it linked), whose changes of ours a later tie's read
            // may not reflect. Any other customer the batch creates gets a
            // new local row, which nothing of ours is bound from yet.
            local_ids.entry(k.clone()).or_insert(named);
        }
        if step == Step::ReRead {
            if let Some(&local_id) = local_ids.get(&k) {
                let through = outbox::acknowledged_through(conn, local_id, service::STRIPE)?;
                remote.note_acknowledged(&event.account, "customers", id, through);
            }
            match remote.current(&event.account, "customers", id) {
                Ok(RemoteObject::Deleted) => next.deleted = true,
                Ok(RemoteObject::Live(_)) | Err(ApplyError::Permanent(_)) => {}
                Err(transient) => return Err(transient),
            }
        }
        if step.changes() {
            marks.insert(k, next);
        }
    }
    Ok(())
}

/// Applies one customer event against the database (the per-event path:
/// the batch applier sends here what it cannot fold in memory).
pub(super) fn apply(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    event: &StripeEvent,
    fan_out: FanOut,
) -> Result<Applied, ApplyError> {
    let pass_on = passes_on(fan_out, event);
    let key = ExternalKey {
        service: service::STRIPE,
        account: event.account.as_str(),
        entity: entity::CUSTOMER,
        external_id: customer_id(event)?,
    };
    let link = idmap::find_for_update(conn, key)?;
    let (mut step, mark) = decide(
        event,
        link.as_ref().map(|l| Watermark {
            version: l.remote_version,
            deleted: l.remote_deleted,
        }),
    );
    if let (Step::Write, Some(link)) = (step, &link) {
        let acknowledged = outbox::last_acknowledged_at(conn, &[link.local_id], service::STRIPE)?;
        step = settled_by_reading(event, step, acknowledged.get(&link.local_id).copied());
    }
    let event_id = event.id.as_str();
    let Some(link) = link else {
        let Step::Create { deleted } = step else {
            unreachable!("an unlinked customer is always created")
        };
        let local_id = match unlinked_local_customer(conn, &event.object)? {
            // Our own create, echoed before stripe-outbound recorded the
            // link: attach to the local row instead of duplicating it.
            Some(local_id) => {
                if deleted {
                    tombstone(conn, local_id, Some(&event.object), pass_on)?;
                } else {
                    update_customer(conn, local_id, &event.object, echoed_row(event), pass_on)?;
                }
                local_id
            }
            None => {
                let local_id = CustomerId::random();
                insert_customer(conn, local_id, &event.object, deleted, pass_on)?;
                local_id
            }
        };
        idmap::insert(
            conn,
            &NewIdMapEntry {
                service: key.service,
                account: key.account,
                entity: key.entity,
                external_id: key.external_id,
                local_id,
                remote_version: mark.version,
                remote_event_id: Some(event_id),
                remote_deleted: mark.deleted,
            },
        )?;
        return Ok(step.applied());
    };
    match step {
        Step::Create { .. } => unreachable!("a linked customer is never created"),
        Step::AfterTombstone | Step::Stale => {}
        Step::Delete { columns } => {
            tombstone(
                conn,
                link.local_id,
                columns.then_some(&event.object),
                pass_on,
            )?;
            idmap::advance(conn, key, mark.version, event_id, true)?;
        }
        Step::Write => {
            update_customer(
                conn,
                link.local_id,
                &event.object,
                echoed_row(event),
                pass_on,
            )?;
            idmap::advance(conn, key, mark.version, event_id, false)?;
        }
        Step::ReRead => {
            // Our changes Stripe may not have done when it answered the
            // read below keep their local value: one delivered between the
            // read and the row lock would otherwise be rolled back by a
            // state older than it (and Salesforce, already reporting it,
            // would pass our own value back on). A read made before the
            // transaction (the worker's prefetch) carries the marker taken
            // before it; one made now is preceded by this one.
            let noted =
                remote.acknowledged_before_read(&event.account, "customers", key.external_id);
            let reflected_through = match noted {
                Some(through) => through,
                None => outbox::acknowledged_through(conn, link.local_id, service::STRIPE)?,
            };
            match remote.current(&event.account, "customers", key.external_id)? {
                RemoteObject::Live(current) => {
                    update_customer(
                        conn,
                        link.local_id,
                        &current,
                        Some(reflected_through),
                        pass_on,
                    )?;
                    idmap::advance(conn, key, mark.version, event_id, false)?;
                }
                RemoteObject::Deleted => {
                    tombstone(conn, link.local_id, None, pass_on)?;
                    idmap::advance(conn, key, mark.version, event_id, true)?;
                }
            }
        }
    }
    Ok(step.applied())
}

/// The outbox row whose write `event` echoes, if it is an echo of ours.
/// A dead letter's replay names none: Stripe did it after the changes made
/// since its row, so the state it reports is newer than theirs, and the
/// local row takes it as Stripe now holds it.
pub(super) fn echoed_row(event: &StripeEvent) -> Option<i64> {
    let key = event
        .idempotency_key
        .as_deref()
        .filter(|_| event.is_own_echo())?;
    outbox::outbox_id_of_key(key).filter(|&row| key == outbox::idempotency_key(row, None))
}

/// The origin a change applied from `event` is passed on with, if it is
/// passed on at all: never an echo of our own write (invariant 6).
pub(super) fn passes_on(fan_out: FanOut, event: &StripeEvent) -> Option<&'static str> {
    (fan_out == FanOut::ToOtherServices && !event.is_own_echo()).then_some(service::STRIPE)
}

/// The local id a Stripe customer names in its metadata; stripe-outbound
/// writes it there when it creates the customer in Stripe.
pub(super) fn local_id_in_metadata(object: &Value) -> Option<CustomerId> {
    object
        .pointer(&format!("/metadata/{LOCAL_ID_METADATA_KEY}"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<CustomerId>().ok())
}

/// The local customer a Stripe customer names in its metadata, if that row
/// exists and has no Stripe link yet.
fn unlinked_local_customer(
    conn: &mut PgConnection,
    object: &Value,
) -> QueryResult<Option<CustomerId>> {
    let Some(local_id) = local_id_in_metadata(object) else {
        return Ok(None);
    };
    let exists: bool =
        diesel::select(diesel::dsl::exists(customers::table.find(local_id))).get_result(conn)?;
    if !exists || idmap::find_by_local(conn, service::STRIPE, entity::CUSTOMER, local_id)?.is_some()
    {
        return Ok(None);
    }
    Ok(Some(local_id))
}

/// A Stripe customer object's columns, borrowed from the snapshot: the
/// batch path writes them without copying the object.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub description: Option<&'a str>,
    pub metadata: &'a Value,
    pub stripe_object: &'a Value,
}

/// Projects a Stripe customer object onto our columns. Fields Stripe sends
/// as null (or omits) become NULL; metadata is always an object.
pub fn columns(object: &Value) -> Columns<'_> {
    static NO_METADATA: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| serde_json::json!({}));
    let text = |field: &str| object.get(field).and_then(Value::as_str);
    Columns {
        email: text("email"),
        name: text("name"),
        phone: text("phone"),
        description: text("description"),
        metadata: object
            .get("metadata")
            .filter(|m| m.is_object())
            .unwrap_or(&NO_METADATA),
        stripe_object: object,
    }
}

impl<'a> Columns<'a> {
    pub fn shared(&self) -> Shared<'a> {
        Shared {
            email: self.email,
            name: self.name,
            phone: self.phone,
            description: self.description,
        }
    }
}

/// [`columns`], owned: for the per-event path, which may amend them.
pub fn project(object: &Value) -> CustomerProjection {
    let c = columns(object);
    CustomerProjection {
        email: c.email.map(str::to_owned),
        name: c.name.map(str::to_owned),
        phone: c.phone.map(str::to_owned),
        description: c.description.map(str::to_owned),
        metadata: c.metadata.clone(),
        stripe_object: Some(object.clone()),
    }
}

/// Conflict policy: a local change Stripe has not acknowledged yet wins, for
/// the fields (and metadata keys) it sets, over the state Stripe reports;
/// everything else takes Stripe's state. Once acknowledged, Stripe's later
/// events carry the local value, so ordinary last-writer-wins resumes.
///
/// A state known to reflect our changes only up to outbox row
/// `reflects_through` (an echo of our write of that row: Stripe's state
/// right after it; a read: see `outbox::acknowledged_through`) also keeps
/// the local value of the fields a later change of ours sets, delivered or
/// not. Webhooks arrive in any order, and the echo of an older write
/// applied after a newer one was acknowledged would roll the row back
/// until the newer echo came (and Salesforce, reporting the newer value
/// meanwhile, would pass it back on).
fn keep_pending_local_fields(
    conn: &mut PgConnection,
    id: CustomerId,
    reflects_through: Option<i64>,
    projection: &mut CustomerProjection,
) -> QueryResult<()> {
    let mut pending = outbox::undelivered(conn, id, service::STRIPE)?;
    if let Some(through) = reflects_through {
        pending.extend(outbox::bound_for_after(conn, id, service::STRIPE, through)?);
    }
    if pending.is_empty() {
        return Ok(());
    }
    let current: Customer = customers::table
        .find(id)
        .select(Customer::as_select())
        .first(conn)?;
    for change in &pending {
        let Some(fields) = change.fields.as_object() else {
            continue;
        };
        for (field, value) in fields {
            match field.as_str() {
                "email" => projection.email.clone_from(&current.email),
                "name" => projection.name.clone_from(&current.name),
                "phone" => projection.phone.clone_from(&current.phone),
                "description" => projection.description.clone_from(&current.description),
                "metadata" => {
                    let keys = value
                        .as_object()
                        .map(|m| m.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default();
                    let target = projection
                        .metadata
                        .as_object_mut()
                        .expect("metadata is an object");
                    for key in keys {
                        match current.metadata.get(&key) {
                            Some(v) => target.insert(key, v.clone()),
                            None => target.remove(&key),
                        };
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Inserts the customer a Stripe report names first; `pass_on` (the
/// origin, see [`passes_on`]) appends its creation for the other services.
fn insert_customer(
    conn: &mut PgConnection,
    id: CustomerId,
    object: &Value,
    deleted: bool,
    pass_on: Option<&str>,
) -> QueryResult<()> {
    let deleted_at = deleted.then(chrono::Utc::now);
    diesel::insert_into(customers::table)
        .values((
            customers::id.eq(id),
            project(object),
            customers::deleted_at.eq(deleted_at),
        ))
        .execute(conn)?;
    match pass_on {
        Some(origin) if !deleted => {
            let fields = fanout::created(columns(object).shared());
            fanout::pass_on(conn, origin, id, outbox::Operation::Create, fields)
        }
        _ => Ok(()),
    }
}

fn update_customer(
    conn: &mut PgConnection,
    id: CustomerId,
    object: &Value,
    reflects_through: Option<i64>,
    pass_on: Option<&str>,
) -> QueryResult<()> {
    // Lock first, so a concurrent API write either lands before we read
    // its pending outbox row or waits for us. NO KEY, as every customer
    // row lock is (see `customers::lock`).
    let before: SharedRow = customers::table
        .find(id)
        .select(SharedRow::as_select())
        .for_no_key_update()
        .first(conn)?;
    let mut projection = project(object);
    keep_pending_local_fields(conn, id, reflects_through, &mut projection)?;
    // A row deleted here passes no update on (its deletion went out, if
    // at all, from the path that made it).
    if let Some(origin) = pass_on.filter(|_| before.deleted_at.is_none()) {
        let after = Shared {
            email: projection.email.as_deref(),
            name: projection.name.as_deref(),
            phone: projection.phone.as_deref(),
            description: projection.description.as_deref(),
        };
        let fields = fanout::changed(before.shared(), after);
        fanout::pass_on(conn, origin, id, outbox::Operation::Update, fields)?;
    }
    diesel::update(customers::table.find(id))
        .set((
            projection,
            customers::updated_at.eq(diesel::dsl::now),
            customers::version.eq(customers::version + 1),
        ))
        .execute(conn)
        .map(drop)
}

/// Tombstones the row ([`fanout::tombstone`], which passes a live row's
/// deletion on with `pass_on`) and keeps the last known snapshot on it for
/// audit.
fn tombstone(
    conn: &mut PgConnection,
    id: CustomerId,
    last_snapshot: Option<&Value>,
    pass_on: Option<&str>,
) -> QueryResult<()> {
    let tombstoned = fanout::tombstone(conn, &[(id, pass_on)])?;
    let Some(object) = last_snapshot else {
        return Ok(());
    };
    // Part of the deletion's change when it tombstoned the row (whose
    // version that bumped); written to a row deleted here already, a
    // change of its own.
    let own_change = i64::from(!tombstoned.contains(&id));
    diesel::update(customers::table.find(id))
        .set((
            project(object),
            customers::updated_at.eq(diesel::dsl::now),
            customers::version.eq(customers::version + own_change),
        ))
        .execute(conn)
        .map(drop)
}
