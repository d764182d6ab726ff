//! Retrying a customer's change a service refused. The refused change sits
//! on that service's dead-letter topic; retrying it is replaying that dead
//! letter, so it goes through the outbound worker, its idempotency key
//! and its delivery record like any replay.

use diesel::prelude::*;

use super::commands::{self, Selection};
use super::topics::TailFrom;
use super::{dlq, Inventory};
use crate::customers::sync_state::{self, Status};
use crate::customers::CustomerId;
use crate::db::schema::{outbox, outbox_deliveries};
use crate::db::PgPool;
use crate::kafka::{topics as kafka_topics, EventProducer};
use crate::outbox::DeliveryStatus;
use crate::sync::{entity, service};

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("{0:?} is not a service this deployment syncs to")]
    UnknownService(String),
    #[error("customer {customer} is {status:?} at {service}, not failed: nothing to retry")]
    NotFailed {
        customer: CustomerId,
        service: &'static str,
        status: Status,
    },
    #[error("change {change} of customer {customer} failed at {service}, but its dead letter is not on {topic} (pruned by retention?)")]
    NoDeadLetter {
        customer: CustomerId,
        service: &'static str,
        change: i64,
        topic: String,
    },
    #[error(transparent)]
    Unavailable(#[from] anyhow::Error),
}

/// The dead-letter topic of changes `service` refused.
fn dead_letters_of(inv: &Inventory, service: &str) -> Option<String> {
    match service {
        service::STRIPE => Some(kafka_topics::dead_letter_for(&inv.changes_topic)),
        service::SALESFORCE if inv.salesforce.is_some() => {
            Some(kafka_topics::salesforce_dead_letters(&inv.changes_topic))
        }
        _ => None,
    }
}

/// The services this deployment syncs customers to.
pub fn services(inv: &Inventory) -> Vec<&'static str> {
    [service::STRIPE, service::SALESFORCE]
        .into_iter()
        .filter(|s| dead_letters_of(inv, s).is_some())
        .collect()
}

/// Replays the dead letter of the customer's newest change `service`
/// refused; returns the replayed dead letter's id.
pub async fn retry(
    inv: &Inventory,
    pool: &PgPool,
    producer: &EventProducer,
    customer: CustomerId,
    service_name: &str,
) -> Result<String, RetryError> {
    let service = sync_state::service_named(service_name)
        .filter(|s| dead_letters_of(inv, s).is_some())
        .ok_or_else(|| RetryError::UnknownService(service_name.to_owned()))?;
    let topic = dead_letters_of(inv, service).expect("checked above");
    let letter = {
        let (inv, pool) = (inv.clone(), pool.clone());
        tokio::task::spawn_blocking(move || -> Result<String, RetryError> {
            let conn = &mut *pool.get().map_err(anyhow::Error::from)?;
            let status = sync_state::for_customers(conn, &[customer])
                .map_err(anyhow::Error::from)?
                .get(&customer)
                .and_then(|states| states.get(service))
                .map(|s| s.status)
                .unwrap_or(Status::Pending);
            if status != Status::Failed {
                return Err(RetryError::NotFailed {
                    customer,
                    service,
                    status,
                });
            }
            let change: i64 = outbox::table
                .inner_join(outbox_deliveries::table)
                .filter(outbox::entity.eq(entity::CUSTOMER))
                .filter(outbox::local_id.eq(customer))
                .filter(outbox_deliveries::service.eq(service))
                .filter(outbox_deliveries::status.eq(DeliveryStatus::Failed))
                .select(outbox::id)
                .order(outbox::id.desc())
                .first(conn)
                .map_err(anyhow::Error::from)?;
            let wanted = format!("outbox {change}");
            dlq::list(
                &inv.brokers,
                conn,
                std::slice::from_ref(&topic),
                TailFrom::Beginning,
            )?
            .into_iter()
            .rev()
            .find(|l| l.event_id.as_deref() == Some(wanted.as_str()))
            .map(|l| l.id)
            .ok_or(RetryError::NoDeadLetter {
                customer,
                service,
                change,
                topic,
            })
        })
        .await
        .map_err(anyhow::Error::from)??
    };
    commands::dlq_replay(inv, pool, producer, Selection::Ids(vec![letter.clone()])).await?;
    Ok(letter)
}
