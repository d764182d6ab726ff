//! Invariant 3 with real processes: the `stripe-inbound` binary is killed
//! with SIGKILL mid-stream and restarted; no event is lost and none is
//! applied twice.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use stripe_sync::kafka::envelope::event_headers;
use stripe_sync::kafka::EventProducer;
use stripe_sync::stripe::EventEnvelope;

use crate::support::broker::wait_consumed;
use crate::support::fixtures::customer_event;
use crate::support::stack::{Options, Stack};
use crate::support::wait_for;

fn spawn_worker(stack: &Stack) -> Child {
    crate::support::spawn_captured(
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
            .env("METRICS_ADDR", "127.0.0.1:0")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let (customers, per_customer) = (40, 15);
    let producer = EventProducer::new(
        &stack.brokers,
        Duration::from_secs(10),
        stripe_sync::config::DEFAULT_COMPRESSION,
    )
    .unwrap();
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
            let parsed = EventEnvelope::parse(&body).unwrap();
            producer
                .send(
                    &stack.topic,
                    parsed.object_id.as_bytes(),
                    &body,
                    &event_headers(&parsed, "test"),
                )
                .await
                .unwrap();
        }
    }
    let total = customers * per_customer;
    stack.db.log_customer_writes();

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
    // Applications, counted by the rows' writes: no event's state written
    // twice, across the kill and the redelivery that followed it, and no
    // more writes than events (a batch may fold one customer's events).
    assert_eq!(
        stack.db.customer_rewrites(),
        0,
        "an event was applied twice"
    );
    assert!(stack.db.count("test_customer_writes") <= total);
    assert!(
        stack.db.count("test_customer_writes") >= customers,
        "the log saw the applies"
    );

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

fn spawn_relay(stack: &Stack) -> Child {
    crate::support::spawn_captured(
        Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &stack.db.url)
            .env("KAFKA_BROKERS", &stack.brokers)
            .env("CUSTOMER_CHANGES_TOPIC", &stack.changes_topic)
            .env("KAFKA_TOPIC_PARTITIONS", "3")
            .env("OUTBOX_BATCH_SIZE", "25")
            .env("OUTBOX_POLL_MS", "10")
            .env("RUST_LOG", "warn")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null()),
    )
}

/// Invariant 5: the relay killed with SIGKILL at an arbitrary point and
/// restarted loses no change and never lets a customer's later change
/// overtake an earlier one (duplicates are allowed; they are deduplicated
/// downstream by outbox id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_stream_loses_and_reorders_nothing() {
    use diesel::prelude::*;
    use std::collections::HashMap;
    use stripe_sync::db::schema::outbox;
    use stripe_sync::outbox::Change;

    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let (customers, edits) = (10, 30);
    let mut ids = Vec::new();
    for c in 0..customers {
        let r = stack
            .api(reqwest::Method::POST, "/api/customers")
            .json(&json!({"name": format!("c{c}")}))
            .send()
            .await
            .unwrap();
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for e in 0..edits {
        for id in &ids {
            let r = stack
                .api(reqwest::Method::PATCH, &format!("/api/customers/{id}"))
                .json(&json!({"description": format!("edit {e}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let total = customers * (edits + 1);
    let published = || -> i64 {
        outbox::table
            .filter(outbox::published_at.is_not_null())
            .count()
            .get_result(&mut stack.db.conn())
            .unwrap()
    };

    let mut relay = spawn_relay(&stack);
    wait_for(
        Duration::from_secs(60),
        "the relay to be part-way",
        || async { (published() >= total / 5).then_some(()) },
    )
    .await;
    relay.kill().unwrap();
    relay.wait().unwrap();
    assert!(
        published() < total,
        "the relay finished before it was killed; nothing was tested"
    );

    let mut relay = spawn_relay(&stack);
    wait_for(
        Duration::from_secs(60),
        "every outbox row published",
        || async { (published() == total).then_some(()) },
    )
    .await;
    nix_term(&relay);
    assert!(relay.wait().unwrap().success());

    let messages = crate::support::broker::read_all(&stack.brokers, &stack.changes_topic);
    assert!(messages.len() as i64 >= total);
    // Per customer, in partition order, the first appearance of each outbox
    // id; later repeats are the duplicates a restart may republish.
    let mut first_order: HashMap<uuid::Uuid, Vec<i64>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for m in &messages {
        let change: Change = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            m.key.as_deref(),
            Some(change.local_id.to_string().as_bytes())
        );
        if seen.insert(change.outbox_id) {
            first_order
                .entry(change.local_id)
                .or_default()
                .push(change.outbox_id);
        }
    }
    assert_eq!(seen.len() as i64, total, "every change published");
    for (customer, order) in first_order {
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            order, sorted,
            "customer {customer}: a change overtook an earlier one"
        );
        assert_eq!(order.len() as i64, edits + 1);
    }
    stack.stop().await;
}
