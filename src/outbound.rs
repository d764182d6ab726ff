//! The outbound workers: local changes from `customers.changes.v1` to each
//! external service, through that service's [`OutboundAdapter`].
//!
//! `workers/stripe-outbound` runs it with [`StripeOutbound`],
//! `workers/salesforce-outbound` with
//! [`crate::salesforce::SalesforceOutbound`], each in its own consumer
//! group. A delivery row per outbox id and service makes redelivered
//! messages no-ops; the link a create makes is recorded with the delivery
//! in one transaction.

use std::sync::Arc;

use diesel::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaConfig, OutboundConfig};
use crate::db::models::{Customer, IdMapEntry, NewIdMapEntry};
use crate::db::schema::{customers, id_map};
use crate::db::PgPool;
use crate::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome, Transient};
use crate::kafka::envelope;
use crate::outbox::{self, Change, DeliveryStatus, Operation};
use crate::stripe::outbound::StripeOutbound;
use crate::sync::adapter::{DeliveryError, OutboundAdapter};
use crate::sync::{entity, idmap};
use crate::worker;

pub struct OutboundHandler {
    pool: PgPool,
    adapter: Arc<dyn OutboundAdapter>,
    runtime: tokio::runtime::Handle,
}

impl OutboundHandler {
    pub fn new(
        pool: PgPool,
        adapter: Arc<dyn OutboundAdapter>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            pool,
            adapter,
            runtime,
        }
    }

    fn deliver(
        &self,
        conn: &mut PgConnection,
        change: &Change,
        replayed_from: Option<&str>,
    ) -> Result<(), DeliveryError> {
        let key = outbox::idempotency_key(change.outbox_id, replayed_from);
        if change.operation == Operation::Create {
            return self.create(conn, change, &key);
        }
        let link = idmap::find_by_local(
            conn,
            self.adapter.service(),
            self.adapter.entity(),
            change.local_id,
        )?;
        let Some(link) = link else {
            return self.without_link(conn, change, &key);
        };
        let call = match change.operation {
            Operation::Update => self.adapter.update(&link, change, &key),
            _ => self.adapter.delete(&link, &key),
        };
        self.runtime.block_on(call)?;
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            self.record_synced(conn, change, Some(&link.external_id))?;
            touch(conn, &link)
        })?;
        Ok(())
    }

    fn create(
        &self,
        conn: &mut PgConnection,
        change: &Change,
        key: &str,
    ) -> Result<(), DeliveryError> {
        let customer: Option<Customer> = customers::table
            .find(change.local_id)
            .select(Customer::as_select())
            .first(conn)
            .optional()?;
        let created = self
            .runtime
            .block_on(self.adapter.create(change, customer.as_ref(), key))?;
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            // The echo (or an earlier attempt) may have linked it already;
            // either way the link ends up the same.
            diesel::insert_into(id_map::table)
                .values(&NewIdMapEntry {
                    service: self.adapter.service(),
                    account: &created.account,
                    entity: self.adapter.entity(),
                    external_id: &created.external_id,
                    local_id: change.local_id,
                    remote_version: created.version,
                    remote_event_id: None,
                    remote_deleted: false,
                })
                .on_conflict_do_nothing()
                .execute(conn)?;
            self.record_synced(conn, change, Some(&created.external_id))
        })?;
        Ok(())
    }

    /// An update or delete for a customer the service does not know (yet).
    fn without_link(
        &self,
        conn: &mut PgConnection,
        change: &Change,
        key: &str,
    ) -> Result<(), DeliveryError> {
        let service = self.adapter.service();
        let earlier_create_pending =
            outbox::undelivered(conn, entity::CUSTOMER, change.local_id, service)?
                .iter()
                .any(|row| {
                    row.id < change.outbox_id && row.operation == Operation::Create.as_str()
                });
        if earlier_create_pending {
            // Its create is still on the way: wait for it rather than fail.
            return Err(DeliveryError::Transient(Transient::from(anyhow::anyhow!(
                "customer {} is not created in {} yet",
                change.local_id,
                self.adapter.display_name()
            ))));
        }
        match change.operation {
            // Never reached the service: nothing to delete.
            Operation::Delete => {
                self.record_synced(conn, change, None)?;
                Ok(())
            }
            _ if self.adapter.creates_when_unlinked() => self.create(conn, change, key),
            _ => Err(DeliveryError::Refused(format!(
                "the customer has no {name} counterpart (its creation in {name} failed)",
                name = self.adapter.display_name()
            ))),
        }
    }

    fn record_synced(
        &self,
        conn: &mut PgConnection,
        change: &Change,
        external_id: Option<&str>,
    ) -> QueryResult<()> {
        outbox::record_delivery(
            conn,
            change.outbox_id,
            self.adapter.service(),
            DeliveryStatus::Synced,
            external_id,
            None,
        )
    }
}

/// Marks a link as just synced.
fn touch(conn: &mut PgConnection, link: &IdMapEntry) -> QueryResult<()> {
    diesel::update(id_map::table.find((
        &link.service,
        &link.account,
        &link.entity,
        &link.external_id,
    )))
    .set(id_map::synced_at.eq(diesel::dsl::now))
    .execute(conn)
    .map(drop)
}

impl BatchHandler for OutboundHandler {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        let service = self.adapter.service();
        let mut conn = self.pool.get()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for d in batch {
            let change = match parse_change(d) {
                Ok(c) => c,
                Err(reason) => {
                    outcomes.push(Outcome::DeadLetter(reason));
                    continue;
                }
            };
            if change.origin == service {
                // The service reported this change itself: writing it back
                // would only echo (no ping-pong across services).
                outcomes.push(Outcome::Done);
                continue;
            }
            match outbox::due(&mut conn, change.outbox_id, service)? {
                outbox::Due::Deliver => {}
                outbox::Due::Delivered => {
                    outcomes.push(Outcome::Done); // a redelivered change
                    continue;
                }
                // Pruned (delivered, and older than 30 days) with its
                // delivery records: redelivered from a long-kept topic,
                // sending it again would repeat an old write, and its
                // delivery could not be recorded. The customer's next
                // change carries its state.
                outbox::Due::Pruned => {
                    tracing::warn!(
                        sync.service = service,
                        outbox.id = change.outbox_id,
                        "skipping a change whose outbox row was pruned"
                    );
                    outcomes.push(Outcome::Done);
                    continue;
                }
            }
            match self.deliver(
                &mut conn,
                &change,
                envelope::header(&d.headers, envelope::H_REPLAYED_FROM),
            ) {
                Ok(()) => {
                    tracing::info!(
                        sync.service = service, outbox.id = change.outbox_id,
                        customer.id = %change.local_id, operation = change.operation.as_str(),
                        "change applied"
                    );
                    outcomes.push(Outcome::Done);
                }
                // Changes before this one in the batch are recorded, so the
                // retry skips them.
                Err(DeliveryError::Transient(t)) => return Err(t),
                Err(DeliveryError::Refused(message)) => {
                    outbox::record_delivery(
                        &mut conn,
                        change.outbox_id,
                        service,
                        DeliveryStatus::Failed,
                        None,
                        Some(&message),
                    )?;
                    outcomes.push(Outcome::DeadLetter(format!(
                        "{} refused {} of customer {}: {message}",
                        self.adapter.display_name(),
                        change.operation.as_str(),
                        change.local_id
                    )));
                }
            }
        }
        Ok(outcomes)
    }
}

fn parse_change(d: &Delivery) -> Result<Change, String> {
    let payload = d.payload.as_deref().ok_or("message has no payload")?;
    let change: Change =
        serde_json::from_slice(payload).map_err(|e| format!("not a customer change: {e}"))?;
    if change.entity != entity::CUSTOMER {
        return Err(format!("unexpected entity {:?}", change.entity));
    }
    Ok(change)
}

/// Where one service's outbound worker reads and dead-letters.
pub struct OutboundWorker<'a> {
    /// The process's name, for logs and metrics.
    pub name: &'static str,
    pub database: &'a crate::config::DatabaseConfig,
    pub kafka: &'a KafkaConfig,
    pub metrics_addr: std::net::SocketAddr,
    pub changes_topic: &'a str,
    pub dead_letter_topic: String,
    pub consumer_group: &'a str,
}

/// Runs one service's outbound worker until `shutdown`.
pub async fn run_adapter(
    worker: OutboundWorker<'_>,
    adapter: Arc<dyn OutboundAdapter>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker::Started {
        pool,
        producer,
        health,
    } = worker::start(
        worker.name,
        worker.database,
        worker.kafka,
        worker.metrics_addr,
        &[worker.changes_topic, &worker.dead_letter_topic],
        &shutdown,
    )
    .await?;
    let handler = Arc::new(OutboundHandler::new(
        pool,
        adapter,
        tokio::runtime::Handle::current(),
    ));
    let settings = ConsumeSettings {
        brokers: worker.kafka.brokers.clone(),
        group: worker.consumer_group.to_owned(),
        topic: worker.changes_topic.to_owned(),
        dead_letter_topic: worker.dead_letter_topic,
        // Each change is a remote call; small batches keep a retry cheap.
        batch_size: 10,
        batch_wait: std::time::Duration::from_millis(5),
        // One lane: the service's rate budget, not Postgres, bounds this.
        lanes: 1,
        fetch_wait: worker.kafka.fetch_wait,
        fetch_max_bytes: worker.kafka.fetch_max_bytes,
        health,
    };
    consumer::run(settings, handler, producer, shutdown).await
}

/// `workers/stripe-outbound`.
pub async fn run(cfg: OutboundConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let adapter = Arc::new(StripeOutbound::new(cfg.stripe.client()?));
    let worker = OutboundWorker {
        name: "stripe-outbound",
        database: &cfg.database,
        kafka: &cfg.kafka,
        metrics_addr: cfg.metrics_addr,
        changes_topic: &cfg.changes.topic,
        dead_letter_topic: cfg.changes.dead_letter_topic(),
        consumer_group: &cfg.consumer_group,
    };
    run_adapter(worker, adapter, shutdown).await
}
