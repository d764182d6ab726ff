//! Which of Stripe's event types the engine handles: those whose
//! `data.object` is a type the registry mirrors from events (the apply
//! path routes by the object, not by the event type's name). The webhook
//! endpoint `webhooks install` creates subscribes to exactly these.

use super::{by_object, Resource};
use crate::stripe::event_types;

/// Event-type prefixes whose object is not the type the prefix spells:
/// `customer.subscription.updated` carries a subscription. `None`: events
/// the engine ignores (a customer's payment sources).
const CARRIES: &[(&str, Option<&[&str]>)] = &[
    ("customer.subscription", Some(&["subscription"])),
    ("customer.tax_id", Some(&["tax_id"])),
    ("customer.source", None),
    ("charge.dispute", Some(&["dispute"])),
    ("charge.refund", Some(&["refund"])),
    // A connected account's authorization of our application: about the
    // account (`stripe::event::application_account`).
    ("account.application", Some(&["account"])),
    ("account.external_account", Some(&["bank_account", "card"])),
    ("sigma.scheduled_query_run", Some(&["scheduled_query_run"])),
];

/// Event types of mirrored objects that are never subscribed to, and why.
const LEFT_OUT: &[&str] = &[
    // The coming invoice, computed: it has no id and is not an invoice
    // of the account yet.
    "invoice.upcoming",
    // Real-time authorization: Stripe waits for the endpoint's answer to
    // approve a card payment; a mirror must not be asked.
    "issuing_authorization.request",
];

/// The object types an event type carries, when the registry mirrors
/// them from events.
pub fn objects_of_event(kind: &str) -> Vec<&'static Resource> {
    let Some((prefix, _action)) = kind.rsplit_once('.') else {
        return Vec::new();
    };
    let objects: Vec<&'static Resource> = match CARRIES.iter().find(|(p, _)| *p == prefix) {
        Some((_, carried)) => carried
            .unwrap_or_default()
            .iter()
            .filter_map(|o| by_object(o))
            .collect(),
        // `issuing_card.created` carries an `issuing.card`.
        None => by_object(prefix)
            .or_else(|| by_object(&prefix.replacen('_', ".", 1)))
            .into_iter()
            .collect(),
    };
    objects.into_iter().filter(|r| r.events).collect()
}

/// Every event type the engine handles, in Stripe's order.
pub fn handled_event_types() -> Vec<&'static str> {
    event_types::ALL
        .iter()
        .copied()
        .filter(|kind| !LEFT_OUT.contains(kind) && !objects_of_event(kind).is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RESOURCES;

    #[test]
    fn every_type_kept_by_events_has_its_event_types() {
        let handled = handled_event_types();
        for r in RESOURCES.iter().filter(|r| r.events) {
            assert!(
                handled
                    .iter()
                    .any(|k| objects_of_event(k).iter().any(|o| o.object == r.object)),
                "no event type carries {}",
                r.object
            );
        }
    }

    #[test]
    fn event_types_are_routed_by_the_object_they_carry() {
        let objects =
            |kind| -> Vec<&str> { objects_of_event(kind).iter().map(|r| r.object).collect() };
        assert_eq!(objects("customer.subscription.updated"), ["subscription"]);
        assert_eq!(objects("charge.refund.updated"), ["refund"]);
        assert_eq!(objects("charge.refunded"), ["charge"]);
        assert_eq!(objects("issuing_card.created"), ["issuing.card"]);
        assert_eq!(objects("tax_rate.updated"), ["tax_rate"]);
        assert_eq!(
            objects("account.external_account.created"),
            ["bank_account", "card"]
        );
        // A fee's refund is not the fee; a customer's card is not mirrored.
        assert!(objects("application_fee.refund.updated").is_empty());
        assert!(objects("customer.source.created").is_empty());
        assert!(objects("customer.discount.created").is_empty());
        assert!(objects("balance.available").is_empty());
        // Pulled types have no events to subscribe to.
        assert!(objects("billing.alert.triggered").is_empty());
        let handled = handled_event_types();
        for left_out in LEFT_OUT {
            assert!(event_types::ALL.contains(left_out), "{left_out}");
            assert!(!handled.contains(left_out), "{left_out}");
        }
        assert!(handled.contains(&"checkout.session.completed"));
        assert!(!handled.contains(&"*"));
    }
}
