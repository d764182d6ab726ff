//! What a Contact version does to the local customers: the inbound half
//! of the Salesforce adapter, with the rules Stripe's customers follow.
//!
//! - **Once.** The version's id (`{Id}@{SystemModstamp}`) is claimed in the
//!   ledger (service `salesforce`, account the org) in the transaction that
//!   applies it.
//! - **In order.** The link's watermark is the newest `SystemModstamp`
//!   applied; [`order::decide`] makes an older version stale. An equal
//!   stamp is the same version (milliseconds tell versions apart), so it
//!   is stale too and never needs a re-read.
//! - **Tombstones.** `IsDeleted` (what `queryAll` reports from the recycle
//!   bin) tombstones the customer; a later version, an undelete included,
//!   does not bring it back.
//! - **Echoes.** A version last modified by the integration user is our own
//!   write reported back: its stamp is recorded and nothing else happens.
//! - **Conflicts.** A change Salesforce has not acknowledged yet (made
//!   locally or reported by Stripe) keeps its fields over what Salesforce
//!   reports, as with Stripe.
//! - **Onward.** What a version changes of the shared columns is appended
//!   to the outbox with origin `salesforce`, for Stripe.

use diesel::prelude::*;
use uuid::Uuid;

use super::contact;
use super::event::{SalesforceEvent, Version};
use crate::apply::ledger;
use crate::apply::order::{self, Facts, Step, Watermark};
use crate::apply::{Applied, ApplyError};
use crate::customers::fanout::{self, SharedRow};
use crate::db::models::{NewIdMapEntry, NewLedgerEntry};
use crate::db::schema::customers;
use crate::outbox::Operation;
use crate::sync::idmap::{self, ExternalKey};
use crate::sync::{entity, service};

/// Who the worker acts as, and so what counts as its own write.
#[derive(Debug, Clone)]
pub struct Context {
    pub org_id: String,
    pub user_id: String,
    /// The Contact field holding the local customer id.
    pub external_id_field: String,
}

/// Applies one version in the caller's transaction.
pub fn apply(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &SalesforceEvent,
) -> Result<Applied, ApplyError> {
    let version = event.version().map_err(ApplyError::Permanent)?;
    if let Some(org) = event.org.as_deref().filter(|org| *org != ctx.org_id) {
        return Err(ApplyError::Permanent(format!(
            "the record belongs to org {org}, this worker syncs {}",
            ctx.org_id
        )));
    }
    let echo = version.modified_by == Some(ctx.user_id.as_str());
    let entry = NewLedgerEntry {
        service: service::SALESFORCE,
        account: &ctx.org_id,
        event_id: &event.id,
        event_type: event.kind(),
        object_id: version.contact_id,
        event_created: version.modstamp,
        outcome: "",
        echo,
    };
    if !ledger::claim_entry(conn, &entry)? {
        return Ok(Applied::Duplicate);
    }
    let key = ExternalKey {
        service: service::SALESFORCE,
        account: &ctx.org_id,
        entity: entity::CONTACT,
        external_id: version.contact_id,
    };
    let link = idmap::find_for_update(conn, key)?;
    let stored = link.as_ref().map(|l| Watermark {
        version: l.remote_version,
        deleted: l.remote_deleted,
    });
    let facts = Facts {
        delete: version.deleted,
        snapshot: false,
    };
    let (step, mark) = order::decide(facts, version.modstamp, stored);
    let applied = match (link, step) {
        (None, _) => first_version(conn, ctx, event, &version, echo, mark)?,
        (Some(_), Step::AfterTombstone) => Applied::AfterTombstone,
        (Some(_), Step::Stale | Step::ReRead) => Applied::Stale,
        (Some(_), Step::Create { .. }) => unreachable!("a linked Contact is never created"),
        (Some(link), Step::Delete { .. } | Step::Write) => {
            let applied = if echo {
                Applied::Echo
            } else if version.deleted {
                fanout::tombstone(conn, &[(link.local_id, Some(service::SALESFORCE))])?;
                Applied::Deleted
            } else {
                write(conn, link.local_id, event)?;
                Applied::Upserted
            };
            idmap::advance(conn, key, mark.version, &event.id, mark.deleted)?;
            applied
        }
    };
    ledger::set_outcome(conn, service::SALESFORCE, &ctx.org_id, &event.id, applied)?;
    Ok(applied)
}

/// A Contact with no link yet: our own create reported before
/// salesforce-outbound recorded its link, a Contact naming a local
/// customer in the external-id field, or one made in Salesforce.
fn first_version(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &SalesforceEvent,
    version: &Version<'_>,
    echo: bool,
    mark: Watermark,
) -> Result<Applied, ApplyError> {
    let named = named_local_customer(conn, ctx, event)?;
    let (local_id, applied) = match named {
        Some(local_id) if echo => (local_id, Applied::Echo),
        Some(local_id) if version.deleted => {
            fanout::tombstone(conn, &[(local_id, Some(service::SALESFORCE))])?;
            (local_id, Applied::Deleted)
        }
        Some(local_id) => {
            write(conn, local_id, event)?;
            (local_id, Applied::Upserted)
        }
        None => {
            let local_id = Uuid::new_v4();
            insert(conn, local_id, event, version.deleted)?;
            let applied = if version.deleted {
                Applied::Deleted
            } else {
                Applied::Upserted
            };
            (local_id, applied)
        }
    };
    idmap::insert(
        conn,
        &NewIdMapEntry {
            service: service::SALESFORCE,
            account: &ctx.org_id,
            entity: entity::CONTACT,
            external_id: version.contact_id,
            local_id,
            remote_version: mark.version,
            remote_event_id: Some(&event.id),
            remote_deleted: mark.deleted,
        },
    )?;
    Ok(applied)
}

/// The local customer the external-id field names, if it exists and is
/// not linked to another Contact.
fn named_local_customer(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &SalesforceEvent,
) -> QueryResult<Option<Uuid>> {
    let Some(local_id) = event
        .record
        .get(&ctx.external_id_field)
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse::<Uuid>().ok())
    else {
        return Ok(None);
    };
    let exists: bool =
        diesel::select(diesel::dsl::exists(customers::table.find(local_id))).get_result(conn)?;
    if !exists
        || idmap::find_by_local(conn, service::SALESFORCE, entity::CONTACT, local_id)?.is_some()
    {
        return Ok(None);
    }
    Ok(Some(local_id))
}

/// A customer made in Salesforce, passed on to Stripe unless deleted.
fn insert(
    conn: &mut PgConnection,
    local_id: Uuid,
    event: &SalesforceEvent,
    deleted: bool,
) -> QueryResult<()> {
    let mut row = SharedRow {
        id: local_id,
        email: None,
        name: None,
        phone: None,
        description: None,
        deleted_at: None,
    };
    for (column, value) in contact::customer_fields(&event.record) {
        set(&mut row, column, value);
    }
    diesel::insert_into(customers::table)
        .values((
            customers::id.eq(local_id),
            customers::email.eq(&row.email),
            customers::name.eq(&row.name),
            customers::phone.eq(&row.phone),
            customers::description.eq(&row.description),
            customers::deleted_at.eq(deleted.then(chrono::Utc::now)),
        ))
        .execute(conn)?;
    if deleted {
        return Ok(());
    }
    let fields = fanout::created(row.shared());
    fanout::pass_on(
        conn,
        service::SALESFORCE,
        local_id,
        Operation::Create,
        fields,
    )
}

/// Writes what the version changes of a live customer, under the conflict
/// policy, and passes the change on.
fn write(conn: &mut PgConnection, local_id: Uuid, event: &SalesforceEvent) -> QueryResult<()> {
    // Locked before its pending changes are read, as Stripe's apply does
    // (NO KEY, as every customer row lock is: see `customers::lock`).
    let before: SharedRow = customers::table
        .find(local_id)
        .select(SharedRow::as_select())
        .for_no_key_update()
        .first(conn)?;
    if before.deleted_at.is_some() {
        // Deleted here: no update passed on (the deletion went out, if at
        // all, from the path that made it).
        return Ok(());
    }
    let pending = fanout::pending_for(conn, local_id, service::SALESFORCE)?;
    let mut after = before.clone();
    for (column, value) in contact::customer_fields(&event.record) {
        if !pending.contains(column) {
            set(&mut after, column, value);
        }
    }
    let fields = fanout::changed(before.shared(), after.shared());
    if fields.is_empty() {
        return Ok(());
    }
    diesel::update(customers::table.find(local_id))
        .set((
            customers::email.eq(&after.email),
            customers::name.eq(&after.name),
            customers::phone.eq(&after.phone),
            customers::description.eq(&after.description),
            customers::updated_at.eq(diesel::dsl::now),
            customers::version.eq(customers::version + 1),
        ))
        .execute(conn)?;
    fanout::pass_on(
        conn,
        service::SALESFORCE,
        local_id,
        Operation::Update,
        fields,
    )
}

/// Sets one shared column of a row being written.
fn set(row: &mut SharedRow, column: &str, value: Option<String>) {
    let slot = match column {
        "email" => &mut row.email,
        "name" => &mut row.name,
        "phone" => &mut row.phone,
        "description" => &mut row.description,
        other => unreachable!("{other} is not a shared column"),
    };
    *slot = value;
}
