//! Credits against localstripe (customers, saved cards, off-session payment
//! intents, `payment_intent.*` webhooks) and the real spine: packages, a
//! card saved, each package bought, a retried key charged once, and the
//! webhook crediting nothing twice. `ledger` covers spends and refunds,
//! `outcomes` declines, authentication and async payments, `races` the
//! webhook winning against the API's answer and a crash in between.

mod keys;
mod ledger;
mod outcomes;
mod races;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::payments::{get, post};
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack, SECRET};
use crate::support::stripe_proxy::CountingProxy;
use crate::support::wait_for;

const WAIT: Duration = Duration::from_secs(60);

/// localstripe behind a counting proxy, the engine with stripe-inbound
/// (webhooks to the mirror) and the outbound pair (customers to Stripe),
/// localstripe's webhooks signed to it.
async fn credits_stack(ls: &mut LocalStripe, proxy: &CountingProxy) -> Stack {
    let stack = Stack::start(Options {
        stripe_base: proxy.base(),
        start_outbound: true,
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    stack
}

/// A customer created through the API: its local id.
async fn local_customer(stack: &Stack, email: &str) -> String {
    let r = stack
        .api(Method::POST, "/api/customers")
        .json(&json!({"email": email, "name": "Credit Buyer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A customer created through the API, once it has its Stripe customer.
async fn synced_customer(stack: &Stack, email: &str) -> String {
    let id = local_customer(stack, email).await;
    stack.wait_sync_status(&id, "synced", WAIT).await;
    id
}

async fn save_card(stack: &Stack, customer: &str, pm: &str) -> (u16, Value) {
    let (status, body, _) = post(
        stack,
        &format!("/api/customers/{customer}/payment-methods"),
        None,
        json!({"payment_method": pm}),
    )
    .await;
    (status, body)
}

async fn buy(stack: &Stack, customer: &str, package: &str, key: &str) -> (u16, Value, bool) {
    post(
        stack,
        &format!("/api/customers/{customer}/credit-purchases"),
        Some(key),
        json!({"package_id": package}),
    )
    .await
}

async fn credits(stack: &Stack, customer: &str) -> Value {
    let (status, body) = get(stack, &format!("/api/customers/{customer}/credits")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Ledger entries of `kind` for the customer.
fn entries(stack: &Stack, customer: &str, kind: &str) -> i64 {
    stack.db.count(&format!(
        "credits.ledger WHERE customer_id = '{customer}' AND kind = '{kind}'"
    ))
}

/// Waits until the mirror holds `n` succeeded payment intents: the
/// `payment_intent.succeeded` webhooks have been applied.
async fn wait_mirrored_successes(stack: &Stack, n: i64) {
    wait_for(WAIT, &format!("{n} succeeded intents mirrored"), || async {
        (stack
            .db
            .count("stripe.payment_intents WHERE status = 'succeeded'")
            >= n)
            .then_some(())
    })
    .await;
}

fn intents_created(proxy: &CountingProxy) -> usize {
    proxy
        .writes()
        .iter()
        .filter(|c| c.path == "/v1/payment_intents")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_listed_and_changed_by_operators() {
    let stack = Stack::start(Options::default()).await;
    let (status, list) = get(&stack, "/api/credit-packages").await;
    assert_eq!(status, 200);
    let seeded: Vec<(&str, &str, i64, i64)> = list["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(
                (p["currency"].as_str(), p["active"].as_bool()),
                (Some("usd"), Some(true))
            );
            (
                p["id"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
                p["price"].as_i64().unwrap(),
                p["credits"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seeded,
        [
            ("package_1", "Starter Pack", 1000, 100),
            ("package_2", "Popular Pack", 2500, 300),
            ("package_3", "Premium Pack", 5000, 700)
        ]
    );
    let create = |body: Value| {
        stack
            .admin(Method::POST, "/api/admin/credit-packages")
            .json(&body)
            .send()
    };
    let r = create(json!({"id": "mega", "name": "Mega Pack", "price": 9900, "currency": "EUR", "credits": 1500}))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let created: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["currency"].as_str(), created["active"].as_bool()),
        (Some("eur"), Some(true))
    );
    let r = create(json!({"id": "mega", "name": "Mega Pack", "price": 9900, "currency": "eur", "credits": 1500}))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let again: Value = r.json().await.unwrap();
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("package_exists"))
    );
    let patch = |id: &str, body: Value| {
        stack
            .admin(Method::PATCH, &format!("/api/admin/credit-packages/{id}"))
            .json(&body)
            .send()
    };
    let r = patch("mega", json!({"credits": 1600, "active": false}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(
        (changed["credits"].as_i64(), changed["active"].as_bool()),
        (Some(1600), Some(false))
    );
    assert_eq!(changed["price"], 9900, "what was not sent is kept");
    let r = patch("nope", json!({"active": true})).await.unwrap();
    assert_eq!(r.status(), 404);
    for (body, field) in [
        (json!({"price": 0}), "price"),
        (json!({"credits": -5}), "credits"),
        (json!({"name": ""}), "name"),
        (json!({}), "body"),
    ] {
        let r = patch("mega", body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{body}");
    }
    let r = patch("mega", json!({"currency": "usd"})).await.unwrap();
    assert_eq!(r.status(), 400, "currency is fixed once sold");
    let (_, doc) = get(&stack, "/api/openapi.json").await;
    for path in [
        "/api/credit-packages",
        "/api/customers/{id}/credit-purchases",
        "/api/customers/{id}/credit-spends",
        "/api/admin/credit-packages",
        "/api/admin/credit-packages/{id}",
        "/api/admin/customers/{id}/credit-adjustments",
        "/api/customers/{id}/credits",
        "/api/customers/{id}/payment-methods",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    stack.stop().await;
}

/// The main path: a customer created through the API and synced,
/// a card saved, each package bought (balance 1,100), a retried key
/// charged and credited once, the webhooks after the answers crediting
/// nothing more, and a later price change leaving past purchases alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_card_buys_each_package_once_per_key() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let customer = synced_customer(&stack, "buyer@example.com").await;

    let (status, none, _) = buy(&stack, &customer, "package_1", "no-card-yet").await;
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (400, Some("no_payment_method")),
        "{none}"
    );
    let (status, declined) = save_card(&stack, &customer, "pm_card_visa_chargeDeclined").await;
    assert_eq!(
        (status, declined["error"]["code"].as_str()),
        (402, Some("card_declined")),
        "{declined}"
    );
    let (status, card) = save_card(&stack, &customer, "pm_card_visa").await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["default"], true);
    assert_eq!(
        (
            card["card"]["brand"].as_str(),
            card["card"]["last4"].as_str()
        ),
        (Some("visa"), Some("4242"))
    );
    assert_eq!(card["card"]["exp_year"], 2030);
    let (status, cards) = get(
        &stack,
        &format!("/api/customers/{customer}/payment-methods"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        cards["payment_methods"].as_array().unwrap(),
        std::slice::from_ref(&card)
    );

    let mut answers = Vec::new();
    for (package, credits_added, balance) in [
        ("package_1", 100, 100),
        ("package_2", 300, 400),
        ("package_3", 700, 1100),
    ] {
        let (status, bought, replayed) =
            buy(&stack, &customer, package, &format!("buy-{package}")).await;
        assert_eq!((status, replayed), (201, false), "{bought}");
        assert_eq!(bought["status"], "succeeded");
        assert_eq!(
            (bought["credits_added"].as_i64(), bought["balance"].as_i64()),
            (Some(credits_added), Some(balance))
        );
        answers.push(bought);
    }
    // The same key again: the first answer, no second payment.
    let (status, again, replayed) = buy(&stack, &customer, "package_1", "buy-package_1").await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, answers[0]);
    let (status, reused, _) = buy(&stack, &customer, "package_2", "buy-package_1").await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(intents_created(&proxy), 3, "{:?}", proxy.writes());
    let intent = proxy
        .writes()
        .into_iter()
        .find(|c| c.path == "/v1/payment_intents")
        .unwrap();
    assert!(intent
        .idempotency_key
        .unwrap()
        .starts_with("stripe-sync-api-"));

    // Each payment_intent.succeeded reaches the mirror and credits nothing more.
    wait_mirrored_successes(&stack, 3).await;
    let history = credits(&stack, &customer).await;
    assert_eq!(history["balance"], 1100);
    assert_eq!(entries(&stack, &customer, "purchase"), 3);
    let kinds: Vec<(&str, &str, i64, i64)> = history["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap(),
                t["package_id"].as_str().unwrap(),
                t["credits"].as_i64().unwrap(),
                t["amount_paid"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("purchase", "package_3", 700, 5000),
            ("purchase", "package_2", 300, 2500),
            ("purchase", "package_1", 100, 1000)
        ],
        "newest first"
    );
    assert!(history["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "succeeded"
            && t["payment_intent"].as_str().unwrap().starts_with("pi_")));

    // A later price and credit change does not rewrite what was sold.
    let r = stack
        .admin(Method::PATCH, "/api/admin/credit-packages/package_1")
        .json(&json!({"price": 1200, "credits": 90}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let oldest = &credits(&stack, &customer).await["transactions"][2];
    assert_eq!(
        (oldest["amount_paid"].as_i64(), oldest["credits"].as_i64()),
        (Some(1000), Some(100))
    );

    // Refused before Stripe is asked.
    let r = stack
        .admin(Method::PATCH, "/api/admin/credit-packages/package_2")
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (package, key) in [("package_2", "inactive"), ("package_9", "unknown")] {
        let (status, e, _) = buy(&stack, &customer, package, key).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("invalid_package")),
            "{e}"
        );
    }
    let (status, e, _) = buy(
        &stack,
        "0b7e4c1e-8f7e-4a51-9c53-55f0c0ffee00",
        "package_1",
        "nobody",
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("customer_not_found"))
    );
    let (status, e, _) = post(
        &stack,
        &format!("/api/customers/{customer}/credit-purchases"),
        None,
        json!({"package_id": "package_1"}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("idempotency_key_required"))
    );
    assert_eq!(intents_created(&proxy), 3);
    assert_eq!(credits(&stack, &customer).await["balance"], 1100);
    stack.stop().await;
}

/// A customer with no Stripe customer yet cannot save a card or buy; the
/// answer says to retry later, so it is not saved under the key: once the
/// customer is synced, the same key buys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_customer_is_told_to_wait_and_the_retry_buys() {
    let mut ls = LocalStripe::start().await;
    // No outbound workers yet: the customer does not reach Stripe.
    let mut stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    let id = local_customer(&stack, "later@example.com").await;
    let (status, e) = save_card(&stack, &id, "pm_card_visa").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("customer_not_synced"))
    );
    let (status, e, _) = buy(&stack, &id, "package_1", "early").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("customer_not_synced"))
    );
    let (status, e) = save_card(&stack, &id, "card_123").await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (400, Some("payment_method"))
    );
    assert_eq!(credits(&stack, &id).await["transactions"], json!([]));

    // "Retry once it is synced": the retry with the same key is not
    // answered with the old refusal.
    stack.start_outbound();
    stack.wait_sync_status(&id, "synced", WAIT).await;
    assert_eq!(save_card(&stack, &id, "pm_card_visa").await.0, 200);
    let (status, bought, replayed) = buy(&stack, &id, "package_1", "early").await;
    assert_eq!((status, replayed), (201, false), "{bought}");
    assert_eq!(bought["balance"], 100);
    stack.stop().await;
}
