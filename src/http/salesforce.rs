//! `POST /webhooks/salesforce`: Contact versions a relay forwards (from
//! Change Data Capture or outbound messages), onto `salesforce.events.v1`.
//!
//! The scheme is Stripe's, with a secret of our own
//! (`SALESFORCE_WEBHOOK_SECRET`): header `StripeSync-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{raw body}">`, checked on
//! the raw bytes before parsing, several secrets accepted while one is
//! rotated, 300 s tolerance. The body is `{"records": [Contact, …]}`, each
//! record as the REST API returns it (`Id`, `SystemModstamp`, and the
//! fields it changes). 200 means every record is durable in Kafka.

use std::sync::Arc;

use serde_json::{Map, Value};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use crate::kafka::EventProducer;
use crate::salesforce::event::{SalesforceEvent, SOURCE_RELAY};
use crate::stripe::WebhookVerifier;

pub const SIGNATURE_HEADER: &str = "stripesync-signature";
/// [`SIGNATURE_HEADER`] as messages spell it.
const RELAY_SIGNATURE_HEADER: &str = "StripeSync-Signature";

pub struct Relay {
    pub verifier: WebhookVerifier,
    pub producer: EventProducer,
    pub topic: String,
}

pub fn route(
    relay: Arc<Relay>,
    max_body_bytes: u64,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("webhooks" / "salesforce")
        .and(warp::post())
        .and(warp::header::optional::<String>(SIGNATURE_HEADER))
        .and(warp::body::content_length_limit(max_body_bytes))
        .and(super::body::whole_body())
        .and_then(move |signature: Option<String>, body: bytes::Bytes| {
            let relay = relay.clone();
            async move {
                handle(&relay, signature.as_deref(), &body)
                    .await
                    .map_err(warp::reject::custom)
            }
        })
}

async fn handle(
    relay: &Relay,
    signature: Option<&str>,
    body: &[u8],
) -> Result<warp::reply::Response, ApiError> {
    relay
        .verifier
        .verify(signature, body, crate::ingest::unix_now())
        .map_err(|e| {
            // The scheme is Stripe's; the header it names is ours.
            ApiError::new(
                StatusCode::BAD_REQUEST,
                e.code(),
                e.message_for(RELAY_SIGNATURE_HEADER),
            )
        })?;
    let events = parse(body)
        .map_err(|reason| ApiError::new(StatusCode::BAD_REQUEST, "invalid_records", reason))?;
    let sends = events.iter().map(|event| async move {
        let payload = serde_json::to_vec(event).expect("an event serialises");
        let key = event.version().expect("checked by parse").contact_id;
        relay
            .producer
            .send(&relay.topic, key.as_str().as_bytes(), &payload, &Vec::new())
            .await
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|e| ApiError::unavailable("event_store_unavailable", &e))?;
    }
    Ok(warp::reply::json(&serde_json::json!({"received": events.len()})).into_response())
}

/// The body's records as events; the first unusable one refuses the whole
/// body, with its position, so the relay fixes it and nothing is half sent.
fn parse(body: &[u8]) -> Result<Vec<SalesforceEvent>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let records = value
        .get("records")
        .and_then(Value::as_array)
        .ok_or("the body has no \"records\" array")?;
    records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let mut record: Map<String, Value> = record
                .as_object()
                .cloned()
                .ok_or_else(|| format!("records[{i}] is not an object"))?;
            record.remove("attributes");
            SalesforceEvent::of_record(record, None, SOURCE_RELAY)
                .map_err(|reason| format!("records[{i}]: {reason}"))
        })
        .collect()
}
