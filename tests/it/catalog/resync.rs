//! `resync ID…` and `POST /api/admin/resync`: objects read by id and
//! published as snapshots, through the ledger and the ordering. Stripe's
//! read API is the fixture-backed fake (localstripe and
//! stripe-stateful-mock lack most of these types).

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stripe_sync::ingest::unix_now;
use stripe_sync::registry;
use stripe_sync::stripe::PLATFORM_ACCOUNT;

use super::{catalog_stack, event, object, post_all, rows, CONNECTED, T};
use crate::support::catalog_stripe::{CatalogStripe, Fault};
use crate::support::stack::Stack;
use crate::support::wait_for;

fn version_of(stack: &Stack, object: &str, account: &str, id: &str) -> Option<(String, bool)> {
    rows(stack, registry::by_object(object).unwrap(), account)
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| {
            (
                r.data["metadata"]["v"].as_str().unwrap_or("").to_owned(),
                r.deleted,
            )
        })
}

/// A missed update is read and applied; an object Stripe no longer has is
/// tombstoned; a read older than the mirror's state changes nothing (the
/// ordering holds); the same id twice is two events, applied as one state;
/// bad ids are refused whole before anything is read or published; the
/// command line does the same and fails when an object cannot be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_read_by_id_and_go_through_the_ledger_and_ordering() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let wait = Duration::from_secs(60);
    let product = registry::by_object("product").unwrap();
    let schedule = registry::by_object("subscription_schedule").unwrap();
    let coupon = registry::by_object("coupon").unwrap();
    let person = registry::by_object("person").unwrap();
    // The mirror saw v1 of each; Stripe has v2 of the product and the
    // schedule (those webhooks were lost), no longer has the coupon, and
    // has v0 of the "future" product, whose stored state (v9, from an
    // event stamped an hour ahead) is newer than any read now.
    let ahead = unix_now() + 3_600;
    post_all(
        &stack,
        &[
            event(
                PLATFORM_ACCOUNT,
                "evt_r1",
                "product.updated",
                T,
                object(product, "prod_r", T, "v1", 0),
            ),
            event(
                PLATFORM_ACCOUNT,
                "evt_r2",
                "subscription_schedule.updated",
                T,
                object(schedule, "sub_sched_r", T, "v1", 0),
            ),
            event(
                PLATFORM_ACCOUNT,
                "evt_r3",
                "coupon.updated",
                T,
                object(coupon, "SUMMER25", T, "v1", 0),
            ),
            event(
                PLATFORM_ACCOUNT,
                "evt_r4",
                "product.updated",
                ahead,
                object(product, "prod_future", T, "v9", 0),
            ),
        ],
    )
    .await;
    stack.wait_ledger(4, wait).await;
    fake.put(
        PLATFORM_ACCOUNT,
        "products",
        object(product, "prod_r", T, "v2", 0),
    );
    fake.put(
        PLATFORM_ACCOUNT,
        "subscription_schedules",
        object(schedule, "sub_sched_r", T, "v2", 0),
    );
    fake.put(
        PLATFORM_ACCOUNT,
        "products",
        object(product, "prod_future", T, "v0", 0),
    );

    // Refused whole: one bad id and nothing is read or published.
    let calls_before = fake.calls().len();
    for (body, field) in [
        (json!({"ids": ["prod_r", "SUMMER25"]}), "ids"),
        (json!({"ids": ["prod_r", "prod_../x"]}), "ids"),
        (json!({"ids": ["cbtxn_1"]}), "ids"),
        (json!({"ids": ["person_1"]}), "ids"),
        (json!({"ids": []}), "ids"),
        (json!({"ids": ["prod_r"], "type": "nope"}), "type"),
        (json!({"ids": ["prod_r"], "type": "coupon"}), "ids"),
    ] {
        let resp = stack
            .admin(Method::POST, "/api/admin/resync")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let resp = stack
        .admin(Method::POST, "/api/admin/resync")
        .json(&json!({"ids": ["prod_r"], "account": "cus_1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = stack
        .api(Method::POST, "/api/admin/resync")
        .json(&json!({"ids": ["prod_r"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "the API token is not the admin's"
    );
    assert_eq!(fake.calls().len(), calls_before, "nothing was read");

    // An id Stripe never had, and the mirror neither: an error, never a
    // tombstone (which would be final).
    let resp = stack
        .admin(Method::POST, "/api/admin/resync")
        .json(&json!({"ids": ["prod_typo"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["failed"][0]["code"], "not_found", "{answer}");

    let resp = stack
        .admin(Method::POST, "/api/admin/resync")
        .json(&json!({"ids": ["prod_r", "sub_sched_r", "prod_future", "prod_r"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Value = resp.json().await.unwrap();
    let resynced = answer["resynced"].as_array().unwrap();
    assert_eq!(resynced.len(), 4, "{answer}");
    assert_eq!(resynced[1]["relation"], "subscription_schedules");
    assert_eq!(resynced[0]["state"], "live");
    assert_ne!(
        resynced[0]["event_id"], resynced[3]["event_id"],
        "a fresh event each time"
    );
    stack.wait_ledger(8, wait).await;
    assert_eq!(
        version_of(&stack, "product", PLATFORM_ACCOUNT, "prod_typo"),
        None,
        "no row for the typo"
    );
    wait_for(wait, "the missed updates applied", || async {
        (version_of(&stack, "product", PLATFORM_ACCOUNT, "prod_r") == Some(("v2".into(), false))
            && version_of(
                &stack,
                "subscription_schedule",
                PLATFORM_ACCOUNT,
                "sub_sched_r",
            ) == Some(("v2".into(), false)))
        .then_some(())
    })
    .await;
    assert_eq!(
        version_of(&stack, "product", PLATFORM_ACCOUNT, "prod_future"),
        Some(("v9".into(), false)),
        "a read older than the stored state changes nothing"
    );

    // The command line: a coupon named by its type, gone from Stripe, and
    // a connected account's person read under it.
    let mut p = object(person, "person_r", T, "v2", 0);
    p["account"] = json!(CONNECTED);
    fake.put(CONNECTED, &format!("accounts/{CONNECTED}/persons"), p);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
            .arg("resync")
            .args(args)
            .env_clear()
            .envs(stack.env.vars())
            .env("STRIPE_API_BASE", fake.base())
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let out = cli(&["SUMMER25", "--type", "coupon"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUMMER25 coupon [platform] deleted"));
    let out = cli(&["person_r", "--account", CONNECTED]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        wait,
        "the coupon tombstoned and the person read",
        || async {
            (version_of(&stack, "coupon", PLATFORM_ACCOUNT, "SUMMER25")
                .is_some_and(|(_, deleted)| deleted)
                && version_of(&stack, "person", CONNECTED, "person_r")
                    == Some(("v2".into(), false)))
            .then_some(())
        },
    )
    .await;
    // Refused before reading, and an object that cannot be read fails
    // the command.
    let out = cli(&["SUMMER25"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--type"));
    fake.fault("products/prod_r", Fault::PlainNotFound);
    let out = cli(&["prod_r"]);
    assert!(
        !out.status.success(),
        "a plain 404 is a failure, never a delete"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("prod_r failed"));
    assert_eq!(
        version_of(&stack, "product", PLATFORM_ACCOUNT, "prod_r"),
        Some(("v2".into(), false))
    );
    stack.stop().await;
}
