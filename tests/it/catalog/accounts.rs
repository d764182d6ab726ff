//! `STRIPE_ACCOUNTS=auto`: the pull commands find the connected accounts
//! in the mirror by themselves. Stripe's read API is the fixture-backed
//! fake (neither localstripe nor stripe-stateful-mock has Connect's
//! `account.application.*` events or reads per `Stripe-Account`).

use std::time::Duration;

use serde_json::json;
use stripe_sync::pull::accounts::{backfill_account, AccountBackfill};
use stripe_sync::pull::{reconcile, Accounts, PullConfig, PullContext};
use stripe_sync::registry;
use stripe_sync::stripe::{AccountId, PLATFORM_ACCOUNT};
use tokio_util::sync::CancellationToken;

use super::{catalog_stack, event, object, post_all, rows, T};
use crate::support::catalog_stripe::{CatalogStripe, Fault};
use crate::support::fixtures;
use crate::support::wait_for;

const FIRST: &str = "acct_1AutoFirst";
const SECOND: &str = "acct_1AutoSecond";

/// Two connected accounts: the first authorized before `reconcile --every`
/// starts with `auto` (one of its lists refused for good, and left out),
/// the second while it runs. Each is backfilled once (a restart does not
/// list it again); the first is then deauthorized: its rows stay, its
/// account row is marked deleted, and the passes leave it. Authorized
/// again, it is backfilled again, with what changed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_covers_connected_accounts_as_they_are_authorized_and_deauthorized() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let env = stack
        .env
        .with("STRIPE_API_BASE", &fake.base())
        .with("STRIPE_API_KEY", "sk_test_catalog")
        .with("STRIPE_ACCOUNTS", "auto");
    let cfg = PullConfig::load(&env).unwrap();
    assert_eq!(
        cfg.accounts,
        Accounts {
            named: vec![],
            auto: true
        }
    );
    let ctx = PullContext::build(&cfg).await.unwrap();
    let products = registry::by_object("product").unwrap();
    let application = json!({"id": "ca_ours", "object": "application"});
    let wait = Duration::from_secs(90);
    for (n, acct) in [FIRST, SECOND].into_iter().enumerate() {
        let mut a = fixtures::resource("account");
        a["id"] = json!(acct);
        fake.put(PLATFORM_ACCOUNT, "accounts", a);
        let p = object(products, &format!("prod_auto{n}"), T, "stripe", 0);
        fake.put(acct, "products", p);
    }
    // The platform's own product, which `auto` covers too.
    fake.put(
        PLATFORM_ACCOUNT,
        "products",
        object(products, "prod_platform", T, "stripe", 0),
    );
    let authorize =
        |acct: &str, id: &str, kind: &str, at: i64| event(acct, id, kind, at, application.clone());
    post_all(
        &stack,
        &[authorize(
            FIRST,
            "evt_auth_first",
            "account.application.authorized",
            T,
        )],
    )
    .await;
    let product_of = |acct: &'static str| {
        let stack = &stack;
        move || async move {
            let rows = rows(stack, products, acct);
            (!rows.is_empty()).then_some(rows)
        }
    };
    wait_for(wait, "the first account in the mirror", || async {
        (!rows(
            &stack,
            registry::by_object("account").unwrap(),
            PLATFORM_ACCOUNT,
        )
        .is_empty())
        .then_some(())
    })
    .await;

    // A list Stripe refuses the first account for good (a key without the
    // permission): left out, the account's backfill still done.
    fake.fault("test_helpers/test_clocks", Fault::MissingPermission);
    let stop = CancellationToken::new();
    let every = Duration::from_millis(500);
    let follow = {
        let (ctx, accounts, stop) = (&ctx, &cfg.accounts, stop.clone());
        async move { reconcile::run_every(ctx, accounts, None, every, &stop).await }
    };
    let marked = |acct: &'static str| {
        let stack = &stack;
        move || async move {
            let done = format!(
                "sync_cursors WHERE account = '{acct}' AND stream = 'backfill:auto' \
                 AND completed_at IS NOT NULL"
            );
            (stack.db.count(&done) == 1).then_some(())
        }
    };
    let checks = async {
        let first = wait_for(wait, "the first account backfilled", product_of(FIRST)).await;
        assert_eq!(first[0].id, "prod_auto0");
        wait_for(wait, "the first account's backfill done", marked(FIRST)).await;
        assert!(
            fake.calls()
                .iter()
                .any(|c| c.account == FIRST && c.path == "/v1/test_helpers/test_clocks"),
            "the refused list was asked"
        );
        assert!(
            rows(&stack, products, PLATFORM_ACCOUNT).is_empty(),
            "auto backfills connected accounts found, never the platform unasked"
        );
        post_all(
            &stack,
            &[authorize(
                SECOND,
                "evt_auth_second",
                "account.application.authorized",
                T + 1,
            )],
        )
        .await;
        let second = wait_for(wait, "the second account backfilled", product_of(SECOND)).await;
        assert_eq!(second[0].id, "prod_auto1");

        // Deauthorized: Stripe no longer lets the platform read it.
        fake.deauthorize(FIRST);
        post_all(
            &stack,
            &[authorize(
                FIRST,
                "evt_deauth_first",
                "account.application.deauthorized",
                T + 2,
            )],
        )
        .await;
        let accounts = registry::by_object("account").unwrap();
        wait_for(wait, "the first account marked deleted", || async {
            rows(&stack, accounts, PLATFORM_ACCOUNT)
                .iter()
                .any(|r| r.id == FIRST && r.deleted)
                .then_some(())
        })
        .await;
        wait_for(wait, "the second account's backfill done", marked(SECOND)).await;
        // Passes of the second account: each lists its events once.
        let passes = || {
            fake.calls()
                .iter()
                .filter(|c| c.account == SECOND && c.path == "/v1/events")
                .count()
        };
        let passes_after = |n: usize| async move {
            wait_for(wait, "more passes", || async {
                (passes() >= n).then_some(())
            })
            .await
        };
        // A pass that began before the mark may still be under way.
        passes_after(passes() + 2).await;
        let calls_of = |acct: &str| fake.calls().iter().filter(|c| c.account == acct).count();
        let first_calls = calls_of(FIRST);
        passes_after(passes() + 3).await;
        assert_eq!(
            calls_of(FIRST),
            first_calls,
            "a deauthorized account is left"
        );
        let lists_of_products = |acct: &str| {
            fake.calls()
                .iter()
                .filter(|c| c.account == acct && c.path == "/v1/products")
                .count()
        };
        assert_eq!(
            lists_of_products(SECOND),
            1,
            "backfilled once, not every pass"
        );

        // Authorized again: listed again, with what changed meanwhile.
        let mut a = fixtures::resource("account");
        a["id"] = json!(FIRST);
        fake.reauthorize(FIRST, a);
        fake.put(
            FIRST,
            "products",
            object(products, "prod_auto0", T, "changed", 0),
        );
        post_all(
            &stack,
            &[authorize(
                FIRST,
                "evt_reauth_first",
                "account.application.authorized",
                T + 3,
            )],
        )
        .await;
        wait_for(wait, "the first account backfilled again", || async {
            rows(&stack, products, FIRST)
                .iter()
                .any(|r| r.data["metadata"]["v"] == "changed")
                .then_some(())
        })
        .await;
        wait_for(wait, "the first account marked again", marked(FIRST)).await;
        stop.cancel();
    };
    let (followed, ()) = tokio::join!(follow, checks);
    followed.unwrap();

    let resolved = cfg.accounts.resolve(&ctx).await.unwrap();
    let ids = |raw: &[&str]| -> Vec<AccountId> {
        raw.iter().map(|a| AccountId::parse(a).unwrap()).collect()
    };
    assert_eq!(resolved, ids(&[PLATFORM_ACCOUNT, FIRST, SECOND]));
    // A restart does not backfill an account done before.
    let second = AccountId::parse(SECOND).unwrap();
    assert_eq!(
        backfill_account(&ctx, &second, &CancellationToken::new())
            .await
            .unwrap(),
        AccountBackfill::AlreadyDone
    );
    stack.stop().await;
}
