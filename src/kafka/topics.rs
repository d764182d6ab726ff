//! Every Kafka topic the engine uses, in one place.
//!
//! | topic | produced by | consumed by |
//! |---|---|---|
//! | `stripe.events.v1` | `serve` (`POST /webhooks/stripe`) | `workers/stripe-inbound`, `workers/order-notifier` (own groups) |
//! | `stripe.events.v1.dlq` | `workers/stripe-inbound` (permanent failures) | operators |
//! | `customers.changes.v1` | `workers/outbox-relay` | `workers/stripe-outbound`, `workers/salesforce-outbound` (own groups) |
//! | `customers.changes.v1.dlq` | `workers/stripe-outbound` (Stripe refused) | operators |
//! | `customers.changes.v1.salesforce.dlq` | `workers/salesforce-outbound` (Salesforce refused) | operators |
//! | `stripe.commands.v1` | `workers/outbox-relay` (queued refunds) | `workers/stripe-commands` |
//! | `stripe.commands.v1.dlq` | `workers/stripe-commands` (Stripe refused) | operators |
//! | `stripe.events.v1.order-notifier.dlq` | `workers/order-notifier` (the SMTP server refused an order's email) | operators |
//! | `salesforce.events.v1` | `workers/salesforce-inbound`'s poller, `serve` (`POST /webhooks/salesforce`) | `workers/salesforce-inbound` |
//! | `salesforce.events.v1.dlq` | `workers/salesforce-inbound` (versions it cannot apply) | operators |

/// Verified Stripe events, keyed by Stripe object id.
pub const STRIPE_EVENTS: &str = "stripe.events.v1";

/// Local customer changes from the outbox, keyed by local customer id.
pub const CUSTOMER_CHANGES: &str = "customers.changes.v1";

/// Commands for Stripe queued through the API (refunds), keyed by payment
/// intent so one payment's commands stay in order.
pub const STRIPE_COMMANDS: &str = "stripe.commands.v1";

/// Versions of Salesforce Contacts, keyed by Contact id.
pub const SALESFORCE_EVENTS: &str = "salesforce.events.v1";

/// Messages that failed permanently on `topic` go to `{topic}.dlq`.
pub fn dead_letter_for(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The order notifier's dead letters: events of orders whose email the SMTP
/// server refused for good. Its own topic, so that a message both the
/// inbound worker and the notifier refuse is listed once per refusal.
pub fn notifier_dead_letters(events_topic: &str) -> String {
    dead_letter_for(&format!("{events_topic}.order-notifier"))
}

/// salesforce-outbound's dead letters: changes Salesforce refused for good.
/// Its own topic, as the notifier's: a change both services refuse is
/// listed once per refusal, and a replay (onto the changes topic) is a
/// no-op for the service that holds it already.
pub fn salesforce_dead_letters(changes_topic: &str) -> String {
    dead_letter_for(&format!("{changes_topic}.salesforce"))
}
