//! `workers/outbox-relay`: moves outbox rows to Kafka: customer changes to
//! `customers.changes.v1` (keyed by local customer id), queued refunds to
//! `stripe.commands.v1` (keyed by payment intent).
//!
//! Rows are published in id order and marked published only after Kafka
//! acknowledged them. Killed anywhere, the relay republishes what it had
//! not marked: duplicates, never gaps, which the consumers deduplicate by
//! outbox id. The rows of one key are sent one after another, so a failed
//! send can never let a later change of that customer (or command of that
//! payment) overtake it. A Postgres advisory lock keeps a single active
//! relay; extra replicas wait as hot standbys.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::db::models::OutboxRow;
use crate::kafka::envelope::HeaderList;
use crate::kafka::EventProducer;
use crate::metrics;
use crate::outbox::{self, Change};
use crate::retry::{sleep_or_shutdown, Backoff};

/// Advisory lock id held by the active relay.
const RELAY_LOCK: i64 = 0x5354_5249_5045_0001;

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// The relay's own connection: it holds the advisory lock for as long as it
/// lives, so it is not taken from a pool.
struct LockedConnection {
    conn: PgConnection,
}

impl LockedConnection {
    fn try_acquire(url: &str) -> anyhow::Result<Option<Self>> {
        let mut conn = PgConnection::establish(url).context("failed to connect to Postgres")?;
        let locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<BigInt, _>(RELAY_LOCK)
            .get_result::<Locked>(&mut conn)?
            .locked;
        Ok(locked.then_some(Self { conn }))
    }
}

pub async fn run(cfg: RelayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // The relay's own work runs on a connection holding its advisory lock;
    // the pool serves only the ops routes.
    let crate::worker::Started { producer, .. } = crate::worker::start(
        "outbox-relay",
        &cfg.database,
        &cfg.kafka,
        cfg.metrics_addr,
        &[
            &cfg.changes.topic,
            &cfg.changes.dead_letter_topic(),
            &cfg.commands.topic,
            &cfg.commands.dead_letter_topic(),
        ],
        &shutdown,
    )
    .await?;
    let url = cfg.database.url.expose_secret().to_owned();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut waiting_logged = false;

    'outer: while !shutdown.is_cancelled() {
        let acquired = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || LockedConnection::try_acquire(&url)).await?
        };
        let conn = match acquired {
            Ok(Some(c)) => Arc::new(Mutex::new(c)),
            Ok(None) => {
                if !waiting_logged {
                    tracing::info!("another outbox relay is active; standing by");
                    waiting_logged = true;
                }
                if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                let wait = backoff.next_delay(None);
                tracing::warn!(
                    error = format!("{e:#}"),
                    wait_ms = wait.as_millis() as u64,
                    "relay cannot reach Postgres"
                );
                if sleep_or_shutdown(wait, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        tracing::info!(kafka.topic = %cfg.changes.topic, "outbox relay active");
        waiting_logged = false;

        while !shutdown.is_cancelled() {
            match relay_once(&conn, &producer, &cfg).await {
                Ok(0) => {
                    backoff.reset();
                    if sleep_or_shutdown(cfg.poll_interval, &shutdown).await {
                        break 'outer;
                    }
                }
                Ok(_) => backoff.reset(),
                Err(e) => {
                    let wait = backoff.next_delay(None);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        wait_ms = wait.as_millis() as u64,
                        "relay round failed; reconnecting"
                    );
                    if sleep_or_shutdown(wait, &shutdown).await {
                        break 'outer;
                    }
                    // A fresh connection re-takes the lock (or finds a peer took over).
                    continue 'outer;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(5));
    tracing::info!("outbox relay stopped");
    Ok(())
}

/// The topic and key of an outbox row: a queued refund goes to the
/// commands topic keyed by its payment intent (one payment's refunds in
/// order); everything else is a customer change keyed by the customer.
fn destination<'a>(cfg: &'a RelayConfig, row: &OutboxRow) -> (&'a str, String) {
    match row.entity.as_str() {
        crate::sync::entity::REFUND_REQUEST => (
            cfg.commands.topic.as_str(),
            row.fields["payment_intent"]
                .as_str()
                .map_or_else(|| row.local_id.to_string(), str::to_owned),
        ),
        _ => (cfg.changes.topic.as_str(), row.local_id.to_string()),
    }
}

/// Publishes one batch; returns how many rows were marked published.
async fn relay_once(
    conn: &Arc<Mutex<LockedConnection>>,
    producer: &EventProducer,
    cfg: &RelayConfig,
) -> anyhow::Result<usize> {
    let (backlog, oldest) = {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            outbox::backlog(&mut conn.lock().expect("relay connection").conn)
        })
        .await??
    };
    metrics::OUTBOX_BACKLOG.set(backlog);
    metrics::OUTBOX_OLDEST_AGE_SECONDS
        .set(oldest.map_or(0, |t| (chrono::Utc::now() - t).num_seconds().max(0)));
    let rows = {
        let (conn, limit) = (conn.clone(), cfg.batch_size);
        tokio::task::spawn_blocking(move || {
            outbox::unpublished(&mut conn.lock().expect("relay connection").conn, limit)
        })
        .await??
    };
    if rows.is_empty() {
        return Ok(0);
    }
    // Per key in id order; keys concurrently.
    let mut chains: BTreeMap<(&str, String), Vec<OutboxRow>> = BTreeMap::new();
    for row in rows {
        chains.entry(destination(cfg, &row)).or_default().push(row);
    }
    let sent = futures::future::join_all(chains.into_iter().map(|((topic, key), chain)| async move {
        let mut published = Vec::with_capacity(chain.len());
        for row in &chain {
            let change = Change::from_row(row)?;
            let payload = serde_json::to_vec(&change)?;
            let headers: HeaderList = vec![
                ("outbox-id".into(), row.id.to_string().into_bytes()),
                ("operation".into(), row.operation.clone().into_bytes()),
            ];
            match producer.send(topic, key.as_bytes(), &payload, &headers).await {
                Ok(_) => published.push(row.id),
                Err(e) => {
                    tracing::warn!(outbox.id = row.id, customer.id = %row.local_id, error = %e, "publish failed; will retry");
                    break; // later changes of this customer wait for this one
                }
            }
        }
        anyhow::Ok(published)
    }))
    .await;
    let ids: Vec<i64> = sent
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .concat();
    let marked = {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            outbox::mark_published(&mut conn.lock().expect("relay connection").conn, &ids)
        })
        .await??
    };
    Ok(marked)
}
