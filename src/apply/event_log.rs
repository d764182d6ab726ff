//! `stripe.events`: the raw events as received, written in the transaction
//! of the batch that carries them, so a row is there once its batch is
//! done (the event applied, or refused and dead-lettered: it was received
//! all the same). Kept for `STRIPE_EVENTS_RETENTION`; `prune` deletes what
//! is older. Kafka stays the source: nothing here is read to apply.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};

use crate::stripe::StripeEvent;

/// Keeps `events` (each with the raw body it came in) that Stripe sent;
/// the snapshots the pull commands build are left out. One already kept (a
/// redelivery, a reconciled duplicate) stays as first received.
///
/// The body is stored as `json`, the text as it came: what was received,
/// and cheaper to write than `jsonb`, which decodes and re-encodes every
/// body inside the batch's transaction (`docs/src/performance.md`), and
/// which refuses some bodies the parser takes (a lone surrogate escape in
/// a field it skips).
///
/// Keeping a copy must never stop the apply: a body Postgres refuses all
/// the same (none is known: `json` takes what the parser took) would be
/// left out with a warning, not retried for ever. The batch is written in
/// one statement; only when that fails is each row tried on its own, each
/// in a savepoint.
pub fn record(conn: &mut PgConnection, events: &[(&StripeEvent, &[u8])]) -> QueryResult<usize> {
    let sent: Vec<&(&StripeEvent, &[u8])> =
        events.iter().filter(|(e, _)| !e.is_snapshot()).collect();
    if sent.is_empty() {
        return Ok(0);
    }
    match conn.transaction(|conn| insert(conn, &sent)) {
        Ok(n) => Ok(n),
        Err(diesel::result::Error::DatabaseError(..)) => {
            let mut kept = 0;
            for row in &sent {
                match conn.transaction(|conn| insert(conn, std::slice::from_ref(row))) {
                    Ok(n) => kept += n,
                    Err(diesel::result::Error::DatabaseError(_, info)) => tracing::warn!(
                        stripe.event_id = %row.0.id,
                        error = info.message(),
                        "the event is applied but not kept in stripe.events: Postgres refused its body"
                    ),
                    Err(other) => return Err(other),
                }
            }
            Ok(kept)
        }
        Err(other) => Err(other),
    }
}

fn insert(conn: &mut PgConnection, sent: &[&(&StripeEvent, &[u8])]) -> QueryResult<usize> {
    // The body parsed as UTF-8 JSON already (StripeEvent::parse).
    let bodies: Vec<&str> = sent
        .iter()
        .map(|(_, body)| std::str::from_utf8(body).unwrap_or("{}"))
        .collect();
    // One statement over arrays (see ledger::already_applied). A time
    // Postgres cannot hold is NULL rather than an error.
    diesel::sql_query(
        "INSERT INTO stripe.events (account, id, type, created, api_version, livemode, object_id, data) \
         SELECT a, i, t, CASE WHEN c BETWEEN -100000000000 AND 100000000000 THEN to_timestamp(c) END, \
                v, l, o, d::json \
         FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) AS x(a, i, t, c, v, l, o, d) \
         ON CONFLICT (account, id) DO NOTHING",
    )
    .bind::<Array<Text>, _>(sent.iter().map(|(e, _)| e.account.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(sent.iter().map(|(e, _)| e.id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(sent.iter().map(|(e, _)| e.kind.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(sent.iter().map(|(e, _)| e.created).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        sent.iter()
            .map(|(e, _)| e.api_version.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Bool>, _>(sent.iter().map(|(e, _)| e.livemode).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(sent.iter().map(|(e, _)| e.object_id()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(bodies)
    .execute(conn)
}
