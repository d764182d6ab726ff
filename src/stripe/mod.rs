//! Everything that speaks Stripe: webhook signatures, event types and the
//! REST client.

pub mod account;
pub mod client;
pub mod currency;
pub mod event;
pub mod event_types;
pub mod form;
pub mod object_id;
pub mod outbound;
pub mod platforms;
pub mod rate;
pub mod signature;
pub mod version;
pub mod webhook_endpoints;

pub use account::{AccountId, InvalidAccount, PLATFORM_ACCOUNT};
pub use client::{ListPage, RemoteObject, StripeClient, StripeError};
pub use event::{EventEnvelope, StripeEvent, StripeEventId};
pub use object_id::ObjectId;
pub use signature::{SignatureError, WebhookVerifier};

/// A Stripe id of the kind `prefix` names (`cus_`, `pi_`, …), in Stripe's
/// id alphabet: safe to put in a URL path (see [`ObjectId::of_kind`]).
pub fn is_id(id: &str, prefix: &str) -> bool {
    ObjectId::of_kind(id, prefix).is_some()
}
