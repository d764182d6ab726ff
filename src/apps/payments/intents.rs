//! Payment intents and synchronous refunds: the checks made before Stripe
//! is asked, and the calls themselves.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::customers::CustomerId;
use crate::customers::NoStripeCustomer;
use crate::stripe::client::{StripeClient, StripeError, RESOURCE_MISSING};
use crate::stripe::{AccountId, ObjectId, RemoteObject};

/// A payment intent to create, checked at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIntent {
    pub amount: i64,
    pub currency: String,
    /// A local customer; passed to Stripe as its `cus_…`.
    pub customer: Option<CustomerId>,
    pub payment_method: Option<String>,
    pub confirm: bool,
    pub metadata: BTreeMap<String, String>,
}

/// A refund to make, checked at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRefund {
    pub payment_intent: String,
    /// The rest of the payment when `None`.
    pub amount: Option<i64>,
    pub reason: Option<String>,
}

/// The reasons Stripe accepts.
pub const REFUND_REASONS: [&str; 3] = ["duplicate", "fraudulent", "requested_by_customer"];

/// Why a payments call did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error(transparent)]
    Customer(#[from] NoStripeCustomer),
    #[error("no such payment intent {0}")]
    NoSuchIntent(String),
    #[error("only {left} of the payment is left to refund; asked for {asked}")]
    AmountTooLarge { asked: i64, left: i64 },
    #[error("nothing of this payment is left to refund")]
    NothingToRefund,
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// No database connection (pool exhausted, database down).
    #[error(transparent)]
    Unavailable(#[from] crate::db::Unavailable),
}

/// Stripe's form fields for a new payment intent.
pub fn intent_form(intent: &NewIntent, customer: Option<&str>) -> Vec<(String, String)> {
    let mut form = vec![
        ("amount".to_owned(), intent.amount.to_string()),
        ("currency".to_owned(), intent.currency.clone()),
    ];
    if let Some(customer) = customer {
        form.push(("customer".into(), customer.to_owned()));
    }
    if let Some(pm) = &intent.payment_method {
        form.push(("payment_method".into(), pm.clone()));
    }
    if intent.confirm {
        form.push(("confirm".into(), "true".into()));
    }
    for (k, v) in &intent.metadata {
        form.push((format!("metadata[{k}]"), v.clone()));
    }
    form
}

/// What the API shows of a created payment intent.
pub fn created_view(pi: &Value) -> Value {
    json!({
        "id": pi["id"], "client_secret": pi["client_secret"], "status": pi["status"],
        "amount": pi["amount"], "currency": pi["currency"],
    })
}

/// A payment intent as Stripe has it, with what was received and refunded.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentState {
    pub intent: Value,
    pub received: i64,
    pub refunded: i64,
}

impl IntentState {
    /// What the API shows of it.
    pub fn view(&self) -> Value {
        let pi = &self.intent;
        json!({
            "id": pi["id"], "amount": pi["amount"], "currency": pi["currency"], "status": pi["status"],
            "amount_received": self.received, "amount_refunded": self.refunded,
            "metadata": pi["metadata"],
        })
    }

    /// What may still be refunded.
    pub fn refundable(&self) -> i64 {
        self.received - self.refunded
    }
}

/// A payment intent with its latest charge, from Stripe. `amount_received`
/// when Stripe gives it, else what the charge captured (older API versions
/// and fakes leave it out); refunds from the charge.
pub async fn read_intent(stripe: &StripeClient, id: &str) -> Result<IntentState, PaymentsError> {
    let no_such_intent = || PaymentsError::NoSuchIntent(id.to_owned());
    let object = ObjectId::parse(id).map_err(|_| no_such_intent())?;
    let intent = match stripe
        .retrieve(&AccountId::PLATFORM, "payment_intents", object)
        .await?
    {
        RemoteObject::Live(pi) => pi,
        RemoteObject::Deleted => return Err(no_such_intent()),
    };
    let charge = match &intent["latest_charge"] {
        Value::Object(_) => intent["latest_charge"].clone(),
        Value::String(charge_id) => {
            match stripe
                .retrieve(&AccountId::PLATFORM, "charges", ObjectId::parse(charge_id)?)
                .await?
            {
                RemoteObject::Live(ch) => ch,
                RemoteObject::Deleted => Value::Null,
            }
        }
        _ => Value::Null,
    };
    let captured = if charge["paid"] == true && charge["captured"] != false {
        charge["amount"].as_i64().unwrap_or(0)
    } else {
        0
    };
    Ok(IntentState {
        received: intent["amount_received"].as_i64().unwrap_or(captured),
        refunded: charge["amount_refunded"].as_i64().unwrap_or(0),
        intent,
    })
}

/// The metadata that marks a refund as one request's, so the request's
/// retry finds it: `(name, value)`.
pub type Mark<'a> = (&'a str, &'a str);

/// The metadata name of a synchronous refund's mark: the Stripe key the
/// request's refund was made under.
pub const KEY_METADATA: &str = "stripe_sync_key";

/// Refunds (part of) a payment once per `mark`. A refund an earlier attempt
/// made (its answer lost on the way back) is found by its mark and answered
/// instead, before anything is checked: by now it is what drained the
/// payment, and a fresh check would refuse the retry. Otherwise, after
/// checking there is that much left to refund (Stripe has the final word,
/// for a refund made elsewhere meanwhile), the refund is made with the mark
/// in its metadata and under `idempotency_key`.
pub async fn refund_once(
    stripe: &StripeClient,
    refund: &NewRefund,
    mark: Mark<'_>,
    idempotency_key: &str,
) -> Result<Value, PaymentsError> {
    let (name, value) = mark;
    let filters = [("payment_intent".to_owned(), refund.payment_intent.clone())];
    let made = match stripe
        .list_all(&AccountId::PLATFORM, "refunds", &filters)
        .await
    {
        Ok(made) => made,
        // Stripe lists the refunds of an intent it does not have as a 404.
        Err(StripeError::InvalidId(_)) => {
            return Err(PaymentsError::NoSuchIntent(refund.payment_intent.clone()))
        }
        Err(StripeError::Api {
            status: 404,
            code: Some(code),
            ..
        }) if code == RESOURCE_MISSING => {
            return Err(PaymentsError::NoSuchIntent(refund.payment_intent.clone()))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(found) = made.into_iter().find(|r| r["metadata"][name] == value) {
        return Ok(found);
    }
    let left = read_intent(stripe, &refund.payment_intent)
        .await?
        .refundable();
    if left <= 0 {
        return Err(PaymentsError::NothingToRefund);
    }
    if let Some(asked) = refund.amount.filter(|&a| a > left) {
        return Err(PaymentsError::AmountTooLarge { asked, left });
    }
    // "The rest" is sent as an amount: what we checked is what is refunded.
    let amount = refund.amount.unwrap_or(left);
    let mut form = vec![
        ("payment_intent".to_owned(), refund.payment_intent.clone()),
        ("amount".to_owned(), amount.to_string()),
        (format!("metadata[{name}]"), value.to_owned()),
    ];
    if let Some(reason) = &refund.reason {
        form.push(("reason".into(), reason.clone()));
    }
    Ok(stripe
        .post(&AccountId::PLATFORM, "/v1/refunds", &form, idempotency_key)
        .await?)
}

/// A synchronous refund, as the API answers it: once per Stripe key (see
/// [`refund_once`]).
pub async fn refund(
    stripe: &StripeClient,
    refund: &NewRefund,
    idempotency_key: &str,
) -> Result<Value, PaymentsError> {
    let made = refund_once(
        stripe,
        refund,
        (KEY_METADATA, idempotency_key),
        idempotency_key,
    )
    .await?;
    Ok(json!({"refund": {"id": made["id"], "amount": made["amount"], "status": made["status"]}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_intent_form_carries_what_was_asked() {
        let intent = NewIntent {
            amount: 1999,
            currency: "eur".into(),
            customer: None,
            payment_method: Some("pm_card_visa".into()),
            confirm: true,
            metadata: BTreeMap::from([("order".to_owned(), "42".to_owned())]),
        };
        let form = intent_form(&intent, Some("cus_1"));
        let get = |k: &str| {
            form.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("amount"), Some("1999"));
        assert_eq!(get("currency"), Some("eur"));
        assert_eq!(get("customer"), Some("cus_1"));
        assert_eq!(get("confirm"), Some("true"));
        assert_eq!(get("metadata[order]"), Some("42"));
        let bare = intent_form(
            &NewIntent {
                confirm: false,
                ..intent
            },
            None,
        );
        assert!(bare.iter().all(|(k, _)| k != "confirm" && k != "customer"));
    }
}
