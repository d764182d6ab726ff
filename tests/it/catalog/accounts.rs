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
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::fixtures;
use crate::support::wait_for;

const FIRST: &str = "acct_1AutoFirst";
const SECOND: &str = "acct_1AutoSecond";

/// Two connected accounts: the first authorized before `reconcile --every`
/// starts with `auto`, the second while it runs. Each is backfilled once
/// (a restart does not list it again); the first is then deauthorized: its
/// rows stay, its account row is marked deleted, and the passes leave it.
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

    let stop = CancellationToken::new();
    let every = Duration::from_millis(500);
    let follow = {
        let (ctx, accounts, stop) = (&ctx, &cfg.accounts, stop.clone());
        async move { reconcile::run_every(ctx, accounts, None, every, &stop).await }
    };
    let checks = async {
        let first = wait_for(wait, "the first account backfilled", product_of(FIRST)).await;
        assert_eq!(first[0].id, "prod_auto0");
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
        wait_for(wait, "the second account's backfill done", || async {
            let done = format!(
                "sync_cursors WHERE account = '{SECOND}' AND stream = 'backfill:auto' \
                 AND completed_at IS NOT NULL"
            );
            (stack.db.count(&done) == 1).then_some(())
        })
        .await;
        // A pass that began before the mark may still be under way.
        tokio::time::sleep(every * 3).await;
        let calls_of = |acct: &str| fake.calls().iter().filter(|c| c.account == acct).count();
        let (first_calls, second_calls) = (calls_of(FIRST), calls_of(SECOND));
        tokio::time::sleep(every * 4).await;
        assert_eq!(
            calls_of(FIRST),
            first_calls,
            "a deauthorized account is left"
        );
        assert!(calls_of(SECOND) > second_calls, "the others go on");
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
        stop.cancel();
    };
    let (followed, ()) = tokio::join!(follow, checks);
    followed.unwrap();

    let first = rows(&stack, products, FIRST);
    assert_eq!(first.len(), 1, "a deauthorized account's rows stay");
    assert!(!first[0].deleted);
    let resolved = cfg.accounts.resolve(&ctx).await.unwrap();
    assert_eq!(
        resolved,
        [AccountId::PLATFORM, AccountId::parse(SECOND).unwrap()],
        "the platform and the authorized connected accounts"
    );
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
