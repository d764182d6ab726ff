//! Keys under retries: an `Idempotency-Key` belongs to one customer and one
//! route for good, so a reuse never answers with another customer's
//! purchase; a refusal that means "later" is not replayed; a purchase
//! Stripe still holds under its key is not failed, and its retry sends
//! Stripe the same request; operators' powers need the admin token.

use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    buy, credits, credits_stack, entries, intents_created, local_customer, save_card,
    synced_customer, WAIT,
};
use crate::payments::post;
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack, ADMIN_TOKEN, API_TOKEN};
use crate::support::stripe_proxy::{CountingProxy, Scripted};
use crate::support::wait_for;

fn sql(stack: &Stack, statement: &str) {
    diesel::sql_query(statement)
        .execute(&mut stack.db.conn())
        .unwrap();
}

async fn spend(stack: &Stack, customer: &str, credits: i64, key: &str) -> (u16, Value, bool) {
    post(
        stack,
        &format!("/api/customers/{customer}/credit-spends"),
        Some(key),
        json!({"credits": credits, "reason": "a snack"}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_one_customers_at_any_age() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let alice = synced_customer(&stack, "alice@example.com").await;
    let bob = synced_customer(&stack, "bob@example.com").await;
    for customer in [&alice, &bob] {
        assert_eq!(save_card(&stack, customer, "pm_card_visa").await.0, 200);
    }
    let (status, bought, _) = buy(&stack, &alice, "package_3", "gift").await;
    assert_eq!(status, 201, "{bought}");

    // Three days on (past Stripe's own 24 hours and our old 48), Bob's app
    // sends the same key. It is Alice's: refused, and nothing of hers shown.
    sql(
        &stack,
        "UPDATE payments.idempotency_keys \
         SET created_at = now() - interval '3 days', started_at = now() - interval '3 days'",
    );
    let (status, reused, _) = buy(&stack, &bob, "package_3", "gift").await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{reused}"
    );
    assert!(!reused
        .to_string()
        .contains(bought["purchase_id"].as_str().unwrap()));
    assert_eq!(credits(&stack, &bob).await["balance"], 0);

    // Even with the key's row gone (an operator pruned it), the purchase
    // keeps its key: Bob, or Alice with another package, are refused;
    // Alice's own retry is answered from her purchase, charging nothing.
    sql(&stack, "DELETE FROM payments.idempotency_keys");
    let (status, reused, _) = buy(&stack, &bob, "package_3", "gift").await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{reused}"
    );
    let (status, reused, _) = buy(&stack, &alice, "package_1", "gift").await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{reused}"
    );
    let (status, again, _) = buy(&stack, &alice, "package_3", "gift").await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        (&again["purchase_id"], again["balance"].as_i64()),
        (&bought["purchase_id"], Some(700))
    );
    assert_eq!(credits(&stack, &bob).await["balance"], 0);
    assert_eq!(intents_created(&proxy), 1, "{:?}", proxy.writes());

    // A spend's key, the same way: its entry is kept for good, and another
    // amount under it is another request.
    let (status, first, _) = spend(&stack, &alice, 5, "snack").await;
    assert_eq!((status, first["balance"].as_i64()), (201, Some(695)));
    sql(&stack, "DELETE FROM payments.idempotency_keys");
    let (status, reused, _) = spend(&stack, &alice, 6, "snack").await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{reused}"
    );
    assert_eq!(credits(&stack, &alice).await["balance"], 695);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_means_later_is_not_replayed() {
    let stack = Stack::start(Options::default()).await;
    let customer = local_customer(&stack, "saver@example.com").await;
    let (status, short, _) = spend(&stack, &customer, 50, "later").await;
    assert_eq!(
        (status, short["error"]["code"].as_str()),
        (409, Some("insufficient_credits")),
        "{short}"
    );
    // Credits arrive (a purchase credited by the webhook, say).
    sql(
        &stack,
        &format!(
            "SELECT credits.post_entry('{customer}', 'adjustment', 80, 'test-grant', NULL, 'grant')"
        ),
    );
    let (status, spent, replayed) = spend(&stack, &customer, 50, "later").await;
    assert_eq!((status, replayed), (201, false), "{spent}");
    assert_eq!(spent["balance"], 30);
    // A final answer is replayed, and the key stays bound to its request.
    let (status, again, replayed) = spend(&stack, &customer, 50, "later").await;
    assert_eq!((status, replayed, &again), (201, true, &spent));
    let (status, reused, _) = spend(&stack, &customer, 40, "later").await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    stack.stop().await;
}

/// Real Stripe answers a key whose first request it still holds with 409
/// `idempotency_error` (and a key reused with other parameters with 400);
/// localstripe ignores keys, so the proxy answers for it. Neither means
/// the payment failed: the first attempt may have charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_stripe_still_holds_is_not_failed() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let customer = synced_customer(&stack, "patient@example.com").await;
    let (_, visa) = save_card(&stack, &customer, "pm_card_visa").await;
    let visa = visa["payment_method"].as_str().unwrap().to_owned();

    // Stripe charges, but its answer is lost (a 500 after the work).
    proxy.answer_next(
        "POST",
        "/v1/payment_intents",
        Scripted {
            forward: true,
            status: 500,
            body: json!({"error": {"type": "api_error", "message": "oops"}}),
        },
    );
    let (status, lost, _) = buy(&stack, &customer, "package_2", "slow").await;
    assert_eq!(
        (status, lost["error"]["code"].as_str()),
        (503, Some("stripe_unavailable"))
    );
    // The customer's default card changes meanwhile (localstripe makes a
    // new payment method of each test card it is given).
    let (status, second) = save_card(&stack, &customer, "pm_card_visa").await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["payment_method"], visa.as_str(), "another card");

    proxy.answer_next(
        "POST",
        "/v1/payment_intents",
        Scripted {
            forward: false,
            status: 409,
            body: json!({"error": {"type": "idempotency_error", "code": "idempotency_key_in_use",
                                   "message": "There is currently another in-progress request using this Idempotent Key."}}),
        },
    );
    let (status, busy, replayed) = buy(&stack, &customer, "package_2", "slow").await;
    assert_eq!(
        (status, busy["error"]["code"].as_str(), replayed),
        (409, Some("purchase_in_progress"), false),
        "{busy}"
    );
    assert_eq!(
        stack.db.count(&format!(
            "credits.purchases WHERE customer_id = '{customer}' AND status = 'processing'"
        )),
        1,
        "still processing, not failed"
    );
    // The retry sent Stripe the first request again: the same key and the
    // card the purchase started with, which real Stripe replays.
    let attempts: Vec<_> = proxy
        .writes()
        .into_iter()
        .filter(|c| c.path == "/v1/payment_intents")
        .collect();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].idempotency_key, attempts[1].idempotency_key);
    for attempt in &attempts {
        assert!(
            attempt.body.contains(&format!("payment_method={visa}")),
            "{}",
            attempt.body
        );
    }

    // The first attempt's payment_intent.succeeded credits the purchase;
    // the client's next retry is answered with it.
    wait_for(WAIT, "the purchase credited by the webhook", || async {
        (stack.db.count(&format!(
            "credits.purchases WHERE customer_id = '{customer}' AND status = 'succeeded'"
        )) == 1)
            .then_some(())
    })
    .await;
    let (status, bought, _) = buy(&stack, &customer, "package_2", "slow").await;
    assert_eq!(status, 201, "{bought}");
    assert_eq!(bought["balance"], 300);
    assert_eq!(entries(&stack, &customer, "purchase"), 1);
    stack.stop().await;
}

/// Each operator route, old path and new, with each token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_powers_need_the_admin_token() {
    let stack = Stack::start(Options::default()).await;
    let customer = local_customer(&stack, "ops@example.com").await;
    let send = |token: Option<&str>, method: Method, path: String, body: Value, key: &str| {
        let mut req = stack
            .http
            .request(method, format!("http://{}{path}", stack.addr))
            .header("Idempotency-Key", key)
            .json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let routes = [
        (
            Method::POST,
            "/api/credit-packages".to_owned(),
            "/api/admin/credit-packages".to_owned(),
            json!({"id": "ops", "name": "Ops Pack", "price": 100, "currency": "usd", "credits": 10}),
            201,
        ),
        (
            Method::PATCH,
            "/api/credit-packages/ops".to_owned(),
            "/api/admin/credit-packages/ops".to_owned(),
            json!({"credits": 12}),
            200,
        ),
        (
            Method::POST,
            format!("/api/customers/{customer}/credit-adjustments"),
            format!("/api/admin/customers/{customer}/credit-adjustments"),
            json!({"credits": 1000, "reason": "minted"}),
            201,
        ),
    ];
    for (method, old, new, body, done) in routes {
        let (status, e) = send(
            Some(API_TOKEN),
            method.clone(),
            old.clone(),
            body.clone(),
            "k1",
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (403, Some("admin_route")),
            "{method} {old}: {e}"
        );
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/admin/"));
        let (status, e) = send(
            Some(ADMIN_TOKEN),
            method.clone(),
            old.clone(),
            body.clone(),
            "k1",
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{old}"
        );
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/admin/"));
        let (status, e) = send(
            Some(API_TOKEN),
            method.clone(),
            new.clone(),
            body.clone(),
            "k1",
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{new}"
        );
        let (status, _) = send(None, method.clone(), new.clone(), body.clone(), "k1").await;
        assert_eq!(status, 401, "{new}");
        let (status, ok) = send(Some(ADMIN_TOKEN), method.clone(), new.clone(), body, "k1").await;
        assert_eq!(status, done, "{method} {new}: {ok}");
    }
    // The application's routes stay the API token's.
    let (status, e) = send(
        Some(ADMIN_TOKEN),
        Method::GET,
        "/api/credit-packages".into(),
        Value::Null,
        "k2",
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, list) = send(
        Some(API_TOKEN),
        Method::GET,
        "/api/credit-packages".into(),
        Value::Null,
        "k2",
    )
    .await;
    assert_eq!(status, 200);
    assert!(list["packages"].to_string().contains("Ops Pack"));
    assert_eq!(
        credits(&stack, &customer).await["balance"],
        1000,
        "minted once"
    );
    stack.stop().await;
}

/// Stripe refusing our API key (a rotated STRIPE_API_KEY) says nothing of
/// the payment: the purchase stays processing and the client is told to
/// retry, and the retry, once the key works, buys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_not_failed_by_our_own_bad_key() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let customer = synced_customer(&stack, "rotated@example.com").await;
    assert_eq!(save_card(&stack, &customer, "pm_card_visa").await.0, 200);
    proxy.answer_next(
        "POST",
        "/v1/payment_intents",
        Scripted {
            forward: false,
            status: 401,
            body: json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}),
        },
    );
    let (status, e, _) = buy(&stack, &customer, "package_1", "rotated").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (503, Some("stripe_unavailable")),
        "{e}"
    );
    assert_eq!(
        stack.db.count(&format!(
            "credits.purchases WHERE customer_id = '{customer}' AND status = 'processing'"
        )),
        1
    );
    let (status, bought, replayed) = buy(&stack, &customer, "package_1", "rotated").await;
    assert_eq!((status, replayed), (201, false), "{bought}");
    assert_eq!(bought["balance"], 100);
    stack.stop().await;
}
