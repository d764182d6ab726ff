//! `orders.notifications`: one row per paid order, claimed before its
//! email is sent and marked after. The row is both the exactly-once key
//! (unique per account and order) and the delivery queue the notifier's
//! sender drains, with a retry schedule per row, so an order whose email
//! cannot go out yet never holds up the events behind it.
//!
//! A sender takes a row under a lease: a random token and an expiry
//! (`next_attempt_at`). Every later write of that sender (renewing the
//! lease before the message goes out, recording the outcome) names the
//! token and applies only while it is still the row's, so a sender that
//! was slow past its lease and lost the row to another can neither send
//! it again nor overwrite what the new holder recorded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// A notification to claim for a paid order.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub account: &'a str,
    pub order_key: &'a str,
    pub session_id: &'a str,
    pub event_id: &'a str,
    pub event: &'a Value,
    /// `{"session": …, "line_items": [...]}`: what the email shows.
    pub order_data: Value,
    pub message_id: String,
}

/// Records the order unless it already is (a duplicate, a replay, the
/// other event of the same session, a renewal of the same subscription).
/// Returns whether this call created it.
pub fn claim(conn: &mut PgConnection, n: &NewNotification<'_>) -> QueryResult<bool> {
    diesel::sql_query(
        "INSERT INTO orders.notifications \
           (account, order_key, session_id, event_id, event, order_data, message_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account, order_key) DO NOTHING",
    )
    .bind::<Text, _>(n.account)
    .bind::<Text, _>(n.order_key)
    .bind::<Text, _>(n.session_id)
    .bind::<Text, _>(n.event_id)
    .bind::<Jsonb, _>(n.event)
    .bind::<Jsonb, _>(&n.order_data)
    .bind::<Text, _>(&n.message_id)
    .execute(conn)
    .map(|rows| rows == 1)
}

/// Whether the order already has its notification (in any status).
pub fn exists(conn: &mut PgConnection, account: &str, order_key: &str) -> QueryResult<bool> {
    diesel::select(
        diesel::dsl::sql::<diesel::sql_types::Bool>(
            "EXISTS (SELECT 1 FROM orders.notifications WHERE account = ",
        )
        .bind::<Text, _>(account)
        .sql(" AND order_key = ")
        .bind::<Text, _>(order_key)
        .sql(")"),
    )
    .get_result(conn)
}

/// Puts the order's notification back in the queue if it failed: what a
/// replay of its dead letter asks for. Returns whether it did.
pub fn requeue_failed(
    conn: &mut PgConnection,
    account: &str,
    order_key: &str,
) -> QueryResult<bool> {
    diesel::sql_query(
        "UPDATE orders.notifications SET status = 'pending', attempts = 0, \
           next_attempt_at = now(), lease_token = NULL, updated_at = now() \
         WHERE account = $1 AND order_key = $2 AND status = 'failed'",
    )
    .bind::<Text, _>(account)
    .bind::<Text, _>(order_key)
    .execute(conn)
    .map(|rows| rows == 1)
}

/// A notification as operators see it.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Notification {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub account: String,
    #[diesel(sql_type = Text)]
    pub order_key: String,
    #[diesel(sql_type = Text)]
    pub session_id: String,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub message_id: String,
    #[diesel(sql_type = Text)]
    pub status: NotificationStatus,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub sent_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, account, order_key, session_id, event_id, message_id, status, \
    attempts, next_attempt_at, last_error, created_at, sent_at";

crate::text_enum! {
    /// `orders.notifications.status`.
    pub enum NotificationStatus {
        /// Not sent yet: due at `next_attempt_at`, or leased to a sender.
        Pending = "pending",
        Sent = "sent",
        /// Given up on (a permanent refusal, or out of attempts); an
        /// operator's retry makes it pending again.
        Failed = "failed",
    }
}

/// The statuses' names, for the CLI's and the API's choices.
pub const STATUSES: [&str; 3] = [
    NotificationStatus::Pending.as_str(),
    NotificationStatus::Sent.as_str(),
    NotificationStatus::Failed.as_str(),
];

/// Notifications, newest first, optionally of one status.
pub fn list(
    conn: &mut PgConnection,
    status: Option<NotificationStatus>,
    limit: i64,
) -> QueryResult<Vec<Notification>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM orders.notifications \
         WHERE $1::text IS NULL OR status = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind::<Nullable<Text>, _>(status)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Why a retry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no notification {0}")]
    NotFound(i64),
    #[error("notification {0} was already sent; retrying would send it twice")]
    AlreadySent(i64),
    #[error(
        "notification {id} is being sent: a notifier holds it until {until}, and queued \
         again now it could go out twice; if it is not sent by then, retry after that"
    )]
    BeingSent { id: i64, until: DateTime<Utc> },
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// No database connection (pool exhausted, database down).
    #[error(transparent)]
    Unavailable(#[from] crate::db::Unavailable),
}

#[derive(QueryableByName)]
struct RetryState {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    sent: bool,
    /// A sender holds it and its lease has not run out.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    leased: bool,
    #[diesel(sql_type = Timestamptz)]
    next_attempt_at: DateTime<Utc>,
}

/// Puts a failed (or waiting) notification back in the queue, due now.
/// Refused for one that was sent, and for one a sender is sending: queued
/// again, another sender would take it while the first still talks to
/// the SMTP server. A lease that ran out does not count (its sender is
/// presumed gone; were it only slow, the token cleared here stops it
/// before it sends).
pub fn retry(conn: &mut PgConnection, id: i64) -> Result<Notification, RetryError> {
    conn.transaction(|conn| {
        let state: Option<RetryState> = diesel::sql_query(
            "SELECT status = 'sent' AS sent, \
               (status = 'pending' AND lease_token IS NOT NULL AND next_attempt_at > now()) AS leased, \
               next_attempt_at \
             FROM orders.notifications WHERE id = $1 FOR UPDATE",
        )
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .optional()?;
        match state {
            None => return Err(RetryError::NotFound(id)),
            Some(s) if s.sent => return Err(RetryError::AlreadySent(id)),
            Some(s) if s.leased => {
                return Err(RetryError::BeingSent {
                    id,
                    until: s.next_attempt_at,
                })
            }
            Some(_) => {}
        }
        Ok(diesel::sql_query(format!(
            "UPDATE orders.notifications SET status = 'pending', attempts = 0, \
               next_attempt_at = now(), lease_token = NULL, updated_at = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind::<BigInt, _>(id)
        .get_result(conn)?)
    })
}

/// A notification taken by the sender, with what its email needs.
#[derive(Debug, Clone, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub account: String,
    #[diesel(sql_type = Text)]
    pub order_key: String,
    #[diesel(sql_type = Text)]
    pub message_id: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Jsonb)]
    pub order_data: Value,
    #[diesel(sql_type = Jsonb)]
    pub event: Value,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    lease_token: Uuid,
}

impl Due {
    /// The sender's hold on this row.
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            token: self.lease_token,
        }
    }
}

/// A sender's hold on one notification: the row's id and the token it was
/// taken with. Writes made with it apply only while the token is the row's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    token: Uuid,
}

/// Whether a write made as a lease's holder applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AsHolder {
    Applied,
    /// Another sender took the row since (the lease ran out), or an
    /// operator queued it again: the write changed nothing.
    LeaseLost,
}

impl AsHolder {
    fn from_rows(rows: usize) -> Self {
        if rows == 1 {
            Self::Applied
        } else {
            Self::LeaseLost
        }
    }
}

/// Takes the next due notification for `lease`, under a fresh token: the
/// attempt counts, and no other sender takes it until the lease runs out
/// (a sender that dies mid-send leaves it to be taken again then).
pub fn take_next(conn: &mut PgConnection, lease: Duration) -> QueryResult<Option<Due>> {
    diesel::sql_query(
        "UPDATE orders.notifications n \
         SET attempts = n.attempts + 1, next_attempt_at = now() + make_interval(secs => $1), \
             lease_token = $2, updated_at = now() \
         FROM (SELECT id FROM orders.notifications \
               WHERE status = 'pending' AND next_attempt_at <= now() \
               ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) due \
         WHERE n.id = due.id \
         RETURNING n.id, n.account, n.order_key, n.message_id, n.attempts, n.order_data, n.event, \
           n.lease_token",
    )
    .bind::<diesel::sql_types::Double, _>(lease.as_secs_f64())
    .bind::<diesel::sql_types::Uuid, _>(Uuid::new_v4())
    .get_result(conn)
    .optional()
}

/// Extends the holder's lease to `lease` from now: what a sender does
/// right before the message goes out, so that it sends only while the row
/// is still its own, and has a whole lease to send and record. A lease
/// that ran out still renews while no one else took the row (the token is
/// replaced by every take).
pub fn renew(conn: &mut PgConnection, held: Lease, lease: Duration) -> QueryResult<AsHolder> {
    diesel::sql_query(
        "UPDATE orders.notifications \
         SET next_attempt_at = now() + make_interval(secs => $3), updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
    )
    .bind::<BigInt, _>(held.id)
    .bind::<diesel::sql_types::Uuid, _>(held.token)
    .bind::<diesel::sql_types::Double, _>(lease.as_secs_f64())
    .execute(conn)
    .map(AsHolder::from_rows)
}

pub fn mark_sent(conn: &mut PgConnection, held: Lease) -> QueryResult<AsHolder> {
    diesel::sql_query(
        "UPDATE orders.notifications SET status = 'sent', sent_at = now(), last_error = NULL, \
           lease_token = NULL, updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
    )
    .bind::<BigInt, _>(held.id)
    .bind::<diesel::sql_types::Uuid, _>(held.token)
    .execute(conn)
    .map(AsHolder::from_rows)
}

/// Leaves the notification pending, due again after `wait`, and lets go
/// of it.
pub fn mark_retry(
    conn: &mut PgConnection,
    held: Lease,
    error: &str,
    wait: Duration,
) -> QueryResult<AsHolder> {
    diesel::sql_query(
        "UPDATE orders.notifications SET last_error = $3, lease_token = NULL, \
           next_attempt_at = now() + make_interval(secs => $4), updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
    )
    .bind::<BigInt, _>(held.id)
    .bind::<diesel::sql_types::Uuid, _>(held.token)
    .bind::<Text, _>(error)
    .bind::<diesel::sql_types::Double, _>(wait.as_secs_f64())
    .execute(conn)
    .map(AsHolder::from_rows)
}

pub fn mark_failed(conn: &mut PgConnection, held: Lease, error: &str) -> QueryResult<AsHolder> {
    diesel::sql_query(
        "UPDATE orders.notifications SET status = 'failed', last_error = $3, lease_token = NULL, \
           updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
    )
    .bind::<BigInt, _>(held.id)
    .bind::<diesel::sql_types::Uuid, _>(held.token)
    .bind::<Text, _>(error)
    .execute(conn)
    .map(AsHolder::from_rows)
}
