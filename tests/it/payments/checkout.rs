//! Checkout sessions: neither localstripe nor stripe-stateful-mock has
//! them, so Stripe here is the fixture-backed fake (`catalog_stripe`).

use std::time::Duration;

use serde_json::json;

use super::{get, post};
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::fixtures::customer_event;
use crate::support::stack::{Options, Stack};
use crate::support::wait_for;

fn body(customer_id: Option<&str>) -> serde_json::Value {
    let mut b = json!({
        "mode": "payment",
        "success_url": "https://shop.example/thanks",
        "cancel_url": "https://shop.example/cart",
        "line_items": [
            {"price": "price_1Tee", "quantity": 2},
            {"price_data": {"currency": "usd", "unit_amount": 900, "product_data": {"name": "Mug"}}, "quantity": 1}
        ],
        "metadata": {"cart": "c-77"}
    });
    if let Some(id) = customer_id {
        b["customer_id"] = json!(id);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_created_read_from_stripe_once_then_from_the_mirror() {
    let fake = CatalogStripe::start();
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        ..Options::default()
    })
    .await;
    let (status, created, _) = post(
        &stack,
        "/api/checkout-sessions",
        Some("cart-c-77"),
        body(None),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "open");
    assert!(created["url"].as_str().unwrap().starts_with("https://"));
    assert!(created["expires_at"].as_i64().is_some());
    let call = fake
        .calls()
        .into_iter()
        .find(|c| c.path == "/v1/checkout/sessions")
        .unwrap();
    let field = |k: &str| {
        call.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("line_items[0][price]").as_deref(), Some("price_1Tee"));
    assert_eq!(field("line_items[0][quantity]").as_deref(), Some("2"));
    assert_eq!(
        field("line_items[1][price_data][product_data][name]").as_deref(),
        Some("Mug")
    );
    assert_eq!(field("metadata[cart]").as_deref(), Some("c-77"));
    assert_eq!(field("customer"), None);
    assert!(call
        .idempotency_key
        .unwrap()
        .starts_with("stripe-sync-api-"));
    // The same key replays; Stripe is not asked again.
    let (status, again, replayed) = post(
        &stack,
        "/api/checkout-sessions",
        Some("cart-c-77"),
        body(None),
    )
    .await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, created);

    // Not in the mirror yet: read from Stripe, and mirrored from there.
    let (status, view) = get(&stack, &format!("/api/checkout-sessions/{id}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (view["status"].as_str(), view["payment_status"].as_str()),
        (Some("open"), Some("unpaid"))
    );
    assert_eq!(view["metadata"]["cart"], "c-77");
    let sql = format!("stripe.checkout_sessions WHERE id = '{id}'");
    wait_for(
        Duration::from_secs(60),
        "the session in the mirror",
        || async { (stack.db.count(&sql) == 1).then_some(()) },
    )
    .await;
    let reads = |calls: Vec<crate::support::catalog_stripe::Call>| {
        calls
            .iter()
            .filter(|c| c.path == format!("/v1/checkout/sessions/{id}"))
            .count()
    };
    let before = reads(fake.calls());
    let (status, _) = get(&stack, &format!("/api/checkout-sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(reads(fake.calls()), before, "served from the mirror");
    let (status, missing) = get(&stack, "/api/checkout-sessions/cs_test_nothere").await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_customer_goes_to_stripe_as_its_cus_id_once_synced() {
    let fake = CatalogStripe::start();
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        ..Options::default()
    })
    .await;
    // A customer the mirror learned from Stripe: linked in id_map.
    let event = customer_event(
        "evt_chk_cus",
        "customer.created",
        1_000,
        "cus_Checkout1",
        json!({}),
    );
    assert_eq!(stack.post_event(&event).await, 200);
    let local = wait_for(Duration::from_secs(60), "the linked customer", || async {
        stack
            .customer("cus_Checkout1")
            .map(|(c, _)| c.id.to_string())
    })
    .await;
    let (status, created, _) =
        post(&stack, "/api/checkout-sessions", None, body(Some(&local))).await;
    assert_eq!(status, 201, "{created}");
    let call = fake
        .calls()
        .into_iter()
        .rfind(|c| c.path == "/v1/checkout/sessions")
        .unwrap();
    assert!(call
        .form
        .contains(&("customer".into(), "cus_Checkout1".into())));

    // A local customer with no Stripe counterpart yet.
    let (_, unsynced, _) = post(
        &stack,
        "/api/customers",
        None,
        json!({"email": "new@example.com"}),
    )
    .await;
    let (status, err, _) = post(
        &stack,
        "/api/checkout-sessions",
        None,
        body(unsynced["id"].as_str()),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("customer_not_synced"))
    );

    for (change, field) in [
        (json!({"mode": "setup"}), "mode"),
        (json!({"success_url": "/thanks"}), "success_url"),
        (json!({"cancel_url": "ftp://shop.example"}), "cancel_url"),
        (json!({"line_items": []}), "line_items"),
        (
            json!({"line_items": [{"price": "prod_1", "quantity": 1}]}),
            "line_items[0]",
        ),
        (json!({"line_items": [{"quantity": 1}]}), "line_items[0]"),
        (
            json!({"line_items": [{"price": "price_1", "quantity": 0}]}),
            "line_items[0]",
        ),
    ] {
        let mut b = body(None);
        for (k, v) in change.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, err, _) = post(&stack, "/api/checkout-sessions", None, b).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(field)),
            "{change}: {err}"
        );
    }
    stack.stop().await;
}
