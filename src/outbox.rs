//! The transactional outbox (invariant 5): a local change and the record of
//! it that must flow out commit together; the relay publishes, consumers
//! record per-service deliveries.

use std::collections::HashSet;

use diesel::pg::Pg;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::customers::CustomerId;
use crate::sync::entity;

use crate::db::models::OutboxRow;
use crate::db::schema::{outbox, outbox_deliveries};

/// Prefix of every `Idempotency-Key` we send; how echoes of our own writes
/// are recognised when Stripe reports them in `request.idempotency_key`.
pub const IDEMPOTENCY_PREFIX: &str = "stripe-sync-outbox-";

/// The key for the Stripe call of one outbox row: the same on every retry,
/// so Stripe performs the write once (keys are kept at least 24 h). A
/// replay from the dead-letter topic (`replayed_from`, the dead letter's
/// id) gets a key of its own, because Stripe answers a reused key with the
/// saved refusal for 24 h; the refused attempt wrote nothing, so a fresh
/// key cannot duplicate it.
pub fn idempotency_key(outbox_id: i64, replayed_from: Option<&str>) -> String {
    match replayed_from {
        None => format!("{IDEMPOTENCY_PREFIX}{outbox_id}"),
        Some(dead_letter) => format!("{IDEMPOTENCY_PREFIX}{outbox_id}-replay-{dead_letter}"),
    }
}

pub fn is_own_idempotency_key(key: &str) -> bool {
    key.starts_with(IDEMPOTENCY_PREFIX)
}

/// The outbox row an own key was made for (replays included).
pub fn outbox_id_of_key(key: &str) -> Option<i64> {
    let rest = key.strip_prefix(IDEMPOTENCY_PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// `outbox.origin` of a change made through the API.
pub const LOCAL_ORIGIN: &str = "local";

fn local_origin() -> String {
    LOCAL_ORIGIN.to_owned()
}

/// One local change as published on `customers.changes.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub outbox_id: i64,
    pub entity: String,
    pub local_id: Uuid,
    pub operation: Operation,
    /// Fields the change sets; `null` clears. `metadata` holds only the keys
    /// changed, a `null` value removing the key.
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// [`LOCAL_ORIGIN`], or the service whose report made the change
    /// (changes published before origins existed were all local).
    #[serde(default = "local_origin")]
    pub origin: String,
}

impl Change {
    pub fn from_row(row: &OutboxRow) -> anyhow::Result<Self> {
        Ok(Self {
            outbox_id: row.id,
            entity: row.entity.clone(),
            local_id: row.local_id,
            operation: serde_json::from_value(serde_json::Value::String(row.operation.clone()))?,
            fields: row.fields.as_object().cloned().unwrap_or_default(),
            occurred_at: row.created_at,
            origin: row.origin.clone(),
        })
    }
}

/// Whose change an outbox row records: its `entity` and `local_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Customer(CustomerId),
    /// A refund queued through the payments API.
    RefundRequest(Uuid),
}

impl Subject {
    pub fn entity(self) -> &'static str {
        match self {
            Self::Customer(_) => entity::CUSTOMER,
            Self::RefundRequest(_) => entity::REFUND_REQUEST,
        }
    }

    pub fn local_id(self) -> Uuid {
        match self {
            Self::Customer(id) => id.as_uuid(),
            Self::RefundRequest(id) => id,
        }
    }
}

/// Appends a local change (one made through the API) in the caller's
/// transaction.
pub fn append(
    conn: &mut PgConnection,
    subject: Subject,
    operation: Operation,
    fields: serde_json::Map<String, serde_json::Value>,
) -> QueryResult<i64> {
    append_from(conn, LOCAL_ORIGIN, subject, operation, fields)
}

/// Appends a change that `origin` reported (or [`LOCAL_ORIGIN`]) in the
/// caller's transaction; it flows to every service but `origin`.
pub fn append_from(
    conn: &mut PgConnection,
    origin: &str,
    subject: Subject,
    operation: Operation,
    fields: serde_json::Map<String, serde_json::Value>,
) -> QueryResult<i64> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::entity.eq(subject.entity()),
            outbox::local_id.eq(subject.local_id()),
            outbox::operation.eq(operation.as_str()),
            outbox::fields.eq(serde_json::Value::Object(fields)),
            outbox::origin.eq(origin),
        ))
        .returning(outbox::id)
        .get_result(conn)
}

/// One remote-reported change of a customer for [`append_many_from`].
pub struct Appended {
    pub local_id: CustomerId,
    pub operation: Operation,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// [`append_from`] for many customers' changes in one statement (the
/// batch apply).
pub fn append_many_from(
    conn: &mut PgConnection,
    origin: &str,
    rows: Vec<Appended>,
) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<_> = rows
        .into_iter()
        .map(|r| {
            (
                outbox::entity.eq(entity::CUSTOMER),
                outbox::local_id.eq(r.local_id),
                outbox::operation.eq(r.operation.as_str()),
                outbox::fields.eq(serde_json::Value::Object(r.fields)),
                outbox::origin.eq(origin),
            )
        })
        .collect();
    diesel::insert_into(outbox::table)
        .values(values)
        .execute(conn)
        .map(drop)
}

/// The oldest unpublished rows, in the order they must be published.
pub fn unpublished(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<OutboxRow>> {
    outbox::table
        .filter(outbox::published_at.is_null())
        .order(outbox::id.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)
}

pub fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<usize> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::published_at.eq(diesel::dsl::now))
        .execute(conn)
}

/// Outbox rows of `entity` that `service` has not acknowledged yet; the
/// one definition of "in flight" the queries below narrow down. A change
/// `service` itself reported is never in flight to it.
fn not_delivered_to<'a>(entity: &'a str, service: &'a str) -> outbox::BoxedQuery<'a, Pg> {
    outbox::table
        .filter(outbox::entity.eq(entity))
        .filter(outbox::origin.ne(service))
        .filter(diesel::dsl::not(diesel::dsl::exists(
            outbox_deliveries::table
                .filter(outbox_deliveries::outbox_id.eq(outbox::id))
                .filter(outbox_deliveries::service.eq(service)),
        )))
        .into_boxed()
}

// The reads below serve the ordering of a customer's changes against
// Stripe's and Salesforce's reports of it: customers are the one entity
// whose changes go both ways.

/// Rows of one local customer that `service` has not acknowledged yet, oldest
/// first: the local changes that are still "in flight".
pub fn undelivered(
    conn: &mut PgConnection,
    local_id: CustomerId,
    service: &str,
) -> QueryResult<Vec<OutboxRow>> {
    not_delivered_to(entity::CUSTOMER, service)
        .filter(outbox::local_id.eq(local_id))
        .order(outbox::id.asc())
        .select(OutboxRow::as_select())
        .load(conn)
}

/// The row of one local customer bound for `service` (of any other origin)
/// up to which `service` has done every change: the row before the
/// oldest one not acknowledged yet, else the newest (0 when none). Taken
/// before reading the service's state, the rows after it are the ones
/// that read may not reflect: still in flight, acknowledged meanwhile, or
/// made since.
pub fn acknowledged_through(
    conn: &mut PgConnection,
    local_id: CustomerId,
    service: &str,
) -> QueryResult<i64> {
    let oldest_in_flight: Option<i64> = not_delivered_to(entity::CUSTOMER, service)
        .filter(outbox::local_id.eq(local_id))
        .select(diesel::dsl::min(outbox::id))
        .first(conn)?;
    if let Some(oldest) = oldest_in_flight {
        return Ok(oldest - 1);
    }
    Ok(newest_bound_for(conn, &[local_id], service)?
        .get(&local_id)
        .copied()
        .unwrap_or(0))
}

/// Rows of one local customer bound for `service` (of any other origin)
/// made after row `after`, delivered or not, oldest first.
pub fn bound_for_after(
    conn: &mut PgConnection,
    local_id: CustomerId,
    service: &str,
    after: i64,
) -> QueryResult<Vec<OutboxRow>> {
    outbox::table
        .filter(outbox::entity.eq(entity::CUSTOMER))
        .filter(outbox::origin.ne(service))
        .filter(outbox::local_id.eq(local_id))
        .filter(outbox::id.gt(after))
        .order(outbox::id.asc())
        .select(OutboxRow::as_select())
        .load(conn)
}

/// The newest row bound for `service` (of any other origin) of each of
/// `local_ids` that has one.
pub fn newest_bound_for(
    conn: &mut PgConnection,
    local_ids: &[CustomerId],
    service: &str,
) -> QueryResult<std::collections::HashMap<CustomerId, i64>> {
    if local_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(CustomerId, Option<i64>)> = outbox::table
        .filter(outbox::entity.eq(entity::CUSTOMER))
        .filter(outbox::origin.ne(service))
        .filter(outbox::local_id.eq_any(local_ids))
        .group_by(outbox::local_id)
        .select((outbox::local_id, diesel::dsl::max(outbox::id)))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, newest)| Some((id, newest?)))
        .collect())
}

/// When `service` last acknowledged a change of each of `local_ids` bound
/// for it (of any other origin), by the database's clock; ids with none
/// acknowledged are absent. A delivery recorded as failed counts too: some
/// are writes the service did perform (Stripe answered 2xx with a body we
/// could not read, or refused a retry of a key whose first attempt may
/// have done the work), and counting one that did not costs only a read.
pub fn last_acknowledged_at(
    conn: &mut PgConnection,
    local_ids: &[CustomerId],
    service: &str,
) -> QueryResult<std::collections::HashMap<CustomerId, chrono::DateTime<chrono::Utc>>> {
    if local_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(CustomerId, Option<chrono::DateTime<chrono::Utc>>)> = outbox::table
        .inner_join(outbox_deliveries::table)
        .filter(outbox::entity.eq(entity::CUSTOMER))
        .filter(outbox::origin.ne(service))
        .filter(outbox::local_id.eq_any(local_ids))
        .filter(outbox_deliveries::service.eq(service))
        .group_by(outbox::local_id)
        .select((
            outbox::local_id,
            diesel::dsl::max(outbox_deliveries::delivered_at),
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, at)| Some((id, at?)))
        .collect())
}

/// Which of `local_ids` have a change `service` has not acknowledged yet
/// ([`undelivered`] for many rows at once).
pub fn with_undelivered(
    conn: &mut PgConnection,
    local_ids: &[CustomerId],
    service: &str,
) -> QueryResult<HashSet<CustomerId>> {
    if local_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<CustomerId> = not_delivered_to(entity::CUSTOMER, service)
        .filter(outbox::local_id.eq_any(local_ids))
        .select(outbox::local_id)
        .distinct()
        .load(conn)?;
    Ok(ids.into_iter().collect())
}

crate::text_enum! {
    /// `outbox_deliveries.status`: what a service did with a change.
    pub enum DeliveryStatus {
        /// The service holds the change.
        Synced = "synced",
        /// The service refused it for good (a replayed dead letter may
        /// turn it into `Synced`).
        Failed = "failed",
    }
}

/// Records the outcome at `service`. A later outcome replaces an earlier
/// one (a failed change replayed from the dead-letter topic can succeed).
pub fn record_delivery(
    conn: &mut PgConnection,
    outbox_id: i64,
    service: &str,
    status: DeliveryStatus,
    external_id: Option<&str>,
    error: Option<&str>,
) -> QueryResult<()> {
    diesel::insert_into(outbox_deliveries::table)
        .values((
            outbox_deliveries::outbox_id.eq(outbox_id),
            outbox_deliveries::service.eq(service),
            outbox_deliveries::status.eq(status),
            outbox_deliveries::external_id.eq(external_id),
            outbox_deliveries::error.eq(error),
        ))
        .on_conflict((outbox_deliveries::outbox_id, outbox_deliveries::service))
        .do_update()
        .set((
            outbox_deliveries::status.eq(status),
            outbox_deliveries::external_id.eq(external_id),
            outbox_deliveries::error.eq(error),
            outbox_deliveries::delivered_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(drop)
}

/// True once `service` holds the change; a failed attempt does not count,
/// so a replayed dead letter is tried again.
pub fn is_delivered(conn: &mut PgConnection, outbox_id: i64, service: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        outbox_deliveries::table
            .filter(outbox_deliveries::outbox_id.eq(outbox_id))
            .filter(outbox_deliveries::service.eq(service))
            .filter(outbox_deliveries::status.eq(DeliveryStatus::Synced)),
    ))
    .get_result(conn)
}

/// What a consumer of outbox changes has left to do for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// `service` does not hold the change yet.
    Deliver,
    /// `service` holds it: a redelivered change.
    Delivered,
    /// The row is gone: `stripe-sync prune` deletes rows older than 30
    /// days once delivered, together with their delivery records.
    Pruned,
}

/// [`is_delivered`], told apart from a pruned row, in one round trip.
pub fn due(conn: &mut PgConnection, outbox_id: i64, service: &str) -> QueryResult<Due> {
    let (present, delivered): (bool, bool) = diesel::select((
        diesel::dsl::exists(outbox::table.find(outbox_id)),
        diesel::dsl::exists(
            outbox_deliveries::table
                .filter(outbox_deliveries::outbox_id.eq(outbox_id))
                .filter(outbox_deliveries::service.eq(service))
                .filter(outbox_deliveries::status.eq(DeliveryStatus::Synced)),
        ),
    ))
    .get_result(conn)?;
    Ok(match (present, delivered) {
        (_, true) => Due::Delivered,
        (false, false) => Due::Pruned,
        (true, false) => Due::Deliver,
    })
}

/// Unpublished rows and the creation time of the oldest one.
pub fn backlog(
    conn: &mut PgConnection,
) -> QueryResult<(i64, Option<chrono::DateTime<chrono::Utc>>)> {
    outbox::table
        .filter(outbox::published_at.is_null())
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(outbox::created_at),
        ))
        .first(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_key_names_its_outbox_row_replayed_or_not() {
        assert_eq!(outbox_id_of_key(&idempotency_key(42, None)), Some(42));
        assert_eq!(
            outbox_id_of_key(&idempotency_key(42, Some("dlq-7"))),
            Some(42)
        );
        assert_eq!(outbox_id_of_key("someone-else-42"), None);
    }
}
