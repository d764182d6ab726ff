//! `stripe-sync prune` against a real database: what is old and done goes;
//! what is young, pending or failed stays; an age under 30 days is refused;
//! `--every` keeps pruning until SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::prelude::*;

use crate::support::db::TestDb;
use crate::support::wait_for;

fn run(db: &TestDb, args: &[&str]) -> std::process::Output {
    run_with(db, args, &[])
}

/// `stripe-sync prune ARGS` with these variables besides the database's.
fn run_with(db: &TestDb, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .arg("prune")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "error")
        .envs(vars.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

fn sql(db: &TestDb, statement: &str) {
    diesel::sql_query(statement)
        .execute(&mut db.conn())
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// A ledger row processed `days` ago.
fn ledger_row(db: &TestDb, id: &str, days: i64) {
    sql(
        db,
        &format!(
            "INSERT INTO event_ledger (service, account, event_id, event_type, object_id, event_created, outcome, processed_at) \
             VALUES ('stripe', 'platform', '{id}', 'customer.updated', 'cus_1', 1, 'upserted', now() - interval '{days} days')"
        ),
    );
}

/// An outbox row published `days` ago (unless `published` is false), with
/// a delivery of `status` (none when `None`).
fn outbox_row(db: &TestDb, id: i64, days: i64, published: bool, status: Option<&str>) {
    let published_at = if published {
        format!("now() - interval '{days} days'")
    } else {
        "NULL".to_owned()
    };
    sql(
        db,
        &format!(
            "INSERT INTO outbox (id, entity, local_id, operation, created_at, published_at) \
             VALUES ({id}, 'customer', gen_random_uuid(), 'update', now() - interval '{days} days', {published_at})"
        ),
    );
    if let Some(status) = status {
        sql(
            db,
            &format!(
                "INSERT INTO outbox_deliveries (outbox_id, service, status) VALUES ({id}, 'stripe', '{status}')"
            ),
        );
    }
}

fn notification(db: &TestDb, id: i64, days: i64, status: &str) {
    let sent_at = if status == "sent" {
        format!("now() - interval '{days} days'")
    } else {
        "NULL".to_owned()
    };
    sql(
        db,
        &format!(
            "INSERT INTO orders.notifications \
               (id, account, order_key, session_id, event_id, event, order_data, message_id, status, created_at, sent_at) \
             VALUES ({id}, 'platform', 'checkout_session:cs_{id}', 'cs_{id}', 'evt_{id}', '{{}}', '{{}}', 'm{id}', \
                     '{status}', now() - interval '{days} days', {sent_at})"
        ),
    );
}

/// A batch of the HTTP export, acknowledged `days` ago (`None`: pending).
fn export_batch(db: &TestDb, name: &str, days: i64, acked_days: Option<i64>) {
    let acked_at = acked_days.map_or("NULL".to_owned(), |d| {
        format!("now() - interval '{d} days'")
    });
    sql(
        db,
        &format!(
            "INSERT INTO orders.export_batches (id, name, from_xid, from_seq, to_xid, to_seq, \
               payment_links, max_sessions, count, has_more, leased_until, created_at, acked_at) \
             VALUES (gen_random_uuid(), '{name}', 0, 0, 1, 1, '{{}}', 10, 1, false, now(), \
                     now() - interval '{days} days', {acked_at})"
        ),
    );
}

/// A raw event in `stripe.events`, received `days` ago.
fn raw_event(db: &TestDb, id: &str, days: i64) {
    sql(
        db,
        &format!(
            "INSERT INTO stripe.events (account, id, type, created, livemode, object_id, data, received_at) \
             VALUES ('platform', '{id}', 'customer.updated', now(), false, 'cus_1', '{{}}', \
                     now() - interval '{days} days')"
        ),
    );
}

#[tokio::test]
async fn prune_deletes_only_what_is_old_and_done() {
    let db = TestDb::migrated();
    ledger_row(&db, "evt_old", 40);
    ledger_row(&db, "evt_young", 10);
    outbox_row(&db, 1, 40, true, Some("synced")); // goes
    outbox_row(&db, 2, 40, true, Some("failed")); // an operator's to see
    outbox_row(&db, 3, 40, false, None); // not published yet
    outbox_row(&db, 4, 40, true, None); // published, not delivered yet
    outbox_row(&db, 5, 10, true, Some("synced")); // young
    notification(&db, 1, 40, "sent"); // goes
    notification(&db, 2, 40, "failed");
    notification(&db, 3, 10, "sent");
    export_batch(&db, "acked_old", 41, Some(40)); // goes
    export_batch(&db, "acked_young", 41, Some(10));
    export_batch(&db, "pending_old", 40, None); // never acknowledged: stays
    raw_event(&db, "evt_raw_old", 31); // past the default 30d retention
    raw_event(&db, "evt_raw_week", 7);
    raw_event(&db, "evt_raw_new", 1);

    let refused = run(&db, &["--older-than", "7d"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("30 days"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        db.count("event_ledger"),
        2,
        "a refused prune deletes nothing"
    );

    let out = run(&db, &["--older-than", "35d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pruned 1 ledger rows, 1 outbox rows (1 deliveries), 1 sent notifications, \
         1 acknowledged export batches, 1 raw events"
    );
    assert_eq!(db.count("stripe.events"), 2);
    assert_eq!(db.count("event_ledger WHERE event_id = 'evt_young'"), 1);
    assert_eq!(db.count("event_ledger"), 1);
    assert_eq!(db.count("outbox WHERE id IN (2, 3, 4, 5)"), 4);
    assert_eq!(db.count("outbox"), 4);
    assert_eq!(db.count("outbox_deliveries"), 2);
    assert_eq!(db.count("orders.notifications WHERE id IN (2, 3)"), 2);
    assert_eq!(db.count("orders.notifications"), 2);
    assert_eq!(
        db.count("orders.export_batches WHERE name IN ('acked_young', 'pending_old')"),
        2
    );
    assert_eq!(db.count("orders.export_batches"), 2);

    // The raw events have their own age, with no 30-day floor; `off`
    // keeps none.
    let week = run_with(
        &db,
        &["--older-than", "35d"],
        &[("STRIPE_EVENTS_RETENTION", "2d")],
    );
    assert!(
        week.status.success(),
        "{}",
        String::from_utf8_lossy(&week.stderr)
    );
    assert_eq!(db.count("stripe.events WHERE id = 'evt_raw_new'"), 1);
    assert_eq!(db.count("stripe.events"), 1);
    let bad = run_with(&db, &[], &[("STRIPE_EVENTS_RETENTION", "forever")]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("STRIPE_EVENTS_RETENTION"));
    let off = run_with(&db, &[], &[("STRIPE_EVENTS_RETENTION", "off")]);
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert_eq!(db.count("stripe.events"), 0);

    // --every keeps going: rows old enough are pruned round after round,
    // and SIGTERM ends it cleanly.
    sql(&db, "DELETE FROM event_ledger");
    ledger_row(&db, "evt_aged_1", 31);
    let mut every = Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .args(["prune", "--older-than", "30d", "--every", "1s"])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the first round", || async {
        (db.count("event_ledger") == 0).then_some(())
    })
    .await;
    ledger_row(&db, "evt_aged_2", 31);
    wait_for(Duration::from_secs(30), "a later round", || async {
        (db.count("event_ledger") == 0).then_some(())
    })
    .await;
    let ok = Command::new("kill")
        .args(["-TERM", &every.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = every.wait().unwrap();
    assert!(status.success(), "prune --every exited with {status}");
}
