//! `stripe.events`: the raw events as received, written in the transaction
//! of the batch that applies them, so a row is there exactly when the
//! event's effect is. Kept for `STRIPE_EVENTS_RETENTION`; `prune` deletes
//! what is older. Kafka stays the source: nothing here is read to apply.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};

use crate::stripe::StripeEvent;

/// Keeps `events` (each with the raw body it came in) that Stripe sent;
/// the snapshots the pull commands build are left out. One already kept (a
/// redelivery, a reconciled duplicate) stays as first received.
pub fn record(conn: &mut PgConnection, events: &[(&StripeEvent, &[u8])]) -> QueryResult<usize> {
    let sent: Vec<&(&StripeEvent, &[u8])> =
        events.iter().filter(|(e, _)| !e.is_snapshot()).collect();
    if sent.is_empty() {
        return Ok(0);
    }
    // The body parsed as UTF-8 JSON already (StripeEvent::parse).
    let bodies: Vec<&str> = sent
        .iter()
        .map(|(_, body)| std::str::from_utf8(body).unwrap_or("{}"))
        .collect();
    // One statement per batch, over arrays (see ledger::already_applied).
    diesel::sql_query(
        "INSERT INTO stripe.events (account, id, type, created, api_version, livemode, object_id, data) \
         SELECT a, i, t, CASE WHEN abs(c) < 1e11 THEN to_timestamp(c) END, v, l, o, d::jsonb \
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
