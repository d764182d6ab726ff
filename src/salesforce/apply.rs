//! What a Contact version does to the local customers: the inbound half
//! of the Salesforce adapter, with the rules Stripe's customers follow.
//!
//! - **Once.** The version's id (`{Id}@{SystemModstamp}:{digest}`) is
//!   claimed in the ledger (service `salesforce`, account the org) in the
//!   transaction that applies it.
//! - **In order.** The link's watermark is the newest `SystemModstamp`
//!   applied; [`order::decide`] makes an older version stale. Stamps are
//!   whole seconds, so an equal stamp (another version of the same second)
//!   is a tie, settled as Stripe's are: the Contact's current state is read
//!   ([`Current`]) and applied.
//! - **Tombstones.** `IsDeleted` (what `queryAll` reports from the recycle
//!   bin) tombstones the customer; a later version, an undelete included,
//!   does not bring it back.
//! - **Echoes, value by value.** A version is a Contact's state, not one
//!   change: a person's edit and our later write can arrive as one version
//!   last modified by the integration user. Each value is judged against
//!   what salesforce-outbound wrote ([`super::written`]): ours is not
//!   applied again, anyone else's is, and one that cannot be ordered
//!   against our write of the same field is settled by reading the
//!   Contact's current state.
//! - **Conflicts.** A change Salesforce has not acknowledged yet (made
//!   locally or reported by Stripe) keeps its fields over what Salesforce
//!   reports, as with Stripe.
//! - **Partial records.** A relay may send only the fields that changed: a
//!   field left out is left alone. One name part without the other, and a
//!   Contact new to us sent in part, are read whole first (only Salesforce
//!   knows how it split the name).
//! - **Onward.** What a version changes of the shared columns is appended
//!   to the outbox with origin `salesforce`, for Stripe.

use crate::customers::CustomerId;
use diesel::prelude::*;
use serde_json::{Map, Value};

use super::contact;
use super::event::{parse_datetime, SalesforceEvent};
use super::written::{self, Verdict, Writes};
use crate::apply::ledger;
use crate::apply::order::{self, Facts, Step, Watermark};
use crate::apply::{Applied, ApplyError, Refusal};
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

/// The Contact as it is now, read because a version alone could not say
/// what to apply (a tie, a value that cannot be ordered against our write,
/// a new Contact with a name part left out).
#[derive(Debug, Clone)]
pub struct Current {
    /// `None`: the read found nothing (purged from the recycle bin, or no
    /// longer visible to the integration user): nothing is applied, since
    /// a deletion is what `IsDeleted` reports.
    pub record: Option<Map<String, Value>>,
    /// When the read began, by the database's clock (milliseconds): what
    /// our writes' acknowledgements are compared with.
    pub read_at: i64,
}

impl Current {
    fn deleted(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.get("IsDeleted") == Some(&Value::Bool(true)))
    }

    fn stamp(&self) -> Option<i64> {
        let stamp = self.record.as_ref()?.get("SystemModstamp")?.as_str()?;
        parse_datetime(stamp)
    }
}

/// Why a version was not applied.
#[derive(Debug)]
pub enum Stop {
    Failed(ApplyError),
    /// The Contact's current state is needed: apply the version again with
    /// it, in a new transaction.
    ReadCurrent,
}

impl From<ApplyError> for Stop {
    fn from(e: ApplyError) -> Self {
        Self::Failed(e)
    }
}

impl From<diesel::result::Error> for Stop {
    fn from(e: diesel::result::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// What is applied: a version as reported, or the current state read for
/// it.
#[derive(Clone, Copy)]
enum Report<'a> {
    Version {
        record: &'a Map<String, Value>,
        stamp: i64,
        deleted: bool,
    },
    Current(&'a Current),
}

impl Report<'_> {
    fn deleted(&self) -> bool {
        match self {
            Self::Version { deleted, .. } => *deleted,
            Self::Current(current) => current.deleted(),
        }
    }

    /// The record, unless the Contact is gone for good.
    fn record(&self) -> Option<&Map<String, Value>> {
        match self {
            Self::Version { record, .. } => Some(record),
            Self::Current(current) => current.record.as_ref(),
        }
    }

    fn judge(&self, writes: &Writes, column: &str, value: Option<&str>) -> Verdict {
        match self {
            Self::Version { stamp, .. } => writes.judge(column, value, *stamp),
            Self::Current(current) => writes.judge_current(column, value, current.read_at),
        }
    }

    /// What a report that changed nothing records.
    fn unchanged(&self, echo: bool) -> Applied {
        match self {
            _ if echo => Applied::Echo,
            Self::Version { .. } => Applied::Upserted,
            Self::Current(_) => Applied::TieResolved,
        }
    }

    fn changed(&self) -> Applied {
        match self {
            Self::Version { .. } => Applied::Upserted,
            Self::Current(_) => Applied::TieResolved,
        }
    }
}

/// Applies one version in the caller's transaction.
pub fn apply(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &SalesforceEvent,
) -> Result<Applied, Stop> {
    apply_report(conn, ctx, event, None)
}

/// Applies one version with the Contact's current state, read for it
/// after [`Stop::ReadCurrent`], in its place.
pub fn apply_current(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &SalesforceEvent,
    current: &Current,
) -> Result<Applied, Stop> {
    apply_report(conn, ctx, event, Some(current))
}

fn apply_report(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &SalesforceEvent,
    current: Option<&Current>,
) -> Result<Applied, Stop> {
    let version = event
        .version()
        .map_err(|e| ApplyError::Permanent(Refusal::Malformed(e)))?;
    if let Some(org) = event.org.as_deref().filter(|org| *org != ctx.org_id) {
        return Err(ApplyError::Permanent(Refusal::NotOurs(format!(
            "the record belongs to org {org}, this worker syncs {}",
            ctx.org_id
        )))
        .into());
    }
    // Only what the ledger says of the version: values are judged one
    // by one.
    let echo = version.modified_by == Some(ctx.user_id.as_str());
    let entry = NewLedgerEntry {
        service: service::SALESFORCE,
        account: &ctx.org_id,
        event_id: &event.id,
        event_type: event.kind(),
        object_id: version.contact_id.as_str(),
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
        external_id: version.contact_id.as_str(),
    };
    let link = idmap::find_for_update(conn, key)?;
    let stored = link.as_ref().map(|l| Watermark {
        version: l.remote_version,
        deleted: l.remote_deleted,
    });
    let facts = Facts {
        delete: version.deleted,
        snapshot: false,
        revives: false,
    };
    let (step, mut mark) = order::decide(facts, version.modstamp, stored);
    let report = match current {
        // The state read replaces the version, and leaves its own stamp;
        // a delete always wins, as the ordering rules say.
        Some(current) if !version.deleted => {
            mark.version = mark.version.max(current.stamp().unwrap_or(mark.version));
            mark.deleted |= current.deleted();
            Report::Current(current)
        }
        _ => Report::Version {
            record: &event.record,
            stamp: version.modstamp,
            deleted: version.deleted,
        },
    };
    let applied = match (link, step) {
        (None, _) => first_version(conn, ctx, event, report, mark, echo)?,
        (Some(_), Step::AfterTombstone) => Applied::AfterTombstone,
        (Some(_), Step::Stale) => Applied::Stale,
        (Some(_), Step::Create { .. }) => unreachable!("a linked Contact is never created"),
        (Some(link), Step::Delete { .. } | Step::Write | Step::ReRead) => {
            // A tie that says nothing new needs no read; any other value
            // of it cannot be ordered, and the Contact is read.
            let tie = step == Step::ReRead && current.is_none();
            let applied = settle(conn, link.local_id, report, echo, tie)?;
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
    report: Report<'_>,
    mark: Watermark,
    echo: bool,
) -> Result<Applied, Stop> {
    let contact_id = event
        .version()
        .map_err(|e| ApplyError::Permanent(Refusal::Malformed(e)))?
        .contact_id;
    let named = match named_local_customer(conn, ctx, &event.record)? {
        Some(local_id) => Some(local_id),
        None => match report.record() {
            Some(record) => named_local_customer(conn, ctx, record)?,
            None => None,
        },
    };
    // A record that leaves fields out (a relay's) may leave out the
    // external-id field that names a customer, or what a new customer
    // needs: a Contact new to us is read whole first.
    if let Report::Version {
        record, deleted, ..
    } = report
    {
        if !deleted && !contact::is_whole(record, &ctx.external_id_field) {
            return Err(Stop::ReadCurrent);
        }
    }
    let (local_id, applied) = match named {
        Some(local_id) => (local_id, settle(conn, local_id, report, echo, false)?),
        // Found nothing to link or create.
        None if report.record().is_none() => return Ok(Applied::Ignored),
        None => {
            let local_id = CustomerId::random();
            let deleted = report.deleted();
            insert(
                conn,
                local_id,
                report.record().unwrap_or(&event.record),
                deleted,
            )?;
            let applied = if deleted {
                Applied::Deleted
            } else {
                report.changed()
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
            external_id: contact_id.as_str(),
            local_id,
            remote_version: mark.version,
            remote_event_id: Some(&event.id),
            remote_deleted: mark.deleted,
        },
    )?;
    Ok(applied)
}

/// The local customer the external-id field of `record` names, if it
/// exists and is not linked to another Contact.
fn named_local_customer(
    conn: &mut PgConnection,
    ctx: &Context,
    record: &Map<String, Value>,
) -> QueryResult<Option<CustomerId>> {
    let Some(local_id) = record
        .get(&ctx.external_id_field)
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse::<CustomerId>().ok())
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
    local_id: CustomerId,
    record: &Map<String, Value>,
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
    for (column, value) in contact::customer_fields(record) {
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

/// Tombstones a deleted Contact's customer; otherwise writes the values
/// that are someone else's (not our writes reported back, not fields of a
/// change still on its way to Salesforce) and passes them on.
fn settle(
    conn: &mut PgConnection,
    local_id: CustomerId,
    report: Report<'_>,
    echo: bool,
    tie: bool,
) -> Result<Applied, Stop> {
    if report.deleted() {
        let tombstoned = fanout::tombstone(conn, &[(local_id, Some(service::SALESFORCE))])?;
        return Ok(if tombstoned.is_empty() && echo {
            Applied::Echo
        } else {
            Applied::Deleted
        });
    }
    let Some(record) = report.record() else {
        return Ok(report.unchanged(echo));
    };
    // One name part without the other: only Salesforce knows how it
    // splits the name (`van Gogh` is one last name), so the Contact is
    // read rather than the part guessed from the local name.
    if matches!(report, Report::Version { .. }) && contact::has_partial_name(record) {
        return Err(Stop::ReadCurrent);
    }
    // Locked before our writes are read, as Stripe's apply does (NO KEY,
    // as every customer row lock is: see `customers::lock`).
    let before: SharedRow = customers::table
        .find(local_id)
        .select(SharedRow::as_select())
        .for_no_key_update()
        .first(conn)?;
    if before.deleted_at.is_some() {
        // Deleted here: no update passed on (the deletion went out, if at
        // all, from the path that made it).
        return Ok(Applied::AfterTombstone);
    }
    let writes = Writes::load(conn, local_id)?;
    let mut after = before.clone();
    for (column, value) in contact::customer_fields(record) {
        // Spacing and an empty text are not differences: Salesforce trims.
        if written::same(column_of(&before, column).as_deref(), value.as_deref()) {
            continue;
        }
        if tie {
            return Err(Stop::ReadCurrent);
        }
        match report.judge(&writes, column, value.as_deref()) {
            Verdict::Theirs => set(&mut after, column, value),
            Verdict::Ours => {}
            Verdict::Unsure => return Err(Stop::ReadCurrent),
        }
    }
    let fields = fanout::changed(before.shared(), after.shared());
    if fields.is_empty() {
        return Ok(report.unchanged(echo));
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
    )?;
    Ok(report.changed())
}

/// Sets one shared column of a row being written.
fn set(row: &mut SharedRow, column: &str, value: Option<String>) {
    *slot(row, column) = value;
}

/// One shared column of a row, to write.
fn slot<'a>(row: &'a mut SharedRow, column: &str) -> &'a mut Option<String> {
    match column {
        "email" => &mut row.email,
        "name" => &mut row.name,
        "phone" => &mut row.phone,
        "description" => &mut row.description,
        other => unreachable!("{other} is not a shared column"),
    }
}

/// One shared column of a row, to read.
fn column_of<'a>(row: &'a SharedRow, column: &str) -> &'a Option<String> {
    match column {
        "email" => &row.email,
        "name" => &row.name,
        "phone" => &row.phone,
        "description" => &row.description,
        other => unreachable!("{other} is not a shared column"),
    }
}
