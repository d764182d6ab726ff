//! `workers/stripe-inbound`: applies `stripe.events.v1` to Postgres.

use std::sync::Arc;

use diesel::Connection;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, ApplyError, FanOut, ListRequest, Refusal, RemoteReader};
use crate::config::InboundConfig;
use crate::db::PgPool;
use crate::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome, Transient};
use crate::kafka::envelope;
use crate::worker;

use crate::metrics;
use crate::registry::{Child, ChildSource, Resource};
use crate::stripe::client::RESOURCE_MISSING;
use crate::stripe::version::VersionCheck;
use crate::stripe::{AccountId, ObjectId, RemoteObject, StripeClient, StripeError, StripeEvent};
use serde_json::Value;

/// Applies a batch of events in one Postgres transaction
/// ([`apply::apply_batch`]); an event refused for good is dead-lettered
/// without undoing its neighbours.
pub struct InboundHandler {
    pool: PgPool,
    remote: Arc<dyn RemoteReader>,
    fan_out: FanOut,
    versions: Option<VersionCheck>,
    /// Whether the raw events are kept in `stripe.events`.
    keep_events: bool,
}

impl InboundHandler {
    pub fn new(pool: PgPool, remote: Arc<dyn RemoteReader>, fan_out: FanOut) -> Self {
        Self {
            pool,
            remote,
            fan_out,
            versions: None,
            keep_events: false,
        }
    }

    /// Keeps each event as received in `stripe.events`, in the batch's
    /// transaction.
    pub fn keeping_events(self, keep: bool) -> Self {
        Self {
            keep_events: keep,
            ..self
        }
    }

    /// Reports events rendered in another API version than `check`'s.
    pub fn with_version_check(self, check: VersionCheck) -> Self {
        Self {
            versions: Some(check),
            ..self
        }
    }
}

impl BatchHandler for InboundHandler {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        let parsed: Vec<Result<StripeEvent, String>> = batch.iter().map(parse_delivery).collect();
        let events: Vec<&StripeEvent> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
        for event in &events {
            self.remote
                .note_platform(&event.account, &event.platform)
                .map_err(ApplyError::into_retry)?;
        }
        let mut conn = self.pool.get()?;
        // Stripe is read before the transaction opens, never while it
        // holds row locks. First only what needs no look at the stored
        // state (most batches need nothing); a batch whose apply wants more
        // (a same-second tie) is rolled back, planned against the stored
        // state with its reads made, and applied again.
        let remote = self.remote.as_ref();
        let fan_out = self.fan_out;
        let received: Vec<(&StripeEvent, &[u8])> = if self.keep_events {
            batch
                .iter()
                .zip(&parsed)
                .filter_map(|(d, p)| Some((p.as_ref().ok()?, d.payload.as_deref()?)))
                .collect()
        } else {
            Vec::new()
        };
        let apply = |conn: &mut diesel::PgConnection, read: &apply::Prefetched| {
            let results = apply::apply_batch(conn, read, &events, fan_out)?;
            apply::event_log::record(conn, &received).map_err(ApplyError::transient)?;
            Ok(results)
        };
        let results = apply::prefetch_lists(&mut conn, remote, &events)
            .and_then(|read| match conn.transaction(|conn| apply(conn, &read)) {
                Err(ApplyError::Transient { .. }) if read.missed() => {
                    let read = apply::prefetch(&mut conn, remote, &events)?;
                    conn.transaction(|conn| apply(conn, &read))
                }
                applied => applied,
            })
            .map_err(ApplyError::into_retry)?;
        // Counted only now that the transaction committed, so retries do
        // not inflate them.
        let mut results = events.iter().zip(results);
        let outcomes = batch
            .iter()
            .zip(&parsed)
            .map(|(delivery, parsed)| {
                if let Err(reason) = parsed {
                    return Outcome::DeadLetter(reason.clone());
                }
                let (event, result) = results.next().expect("one result per event");
                match result {
                    Ok(applied) => {
                        tracing::debug!(
                            stripe.event_id = %event.id, stripe.event_type = %event.kind,
                            kafka.partition = delivery.partition, kafka.offset = delivery.offset,
                            outcome = applied.as_str(), "event applied"
                        );
                        metrics::EVENTS_APPLIED
                            .with_label_values(&[event.kind.as_str(), applied.as_str()])
                            .inc();
                        if event.is_own_echo() {
                            metrics::ECHOES
                                .with_label_values(&[event.kind.as_str()])
                                .inc();
                        }
                        if let Some(versions) = &self.versions {
                            versions.note(event);
                        }
                        Outcome::Done
                    }
                    Err(reason) => {
                        Outcome::DeadLetter(format!("{} {}: {reason}", event.kind, event.id))
                    }
                }
            })
            .collect();
        Ok(outcomes)
    }
}

/// Parses a message into an event; an error here is permanent (the order
/// notifier reads the same topic the same way).
pub fn parse_delivery(d: &Delivery) -> Result<StripeEvent, String> {
    let payload = d.payload.as_deref().ok_or("message has no payload")?;
    // Postgres jsonb cannot store U+0000; refuse it here rather than let
    // the database refuse it on every retry.
    if payload.windows(6).any(|w| w == b"\\u0000") {
        return Err("payload contains \\u0000, which Postgres cannot store".into());
    }
    let platform = envelope::platform(&d.headers).map_err(|e| format!("stripe-platform: {e}"))?;
    StripeEvent::parse_for(payload, &platform).map_err(|e| e.to_string())
}

/// Re-reads objects from the Stripe API, bridging from the blocking apply
/// thread into the async client.
pub struct StripeRemote {
    client: StripeClient,
    runtime: tokio::runtime::Handle,
}

impl StripeRemote {
    pub fn new(client: StripeClient, runtime: tokio::runtime::Handle) -> Self {
        Self { client, runtime }
    }
}

/// Child lists read at once by [`StripeRemote::children_many`]: enough to
/// hide each call's latency, few enough to stay inside the rate budget's
/// bursts (the client's token bucket still paces them).
const CONCURRENT_LIST_READS: usize = 8;

impl StripeRemote {
    fn read<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StripeError>>,
    ) -> Result<T, ApplyError> {
        classify(self.runtime.block_on(call))
    }

    async fn list_children(
        &self,
        account: &AccountId,
        parent: &Resource,
        child: &Child,
        parent_id: &str,
    ) -> Result<Vec<Value>, StripeError> {
        let (path, filters) = match child.source {
            ChildSource::Nested(sub) => (
                format!("{}/{}/{sub}", parent.path, ObjectId::parse(parent_id)?),
                Vec::new(),
            ),
            ChildSource::Filtered { path, param } => (
                path.to_owned(),
                vec![(param.to_owned(), parent_id.to_owned())],
            ),
        };
        match self.client.list_all(account, &path, &filters).await {
            // The parent is gone, so are its items.
            Err(StripeError::Api {
                status: 404,
                code: Some(code),
                ..
            }) if code == RESOURCE_MISSING => Ok(Vec::new()),
            other => other,
        }
    }
}

/// A Stripe answer as the apply sees it: transient (retried) or permanent
/// (dead-lettered).
fn classify<T>(answer: Result<T, StripeError>) -> Result<T, ApplyError> {
    answer.map_err(|e| match e {
        e if e.is_transient() => ApplyError::Transient {
            retry_after: e.retry_after(),
            source: e.into(),
        },
        // A rejected key is a configuration problem, not a property of the
        // event; and a 404 that is not Stripe's `resource_missing` for the
        // object (a wrong base URL, a proxy) says nothing about it either:
        // wait for an operator instead of dead-lettering.
        e @ StripeError::Api {
            status: 401 | 403 | 404,
            ..
        } => ApplyError::transient(e),
        e => Refusal::ReadRefused(e.to_string()).into(),
    })
}

impl RemoteReader for StripeRemote {
    fn note_platform(&self, account: &AccountId, platform: &AccountId) -> Result<(), ApplyError> {
        self.client
            .keys()
            .note_connected(account, platform)
            .map_err(ApplyError::transient)
    }

    fn current(
        &self,
        account: &AccountId,
        path: &str,
        id: &str,
    ) -> Result<RemoteObject, ApplyError> {
        self.read(async {
            self.client
                .retrieve(account, path, ObjectId::parse(id)?)
                .await
        })
    }

    fn children(
        &self,
        account: &AccountId,
        parent: &'static Resource,
        child: &'static Child,
        parent_id: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        self.read(self.list_children(account, parent, child, parent_id))
    }

    fn children_many(&self, requests: &[ListRequest]) -> Vec<Result<Vec<Value>, ApplyError>> {
        use futures::StreamExt;
        let reads = requests
            .iter()
            .map(|r| self.list_children(&r.account, r.parent, r.child, &r.parent_id));
        self.runtime
            .block_on(
                futures::stream::iter(reads)
                    .buffered(CONCURRENT_LIST_READS)
                    .collect::<Vec<_>>(),
            )
            .into_iter()
            .map(classify)
            .collect()
    }
}

pub async fn run(cfg: InboundConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let kafka = &cfg.kafka;
    let dead_letter_topic = kafka.dead_letter_topic();
    let worker::Started {
        pool,
        producer,
        health,
    } = worker::start(
        "stripe-inbound",
        &cfg.database,
        kafka,
        cfg.metrics_addr,
        &[&kafka.events_topic, &dead_letter_topic],
        &shutdown,
    )
    .await?;
    // The ledger, the event log and the mirror grow by the batch: their
    // statistics kept up so that lookups by key stay probes.
    let keeping = shutdown.child_token();
    let statistics = tokio::spawn(crate::db::statistics::keep(
        cfg.database.clone(),
        keeping.clone(),
    ));
    let remote = StripeRemote::new(cfg.stripe.client()?, tokio::runtime::Handle::current());
    let handler = Arc::new(
        InboundHandler::new(pool, Arc::new(remote), cfg.fan_out)
            .with_version_check(VersionCheck::new(&cfg.stripe.api_version))
            .keeping_events(cfg.events_retention.is_some()),
    );
    let settings = ConsumeSettings {
        brokers: kafka.brokers.clone(),
        group: cfg.consumer_group.clone(),
        topic: kafka.events_topic.clone(),
        dead_letter_topic,
        batch_size: cfg.batch_size,
        batch_bytes: cfg.batch_bytes,
        batch_wait: cfg.batch_wait,
        lanes: cfg.apply_lanes,
        fetch_wait: kafka.fetch_wait,
        fetch_max_bytes: kafka.fetch_max_bytes,
        health,
    };
    let consumed = consumer::run(settings, handler, producer, shutdown).await;
    // The keeper ends with the table in hand (at most its time limit).
    keeping.cancel();
    let _ = statistics.await;
    consumed
}
