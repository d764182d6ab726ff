//! Backfill, diff and reconcile of non-customer types against the
//! fixture-backed Stripe fake, with the inbound worker applying what they
//! publish.

use std::time::Duration;

use serde_json::json;
use stripe_sync::pull::{backfill, diff, reconcile, PullConfig, PullContext};
use stripe_sync::registry::{self, Resource};
use stripe_sync::stripe::{AccountId, PLATFORM_ACCOUNT};
use tokio_util::sync::CancellationToken;

use super::{catalog_stack, child_item, event, mirrored, object, post_all, rows, T};
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
    for r in mirrored() {
        for n in 0..many(r.object) {
            let id = format!("b{n}_{}", r.relation);
            let mut o = object(r, &id, T + n as i64, "bf", 1);
            if r.listing == registry::Listing::PerCustomer {
                o["customer"] = json!("cus_bf1");
            }
            fake.put(PLATFORM_ACCOUNT, r.path, o);
            if r.listing != registry::Listing::None {
                expected += 1;
            }
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
        assert_eq!(
            stack.db.count(&r.table()),
            many(r.object) as i64,
            "{}",
            r.relation
        );
    }
    assert_eq!(stack.db.count("stripe.checkout_session_line_items"), 1);
    stack.stop().await;
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
