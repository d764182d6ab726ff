//! `customer.*` events → `customers` + `id_map`.
//!
//! Ordering (invariant 4), per Stripe customer, using `id_map.remote_version`
//! (the `created` second of the newest state applied):
//! - a deleted customer is final: any later event is ignored;
//! - `customer.deleted` always wins, whatever its timestamp;
//! - an older event is stale and skipped;
//! - a newer event's snapshot is written;
//! - an event from the same second cannot be ordered by its timestamp, so
//!   the customer is re-read from Stripe and Stripe's current state written.
//!
//! Snapshots (`customer.snapshot`, from backfill and diff --repair) carry
//! the time *we* read the object, not a Stripe timestamp, so host clock
//! skew matters: a snapshot is newer only when it is more than
//! [`SNAPSHOT_SKEW_SECS`] ahead of the stored state, older when more than
//! that behind, and anything in between is treated as a tie (re-read). The
//! watermark a snapshot leaves is lowered by the same margin, so a real
//! event that happened just after the read is never taken for stale.
//!
//! These rules live in [`decide`], a pure function; [`apply`] carries one
//! decision out against the database, and the batch applier
//! (`super::customer_batch`) folds many decisions in memory before writing.

use std::cmp::Ordering;

use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::{Applied, ApplyError, RemoteReader};
use crate::customers::input::LOCAL_ID_METADATA_KEY;
use crate::db::models::{Customer, CustomerProjection, NewIdMapEntry};
use crate::db::schema::customers;
use crate::outbox;
use crate::stripe::{RemoteObject, StripeEvent};
use crate::sync::idmap::{self, ExternalKey};
use crate::sync::{entity, service};

/// Synthetic event type of a customer's current state read from the list
/// API (backfill) or a diff repair.
pub const SNAPSHOT_TYPE: &str = "customer.snapshot";

/// How far the host clock may be from Stripe's for snapshot ordering.
pub const SNAPSHOT_SKEW_SECS: i64 = 60;

/// The ordering state a link carries: `id_map.remote_version` and
/// `remote_deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watermark {
    pub version: i64,
    pub deleted: bool,
}

/// What the ordering rules make of one event, given the customer's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// No link yet: the customer is new to us (possibly already deleted).
    Create { deleted: bool },
    /// The customer is deleted; nothing changes.
    AfterTombstone,
    /// Tombstone the row; `columns` says whether the event's snapshot may
    /// also be written (not for a stale delete, nor a deleted snapshot).
    Delete { columns: bool },
    /// Older than the stored state: nothing changes.
    Stale,
    /// Newer: write the event's snapshot.
    Write,
    /// Same second: re-read the customer from Stripe and write that.
    ReRead,
}

impl Step {
    /// The outcome the step records, for steps that need nothing more.
    pub fn applied(self) -> Applied {
        match self {
            Self::Create { deleted: true } | Self::Delete { .. } => Applied::Deleted,
            Self::Create { deleted: false } | Self::Write => Applied::Upserted,
            Self::AfterTombstone => Applied::AfterTombstone,
            Self::Stale => Applied::Stale,
            Self::ReRead => Applied::TieResolved,
        }
    }
}

/// The Stripe customer id an event is about, refused when it is not one.
pub(super) fn customer_id(event: &StripeEvent) -> Result<&str, ApplyError> {
    let id = event.object_id();
    if id.starts_with("cus_") {
        Ok(id)
    } else {
        Err(ApplyError::Permanent(format!(
            "{} carries no customer id (data.object.id = {id:?})",
            event.kind
        )))
    }
}

/// Applies the ordering rules: what `event` does to a customer whose link
/// is `link` (None: not linked yet), and the watermark it leaves.
pub(super) fn decide(event: &StripeEvent, link: Option<Watermark>) -> (Step, Watermark) {
    let is_snapshot = event.kind == SNAPSHOT_TYPE;
    // A snapshot of a customer Stripe no longer has is `{"deleted": true}`.
    let is_delete = event.kind == "customer.deleted"
        || (is_snapshot && event.object.get("deleted").and_then(Value::as_bool) == Some(true));
    // The watermark this event may leave behind.
    let version = if is_snapshot {
        event.created - SNAPSHOT_SKEW_SECS
    } else {
        event.created
    };
    let Some(link) = link else {
        let mark = Watermark {
            version,
            deleted: is_delete,
        };
        return (Step::Create { deleted: is_delete }, mark);
    };
    if link.deleted {
        return (Step::AfterTombstone, link);
    }
    let newer = Watermark {
        version: version.max(link.version),
        deleted: is_delete,
    };
    if is_delete {
        // A stale delete still deletes, but must not roll columns back; a
        // deleted snapshot has no columns to offer.
        let columns = !is_snapshot && version >= link.version;
        return (Step::Delete { columns }, newer);
    }
    let order = if is_snapshot {
        snapshot_order(event.created, link.version)
    } else {
        event.created.cmp(&link.version)
    };
    match order {
        Ordering::Less => (Step::Stale, link),
        Ordering::Greater => (Step::Write, newer),
        Ordering::Equal => (Step::ReRead, newer),
    }
}

/// Applies one customer event against the database (the per-event path:
/// the batch applier sends here what it cannot fold in memory).
pub(super) fn apply(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    event: &StripeEvent,
) -> Result<Applied, ApplyError> {
    let key = ExternalKey {
        service: service::STRIPE,
        account: &event.account,
        entity: entity::CUSTOMER,
        external_id: customer_id(event)?,
    };
    let link = idmap::find_for_update(conn, key)?;
    let (step, mark) = decide(
        event,
        link.as_ref().map(|l| Watermark {
            version: l.remote_version,
            deleted: l.remote_deleted,
        }),
    );
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
                    tombstone(conn, local_id, Some(&event.object))?;
                } else {
                    update_customer(conn, local_id, &event.object)?;
                }
                local_id
            }
            None => {
                let local_id = Uuid::new_v4();
                insert_customer(conn, local_id, &event.object, deleted)?;
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
            tombstone(conn, link.local_id, columns.then_some(&event.object))?;
            idmap::advance(conn, key, mark.version, event_id, true)?;
        }
        Step::Write => {
            update_customer(conn, link.local_id, &event.object)?;
            idmap::advance(conn, key, mark.version, event_id, false)?;
        }
        Step::ReRead => match remote.current(key.account, "customers", key.external_id)? {
            RemoteObject::Live(current) => {
                update_customer(conn, link.local_id, &current)?;
                idmap::advance(conn, key, mark.version, event_id, false)?;
            }
            RemoteObject::Deleted => {
                tombstone(conn, link.local_id, None)?;
                idmap::advance(conn, key, mark.version, event_id, true)?;
            }
        },
    }
    Ok(step.applied())
}

/// Orders a snapshot read at `read_at` (host clock) against a stored
/// watermark (Stripe clock), with the skew margin on both sides.
fn snapshot_order(read_at: i64, watermark: i64) -> Ordering {
    if read_at - SNAPSHOT_SKEW_SECS > watermark {
        Ordering::Greater
    } else if read_at + SNAPSHOT_SKEW_SECS < watermark {
        Ordering::Less
    } else {
        Ordering::Equal
    }
}

/// The local id a Stripe customer names in its metadata; stripe-outbound
/// writes it there when it creates the customer in Stripe.
pub(super) fn local_id_in_metadata(object: &Value) -> Option<Uuid> {
    object
        .pointer(&format!("/metadata/{LOCAL_ID_METADATA_KEY}"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Uuid>().ok())
}

/// The local customer a Stripe customer names in its metadata, if that row
/// exists and has no Stripe link yet.
fn unlinked_local_customer(conn: &mut PgConnection, object: &Value) -> QueryResult<Option<Uuid>> {
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
fn keep_pending_local_fields(
    conn: &mut PgConnection,
    id: Uuid,
    projection: &mut CustomerProjection,
) -> QueryResult<()> {
    let pending = outbox::undelivered(conn, entity::CUSTOMER, id, service::STRIPE)?;
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

fn insert_customer(
    conn: &mut PgConnection,
    id: Uuid,
    object: &Value,
    deleted: bool,
) -> QueryResult<()> {
    let deleted_at = deleted.then(chrono::Utc::now);
    diesel::insert_into(customers::table)
        .values((
            customers::id.eq(id),
            project(object),
            customers::deleted_at.eq(deleted_at),
        ))
        .execute(conn)
        .map(drop)
}

fn update_customer(conn: &mut PgConnection, id: Uuid, object: &Value) -> QueryResult<()> {
    // Lock first, so a concurrent API write either lands before we read
    // its pending outbox row or waits for us.
    customers::table
        .find(id)
        .select(customers::id)
        .for_update()
        .first::<Uuid>(conn)?;
    let mut projection = project(object);
    keep_pending_local_fields(conn, id, &mut projection)?;
    diesel::update(customers::table.find(id))
        .set((
            projection,
            customers::updated_at.eq(diesel::dsl::now),
            customers::version.eq(customers::version + 1),
        ))
        .execute(conn)
        .map(drop)
}

/// Soft-deletes the row, keeping the last known snapshot for audit.
fn tombstone(conn: &mut PgConnection, id: Uuid, last_snapshot: Option<&Value>) -> QueryResult<()> {
    let target = customers::table.find(id);
    let stamp = (
        customers::deleted_at.eq(diesel::dsl::now),
        customers::updated_at.eq(diesel::dsl::now),
        customers::version.eq(customers::version + 1),
    );
    match last_snapshot {
        Some(object) => diesel::update(target)
            .set((project(object), stamp))
            .execute(conn),
        None => diesel::update(target).set(stamp).execute(conn),
    }
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_ordered_with_a_skew_margin() {
        let w = 1_000;
        assert_eq!(
            snapshot_order(w + SNAPSHOT_SKEW_SECS + 1, w),
            Ordering::Greater
        );
        assert_eq!(snapshot_order(w + SNAPSHOT_SKEW_SECS, w), Ordering::Equal);
        assert_eq!(snapshot_order(w, w), Ordering::Equal);
        assert_eq!(snapshot_order(w - SNAPSHOT_SKEW_SECS, w), Ordering::Equal);
        assert_eq!(
            snapshot_order(w - SNAPSHOT_SKEW_SECS - 1, w),
            Ordering::Less
        );
    }
}
