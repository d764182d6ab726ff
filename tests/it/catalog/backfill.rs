//! Backfill of many types at once, a large one in `created` slices,
//! against the fixture-backed fake (which honours `created` bounds and
//! `starting_after` as Stripe does, and refuses `created` on a list that
//! does not take it), with the inbound worker applying what is published.

use std::time::Duration;

use stripe_sync::pull::backfill::{self, BackfillOptions};
use stripe_sync::registry::{self, Resource};
use stripe_sync::stripe::PLATFORM_ACCOUNT;
use tokio_util::sync::CancellationToken;

use super::{catalog_stack, object, CONNECTED, T};
use crate::support::catalog_stripe::{CatalogStripe, Fault};
use crate::support::wait_for;

const PRODUCTS: usize = 1_050;
const PRICES: usize = 230;
const QUOTES: usize = 150;

/// Products read by several workers in slices (each object published
/// once, none missed), beside prices and quotes (whose list takes
/// no `created`: `--created-since` is applied to what it returns); a run
/// cut short by a failed page resumes its slices where they stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_are_read_at_once_and_large_ones_in_slices() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let env = stack
        .env
        .with("STRIPE_API_BASE", &fake.base())
        .with("STRIPE_API_KEY", "sk_test_catalog")
        .with("STRIPE_RATE_LIMIT", "0");
    let ctx =
        stripe_sync::pull::PullContext::build(&stripe_sync::pull::PullConfig::load(&env).unwrap())
            .await
            .unwrap();
    let by = |o| registry::by_object(o).unwrap();
    let (product, price, quote) = (by("product"), by("price"), by("quote"));
    // Spread over a year, more of them recent, three to a second.
    let created = |n: usize, of: usize| T - (((of - n) / 3) as i64).pow(2) * 30;
    let seed = |account: &str, r: &Resource, prefix: &str, count: usize| {
        for n in 0..count {
            let o = object(r, &format!("{prefix}_{n:05}"), created(n, count), "bf", 0);
            fake.put(account, r.path, o);
        }
    };
    seed(PLATFORM_ACCOUNT, product, "prod_s", PRODUCTS);
    seed(PLATFORM_ACCOUNT, price, "price_s", PRICES);
    seed(PLATFORM_ACCOUNT, quote, "qt_s", QUOTES);
    seed(CONNECTED, product, "prod_s", PRODUCTS);
    let since_count = |since: i64, of: usize| (0..of).filter(|&n| created(n, of) >= since).count();
    let opts = |r| BackfillOptions::new(r);
    let stop = CancellationToken::new();

    // A page of products fails for good after a few: that type stops
    // with its slices saved, the others finish.
    for _ in 0..4 {
        fake.fault("products", Fault::Pass);
    }
    fake.fault("products", Fault::PlainNotFound);
    let reports = backfill::run_all(
        &ctx,
        vec![opts(product), opts(price), opts(quote)],
        6,
        &stop,
    )
    .await;
    assert!(reports[0].is_err(), "the products' failure is reported");
    let first = reports[1..]
        .iter()
        .map(|r| r.as_ref().unwrap().objects)
        .collect::<Vec<_>>();
    assert_eq!(first, [PRICES as u64, QUOTES as u64]);

    let resumed = backfill::run_all(&ctx, vec![opts(product)], 6, &stop).await;
    let resumed = resumed[0].as_ref().unwrap();
    assert!(resumed.resumed && resumed.complete, "{resumed:?}");
    assert!(
        (resumed.objects as usize) < PRODUCTS,
        "resumed, not started over: {resumed:?}"
    );

    // The connected account's, with every worker free: the products are
    // split, each published once (the count) and none missed (the rows).
    let connected = BackfillOptions {
        account: stripe_sync::stripe::AccountId::parse(CONNECTED).unwrap(),
        ..opts(product)
    };
    let fresh = backfill::run_all(&ctx, vec![connected], 6, &stop).await;
    let fresh = fresh[0].as_ref().unwrap();
    assert_eq!(
        fresh.objects as usize, PRODUCTS,
        "each product once: no slice overlaps"
    );
    let listed: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.account == CONNECTED && c.path == "/v1/products")
        .map(|c| c.query)
        .collect();
    let sliced = listed.len();
    assert!(
        sliced > PRODUCTS / 100 + 1,
        "{sliced} calls: the products were read in slices"
    );
    // Whether the list takes `created` was asked by its first page, not
    // by a call of its own.
    let asked = |q: &String| q.contains("created%5Bgte%5D=0");
    assert!(asked(&listed[0]), "the first page asks: {}", listed[0]);
    assert_eq!(
        listed.iter().filter(|q| asked(q)).count(),
        1,
        "asked once: {listed:?}"
    );
    assert!(
        listed.iter().all(|q| q.contains("limit=100")),
        "no one-item probe: {listed:?}"
    );
    let rows = |account: &str, r: &Resource| {
        stack
            .db
            .count(&format!("{} WHERE account = '{account}'", r.table())) as usize
    };
    wait_for(Duration::from_secs(90), "every object applied", || async {
        (rows(PLATFORM_ACCOUNT, product) == PRODUCTS
            && rows(CONNECTED, product) == PRODUCTS
            && rows(PLATFORM_ACCOUNT, price) == PRICES
            && rows(PLATFORM_ACCOUNT, quote) == QUOTES)
            .then_some(())
    })
    .await;

    // --created-since on a list without `created` (quotes): filtered here,
    // not sent.
    let since = created(QUOTES - 10, QUOTES);
    let recent = BackfillOptions {
        restart: true,
        created_since: Some(since),
        ..opts(quote)
    };
    let report = backfill::run(&ctx, &recent, &stop).await.unwrap();
    assert_eq!(
        report.objects as usize,
        since_count(since, QUOTES),
        "{report:?}"
    );
    let since = created(PRODUCTS - 120, PRODUCTS);
    let recent_products = BackfillOptions {
        restart: true,
        created_since: Some(since),
        ..opts(product)
    };
    let report = backfill::run(&ctx, &recent_products, &stop).await.unwrap();
    let expected = since_count(since, PRODUCTS);
    assert_eq!(report.objects as usize, expected, "{report:?}");
    assert_eq!(
        report.pages as usize,
        expected.div_ceil(100),
        "filtered by Stripe, not by us"
    );
    stack.stop().await;
}
