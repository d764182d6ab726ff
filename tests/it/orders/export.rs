//! The paid sessions export: files, its watermark (the order sessions
//! became paid in, never `created`), per-link filtering, a failed
//! delivery, concurrent runs and late commits. Over HTTP: `export_http`.

use std::path::{Path, PathBuf};
use std::process::Command;

use diesel::prelude::*;
use serde_json::{json, Value};
use stripe_sync::apps::orders::commands::export_paid_sessions;
use stripe_sync::apps::orders::export::{self, ExportSpec, PaidSession};

use super::{completed, post_all, session, session_event, stack_with, wait_mirrored, T};
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::stack::Stack;
use crate::support::unique;

fn spec(name: &str, links: &[&str]) -> ExportSpec {
    ExportSpec {
        name: name.into(),
        payment_links: links.iter().map(|l| l.to_string()).collect(),
        since: None,
        limit: None,
    }
}

pub(super) fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("exports"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The export files in `dir`, oldest first, each as its sessions' ids.
fn files(dir: &Path) -> Vec<Vec<Value>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("paid_sessions_") && name.ends_with(".json"),
            "only finished export files are left behind: {name}"
        );
    }
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

pub(super) fn ids(sessions: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = sessions
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn run(stack: &Stack, spec: &ExportSpec, dir: &Path) -> String {
    export_paid_sessions(&mut stack.db.conn(), spec, dir).unwrap()
}

/// The `stripe-sync export paid-sessions` command, as an operator runs it.
pub(super) fn run_cli(stack: &Stack, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .args(["export", "paid-sessions"])
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &stack.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_follows_the_order_sessions_became_paid_in() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let dir = out_dir();
    let dir_arg = dir.to_str().unwrap();
    // Two paid today; one created yesterday still waits for its async payment.
    let yesterday = T - 86_400;
    post_all(
        &stack,
        &[
            completed(
                "evt_a",
                "cs_a",
                "paid",
                json!({"customer_email": "a@example.com"}),
            ),
            completed("evt_b", "cs_b", "paid", json!({})),
            session_event(
                "evt_old",
                "checkout.session.completed",
                yesterday,
                session("cs_old", yesterday, "unpaid", json!({"status": "complete"})),
            ),
        ],
    )
    .await;
    wait_mirrored(&stack, "paid", 2).await;
    wait_mirrored(&stack, "unpaid", 1).await;

    let (ok, said) = run_cli(&stack, &["--name", "n8n", "--out", dir_arg]);
    assert!(ok, "{said}");
    assert!(said.contains("exported 2 paid session(s)"), "{said}");
    let first = &files(&dir)[0];
    assert_eq!(ids(first), ["cs_a", "cs_b"]);
    let a = first.iter().find(|s| s["id"] == "cs_a").unwrap();
    assert_eq!(a["customer_email"], "a@example.com");
    assert_eq!(a["customer_name"], "Buyer cs_a");
    assert_eq!(a["amount_total"], 2500);
    assert_eq!(a["currency"], "usd");
    assert_eq!(a["created"], "2025-11-24T16:00:00Z");
    assert_eq!(a["payment_link"], Value::Null);
    // Top-level email empty: the one from customer_details.
    let b = first.iter().find(|s| s["id"] == "cs_b").unwrap();
    assert_eq!(b["customer_email"], "example@example.com");

    let (ok, said) = run_cli(&stack, &["--name", "n8n", "--out", dir_arg]);
    assert!(ok && said.contains("no new paid sessions"), "{said}");
    assert_eq!(files(&dir).len(), 1, "nothing new, no file");

    // Yesterday's session is paid now, and two more arrive in the same second.
    post_all(
        &stack,
        &[
            session_event(
                "evt_old_paid",
                "checkout.session.async_payment_succeeded",
                T + 5,
                session("cs_old", yesterday, "paid", json!({})),
            ),
            session_event(
                "evt_c",
                "checkout.session.completed",
                T + 5,
                session("cs_c", T + 5, "paid", json!({})),
            ),
            session_event(
                "evt_d",
                "checkout.session.completed",
                T + 5,
                session("cs_d", T + 5, "paid", json!({})),
            ),
        ],
    )
    .await;
    wait_mirrored(&stack, "paid", 5).await;
    let said = run(&stack, &spec("n8n", &[]), &dir);
    assert!(said.contains("exported 3"), "{said}");
    let got = files(&dir);
    assert_eq!(got.len(), 2);
    assert_eq!(ids(&got[1]), ["cs_c", "cs_d", "cs_old"]);

    // Another name has its own watermark; --since filters on `created`.
    let other = out_dir();
    let (ok, said) = run_cli(
        &stack,
        &[
            "--name",
            "fresh",
            "--out",
            other.to_str().unwrap(),
            "--since",
            "2025-11-24T16:00:05Z",
        ],
    );
    assert!(ok, "{said}");
    assert_eq!(ids(&files(&other)[0]), ["cs_c", "cs_d"]);

    // Bad input is refused with a clear message, and changes nothing.
    let (ok, said) = run_cli(&stack, &["--name", "n8n", "--payment-link", "price_1"]);
    assert!(!ok && said.contains("not a payment link id"), "{said}");
    let (ok, said) = run_cli(&stack, &["--name", "no spaces"]);
    assert!(!ok && said.contains("not an export name"), "{said}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_export_takes_only_its_payment_links() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let mut events = Vec::new();
    for (n, link) in ["plink_shirts", "plink_shirts", "plink_mugs", "plink_books"]
        .iter()
        .enumerate()
    {
        let id = format!("cs_{n}");
        events.push(session_event(
            &format!("evt_{n}"),
            "checkout.session.completed",
            T + n as i64,
            session(&id, T, "paid", json!({"payment_link": link})),
        ));
    }
    events.push(completed("evt_nolink", "cs_nolink", "paid", json!({})));
    post_all(&stack, &events).await;
    wait_mirrored(&stack, "paid", 5).await;

    let exported = |name: &str, links: &[&str]| {
        let mut got = Vec::new();
        export::run(&mut stack.db.conn(), &spec(name, links), |s, _| {
            got.extend(s.iter().map(|s| s.id.clone()));
            Ok(())
        })
        .unwrap();
        got.sort();
        got
    };
    assert_eq!(exported("shirts", &["plink_shirts"]), ["cs_0", "cs_1"]);
    assert_eq!(
        exported("gifts", &["plink_mugs", "plink_books"]),
        ["cs_2", "cs_3"]
    );
    assert_eq!(
        exported("everything", &[]),
        ["cs_0", "cs_1", "cs_2", "cs_3", "cs_nolink"]
    );
    // A later session of another link moves `shirts` past it, silently.
    post_all(
        &stack,
        &[session_event(
            "evt_m2",
            "checkout.session.completed",
            T + 9,
            session("cs_m2", T, "paid", json!({"payment_link": "plink_mugs"})),
        )],
    )
    .await;
    wait_mirrored(&stack, "paid", 6).await;
    assert!(exported("shirts", &["plink_shirts"]).is_empty());
    assert_eq!(exported("gifts", &["plink_mugs", "plink_books"]), ["cs_m2"]);
    stack.stop().await;
}

/// A delivery that fails after writing its temporary file (what a crash
/// before the rename leaves, as far as Postgres can tell: the transaction
/// never commits) moves nothing: the next run delivers the same sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_fails_before_the_rename_is_repeated_not_skipped() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    post_all(
        &stack,
        &[
            completed("evt_1", "cs_1", "paid", json!({})),
            completed("evt_2", "cs_2", "paid", json!({})),
        ],
    )
    .await;
    wait_mirrored(&stack, "paid", 2).await;
    let dir = out_dir();
    let failed = export::run(&mut stack.db.conn(), &spec("zap", &[]), |sessions, _| {
        std::fs::write(
            dir.join(".paid_sessions_crashed.json.1.partial"),
            serde_json::to_vec(sessions)?,
        )?;
        anyhow::bail!("killed before the rename")
    });
    assert!(failed.is_err());
    std::fs::remove_file(dir.join(".paid_sessions_crashed.json.1.partial")).unwrap();
    run(&stack, &spec("zap", &[]), &dir);
    assert_eq!(ids(&files(&dir)[0]), ["cs_1", "cs_2"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_of_one_export_never_emit_a_session_twice() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let events: Vec<Value> = (0..30)
        .map(|n| {
            completed(
                &format!("evt_{n}"),
                &format!("cs_{n:02}"),
                "paid",
                json!({}),
            )
        })
        .collect();
    let posting = post_all(&stack, &events);
    // Runs race each other while sessions are still arriving.
    let racers = async {
        let mut handles = Vec::new();
        for _ in 0..4 {
            let pool = stack.db.pool.clone();
            handles.push(tokio::task::spawn_blocking(move || {
                let mut got: Vec<String> = Vec::new();
                for _ in 0..40 {
                    let mut conn = pool.get().unwrap();
                    export::run(&mut conn, &spec("race", &[]), |s: &[PaidSession], _| {
                        got.extend(s.iter().map(|s| s.id.clone()));
                        Ok(())
                    })
                    .unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                got
            }));
        }
        futures::future::join_all(handles).await
    };
    let (_, runs) = tokio::join!(posting, racers);
    wait_mirrored(&stack, "paid", 30).await;
    let mut all: Vec<String> = runs.into_iter().flat_map(|r| r.unwrap()).collect();
    let mut last = Vec::new();
    export::run(&mut stack.db.conn(), &spec("race", &[]), |s, _| {
        last.extend(s.iter().map(|s| s.id.clone()));
        Ok(())
    })
    .unwrap();
    all.extend(last);
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, all.len(), "a session was emitted twice");
    assert_eq!(all.len(), 30, "every session emitted once: {all:?}");
    stack.stop().await;
}

/// Two transactions record paid sessions; the one that began first commits
/// last (two apply lanes do this). A watermark on the recording order
/// alone would pass the late one while it was invisible and skip it for
/// good; the export waits for it instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_committed_late_is_not_skipped() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    // The mirror is written directly here to hold a transaction open at a
    // chosen point; the trigger records the sessions as for any apply.
    let insert = |conn: &mut PgConnection, id: &str| {
        diesel::sql_query(
            "INSERT INTO stripe.checkout_sessions (account, id, data, remote_version, remote_event_id) \
             VALUES ('platform', $1, $2, 1, 'evt_x')",
        )
        .bind::<diesel::sql_types::Text, _>(id)
        .bind::<diesel::sql_types::Jsonb, _>(session(id, T, "paid", json!({})))
        .execute(conn)
        .unwrap();
    };
    let mut slow = stack.db.conn();
    diesel::sql_query("BEGIN").execute(&mut slow).unwrap();
    insert(&mut slow, "cs_slow");
    insert(&mut stack.db.conn(), "cs_fast");

    let dir = out_dir();
    run(&stack, &spec("late", &[]), &dir);
    diesel::sql_query("COMMIT").execute(&mut slow).unwrap();
    run(&stack, &spec("late", &[]), &dir);
    let all: Vec<Value> = files(&dir).into_iter().flatten().collect();
    assert_eq!(ids(&all), ["cs_fast", "cs_slow"]);
    stack.stop().await;
}
