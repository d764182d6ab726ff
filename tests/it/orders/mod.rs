//! Paid orders end to end: signed checkout events through serve, the
//! broker and stripe-inbound into the mirror, then the export reading it
//! (`export`), and the order notifier on the same topic sending to a real
//! SMTP server (`notifier`). Postgres, the broker and the SMTP server
//! (aiosmtpd) are real. Stripe's read API is the fixture-backed fake in
//! `support::catalog_stripe`: neither localstripe nor stripe-stateful-mock
//! has checkout sessions or their line items.

mod export;
mod export_http;
mod notifier;

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::catalog_stripe::CatalogStripe;
use crate::support::fixtures;
use crate::support::stack::{Options, Stack};

pub(super) const T: i64 = 1_764_000_000;

/// Stripe's example checkout session as `id`, with its money and state.
pub(super) fn session(id: &str, created: i64, payment_status: &str, fields: Value) -> Value {
    let mut s = fixtures::resource("checkout.session");
    s["id"] = json!(id);
    s["created"] = json!(created);
    s["status"] = json!(if payment_status == "paid" {
        "complete"
    } else {
        "open"
    });
    s["payment_status"] = json!(payment_status);
    s["amount_total"] = json!(2500);
    s["currency"] = json!("usd");
    s["customer_details"]["name"] = json!(format!("Buyer {id}"));
    for (k, v) in fields.as_object().expect("fields is an object") {
        s[k] = v.clone();
    }
    s
}

/// Stripe's example line item for `product`.
pub(super) fn line_item(n: usize, product: &str, description: &str, amount: i64) -> Value {
    let mut item = fixtures::resource("item");
    item["id"] = json!(format!("li_{n}_{product}"));
    item["description"] = json!(description);
    item["price"]["product"] = json!(product);
    item["price"]["id"] = json!(format!("price_{product}"));
    item["amount_total"] = json!(amount);
    item["amount_subtotal"] = json!(amount);
    item
}

pub(super) fn session_event(id: &str, kind: &str, created: i64, session: Value) -> Value {
    fixtures::event(id, kind, created, session)
}

/// `checkout.session.completed` at `T` for session `id` created at `T`.
pub(super) fn completed(event_id: &str, id: &str, payment_status: &str, fields: Value) -> Value {
    session_event(
        event_id,
        "checkout.session.completed",
        T,
        session(id, T, payment_status, fields),
    )
}

pub(super) async fn stack_with(fake: &CatalogStripe) -> Stack {
    Stack::start(Options {
        stripe_base: fake.base(),
        ..Options::default()
    })
    .await
}

pub(super) async fn post_all(stack: &Stack, events: &[Value]) {
    for e in events {
        let status = stack.post_event(e).await;
        assert!(status.is_success(), "webhook answered {status}");
    }
}

/// Waits until the mirror holds `n` checkout sessions with this payment status.
pub(super) async fn wait_mirrored(stack: &Stack, payment_status: &str, n: i64) {
    let sql = format!("stripe.checkout_sessions WHERE payment_status = '{payment_status}'");
    crate::support::wait_for(
        Duration::from_secs(60),
        &format!("{n} {payment_status} sessions in the mirror"),
        || async { (stack.db.count(&sql) >= n).then_some(()) },
    )
    .await;
}
