//! Webhook ingest: verify the signature on the raw bytes, then hand the
//! event to Kafka and wait for its acknowledgement (invariants 1 and 2).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::kafka::envelope;
use crate::kafka::producer::{Delivered, EventProducer, ProduceError};
use crate::stripe::event::EventError;
use crate::stripe::platforms::Platform;
use crate::stripe::{AccountId, EventEnvelope, SignatureError, WebhookVerifier};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    NotAnEvent(#[from] EventError),
    #[error(transparent)]
    Unavailable(#[from] ProduceError),
    /// A platform's own path (`/webhooks/stripe/{acct}`) naming no
    /// platform configured with secrets.
    #[error("no platform {0:?} with webhook secrets is configured here (STRIPE_PLATFORMS)")]
    UnknownPlatform(String),
}

/// Where a verified event went.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub event_id: String,
    pub event_type: String,
    pub delivered: Delivered,
}

pub struct WebhookIngest {
    /// Each platform's secrets, the default platform's first.
    verifiers: Vec<(AccountId, WebhookVerifier)>,
    /// Every platform's own account, secrets or not.
    platforms: Vec<AccountId>,
    producer: EventProducer,
    topic: String,
}

impl WebhookIngest {
    /// Ingest for the default platform, whose secrets `verifier` holds.
    pub fn new(verifier: WebhookVerifier, producer: EventProducer, topic: String) -> Self {
        Self {
            verifiers: vec![(AccountId::PLATFORM, verifier)],
            platforms: vec![AccountId::PLATFORM],
            producer,
            topic,
        }
    }

    /// Takes the webhooks of further platforms too, each told apart by its
    /// secrets; a platform configured without secrets sends none.
    pub fn with_platforms(mut self, platforms: &[Platform], tolerance_secs: i64) -> Self {
        for p in platforms {
            self.platforms.push(p.account.clone());
            if !p.webhook_secrets.is_empty() {
                let verifier = WebhookVerifier::new(p.webhook_secrets.clone(), tolerance_secs);
                self.verifiers.push((p.account.clone(), verifier));
            }
        }
        self
    }

    /// Returns only once the event is durable in Kafka; any error means it is
    /// not, and the caller must make Stripe retry. `platform` is the one
    /// the endpoint's path names, if any: only its secrets are tried.
    /// Otherwise the secret that verifies says which platform sent it.
    pub async fn ingest(
        &self,
        platform: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Receipt, IngestError> {
        let platform = self.verify(platform, signature, body, unix_now())?;
        let event = EventEnvelope::parse_for(body, platform)?;
        // One platform's secret must not write under another platform's
        // own account (a connected account's events name it instead).
        if event.account != platform.as_str()
            && self.platforms.iter().any(|p| p.as_str() == event.account)
        {
            return Err(IngestError::NotAnEvent(EventError::NotAnEvent(format!(
                "it names the account {}, another platform's own, but is signed with {platform}'s secret",
                event.account
            ))));
        }
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

impl WebhookIngest {
    /// The platform whose secret signed `body`. Only a signature that
    /// matches no secret moves on to the next platform's: a missing or
    /// malformed header, or a stale timestamp on a matching signature, is
    /// the answer.
    fn verify(
        &self,
        path: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<&AccountId, IngestError> {
        let named = |account: &AccountId| path.is_none_or(|p| p == account.as_str());
        let mut candidates = self.verifiers.iter().filter(|(a, _)| named(a)).peekable();
        if candidates.peek().is_none() {
            let path = path.unwrap_or_default().chars().take(64).collect();
            return Err(IngestError::UnknownPlatform(path));
        }
        for (platform, verifier) in candidates {
            match verifier.verify(signature, body, now) {
                Ok(()) => return Ok(platform),
                Err(SignatureError::NoMatchingSignature) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(SignatureError::NoMatchingSignature.into())
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
