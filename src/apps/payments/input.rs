//! The payments API's request bodies, checked at the edge: amounts in the
//! currency's smallest unit, ISO 4217 currencies, Stripe ids by prefix,
//! absolute http(s) URLs. A checked body is what the rest of the app takes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::checkout::{LinePrice, NewCheckout, NewLine};
use super::intents::{NewIntent, NewRefund, REFUND_REASONS};
use crate::customers::CustomerId;
use crate::stripe::currency::{self, check_amount};

pub use crate::input::Invalid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentBody {
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub customer_id: Option<CustomerId>,
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub confirm: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    pub payment_intent: String,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    pub line_items: Vec<LineBody>,
    pub mode: String,
    pub success_url: String,
    pub cancel_url: String,
    #[serde(default)]
    pub customer_id: Option<CustomerId>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub price_data: Option<Value>,
    pub quantity: i64,
}

/// At most this many lines per session (Stripe's limit).
const MAX_LINES: usize = 100;

fn check_url(field: &str, raw: String) -> Result<String, Invalid> {
    match url::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => Ok(raw),
        _ => Err(invalid(
            field,
            format!("{field} must be an absolute http(s) URL"),
        )),
    }
}

impl CheckoutBody {
    pub fn checked(self) -> Result<NewCheckout, Invalid> {
        if self.line_items.is_empty() || self.line_items.len() > MAX_LINES {
            return Err(invalid(
                "line_items",
                format!("line_items holds 1 to {MAX_LINES} lines"),
            ));
        }
        if !matches!(self.mode.as_str(), "payment" | "subscription") {
            return Err(invalid("mode", "mode is payment or subscription"));
        }
        let lines = self
            .line_items
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                let field = format!("line_items[{i}]");
                let price = match (line.price, line.price_data) {
                    (Some(p), None) if is_stripe_id(&p, "price_") => LinePrice::Price(p),
                    (Some(p), None) => {
                        return Err(invalid(
                            &field,
                            format!("{p:?} is not a price id (price_…)"),
                        ))
                    }
                    (None, Some(data @ Value::Object(_))) => LinePrice::PriceData(data),
                    _ => {
                        return Err(invalid(
                            &field,
                            "give either price or price_data (an object)",
                        ))
                    }
                };
                if !(1..=999_999).contains(&line.quantity) {
                    return Err(invalid(
                        &field,
                        "quantity is a whole number from 1 to 999999",
                    ));
                }
                Ok(NewLine {
                    price,
                    quantity: line.quantity,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NewCheckout {
            lines,
            mode: self.mode,
            success_url: check_url("success_url", self.success_url)?,
            cancel_url: check_url("cancel_url", self.cancel_url)?,
            customer: self.customer_id,
            metadata: self.metadata,
        })
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid::new(field, message)
}

pub use crate::stripe::is_id as is_stripe_id;

impl IntentBody {
    pub fn checked(self) -> Result<NewIntent, Invalid> {
        let currency = currency::parse(&self.currency).ok_or_else(|| {
            invalid(
                "currency",
                format!("{:?} is not an ISO 4217 currency", self.currency),
            )
        })?;
        if let Some(pm) = self
            .payment_method
            .as_deref()
            .filter(|pm| !is_stripe_id(pm, "pm_"))
        {
            return Err(invalid(
                "payment_method",
                format!("{pm:?} is not a payment method id (pm_…)"),
            ));
        }
        Ok(NewIntent {
            amount: check_amount("amount", self.amount)?,
            currency,
            customer: self.customer_id,
            payment_method: self.payment_method,
            confirm: self.confirm,
            metadata: self.metadata,
        })
    }
}

impl RefundBody {
    pub fn checked(self) -> Result<NewRefund, Invalid> {
        if !is_stripe_id(&self.payment_intent, "pi_") {
            return Err(invalid(
                "payment_intent",
                format!(
                    "{:?} is not a payment intent id (pi_…)",
                    self.payment_intent
                ),
            ));
        }
        if let Some(reason) = self
            .reason
            .as_deref()
            .filter(|r| !REFUND_REASONS.contains(r))
        {
            return Err(invalid(
                "reason",
                format!("{reason:?} is not one of {}", REFUND_REASONS.join(", ")),
            ));
        }
        Ok(NewRefund {
            payment_intent: self.payment_intent,
            amount: self.amount.map(|a| check_amount("amount", a)).transpose()?,
            reason: self.reason,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequestBody {
    pub payment_intent: String,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The client's own id for the request; one is made up without it.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl RefundRequestBody {
    /// The request id, if the client named one (else the route derives it
    /// from the request's Idempotency-Key), and the refund.
    pub fn checked(self) -> Result<(Option<String>, NewRefund), Invalid> {
        let request_id = match self.request_id {
            Some(id) => {
                let ok = !id.is_empty()
                    && id.len() <= 100
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    return Err(invalid(
                        "request_id",
                        "request_id is 1 to 100 letters, digits, '-', '_' or '.'",
                    ));
                }
                Some(id)
            }
            None => None,
        };
        let refund = RefundBody {
            payment_intent: self.payment_intent,
            amount: self.amount,
            reason: self.reason,
        }
        .checked()?;
        Ok((request_id, refund))
    }
}
