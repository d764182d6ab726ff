//! Saved cards: a payment method attached to the customer's Stripe
//! customer and made its default (`invoice_settings.default_payment_method`),
//! which is what off-session purchases charge. Stripe holds the cards; we
//! keep no copy, so a card saved elsewhere (Checkout, the dashboard) counts
//! too.

use serde_json::{json, Value};

use crate::stripe::client::{StripeClient, StripeError};
use crate::stripe::{AccountId, ObjectId, RemoteObject};

/// What the API shows of a saved payment method.
pub fn view(pm: &Value, default: Option<&str>) -> Value {
    let card = &pm["card"];
    json!({
        "payment_method": pm["id"],
        "default": default.is_some() && pm["id"].as_str() == default,
        "card": {
            "brand": card["brand"], "last4": card["last4"],
            "exp_month": card["exp_month"], "exp_year": card["exp_year"],
        },
    })
}

/// Attaches `pm` to `customer` and makes it the default. Each call carries
/// its own key derived from the request's, so a retry repeats neither.
pub async fn save(
    stripe: &StripeClient,
    customer: &str,
    pm: &str,
    idempotency_key: &str,
) -> Result<Value, StripeError> {
    let attached = stripe
        .post(
            &AccountId::PLATFORM,
            &format!("/v1/payment_methods/{pm}/attach"),
            &[("customer".to_owned(), customer.to_owned())],
            &format!("{idempotency_key}-attach"),
        )
        .await?;
    // Stripe's test ids (`pm_card_visa`) become a new payment method when
    // attached: the default is the one Stripe answered with.
    let saved = attached["id"].as_str().unwrap_or(pm).to_owned();
    stripe
        .post(
            &AccountId::PLATFORM,
            &format!("/v1/customers/{customer}"),
            &[(
                "invoice_settings[default_payment_method]".to_owned(),
                saved.clone(),
            )],
            &format!("{idempotency_key}-default"),
        )
        .await?;
    Ok(view(&attached, Some(&saved)))
}

/// The customer's default payment method, if it has one.
pub async fn default_of(
    stripe: &StripeClient,
    customer: &str,
) -> Result<Option<String>, StripeError> {
    let customer = match stripe
        .retrieve(
            &AccountId::PLATFORM,
            "customers",
            ObjectId::parse(customer)?,
        )
        .await?
    {
        RemoteObject::Live(c) => c,
        RemoteObject::Deleted => return Ok(None),
    };
    let default = &customer["invoice_settings"]["default_payment_method"];
    // A string, or the object when expanded.
    Ok(default
        .as_str()
        .or_else(|| default["id"].as_str())
        .map(str::to_owned))
}

/// The customer's cards, the default marked.
pub async fn list(stripe: &StripeClient, customer: &str) -> Result<Vec<Value>, StripeError> {
    let default = default_of(stripe, customer).await?;
    let cards = stripe
        .list_all(
            &AccountId::PLATFORM,
            "payment_methods",
            &[
                ("customer".to_owned(), customer.to_owned()),
                ("type".to_owned(), "card".to_owned()),
            ],
        )
        .await?;
    Ok(cards
        .iter()
        .map(|pm| view(pm, default.as_deref()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_marks_only_the_default() {
        let pm = json!({"id": "pm_1", "card": {"brand": "visa", "last4": "4242",
                        "exp_month": 12, "exp_year": 2030, "fingerprint": "x"}});
        let v = view(&pm, Some("pm_1"));
        assert_eq!(v["default"], true);
        assert_eq!(v["card"]["last4"], "4242");
        assert!(v["card"].get("fingerprint").is_none());
        assert_eq!(view(&pm, Some("pm_2"))["default"], false);
        assert_eq!(view(&pm, None)["default"], false);
    }
}
