//! Queued refunds: the request and its outbox row, the relay, the command
//! topic and `stripe-commands`, against localstripe. localstripe sends no
//! refund webhooks, so the refund events that move a request's status are
//! signed here from Stripe's example refund.

use std::process::Child;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use stripe_sync::config::{CommandsWorkerConfig, RelayConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{get, paid_intent, post, stack_on};
use crate::support::fixtures::refund_event;
use crate::support::localstripe::LocalStripe;
use crate::support::stack::Stack;
use crate::support::{spawn_binary, wait_for};

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

async fn stop_workers((token, handles): (CancellationToken, Vec<JoinHandle<anyhow::Result<()>>>)) {
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
        Some("refund-now"),
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

    // The same request under another key (a client that lost its key):
    // the request_id finds it, nothing new.
    let (status, again, _) = post(
        &stack,
        "/api/refund-requests",
        Some("ticket-881-again"),
        body,
    )
    .await;
    assert_eq!((status, again["status"].as_str()), (202, Some("succeeded")));
    let (status, err, _) = post(
        &stack,
        "/api/refund-requests",
        Some("ticket-881-other"),
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
        Some("refund-rest"),
        json!({"payment_intent": pi, "request_id": "refund-rest"}),
    )
    .await;
    assert_eq!(status, 202);
    let rest = wait_status(&stack, "refund-rest", "succeeded").await;
    assert_eq!(rest["amount"], 4000);
    let (status, list) = get(&stack, &format!("/api/refund-requests?payment_intent={pi}")).await;
    assert_eq!(status, 200);
    assert_eq!(list["refund_requests"].as_array().unwrap().len(), 2);
    // Asking for more than is left fails the request with the reason.
    let (status, _, _) = post(
        &stack,
        "/api/refund-requests",
        Some("refund-too-much"),
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
        Some("refund-while-down"),
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
    spawn_binary(env!("CARGO_BIN_EXE_stripe-commands"), &[], &stack.env)
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
            Some(&format!("refund-{pi}")),
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

/// A queued refund the client did not name, whose answer was lost (the
/// client hung up, or saving the answer failed) so that its key was
/// reopened: the retry finds the same request, not a second one with a
/// new id (which the worker would refund again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_queued_refund_retried_after_a_lost_answer_is_queued_once() {
    use diesel::prelude::*;
    let ls = LocalStripe::start().await;
    let stack = stack_on(&ls).await;
    let pi = paid_intent(&stack, 1200).await;
    let body = json!({"payment_intent": pi, "amount": 500});
    let (status, first, _) = post(
        &stack,
        "/api/refund-requests",
        Some("lost-answer"),
        body.clone(),
    )
    .await;
    assert_eq!(status, 202, "{first}");
    diesel::sql_query(
        "UPDATE payments.idempotency_keys \
         SET status = NULL, response = NULL, started_at = '-infinity' WHERE key = 'lost-answer'",
    )
    .execute(&mut stack.db.conn())
    .unwrap();
    let (status, again, replayed) =
        post(&stack, "/api/refund-requests", Some("lost-answer"), body).await;
    assert_eq!((status, replayed), (202, false), "{again}");
    assert_eq!(again["request_id"], first["request_id"]);
    assert_eq!(stack.db.count("payments.refund_requests"), 1);
    stack.stop().await;
}

/// A refund made by an attempt that could not record it (killed after
/// Stripe's call, or its answer lost), whose webhook moved the request on
/// before the command came back: the command's delivery is recorded then,
/// so the outbox does not hold it undelivered for good, and nothing is
/// refunded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_webhook_settled_before_its_retry_is_recorded_delivered() {
    let ls = LocalStripe::start().await;
    let mut stack = stack_on(&ls).await;
    stack.start_worker();
    let pi = paid_intent(&stack, 1200).await;
    let relay = start_workers(&stack, false);
    let (status, _, _) = post(
        &stack,
        "/api/refund-requests",
        Some("settled-first"),
        json!({"payment_intent": pi, "amount": 500, "request_id": "refund-settled-first"}),
    )
    .await;
    assert_eq!(status, 202);
    // What the first attempt did at Stripe before it could record it.
    let made = ls
        .call(
            Method::POST,
            "/v1/refunds",
            &[
                ("payment_intent", pi.as_str()),
                ("amount", "500"),
                ("metadata[stripe_sync_request]", "refund-settled-first"),
            ],
        )
        .await;
    let webhook = refund_event("evt_settled_first", 1_900_000_000, &made, "succeeded");
    assert_eq!(stack.post_event(&webhook).await, 200);
    wait_status(&stack, "refund-settled-first", "succeeded").await;
    let mut worker = spawn_commands(&stack);
    wait_for(WAIT, "the command's delivery", || async {
        (stack.db.count(
            "outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id \
             WHERE o.entity = 'refund_request' AND d.status = 'synced' \
             AND d.external_id IS NOT NULL",
        ) == 1)
            .then_some(())
    })
    .await;
    assert_eq!(refunds_at_stripe(&ls, &pi).await.len(), 1, "refunded once");
    worker.kill().unwrap();
    worker.wait().unwrap();
    stop_workers(relay).await;
    stack.stop().await;
}
