//! The payments API: payment intents and refunds over Stripe, so other
//! services never hold the Stripe key. Every POST honours an
//! `Idempotency-Key` the way Stripe does ([`crate::http::idempotency`]); the calls to
//! Stripe carry a key derived from it, so no retry anywhere charges or
//! refunds twice.

pub mod checkout;
pub mod command_worker;
pub mod input;
pub mod intents;
pub mod refund_requests;
