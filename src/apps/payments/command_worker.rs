//! `workers/stripe-commands`: carries out the refunds queued through the
//! API, one payment's in order (the topic is keyed by payment intent).
//!
//! Each command is done at most once at Stripe, whatever is redelivered
//! or killed: a command already delivered (outbox deliveries) is skipped;
//! before refunding, the worker looks for a refund of the payment that
//! carries the request's id in its metadata (a refund made by an attempt
//! killed before it could record it) and adopts it; and the refund call
//! carries an `Idempotency-Key` derived from the request. Transient
//! failures retry with backoff; a refusal fails the request with Stripe's
//! message and dead-letters the command.

use std::sync::Arc;

use diesel::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::intents::{self, PaymentsError};
use super::refund_requests::{self, RefundRequest};
use crate::config::CommandsWorkerConfig;
use crate::db::PgPool;
use crate::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome, Transient};
use crate::worker;

use crate::outbox::{self, Change, DeliveryStatus};
use crate::stripe::client::{StripeClient, StripeError, RESOURCE_MISSING};
use crate::sync::{entity, service};

/// The metadata key linking a refund to the request that made it.
pub const REQUEST_METADATA: &str = "stripe_sync_request";

/// Why a command was not carried out.
enum Failure {
    Transient(Transient),
    /// Stripe (or the payment's state) refused it for good.
    Refused(String),
}

impl From<PaymentsError> for Failure {
    fn from(e: PaymentsError) -> Self {
        match e {
            PaymentsError::Stripe(e) if e.is_transient() => Failure::Transient(Transient {
                retry_after: e.retry_after(),
                error: e.into(),
            }),
            // A rejected key or an unknown path is our configuration, not
            // the command's: wait for an operator.
            PaymentsError::Stripe(
                e @ StripeError::Api {
                    status: 401 | 403, ..
                },
            ) => Failure::Transient(Transient::from(e)),
            PaymentsError::Stripe(StripeError::Api {
                status: 404,
                code,
                message,
                ..
            }) if code.as_deref() != Some(RESOURCE_MISSING) => {
                Failure::Transient(Transient::from(anyhow::anyhow!(message)))
            }
            PaymentsError::Database(e)
            | PaymentsError::Customer(crate::customers::NoStripeCustomer::Database(e)) => {
                Failure::Transient(Transient::from(e))
            }
            PaymentsError::Unavailable(e) => Failure::Transient(Transient::from(e)),
            refused => Failure::Refused(refused.to_string()),
        }
    }
}

pub struct CommandHandler {
    pool: PgPool,
    stripe: StripeClient,
    runtime: tokio::runtime::Handle,
}

impl CommandHandler {
    pub fn new(pool: PgPool, stripe: StripeClient, runtime: tokio::runtime::Handle) -> Self {
        Self {
            pool,
            stripe,
            runtime,
        }
    }

    fn carry_out(&self, d: &Delivery) -> Result<Outcome, Failure> {
        let change: Change = match d.payload.as_deref().map(serde_json::from_slice) {
            Some(Ok(change)) => change,
            Some(Err(e)) => return Ok(Outcome::DeadLetter(format!("not a command: {e}"))),
            None => return Ok(Outcome::DeadLetter("message has no payload".into())),
        };
        if change.entity != entity::REFUND_REQUEST {
            return Ok(Outcome::DeadLetter(format!(
                "unknown command {:?}",
                change.entity
            )));
        }
        let db_err = |e: diesel::result::Error| Failure::Transient(Transient::from(e));
        let pool_err = |e: diesel::r2d2::PoolError| Failure::Transient(Transient::from(e));
        let mut conn = self.pool.get().map_err(pool_err)?;
        if outbox::is_delivered(&mut conn, change.outbox_id, service::STRIPE).map_err(db_err)? {
            return Ok(Outcome::Done);
        }
        let Some(request) =
            refund_requests::by_local_id(&mut conn, change.local_id).map_err(db_err)?
        else {
            return Ok(Outcome::DeadLetter(format!(
                "no refund request {}",
                change.local_id
            )));
        };
        if !request.status.to_carry_out() {
            // Carried out already: an earlier attempt made the refund and
            // was killed, or lost Stripe's answer, before recording it, and
            // the refund's webhook moved the request on meanwhile. Its
            // delivery is recorded now; skipped, the outbox row would stay
            // undelivered for good.
            let delivered = match &request.refund_id {
                Some(_) => DeliveryStatus::Synced,
                None => DeliveryStatus::Failed,
            };
            outbox::record_delivery(
                &mut conn,
                change.outbox_id,
                service::STRIPE,
                delivered,
                request.refund_id.as_deref(),
                request.error.as_deref(),
            )
            .map_err(db_err)?;
            return Ok(Outcome::Done);
        }
        refund_requests::mark_processing(&mut conn, &request.id).map_err(db_err)?;
        match self.runtime.block_on(refund(&self.stripe, &request)) {
            Ok(made) => {
                let amount = made["amount"].as_i64().unwrap_or_default();
                let refund_id = made["id"].as_str().unwrap_or_default().to_owned();
                let status = made["status"].as_str().unwrap_or("pending").to_owned();
                conn.transaction(|conn| {
                    refund_requests::record_refund(conn, &request.id, &refund_id, amount, &status)?;
                    outbox::record_delivery(
                        conn,
                        change.outbox_id,
                        service::STRIPE,
                        DeliveryStatus::Synced,
                        Some(&refund_id),
                        None,
                    )
                })
                .map_err(db_err)?;
                tracing::info!(refund_request = %request.id, stripe.refund = %refund_id, "refund made");
                Ok(Outcome::Done)
            }
            Err(Failure::Refused(reason)) => {
                conn.transaction(|conn| {
                    refund_requests::record_failure(conn, &request.id, &reason)?;
                    outbox::record_delivery(
                        conn,
                        change.outbox_id,
                        service::STRIPE,
                        DeliveryStatus::Failed,
                        None,
                        Some(&reason),
                    )
                })
                .map_err(db_err)?;
                Ok(Outcome::DeadLetter(format!(
                    "refund request {}: {reason}",
                    request.id
                )))
            }
            Err(transient) => Err(transient),
        }
    }
}

impl BatchHandler for CommandHandler {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        // Each command commits on its own; after a transient failure the
        // batch is retried and the commands already carried out are
        // skipped as delivered.
        batch
            .iter()
            .map(|d| match self.carry_out(d) {
                Ok(outcome) => Ok(outcome),
                Err(Failure::Transient(t)) => Err(t),
                Err(Failure::Refused(reason)) => Ok(Outcome::DeadLetter(reason)),
            })
            .collect()
    }
}

/// The `Idempotency-Key` of a request's refund call.
pub fn idempotency_key(request_id: &str) -> String {
    format!(
        "stripe-sync-refund-request-{}",
        &hex::encode(Sha256::digest(request_id.as_bytes()))[..40]
    )
}

/// Makes the request's refund, or finds the one an earlier attempt made.
async fn refund(stripe: &StripeClient, request: &RefundRequest) -> Result<Value, Failure> {
    let asked = intents::NewRefund {
        payment_intent: request.payment_intent.clone(),
        amount: request.amount,
        reason: request.reason.clone(),
    };
    Ok(intents::refund_once(
        stripe,
        &asked,
        (REQUEST_METADATA, &request.id),
        &idempotency_key(&request.id),
    )
    .await?)
}

pub async fn run(cfg: CommandsWorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let kafka = &cfg.kafka;
    let dead_letter_topic = cfg.commands.dead_letter_topic();
    let worker::Started {
        pool,
        producer,
        health,
    } = worker::start(
        "stripe-commands",
        &cfg.database,
        kafka,
        cfg.metrics_addr,
        &[&cfg.commands.topic, &dead_letter_topic],
        &shutdown,
    )
    .await?;
    let handler = Arc::new(CommandHandler::new(
        pool,
        cfg.stripe.client()?,
        tokio::runtime::Handle::current(),
    ));
    let settings = ConsumeSettings {
        brokers: kafka.brokers.clone(),
        group: cfg.consumer_group.clone(),
        topic: cfg.commands.topic.clone(),
        dead_letter_topic,
        batch_size: 20,
        batch_bytes: usize::MAX,
        batch_wait: std::time::Duration::from_millis(5),
        lanes: 1,
        fetch_wait: kafka.fetch_wait,
        fetch_max_bytes: kafka.fetch_max_bytes,
        health,
    };
    consumer::run(settings, handler, producer, shutdown).await
}
