//! Postgres' own ceiling for what the inbound apply writes, and the
//! apply's Postgres side on parsed events, without broker or HTTP.

use std::time::Instant;

use diesel::prelude::*;
use serde_json::{json, Value};
use stripe_sync::db;

use crate::backlog::{Backlog, CUSTOMERS_ONLY, TYPE_MIX};
use crate::{common, mix, Scale};

/// Postgres' batched-upsert ceiling and the apply's Postgres-side rate, both
/// on `lanes` connections.
pub(crate) fn postgres_figures(
    pool: &db::PgPool,
    fixtures: &Value,
    scale: &Scale,
    lanes: usize,
) -> anyhow::Result<(f64, f64)> {
    Ok((
        upsert_ceiling(pool, fixtures, scale.upsert_rows, lanes)?,
        store_apply_rate(pool, fixtures, scale.backlog_events, lanes, CUSTOMERS_ONLY)?,
    ))
}

/// The lane (connection) that applies customer number `customer`: the
/// bench's stand-in for partition modulo lanes.
pub(crate) fn lane_of(customer: usize, lanes: usize) -> usize {
    customer % 5000 % lanes
}

/// Postgres' own rate for what the inbound apply writes, without any of its
/// logic: rows of the customers table with a real Stripe customer as
/// `stripe_object`, for the same 5,000 customers updated over and over,
/// 500 per multi-row INSERT … ON CONFLICT DO UPDATE (one transaction each),
/// from `connections` connections at once, each with its own customers.
/// Returns rows/s; then empties the table again.
pub(crate) fn upsert_ceiling(
    pool: &db::PgPool,
    fixtures: &Value,
    n: usize,
    connections: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    in_parallel(connections, |lane| {
        let mut conn = pool.get()?;
        let mine: Vec<usize> = (0..n)
            .filter(|&i| lane_of(i, connections) == lane)
            .collect();
        for batch in mine.chunks(500) {
            let values: Vec<String> = batch
                .iter()
                .map(|i| {
                    let mut object = fixtures["customer"].clone();
                    object["id"] = json!(format!("cus_ceiling{}", i % 5000));
                    object["name"] = json!(format!("Customer {i}"));
                    let literal = object.to_string().replace('\'', "''");
                    format!(
                        "(md5('cus_ceiling{k}')::uuid, 'c{i}@example.com', 'Customer {i}', '{{}}'::jsonb, '{literal}'::jsonb)",
                        k = i % 5000
                    )
                })
                .collect();
            diesel::sql_query(format!(
                "INSERT INTO customers (id, email, name, metadata, stripe_object) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, \
                   metadata = EXCLUDED.metadata, stripe_object = EXCLUDED.stripe_object, \
                   updated_at = now(), version = customers.version + 1",
                values.join(",")
            ))
            .execute(&mut conn)?;
        }
        Ok(())
    })?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    diesel::sql_query("TRUNCATE customers CASCADE").execute(&mut pool.get()?)?;
    Ok(rate)
}

/// Applies `n` customer events (5,000 customers, each updated n/5,000
/// times a second apart) through `apply::apply_batch` on `connections`
/// lanes at once, as the inbound worker does: each lane its own customers
/// in batches of 500, one transaction each; returns events/s, then empties
/// the tables.
pub(crate) fn store_apply_rate(
    pool: &db::PgPool,
    fixtures: &Value,
    n: usize,
    connections: usize,
    backlog: Backlog,
) -> anyhow::Result<f64> {
    /// Answers what the events need: no ties (they never share a second),
    /// and checkout sessions' line items and balance transactions as the
    /// bench's Stripe fake does.
    struct NoTies<'f>(&'f Value);
    impl stripe_sync::apply::RemoteReader for NoTies<'_> {
        fn current(
            &self,
            _: &stripe_sync::stripe::AccountId,
            path: &str,
            id: &str,
        ) -> Result<stripe_sync::stripe::RemoteObject, stripe_sync::apply::ApplyError> {
            if path == "balance_transactions" {
                return Ok(stripe_sync::stripe::RemoteObject::Live(
                    common::balance_transaction(id, self.0),
                ));
            }
            Err(stripe_sync::apply::ApplyError::Permanent(
                stripe_sync::apply::Refusal::ReadRefused(format!(
                    "unexpected re-read of {id}: the events have no ties"
                )),
            ))
        }
        fn children(
            &self,
            _: &stripe_sync::stripe::AccountId,
            _: &'static stripe_sync::registry::Resource,
            _: &'static stripe_sync::registry::Child,
            id: &str,
        ) -> Result<Vec<Value>, stripe_sync::apply::ApplyError> {
            Ok(common::line_items(id, self.0)["data"]
                .as_array()
                .cloned()
                .unwrap_or_default())
        }
    }
    let events: Vec<stripe_sync::stripe::StripeEvent> = (0..n as u64)
        .map(|i| {
            let ev = (backlog.event_at)(70_000_000 + i, fixtures);
            stripe_sync::stripe::StripeEvent::parse(&serde_json::to_vec(&ev).unwrap())
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    // As the worker does: each lane (connection) gets its own customers, the
    // stand-in for partitions, and applies them in batches of 500, one
    // transaction each, without waiting for the other lanes.
    in_parallel(connections, |lane| {
        let mut conn = pool.get()?;
        let mine: Vec<&stripe_sync::stripe::StripeEvent> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| lane_of(*i, connections) == lane)
            .map(|(_, e)| e)
            .collect();
        for batch in mine.chunks(500) {
            let results = conn
                .transaction(|conn| {
                    stripe_sync::apply::apply_batch(
                        conn,
                        &NoTies(fixtures),
                        batch,
                        stripe_sync::apply::FanOut::Off,
                    )
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(results.iter().all(Result::is_ok), "an event was refused");
        }
        Ok(())
    })?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    diesel::sql_query("TRUNCATE customers, id_map, event_ledger CASCADE")
        .execute(&mut pool.get()?)?;
    for r in stripe_sync::registry::RESOURCES
        .iter()
        .filter(|r| !r.is_local_customer())
    {
        diesel::sql_query(format!("TRUNCATE {}", r.table())).execute(&mut pool.get()?)?;
        for c in r.children {
            diesel::sql_query(format!("TRUNCATE {}", c.table())).execute(&mut pool.get()?)?;
        }
    }
    Ok(rate)
}

/// Runs `work(lane)` for each of `lanes` lanes on its own thread and waits
/// for all of them.
pub(crate) fn in_parallel(
    lanes: usize,
    work: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let work = &work;
                scope.spawn(move || work(lane))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("bench lane panicked"))
    })
}

/// `bench --store-apply`: only the Postgres side of the inbound apply and
/// its ceilings, on one connection and on `lanes`, and the type mix on one.
pub(crate) fn store_apply_only(
    pool: &db::PgPool,
    fixtures: &Value,
    scale: &Scale,
    lanes: usize,
) -> anyhow::Result<()> {
    for lanes in [1, lanes] {
        let (ceiling, rate) = postgres_figures(pool, fixtures, scale, lanes)?;
        println!(
            "{lanes} connection(s): batched upsert ceiling: {ceiling:.0} rows/s; inbound \
             apply, Postgres side only: {rate:.0} events/s ({:.0}%)",
            100.0 * rate / ceiling
        );
    }
    // The type mix on one connection (its objects are not split by lane as
    // customers are).
    let mix = store_apply_rate(pool, fixtures, scale.backlog_events, 1, TYPE_MIX)?;
    let mix_ceiling = mix::upsert_ceiling(&mut *pool.get()?, fixtures, scale.upsert_rows)?;
    println!(
        "1 connection: batched upsert ceiling of the type mix: {mix_ceiling:.0} events/s; \
         inbound apply of the type mix, Postgres side only: {mix:.0} events/s ({:.0}%)",
        100.0 * mix / mix_ceiling
    );
    Ok(())
}
