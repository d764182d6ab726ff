//! Salesforce's side of the outbound seam ([`OutboundAdapter`]).
//!
//! A create is an upsert by the external-id field holding the local id, so
//! a retry after a lost answer finds the Contact it made instead of making
//! a second one (Salesforce has no idempotency keys). Updates send only the
//! fields the change sets, by record id.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::client::{SalesforceClient, SalesforceError};
use super::contact::{self, SOBJECT};
use crate::config::SalesforceOutboundConfig;
use crate::db::models::{Customer, IdMapEntry};
use crate::kafka::consumer::Transient;
use crate::outbound::{run_adapter, OutboundWorker};
use crate::outbox::Change;
use crate::sync::adapter::{Created, DeliveryError, OutboundAdapter};
use crate::sync::{entity, service};

pub struct SalesforceOutbound {
    client: SalesforceClient,
    external_id_field: String,
}

impl SalesforceOutbound {
    pub fn new(client: SalesforceClient, external_id_field: &str) -> Self {
        Self {
            client,
            external_id_field: external_id_field.to_owned(),
        }
    }
}

impl From<SalesforceError> for DeliveryError {
    fn from(e: SalesforceError) -> Self {
        // Salesforce names no wait (not even on REQUEST_LIMIT_EXCEEDED):
        // the consume loop's growing backoff paces the retries.
        if e.is_transient() {
            return Self::Transient(Transient::from(e));
        }
        match e {
            // Salesforce's own words, with the fields they are about.
            SalesforceError::Api {
                code,
                message,
                fields,
                ..
            } if fields.is_empty() => Self::Refused(format!("{code}: {message}")),
            SalesforceError::Api {
                code,
                message,
                fields,
                ..
            } => Self::Refused(format!("{code} ({}): {message}", fields.join(", "))),
            e => Self::Refused(e.to_string()),
        }
    }
}

impl OutboundAdapter for SalesforceOutbound {
    fn service(&self) -> &'static str {
        service::SALESFORCE
    }

    fn entity(&self) -> &'static str {
        entity::CONTACT
    }

    fn display_name(&self) -> &'static str {
        "Salesforce"
    }

    fn creates_when_unlinked(&self) -> bool {
        true
    }

    fn create<'a>(
        &'a self,
        change: &'a Change,
        customer: Option<&'a Customer>,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Created, DeliveryError>> {
        Box::pin(async move {
            let Some(customer) = customer else {
                return Err(DeliveryError::Refused(format!(
                    "customer {} does not exist any more",
                    change.local_id
                )));
            };
            let local_id = change.local_id.to_string();
            let upserted = self
                .client
                .upsert_by_external_id(
                    SOBJECT,
                    &self.external_id_field,
                    &local_id,
                    &contact::contact_of(customer),
                )
                .await?;
            Ok(Created {
                account: self.client.org_id().await?,
                external_id: upserted.id,
                // Ordered by SystemModstamp once Salesforce reports it.
                version: 0,
            })
        })
    }

    fn update<'a>(
        &'a self,
        link: &'a IdMapEntry,
        change: &'a Change,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let fields = contact::contact_changes(&change.fields);
            // A change of fields Salesforce does not hold (metadata only).
            if fields.is_empty() {
                return Ok(());
            }
            match self
                .client
                .update(SOBJECT, &link.external_id, &fields)
                .await
            {
                Err(SalesforceError::Api { code, .. })
                    if code == super::client::NOT_FOUND
                        || code == super::client::ENTITY_IS_DELETED =>
                {
                    Err(DeliveryError::Refused(format!(
                        "Contact {} was deleted in Salesforce ({code})",
                        link.external_id
                    )))
                }
                other => Ok(other?),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        link: &'a IdMapEntry,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            self.client.delete(SOBJECT, &link.external_id).await?;
            Ok(())
        })
    }
}

/// `workers/salesforce-outbound`.
pub async fn run(cfg: SalesforceOutboundConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = SalesforceClient::new(&cfg.salesforce)?;
    let adapter = Arc::new(SalesforceOutbound::new(
        client,
        &cfg.salesforce.external_id_field,
    ));
    let worker = OutboundWorker {
        name: "salesforce-outbound",
        database: &cfg.database,
        kafka: &cfg.kafka,
        metrics_addr: cfg.metrics_addr,
        changes_topic: &cfg.changes.topic,
        dead_letter_topic: cfg.dead_letter_topic(),
        consumer_group: &cfg.consumer_group,
    };
    run_adapter(worker, adapter, shutdown).await
}
