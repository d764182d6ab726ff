//! The payments API against localstripe (payment intents, test cards,
//! refunds): payments taken and refunded, Idempotency-Key end to end,
//! Stripe's refusals passed through, bad input refused before Stripe.
//! `checkout` covers hosted checkout sessions, `queued` the refunds queued
//! through Kafka.

mod checkout;
mod queued;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack};
use crate::support::stripe_proxy::{CountingProxy, Scripted};

async fn stack_on(ls: &LocalStripe) -> Stack {
    Stack::start(Options {
        stripe_base: ls.base(),
        start_worker: false,
        ..Options::default()
    })
    .await
}

/// A POST with an optional Idempotency-Key: (status, body, replayed).
pub(crate) async fn post(
    stack: &Stack,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, Value, bool) {
    let mut req = stack.api(Method::POST, path).json(&body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let r = req.send().await.unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), r.json().await.unwrap(), replayed)
}

pub(crate) async fn get(stack: &Stack, path: &str) -> (u16, Value) {
    let r = stack.api(Method::GET, path).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn paid_intent(stack: &Stack, amount: i64) -> String {
    let key = format!("pay-{}", uuid::Uuid::new_v4());
    let (status, pi, _) = post(
        stack,
        "/api/payment-intents",
        Some(&key),
        json!({"amount": amount, "currency": "usd", "payment_method": "pm_card_visa",
               "confirm": true, "metadata": {"order": "42"}}),
    )
    .await;
    assert_eq!(status, 201, "{pi}");
    assert_eq!(pi["status"], "succeeded", "{pi}");
    assert!(pi["client_secret"].as_str().unwrap().contains("_secret_"));
    pi["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_taken_then_refunded_in_part_and_for_the_rest() {
    let ls = LocalStripe::start().await;
    let stack = stack_on(&ls).await;
    let pi = paid_intent(&stack, 5000).await;
    let (status, view) = get(&stack, &format!("/api/payment-intents/{pi}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            view["amount_received"].as_i64(),
            view["amount_refunded"].as_i64()
        ),
        (Some(5000), Some(0))
    );
    assert_eq!(view["metadata"]["order"], "42");

    let (status, part, _) = post(
        &stack,
        "/api/refunds",
        Some("refund-part"),
        json!({"payment_intent": pi, "amount": 2000}),
    )
    .await;
    assert_eq!(status, 200, "{part}");
    assert_eq!(part["refund"]["amount"], 2000);
    assert!(part["refund"]["id"].as_str().unwrap().starts_with("re_"));
    // More than is left is refused before Stripe is asked.
    let (status, over, _) = post(
        &stack,
        "/api/refunds",
        Some("refund-over"),
        json!({"payment_intent": pi, "amount": 3001}),
    )
    .await;
    assert_eq!(status, 400, "{over}");
    assert_eq!(
        (
            over["error"]["code"].as_str(),
            over["error"]["field"].as_str()
        ),
        (Some("amount_too_large"), Some("amount"))
    );
    // No amount: the rest.
    let (status, rest, _) = post(
        &stack,
        "/api/refunds",
        Some("refund-rest"),
        json!({"payment_intent": pi}),
    )
    .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["refund"]["amount"], 3000);
    let (_, view) = get(&stack, &format!("/api/payment-intents/{pi}")).await;
    assert_eq!(view["amount_refunded"], 5000);
    let (status, none, _) = post(
        &stack,
        "/api/refunds",
        Some("refund-none-left"),
        json!({"payment_intent": pi}),
    )
    .await;
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (400, Some("charge_already_refunded"))
    );
    let refunds = ls
        .call(
            Method::GET,
            &format!("/v1/refunds?payment_intent={pi}"),
            &[],
        )
        .await;
    assert_eq!(refunds["data"].as_array().unwrap().len(), 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_is_one_refund() {
    let ls = LocalStripe::start().await;
    let stack = stack_on(&ls).await;
    let pi = paid_intent(&stack, 4000).await;
    let body = json!({"payment_intent": pi, "amount": 1000});
    let (s1, first, replayed1) =
        post(&stack, "/api/refunds", Some("refund-order-7"), body.clone()).await;
    let (s2, second, replayed2) = post(&stack, "/api/refunds", Some("refund-order-7"), body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second, "the retry replays the first answer");
    assert!(!replayed1 && replayed2);
    let refunds = ls
        .call(
            Method::GET,
            &format!("/v1/refunds?payment_intent={pi}"),
            &[],
        )
        .await;
    assert_eq!(
        refunds["data"].as_array().unwrap().len(),
        1,
        "one refund at Stripe"
    );

    // The same key for another request is refused, on any route.
    let (status, reused, _) = post(
        &stack,
        "/api/refunds",
        Some("refund-order-7"),
        json!({"payment_intent": pi, "amount": 999}),
    )
    .await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let (status, _, _) = post(
        &stack,
        "/api/payment-intents",
        Some("refund-order-7"),
        json!({"amount": 1, "currency": "usd"}),
    )
    .await;
    assert_eq!(status, 422);
    let long = "k".repeat(256);
    let (status, err, _) = post(
        &stack,
        "/api/refunds",
        Some(&long),
        json!({"payment_intent": pi}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_a_402_with_stripes_code_and_replays_as_such() {
    let ls = LocalStripe::start().await;
    let stack = stack_on(&ls).await;
    let body = json!({"amount": 1500, "currency": "eur", "payment_method": "pm_card_chargeCustomerFail", "confirm": true});
    let (status, declined, _) =
        post(&stack, "/api/payment-intents", Some("pay-9"), body.clone()).await;
    assert_eq!(status, 402, "{declined}");
    assert_eq!(declined["error"]["code"], "card_declined");
    let (status, again, replayed) = post(&stack, "/api/payment-intents", Some("pay-9"), body).await;
    assert_eq!((status, replayed), (402, true));
    assert_eq!(again, declined);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_stripe_with_the_field_named() {
    let ls = LocalStripe::start().await;
    let stack = stack_on(&ls).await;
    for (body, field) in [
        (json!({"amount": 0, "currency": "usd"}), "amount"),
        (json!({"amount": 100_000_000, "currency": "usd"}), "amount"),
        (json!({"amount": 100, "currency": "xyz"}), "currency"),
        (
            json!({"amount": 100, "currency": "usd", "payment_method": "card 4242"}),
            "payment_method",
        ),
    ] {
        let (status, err, _) = post(&stack, "/api/payment-intents", None, body.clone()).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {err}"
        );
    }
    let (status, err, _) = post(
        &stack,
        "/api/payment-intents",
        None,
        json!({"amount": 1.5, "currency": "usd"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let (status, err, _) = post(
        &stack,
        "/api/payment-intents",
        None,
        json!({"amount": 1, "currency": "usd", "capture": true}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("unknown_field"))
    );
    for (body, field) in [
        (json!({"payment_intent": "ch_123"}), "payment_intent"),
        (json!({"payment_intent": "pi_123", "amount": -5}), "amount"),
        (
            json!({"payment_intent": "pi_123", "reason": "changed_mind"}),
            "reason",
        ),
    ] {
        let (status, err, _) = post(&stack, "/api/refunds", None, body.clone()).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {err}"
        );
    }
    let (status, err, _) = post(
        &stack,
        "/api/refunds",
        Some("refund-missing"),
        json!({"payment_intent": "pi_doesnotexist"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("resource_missing")),
        "{err}"
    );

    // A local customer: unknown, then known but not in Stripe yet.
    let unknown = uuid::Uuid::new_v4();
    let (status, err, _) = post(
        &stack,
        "/api/payment-intents",
        None,
        json!({"amount": 100, "currency": "usd", "customer_id": unknown}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("customer_not_found"))
    );
    let (_, created, _) = post(
        &stack,
        "/api/customers",
        None,
        json!({"email": "pay@example.com"}),
    )
    .await;
    let (status, err, _) = post(
        &stack,
        "/api/payment-intents",
        None,
        json!({"amount": 100, "currency": "usd", "customer_id": created["id"]}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("customer_not_synced")),
        "{err}"
    );
    stack.stop().await;
}

/// A retry after a timeout must not charge or refund twice: the routes
/// that move money refuse a request without a key, before Stripe is asked.
/// A payment intent that does not confirm moves nothing and may go without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moving_posts_require_a_key() {
    let ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = Stack::start(Options {
        stripe_base: proxy.base(),
        start_worker: false,
        ..Options::default()
    })
    .await;
    let pi = paid_intent(&stack, 1200).await;
    let writes = proxy.writes().len();
    for (path, body) in [
        (
            "/api/payment-intents",
            json!({"amount": 700, "currency": "usd", "payment_method": "pm_card_visa", "confirm": true}),
        ),
        ("/api/refunds", json!({"payment_intent": pi})),
        ("/api/refund-requests", json!({"payment_intent": pi})),
    ] {
        let (status, err, _) = post(&stack, path, None, body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("idempotency_key_required")),
            "{path}: {err}"
        );
    }
    assert_eq!(proxy.writes().len(), writes, "nothing reached Stripe");
    assert_eq!(stack.db.count("payments.refund_requests"), 0);
    let (status, open, _) = post(
        &stack,
        "/api/payment-intents",
        None,
        json!({"amount": 700, "currency": "usd"}),
    )
    .await;
    assert_eq!(
        (status, open["status"].as_str()),
        (201, Some("requires_payment_method")),
        "{open}"
    );
    let (_, doc) = get(&stack, "/api/openapi.json").await;
    for path in [
        "/api/payment-intents",
        "/api/refunds",
        "/api/refund-requests",
    ] {
        let key = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path} documents its key"));
        assert_eq!(key["required"], path != "/api/payment-intents", "{path}");
    }
    stack.stop().await;
}

/// A payment for a customer not in Stripe yet is refused with "retry once
/// it is synced"; that answer is not saved, so the retry with the same key
/// pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_refused_until_the_customer_is_synced_is_paid_on_retry() {
    let ls = LocalStripe::start().await;
    let mut stack = stack_on(&ls).await;
    let (_, created, _) = post(
        &stack,
        "/api/customers",
        None,
        json!({"email": "soon@example.com"}),
    )
    .await;
    let customer = created["id"].as_str().unwrap().to_owned();
    let body = json!({"amount": 900, "currency": "usd", "customer_id": customer,
                      "payment_method": "pm_card_visa", "confirm": true});
    let (status, err, _) = post(
        &stack,
        "/api/payment-intents",
        Some("pay-soon"),
        body.clone(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("customer_not_synced")),
        "{err}"
    );
    stack.start_outbound();
    stack
        .wait_sync_status(&customer, "synced", std::time::Duration::from_secs(60))
        .await;
    let (status, paid, replayed) = post(
        &stack,
        "/api/payment-intents",
        Some("pay-soon"),
        body.clone(),
    )
    .await;
    assert_eq!((status, replayed), (201, false), "{paid}");
    assert_eq!(paid["status"], "succeeded");
    let (status, again, replayed) =
        post(&stack, "/api/payment-intents", Some("pay-soon"), body).await;
    assert_eq!((status, replayed, &again), (201, true, &paid));
    stack.stop().await;
}

/// Stripe refunds the rest of a payment but its answer is lost (a 500
/// after the work). The retry with the same key finds that refund by the
/// key in its metadata and answers with it, instead of checking afresh and
/// answering "already refunded" (nor refunding again where Stripe, unlike
/// localstripe, would not replay the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_answer_was_lost_is_answered_on_retry() {
    let ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = Stack::start(Options {
        stripe_base: proxy.base(),
        start_worker: false,
        ..Options::default()
    })
    .await;
    let pi = paid_intent(&stack, 2200).await;
    proxy.answer_next(
        "POST",
        "/v1/refunds",
        Scripted {
            forward: true,
            status: 500,
            body: json!({"error": {"type": "api_error", "message": "lost"}}),
        },
    );
    let body = json!({"payment_intent": pi});
    let (status, lost, _) = post(&stack, "/api/refunds", Some("refund-all"), body.clone()).await;
    assert_eq!(
        (status, lost["error"]["code"].as_str()),
        (503, Some("stripe_unavailable"))
    );
    let (status, done, replayed) = post(&stack, "/api/refunds", Some("refund-all"), body).await;
    assert_eq!((status, replayed), (200, false), "{done}");
    assert_eq!(done["refund"]["amount"], 2200);
    let refunds = ls
        .call(
            Method::GET,
            &format!("/v1/refunds?payment_intent={pi}"),
            &[],
        )
        .await;
    let refunds = refunds["data"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "one refund at Stripe");
    assert_eq!(refunds[0]["id"], done["refund"]["id"]);
    stack.stop().await;
}

/// Stripe unreachable: 503, and the key keeps no answer, so the client's
/// retry with the same key does the work once Stripe is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_down_is_a_503_and_the_same_key_works_once_it_is_back() {
    let mut ls = LocalStripe::start().await;
    let stack = stack_on(&ls).await;
    let pi = paid_intent(&stack, 2500).await;
    ls.stop();
    let body = json!({"payment_intent": pi, "amount": 500});
    let (status, err, _) = post(
        &stack,
        "/api/refunds",
        Some("refund-when-down"),
        body.clone(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (503, Some("stripe_unavailable")),
        "{err}"
    );
    ls.resume().await;
    let (status, done, replayed) =
        post(&stack, "/api/refunds", Some("refund-when-down"), body).await;
    assert_eq!((status, replayed), (200, false), "{done}");
    let refunds = ls
        .call(
            Method::GET,
            &format!("/v1/refunds?payment_intent={pi}"),
            &[],
        )
        .await;
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1);
    stack.stop().await;
}
