//! Webhook ingest: verify the signature on the raw bytes, then hand the
//! event to Kafka and wait for its acknowledgement (invariants 1 and 2).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::kafka::envelope;
use crate::kafka::producer::{Delivered, EventProducer, ProduceError};
use crate::stripe::event::EventError;
use crate::stripe::{EventEnvelope, SignatureError, WebhookVerifier};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    NotAnEvent(#[from] EventError),
    #[error(transparent)]
    Unavailable(#[from] ProduceError),
}

/// Where a verified event went.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub event_id: String,
    pub event_type: String,
    pub delivered: Delivered,
}

pub struct WebhookIngest {
    verifier: WebhookVerifier,
    producer: EventProducer,
    topic: String,
}

impl WebhookIngest {
    pub fn new(verifier: WebhookVerifier, producer: EventProducer, topic: String) -> Self {
        Self {
            verifier,
            producer,
            topic,
        }
    }

    /// Returns only once the event is durable in Kafka; any error means it is
    /// not, and the caller must make Stripe retry.
    pub async fn ingest(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Receipt, IngestError> {
        self.verifier.verify(signature, body, unix_now())?;
        let event = EventEnvelope::parse(body)?;
        let headers = envelope::event_headers(&event, envelope::SOURCE_WEBHOOK);
        // The raw body goes to Kafka unchanged: consumers see exactly what
        // Stripe signed, and we skip a re-serialisation on the hot path.
        let _timer = crate::metrics::PRODUCE_SECONDS
            .with_label_values(&[&self.topic])
            .start_timer();
        let delivered = self
            .producer
            .send(&self.topic, event.object_id.as_bytes(), body, &headers)
            .await?;
        Ok(Receipt {
            event_id: event.id.to_string(),
            event_type: event.kind,
            delivered,
        })
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
