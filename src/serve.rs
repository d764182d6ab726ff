//! `stripe-sync serve`: wires config into the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::db;
use crate::http::{self, AppState};
use crate::ingest::WebhookIngest;
use crate::kafka::{admin, EventProducer};
use crate::stripe::WebhookVerifier;

/// A bound, not yet running server; tests read `addr` before awaiting.
pub struct Server {
    pub addr: std::net::SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served when
    /// `METRICS_ADDR` gave them a listener of their own.
    pub ops_addr: Option<std::net::SocketAddr>,
    producer: EventProducer,
    future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    shutdown: CancellationToken,
}

/// How long in-flight requests may take once shutdown begins; a client
/// that keeps a connection busy cannot hold the process past it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

impl Server {
    pub async fn build(cfg: &ServeConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = db::pool(&cfg.database);
        {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || db::ensure_migrated(&pool)).await??;
        }
        let kafka = &cfg.kafka;
        let mut topics = vec![kafka.events_topic.as_str()];
        let dead_letters = kafka.dead_letter_topic();
        topics.push(&dead_letters);
        if let Some(relay) = &cfg.salesforce_relay {
            topics.push(&relay.topic);
        }
        admin::ensure_topics(
            &kafka.brokers,
            &topics,
            kafka.topic_partitions,
            kafka.replication_factor,
        )
        .await?;
        let producer = EventProducer::for_config(kafka)?;
        let verifier =
            WebhookVerifier::new(cfg.webhook.secrets.clone(), cfg.webhook.tolerance_secs);
        let health = crate::health::Health::default();
        let history = crate::ops::history::History::default();
        if cfg.admin_token.is_some() {
            // The console's charts: the last hour, sampled here.
            tokio::spawn(crate::ops::history::run(
                cfg.inventory.clone(),
                history.clone(),
                shutdown.clone(),
            ));
        }
        let state = AppState {
            operator: crate::ops::operator::Operator {
                inv: cfg.inventory.clone(),
                pool: pool.clone(),
                producer: producer.clone(),
                health: health.clone(),
                processes: Arc::new(cfg.console_processes.clone()),
                history,
            },
            ingest: Arc::new(
                WebhookIngest::new(verifier, producer.clone(), kafka.events_topic.clone())
                    .with_platforms(&cfg.webhook.platforms, cfg.webhook.tolerance_secs),
            ),
            pool,
            producer: producer.clone(),
            max_body_bytes: cfg.webhook.max_body_bytes,
            tokens: crate::http::auth::Tokens {
                api: Arc::new(cfg.api_token.clone()),
                admin: cfg.admin_token.clone().map(Arc::new),
            },
            inventory: cfg.inventory.clone(),
            stripe: cfg.stripe.as_ref().map(|s| s.client()).transpose()?,
            health: health.clone(),
            ops_on_main_port: cfg.metrics_addr.is_none(),
            mirror_query_timeout: cfg.mirror_query_timeout,
            export_batch_lease: cfg.export_batch_lease,
            salesforce_relay: cfg.salesforce_relay.as_ref().map(|relay| {
                Arc::new(http::salesforce::Relay {
                    verifier: WebhookVerifier::new(relay.secrets.clone(), relay.tolerance_secs),
                    producer: producer.clone(),
                    topic: relay.topic.clone(),
                })
            }),
        };
        crate::metrics::init("serve");
        let ops_addr = cfg
            .metrics_addr
            .map(|addr| {
                http::ops::spawn(
                    "serve",
                    addr,
                    state.pool.clone(),
                    producer.clone(),
                    health,
                    shutdown.clone(),
                )
            })
            .transpose()?;
        let shutdown_for_drain = shutdown.clone();
        let (addr, future) = http::bind(state, cfg.listen_addr, shutdown)?;
        Ok(Self {
            addr,
            ops_addr,
            producer,
            future: Box::pin(future),
            shutdown: shutdown_for_drain,
        })
    }

    /// Serves until shutdown, then flushes the producer.
    pub async fn run(self) {
        tracing::info!(addr = %self.addr, "listening; webhook endpoint is POST /webhooks/stripe");
        let drain_deadline = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            _ = self.future => {}
            _ = drain_deadline => {
                tracing::warn!(drain_secs = DRAIN_TIMEOUT.as_secs(), "requests still open after the drain timeout; closing them");
            }
        }
        self.producer.flush(Duration::from_secs(5));
        tracing::info!("server stopped");
    }
}

pub async fn run(cfg: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    Server::build(&cfg, shutdown).await?.run().await;
    Ok(())
}
