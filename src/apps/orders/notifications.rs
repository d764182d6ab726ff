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
use diesel::dsl::{now, IntervalDsl};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Text, Timestamptz};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::schema::orders::notifications;
use crate::stripe::AccountId;

/// A notification to claim for a paid order.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub account: &'a AccountId,
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
    diesel::insert_into(notifications::table)
        .values((
            notifications::account.eq(n.account),
            notifications::order_key.eq(n.order_key),
            notifications::session_id.eq(n.session_id),
            notifications::event_id.eq(n.event_id),
            notifications::event.eq(n.event),
            notifications::order_data.eq(&n.order_data),
            notifications::message_id.eq(&n.message_id),
        ))
        .on_conflict((notifications::account, notifications::order_key))
        .do_nothing()
        .execute(conn)
        .map(|rows| rows == 1)
}

/// Whether the order already has its notification (in any status).
pub fn exists(conn: &mut PgConnection, account: &AccountId, order_key: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        notifications::table
            .filter(notifications::account.eq(account))
            .filter(notifications::order_key.eq(order_key)),
    ))
    .get_result(conn)
}

/// Puts the order's notification back in the queue if it failed: what a
/// replay of its dead letter asks for. Returns whether it did.
pub fn requeue_failed(
    conn: &mut PgConnection,
    account: &AccountId,
    order_key: &str,
) -> QueryResult<bool> {
    diesel::update(
        notifications::table
            .filter(notifications::account.eq(account))
            .filter(notifications::order_key.eq(order_key))
            .filter(notifications::status.eq(NotificationStatus::Failed)),
    )
    .set(queued_again())
    .execute(conn)
    .map(|rows| rows == 1)
}

/// What queuing a notification again sets: pending, due now, no holder,
/// its attempts counted afresh.
#[allow(clippy::type_complexity)]
fn queued_again() -> (
    diesel::dsl::Eq<notifications::status, NotificationStatus>,
    diesel::dsl::Eq<notifications::attempts, i32>,
    diesel::dsl::Eq<notifications::next_attempt_at, now>,
    diesel::dsl::Eq<notifications::lease_token, Option<Uuid>>,
    diesel::dsl::Eq<notifications::updated_at, now>,
) {
    (
        notifications::status.eq(NotificationStatus::Pending),
        notifications::attempts.eq(0),
        notifications::next_attempt_at.eq(now),
        notifications::lease_token.eq(None::<Uuid>),
        notifications::updated_at.eq(now),
    )
}

/// A notification as operators see it.
#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg))]
pub struct Notification {
    pub id: i64,
    pub account: AccountId,
    pub order_key: String,
    pub session_id: String,
    pub event_id: String,
    pub message_id: String,
    pub status: NotificationStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

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

/// Notifications, newest first, optionally of one status.
pub fn list(
    conn: &mut PgConnection,
    status: Option<NotificationStatus>,
    limit: i64,
) -> QueryResult<Vec<Notification>> {
    let mut query = notifications::table
        .select(Notification::as_select())
        .order(notifications::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(notifications::status.eq(status));
    }
    query.load(conn)
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

/// Puts a failed (or waiting) notification back in the queue, due now.
/// Refused for one that was sent, and for one a sender is sending: queued
/// again, another sender would take it while the first still talks to
/// the SMTP server. A lease that ran out does not count (its sender is
/// presumed gone; were it only slow, the token cleared here stops it
/// before it sends).
pub fn retry(conn: &mut PgConnection, id: i64) -> Result<Notification, RetryError> {
    conn.transaction(|conn| {
        // Whether a sender's lease still runs, by the database's clock.
        let state: Option<(NotificationStatus, Option<Uuid>, DateTime<Utc>, bool)> =
            notifications::table
                .find(id)
                .select((
                    notifications::status,
                    notifications::lease_token,
                    notifications::next_attempt_at,
                    notifications::next_attempt_at.gt(now),
                ))
                .for_update()
                .first(conn)
                .optional()?;
        match state {
            None => return Err(RetryError::NotFound(id)),
            Some((NotificationStatus::Sent, ..)) => return Err(RetryError::AlreadySent(id)),
            Some((NotificationStatus::Pending, Some(_), until, true)) => {
                return Err(RetryError::BeingSent { id, until })
            }
            Some(_) => {}
        }
        Ok(diesel::update(notifications::table.find(id))
            .set(queued_again())
            .returning(Notification::as_returning())
            .get_result(conn)?)
    })
}

/// A notification taken by the sender, with what its email needs.
#[derive(Debug, Clone, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub account: AccountId,
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
    // Raw SQL: one statement picks the due row (skipping rows other
    // senders have locked) and takes it; diesel's builder has no
    // UPDATE … FROM (subquery … FOR UPDATE SKIP LOCKED).
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
    diesel::update(held_by(held))
        .set((
            // The database's clock: leases are compared with it.
            notifications::next_attempt_at
                .eq(now.into_sql::<Timestamptz>() + lease.as_secs_f64().seconds()),
            notifications::updated_at.eq(now),
        ))
        .execute(conn)
        .map(AsHolder::from_rows)
}

pub fn mark_sent(conn: &mut PgConnection, held: Lease) -> QueryResult<AsHolder> {
    diesel::update(held_by(held))
        .set((
            notifications::status.eq(NotificationStatus::Sent),
            notifications::sent_at.eq(now),
            notifications::last_error.eq(None::<String>),
            notifications::lease_token.eq(None::<Uuid>),
            notifications::updated_at.eq(now),
        ))
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
    diesel::update(held_by(held))
        .set((
            notifications::last_error.eq(error),
            notifications::lease_token.eq(None::<Uuid>),
            notifications::next_attempt_at
                .eq(now.into_sql::<Timestamptz>() + wait.as_secs_f64().seconds()),
            notifications::updated_at.eq(now),
        ))
        .execute(conn)
        .map(AsHolder::from_rows)
}

pub fn mark_failed(conn: &mut PgConnection, held: Lease, error: &str) -> QueryResult<AsHolder> {
    diesel::update(held_by(held))
        .set((
            notifications::status.eq(NotificationStatus::Failed),
            notifications::last_error.eq(error),
            notifications::lease_token.eq(None::<Uuid>),
            notifications::updated_at.eq(now),
        ))
        .execute(conn)
        .map(AsHolder::from_rows)
}

type HeldBy = diesel::dsl::Filter<
    diesel::dsl::Filter<
        diesel::dsl::Find<notifications::table, i64>,
        diesel::dsl::Eq<notifications::lease_token, Uuid>,
    >,
    diesel::dsl::Eq<notifications::status, NotificationStatus>,
>;

/// The row `held` names, while its lease is still the row's and it is
/// pending: the only row a holder's write may change.
fn held_by(held: Lease) -> HeldBy {
    notifications::table
        .find(held.id)
        .filter(notifications::lease_token.eq(held.token))
        .filter(notifications::status.eq(NotificationStatus::Pending))
}
