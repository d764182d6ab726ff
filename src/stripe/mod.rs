//! Everything that speaks Stripe: webhook signatures, event types and the
//! REST client.

pub mod client;
pub mod currency;
pub mod event;
pub mod form;
pub mod outbound;
pub mod rate;
pub mod signature;

pub use client::{ListPage, RemoteObject, StripeClient, StripeError};
pub use event::{EventEnvelope, StripeEvent, StripeEventId, PLATFORM_ACCOUNT};
pub use signature::{SignatureError, WebhookVerifier};

/// A Stripe id of the kind `prefix` names (`cus_`, `pi_`, …), in Stripe's
/// id alphabet: safe to put in a URL path.
pub fn is_id(id: &str, prefix: &str) -> bool {
    id.len() > prefix.len()
        && id.starts_with(prefix)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
