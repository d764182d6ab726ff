//! The Stripe fake's money: saved cards, payment intents (created with
//! `confirm`, or confirmed later), their charges, and refunds, with the
//! fake's Idempotency-Key rules and faults (see `stripe.rs`). Cards behave
//! as Stripe's test cards do: `pm_card_chargeCustomerFail` attaches but
//! every charge of it is declined (402 `card_error`, the payment intent
//! left `requires_payment_method`); `pm_card_chargeDeclined` is declined
//! at once, even when attached. Some refunds stay `pending` with the bank
//! for a few seconds, then succeed or (one in five) fail, and their
//! webhooks say so then, as Stripe's do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use warp::http::StatusCode;

use crate::load::Deliveries;
use crate::stripe::State;

/// Stripe's least charge in US cents.
const MIN_AMOUNT: i64 = 50;

/// What the fake holds and did of payments; cloned as its record for the
/// check.
#[derive(Default, Clone)]
pub struct Money {
    pub payment_methods: HashMap<String, Value>,
    /// Attached cards whose charges are declined.
    declining: HashSet<String>,
    pub intents: HashMap<String, Value>,
    pub charges: HashMap<String, Value>,
    pub refunds: HashMap<String, Value>,
    /// Refund ids, oldest first (lists are newest first).
    refund_order: Vec<String>,
    /// Refunds pending with the bank, and when the bank answers.
    pending_refunds: Vec<(String, Instant)>,
    /// Idempotency key → writes done under it (a replay does none).
    pub performed: HashMap<String, u32>,
    /// Writes done per endpoint.
    pub writes: BTreeMap<String, u64>,
    /// Writes sent without an Idempotency-Key (none of ours should be).
    pub keyless_writes: u64,
    /// Idempotency key → the object its write made (a declined payment
    /// intent included).
    pub made_under: HashMap<String, String>,
    next_id: u64,
}

pub(crate) type Done = (StatusCode, Value, Vec<(&'static str, Value)>);

impl Money {
    pub(crate) fn count_write(&mut self, key: Option<&str>, request: &str, answer: &Value) {
        *self.writes.entry(endpoint(request)).or_default() += 1;
        let Some(key) = key else {
            self.keyless_writes += 1;
            return;
        };
        *self.performed.entry(key.to_owned()).or_default() += 1;
        let made = answer["id"]
            .as_str()
            .or(answer["error"]["payment_intent"]["id"].as_str());
        if let Some(id) = made {
            self.made_under.insert(key.to_owned(), id.to_owned());
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_chaospay{}", self.next_id)
    }

    /// Whether charging `pm` is declined; `None` for no such card.
    fn declines(&self, pm: &str) -> Option<bool> {
        match pm {
            "pm_card_visa" | "pm_card_mastercard" => Some(false),
            "pm_card_chargeDeclined" | "pm_card_chargeCustomerFail" => Some(true),
            _ if self.payment_methods.contains_key(pm) => Some(self.declining.contains(pm)),
            _ => None,
        }
    }

    /// The refunds of a payment intent or charge, newest first.
    pub fn refunds_of(&self, field: &str, id: &str) -> Vec<Value> {
        self.refund_order
            .iter()
            .rev()
            .map(|r| &self.refunds[r])
            .filter(|r| r[field] == id)
            .cloned()
            .collect()
    }
}

/// A label for the write a request made (ids left out).
fn endpoint(request: &str) -> String {
    let path = request.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match parts.as_slice() {
        [collection] => format!("{collection}.create"),
        [collection, _] => format!("{collection}.update"),
        [collection, _, action] => format!("{collection}.{action}"),
        _ => path.to_owned(),
    }
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: String,
) -> (StatusCode, Value) {
    (
        status,
        json!({"error": {"type": kind, "code": code, "message": message}}),
    )
}

fn refusal(status: StatusCode, code: &str, message: String) -> Done {
    let (status, body) = stripe_error(status, "invalid_request_error", code, message);
    (status, body, vec![])
}

pub(crate) fn no_such(what: &str, id: &str) -> (StatusCode, Value) {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "resource_missing",
        format!("No such {what}: '{id}'"),
    )
}

pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn metadata(form: &[(String, String)]) -> Value {
    let map: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((key.to_owned(), json!(v)))
        })
        .collect();
    Value::Object(map)
}

pub(crate) fn attach(s: &mut State, fixtures: &Value, pm: &str, form: &[(String, String)]) -> Done {
    let Some(customer) = field(form, "customer") else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            "Missing required param: customer.".into(),
        );
    };
    if !s.customers.contains_key(customer) {
        let (status, body) = no_such("customer", customer);
        return (status, body, vec![]);
    }
    let money = &mut s.money;
    let declines = match money.declines(pm) {
        Some(d) => d,
        None => {
            let (status, body) = no_such("PaymentMethod", pm);
            return (status, body, vec![]);
        }
    };
    if pm == "pm_card_chargeDeclined" {
        let (status, body) = stripe_error(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            "card_declined",
            "The card was declined.".into(),
        );
        return (status, body, vec![]);
    }
    // A test card's name attaches as a new payment method, as at Stripe.
    let id = if money.payment_methods.contains_key(pm) {
        pm.to_owned()
    } else {
        let id = money.new_id("pm");
        let mut object = fixtures["payment_method"].clone();
        object["id"] = json!(id);
        object["created"] = json!(stripe_sync::ingest::unix_now());
        object["metadata"] = json!({});
        object["card"]["last4"] = json!(if declines { "0341" } else { "4242" });
        money.payment_methods.insert(id.clone(), object);
        if declines {
            money.declining.insert(id.clone());
        }
        id
    };
    let object = money.payment_methods.get_mut(&id).expect("just found");
    if object["customer"].as_str().is_some_and(|c| c != customer) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "payment_method_unexpected_state",
            format!("{id} is attached to another customer"),
        );
    }
    object["customer"] = json!(customer);
    let object = object.clone();
    (
        StatusCode::OK,
        object.clone(),
        vec![("payment_method.attached", object)],
    )
}

pub(crate) fn create_intent(s: &mut State, fixtures: &Value, form: &[(String, String)]) -> Done {
    let amount = field(form, "amount").and_then(|a| a.parse::<i64>().ok());
    let Some(amount) = amount else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "parameter_invalid_integer",
            "amount must be a whole number".into(),
        );
    };
    if amount < MIN_AMOUNT {
        return refusal(
            StatusCode::BAD_REQUEST,
            "amount_too_small",
            format!("the least amount is {MIN_AMOUNT}"),
        );
    }
    let customer = field(form, "customer");
    if let Some(c) = customer.filter(|c| !s.customers.contains_key(*c)) {
        let (status, body) = no_such("customer", c);
        return (status, body, vec![]);
    }
    let pm = field(form, "payment_method");
    if let Some(pm) = pm {
        if s.money.declines(pm).is_none() {
            let (status, body) = no_such("PaymentMethod", pm);
            return (status, body, vec![]);
        }
        let owner = s
            .money
            .payment_methods
            .get(pm)
            .map(|o| o["customer"].clone());
        if owner.is_some_and(|o| o.as_str() != customer) {
            return refusal(
                StatusCode::BAD_REQUEST,
                "payment_method_unexpected_state",
                format!("{pm} belongs to another customer"),
            );
        }
    }
    let id = s.money.new_id("pi");
    let mut intent = fixtures["payment_intent"].clone();
    for (k, v) in [
        ("id", json!(id)),
        ("amount", json!(amount)),
        ("amount_received", json!(0)),
        ("amount_capturable", json!(0)),
        ("currency", json!(field(form, "currency").unwrap_or("usd"))),
        ("customer", json!(customer)),
        ("payment_method", json!(pm)),
        ("metadata", metadata(form)),
        ("created", json!(stripe_sync::ingest::unix_now())),
        ("client_secret", json!(format!("{id}_secret_chaos"))),
        (
            "status",
            json!(if pm.is_some() {
                "requires_confirmation"
            } else {
                "requires_payment_method"
            }),
        ),
    ] {
        intent[k] = v;
    }
    for k in [
        "canceled_at",
        "cancellation_reason",
        "last_payment_error",
        "latest_charge",
        "next_action",
        "processing",
        "transfer_data",
        "review",
        "shipping",
        "application",
    ] {
        intent[k] = Value::Null;
    }
    let mut events = vec![("payment_intent.created", intent.clone())];
    if field(form, "confirm") == Some("true") {
        let (status, body, more) = confirm(s, fixtures, intent, pm);
        events.extend(more);
        return (status, body, events);
    }
    s.money.intents.insert(id, intent.clone());
    (StatusCode::OK, intent, events)
}

/// Charges `intent` with `pm` (its own when `None`): succeeded, or
/// declined as Stripe declines (402, the intent back to
/// `requires_payment_method` with the error on it).
pub(crate) fn confirm(
    s: &mut State,
    fixtures: &Value,
    mut intent: Value,
    pm: Option<&str>,
) -> Done {
    let id = intent["id"].as_str().unwrap_or_default().to_owned();
    let pm = pm
        .map(str::to_owned)
        .or_else(|| intent["payment_method"].as_str().map(str::to_owned));
    let status = intent["status"].as_str().unwrap_or_default();
    if !matches!(status, "requires_confirmation" | "requires_payment_method") {
        return refusal(
            StatusCode::BAD_REQUEST,
            "payment_intent_unexpected_state",
            format!("{id} is {status}: it cannot be confirmed"),
        );
    }
    let Some((pm, declines)) = pm.and_then(|pm| Some((pm.clone(), s.money.declines(&pm)?))) else {
        s.money.intents.insert(id.clone(), intent);
        return refusal(
            StatusCode::BAD_REQUEST,
            "payment_intent_unexpected_state",
            format!("{id} has no payment method to confirm with"),
        );
    };
    let amount = intent["amount"].as_i64().unwrap_or_default();
    let charge_id = s.money.new_id("ch");
    let mut charge = fixtures["charge"].clone();
    for (k, v) in [
        ("id", json!(charge_id)),
        ("amount", json!(amount)),
        ("amount_captured", json!(if declines { 0 } else { amount })),
        ("amount_refunded", json!(0)),
        ("captured", json!(!declines)),
        ("paid", json!(!declines)),
        ("refunded", json!(false)),
        (
            "status",
            json!(if declines { "failed" } else { "succeeded" }),
        ),
        ("payment_intent", json!(id)),
        ("customer", intent["customer"].clone()),
        ("currency", intent["currency"].clone()),
        ("payment_method", json!(pm)),
        ("metadata", json!({})),
        ("created", json!(stripe_sync::ingest::unix_now())),
        (
            "failure_code",
            if declines {
                json!("card_declined")
            } else {
                Value::Null
            },
        ),
        (
            "failure_message",
            if declines {
                json!("The card was declined.")
            } else {
                Value::Null
            },
        ),
        (
            "refunds",
            json!({"object": "list", "data": [], "has_more": false, "total_count": 0,
                   "url": format!("/v1/charges/{charge_id}/refunds")}),
        ),
    ] {
        charge[k] = v;
    }
    intent["payment_method"] = json!(pm);
    intent["latest_charge"] = json!(charge_id);
    s.money.charges.insert(charge_id.clone(), charge.clone());
    if declines {
        let error = json!({
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
            "message": "The card was declined.", "charge": charge_id,
            "payment_method": {"id": pm, "object": "payment_method"},
        });
        intent["status"] = json!("requires_payment_method");
        intent["last_payment_error"] = error.clone();
        s.money.intents.insert(id, intent.clone());
        let mut answer = error;
        answer["payment_intent"] = intent.clone();
        return (
            StatusCode::PAYMENT_REQUIRED,
            json!({ "error": answer }),
            vec![
                ("charge.failed", charge),
                ("payment_intent.payment_failed", intent),
            ],
        );
    }
    intent["status"] = json!("succeeded");
    intent["amount_received"] = json!(amount);
    intent["last_payment_error"] = Value::Null;
    s.money.intents.insert(id, intent.clone());
    (
        StatusCode::OK,
        intent.clone(),
        vec![
            ("charge.succeeded", charge),
            ("payment_intent.succeeded", intent),
        ],
    )
}

pub(crate) fn create_refund(s: &mut State, fixtures: &Value, form: &[(String, String)]) -> Done {
    let money = &mut s.money;
    let Some(pi) = field(form, "payment_intent") else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            "a refund names its payment_intent".into(),
        );
    };
    let Some(intent) = money.intents.get(pi) else {
        let (_, body) = no_such("payment_intent", pi);
        return (StatusCode::BAD_REQUEST, body, vec![]);
    };
    let charge_id = intent["latest_charge"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if intent["status"] != "succeeded" {
        return refusal(
            StatusCode::BAD_REQUEST,
            "charge_not_refundable",
            format!("{pi} has no successful charge to refund"),
        );
    }
    let charge = &money.charges[&charge_id];
    let currency = charge["currency"].clone();
    let left = charge["amount"].as_i64().unwrap_or_default()
        - charge["amount_refunded"].as_i64().unwrap_or_default();
    let amount = match field(form, "amount").map(str::parse::<i64>) {
        None => left,
        Some(Ok(a)) if a > 0 => a,
        Some(_) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "parameter_invalid_integer",
                "amount must be a positive whole number".into(),
            )
        }
    };
    if left <= 0 {
        return refusal(
            StatusCode::BAD_REQUEST,
            "charge_already_refunded",
            format!("{charge_id} is refunded in full already"),
        );
    }
    if amount > left {
        return refusal(
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            format!("{amount} asked, {left} of {charge_id} is left to refund"),
        );
    }
    let id = money.new_id("re");
    // Most card refunds succeed at once; some wait on the bank.
    let pending = rand::thread_rng().gen_bool(0.3);
    let mut refund = fixtures["refund"].clone();
    for (k, v) in [
        ("id", json!(id)),
        ("amount", json!(amount)),
        ("charge", json!(charge_id)),
        ("payment_intent", json!(pi)),
        ("currency", currency),
        ("reason", json!(field(form, "reason"))),
        ("metadata", metadata(form)),
        ("created", json!(stripe_sync::ingest::unix_now())),
        (
            "status",
            json!(if pending { "pending" } else { "succeeded" }),
        ),
    ] {
        refund[k] = v;
    }
    if pending {
        let wait = Duration::from_millis(rand::thread_rng().gen_range(1500..3500));
        money
            .pending_refunds
            .push((id.clone(), Instant::now() + wait));
    }
    let charge = money
        .charges
        .get_mut(&charge_id)
        .expect("the intent's charge");
    let refunded = charge["amount_refunded"].as_i64().unwrap_or_default() + amount;
    charge["amount_refunded"] = json!(refunded);
    charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or_default());
    let charge = charge.clone();
    money.refunds.insert(id.clone(), refund.clone());
    money.refund_order.push(id);
    (
        StatusCode::OK,
        refund.clone(),
        vec![("refund.created", refund), ("charge.refunded", charge)],
    )
}

/// The bank answers the pending refunds that are due: most succeed; a
/// failed one gives its amount back to the charge.
pub(crate) fn settle_refunds(money: &mut Money, deliveries: &Deliveries) {
    let now = Instant::now();
    let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut money.pending_refunds)
        .into_iter()
        .partition(|(_, at)| *at <= now);
    money.pending_refunds = waiting;
    for (id, _) in due {
        let failed = rand::thread_rng().gen_bool(0.2);
        let refund = money.refunds.get_mut(&id).expect("a pending refund");
        refund["status"] = json!(if failed { "failed" } else { "succeeded" });
        if failed {
            refund["failure_reason"] = json!("expired_or_canceled_card");
        }
        let refund = refund.clone();
        deliveries.push_echo("refund.updated", &refund, None);
        if failed {
            let charge_id = refund["charge"].as_str().unwrap_or_default();
            let charge = money
                .charges
                .get_mut(charge_id)
                .expect("the refund's charge");
            let refunded = charge["amount_refunded"].as_i64().unwrap_or_default()
                - refund["amount"].as_i64().unwrap_or_default();
            charge["amount_refunded"] = json!(refunded);
            charge["refunded"] = json!(false);
            deliveries.push_echo("charge.updated", &charge.clone(), None);
        }
    }
}
