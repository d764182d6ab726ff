//! The payments API against localstripe (payment intents, test cards,
//! refunds): payments taken and refunded, Idempotency-Key end to end,
//! Stripe's refusals passed through, bad input refused before Stripe.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack};

async fn stack_on(ls: &LocalStripe) -> Stack {
    Stack::start(Options {
        stripe_base: ls.base(),
        start_worker: false,
        ..Options::default()
    })
    .await
}

/// A POST with an optional Idempotency-Key: (status, body, replayed).
async fn post(stack: &Stack, path: &str, key: Option<&str>, body: Value) -> (u16, Value, bool) {
    let mut req = stack.api(Method::POST, path).json(&body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let r = req.send().await.unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (r.status().as_u16(), r.json().await.unwrap(), replayed)
}

async fn get(stack: &Stack, path: &str) -> (u16, Value) {
    let r = stack.api(Method::GET, path).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn paid_intent(stack: &Stack, amount: i64) -> String {
    let (status, pi, _) = post(
        stack,
        "/api/payment-intents",
        None,
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
        None,
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
        None,
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
    let (status, rest, _) = post(&stack, "/api/refunds", None, json!({"payment_intent": pi})).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["refund"]["amount"], 3000);
    let (_, view) = get(&stack, &format!("/api/payment-intents/{pi}")).await;
    assert_eq!(view["amount_refunded"], 5000);
    let (status, none, _) = post(&stack, "/api/refunds", None, json!({"payment_intent": pi})).await;
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
        None,
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
    let created: Value = stack
        .api(Method::POST, "/api/customers")
        .json(&json!({"email": "pay@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

/// Checkout sessions: neither localstripe nor stripe-stateful-mock has
/// them, so Stripe here is the fixture-backed fake (`catalog_stripe`).
mod checkout {
    use std::time::Duration;

    use reqwest::Method;
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
        let unsynced: serde_json::Value = stack
            .api(Method::POST, "/api/customers")
            .json(&json!({"email": "new@example.com"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
}

/// Queued refunds: the request and its outbox row, the relay, the command
/// topic and `stripe-commands`, against localstripe. localstripe sends no
/// refund webhooks, so the refund events that move a request's status are
/// signed here from Stripe's example refund.
mod queued {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use reqwest::Method;
    use serde_json::{json, Value};
    use stripe_sync::config::{CommandsWorkerConfig, RelayConfig};
    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;

    use super::{get, paid_intent, post, stack_on};
    use crate::support::fixtures;
    use crate::support::localstripe::LocalStripe;
    use crate::support::stack::Stack;
    use crate::support::wait_for;

    const WAIT: Duration = Duration::from_secs(60);

    /// outbox-relay and stripe-commands, in-process.
    fn start_workers(
        stack: &Stack,
        commands: bool,
    ) -> (CancellationToken, Vec<JoinHandle<anyhow::Result<()>>>) {
        let token = CancellationToken::new();
        let mut handles = vec![tokio::spawn(stripe_sync::relay::run(
            RelayConfig::load(&stack.env).unwrap(),
            token.clone(),
        ))];
        if commands {
            handles.push(tokio::spawn(
                stripe_sync::apps::payments::command_worker::run(
                    CommandsWorkerConfig::load(&stack.env).unwrap(),
                    token.clone(),
                ),
            ));
        }
        (token, handles)
    }

    async fn stop_workers(
        (token, handles): (CancellationToken, Vec<JoinHandle<anyhow::Result<()>>>),
    ) {
        token.cancel();
        for h in handles {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }

    async fn wait_status(stack: &Stack, request_id: &str, status: &str) -> Value {
        wait_for(
            WAIT,
            &format!("refund request {request_id} {status}"),
            || async {
                let (code, r) = get(stack, &format!("/api/refund-requests/{request_id}")).await;
                (code == 200 && r["status"] == status).then_some(r)
            },
        )
        .await
    }

    async fn refunds_at_stripe(ls: &LocalStripe, pi: &str) -> Vec<Value> {
        let list = ls
            .call(
                Method::GET,
                &format!("/v1/refunds?payment_intent={pi}"),
                &[],
            )
            .await;
        list["data"].as_array().unwrap().clone()
    }

    fn refund_event(event_id: &str, created: i64, refund: &Value, status: &str) -> Value {
        let mut object = fixtures::resource("refund");
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
        fixtures::event(
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_refund_is_made_once_and_follows_stripes_webhooks() {
        let ls = LocalStripe::start().await;
        let mut stack = stack_on(&ls).await;
        // stripe-inbound applies the refund webhooks to the mirror.
        stack.start_worker();
        let workers = start_workers(&stack, true);
        let pi = paid_intent(&stack, 6000).await;
        // Part refunded at once, the rest through the queue.
        let (status, now, _) = post(
            &stack,
            "/api/refunds",
            None,
            json!({"payment_intent": pi, "amount": 500}),
        )
        .await;
        assert_eq!(status, 200, "{now}");
        let body = json!({"payment_intent": pi, "amount": 1500, "request_id": "refund-ticket-881"});
        let (status, queued, _) = post(
            &stack,
            "/api/refund-requests",
            Some("ticket-881"),
            body.clone(),
        )
        .await;
        assert_eq!(status, 202, "{queued}");
        assert_eq!(
            queued,
            json!({"request_id": "refund-ticket-881", "status": "queued"})
        );
        let done = wait_status(&stack, "refund-ticket-881", "succeeded").await;
        let refund_id = done["refund_id"].as_str().unwrap().to_owned();
        assert_eq!(
            (done["amount"].as_i64(), done["payment_intent"].as_str()),
            (Some(1500), Some(pi.as_str()))
        );
        let at_stripe: Vec<Value> = refunds_at_stripe(&ls, &pi)
            .await
            .into_iter()
            .filter(|r| r["metadata"]["stripe_sync_request"] == "refund-ticket-881")
            .collect();
        assert_eq!(at_stripe.len(), 1, "one refund for the request");

        // The same request again (a retry without the key): nothing new.
        let (status, again, _) = post(&stack, "/api/refund-requests", None, body).await;
        assert_eq!((status, again["status"].as_str()), (202, Some("succeeded")));
        let (status, err, _) = post(
            &stack,
            "/api/refund-requests",
            None,
            json!({"payment_intent": pi, "amount": 99, "request_id": "refund-ticket-881"}),
        )
        .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (422, Some("request_id_reused"))
        );

        // Stripe reports the refund failed later (the card was closed): the
        // webhook moves the request through the mirror.
        let failed = refund_event(
            "evt_refund_failed_881",
            1_900_000_000,
            &at_stripe[0],
            "failed",
        );
        assert_eq!(stack.post_event(&failed).await, 200);
        let moved = wait_status(&stack, "refund-ticket-881", "failed").await;
        assert_eq!(moved["refund_id"], refund_id.as_str());
        assert!(moved["error"]
            .as_str()
            .unwrap()
            .contains("expired_or_canceled_card"));

        // The rest of the payment, with no amount; then the list.
        let (status, _, _) = post(
            &stack,
            "/api/refund-requests",
            None,
            json!({"payment_intent": pi, "request_id": "refund-rest"}),
        )
        .await;
        assert_eq!(status, 202);
        let rest = wait_status(&stack, "refund-rest", "succeeded").await;
        assert_eq!(rest["amount"], 4000);
        let (status, list) =
            get(&stack, &format!("/api/refund-requests?payment_intent={pi}")).await;
        assert_eq!(status, 200);
        assert_eq!(list["refund_requests"].as_array().unwrap().len(), 2);
        // Asking for more than is left fails the request with the reason.
        let (status, _, _) = post(
            &stack,
            "/api/refund-requests",
            None,
            json!({"payment_intent": pi, "amount": 1, "request_id": "refund-too-much"}),
        )
        .await;
        assert_eq!(status, 202);
        let too_much = wait_status(&stack, "refund-too-much", "failed").await;
        assert!(
            too_much["error"]
                .as_str()
                .unwrap()
                .contains("left to refund"),
            "{too_much}"
        );
        assert_eq!(refunds_at_stripe(&ls, &pi).await.len(), 3);
        let (status, _) = get(&stack, "/api/refund-requests/nope").await;
        assert_eq!(status, 404);
        let (status, _) = get(&stack, "/api/refund-requests?customer=1").await;
        assert_eq!(status, 400);
        stop_workers(workers).await;
        stack.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refund_queued_while_stripe_is_down_is_made_once_it_is_back() {
        let mut ls = LocalStripe::start().await;
        let stack = stack_on(&ls).await;
        let pi = paid_intent(&stack, 3000).await;
        let workers = start_workers(&stack, true);
        ls.stop();
        let (status, queued, _) = post(
            &stack,
            "/api/refund-requests",
            None,
            json!({"payment_intent": pi, "amount": 700}),
        )
        .await;
        assert_eq!(status, 202, "accepted while Stripe is down: {queued}");
        let id = queued["request_id"].as_str().unwrap().to_owned();
        wait_status(&stack, &id, "processing").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, still) = get(&stack, &format!("/api/refund-requests/{id}")).await;
        assert_eq!(
            still["status"], "processing",
            "waits, never fails, while Stripe is away"
        );
        ls.resume().await;
        wait_status(&stack, &id, "succeeded").await;
        assert_eq!(refunds_at_stripe(&ls, &pi).await.len(), 1);
        stop_workers(workers).await;
        stack.stop().await;
    }

    fn spawn_commands(stack: &Stack) -> Child {
        Command::new(env!("CARGO_BIN_EXE_stripe-commands"))
            .env_clear()
            .envs(stack.env.vars())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stripe-commands")
    }

    /// The worker binary is SIGKILLed while it carries out refunds and
    /// started again: every request ends with exactly one refund.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_commands_worker_killed_mid_command_refunds_each_payment_once() {
        let ls = LocalStripe::start().await;
        let stack = stack_on(&ls).await;
        let mut pis = Vec::new();
        for _ in 0..12 {
            pis.push(paid_intent(&stack, 1200).await);
        }
        let relay = start_workers(&stack, false);
        let mut worker = spawn_commands(&stack);
        let mut ids = Vec::new();
        for pi in &pis {
            let (status, queued, _) = post(
                &stack,
                "/api/refund-requests",
                None,
                json!({"payment_intent": pi, "amount": 500}),
            )
            .await;
            assert_eq!(status, 202);
            ids.push(queued["request_id"].as_str().unwrap().to_owned());
        }
        wait_for(WAIT, "the first refunds", || async {
            (stack
                .db
                .count("payments.refund_requests WHERE status = 'succeeded'")
                >= 2)
                .then_some(())
        })
        .await;
        worker.kill().unwrap();
        worker.wait().unwrap();
        let mut worker = spawn_commands(&stack);
        for id in &ids {
            wait_status(&stack, id, "succeeded").await;
        }
        for pi in &pis {
            assert_eq!(
                refunds_at_stripe(&ls, pi).await.len(),
                1,
                "{pi} refunded once"
            );
        }
        worker.kill().unwrap();
        worker.wait().unwrap();
        stop_workers(relay).await;
        stack.stop().await;
    }
}
