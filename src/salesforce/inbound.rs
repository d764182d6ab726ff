//! `workers/salesforce-inbound`: applies `salesforce.events.v1` to the
//! local customers ([`super::apply`]), and runs the poller that feeds it.

use std::sync::{Arc, OnceLock};

use diesel::prelude::*;
use tokio_util::sync::CancellationToken;

use super::apply::{self, Context, Current, Stop};
use super::client::{RecordId, SalesforceClient};
use super::event::SalesforceEvent;
use super::poll::{self, Poller};
use crate::apply::{Applied, ApplyError, Refusal};
use crate::config::SalesforceInboundConfig;
use crate::db::PgPool;
use crate::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome, Transient};
use crate::worker;

/// Applies each version in its own transaction: Contacts change at the
/// pace of people and a relay, not of a Stripe backlog.
pub struct SalesforceInboundHandler {
    pool: PgPool,
    client: SalesforceClient,
    external_id_field: String,
    runtime: tokio::runtime::Handle,
    /// Learnt from the token endpoint on the first batch.
    context: OnceLock<Context>,
}

impl SalesforceInboundHandler {
    pub fn new(
        pool: PgPool,
        client: SalesforceClient,
        external_id_field: &str,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            pool,
            client,
            external_id_field: external_id_field.to_owned(),
            runtime,
            context: OnceLock::new(),
        }
    }

    fn context(&self) -> Result<&Context, Transient> {
        if let Some(ctx) = self.context.get() {
            return Ok(ctx);
        }
        let identity = self
            .runtime
            .block_on(self.client.identity())
            .map_err(|e| Transient::from(anyhow::Error::from(e)))?;
        Ok(self.context.get_or_init(|| Context {
            org_id: identity.org_id,
            user_id: identity.user_id,
            external_id_field: self.external_id_field.clone(),
        }))
    }
}

/// How many times one version reads its Contact's current state before
/// the batch is retried later: a read is repeated only when one of our
/// writes to the Contact raced it.
const CURRENT_READS: usize = 3;

impl SalesforceInboundHandler {
    /// The Contact as it is now (deleted ones too, through `queryAll`),
    /// with the database's clock before the read.
    fn read_current(
        &self,
        conn: &mut diesel::PgConnection,
        contact_id: RecordId<'_>,
    ) -> anyhow::Result<Current> {
        let read_at: chrono::DateTime<chrono::Utc> = diesel::select(diesel::dsl::sql::<
            diesel::sql_types::Timestamptz,
        >("clock_timestamp()"))
        .get_result(conn)?;
        let soql = poll::current_query(&self.external_id_field, contact_id);
        let page = self.runtime.block_on(self.client.query_all(&soql))?;
        let record = page.records.into_iter().next().map(|mut record| {
            record.remove("attributes");
            record
        });
        Ok(Current {
            record,
            read_at: read_at.timestamp_millis(),
        })
    }

    /// Applies one version, reading its Contact's current state when the
    /// version alone cannot say what to apply (outside any transaction).
    fn apply(
        &self,
        conn: &mut diesel::PgConnection,
        ctx: &Context,
        event: &SalesforceEvent,
    ) -> Result<Applied, ApplyError> {
        let mut current = None;
        for reads in 0..=CURRENT_READS {
            let applied = conn.transaction(|conn| match &current {
                None => apply::apply(conn, ctx, event),
                Some(current) => apply::apply_current(conn, ctx, event, current),
            });
            match applied {
                Ok(applied) => return Ok(applied),
                Err(Stop::Failed(e)) => return Err(e),
                Err(Stop::ReadCurrent) if reads < CURRENT_READS => {
                    let contact_id = event.version().map_err(Refusal::Malformed)?.contact_id;
                    current = Some(
                        self.read_current(conn, contact_id)
                            .map_err(ApplyError::transient)?,
                    );
                }
                Err(Stop::ReadCurrent) => break,
            }
        }
        Err(ApplyError::transient(anyhow::anyhow!(
            "Contact {}: our writes kept racing its reads",
            event.id
        )))
    }
}

impl BatchHandler for SalesforceInboundHandler {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        let ctx = self.context()?;
        let mut conn = self.pool.get()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for d in batch {
            let event = match d.payload.as_deref().map(SalesforceEvent::parse) {
                Some(Ok(event)) => event,
                Some(Err(reason)) => {
                    outcomes.push(Outcome::DeadLetter(reason));
                    continue;
                }
                None => {
                    outcomes.push(Outcome::DeadLetter("message has no payload".into()));
                    continue;
                }
            };
            match self.apply(&mut conn, ctx, &event) {
                Ok(applied) => {
                    tracing::debug!(
                        salesforce.event_id = %event.id, source = %event.source,
                        outcome = applied.as_str(), "Contact version applied"
                    );
                    crate::metrics::EVENTS_APPLIED
                        .with_label_values(&[event.kind(), applied.as_str()])
                        .inc();
                    outcomes.push(Outcome::Done);
                }
                Err(ApplyError::Permanent(reason)) => {
                    outcomes.push(Outcome::DeadLetter(format!("{}: {reason}", event.id)));
                }
                // Versions before this one are committed; the retry finds
                // them in the ledger.
                Err(e @ ApplyError::Transient { .. }) => return Err(e.into_retry()),
            }
        }
        Ok(outcomes)
    }
}

/// Runs the worker until `shutdown`: the consumer, and the poller beside
/// it unless `SALESFORCE_POLL_INTERVAL_MS` is 0.
pub async fn run(cfg: SalesforceInboundConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dead_letter_topic = cfg.dead_letter_topic();
    let worker::Started {
        pool,
        producer,
        health,
    } = worker::start(
        "salesforce-inbound",
        &cfg.database,
        &cfg.kafka,
        cfg.metrics_addr,
        &[&cfg.events_topic, &dead_letter_topic],
        &shutdown,
    )
    .await?;
    let client = SalesforceClient::new(&cfg.salesforce)?;
    let poller = (!cfg.poll_interval.is_zero()).then(|| {
        let poller = Poller {
            client: client.clone(),
            producer: producer.clone(),
            pool: pool.clone(),
            topic: cfg.events_topic.clone(),
            external_id_field: cfg.salesforce.external_id_field.clone(),
            page_size: cfg.poll_page_size,
            settle: cfg.poll_settle,
        };
        tokio::spawn(poller.run(cfg.poll_interval, shutdown.clone()))
    });
    let handler = Arc::new(SalesforceInboundHandler::new(
        pool,
        client,
        &cfg.salesforce.external_id_field,
        tokio::runtime::Handle::current(),
    ));
    let settings = ConsumeSettings {
        brokers: cfg.kafka.brokers.clone(),
        group: cfg.consumer_group.clone(),
        topic: cfg.events_topic.clone(),
        dead_letter_topic,
        batch_size: 50,
        batch_bytes: usize::MAX,
        batch_wait: std::time::Duration::from_millis(5),
        lanes: 1,
        fetch_wait: cfg.kafka.fetch_wait,
        fetch_max_bytes: cfg.kafka.fetch_max_bytes,
        health,
    };
    let consumed = consumer::run(settings, handler, producer, shutdown).await;
    if let Some(poller) = poller {
        poller.await?;
    }
    consumed
}
