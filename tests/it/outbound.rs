//! The outbound path end to end: API write → outbox → relay → Kafka →
//! stripe-outbound → Stripe (localstripe, behind a counting proxy), and the
//! echo webhooks coming back through the spine without looping.

use std::time::Duration;

use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use stripe_sync::db::schema::event_ledger;

use crate::support::broker::{read_all, wait_consumed};
use crate::support::fake_stripe::{FakeStripe, Fault};
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack, SECRET};
use crate::support::stripe_proxy::CountingProxy;
use crate::support::{json_of, wait_for};

async fn create(stack: &Stack, body: Value) -> String {
    let r = stack
        .api(Method::POST, "/api/customers")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn patch(stack: &Stack, id: &str, body: Value) {
    let r = stack
        .api(Method::PATCH, &format!("/api/customers/{id}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Waits until every event localstripe has emitted so far is in the ledger.
/// (localstripe's events carry no `request.idempotency_key`, so echoes of
/// our writes cannot be told apart by key here; real Stripe's can, which
/// `echoes_of_our_own_writes_are_recognised_by_their_idempotency_key`
/// checks with a signed event.)
async fn wait_all_events_applied(stack: &Stack, ls: &LocalStripe) -> i64 {
    let sent = ls.event_count("customer.").await as i64;
    stack.wait_ledger(sent, Duration::from_secs(60)).await;
    sent
}

/// Invariants 5 and 6: N local writes make exactly N Stripe writes, each
/// with its outbox id's Idempotency-Key; Stripe's echoes update the mirror
/// and produce nothing outward; then the system is quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_writes_reach_stripe_exactly_once_and_echoes_do_not_loop() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        outbound_stripe_base: Some(proxy.base()),
        start_outbound: true,
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;

    let a = create(
        &stack,
        json!({"email": "a@example.com", "name": "A", "metadata": {"tier": "gold"}}),
    )
    .await;
    let b = create(&stack, json!({"email": "b@example.com", "name": "B"})).await;
    let c = create(&stack, json!({"email": "c@example.com", "name": "C"})).await;
    for id in [&a, &b, &c] {
        stack
            .wait_sync_status(id, "synced", Duration::from_secs(60))
            .await;
    }
    patch(
        &stack,
        &a,
        json!({"name": "A2", "metadata": {"tier": null, "plan": "pro"}}),
    )
    .await;
    patch(&stack, &b, json!({"phone": "+15555550123"})).await;
    let r = stack
        .api(Method::DELETE, &format!("/api/customers/{c}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let local_writes = 6;

    for id in [&a, &b, &c] {
        stack
            .wait_sync_status(id, "synced", Duration::from_secs(60))
            .await;
    }
    // localstripe holds the same customers.
    let remote = ls.list_customers().await;
    assert_eq!(remote.len(), 2, "c was deleted in Stripe: {remote:?}");
    let remote_a = remote
        .iter()
        .find(|r| r["email"] == "a@example.com")
        .unwrap();
    assert_eq!(remote_a["name"], "A2");
    assert_eq!(remote_a["metadata"]["plan"], "pro");
    assert!(
        remote_a["metadata"].get("tier").is_none_or(|v| v == ""),
        "{remote_a}"
    );
    assert_eq!(
        remote_a["metadata"]["stripe_sync_id"],
        a.as_str(),
        "the local id is traceable in Stripe"
    );
    let remote_b = remote
        .iter()
        .find(|r| r["email"] == "b@example.com")
        .unwrap();
    assert_eq!(remote_b["phone"], "+15555550123");

    // Every Stripe event of this run is an echo of our own writes, and all
    // of them come back through the spine.
    assert_eq!(wait_all_events_applied(&stack, &ls).await, local_writes);
    wait_consumed(
        &stack.brokers,
        &stack.outbound_group,
        &stack.changes_topic,
        Duration::from_secs(30),
    )
    .await;
    wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(30),
    )
    .await;
    // Every echo is applied and every change consumed (above). An echo
    // sent back out would have written an outbox row in its own apply
    // transaction, so the outbox count below catches a loop's first step,
    // and the Stripe writes its second.
    let writes = proxy.writes();
    assert_eq!(
        writes.len(),
        local_writes as usize,
        "exactly one Stripe write per local write: {writes:?}"
    );
    let mut keys: Vec<String> = writes
        .iter()
        .map(|w| w.idempotency_key.clone().expect("every write has a key"))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), writes.len(), "one key per outbox row");
    assert_eq!(
        stack.db.count("outbox"),
        local_writes,
        "echoes wrote nothing to the outbox"
    );
    assert_eq!(
        read_all(&stack.brokers, &stack.changes_topic).len(),
        local_writes as usize
    );

    // The echoes updated the mirror: Stripe's own snapshot is stored.
    let (row, link) = stack.customer(remote_a["id"].as_str().unwrap()).unwrap();
    assert_eq!(row.id.to_string(), a);
    assert_eq!(row.name.as_deref(), Some("A2"));
    assert!(row.stripe_object.is_some());
    assert!(!link.remote_deleted);
    assert_eq!(
        stack.db.count("customers"),
        3,
        "no duplicate local customers from echoes"
    );
    let api_c = stack.api_customer(&c).await;
    assert_eq!(api_c["deleted"], true);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_created_in_stripe_appears_in_the_api_as_synced() {
    let mut ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        start_outbound: true,
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    let created = ls
        .create_customer(&[("email", "dash@example.com"), ("name", "From Dashboard")])
        .await;

    let listed = wait_for(
        Duration::from_secs(30),
        "the customer in the API",
        || async {
            let page: Value =
                json_of(stack.api(Method::GET, "/api/customers?email=dash@example.com")).await;
            page["data"].as_array().unwrap().first().cloned()
        },
    )
    .await;
    assert_eq!(listed["name"], "From Dashboard");
    assert_eq!(listed["sync"]["stripe"]["status"], "synced");
    assert_eq!(listed["sync"]["stripe"]["id"], created["id"]);
    assert!(listed["sync"]["stripe"]["synced_at"].is_string());
    assert_eq!(
        stack.db.count("outbox"),
        0,
        "an inbound change is not sent back out"
    );
    stack.stop().await;
}

/// Stripe unreachable: changes wait (pending) and complete once it is back,
/// none lost, none duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_made_while_stripe_is_down_complete_once_it_is_back() {
    let mut ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        start_outbound: true,
        stripe_timeout_ms: 2000,
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    let first = create(&stack, json!({"email": "first@example.com"})).await;
    stack
        .wait_sync_status(&first, "synced", Duration::from_secs(30))
        .await;

    ls.stop();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            create(
                &stack,
                json!({"email": format!("down{i}@example.com"), "name": format!("Down {i}")}),
            )
            .await,
        );
    }
    patch(&stack, &first, json!({"name": "Renamed while down"})).await;
    // Several failed attempts, each retried (not skipped).
    let retried = crate::support::retries_on(&stack.changes_topic) + 2;
    wait_for(
        Duration::from_secs(60),
        "outbound retries while Stripe is down",
        || async { (crate::support::retries_on(&stack.changes_topic) >= retried).then_some(()) },
    )
    .await;
    for id in ids.iter().chain([&first]) {
        assert_eq!(
            stack.api_customer(id).await["sync"]["stripe"]["status"],
            "pending"
        );
    }

    ls.resume().await;
    for id in ids.iter().chain([&first]) {
        stack
            .wait_sync_status(id, "synced", Duration::from_secs(90))
            .await;
    }
    let remote = ls.list_customers().await;
    assert_eq!(
        remote.len(),
        4,
        "no customer lost or created twice: {remote:?}"
    );
    for i in 0..3 {
        let email = format!("down{i}@example.com");
        assert_eq!(
            remote
                .iter()
                .filter(|c| c["email"] == email.as_str())
                .count(),
            1
        );
    }
    assert_eq!(
        remote
            .iter()
            .find(|c| c["email"] == "first@example.com")
            .unwrap()["name"],
        "Renamed while down"
    );
    stack.stop().await;
}

/// Retries reuse the Idempotency-Key: 429 (Retry-After honoured), 500, and
/// a response lost after the write was done still end in one customer.
/// localstripe ignores idempotency keys, so an in-process fake that honours
/// them stands in for Stripe here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_carry_the_same_idempotency_key_and_create_once() {
    let fake = FakeStripe::start(vec![
        Fault::RateLimited(1),
        Fault::ServerError,
        Fault::DropResponse(Duration::from_secs(3)),
    ]);
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        start_outbound: true,
        start_worker: false,
        stripe_timeout_ms: 1000,
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let id = create(
        &stack,
        json!({"email": "retry@example.com", "name": "Retry"}),
    )
    .await;
    let synced = stack
        .wait_sync_status(&id, "synced", Duration::from_secs(60))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );

    let requests = fake.requests();
    assert_eq!(
        requests.len(),
        4,
        "429, 500, lost response, replay: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.method == "POST" && r.path == "/v1/customers"),
        "{requests:?}"
    );
    let keys: Vec<_> = requests
        .iter()
        .map(|r| r.idempotency_key.clone().unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(
        fake.created(),
        1,
        "the lost response must not lead to a second customer"
    );
    assert_eq!(synced["sync"]["stripe"]["id"], "cus_fake1");
    assert_eq!(
        fake.customer("cus_fake1").unwrap()["metadata"]["stripe_sync_id"],
        id.as_str()
    );
    stack.stop().await;
}

/// A permanent refusal marks the customer `failed` with Stripe's message,
/// dead-letters the change and lets later changes flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_change_is_failed_with_stripes_message_and_dead_lettered() {
    let fake = FakeStripe::start(vec![Fault::Refuse(
        "Invalid email address: refused@example".into(),
    )]);
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        start_outbound: true,
        start_worker: false,
        ..Options::default()
    })
    .await;
    let refused = create(&stack, json!({"email": "refused@example.com"})).await;
    let failed = stack
        .wait_sync_status(&refused, "failed", Duration::from_secs(30))
        .await;
    assert_eq!(
        failed["sync"]["stripe"]["error"],
        "Invalid email address: refused@example"
    );
    let ok = create(&stack, json!({"email": "fine@example.com"})).await;
    stack
        .wait_sync_status(&ok, "synced", Duration::from_secs(30))
        .await;
    let dead = wait_for(Duration::from_secs(30), "the dead letter", || {
        let dead = read_all(&stack.brokers, &format!("{}.dlq", stack.changes_topic));
        async move { (!dead.is_empty()).then_some(dead) }
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0]
        .header("dlq-error")
        .unwrap()
        .contains("Invalid email address"));
    // A later change to the refused customer fails clearly rather than hanging.
    patch(&stack, &refused, json!({"name": "Still refused"})).await;
    let still = stack
        .wait_sync_status(&refused, "failed", Duration::from_secs(30))
        .await;
    assert!(
        still["sync"]["stripe"]["error"]
            .as_str()
            .unwrap()
            .contains("no Stripe counterpart"),
        "{still}"
    );
    stack.stop().await;
}

/// Conflict policy, order 1: a Stripe-side edit arrives while a local PATCH
/// is still unacknowledged. The local change wins for the fields it sets;
/// Stripe's other fields are taken; Stripe ends with the local value too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_a_pending_local_edit_wins_over_a_concurrent_stripe_edit() {
    let mut ls = LocalStripe::start().await;
    let mut stack = Stack::start(Options {
        stripe_base: ls.base(),
        start_outbound: true,
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    let id = create(
        &stack,
        json!({"email": "race@example.com", "name": "Original"}),
    )
    .await;
    let synced = stack
        .wait_sync_status(&id, "synced", Duration::from_secs(30))
        .await;
    let stripe_id = synced["sync"]["stripe"]["id"].as_str().unwrap().to_owned();
    wait_all_events_applied(&stack, &ls).await;

    // Hold outbound so the local edit stays pending while Stripe changes.
    stack.stop_outbound().await;
    patch(&stack, &id, json!({"name": "Local"})).await;
    let ledger_before = stack.ledger_count();
    ls.update_customer(
        &stripe_id,
        &[("name", "Dashboard"), ("phone", "+15555550199")],
    )
    .await;
    stack
        .wait_ledger(ledger_before + 1, Duration::from_secs(30))
        .await;
    let during = stack.api_customer(&id).await;
    assert_eq!(
        during["name"], "Local",
        "a pending local change must not be overwritten"
    );
    assert_eq!(
        during["phone"], "+15555550199",
        "fields the local change did not touch follow Stripe"
    );
    assert_eq!(during["sync"]["stripe"]["status"], "pending");

    stack.start_outbound();
    stack
        .wait_sync_status(&id, "synced", Duration::from_secs(30))
        .await;
    let remote = ls.list_customers().await;
    assert_eq!(remote[0]["name"], "Local");
    assert_eq!(remote[0]["phone"], "+15555550199");
    wait_all_events_applied(&stack, &ls).await;
    let after = stack.api_customer(&id).await;
    assert_eq!(
        (after["name"].as_str(), after["phone"].as_str()),
        (Some("Local"), Some("+15555550199"))
    );
    stack.stop().await;
}

/// Conflict policy, order 2: the local edit was acknowledged first, then
/// someone edits in Stripe: the later writer (Stripe) wins on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_a_later_stripe_edit_wins_over_an_acknowledged_local_edit() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        outbound_stripe_base: Some(proxy.base()),
        start_outbound: true,
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    let id = create(
        &stack,
        json!({"email": "later@example.com", "name": "Original"}),
    )
    .await;
    let synced = stack
        .wait_sync_status(&id, "synced", Duration::from_secs(30))
        .await;
    let stripe_id = synced["sync"]["stripe"]["id"].as_str().unwrap().to_owned();
    patch(&stack, &id, json!({"name": "Local"})).await;
    stack
        .wait_sync_status(&id, "synced", Duration::from_secs(30))
        .await;

    ls.update_customer(&stripe_id, &[("name", "Dashboard")])
        .await;
    wait_for(
        Duration::from_secs(30),
        "Stripe's edit in the mirror",
        || async { (stack.api_customer(&id).await["name"] == "Dashboard").then_some(()) },
    )
    .await;
    // And it stays that way once every echo has been applied.
    wait_all_events_applied(&stack, &ls).await;
    wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(stack.api_customer(&id).await["name"], "Dashboard");
    assert_eq!(ls.list_customers().await[0]["name"], "Dashboard");
    assert_eq!(
        proxy.writes().len(),
        2,
        "Stripe got the create and the local edit, nothing more: {:?}",
        proxy.writes()
    );
    assert_eq!(
        stack.db.count("outbox"),
        2,
        "Stripe's edit is not sent back out"
    );
    stack.stop().await;
}

/// Invariant 6: Stripe reports the Idempotency-Key of the request behind an
/// event; events of our own writes are marked as echoes in the ledger, and
/// applying them writes nothing outward.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn echoes_of_our_own_writes_are_recognised_by_their_idempotency_key() {
    let stack = Stack::start(Options::default()).await;
    let mut own = crate::support::fixtures::customer_event(
        "evt_echo",
        "customer.updated",
        10,
        "cus_echo",
        json!({"name": "Ours"}),
    );
    own["request"] =
        json!({"id": "req_1", "idempotency_key": stripe_sync::outbox::idempotency_key(42, None)});
    let mut foreign = crate::support::fixtures::customer_event(
        "evt_foreign",
        "customer.updated",
        11,
        "cus_echo",
        json!({"name": "Theirs"}),
    );
    foreign["request"] = json!({"id": "req_2", "idempotency_key": "dashboard-edit-1"});
    assert_eq!(stack.post_event(&own).await, 200);
    assert_eq!(stack.post_event(&foreign).await, 200);
    stack.wait_ledger(2, Duration::from_secs(30)).await;
    let flags: Vec<(String, bool)> = event_ledger::table
        .order(event_ledger::event_id)
        .select((event_ledger::event_id, event_ledger::echo))
        .load(&mut stack.db.conn())
        .unwrap();
    assert_eq!(
        flags,
        [
            ("evt_echo".to_owned(), true),
            ("evt_foreign".to_owned(), false)
        ]
    );
    assert_eq!(stack.db.count("outbox"), 0);
    stack.stop().await;
}

/// One relay is active at a time (a Postgres advisory lock). A second one
/// stands by while the first runs, publishing nothing, and takes over when
/// the first stops: every change is published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_relay_takes_over_when_the_active_one_stops() {
    use stripe_sync::config::RelayConfig;
    use tokio_util::sync::CancellationToken;
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let relay = |token: CancellationToken| {
        tokio::spawn(stripe_sync::relay::run(
            RelayConfig::load(&stack.env).unwrap(),
            token,
        ))
    };
    let published = |n: i64| {
        let stack = &stack;
        async move {
            wait_for(
                Duration::from_secs(30),
                &format!("{n} changes published"),
                || async {
                    (stack.db.count("outbox WHERE published_at IS NOT NULL") == n).then_some(())
                },
            )
            .await;
        }
    };
    let first_token = CancellationToken::new();
    let first = relay(first_token.clone());
    create(&stack, json!({"email": "one@example.com"})).await;
    published(1).await;
    let second_token = CancellationToken::new();
    let second = relay(second_token.clone());
    create(&stack, json!({"email": "two@example.com"})).await;
    published(2).await;
    first_token.cancel();
    first.await.unwrap().unwrap();
    // Only the standby is left to publish this one.
    create(&stack, json!({"email": "three@example.com"})).await;
    published(3).await;
    assert_eq!(
        read_all(&stack.brokers, &stack.changes_topic).len(),
        3,
        "each change published once, whichever relay was active"
    );
    second_token.cancel();
    second.await.unwrap().unwrap();
    stack.stop().await;
}
