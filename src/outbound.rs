//! `workers/stripe-outbound`: applies local changes from
//! `customers.changes.v1` to Stripe.
//!
//! Every call carries `Idempotency-Key` = the outbox id's key, so a retry
//! after a lost response never creates a second customer. A delivery row per
//! outbox id makes redelivered messages no-ops. Stripe's echo webhooks come
//! back through stripe-inbound, which writes the mirror only: nothing there
//! writes the outbox, so no change ever bounces back out (invariant 6).

use std::sync::Arc;

use diesel::prelude::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::OutboundConfig;
use crate::customers::input::LOCAL_ID_METADATA_KEY;
use crate::db::models::NewIdMapEntry;
use crate::db::PgPool;
use crate::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome, Transient};
use crate::kafka::envelope;
use crate::outbox::{self, Change, DeliveryStatus, Operation};
use crate::stripe::{RemoteObject, StripeClient, StripeError, PLATFORM_ACCOUNT};
use crate::sync::{entity, idmap, service};
use crate::worker;

enum DeliveryError {
    Transient(Transient),
    /// Stripe refused the change for good; its message is kept for the API.
    Refused(String),
}

impl From<StripeError> for DeliveryError {
    fn from(e: StripeError) -> Self {
        match e {
            e if e.is_transient() => Self::Transient(Transient {
                retry_after: e.retry_after(),
                error: e.into(),
            }),
            // A rejected key is configuration, not the change's fault.
            e @ StripeError::Api {
                status: 401 | 403, ..
            } => Self::Transient(Transient::from(e)),
            StripeError::Api { message, .. } => Self::Refused(message),
            e => Self::Refused(e.to_string()),
        }
    }
}

impl From<diesel::result::Error> for DeliveryError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Transient(Transient::from(e))
    }
}

pub struct OutboundHandler {
    pool: PgPool,
    stripe: StripeClient,
    runtime: tokio::runtime::Handle,
}

impl OutboundHandler {
    pub fn new(pool: PgPool, stripe: StripeClient, runtime: tokio::runtime::Handle) -> Self {
        Self {
            pool,
            stripe,
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
        match change.operation {
            Operation::Create => {
                let mut form = form_fields(&change.fields);
                form.push((
                    format!("metadata[{LOCAL_ID_METADATA_KEY}]"),
                    change.local_id.to_string(),
                ));
                let created = self.runtime.block_on(self.stripe.post(
                    PLATFORM_ACCOUNT,
                    "/v1/customers",
                    &form,
                    &key,
                ))?;
                // Without a customer id there is nothing to link: a retry
                // (same key, so Stripe replays its answer) rather than a
                // customer marked synced to nothing.
                let Some(stripe_id) = created_customer_id(&created) else {
                    return Err(DeliveryError::Transient(Transient::from(anyhow::anyhow!(
                        "Stripe's answer to creating customer {} holds no customer id",
                        change.local_id
                    ))));
                };
                conn.transaction::<_, diesel::result::Error, _>(|conn| {
                    // The echo webhook may have linked it already; either way
                    // the link ends up the same.
                    diesel::insert_into(crate::db::schema::id_map::table)
                        .values(&NewIdMapEntry {
                            service: service::STRIPE,
                            account: PLATFORM_ACCOUNT,
                            entity: entity::CUSTOMER,
                            external_id: &stripe_id,
                            local_id: change.local_id,
                            remote_version: created
                                .get("created")
                                .and_then(Value::as_i64)
                                .unwrap_or(0),
                            remote_event_id: None,
                            remote_deleted: false,
                        })
                        .on_conflict_do_nothing()
                        .execute(conn)?;
                    outbox::record_delivery(
                        conn,
                        change.outbox_id,
                        service::STRIPE,
                        DeliveryStatus::Synced,
                        Some(&stripe_id),
                        None,
                    )?;
                    Ok(())
                })?;
            }
            Operation::Update | Operation::Delete => {
                let Some(link) =
                    idmap::find_by_local(conn, service::STRIPE, entity::CUSTOMER, change.local_id)?
                else {
                    return self.without_link(conn, change);
                };
                if change.operation == Operation::Update {
                    let path = format!("/v1/customers/{}", link.external_id);
                    self.runtime.block_on(self.stripe.post(
                        &link.account,
                        &path,
                        &form_fields(&change.fields),
                        &key,
                    ))?;
                } else {
                    let gone = self.runtime.block_on(self.stripe.delete(
                        &link.account,
                        "customers",
                        &link.external_id,
                        &key,
                    ))?;
                    debug_assert_eq!(gone, RemoteObject::Deleted);
                }
                conn.transaction::<_, diesel::result::Error, _>(|conn| {
                    outbox::record_delivery(
                        conn,
                        change.outbox_id,
                        service::STRIPE,
                        DeliveryStatus::Synced,
                        Some(&link.external_id),
                        None,
                    )?;
                    diesel::update(crate::db::schema::id_map::table.find((
                        &link.service,
                        &link.account,
                        &link.entity,
                        &link.external_id,
                    )))
                    .set(crate::db::schema::id_map::synced_at.eq(diesel::dsl::now))
                    .execute(conn)?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// An update or delete for a customer Stripe does not know (yet).
    fn without_link(&self, conn: &mut PgConnection, change: &Change) -> Result<(), DeliveryError> {
        let earlier_create_pending =
            outbox::undelivered(conn, entity::CUSTOMER, change.local_id, service::STRIPE)?
                .iter()
                .any(|row| {
                    row.id < change.outbox_id && row.operation == Operation::Create.as_str()
                });
        if earlier_create_pending {
            // Its create is still on the way: wait for it rather than fail.
            return Err(DeliveryError::Transient(Transient::from(anyhow::anyhow!(
                "customer {} is not created in Stripe yet",
                change.local_id
            ))));
        }
        match change.operation {
            // Never reached Stripe (its create failed): nothing to delete.
            Operation::Delete => {
                outbox::record_delivery(
                    conn,
                    change.outbox_id,
                    service::STRIPE,
                    DeliveryStatus::Synced,
                    None,
                    None,
                )?;
                Ok(())
            }
            _ => Err(DeliveryError::Refused(
                "the customer has no Stripe counterpart (its creation in Stripe failed)".into(),
            )),
        }
    }
}

impl BatchHandler for OutboundHandler {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
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
            if outbox::is_delivered(&mut conn, change.outbox_id, service::STRIPE)? {
                outcomes.push(Outcome::Done); // a redelivered change
                continue;
            }
            match self.deliver(
                &mut conn,
                &change,
                envelope::header(&d.headers, envelope::H_REPLAYED_FROM),
            ) {
                Ok(()) => {
                    tracing::info!(outbox.id = change.outbox_id, customer.id = %change.local_id, operation = change.operation.as_str(), "change applied to Stripe");
                    outcomes.push(Outcome::Done);
                }
                // Changes before this one in the batch are recorded, so the
                // retry skips them.
                Err(DeliveryError::Transient(t)) => return Err(t),
                Err(DeliveryError::Refused(message)) => {
                    outbox::record_delivery(
                        &mut conn,
                        change.outbox_id,
                        service::STRIPE,
                        DeliveryStatus::Failed,
                        None,
                        Some(&message),
                    )?;
                    outcomes.push(Outcome::DeadLetter(format!(
                        "Stripe refused {} of customer {}: {message}",
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

/// The `cus_…` id of a created customer, if the answer holds a valid one.
fn created_customer_id(created: &Value) -> Option<String> {
    created
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| crate::stripe::is_id(id, "cus_"))
        .map(str::to_owned)
}

/// Stripe's form encoding of a change: `null` clears a field (empty value);
/// metadata keys are set individually, `null` removing a key.
pub fn form_fields(fields: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let mut form = Vec::new();
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("metadata", Value::Object(meta)) => {
                for (k, v) in meta {
                    form.push((
                        format!("metadata[{k}]"),
                        v.as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            (_, Value::String(s)) => form.push((key.clone(), s.clone())),
            (_, Value::Null) => form.push((key.clone(), String::new())),
            _ => {}
        }
    }
    form
}

pub async fn run(cfg: OutboundConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dead_letter_topic = cfg.changes.dead_letter_topic();
    let worker::Started {
        pool,
        producer,
        health,
    } = worker::start(
        "stripe-outbound",
        &cfg.database,
        &cfg.kafka,
        cfg.metrics_addr,
        &[&cfg.changes.topic, &dead_letter_topic],
        &shutdown,
    )
    .await?;
    let handler = Arc::new(OutboundHandler::new(
        pool,
        cfg.stripe.client()?,
        tokio::runtime::Handle::current(),
    ));
    let settings = ConsumeSettings {
        brokers: cfg.kafka.brokers.clone(),
        group: cfg.consumer_group.clone(),
        topic: cfg.changes.topic.clone(),
        dead_letter_topic,
        // Each change is a Stripe call; small batches keep a retry cheap.
        batch_size: 10,
        batch_wait: std::time::Duration::from_millis(5),
        // One lane: the Stripe rate budget, not Postgres, bounds this worker.
        lanes: 1,
        fetch_wait: cfg.kafka.fetch_wait,
        fetch_max_bytes: cfg.kafka.fetch_max_bytes,
        health,
    };
    consumer::run(settings, handler, producer, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_create_answer_without_a_customer_id_links_nothing() {
        assert_eq!(
            created_customer_id(&json!({"id": "cus_Q1", "object": "customer"})).as_deref(),
            Some("cus_Q1")
        );
        for answer in [
            json!({"object": "customer"}),
            json!({"id": ""}),
            json!({"id": 42}),
            json!({"id": "ch_1"}),
            json!({"id": "cus_1/../../v1/charges"}),
        ] {
            assert_eq!(created_customer_id(&answer), None, "{answer}");
        }
    }

    #[test]
    fn form_encoding_follows_stripe() {
        let fields =
            json!({"name": "Ada", "email": null, "metadata": {"tier": "gold", "old": null}});
        let mut form = form_fields(fields.as_object().unwrap());
        form.sort();
        let expected: Vec<(String, String)> = [
            ("email", ""),
            ("metadata[old]", ""),
            ("metadata[tier]", "gold"),
            ("name", "Ada"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(form, expected);
    }
}
