//! `POST /webhooks/stripe`, and `POST /webhooks/stripe/{platform}` for the
//! endpoint of one platform of `STRIPE_PLATFORMS`.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use crate::ingest::{IngestError, WebhookIngest};
use crate::metrics;

pub fn route(
    ingest: Arc<WebhookIngest>,
    max_body_bytes: u64,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let any = warp::path!("webhooks" / "stripe").map(|| None);
    let one = warp::path!("webhooks" / "stripe" / String).map(Some);
    any.or(one)
        .unify()
        .and(warp::post())
        .and(warp::header::optional::<String>("stripe-signature"))
        .and(warp::body::content_length_limit(max_body_bytes))
        .and(super::body::whole_body())
        .and_then(
            move |platform: Option<String>, signature: Option<String>, body: bytes::Bytes| {
                let ingest = ingest.clone();
                async move {
                    handle(&ingest, platform.as_deref(), signature.as_deref(), &body).await
                }
            },
        )
}

async fn handle(
    ingest: &WebhookIngest,
    platform: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<warp::reply::Response, Rejection> {
    let result = ingest.ingest(platform, signature, body).await;
    let (outcome, reason) = match &result {
        Ok(_) => ("accepted", ""),
        Err(IngestError::UnknownPlatform(_)) => ("rejected", "unknown_platform"),
        Err(IngestError::Signature(e)) => ("rejected", e.code()),
        Err(IngestError::NotAnEvent(_)) => ("rejected", "invalid_event"),
        Err(IngestError::Unavailable(_)) => ("unavailable", "kafka"),
    };
    metrics::WEBHOOKS
        .with_label_values(&[outcome, reason])
        .inc();
    match result {
        Ok(receipt) => {
            tracing::debug!(
                stripe.event_id = %receipt.event_id, stripe.event_type = %receipt.event_type,
                kafka.partition = receipt.delivered.partition, kafka.offset = receipt.delivered.offset,
                "webhook accepted"
            );
            Ok(
                warp::reply::json(&serde_json::json!({"received": true, "id": receipt.event_id}))
                    .into_response(),
            )
        }
        Err(IngestError::Signature(e)) => {
            tracing::info!(reason = e.code(), "webhook rejected");
            Err(warp::reject::custom(ApiError::new(
                StatusCode::BAD_REQUEST,
                e.code(),
                e.to_string(),
            )))
        }
        Err(e @ IngestError::UnknownPlatform(_)) => Err(warp::reject::custom(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_platform",
            e.to_string(),
        ))),
        Err(IngestError::NotAnEvent(e)) => Err(warp::reject::custom(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_event",
            e.to_string(),
        ))),
        Err(IngestError::Unavailable(e)) => Err(warp::reject::custom(ApiError::unavailable(
            "event_store_unavailable",
            &e,
        ))),
    }
}
