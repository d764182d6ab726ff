//! Credits: packages of in-app credits bought off-session with a saved
//! card, spent in the app, kept in an append-only ledger that credits each
//! payment exactly once, whether the API's answer from Stripe or the
//! `payment_intent.succeeded` webhook (through the mirror's trigger) gets
//! there first. The tables and the crediting itself are SQL (migration
//! `2026-11-26-000004_credits`), so every path that writes the mirror
//! (webhook, reconcile, backfill, a re-read) credits the same way.

pub mod ledger;
pub mod packages;
pub mod payment_methods;
pub mod purchases;

use crate::customers::NoStripeCustomer;
use crate::stripe::client::StripeError;

/// Why a credits request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CreditsError {
    #[error("no active package {0:?} is on sale")]
    InvalidPackage(String),
    #[error("the customer has no default payment method; save one first")]
    NoPaymentMethod,
    /// The Idempotency-Key's purchase is another customer's or package's.
    #[error("this Idempotency-Key was used for another purchase; use a new key for a new request")]
    KeyReused,
    /// Stripe holds an earlier attempt of the purchase's payment under its
    /// key: not failed, not done; a retry with the same key settles it.
    #[error("the payment of purchase {purchase_id} is still being settled with Stripe; retry with the same Idempotency-Key shortly")]
    InProgress { purchase_id: uuid::Uuid },
    /// Unknown or unsynced customer.
    #[error(transparent)]
    Customer(#[from] NoStripeCustomer),
    /// Stripe's refusals and outages.
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// No database connection (pool exhausted, database down).
    #[error(transparent)]
    Unavailable(#[from] crate::db::Unavailable),
    /// Stripe and our records disagree about a purchase (an intent that is
    /// not the one recorded for it): nothing is credited, an operator looks.
    #[error(
        "purchase {purchase_id} could not be credited for {payment_intent}: it is another intent's"
    )]
    IntentMismatch {
        purchase_id: uuid::Uuid,
        payment_intent: String,
    },
}
