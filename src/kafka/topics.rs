//! Every Kafka topic the engine uses, in one place.
//!
//! | topic | produced by | consumed by |
//! |---|---|---|
//! | `stripe.events.v1` | `serve` (`POST /webhooks/stripe`) | `workers/stripe-inbound` |
//! | `stripe.events.v1.dlq` | `workers/stripe-inbound` (permanent failures) | operators |
//! | `customers.changes.v1` | `workers/outbox-relay` | `workers/stripe-outbound` |
//! | `customers.changes.v1.dlq` | `workers/stripe-outbound` (Stripe refused) | operators |

/// Verified Stripe events, keyed by Stripe object id.
pub const STRIPE_EVENTS: &str = "stripe.events.v1";

/// Local customer changes from the outbox, keyed by local customer id.
pub const CUSTOMER_CHANGES: &str = "customers.changes.v1";

/// Messages that failed permanently on `topic` go to `{topic}.dlq`.
pub fn dead_letter_for(topic: &str) -> String {
    format!("{topic}.dlq")
}
