//! `stripe-sync prune`: retention for the tables that only grow. It
//! deletes, older than an age:
//!
//! - `event_ledger` rows (by `processed_at`);
//! - outbox rows that were published and delivered successfully, with their
//!   delivery records. Pending changes and failed deliveries stay: they are
//!   what operators look at, and a customer's sync status is read from them;
//! - order notifications that were `sent` (by `sent_at`);
//! - batches of the HTTP export that were acknowledged (by `acked_at`).
//!   Each is kept only so that a repeated acknowledgement is recognised;
//!   one of a pruned batch is refused (`unknown_batch`) and changes
//!   nothing, as a repeated one does. Pending batches stay.
//!
//! and, by their own age (`STRIPE_EVENTS_RETENTION`), the raw events in
//! `stripe.events` (by `received_at`; all of them when it is `off`). No
//! deduplication reads those, so their age has no floor.
//!
//! The ledger and the notifications are how a redelivered or reconciled
//! event is recognised. Stripe redelivers webhooks for up to 3 days, and
//! the Events API (reconcile) reaches back 30. So an age under 30 days is
//! refused: below it, pruning could let an event apply twice or an order
//! email go out twice.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double};

/// The shortest age that keeps deduplication sound (the Events API window).
pub const MIN_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Rows deleted per statement, so no delete holds locks for long.
const CHUNK: i64 = 10_000;

/// Rows deleted from each table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub ledger: i64,
    pub outbox: i64,
    pub deliveries: i64,
    pub notifications: i64,
    pub export_batches: i64,
    pub events: i64,
}

impl std::fmt::Display for Pruned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pruned {} ledger rows, {} outbox rows ({} deliveries), {} sent notifications, \
             {} acknowledged export batches, {} raw events",
            self.ledger,
            self.outbox,
            self.deliveries,
            self.notifications,
            self.export_batches,
            self.events
        )
    }
}

/// Why a prune was refused.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(
        "an age under 30 days would let a redelivered or reconciled event apply twice; got {0}"
    )]
    TooYoung(String),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

#[derive(QueryableByName)]
struct OutboxPruned {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    deliveries: i64,
}

/// Deletes what is older than `age`, and the raw events older than
/// `events_retention` (all of them with `None`: they are not kept), chunk
/// by chunk.
pub fn prune(
    conn: &mut PgConnection,
    age: Duration,
    events_retention: Option<Duration>,
) -> Result<Pruned, PruneError> {
    if age < MIN_AGE {
        return Err(PruneError::TooYoung(describe(age)));
    }
    let secs = age.as_secs_f64();
    let mut pruned = Pruned {
        ledger: in_chunks(
            conn,
            "DELETE FROM event_ledger WHERE ctid = ANY(ARRAY( \
           SELECT ctid FROM event_ledger \
           WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2))",
            secs,
        )?,
        ..Pruned::default()
    };
    // Deliveries first (they reference the outbox), then the outbox rows
    // left with no delivery that is not a success.
    let done = "SELECT o.id FROM outbox o \
                WHERE o.published_at < now() - make_interval(secs => $1) \
                  AND EXISTS (SELECT 1 FROM outbox_deliveries d WHERE d.outbox_id = o.id) \
                  AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d \
                                  WHERE d.outbox_id = o.id AND d.status <> 'synced') \
                LIMIT $2";
    loop {
        let removed: OutboxPruned = diesel::sql_query(format!(
            "WITH done AS ({done}), \
                  deliveries AS (DELETE FROM outbox_deliveries \
                                 WHERE outbox_id IN (SELECT id FROM done) RETURNING 1), \
                  gone AS (DELETE FROM outbox WHERE id IN (SELECT id FROM done) RETURNING 1) \
             SELECT (SELECT count(*) FROM gone) AS rows, \
                    (SELECT count(*) FROM deliveries) AS deliveries"
        ))
        .bind::<Double, _>(secs)
        .bind::<BigInt, _>(CHUNK)
        .get_result(conn)?;
        pruned.outbox += removed.rows;
        pruned.deliveries += removed.deliveries;
        if removed.rows < CHUNK {
            break;
        }
    }
    pruned.notifications = in_chunks(
        conn,
        "DELETE FROM orders.notifications WHERE id = ANY(ARRAY( \
           SELECT id FROM orders.notifications \
           WHERE status = 'sent' AND sent_at < now() - make_interval(secs => $1) LIMIT $2))",
        secs,
    )?;
    pruned.export_batches = in_chunks(
        conn,
        "DELETE FROM orders.export_batches WHERE id = ANY(ARRAY( \
           SELECT id FROM orders.export_batches \
           WHERE acked_at < now() - make_interval(secs => $1) LIMIT $2))",
        secs,
    )?;
    pruned.events = in_chunks(
        conn,
        "DELETE FROM stripe.events WHERE ctid = ANY(ARRAY( \
           SELECT ctid FROM stripe.events \
           WHERE received_at < now() - make_interval(secs => $1) LIMIT $2))",
        events_retention.map_or(0.0, |r| r.as_secs_f64()),
    )?;
    Ok(pruned)
}

/// Runs a `DELETE … LIMIT $2` (age in seconds as `$1`) until it deletes
/// fewer than a chunk.
fn in_chunks(conn: &mut PgConnection, delete: &str, secs: f64) -> QueryResult<i64> {
    let mut total = 0;
    loop {
        let n = diesel::sql_query(delete)
            .bind::<Double, _>(secs)
            .bind::<BigInt, _>(CHUNK)
            .execute(conn)? as i64;
        total += n;
        if n < CHUNK {
            return Ok(total);
        }
    }
}

pub use crate::config::parse_duration;

fn describe(age: Duration) -> String {
    let secs = age.as_secs();
    if secs.is_multiple_of(24 * 3600) {
        format!("{}d", secs / (24 * 3600))
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_a_unit() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        for bad in [
            "",
            "d",
            "90",
            "0d",
            "-1d",
            "9x",
            "1.5d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
