//! Everything that speaks Stripe: webhook signatures, event types and the
//! REST client.

pub mod client;
pub mod currency;
pub mod event;
pub mod form;
pub mod rate;
pub mod signature;

pub use client::{ListPage, RemoteObject, StripeClient, StripeError};
pub use event::{EventEnvelope, StripeEvent, StripeEventId, PLATFORM_ACCOUNT};
pub use signature::{SignatureError, WebhookVerifier};
