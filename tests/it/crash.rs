//! Invariant 3 with real processes: the `stripe-inbound` binary is killed
//! with SIGKILL mid-stream and restarted; no event is lost and none is
//! applied twice.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use stripe_sync::ingest::envelope_headers;
use stripe_sync::kafka::EventProducer;
use stripe_sync::stripe::StripeEvent;

use crate::support::broker::wait_consumed;
use crate::support::fixtures::customer_event;
use crate::support::stack::{Options, Stack};
use crate::support::wait_for;

fn spawn_worker(stack: &Stack) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stripe-inbound"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &stack.db.url)
        .env("KAFKA_BROKERS", &stack.brokers)
        .env("STRIPE_EVENTS_TOPIC", &stack.topic)
        .env("KAFKA_TOPIC_PARTITIONS", "3")
        .env("INBOUND_CONSUMER_GROUP", &stack.group)
        .env("INBOUND_BATCH_SIZE", "7")
        .env("STRIPE_API_KEY", "sk_test_unused")
        .env("STRIPE_API_BASE", "http://127.0.0.1:9")
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start stripe-inbound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let (customers, per_customer) = (40, 15);
    let producer = EventProducer::new(&stack.brokers, Duration::from_secs(10)).unwrap();
    for i in 0..per_customer {
        for c in 0..customers {
            let e = customer_event(
                &format!("evt_k{c}_{i}"),
                if i == 0 {
                    "customer.created"
                } else {
                    "customer.updated"
                },
                1000 + i,
                &format!("cus_k{c}"),
                json!({"name": format!("c{c}-v{i}")}),
            );
            let body = serde_json::to_vec(&e).unwrap();
            let parsed = StripeEvent::parse(&body).unwrap();
            producer
                .send(
                    &stack.topic,
                    parsed.object_id().as_bytes(),
                    &body,
                    &envelope_headers(&parsed, "test"),
                )
                .await
                .unwrap();
        }
    }
    let total = customers * per_customer;

    let mut first = spawn_worker(&stack);
    wait_for(
        Duration::from_secs(60),
        "the first worker to be part-way",
        || async { (stack.ledger_count() >= total / 4).then_some(()) },
    )
    .await;
    first.kill().unwrap(); // SIGKILL: no shutdown path runs
    first.wait().unwrap();
    let at_kill = stack.ledger_count();
    assert!(
        at_kill < total,
        "the worker finished before it was killed; nothing was tested"
    );

    let mut second = spawn_worker(&stack);
    wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        stack.ledger_count(),
        total,
        "every event applied exactly once"
    );
    for c in 0..customers {
        let (row, link) = stack.customer(&format!("cus_k{c}")).unwrap();
        assert_eq!(row.name, Some(format!("c{c}-v{}", per_customer - 1)));
        assert_eq!(link.remote_version, 1000 + per_customer - 1);
    }

    // SIGTERM: a graceful stop that exits cleanly.
    nix_term(&second);
    let status = second.wait().unwrap();
    assert!(status.success(), "worker exited with {status} on SIGTERM");
    stack.stop().await;
}

fn nix_term(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "could not send SIGTERM");
}
