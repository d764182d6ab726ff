//! The inbound worker against real Kafka and Postgres: duplicates,
//! reordering, ties, tombstones, poison messages and transient failures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use stripe_sync::db::schema::event_ledger;
use stripe_sync::kafka::{envelope, EventProducer};
use warp::Filter;

use crate::support::broker::{read_all, wait_consumed};
use crate::support::fixtures::customer_event;
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack};
use crate::support::{required_env, wait_for};

fn outcome(stack: &Stack, event_id: &str) -> Option<String> {
    event_ledger::table
        .filter(event_ledger::event_id.eq(event_id))
        .select(event_ledger::outcome)
        .first(&mut stack.db.conn())
        .optional()
        .unwrap()
}

/// Invariants 3 and 4: every event delivered three times, in a shuffled
/// order, for a few dozen customers; the store ends at each customer's last
/// state and the ledger holds each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicated_and_shuffled_events_converge_to_each_customers_last_state() {
    let stack = Stack::start(Options::default()).await;
    let (customers, per_customer) = (30, 10);
    let base = 1_700_000_000;
    let mut events: Vec<Value> = Vec::new();
    for c in 0..customers {
        for i in 0..per_customer {
            let kind = match i {
                0 => "customer.created",
                i if i == per_customer - 1 && c % 5 == 0 => "customer.deleted",
                _ => "customer.updated",
            };
            events.push(customer_event(
                &format!("evt_s{c}_{i}"),
                kind,
                base + i,
                &format!("cus_s{c}"),
                json!({"name": format!("c{c}-v{i}"), "email": format!("c{c}.v{i}@example.com"), "metadata": {"v": i.to_string()}}),
            ));
        }
    }
    let mut deliveries: Vec<Value> = events
        .iter()
        .flat_map(|e| [e.clone(), e.clone(), e.clone()])
        .collect();
    let seed: u64 = rand::random();
    println!("shuffle seed {seed}");
    deliveries.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let statuses: Vec<_> = futures::stream::iter(&deliveries)
        .map(|e| stack.post_event(e))
        .buffered(16)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "seed {seed}: {statuses:?}"
    );

    wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        stack.ledger_count(),
        customers * per_customer,
        "seed {seed}"
    );
    let last = per_customer - 1;
    for c in 0..customers {
        let (row, link) = stack
            .customer(&format!("cus_s{c}"))
            .expect("customer mirrored");
        assert_eq!(
            row.name.as_deref(),
            Some(format!("c{c}-v{last}").as_str()),
            "seed {seed}, customer {c}"
        );
        assert_eq!(
            row.email.as_deref(),
            Some(format!("c{c}.v{last}@example.com").as_str())
        );
        assert_eq!(row.metadata, json!({"v": last.to_string()}));
        assert_eq!(
            row.deleted_at.is_some(),
            c % 5 == 0,
            "seed {seed}, customer {c}"
        );
        assert_eq!(link.remote_deleted, c % 5 == 0);
        assert_eq!(link.remote_version, base + last);
        assert_eq!(row.stripe_object.unwrap()["id"], format!("cus_s{c}"));
    }
    assert_eq!(stack.db.count("customers"), customers);
    assert_eq!(stack.db.count("id_map"), customers);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_event_never_overwrites_newer_state() {
    let stack = Stack::start(Options::default()).await;
    let newer = customer_event(
        "evt_new",
        "customer.updated",
        2000,
        "cus_st",
        json!({"name": "new"}),
    );
    let older = customer_event(
        "evt_old",
        "customer.updated",
        1999,
        "cus_st",
        json!({"name": "old"}),
    );
    assert_eq!(stack.post_event(&newer).await, 200);
    assert_eq!(stack.post_event(&older).await, 200);
    stack.wait_ledger(2, Duration::from_secs(30)).await;
    assert_eq!(
        stack.customer("cus_st").unwrap().0.name.as_deref(),
        Some("new")
    );
    assert_eq!(outcome(&stack, "evt_old").as_deref(), Some("stale"));
    stack.stop().await;
}

/// Invariant 4: a deleted customer is a tombstone; a late update (even one
/// with a newer timestamp) cannot bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_update_cannot_resurrect_a_deleted_customer() {
    let stack = Stack::start(Options::default()).await;
    let created = customer_event(
        "evt_t1",
        "customer.created",
        100,
        "cus_tomb",
        json!({"name": "alive"}),
    );
    let deleted = customer_event(
        "evt_t2",
        "customer.deleted",
        200,
        "cus_tomb",
        json!({"name": "alive"}),
    );
    let late = customer_event(
        "evt_t3",
        "customer.updated",
        150,
        "cus_tomb",
        json!({"name": "zombie"}),
    );
    let later = customer_event(
        "evt_t4",
        "customer.updated",
        300,
        "cus_tomb",
        json!({"name": "zombie"}),
    );
    for e in [&created, &deleted, &late, &later] {
        assert_eq!(stack.post_event(e).await, 200);
    }
    stack.wait_ledger(4, Duration::from_secs(30)).await;
    let (row, link) = stack.customer("cus_tomb").unwrap();
    assert!(row.deleted_at.is_some());
    assert!(link.remote_deleted);
    assert_eq!(row.name.as_deref(), Some("alive"));
    assert_eq!(
        outcome(&stack, "evt_t3").as_deref(),
        Some("after_tombstone")
    );
    assert_eq!(
        outcome(&stack, "evt_t4").as_deref(),
        Some("after_tombstone")
    );

    // A delete seen before the object was ever seen still leaves a tombstone.
    let first_seen_deleted =
        customer_event("evt_t5", "customer.deleted", 500, "cus_tomb2", json!({}));
    let then_created = customer_event("evt_t6", "customer.created", 400, "cus_tomb2", json!({}));
    assert_eq!(stack.post_event(&first_seen_deleted).await, 200);
    assert_eq!(stack.post_event(&then_created).await, 200);
    stack.wait_ledger(6, Duration::from_secs(30)).await;
    assert!(stack.customer("cus_tomb2").unwrap().0.deleted_at.is_some());
    stack.stop().await;
}

/// Invariant 4, ties: Stripe's timestamps are whole seconds, so two events
/// of one second cannot be ordered by time. The worker re-reads the
/// customer from Stripe (localstripe here) and stores Stripe's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_second_events_end_in_stripes_final_state() {
    let ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    let created = ls
        .create_customer(&[("name", "first"), ("email", "a@example.com")])
        .await;
    let id = created["id"].as_str().unwrap();
    ls.update_customer(id, &[("name", "final"), ("email", "final@example.com")])
        .await;

    // Both events carry the same second; the older one arrives last.
    let t = created["created"].as_i64().unwrap();
    let second = customer_event(
        "evt_tie2",
        "customer.updated",
        t,
        id,
        json!({"name": "second"}),
    );
    let first = customer_event(
        "evt_tie1",
        "customer.created",
        t,
        id,
        json!({"name": "first"}),
    );
    assert_eq!(stack.post_event(&second).await, 200);
    assert_eq!(stack.post_event(&first).await, 200);
    stack.wait_ledger(2, Duration::from_secs(30)).await;

    let (row, _) = stack.customer(id).unwrap();
    assert_eq!(
        row.name.as_deref(),
        Some("final"),
        "a same-second event dropped Stripe's newer state"
    );
    assert_eq!(row.email.as_deref(), Some("final@example.com"));
    assert_eq!(outcome(&stack, "evt_tie1").as_deref(), Some("tie_resolved"));

    // A tie for a customer Stripe no longer has ends in a tombstone.
    ls.delete_customer(id).await;
    let third = customer_event(
        "evt_tie3",
        "customer.updated",
        t,
        id,
        json!({"name": "third"}),
    );
    assert_eq!(stack.post_event(&third).await, 200);
    stack.wait_ledger(3, Duration::from_secs(30)).await;
    assert!(stack.customer(id).unwrap().0.deleted_at.is_some());
    stack.stop().await;
}

/// Invariant 8: Stripe answering 429 (with Retry-After) and 500 on the
/// re-read is transient: the event waits and is applied, never skipped.
/// An in-process fake stands in for Stripe because localstripe cannot
/// produce these faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_429_and_5xx_on_a_reread_are_retried_not_skipped() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let fake = warp::path!("v1" / "customers" / String).map(move |id: String| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let reply = json!({"id": id, "object": "customer", "name": "from-stripe", "metadata": {}});
        match n {
            0 => warp::http::Response::builder()
                .status(429)
                .header("Retry-After", "1")
                .body(r#"{"error":{"message":"slow down"}}"#.to_string()),
            1 | 2 => warp::http::Response::builder()
                .status(500)
                .body("{}".to_string()),
            _ => warp::http::Response::builder()
                .status(200)
                .body(reply.to_string()),
        }
        .unwrap()
    });
    let (fake_addr, fake_server) = warp::serve(fake).bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(fake_server);

    let stack = Stack::start(Options {
        stripe_base: format!("http://{fake_addr}"),
        ..Options::default()
    })
    .await;
    let a = customer_event(
        "evt_f1",
        "customer.created",
        50,
        "cus_fault",
        json!({"name": "a"}),
    );
    let b = customer_event(
        "evt_f2",
        "customer.updated",
        50,
        "cus_fault",
        json!({"name": "b"}),
    );
    let after = customer_event(
        "evt_f3",
        "customer.updated",
        51,
        "cus_fault",
        json!({"name": "after"}),
    );
    for e in [&a, &b] {
        assert_eq!(stack.post_event(e).await, 200);
    }
    stack.wait_ledger(2, Duration::from_secs(60)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "429 once, 500 twice, then success"
    );
    assert_eq!(
        stack.customer("cus_fault").unwrap().0.name.as_deref(),
        Some("from-stripe")
    );
    assert_eq!(stack.post_event(&after).await, 200);
    stack.wait_ledger(3, Duration::from_secs(30)).await;
    assert_eq!(
        stack.customer("cus_fault").unwrap().0.name.as_deref(),
        Some("after")
    );
    stack.stop().await;
}

/// Invariant 8: with Postgres refusing connections the worker retries and
/// skips nothing; once it is back every event is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_is_retried_and_skips_nothing() {
    let stack = Stack::start(Options::default()).await;
    let ev = |i: i64| {
        customer_event(
            &format!("evt_pg{i}"),
            "customer.updated",
            10 + i,
            "cus_pg",
            json!({"name": format!("v{i}")}),
        )
    };
    assert_eq!(stack.post_event(&ev(0)).await, 200);
    stack.wait_ledger(1, Duration::from_secs(30)).await;

    let mut admin = PgConnection::establish(&required_env("TEST_PG_ADMIN_URL")).unwrap();
    let set_allowed = |admin: &mut PgConnection, allowed: bool| {
        diesel::sql_query(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allowed}",
            stack.db.name
        ))
        .execute(admin)
        .unwrap();
        if !allowed {
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                stack.db.name
            ))
            .execute(admin)
            .unwrap();
        }
    };
    set_allowed(&mut admin, false);
    for i in 1..=5 {
        assert_eq!(
            stack.post_event(&ev(i)).await,
            200,
            "ingest does not depend on Postgres"
        );
    }
    // The worker fails and retries (never skips) while Postgres refuses it.
    let retried = crate::support::retries_on(&stack.topic) + 2;
    crate::support::wait_for(Duration::from_secs(60), "inbound retries", || async {
        (crate::support::retries_on(&stack.topic) >= retried).then_some(())
    })
    .await;
    set_allowed(&mut admin, true);

    stack.wait_ledger(6, Duration::from_secs(60)).await;
    wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(stack.ledger_count(), 6);
    assert_eq!(
        stack.customer("cus_pg").unwrap().0.name.as_deref(),
        Some("v5")
    );
    stack.stop().await;
}

/// Invariant 8: poison goes to the DLQ with its error and the partition
/// moves on to the messages behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing() {
    let stack = Stack::start(Options::default()).await;
    let producer = EventProducer::new(
        &stack.brokers,
        Duration::from_secs(5),
        stripe_sync::config::DEFAULT_COMPRESSION,
    )
    .unwrap();
    let key = b"cus_poison";
    producer
        .send(&stack.topic, key, b"this is not json", &vec![])
        .await
        .unwrap();
    // Well-formed, but a customer event without a customer id.
    let wrong = customer_event(
        "evt_wrong",
        "customer.updated",
        1,
        "prod_not_a_customer",
        json!({}),
    );
    producer
        .send(
            &stack.topic,
            key,
            &serde_json::to_vec(&wrong).unwrap(),
            &vec![],
        )
        .await
        .unwrap();
    let good = customer_event(
        "evt_good",
        "customer.created",
        2,
        "cus_poison",
        json!({"name": "fine"}),
    );
    producer
        .send(
            &stack.topic,
            key,
            &serde_json::to_vec(&good).unwrap(),
            &vec![],
        )
        .await
        .unwrap();

    stack.wait_ledger(1, Duration::from_secs(30)).await;
    assert_eq!(
        stack.customer("cus_poison").unwrap().0.name.as_deref(),
        Some("fine")
    );
    let dlq = format!("{}.dlq", stack.topic);
    let dead = wait_for(Duration::from_secs(30), "two dead letters", || {
        let dead = read_all(&stack.brokers, &dlq);
        async move { (dead.len() == 2).then_some(dead) }
    })
    .await;
    assert_eq!(dead[0].payload, b"this is not json");
    assert!(
        dead[0]
            .header(envelope::H_DLQ_ERROR)
            .unwrap()
            .contains("not a Stripe event"),
        "{:?}",
        dead[0]
    );
    assert_eq!(
        dead[0].header(envelope::H_DLQ_SOURCE_TOPIC),
        Some(stack.topic.as_str())
    );
    assert!(dead[0].header(envelope::H_DLQ_SOURCE_OFFSET).is_some());
    assert_eq!(dead[0].key.as_deref(), Some(&key[..]));
    assert!(
        dead[1]
            .header(envelope::H_DLQ_ERROR)
            .unwrap()
            .contains("no customer id"),
        "{:?}",
        dead[1]
    );
    wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(stack.ledger_count(), 1, "poison must not reach the ledger");
    stack.stop().await;
}
