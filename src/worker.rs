//! What every worker process does before its loop starts: check the
//! database is migrated, create the topics it uses, open the producer it
//! publishes or dead-letters with, and serve `/metrics`, `/healthz` and
//! `/readyz` on its `METRICS_ADDR`.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, KafkaConfig};
use crate::db::{self, PgPool};
use crate::health::Health;
use crate::kafka::{admin, EventProducer};

/// A started worker's shared dependencies.
pub struct Started {
    pub pool: PgPool,
    pub producer: EventProducer,
    /// What `/readyz` reports; the consume loop tells it of a dead lane.
    pub health: Health,
}

/// Starts worker `process`: refuses an unmigrated database, ensures
/// `topics` exist, and serves its ops routes until `shutdown`.
pub async fn start(
    process: &str,
    database: &DatabaseConfig,
    kafka: &KafkaConfig,
    metrics_addr: SocketAddr,
    topics: &[&str],
    shutdown: &CancellationToken,
) -> anyhow::Result<Started> {
    let pool = db::pool(database);
    {
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || db::ensure_migrated(&pool)).await??;
    }
    admin::ensure_topics(
        &kafka.brokers,
        topics,
        kafka.topic_partitions,
        kafka.replication_factor,
    )
    .await?;
    let producer = EventProducer::for_config(kafka)?;
    let health = Health::default();
    crate::http::ops::spawn(
        process,
        metrics_addr,
        pool.clone(),
        producer.clone(),
        health.clone(),
        shutdown.clone(),
    )?;
    Ok(Started {
        pool,
        producer,
        health,
    })
}
