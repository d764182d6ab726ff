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

use std::cmp::Ordering;

use diesel::prelude::*;
use uuid::Uuid;

use super::{Applied, ApplyError, RemoteReader};
use crate::db::models::{CustomerProjection, NewIdMapEntry};
use crate::db::schema::customers;
use crate::stripe::{RemoteObject, StripeEvent};
use crate::sync::idmap::{self, ExternalKey};
use crate::sync::{entity, service};

pub(super) fn apply(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    event: &StripeEvent,
) -> Result<Applied, ApplyError> {
    let key = ExternalKey {
        service: service::STRIPE,
        account: &event.account,
        entity: entity::CUSTOMER,
        external_id: event.object_id(),
    };
    if !key.external_id.starts_with("cus_") {
        return Err(ApplyError::Permanent(format!(
            "{} carries no customer id (data.object.id = {:?})",
            event.kind, key.external_id
        )));
    }
    let is_delete = event.kind == "customer.deleted";

    let Some(link) = idmap::find_for_update(conn, key)? else {
        let local_id = Uuid::new_v4();
        insert_customer(conn, local_id, &event.object, is_delete)?;
        idmap::insert(
            conn,
            &NewIdMapEntry {
                service: key.service,
                account: key.account,
                entity: key.entity,
                external_id: key.external_id,
                local_id,
                remote_version: event.created,
                remote_event_id: Some(event.id.as_str()),
                remote_deleted: is_delete,
            },
        )?;
        return Ok(if is_delete {
            Applied::Deleted
        } else {
            Applied::Upserted
        });
    };

    if link.remote_deleted {
        return Ok(Applied::AfterTombstone);
    }
    if is_delete {
        // A stale delete still deletes, but must not roll columns back.
        let snapshot = (event.created >= link.remote_version).then_some(&event.object);
        tombstone(conn, link.local_id, snapshot)?;
        idmap::advance(
            conn,
            key,
            event.created.max(link.remote_version),
            event.id.as_str(),
            true,
        )?;
        return Ok(Applied::Deleted);
    }
    match event.created.cmp(&link.remote_version) {
        Ordering::Less => Ok(Applied::Stale),
        Ordering::Greater => {
            update_customer(conn, link.local_id, &event.object)?;
            idmap::advance(conn, key, event.created, event.id.as_str(), false)?;
            Ok(Applied::Upserted)
        }
        Ordering::Equal => {
            match remote.current(key.account, "customers", key.external_id)? {
                RemoteObject::Live(current) => {
                    update_customer(conn, link.local_id, &current)?;
                    idmap::advance(conn, key, event.created, event.id.as_str(), false)?;
                }
                RemoteObject::Deleted => {
                    tombstone(conn, link.local_id, None)?;
                    idmap::advance(conn, key, event.created, event.id.as_str(), true)?;
                }
            }
            Ok(Applied::TieResolved)
        }
    }
}

/// Projects a Stripe customer object onto our columns. Fields Stripe sends
/// as null (or omits) become NULL; metadata is always an object.
pub fn project(object: &serde_json::Value) -> CustomerProjection {
    let text = |field: &str| {
        object
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    CustomerProjection {
        email: text("email"),
        name: text("name"),
        phone: text("phone"),
        description: text("description"),
        metadata: object
            .get("metadata")
            .filter(|m| m.is_object())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
        stripe_object: Some(object.clone()),
    }
}

fn insert_customer(
    conn: &mut PgConnection,
    id: Uuid,
    object: &serde_json::Value,
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

fn update_customer(
    conn: &mut PgConnection,
    id: Uuid,
    object: &serde_json::Value,
) -> QueryResult<()> {
    diesel::update(customers::table.find(id))
        .set((project(object), customers::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .map(drop)
}

/// Soft-deletes the row, keeping the last known snapshot for audit.
fn tombstone(
    conn: &mut PgConnection,
    id: Uuid,
    last_snapshot: Option<&serde_json::Value>,
) -> QueryResult<()> {
    let target = customers::table.find(id);
    match last_snapshot {
        Some(object) => diesel::update(target)
            .set((
                project(object),
                customers::deleted_at.eq(diesel::dsl::now),
                customers::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn),
        None => diesel::update(target)
            .set((
                customers::deleted_at.eq(diesel::dsl::now),
                customers::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn),
    }
    .map(drop)
}
