//! Backfill, reconcile and diff against localstripe (and a rate-limiting
//! fake), with the inbound worker applying what they publish.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use stripe_sync::config::Env;
use stripe_sync::pull::{backfill, diff, reconcile, PullConfig, PullContext};
use stripe_sync::stripe::AccountId;
use tokio_util::sync::CancellationToken;

use crate::support::fake_stripe::{FakeStripe, Fault};
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack, SECRET};
use crate::support::stripe_proxy::CountingProxy;
use crate::support::wait_for;

fn customers() -> &'static stripe_sync::registry::Resource {
    stripe_sync::registry::by_object("customer").unwrap()
}

async fn context(env: &Env) -> PullContext {
    PullContext::build(&PullConfig::load(env).unwrap())
        .await
        .unwrap()
}

/// Waits until the mirror holds exactly localstripe's live customers with
/// the same kept fields (and tombstones for `deleted`).
async fn wait_mirror_matches(stack: &Stack, ls: &LocalStripe, deleted: &[String]) {
    let live = ls.list_customers().await;
    let mismatch = || -> Option<String> {
        for c in &live {
            let id = c["id"].as_str().unwrap();
            match stack.customer(id) {
                None => return Some(format!("{id} missing")),
                Some((row, link)) => {
                    let ours = (
                        row.deleted_at.is_some(),
                        link.remote_deleted,
                        row.name.clone(),
                        row.email.clone(),
                        row.metadata.clone(),
                    );
                    let theirs = (
                        false,
                        false,
                        c["name"].as_str().map(str::to_owned),
                        c["email"].as_str().map(str::to_owned),
                        c["metadata"].clone(),
                    );
                    if ours != theirs {
                        return Some(format!("{id}: mirror {ours:?} != stripe {theirs:?}"));
                    }
                }
            }
        }
        for id in deleted {
            if stack
                .customer(id)
                .is_none_or(|(row, _)| row.deleted_at.is_none())
            {
                return Some(format!("{id} not tombstoned"));
            }
        }
        let mirrored_live = stack.db.count("customers WHERE deleted_at IS NULL");
        (mirrored_live != live.len() as i64).then(|| {
            format!(
                "{mirrored_live} live in the mirror, {} in Stripe",
                live.len()
            )
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while let Some(m) = mismatch() {
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror does not equal localstripe: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn list_calls(proxy: &CountingProxy) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/customers")
        .map(|r| r.query)
        .collect()
}

/// Issue: a few hundred customers with webhooks off; backfill brings them
/// all; killed midway and run again it continues from its checkpoint
/// without listing finished pages again (counted at the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_brings_every_customer_and_resumes_after_a_kill() {
    let ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    let total = 240;
    for i in 0..total {
        ls.create_customer(&[
            ("email", &format!("bf{i}@example.com")),
            ("name", &format!("Backfill {i}")),
        ])
        .await;
    }

    let env = stack
        .env
        .with("STRIPE_API_BASE", &proxy.base())
        .with("STRIPE_RATE_LIMIT", "8");
    let run = || {
        crate::support::spawn_captured(
            Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
                // One list call at a time: this test counts pages, and a
                // pool of workers would have the first page ask whether
                // the list takes `created` (localstripe's customer list
                // refuses it, so the page would be asked for twice).
                .args([
                    "backfill",
                    "customers",
                    "--page-size",
                    "10",
                    "--concurrency",
                    "1",
                ])
                .env_clear()
                .envs(env.vars())
                .env("RUST_LOG", "warn")
                .current_dir(std::env::temp_dir())
                .stdout(Stdio::piped()),
        )
    };
    let mut first = run();
    wait_for(Duration::from_secs(60), "a few pages listed", || async {
        (list_calls(&proxy).len() >= 8).then_some(())
    })
    .await;
    first.kill().unwrap(); // SIGKILL, mid-run
    first.wait().unwrap();
    let listed_before = list_calls(&proxy).len();
    assert!(
        listed_before < total / 10,
        "the first run finished before it was killed"
    );

    let second = run().wait_with_output().unwrap();
    assert!(second.status.success());
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("resumed from the last checkpoint"), "{out}");

    let calls = list_calls(&proxy);
    let pages = total / 10 + 1; // the last page says has_more=false
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for q in &calls {
        *seen.entry(q.as_str()).or_default() += 1;
    }
    let relisted: usize = seen.values().map(|n| n - 1).sum();
    // At most the page in flight at the kill is listed again.
    assert!(
        relisted <= 1,
        "pages listed twice: {relisted} of {} calls",
        calls.len()
    );
    assert!(
        calls.len() <= pages + 1,
        "{} list calls for {pages} pages",
        calls.len()
    );

    stack
        .wait_ledger(total as i64, Duration::from_secs(60))
        .await;
    wait_mirror_matches(&stack, &ls, &[]).await;
    assert_eq!(
        stack.ledger_count(),
        total as i64,
        "each customer applied once"
    );

    // A second complete run lists everything again, but changes nothing.
    let ctx = context(&stack.env).await;
    let report = backfill::run(
        &ctx,
        &backfill::BackfillOptions::new(customers()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.complete && !report.resumed);
    assert_eq!(report.objects, total as u64);
    stack
        .wait_ledger(total as i64, Duration::from_secs(60))
        .await;
    crate::support::broker::wait_consumed(
        &stack.brokers,
        &stack.group,
        &stack.topic,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        stack.ledger_count(),
        total as i64,
        "unchanged objects have the same snapshot id"
    );

    // With workers to spare the type would be split, but localstripe's
    // customer list refuses `created` bounds (Stripe's takes them): asked
    // once, by the first page, it is read in one slice, whole.
    let probes_before = list_calls(&proxy)
        .iter()
        .filter(|q| q.contains("created"))
        .count();
    let out = Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .args(["backfill", "customers", "--page-size", "10", "--restart"])
        .env_clear()
        .envs(env.vars())
        .env("RUST_LOG", "error")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("backfilled {total} objects")),
        "{said}"
    );
    let probes = list_calls(&proxy)
        .iter()
        .filter(|q| q.contains("created"))
        .count();
    assert_eq!(probes - probes_before, 1, "asked once");
    stack.stop().await;
}

/// localstripe's charge list takes `created` but refuses the first page's
/// `created[gte]=0` (a 400 that does not name the parameter): the answer
/// is "no", the page is asked again without it, and a pool of workers
/// reads the charges in one slice, every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_refuses_the_asking_bound_is_read_whole() {
    let ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    for amount in ["1000", "2000", "3000"] {
        let card = ls
            .call(
                reqwest::Method::POST,
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", "4242424242424242"),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2040"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        let source = card["id"].as_str().unwrap();
        ls.call(
            reqwest::Method::POST,
            "/v1/charges",
            &[("amount", amount), ("currency", "usd"), ("source", source)],
        )
        .await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .args(["backfill", "charges", "--page-size", "2"])
        .env_clear()
        .envs(stack.env.with("STRIPE_API_BASE", &proxy.base()).vars())
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let (said, logged) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{said}{logged}");
    assert!(said.contains("backfilled 3 objects"), "{said}");
    assert!(logged.contains("did not take a created bound"), "{logged}");
    let listed: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/charges")
        .map(|r| r.query)
        .collect();
    // The refused question, then two pages without it.
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed[0].contains("created"), "{listed:?}");
    assert!(
        listed[1..].iter().all(|q| !q.contains("created")),
        "{listed:?}"
    );
    stack.stop().await;
}

/// Webhooks off while customers change and some are deleted: reconcile
/// publishes what the ledger lacks, and the mirror equals localstripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_recovers_webhooks_missed_during_an_outage() {
    let ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let c = ls
            .create_customer(&[
                ("email", &format!("rc{i}@example.com")),
                ("name", &format!("R{i}")),
            ])
            .await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    for id in ids.iter().step_by(2) {
        ls.update_customer(id, &[("name", "Renamed"), ("metadata[vip]", "yes")])
            .await;
    }
    let deleted: Vec<String> = ids.iter().skip(1).step_by(3).cloned().collect();
    for id in &deleted {
        ls.delete_customer(id).await;
    }

    let ctx = context(&stack.env).await;
    let opts = reconcile::ReconcileOptions {
        account: AccountId::PLATFORM,
        since: None,
    };
    let first = reconcile::run_once(&ctx, &opts).await.unwrap();
    let events = ls.event_count("customer.").await as u64;
    assert_eq!(first.published, events);
    wait_mirror_matches(&stack, &ls, &deleted).await;
    stack
        .wait_ledger(events as i64, Duration::from_secs(30))
        .await;

    // A second pass finds nothing new.
    let second = reconcile::run_once(&ctx, &opts).await.unwrap();
    assert_eq!(second.published, 0);
    assert!(second.seen >= events, "the overlap re-reads recent events");
    stack.stop().await;
}

/// Backfill racing live webhook updates for the same customers: the final
/// state is the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_racing_live_webhooks_ends_in_the_newest_state() {
    let mut ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let c = ls
            .create_customer(&[("email", &format!("race{i}@example.com")), ("name", "v1")])
            .await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    let ctx = context(&stack.env.with("STRIPE_RATE_LIMIT", "10")).await;
    let updates = async {
        for round in 2..=3 {
            for id in &ids {
                ls.update_customer(id, &[("name", &format!("v{round}"))])
                    .await;
            }
        }
    };
    let mut opts = backfill::BackfillOptions::new(customers());
    opts.page_size = 5;
    let never = CancellationToken::new();
    let (report, ()) = tokio::join!(backfill::run(&ctx, &opts, &never), updates);
    assert!(report.unwrap().complete);
    wait_mirror_matches(&stack, &ls, &[]).await;
    for id in &ids {
        assert_eq!(stack.customer(id).unwrap().0.name.as_deref(), Some("v3"));
    }
    stack.stop().await;
}

/// The client stays under the configured rate and honours Retry-After; the
/// fake lists newest first (localstripe: oldest first) and filters by
/// created[gte]. An in-process fake, because localstripe has no rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_stays_under_the_rate_limit_and_honours_retry_after() {
    let fake = FakeStripe::start(vec![Fault::RateLimited(2)]);
    for i in 0..120 {
        fake.seed_customer(1_000 + i, json!({"email": format!("rl{i}@example.com")}));
    }
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        ..Options::default()
    })
    .await;
    let ctx = context(&stack.env.with("STRIPE_RATE_LIMIT", "10")).await;
    let mut opts = backfill::BackfillOptions::new(customers());
    opts.page_size = 5;
    opts.created_since = Some(1_020);
    let report = backfill::run(&ctx, &opts, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.objects, 100, "created_since keeps 100 of 120");

    let requests = fake.requests();
    assert_eq!(requests.len(), 1 + 20, "one 429, then 20 pages");
    assert!(
        requests
            .iter()
            .all(|r| r.query.contains("created%5Bgte%5D=1020")),
        "{:?}",
        requests[0].query
    );
    let gap_after_429 = requests[1].at - requests[0].at;
    assert!(
        gap_after_429 >= Duration::from_secs(2),
        "Retry-After ignored: {gap_after_429:?}"
    );
    for window in requests[1..].windows(11) {
        let span = window[10].at - window[0].at;
        assert!(
            span >= Duration::from_millis(950),
            "11 requests within {span:?} at 10/s"
        );
    }
    stack.wait_ledger(100, Duration::from_secs(60)).await;
    assert_eq!(stack.db.count("customers"), 100, "every snapshot applied");
    assert_eq!(
        stack.db.count("event_ledger WHERE outcome = 'upserted'"),
        100
    );
    stack.stop().await;
}

/// diff finds what differs between the mirror and Stripe; --repair
/// publishes snapshots that make them equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diff_reports_differences_and_repair_fixes_them() {
    let mut ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let c = ls
            .create_customer(&[("email", &format!("df{i}@example.com")), ("name", "same")])
            .await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    wait_mirror_matches(&stack, &ls, &[]).await;
    let ctx = context(&stack.env).await;
    let clean = diff::run(&ctx, customers(), &AccountId::PLATFORM, false)
        .await
        .unwrap();
    assert!(clean.is_clean(), "{clean}");
    assert_eq!((clean.in_stripe, clean.in_mirror), (6, 6));

    // Webhooks stop arriving; Stripe changes meanwhile; the mirror drifts.
    ls.register_webhook("http://127.0.0.1:9/nowhere", SECRET)
        .await;
    ls.update_customer(&ids[0], &[("name", "changed in Stripe")])
        .await;
    ls.delete_customer(&ids[1]).await;
    let added = ls.create_customer(&[("email", "new@example.com")]).await;
    {
        use diesel::prelude::*;
        diesel::sql_query(format!(
            "UPDATE customers SET email = 'drifted@example.com' FROM id_map WHERE id_map.local_id = customers.id AND id_map.external_id = '{}'",
            ids[2]
        ))
        .execute(&mut stack.db.conn())
        .unwrap();
    }

    let report = diff::run(&ctx, customers(), &AccountId::PLATFORM, false)
        .await
        .unwrap();
    println!("{report}");
    assert_eq!(report.missing_locally, [added["id"].as_str().unwrap()]);
    assert_eq!(report.missing_in_stripe, [ids[1].clone()]);
    let mut different: Vec<(String, Vec<&str>)> = report.different.clone();
    different.sort();
    let mut expected = vec![
        (ids[0].clone(), vec!["name"]),
        (ids[2].clone(), vec!["email"]),
    ];
    expected.sort();
    assert_eq!(different, expected);
    assert_eq!(report.api_calls, 1);

    let repaired = diff::run(&ctx, customers(), &AccountId::PLATFORM, true)
        .await
        .unwrap();
    assert_eq!(repaired.repaired, 4);
    wait_mirror_matches(&stack, &ls, &[ids[1].clone()]).await;
    let after = diff::run(&ctx, customers(), &AccountId::PLATFORM, false)
        .await
        .unwrap();
    assert!(after.is_clean(), "{after}");
    stack.stop().await;
}
