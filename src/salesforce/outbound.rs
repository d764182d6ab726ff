//! Salesforce's side of the outbound seam ([`OutboundAdapter`]).
//!
//! A create is an upsert by the external-id field holding the local id, so
//! a retry after a lost answer finds the Contact it made instead of making
//! a second one (Salesforce has no idempotency keys). Updates send only the
//! fields the change sets, by record id.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use reqwest::Method;
use serde_json::Value;

use super::client::{self, RecordId, SalesforceClient, SalesforceError, SubRequest};
use super::contact::{self, SOBJECT};
use crate::config::SalesforceOutboundConfig;

use crate::kafka::consumer::Transient;
use crate::outbound::{run_adapter, OutboundWorker};
use crate::outbox::Change;
use crate::sync::adapter::{Call, Created, DeliveryError, OutboundAdapter, Request, Sent};
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

impl SalesforceOutbound {
    /// What a request sends: `None` when it needs no call (an update of
    /// fields Salesforce does not hold), or is refused before any.
    fn sub_request(&self, r: &Request<'_>) -> Result<Option<SubRequest>, DeliveryError> {
        Ok(Some(match &r.call {
            Call::Create { customer } => SubRequest {
                method: Method::PATCH,
                path: self.client.upsert_path(
                    SOBJECT,
                    &self.external_id_field,
                    &r.change.local_id.to_string(),
                ),
                body: Some(Value::Object(contact::contact_of(
                    customer.as_ref().ok_or_else(|| gone_locally(r.change))?,
                ))),
            },
            Call::Update { link } => {
                let fields = contact::contact_changes(&r.change.fields);
                // A change of fields Salesforce does not hold (metadata only).
                if fields.is_empty() {
                    return Ok(None);
                }
                SubRequest {
                    method: Method::PATCH,
                    path: self
                        .client
                        .record_path(SOBJECT, RecordId::checked(&link.external_id)?),
                    body: Some(Value::Object(fields)),
                }
            }
            Call::Delete { link } => SubRequest {
                method: Method::DELETE,
                path: self
                    .client
                    .record_path(SOBJECT, RecordId::checked(&link.external_id)?),
                body: None,
            },
        }))
    }

    /// What a call's answer means for its request.
    async fn outcome(
        &self,
        r: &Request<'_>,
        answer: Result<Option<Value>, SalesforceError>,
    ) -> Result<Sent, DeliveryError> {
        match &r.call {
            Call::Create { .. } => {
                let upserted = client::upserted(answer?.as_ref())?;
                Ok(Sent::Created(Created {
                    account: self.client.org_id().await?,
                    external_id: upserted.id,
                    // Ordered by SystemModstamp once Salesforce reports it.
                    version: 0,
                }))
            }
            Call::Update { link } => match answer {
                Err(e) if client::is_gone(&e) => Err(DeliveryError::Refused(format!(
                    "Contact {} was deleted in Salesforce ({e})",
                    link.external_id
                ))),
                other => other.map(|_| Sent::Done).map_err(DeliveryError::from),
            },
            Call::Delete { .. } => Ok(client::deleted(answer).map(|_| Sent::Done)?),
        }
    }

    /// One request, by itself.
    async fn send_alone(&self, r: &Request<'_>) -> Result<Sent, DeliveryError> {
        let Some(call) = self.sub_request(r)? else {
            return Ok(Sent::Done);
        };
        let answer = self
            .client
            .call(call.method, &call.path, call.body.as_ref())
            .await;
        self.outcome(r, answer).await
    }

    /// Several requests in one Composite call (each of a different
    /// customer, so their order within it does not matter).
    async fn send_together(&self, requests: &[Request<'_>]) -> Vec<Result<Sent, DeliveryError>> {
        let mut results: Vec<Option<Result<Sent, DeliveryError>>> =
            requests.iter().map(|_| None).collect();
        let mut calls = Vec::new();
        let mut positions = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match self.sub_request(r) {
                Ok(Some(call)) => {
                    calls.push(call);
                    positions.push(i);
                }
                Ok(None) => results[i] = Some(Ok(Sent::Done)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        match self.client.composite(&calls).await {
            Ok(answers) => {
                for (i, answer) in positions.into_iter().zip(answers) {
                    results[i] = Some(self.outcome(&requests[i], answer).await);
                }
            }
            // The request as a whole failed (the limit, a 5xx, the
            // network): every call in it is retried.
            Err(e) => {
                let reason = e.to_string();
                let transient = e.is_transient();
                for i in positions {
                    results[i] = Some(Err(if transient {
                        DeliveryError::Transient(Transient::from(anyhow::anyhow!(reason.clone())))
                    } else {
                        DeliveryError::Refused(reason.clone())
                    }));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every request has a result"))
            .collect()
    }
}

fn gone_locally(change: &Change) -> DeliveryError {
    DeliveryError::Refused(format!(
        "customer {} does not exist any more",
        change.local_id
    ))
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

    fn send_one<'a>(&'a self, r: &'a Request<'a>) -> BoxFuture<'a, Result<Sent, DeliveryError>> {
        Box::pin(self.send_alone(r))
    }

    /// One call for a single request; the Composite API for several.
    fn send<'a>(
        &'a self,
        requests: &'a [Request<'a>],
    ) -> BoxFuture<'a, Vec<Result<Sent, DeliveryError>>> {
        Box::pin(async move {
            match requests {
                [one] => vec![self.send_alone(one).await],
                many => self.send_together(many).await,
            }
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
