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
use crate::customers::CustomerId;
use crate::db::models::{Customer, IdMapEntry, NewIdMapEntry};
use crate::db::schema::{customers, id_map};
use crate::db::PgPool;
use crate::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome, Transient};
use crate::kafka::envelope;
use crate::outbox::{self, Change, DeliveryStatus, Operation};
use crate::stripe::outbound::StripeOutbound;
use crate::sync::adapter::{Call, DeliveryError, OutboundAdapter, Request, Sent};
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

    /// What `change` needs, read from the store before any call is made.
    fn plan(&self, conn: &mut PgConnection, change: &Change) -> QueryResult<Plan> {
        if change.operation == Operation::Create {
            return create_from_row(conn, change);
        }
        let link = idmap::find_by_local(
            conn,
            self.adapter.service(),
            self.adapter.entity(),
            customer_of(change),
        )?;
        Ok(match (link, change.operation) {
            (Some(link), Operation::Update) => Plan::Call(Call::Update { link }),
            (Some(link), _) => Plan::Call(Call::Delete { link }),
            (None, _) => return self.without_link(conn, change),
        })
    }

    /// An update or delete for a customer the service does not know (yet).
    fn without_link(&self, conn: &mut PgConnection, change: &Change) -> QueryResult<Plan> {
        let service = self.adapter.service();
        let earlier_create_pending = outbox::undelivered(conn, customer_of(change), service)?
            .iter()
            .any(|row| row.id < change.outbox_id && row.operation == Operation::Create.as_str());
        if earlier_create_pending {
            // Its create is still on the way: wait for it rather than fail.
            return Ok(Plan::Wait(Transient::from(anyhow::anyhow!(
                "customer {} is not created in {} yet",
                change.local_id,
                self.adapter.display_name()
            ))));
        }
        Ok(match change.operation {
            // Never reached the service: nothing to delete.
            Operation::Delete => Plan::NothingToDelete,
            _ if self.adapter.creates_when_unlinked() => return create_from_row(conn, change),
            _ => Plan::Refuse(format!(
                "the customer has no {name} counterpart (its creation in {name} failed)",
                name = self.adapter.display_name()
            )),
        })
    }

    /// Records what a call did: the delivery, with the link a create made
    /// (the echo, or an earlier attempt, may have linked it already; either
    /// way the link ends up the same), in one transaction.
    fn record_sent(
        &self,
        conn: &mut PgConnection,
        r: &Request<'_>,
        sent: &Sent,
    ) -> QueryResult<()> {
        conn.transaction(|conn| match (sent, &r.call) {
            (Sent::Created(created), _) => {
                diesel::insert_into(id_map::table)
                    .values(&NewIdMapEntry {
                        service: self.adapter.service(),
                        account: &created.account,
                        entity: self.adapter.entity(),
                        external_id: &created.external_id,
                        local_id: customer_of(r.change),
                        remote_version: created.version,
                        remote_event_id: None,
                        remote_deleted: false,
                    })
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                self.record_synced(conn, r.change, Some(&created.external_id))
            }
            (Sent::Done, Call::Update { link } | Call::Delete { link }) => {
                self.record_synced(conn, r.change, Some(&link.external_id))?;
                touch(conn, link)
            }
            (Sent::Done, Call::Create { .. }) => self.record_synced(conn, r.change, None),
        })
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

    /// Records a refusal and says what goes to the dead-letter topic.
    fn refuse(
        &self,
        conn: &mut PgConnection,
        change: &Change,
        message: &str,
    ) -> QueryResult<Outcome> {
        outbox::record_delivery(
            conn,
            change.outbox_id,
            self.adapter.service(),
            DeliveryStatus::Failed,
            None,
            Some(message),
        )?;
        Ok(Outcome::DeadLetter(format!(
            "{} refused {} of customer {}: {message}",
            self.adapter.display_name(),
            change.operation.as_str(),
            change.local_id
        )))
    }

    /// What a change needs before any call: an outcome already (a
    /// redelivery, a change of the service's own origin, an unreadable
    /// message), or to be planned.
    fn triage(&self, conn: &mut PgConnection, d: &Delivery) -> Result<Triage, Transient> {
        let service = self.adapter.service();
        let change = match parse_change(d) {
            Ok(c) => c,
            Err(reason) => return Ok(Triage::Settled(Outcome::DeadLetter(reason))),
        };
        if change.origin == service {
            // The service reported this change itself: writing it back
            // would only echo (no ping-pong across services).
            return Ok(Triage::Settled(Outcome::Done));
        }
        match outbox::due(conn, change.outbox_id, service)? {
            outbox::Due::Deliver => Ok(Triage::Deliver(change)),
            // A redelivered change.
            outbox::Due::Delivered => Ok(Triage::Settled(Outcome::Done)),
            // Pruned (delivered, and older than 30 days) with its delivery
            // records: redelivered from a long-kept topic, sending it again
            // would repeat an old write, and its delivery could not be
            // recorded. The customer's next change carries its state.
            outbox::Due::Pruned => {
                tracing::warn!(
                    sync.service = service,
                    outbox.id = change.outbox_id,
                    "skipping a change whose outbox row was pruned"
                );
                Ok(Triage::Settled(Outcome::Done))
            }
        }
    }
}

/// What the handler makes of a change before any call.
enum Triage {
    Settled(Outcome),
    Deliver(Change),
}

/// What a change needs of its service.
enum Plan {
    Call(Call),
    /// A delete of a customer the service never held: done as it is.
    NothingToDelete,
    Refuse(String),
    /// Not yet (an earlier create is still on its way): retried.
    Wait(Transient),
}

/// The create of `change`'s customer from its row as it is now (`None`
/// when the row is gone).
fn create_from_row(conn: &mut PgConnection, change: &Change) -> QueryResult<Plan> {
    let customer: Option<Customer> = customers::table
        .find(customer_of(change))
        .select(Customer::as_select())
        .first(conn)
        .optional()?;
    Ok(Plan::Call(Call::Create { customer }))
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
    /// Calls are made for runs of changes of distinct customers at once
    /// (one Composite request at Salesforce): a customer's changes must
    /// land in order, so a second change of a customer waits for the next
    /// run. Every result of a run is recorded before a transient failure
    /// among them is returned, so the retry skips what was done.
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        let service = self.adapter.service();
        let mut conn = self.pool.get()?;
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        let mut next = 0;
        while next < batch.len() {
            let mut run: Vec<(usize, Change, Call)> = Vec::new();
            let mut customers = std::collections::HashSet::new();
            while next < batch.len() {
                let change = match self.triage(&mut conn, &batch[next])? {
                    Triage::Settled(outcome) => {
                        outcomes[next] = Some(outcome);
                        next += 1;
                        continue;
                    }
                    Triage::Deliver(change) => change,
                };
                if !customers.insert(change.local_id) {
                    break;
                }
                match self.plan(&mut conn, &change)? {
                    Plan::Wait(t) if run.is_empty() => return Err(t),
                    // Send what is planned first; this one is planned again.
                    Plan::Wait(_) => break,
                    Plan::NothingToDelete => {
                        self.record_synced(&mut conn, &change, None)?;
                        outcomes[next] = Some(Outcome::Done);
                    }
                    Plan::Refuse(message) => {
                        outcomes[next] = Some(self.refuse(&mut conn, &change, &message)?);
                    }
                    Plan::Call(call) => run.push((next, change, call)),
                }
                next += 1;
            }
            if run.is_empty() {
                continue;
            }
            let mut positions = Vec::with_capacity(run.len());
            let mut changes = Vec::with_capacity(run.len());
            let mut calls = Vec::with_capacity(run.len());
            for (i, change, call) in run {
                positions.push(i);
                changes.push(change);
                calls.push(call);
            }
            let requests: Vec<Request<'_>> = changes
                .iter()
                .zip(calls)
                .zip(&positions)
                .map(|((change, call), &i)| Request {
                    change,
                    key: outbox::idempotency_key(
                        change.outbox_id,
                        envelope::header(&batch[i].headers, envelope::H_REPLAYED_FROM),
                    ),
                    call,
                })
                .collect();
            let results = self.runtime.block_on(self.adapter.send(&requests));
            let mut transient = None;
            for ((i, request), result) in positions.iter().zip(&requests).zip(results) {
                let change = request.change;
                match result {
                    Ok(sent) => {
                        self.record_sent(&mut conn, request, &sent)?;
                        tracing::info!(
                            sync.service = service, outbox.id = change.outbox_id,
                            customer.id = %change.local_id, operation = change.operation.as_str(),
                            "change applied"
                        );
                        outcomes[*i] = Some(Outcome::Done);
                    }
                    Err(DeliveryError::Refused(message)) => {
                        outcomes[*i] = Some(self.refuse(&mut conn, change, &message)?);
                    }
                    Err(DeliveryError::Transient(t)) => {
                        transient.get_or_insert(t);
                    }
                }
            }
            if let Some(t) = transient {
                return Err(t);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every change has an outcome"))
            .collect())
    }
}

/// The customer a change on the customer-changes topic is of:
/// [`parse_change`] lets no other entity's change through.
fn customer_of(change: &Change) -> CustomerId {
    CustomerId::from_uuid(change.local_id)
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
        batch_bytes: usize::MAX,
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
    let client = cfg.stripe.client()?;
    // A connected account's customers are written with its platform's
    // key: which platform each is under, as the mirror knows it now.
    if !client.keys().others().is_empty() {
        let pool = crate::db::pool(&cfg.database);
        if let Err(e) = crate::pull::accounts::note_known(&pool, client.keys()).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not read which platform each connected account is under"
            );
        }
    }
    let adapter = Arc::new(StripeOutbound::new(client));
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
