//! Backfill, diff and reconcile of non-customer types against the
//! fixture-backed Stripe fake, with the inbound worker applying what they
//! publish.

use std::time::Duration;

use serde_json::json;
use stripe_sync::ingest::unix_now;
use stripe_sync::pull::refresh::{self, RefreshReport};
use stripe_sync::pull::{backfill, diff, reconcile, PullConfig, PullContext};
use stripe_sync::registry::{self, Resource, Source};
use stripe_sync::stripe::{AccountId, PLATFORM_ACCOUNT};
use tokio_util::sync::CancellationToken;

use super::{catalog_stack, child_item, event, mirrored, object, post_all, rows, CONNECTED, T};
use crate::support::catalog_stripe::{CatalogStripe, Fault};
use crate::support::fixtures;
use crate::support::stack::Stack;
use crate::support::wait_for;

async fn pull_context(stack: &Stack, fake: &CatalogStripe) -> PullContext {
    let env = stack
        .env
        .with("STRIPE_API_BASE", &fake.base())
        .with("STRIPE_API_KEY", "sk_test_catalog");
    PullContext::build(&PullConfig::load(&env).unwrap())
        .await
        .unwrap()
}

/// Backfill of every type from the fake: customers first (the types Stripe
/// lists per customer need them), then everything, prices and invoices past
/// one page; a run that dies mid-way resumes from its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_covers_every_type_and_resumes() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let ctx = pull_context(&stack, &fake).await;
    let customer = registry::by_object("customer").unwrap();
    for n in 0..3 {
        let c = fixtures::customer(&format!("cus_bf{n}"), T, json!({"metadata": {}}));
        fake.put(PLATFORM_ACCOUNT, "customers", c);
    }
    let many = |object: &str| match object {
        "price" => 130,
        "invoice" => 105,
        _ => 1,
    };
    let mut expected = 0;
    // A type Stripe has no list of is not in Stripe's lists, and the
    // platform's own persons and external accounts are not listed (the
    // engine does not know the platform's acct_… id; `listed_on_platform`).
    for r in mirrored().filter(|r| listed_on_platform(r)) {
        for n in 0..many(r.object) {
            let id = format!("b{n}_{}", r.relation);
            let mut o = object(r, &id, T + n as i64, "bf", 1);
            let path = match r.listed_per() {
                Some(parent) => {
                    o[parent.field] = json!("cus_bf1");
                    stripe_sync::pull::list_under(r, "cus_bf1").unwrap().0
                }
                None => r.path.to_owned(),
            };
            fake.put(PLATFORM_ACCOUNT, &path, o);
            expected += 1;
        }
        if r.object == "checkout.session" {
            let items = vec![child_item(&r.children[0], "b0_checkout_sessions", 0)];
            fake.put_nested(
                PLATFORM_ACCOUNT,
                r.path,
                "b0_checkout_sessions",
                "line_items",
                items,
            );
        }
    }
    let stop = CancellationToken::new();
    let run = |r: &'static Resource| backfill::BackfillOptions::new(r);
    backfill::run(&ctx, &run(customer), &stop).await.unwrap();
    wait_for(Duration::from_secs(60), "customers applied", || async {
        (stack.db.count("stripe.customers") == 3).then_some(())
    })
    .await;

    // The second page of prices fails for good: the run stops there...
    let prices = registry::by_object("price").unwrap();
    fake.fault("prices", Fault::Pass);
    fake.fault("prices", Fault::PlainNotFound);
    assert!(backfill::run(&ctx, &run(prices), &stop).await.is_err());
    // ...and the next run resumes after the checkpointed first page.
    let resumed = backfill::run(&ctx, &run(prices), &stop).await.unwrap();
    assert!(resumed.resumed && resumed.complete, "{resumed:?}");
    assert_eq!(resumed.objects, 30);

    for r in mirrored().filter(|r| r.object != "price") {
        let report = backfill::run(&ctx, &run(r), &stop).await.unwrap();
        assert_eq!(report.listable, r.listing != registry::Listing::None);
    }
    wait_for(
        Duration::from_secs(120),
        "every backfilled object applied",
        || async {
            let total: i64 = mirrored().map(|r| stack.db.count(&r.table())).sum();
            (total == expected).then_some(())
        },
    )
    .await;
    for r in mirrored() {
        let listed = if listed_on_platform(r) {
            many(r.object) as i64
        } else {
            0
        };
        assert_eq!(stack.db.count(&r.table()), listed, "{}", r.relation);
    }
    assert_eq!(stack.db.count("stripe.checkout_session_line_items"), 1);
    stack.stop().await;
}

/// Whether a backfill on the platform lists the type at all.
fn listed_on_platform(r: &Resource) -> bool {
    r.listing != registry::Listing::None && r.listed_per() != Some(registry::Parent::ACCOUNT)
}

/// A webhook of a non-customer type that never arrived: diff finds the
/// object different and missing, --repair fixes both; reconcile publishes
/// an event the ledger has not seen from the Events API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_and_reconcile_repair_missed_webhooks_of_any_type() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let ctx = pull_context(&stack, &fake).await;
    let product = registry::by_object("product").unwrap();
    let invoice = registry::by_object("invoice").unwrap();
    // The mirror saw v1 of prod_d; Stripe is at v2 (that webhook was lost)
    // and has prod_new, which the mirror never saw.
    post_all(
        &stack,
        &[event(
            PLATFORM_ACCOUNT,
            "evt_d1",
            "product.created",
            T,
            object(product, "prod_d", T, "1", 0),
        )],
    )
    .await;
    stack.wait_ledger(1, Duration::from_secs(60)).await;
    fake.put(
        PLATFORM_ACCOUNT,
        "products",
        object(product, "prod_d", T, "2", 0),
    );
    fake.put(
        PLATFORM_ACCOUNT,
        "products",
        object(product, "prod_new", T, "1", 0),
    );
    // And the mirror holds prod_old, which Stripe no longer has.
    post_all(
        &stack,
        &[event(
            PLATFORM_ACCOUNT,
            "evt_old",
            "product.created",
            T,
            object(product, "prod_old", T, "1", 0),
        )],
    )
    .await;
    stack.wait_ledger(2, Duration::from_secs(60)).await;

    let report = diff::run(&ctx, product, &AccountId::PLATFORM, false)
        .await
        .unwrap();
    assert_eq!(report.missing_locally, vec!["prod_new".to_owned()]);
    assert_eq!(report.missing_in_stripe, vec!["prod_old".to_owned()]);
    assert_eq!(report.different.len(), 1, "{report}");
    let repaired = diff::run(&ctx, product, &AccountId::PLATFORM, true)
        .await
        .unwrap();
    assert_eq!(repaired.repaired, 3);
    wait_for(Duration::from_secs(60), "the repair applied", || async {
        let p = rows(&stack, product, PLATFORM_ACCOUNT);
        // prod_d at v2, prod_new added, prod_old (resource_missing) tombstoned.
        let ok = p.len() == 3
            && p[0].data["metadata"]["v"] == "2"
            && p[2].id == "prod_old"
            && p[2].deleted;
        ok.then_some(())
    })
    .await;
    assert!(diff::run(&ctx, product, &AccountId::PLATFORM, false)
        .await
        .unwrap()
        .is_clean());

    // An invoice.paid that only the Events API has.
    let missed = event(
        PLATFORM_ACCOUNT,
        "evt_missed_invoice",
        "invoice.paid",
        T,
        object(invoice, "in_missed", T, "paid", 1),
    );
    fake.put(PLATFORM_ACCOUNT, "events", missed);
    let opts = reconcile::ReconcileOptions {
        account: AccountId::PLATFORM,
        since: Some(T - 10),
    };
    let r = reconcile::run_once(&ctx, &opts).await.unwrap();
    assert_eq!(r.published, 1);
    wait_for(
        Duration::from_secs(60),
        "the missed invoice applied",
        || async { (rows(&stack, invoice, PLATFORM_ACCOUNT).len() == 1).then_some(()) },
    )
    .await;
    stack.stop().await;
}

/// The types Stripe sends no events for stay current by `refresh`: a
/// webhook endpoint changed and one deleted in Stripe reach the mirror;
/// balance transactions are listed from a cursor, a pending one read again
/// until it is available, a settled one older than both not listed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_the_types_without_events_current() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let ctx = pull_context(&stack, &fake).await;
    let stop = CancellationToken::new();
    let platform = AccountId::PLATFORM;

    let endpoint = registry::by_object("webhook_endpoint").unwrap();
    assert_eq!(endpoint.source(), Source::Pull);
    assert!(refresh::default_types().contains(&endpoint));
    for id in ["we_a", "we_b"] {
        fake.put(
            PLATFORM_ACCOUNT,
            endpoint.path,
            object(endpoint, id, T, "1", 0),
        );
    }
    refresh::run_once(&ctx, endpoint, &platform, &stop)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "both endpoints mirrored",
        || async { (rows(&stack, endpoint, PLATFORM_ACCOUNT).len() == 2).then_some(()) },
    )
    .await;
    fake.put(
        PLATFORM_ACCOUNT,
        endpoint.path,
        object(endpoint, "we_a", T, "2", 0),
    );
    fake.remove(PLATFORM_ACCOUNT, endpoint.path, "we_b");
    refresh::run_once(&ctx, endpoint, &platform, &stop)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the change and the delete mirrored",
        || async {
            let r = rows(&stack, endpoint, PLATFORM_ACCOUNT);
            let ok =
                r.len() == 2 && r[0].data["metadata"]["v"] == "2" && !r[0].deleted && r[1].deleted;
            ok.then_some(())
        },
    )
    .await;

    let txn = registry::by_object("balance_transaction").unwrap();
    let now = unix_now();
    let (settled_at, pending_at) = (now - 30 * 86_400, now - 20 * 86_400);
    let balance = |id: &str, created: i64, v: &str, status: &str| {
        let mut o = object(txn, id, created, v, 0);
        o["status"] = json!(status);
        o
    };
    fake.put(
        PLATFORM_ACCOUNT,
        txn.path,
        balance("txn_settled", settled_at, "1", "available"),
    );
    fake.put(
        PLATFORM_ACCOUNT,
        txn.path,
        balance("txn_pending", pending_at, "1", "pending"),
    );
    let first = refresh::run_once(&ctx, txn, &platform, &stop)
        .await
        .unwrap();
    let RefreshReport::Listed {
        since: None,
        report,
    } = &first
    else {
        panic!("the first pass lists the whole type: {first:?}");
    };
    assert_eq!(report.objects, 2, "{first}");
    wait_for(
        Duration::from_secs(60),
        "both transactions mirrored",
        || async { (rows(&stack, txn, PLATFORM_ACCOUNT).len() == 2).then_some(()) },
    )
    .await;

    // In Stripe: the pending one became available, a new one was made, and
    // the settled one changed (it would be listed again were the pass to
    // reach back that far).
    fake.put(
        PLATFORM_ACCOUNT,
        txn.path,
        balance("txn_settled", settled_at, "2", "available"),
    );
    fake.put(
        PLATFORM_ACCOUNT,
        txn.path,
        balance("txn_pending", pending_at, "2", "available"),
    );
    fake.put(
        PLATFORM_ACCOUNT,
        txn.path,
        balance("txn_new", now, "1", "pending"),
    );
    let second = refresh::run_once(&ctx, txn, &platform, &stop)
        .await
        .unwrap();
    let RefreshReport::Listed {
        since: Some(since),
        report,
    } = &second
    else {
        panic!("the second pass lists from its cursor: {second:?}");
    };
    assert_eq!(*since, pending_at, "from the oldest pending transaction");
    assert_eq!(
        report.objects, 2,
        "the settled one is not listed again: {second}"
    );
    wait_for(Duration::from_secs(60), "the pass applied", || async {
        let r = rows(&stack, txn, PLATFORM_ACCOUNT);
        let status = |id: &str| {
            r.iter()
                .find(|t| t.id == id)
                .map(|t| t.data["status"].clone())
        };
        let ok = r.len() == 3 && status("txn_pending") == Some(json!("available"));
        ok.then_some(())
    })
    .await;
    let settled = rows(&stack, txn, PLATFORM_ACCOUNT);
    assert_eq!(
        settled.iter().find(|t| t.id == "txn_settled").unwrap().data["metadata"]["v"],
        "1"
    );

    // Only the new one is pending now: the next pass starts at it, the
    // cursor being later than that only by the overlap.
    let third = refresh::run_once(&ctx, txn, &platform, &stop)
        .await
        .unwrap();
    let RefreshReport::Listed {
        since: Some(since), ..
    } = third
    else {
        panic!("{third:?}");
    };
    assert!(
        since >= now - refresh::OVERLAP_SECS && since <= unix_now(),
        "from the second pass's cursor: {since}"
    );
    stack.stop().await;
}

/// Each event Stripe sent is kept as received in `stripe.events`, once
/// however often it arrives; the snapshots a pull builds are not events
/// Stripe sent and are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_events_are_kept_once_and_snapshots_are_not() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let ctx = pull_context(&stack, &fake).await;
    let product = registry::by_object("product").unwrap();
    let sent = event(
        PLATFORM_ACCOUNT,
        "evt_kept",
        "product.created",
        T,
        object(product, "prod_kept", T, "1", 0),
    );
    let connected = event(
        super::CONNECTED,
        "evt_kept_connected",
        "product.updated",
        T + 1,
        object(product, "prod_kept", T, "2", 0),
    );
    post_all(&stack, &[sent.clone(), connected.clone(), sent.clone()]).await;
    fake.put(
        PLATFORM_ACCOUNT,
        product.path,
        object(product, "prod_pulled", T, "1", 0),
    );
    let report = backfill::run(
        &ctx,
        &backfill::BackfillOptions::new(product),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.objects, 1);
    stack.wait_ledger(3, Duration::from_secs(60)).await;

    #[derive(diesel::QueryableByName, Debug)]
    struct Kept {
        #[diesel(sql_type = diesel::sql_types::Text)]
        account: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        r#type: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        object_id: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        api_version: Option<String>,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        created: i64,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        data: serde_json::Value,
    }
    use diesel::RunQueryDsl;
    let kept: Vec<Kept> = diesel::sql_query(
        "SELECT account, id, type, object_id, api_version, \
                extract(epoch FROM created)::bigint AS created, data::jsonb AS data \
         FROM stripe.events ORDER BY id",
    )
    .load(&mut stack.db.conn())
    .unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let (first, second) = (&kept[0], &kept[1]);
    assert_eq!(
        (
            first.account.as_str(),
            first.id.as_str(),
            first.r#type.as_str()
        ),
        ("platform", "evt_kept", "product.created")
    );
    assert_eq!(first.object_id, "prod_kept");
    assert_eq!(first.api_version.as_deref(), Some("2024-06-20"));
    assert_eq!(first.created, T);
    assert_eq!(first.data, sent, "kept as received");
    assert_eq!(
        (second.account.as_str(), second.id.as_str()),
        (super::CONNECTED, "evt_kept_connected")
    );
    assert_eq!(second.data, connected);
    stack.stop().await;
}

/// The types Stripe keeps under a parent (`registry::Listing::Nested`): a
/// connected account's persons come by event, a same-second tie read back
/// under the account (`/v1/accounts/acct_…/persons/…`, with its
/// `Stripe-Account`); backfill lists its persons, bank accounts and cards
/// under it, the last two apart by `object`; `diff --repair` re-reads a
/// person Stripe no longer lists there and tombstones it; a customer's
/// balance transactions, which have no events, are listed under each
/// customer of the mirror by `refresh` when named (never by default). The
/// fixture-backed fake stands in for Stripe: neither localstripe nor
/// stripe-stateful-mock has persons, external accounts or customer balance
/// transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_kept_under_a_parent_are_read_and_listed_there() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let ctx = pull_context(&stack, &fake).await;
    let by = |o: &str| registry::by_object(o).unwrap();
    let (person, bank, card) = (by("person"), by("bank_account"), by("card"));
    let under = |r: &Resource| stripe_sync::pull::list_under(r, CONNECTED).unwrap().0;
    let named = |r: &Resource, id: &str, v: &str| {
        let mut o = object(r, id, T, v, 0);
        o["account"] = json!(CONNECTED);
        o
    };
    let wait = Duration::from_secs(60);

    // A tie: the second person.updated of the same second is read back.
    fake.put(
        CONNECTED,
        &under(person),
        named(person, "person_tie", "stripe"),
    );
    post_all(
        &stack,
        &[
            event(
                CONNECTED,
                "evt_p1",
                "person.created",
                T,
                named(person, "person_tie", "1"),
            ),
            event(
                CONNECTED,
                "evt_p2",
                "person.updated",
                T + 5,
                named(person, "person_tie", "2"),
            ),
            event(
                CONNECTED,
                "evt_p3",
                "person.updated",
                T + 5,
                named(person, "person_tie", "3"),
            ),
        ],
    )
    .await;
    stack.wait_ledger(3, wait).await;
    let tie = &rows(&stack, person, CONNECTED)[0];
    assert_eq!(tie.data["metadata"]["v"], "stripe", "{}", tie.data);
    assert!(fake.calls().iter().any(|c| c.account == CONNECTED
        && c.path == format!("/v1/accounts/{CONNECTED}/persons/person_tie")));

    // Backfill lists under the connected account; none on the platform.
    fake.put(CONNECTED, &under(person), named(person, "person_b", "1"));
    fake.put(CONNECTED, &under(bank), named(bank, "ba_b", "1"));
    fake.put(CONNECTED, &under(card), named(card, "card_b", "1"));
    let stop = CancellationToken::new();
    let account = AccountId::parse(CONNECTED).unwrap();
    for r in [person, bank, card] {
        let mut opts = backfill::BackfillOptions::new(r);
        opts.account = account.clone();
        let report = backfill::run(&ctx, &opts, &stop).await.unwrap();
        assert!(report.complete, "{}: {report:?}", r.relation);
        let on_platform = backfill::run(&ctx, &backfill::BackfillOptions::new(r), &stop)
            .await
            .unwrap();
        assert_eq!(on_platform.objects, 0, "{}", r.relation);
    }
    wait_for(wait, "the backfill applied", || async {
        let ids = |r| {
            rows(&stack, r, CONNECTED)
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        };
        (ids(person) == ["person_b", "person_tie"]
            && ids(bank) == ["ba_b"]
            && ids(card) == ["card_b"])
        .then_some(())
    })
    .await;

    // Stripe no longer has person_b: diff --repair reads it under the
    // account, is told it is missing, and tombstones it.
    fake.remove(CONNECTED, &under(person), "person_b");
    let report = diff::run(&ctx, person, &account, true).await.unwrap();
    assert_eq!(report.missing_in_stripe, ["person_b"], "{report}");
    wait_for(wait, "person_b tombstoned", || async {
        rows(&stack, person, CONNECTED)
            .iter()
            .any(|m| m.id == "person_b" && m.deleted)
            .then_some(())
    })
    .await;
    assert!(fake.calls().iter().any(|c| c.path
        == format!("/v1/accounts/{CONNECTED}/persons/person_b")
        && c.account == CONNECTED));

    // A customer's balance transactions: listed under each customer of the
    // mirror when refresh is asked for them.
    let balance = by("customer_balance_transaction");
    assert!(!refresh::default_types().contains(&balance));
    let customer = fixtures::customer("cus_cbt", T, json!({"metadata": {}}));
    fake.put(PLATFORM_ACCOUNT, "customers", customer);
    backfill::run(&ctx, &backfill::BackfillOptions::new(by("customer")), &stop)
        .await
        .unwrap();
    wait_for(wait, "the customer applied", || async {
        (stack.db.count("stripe.customers WHERE id = 'cus_cbt'") == 1).then_some(())
    })
    .await;
    let mut txn = object(balance, "cbtxn_1", T, "1", 0);
    txn["customer"] = json!("cus_cbt");
    fake.put(
        PLATFORM_ACCOUNT,
        &stripe_sync::pull::list_under(balance, "cus_cbt").unwrap().0,
        txn,
    );
    refresh::run_once(&ctx, balance, &AccountId::PLATFORM, &stop)
        .await
        .unwrap();
    wait_for(wait, "the customer's balance transaction", || async {
        (rows(&stack, balance, PLATFORM_ACCOUNT).len() == 1).then_some(())
    })
    .await;
    stack.stop().await;
}
