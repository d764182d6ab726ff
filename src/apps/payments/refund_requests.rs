//! `payments.refund_requests`: refunds queued through the API. A request
//! and its outbox row commit together (invariant 5); the relay publishes
//! the command, `workers/stripe-commands` carries it out, and Stripe's
//! refund webhooks keep the status current through the mirror (a trigger
//! on `stripe.refunds`, see the migration).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use serde::Serialize;
use uuid::Uuid;

use super::intents::NewRefund;
use crate::outbox::{self, Operation};
use crate::sync::entity;

/// A refund request as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
pub struct RefundRequest {
    #[diesel(sql_type = Text)]
    #[serde(rename = "request_id")]
    pub id: String,
    #[serde(skip)]
    #[diesel(sql_type = SqlUuid)]
    pub local_id: Uuid,
    #[diesel(sql_type = Text)]
    pub payment_intent: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub amount: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: RefundRequestStatus,
    #[diesel(sql_type = Nullable<Text>)]
    pub refund_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
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

const COLUMNS: &str =
    "id, local_id, payment_intent, amount, reason, status, refund_id, error, created_at, updated_at";

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
        let inserted: Option<RefundRequest> = diesel::sql_query(format!(
            "INSERT INTO payments.refund_requests (id, local_id, payment_intent, amount, reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(request_id)
        .bind::<SqlUuid, _>(local_id)
        .bind::<Text, _>(&refund.payment_intent)
        .bind::<Nullable<BigInt>, _>(refund.amount)
        .bind::<Nullable<Text>, _>(refund.reason.as_deref())
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
                entity::REFUND_REQUEST,
                local_id,
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
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM payments.refund_requests WHERE id = $1"
    ))
    .bind::<Text, _>(request_id)
    .get_result(conn)
    .optional()
}

pub fn by_local_id(conn: &mut PgConnection, local_id: Uuid) -> QueryResult<Option<RefundRequest>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM payments.refund_requests WHERE local_id = $1"
    ))
    .bind::<SqlUuid, _>(local_id)
    .get_result(conn)
    .optional()
}

/// A payment's requests, oldest first.
pub fn for_payment(
    conn: &mut PgConnection,
    payment_intent: &str,
) -> QueryResult<Vec<RefundRequest>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM payments.refund_requests WHERE payment_intent = $1 \
         ORDER BY created_at, id LIMIT 1000"
    ))
    .bind::<Text, _>(payment_intent)
    .load(conn)
}

pub fn mark_processing(conn: &mut PgConnection, request_id: &str) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE payments.refund_requests SET status = 'processing', updated_at = now() \
         WHERE id = $1 AND status = 'queued'",
    )
    .bind::<Text, _>(request_id)
    .execute(conn)
    .map(drop)
}

/// Records the refund Stripe made. The mirror's state of the refund wins
/// over Stripe's answer when the mirror has it: its webhook may have come
/// (and moved on) before this answer was recorded.
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
    diesel::sql_query(
        "UPDATE payments.refund_requests SET status = 'failed', error = $2, updated_at = now() \
         WHERE id = $1",
    )
    .bind::<Text, _>(request_id)
    .bind::<Text, _>(error)
    .execute(conn)
    .map(drop)
}
