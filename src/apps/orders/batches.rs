//! The HTTP export's batches: at-least-once delivery with an explicit
//! acknowledgement.
//!
//! A server cannot tell when an HTTP client has its answer (hyper taking
//! the bytes, or the kernel sending them, is not the client reading
//! them), so the watermark never moves on an answer. Each answer with
//! sessions is a batch, recorded in `orders.export_batches` before it is
//! sent and named by an id the answer carries. The watermark moves to the
//! batch's end when a later call acknowledges that id: the next poll
//! (`ack`) or `POST …/ack`. Until then:
//!
//! - the name has that one pending batch, and no other is made;
//! - the batch is held for the lease (`EXPORT_BATCH_LEASE_MS`) after each
//!   offer: every call of the name meanwhile hears it is in flight, so two
//!   pollers of one name do not both get it. Nothing identifies a caller,
//!   so that includes the very client it went to: one that lost its
//!   connection and asks again gets `batch_in_flight` until the lease
//!   runs out;
//! - once the lease runs out, the next call gets the same batch again (the
//!   same id and sessions, `redelivered`), whoever makes it; offered more
//!   than [`OFFERS_BEFORE_WARNING`] times, it is logged as a warning.
//!
//! An acknowledgement applies once: a repeated one (a client retrying a
//! call whose answer it lost) is harmless, and one of an id the export
//! never offered changes nothing and is refused.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;
use uuid::Uuid;

use super::export::{self, ExportSpec};
use crate::db::schema::orders::export_batches;

/// What a poll gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// A batch for this caller: new, or offered again (`redelivered`).
    Batch {
        id: Uuid,
        /// The sessions, as a JSON array.
        sessions: Value,
        count: i64,
        has_more: bool,
        redelivered: bool,
    },
    /// A batch is pending and held this much longer (for whichever call
    /// it was last offered to; callers are not told apart).
    InFlight { retry_after: Duration },
    /// Nothing new after the watermark.
    NothingNew,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// The watermark moved past the batch's `count` sessions.
    Acknowledged { count: i64 },
    /// It was acknowledged before; nothing changed.
    AlreadyAcknowledged { count: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{id} is not a batch{}; nothing was acknowledged", of_export(.name))]
    UnknownBatch { id: Uuid, name: Option<String> },
    #[error(
        "export {name:?} has batch {id} pending, made with other filters (payment_links, \
         since, limit); acknowledge it before changing them, or use another name"
    )]
    FiltersChanged { name: String, id: Uuid },
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// No database connection (pool exhausted, database down).
    #[error(transparent)]
    Unavailable(#[from] crate::db::Unavailable),
}

fn of_export(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" of export {n:?}"))
        .unwrap_or_default()
}

#[derive(QueryableByName)]
struct Pending {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Array<Text>)]
    payment_links: Vec<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    since: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    max_sessions: i64,
    /// Still held since it was last offered (to whom is not known).
    #[diesel(sql_type = Bool)]
    held: bool,
    #[diesel(sql_type = Double)]
    held_for_secs: f64,
}

impl Pending {
    fn made_with(&self, spec: &ExportSpec) -> bool {
        self.payment_links == sorted(&spec.payment_links)
            && self.since == spec.since.map(export::as_stored)
            && Some(self.max_sessions) == spec.limit
    }
}

fn sorted(links: &[String]) -> Vec<String> {
    let mut links = links.to_vec();
    links.sort();
    links.dedup();
    links
}

fn pending(conn: &mut PgConnection, name: &str) -> QueryResult<Option<Pending>> {
    diesel::sql_query(
        "SELECT id, payment_links, since, max_sessions, leased_until > now() AS held, \
           GREATEST(extract(epoch FROM leased_until - now()), 0)::float8 AS held_for_secs \
         FROM orders.export_batches WHERE name = $1 AND acked_at IS NULL",
    )
    .bind::<Text, _>(name)
    .get_result(conn)
    .optional()
}

/// The name's pending batch, if it has one.
pub fn pending_id(conn: &mut PgConnection, name: &str) -> QueryResult<Option<Uuid>> {
    Ok(pending(conn, name)?.map(|p| p.id))
}

#[derive(QueryableByName)]
struct Offered {
    #[diesel(sql_type = Jsonb)]
    sessions: Value,
    #[diesel(sql_type = Integer)]
    count: i32,
    #[diesel(sql_type = Bool)]
    has_more: bool,
    #[diesel(sql_type = Integer)]
    offers: i32,
}

/// Offered this many times without an acknowledgement, a batch is logged
/// as a warning on every further offer: its poller most likely never
/// acknowledges (one written before acknowledgements existed).
pub const OFFERS_BEFORE_WARNING: i32 = 5;

/// A poll of the export `spec.name`: its pending batch again if it has one
/// (unless held since its last offer), else the next batch, recorded as
/// pending before it is returned. `spec.limit` must be set. Acknowledge
/// first ([`acknowledge`]) if the call carries an acknowledgement.
pub fn offer(
    conn: &mut PgConnection,
    spec: &ExportSpec,
    lease: Duration,
) -> Result<Offer, BatchError> {
    let limit = spec.limit.expect("the HTTP export always has a limit");
    conn.transaction(|conn| {
        export::lock(conn, &spec.name)?;
        if let Some(p) = pending(conn, &spec.name)? {
            if !p.made_with(spec) {
                return Err(BatchError::FiltersChanged {
                    name: spec.name.clone(),
                    id: p.id,
                });
            }
            if p.held {
                return Ok(Offer::InFlight {
                    retry_after: Duration::from_secs_f64(p.held_for_secs),
                });
            }
            let again: Offered = diesel::sql_query(
                "UPDATE orders.export_batches \
                 SET offers = offers + 1, leased_until = now() + make_interval(secs => $2) \
                 WHERE id = $1 RETURNING sessions, count, has_more, offers",
            )
            .bind::<diesel::sql_types::Uuid, _>(p.id)
            .bind::<Double, _>(lease.as_secs_f64())
            .get_result(conn)?;
            if again.offers > OFFERS_BEFORE_WARNING {
                tracing::warn!(
                    export = %spec.name,
                    batch_id = %p.id,
                    offers = again.offers,
                    "an export batch is offered again and again without an acknowledgement: \
                     its poller must send the batch_id back (ack) once it has the sessions, \
                     or the export never moves past them"
                );
            }
            return Ok(Offer::Batch {
                id: p.id,
                sessions: again.sessions,
                count: i64::from(again.count),
                has_more: again.has_more,
                redelivered: true,
            });
        }
        let from = export::watermark(conn, &spec.name)?;
        let next = export::read_next(conn, spec, from)?;
        let Some(end) = next.end else {
            return Ok(Offer::NothingNew);
        };
        if next.sessions.is_empty() {
            // Only other payment links' sessions: nothing to deliver, so
            // nothing to acknowledge.
            export::advance(conn, &spec.name, end, 0)?;
            return Ok(Offer::NothingNew);
        }
        let id = Uuid::new_v4();
        let sessions = serde_json::to_value(&next.sessions).expect("sessions serialize to JSON");
        let count = next.sessions.len() as i64;
        diesel::sql_query(
            "INSERT INTO orders.export_batches (id, name, from_xid, from_seq, to_xid, to_seq, \
               payment_links, since, max_sessions, count, has_more, sessions, leased_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
               now() + make_interval(secs => $13))",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<Text, _>(&spec.name)
        .bind::<BigInt, _>(from.0)
        .bind::<BigInt, _>(from.1)
        .bind::<BigInt, _>(end.0)
        .bind::<BigInt, _>(end.1)
        .bind::<Array<Text>, _>(sorted(&spec.payment_links))
        .bind::<Nullable<Timestamptz>, _>(spec.since)
        .bind::<BigInt, _>(limit)
        .bind::<Integer, _>(count as i32)
        .bind::<Bool, _>(next.has_more)
        .bind::<Jsonb, _>(&sessions)
        .bind::<Double, _>(lease.as_secs_f64())
        .execute(conn)?;
        Ok(Offer::Batch {
            id,
            sessions,
            count,
            has_more: next.has_more,
            redelivered: false,
        })
    })
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = export_batches)]
struct Batch {
    name: String,
    acked_at: Option<DateTime<Utc>>,
    count: i32,
    to_xid: i64,
    to_seq: i64,
}

/// Acknowledges batch `id` (of export `name`, when given): the watermark
/// moves past it, once.
pub fn acknowledge(
    conn: &mut PgConnection,
    name: Option<&str>,
    id: Uuid,
) -> Result<Acked, BatchError> {
    let batch = export_batches::table.find(id).select(Batch::as_select());
    let unknown = || BatchError::UnknownBatch {
        id,
        name: name.map(str::to_owned),
    };
    // The batch's own name, to take turns with the export's other calls.
    let owner = match batch.first(conn).optional()? {
        Some(b) if name.is_none_or(|n| n == b.name) => b.name,
        _ => return Err(unknown()),
    };
    conn.transaction(|conn| {
        export::lock(conn, &owner)?;
        let batch = batch
            .for_update()
            .first(conn)
            .optional()?
            .ok_or_else(unknown)?;
        let count = i64::from(batch.count);
        if batch.acked_at.is_some() {
            return Ok(Acked::AlreadyAcknowledged { count });
        }
        // The sessions are delivered now; the row stays, small, so that a
        // repeated acknowledgement is recognised.
        diesel::update(export_batches::table.find(id))
            .set((
                export_batches::acked_at.eq(diesel::dsl::now),
                export_batches::sessions.eq(None::<serde_json::Value>),
            ))
            .execute(conn)?;
        export::advance(conn, &owner, (batch.to_xid, batch.to_seq), count)?;
        Ok(Acked::Acknowledged { count })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pending batch as Postgres returns it: `since` to the microsecond.
    #[test]
    fn a_batch_is_made_with_a_since_finer_than_postgres_keeps() {
        let given = DateTime::parse_from_rfc3339("2026-12-04T10:00:00.123456789Z")
            .unwrap()
            .to_utc();
        let pending = Pending {
            id: Uuid::nil(),
            payment_links: vec!["plink_a".into(), "plink_b".into()],
            since: Some(export::as_stored(given)),
            max_sessions: 100,
            held: true,
            held_for_secs: 1.0,
        };
        let spec = |since: DateTime<Utc>, limit| ExportSpec {
            name: "n8n".into(),
            payment_links: vec!["plink_b".into(), "plink_a".into(), "plink_a".into()],
            since: Some(since),
            limit: Some(limit),
        };
        assert!(pending.made_with(&spec(given, 100)));
        assert!(!pending.made_with(&spec(given, 99)));
        let later = given + chrono::Duration::microseconds(1);
        assert!(!pending.made_with(&spec(later, 100)));
    }
}
