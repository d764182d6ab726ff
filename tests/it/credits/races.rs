//! Two paths learn of one payment's success: the API's answer from Stripe
//! and the `payment_intent.succeeded` webhook through the spine. Here the
//! webhook wins while Stripe's answer is held back, and then `serve` dies
//! (SIGKILL) between Stripe's success and its own commit. Either way the
//! purchase is credited once. The held answer is the counting proxy's
//! doing: Stripe (localstripe) has charged, the engine does not know yet.

use super::{
    buy, credits, credits_stack, entries, intents_created, save_card, synced_customer, WAIT,
};
use crate::support::localstripe::LocalStripe;
use crate::support::stack::Stack;
use crate::support::stripe_proxy::CountingProxy;
use crate::support::{free_port, spawn_binary, wait_for};

/// Waits until the customer's one purchase is credited: by the mirror's
/// trigger, since the API's answer is held.
async fn wait_credited_by_webhook(stack: &Stack, customer: &str) {
    wait_for(WAIT, "the purchase credited from the webhook", || async {
        (stack.db.count(&format!(
            "credits.purchases WHERE customer_id = '{customer}' AND status = 'succeeded'"
        )) == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_before_the_answer_credits_once() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let customer = synced_customer(&stack, "raced@example.com").await;
    assert_eq!(save_card(&stack, &customer, "pm_card_visa").await.0, 200);

    let held = proxy.hold_next("POST", "/v1/payment_intents");
    let request = {
        let (stack, customer) = (&stack, customer.clone());
        async move { buy(stack, &customer, "package_1", "raced").await }
    };
    let (answer, ()) = tokio::join!(request, async {
        held.reached().await;
        wait_credited_by_webhook(&stack, &customer).await;
        held.release();
    });
    let (status, bought, _) = answer;
    assert_eq!(status, 201, "{bought}");
    assert_eq!(
        (bought["credits_added"].as_i64(), bought["balance"].as_i64()),
        (Some(100), Some(100))
    );
    assert_eq!(entries(&stack, &customer, "purchase"), 1);
    assert_eq!(credits(&stack, &customer).await["balance"], 100);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_stripes_success_and_the_commit_is_credited_by_the_webhook() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let customer = synced_customer(&stack, "crashed@example.com").await;
    assert_eq!(save_card(&stack, &customer, "pm_card_visa").await.0, 200);

    // A second serve, a real process on the same database, topics and
    // Stripe: the one that dies. Webhooks keep reaching the first.
    let port = free_port();
    let env = stack
        .serve_env()
        .with("LISTEN_ADDR", &format!("127.0.0.1:{port}"))
        .with("STRIPE_API_BASE", &proxy.base());
    let mut doomed = spawn_binary(env!("CARGO_BIN_EXE_stripe-sync"), &["serve"], &env);
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    wait_for(WAIT, "the second serve to be ready", || async {
        let r = http.get(&ready).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let held = proxy.hold_next("POST", "/v1/payment_intents");
    let request = http
        .post(format!(
            "http://127.0.0.1:{port}/api/customers/{customer}/credit-purchases"
        ))
        .bearer_auth(crate::support::stack::API_TOKEN)
        .header("Idempotency-Key", "crashed")
        .json(&serde_json::json!({"package_id": "package_1"}))
        .send();
    let (answer, ()) = tokio::join!(request, async {
        held.reached().await;
        // Stripe has charged; serve has not heard. Kill it there.
        doomed.kill().unwrap();
        doomed.wait().unwrap();
        held.release();
    });
    assert!(answer.is_err(), "the killed serve answered: {answer:?}");

    wait_credited_by_webhook(&stack, &customer).await;
    assert_eq!(credits(&stack, &customer).await["balance"], 100);

    // The client retries with its key. The dead request still holds it,
    // for a minute; then the retry takes over, finds the purchase credited
    // and the intent known, and charges nothing again.
    let (status, busy, _) = buy(&stack, &customer, "package_1", "crashed").await;
    assert_eq!(
        (status, busy["error"]["code"].as_str()),
        (409, Some("idempotency_key_in_use"))
    );
    use diesel::prelude::*;
    diesel::sql_query(
        "UPDATE payments.idempotency_keys SET started_at = now() - interval '2 minutes' \
         WHERE status IS NULL",
    )
    .execute(&mut stack.db.conn())
    .unwrap();
    let (status, bought, replayed) = buy(&stack, &customer, "package_1", "crashed").await;
    assert_eq!((status, replayed), (201, false), "{bought}");
    assert_eq!(
        (bought["credits_added"].as_i64(), bought["balance"].as_i64()),
        (Some(100), Some(100))
    );
    assert_eq!(entries(&stack, &customer, "purchase"), 1);
    assert_eq!(intents_created(&proxy), 1, "{:?}", proxy.writes());
    stack.stop().await;
}
