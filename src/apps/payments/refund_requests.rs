//! `payments.refund_requests`: refunds queued through the API. A request
//! and its outbox row commit together (invariant 5); the relay publishes
//! the command, `workers/stripe-commands` carries it out, and Stripe's
//! refund webhooks keep the status current through the mirror (a trigger
//! on `stripe.refunds`, see the migration).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;
use uuid::Uuid;

use super::intents::NewRefund;
use crate::db::schema::payments::refund_requests;
use crate::outbox::{self, Operation};

/// A refund request as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable)]
#[diesel(table_name = refund_requests, check_for_backend(diesel::pg::Pg))]
pub struct RefundRequest {
    #[serde(rename = "request_id")]
    pub id: String,
    #[serde(skip)]
    pub local_id: Uuid,
    pub payment_intent: String,
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub status: RefundRequestStatus,
    pub refund_id: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

crate::text_enum! {
    /// `payments.refund_requests.status`: queued here, then as Stripe's
    /// refund stands (`payments.request_status` maps Stripe's statuses).
    pub enum RefundRequestStatus {
        /// Waiting for stripe-commands.
        Queued = "queued",
        /// stripe-commands is asking Stripe for the refund.
        Processing = "processing",
        /// Stripe made the refund; its money has not moved yet.
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
        Canceled = "canceled",
    }
}

impl RefundRequestStatus {
    /// Whether stripe-commands still has the refund to make.
    pub fn to_carry_out(self) -> bool {
        matches!(self, Self::Queued | Self::Processing)
    }
}

/// What queuing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    New(RefundRequest),
    /// The request id was queued before with the same refund.
    Existing(RefundRequest),
    /// The request id was queued before with another refund.
    Conflict,
}

/// Queues a refund under `request_id`, with its outbox row, in one
/// transaction.
pub fn queue(conn: &mut PgConnection, request_id: &str, refund: &NewRefund) -> QueryResult<Queued> {
    conn.transaction(|conn| {
        let local_id = Uuid::new_v4();
        let inserted: Option<RefundRequest> = diesel::insert_into(refund_requests::table)
            .values((
                refund_requests::id.eq(request_id),
                refund_requests::local_id.eq(local_id),
                refund_requests::payment_intent.eq(&refund.payment_intent),
                refund_requests::amount.eq(refund.amount),
                refund_requests::reason.eq(refund.reason.as_deref()),
            ))
            .on_conflict(refund_requests::id)
            .do_nothing()
            .returning(RefundRequest::as_returning())
            .get_result(conn)
            .optional()?;
        if let Some(request) = inserted {
            let mut fields = serde_json::Map::new();
            fields.insert("request_id".into(), request_id.into());
            fields.insert(
                "payment_intent".into(),
                refund.payment_intent.clone().into(),
            );
            fields.insert("amount".into(), refund.amount.into());
            fields.insert("reason".into(), refund.reason.clone().into());
            outbox::append(
                conn,
                outbox::Subject::RefundRequest(local_id),
                Operation::Create,
                fields,
            )?;
            return Ok(Queued::New(request));
        }
        let existing = get(conn, request_id)?.expect("the conflicting row exists");
        let same = existing.payment_intent == refund.payment_intent
            && existing.reason == refund.reason
            && (refund.amount.is_none() || existing.amount == refund.amount);
        Ok(if same {
            Queued::Existing(existing)
        } else {
            Queued::Conflict
        })
    })
}

pub fn get(conn: &mut PgConnection, request_id: &str) -> QueryResult<Option<RefundRequest>> {
    refund_requests::table
        .find(request_id)
        .select(RefundRequest::as_select())
        .first(conn)
        .optional()
}

pub fn by_local_id(conn: &mut PgConnection, local_id: Uuid) -> QueryResult<Option<RefundRequest>> {
    refund_requests::table
        .filter(refund_requests::local_id.eq(local_id))
        .select(RefundRequest::as_select())
        .first(conn)
        .optional()
}

/// Requests newest first, of one status or all, at most `limit`.
pub fn list(
    conn: &mut PgConnection,
    status: Option<RefundRequestStatus>,
    limit: i64,
) -> QueryResult<Vec<RefundRequest>> {
    let mut query = refund_requests::table
        .order((
            refund_requests::created_at.desc(),
            refund_requests::id.desc(),
        ))
        .limit(limit)
        .select(RefundRequest::as_select())
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(refund_requests::status.eq(status));
    }
    query.load(conn)
}

/// A payment's requests, oldest first.
pub fn for_payment(
    conn: &mut PgConnection,
    payment_intent: &str,
) -> QueryResult<Vec<RefundRequest>> {
    refund_requests::table
        .filter(refund_requests::payment_intent.eq(payment_intent))
        .order((refund_requests::created_at, refund_requests::id))
        .limit(1000)
        .select(RefundRequest::as_select())
        .load(conn)
}

pub fn mark_processing(conn: &mut PgConnection, request_id: &str) -> QueryResult<()> {
    diesel::update(
        refund_requests::table
            .find(request_id)
            .filter(refund_requests::status.eq(RefundRequestStatus::Queued)),
    )
    .set((
        refund_requests::status.eq(RefundRequestStatus::Processing),
        refund_requests::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .map(drop)
}

/// Records the refund Stripe made. The mirror's state of the refund wins
/// over Stripe's answer when the mirror has it: its webhook may have come
/// (and moved on) before this answer was recorded. Raw SQL: it reads the
/// mirror's `stripe.refunds`, which the registry makes at run time, and
/// maps Stripe's status with the migration's `payments.request_status`.
pub fn record_refund(
    conn: &mut PgConnection,
    request_id: &str,
    refund_id: &str,
    amount: i64,
    stripe_status: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE payments.refund_requests r SET refund_id = $2, amount = $3, error = NULL, \
           status = COALESCE((SELECT payments.request_status(f.status) FROM stripe.refunds f \
                              WHERE f.account = 'platform' AND f.id = $2), \
                             payments.request_status($4)), \
           updated_at = now() \
         WHERE r.id = $1",
    )
    .bind::<Text, _>(request_id)
    .bind::<Text, _>(refund_id)
    .bind::<BigInt, _>(amount)
    .bind::<Text, _>(stripe_status)
    .execute(conn)
    .map(drop)
}

pub fn record_failure(conn: &mut PgConnection, request_id: &str, error: &str) -> QueryResult<()> {
    diesel::update(refund_requests::table.find(request_id))
        .set((
            refund_requests::status.eq(RefundRequestStatus::Failed),
            refund_requests::error.eq(error),
            refund_requests::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(drop)
}
