//! Realistic Stripe objects and events, derived from Stripe's published
//! fixtures (tests/fixtures/stripe/fixtures3.json) rather than invented.

use serde_json::{json, Value};
use std::sync::OnceLock;

fn resources() -> &'static Value {
    static FIXTURES: OnceLock<Value> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let raw = include_str!("../../fixtures/stripe/fixtures3.json");
        serde_json::from_str::<Value>(raw).unwrap()["resources"].clone()
    })
}

/// Stripe's example object of a type (`invoice`, `checkout.session`, …).
pub fn resource(object: &str) -> Value {
    let example = resources()[object].clone();
    assert!(example.is_object(), "no fixture for {object}");
    example
}

/// Stripe's example customer with our id, `created` and field overrides.
pub fn customer(id: &str, created: i64, fields: Value) -> Value {
    let mut c = resources()["customer"].clone();
    c["id"] = json!(id);
    c["created"] = json!(created);
    c["discount"] = Value::Null;
    for (k, v) in fields.as_object().expect("fields is an object") {
        c[k] = v.clone();
    }
    c
}

/// Stripe's example event wrapping `object`.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    let mut e = resources()["event"].clone();
    e["id"] = json!(id);
    e["type"] = json!(kind);
    e["created"] = json!(created);
    e["api_version"] = json!("2024-06-20");
    e["data"] = json!({ "object": object });
    e["request"] = json!({ "id": null, "idempotency_key": null });
    e
}

pub fn customer_event(
    event_id: &str,
    kind: &str,
    created: i64,
    customer_id: &str,
    fields: Value,
) -> Value {
    event(
        event_id,
        kind,
        created,
        customer(customer_id, created, fields),
    )
}

/// A signed-ready `refund.updated` (`refund.failed` when failed) of
/// Stripe's example refund carrying `refund`'s ids, amount and metadata:
/// localstripe sends no refund webhooks.
pub fn refund_event(event_id: &str, created: i64, refund: &Value, status: &str) -> Value {
    let mut object = resource("refund");
    for field in [
        "id",
        "amount",
        "payment_intent",
        "charge",
        "metadata",
        "currency",
    ] {
        object[field] = refund[field].clone();
    }
    object["status"] = json!(status);
    object["created"] = json!(created);
    object["failure_reason"] = json!(if status == "failed" {
        Some("expired_or_canceled_card")
    } else {
        None
    });
    event(
        event_id,
        &format!(
            "refund.{}",
            if status == "failed" {
                "failed"
            } else {
                "updated"
            }
        ),
        created,
        object,
    )
}
