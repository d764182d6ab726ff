//! Operating it: topic inspection, DLQ replay, admin JSON, metrics and
//! health, with the real binaries and the real broker.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::broker::wait_consumed;
use crate::support::fake_stripe::{FakeStripe, Fault};
use crate::support::fixtures::customer_event;
use crate::support::stack::{Options, Stack};
use crate::support::{json_of, wait_for};

/// Runs `stripe-sync ARGS` with the stack's configuration.
fn cli(stack: &Stack, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .args(args)
        .env_clear()
        .envs(stack.env.vars())
        .env("RUST_LOG", "error")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stripe-sync {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `topics lag` rows without their ages, which move with the clock.
fn offsets_of(lag: &Value) -> Value {
    let mut rows = lag.clone();
    for row in rows.as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("oldest_age_seconds");
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_list_lag_and_tail_show_what_is_inside() {
    let stack = Stack::start(Options::default()).await;
    let before_posting = std::time::Instant::now();
    for i in 0..5 {
        let e = customer_event(
            &format!("evt_ops{i}"),
            "customer.created",
            100 + i,
            &format!("cus_ops{i}"),
            json!({}),
        );
        assert_eq!(stack.post_event(&e).await, 200);
    }
    let after_posting = std::time::Instant::now();
    wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(60),
    )
    .await;

    // A group that never read the topic waits on its first messages: their
    // age is the time since they were posted, within the posting's span.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = std::time::Instant::now();
    let idle: Value = serde_json::from_str(&cli(
        &stack,
        &["topics", "lag", "--group", "ops-test-idle", "--json"],
    ))
    .unwrap();
    let (earliest, latest) = (
        (asked - after_posting).as_secs_f64() - 0.1,
        before_posting.elapsed().as_secs_f64() + 0.1,
    );
    let waiting: Vec<&Value> = idle
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["topic"] == stack.topic.as_str() && r["lag"].as_i64() > Some(0))
        .collect();
    assert!(!waiting.is_empty(), "{idle}");
    for row in waiting {
        let age = row["oldest_age_seconds"].as_f64().unwrap_or(-1.0);
        assert!(
            (earliest..=latest).contains(&age),
            "waiting {age} s, expected {earliest:.1}..{latest:.1}: {row}"
        );
    }
    let idle_table = cli(&stack, &["topics", "lag", "--group", "ops-test-idle"]);
    assert!(
        idle_table.contains("AGE") && idle_table.contains("oldest waiting: "),
        "{idle_table}"
    );

    let topics: Value = serde_json::from_str(&cli(&stack, &["topics", "list", "--json"])).unwrap();
    let events = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == stack.topic.as_str())
        .unwrap();
    assert_eq!(events["messages"], 5);
    assert_eq!(events["partitions"].as_array().unwrap().len(), 3);
    let table = cli(&stack, &["topics", "list"]);
    assert!(
        table.starts_with("TOPIC") && table.contains(&stack.topic),
        "{table}"
    );

    let lag: Value = serde_json::from_str(&cli(&stack, &["topics", "lag", "--json"])).unwrap();
    let inbound: Vec<&Value> = lag
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"] == stack.group.as_str())
        .collect();
    assert_eq!(inbound.len(), 3);
    assert!(inbound.iter().all(|r| r["lag"] == 0), "{lag}");
    assert!(
        inbound.iter().all(|r| r["oldest_age_seconds"] == 0.0),
        "caught up means nothing waits: {lag}"
    );
    let committed: i64 = inbound
        .iter()
        .map(|r| r["committed"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(committed, 5);

    let tail = cli(
        &stack,
        &["topics", "tail", &stack.topic, "--from-beginning", "--json"],
    );
    let lines: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines
        .iter()
        .all(|m| m["payload"]["type"] == "customer.created"));
    let one = cli(
        &stack,
        &[
            "topics",
            "tail",
            &stack.topic,
            "--from-beginning",
            "--key",
            "cus_ops3",
            "--json",
        ],
    );
    let one: Value = serde_json::from_str(one.trim()).unwrap();
    assert_eq!(one["payload"]["id"], "evt_ops3");
    let pretty = cli(&stack, &["topics", "tail", &stack.topic, "--last", "1"]);
    assert!(
        pretty.contains("\"id\": \"evt_ops") && pretty.contains("\"object\": \"event\""),
        "{pretty}"
    );

    // Inspection never moved the workers' offsets (the ages of groups that
    // do not consume, such as the notifier's here, grow meanwhile).
    let lag_after: Value =
        serde_json::from_str(&cli(&stack, &["topics", "lag", "--json"])).unwrap();
    assert_eq!(offsets_of(&lag), offsets_of(&lag_after));

    // The same through the admin API.
    let admin: Value = json_of(stack.admin(Method::GET, "/api/admin/lag")).await;
    assert_eq!(offsets_of(&admin), offsets_of(&lag));
    assert!(
        admin
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("oldest_age_seconds").is_some()),
        "{admin}"
    );
    let r = stack
        .http
        .get(format!("http://{}/api/admin/topics", stack.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "admin needs the token");
    // Each token opens its own routes only.
    let r = stack
        .api(Method::GET, "/api/admin/topics")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the API token cannot use the admin API");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "forbidden");
    let r = stack
        .admin(Method::GET, "/api/customers")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the admin token is not an API token");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "forbidden");
    let r = stack
        .admin(Method::GET, "/api/admin/topics")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stack.stop().await;
}

/// A change Stripe refused goes to the DLQ; once the cause is fixed, a
/// replay puts it back and it succeeds; `dlq list` then shows it replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_can_be_listed_shown_and_replayed_once_fixed() {
    let fake = FakeStripe::start(vec![Fault::Refuse(
        "Your account cannot currently make live charges.".into(),
    )]);
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        start_outbound: true,
        start_worker: false,
        ..Options::default()
    })
    .await;
    let r = stack
        .api(Method::POST, "/api/customers")
        .json(&json!({"email": "dlq@example.com"}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .wait_sync_status(&id, "failed", Duration::from_secs(30))
        .await;

    let listed = wait_for(
        Duration::from_secs(30),
        "the dead letter in dlq list",
        || async {
            let v: Value = serde_json::from_str(&cli(&stack, &["dlq", "list", "--json"])).unwrap();
            (v.as_array().unwrap().len() == 1).then_some(v)
        },
    )
    .await;
    let letter = &listed[0];
    let dlq_id = letter["id"].as_str().unwrap().to_owned();
    assert_eq!(letter["source_topic"], stack.changes_topic.as_str());
    assert!(letter["error"]
        .as_str()
        .unwrap()
        .contains("cannot currently make live charges"));
    let shown = cli(&stack, &["dlq", "show", &dlq_id]);
    assert!(shown.contains("error: ") && shown.contains(&id), "{shown}");
    let admin: Value = json_of(stack.admin(Method::GET, &format!("/api/admin/dlq/{dlq_id}"))).await;
    assert_eq!(admin["dead_letter"]["id"], dlq_id.as_str());
    assert_eq!(admin["message"]["payload"]["local_id"], id.as_str());
    // The admin listing reads a window per partition, never whole topics.
    let window: Value = json_of(stack.admin(Method::GET, "/api/admin/dlq?last=1")).await;
    assert_eq!(window.as_array().unwrap().len(), 1, "{window}");
    for bad in ["last=0", "last=1001", "last=x", "from=0"] {
        let r = stack
            .admin(Method::GET, &format!("/api/admin/dlq?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let unknown = stack
        .admin(Method::GET, &format!("/api/admin/dlq/{dlq_id}9"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        404,
        "an offset past the end is no dead letter"
    );

    // The cause is fixed (the fake's refusal was one-off): replay.
    let replayed = cli(&stack, &["dlq", "replay", "--id", &dlq_id]);
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let synced = stack
        .wait_sync_status(&id, "synced", Duration::from_secs(30))
        .await;
    assert_eq!(synced["sync"]["stripe"]["error"], Value::Null);
    assert_eq!(fake.created(), 1);
    let pending: Value = serde_json::from_str(&cli(&stack, &["dlq", "list", "--json"])).unwrap();
    assert_eq!(
        pending,
        json!([]),
        "a replayed dead letter is no longer pending"
    );
    let all: Value =
        serde_json::from_str(&cli(&stack, &["dlq", "list", "--all", "--json"])).unwrap();
    assert!(all[0]["replayed_at"].is_string());
    let r = stack
        .admin(Method::POST, "/api/admin/dlq/nope:0:0/replay")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    stack.stop().await;
}
