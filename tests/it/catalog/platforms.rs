//! Several unrelated platform accounts in one database (`STRIPE_PLATFORMS`):
//! two platforms whose object ids collide, each with its key and webhook
//! secret, and a connected account of the second. Stripe's read API is the
//! fixture-backed fake, which answers each key with its own platform's
//! objects and refuses a connected account to any other platform's key
//! (neither localstripe nor stripe-stateful-mock serves two accounts).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use stripe_sync::config::Env;
use stripe_sync::kafka::envelope;
use stripe_sync::pull::backfill::{self, BackfillOptions};
use stripe_sync::pull::{resync, Accounts, PullConfig, PullContext};
use stripe_sync::registry;
use stripe_sync::stripe::{signature, AccountId, PLATFORM_ACCOUNT};
use tokio_util::sync::CancellationToken;

use super::{event, object, rows, T};
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::stack::{Options, Stack, SECRET};
use crate::support::{json_of, wait_for};

/// The second platform, and what it is configured with.
const B: &str = "acct_1PlatformB";
const B_KEY: &str = "sk_test_platform_b";
const B_SECRET: &str = "whsec_platform_b";
/// A connected account of B's.
const X: &str = "acct_1ConnectedToB";

async fn post(stack: &Stack, path: &str, secret: &str, event: &Value) -> StatusCode {
    let body = serde_json::to_vec(event).unwrap();
    let header = signature::sign(secret, stripe_sync::ingest::unix_now(), &body);
    stack
        .http
        .post(format!("http://{}{path}", stack.addr))
        .header("Stripe-Signature", header)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// `metadata.v` of a mirrored row, if the row exists.
fn version(stack: &Stack, object: &str, account: &str, id: &str) -> Option<String> {
    rows(stack, registry::by_object(object).unwrap(), account)
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| r.data["metadata"]["v"].as_str().unwrap_or("").to_owned())
}

async fn wait_version(stack: &Stack, object: &str, account: &str, id: &str, want: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("{object} {id} of {account} at {want}"),
        || async { (version(stack, object, account, id).as_deref() == Some(want)).then_some(()) },
    )
    .await;
}

/// Webhooks of each platform land under it, told apart by their secret
/// (on the shared endpoint) or their path; a secret of one platform does
/// not open another's path. The worker reads each platform's objects, and
/// a connected account's, with that platform's key (same-second ties read
/// back from Stripe). `backfill --account auto` covers both platforms and
/// the connected account, and `resync` reads with the right key too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platforms_with_colliding_ids_stay_apart() {
    let fake = CatalogStripe::start();
    fake.platform_key(B_KEY, B);
    fake.connect(X, B);
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        // C has no webhooks here, only a key.
        platforms: Some(format!("{B}:{B_KEY}:{B_SECRET};acct_1PlatformC:sk_test_c")),
        ..Options::default()
    })
    .await;
    let product = registry::by_object("product").unwrap();
    let account = registry::by_object("account").unwrap();
    let product_event = |acct: &str, evt: &str, id: &str, at: i64, v: &str| {
        event(
            acct,
            evt,
            "product.updated",
            at,
            object(product, id, at, v, 0),
        )
    };

    // The same product id on both platforms, each on the shared endpoint
    // with its own secret; one more of B's on B's own path.
    let shared = "/webhooks/stripe";
    let b_path = format!("/webhooks/stripe/{B}");
    let a_same = product_event(PLATFORM_ACCOUNT, "evt_same", "prod_same", T, "a1");
    let b_same = product_event(PLATFORM_ACCOUNT, "evt_same", "prod_same", T, "b1");
    assert_eq!(post(&stack, shared, SECRET, &a_same).await, StatusCode::OK);
    assert_eq!(
        post(&stack, shared, B_SECRET, &b_same).await,
        StatusCode::OK
    );
    let b_own = product_event(PLATFORM_ACCOUNT, "evt_own", "prod_own", T, "b1");
    assert_eq!(
        post(&stack, &b_path, B_SECRET, &b_own).await,
        StatusCode::OK
    );
    // A's secret does not open B's path, nor does any path name a platform
    // not configured.
    let forged = product_event(PLATFORM_ACCOUNT, "evt_forged", "prod_own", T + 9, "forged");
    assert_eq!(
        post(&stack, &b_path, SECRET, &forged).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&stack, "/webhooks/stripe/acct_1Nobody", B_SECRET, &forged).await,
        StatusCode::NOT_FOUND
    );
    // Nor does B's secret write under another platform's own account.
    for other in [PLATFORM_ACCOUNT, "acct_1PlatformC"] {
        let mut claim = forged.clone();
        claim["account"] = Value::from(other);
        assert_eq!(
            post(&stack, shared, B_SECRET, &claim).await,
            StatusCode::BAD_REQUEST,
            "B's secret claiming {other}"
        );
    }
    // B's connected account: its account object (from B's Connect
    // endpoint) is kept under B.
    let mut x = event(
        X,
        "evt_x_account",
        "account.updated",
        T,
        object(account, X, T, "x1", 0),
    );
    x["account"] = Value::from(X);
    assert_eq!(post(&stack, shared, B_SECRET, &x).await, StatusCode::OK);

    wait_version(&stack, "product", PLATFORM_ACCOUNT, "prod_same", "a1").await;
    wait_version(&stack, "product", B, "prod_same", "b1").await;
    wait_version(&stack, "product", B, "prod_own", "b1").await;
    wait_version(&stack, "account", B, X, "x1").await;
    assert_eq!(
        version(&stack, "product", PLATFORM_ACCOUNT, "prod_own"),
        None
    );
    assert_eq!(version(&stack, "account", PLATFORM_ACCOUNT, X), None);
    // The ledger keeps the colliding event id once per platform.
    assert_eq!(
        stack
            .db
            .count("event_ledger WHERE event_id = 'evt_same' AND account IN ('platform', 'acct_1PlatformB')"),
        2
    );

    // Same-second ties on B and on X: read back from Stripe, each with
    // B's key (the fake refuses X to any other).
    fake.put(
        B,
        "products",
        object(product, "prod_same", T + 1, "b-stripe", 0),
    );
    fake.put(
        X,
        "products",
        object(product, "prod_x", T + 1, "x-stripe", 0),
    );
    for (acct, n, v) in [(PLATFORM_ACCOUNT, 1, "b2"), (PLATFORM_ACCOUNT, 2, "b3")] {
        let tie = product_event(acct, &format!("evt_tie_b{n}"), "prod_same", T + 1, v);
        assert_eq!(post(&stack, shared, B_SECRET, &tie).await, StatusCode::OK);
    }
    for (n, v) in [(1, "x2"), (2, "x3")] {
        let tie = product_event(X, &format!("evt_tie_x{n}"), "prod_x", T + 1, v);
        assert_eq!(post(&stack, shared, B_SECRET, &tie).await, StatusCode::OK);
    }
    wait_version(&stack, "product", B, "prod_same", "b-stripe").await;
    wait_version(&stack, "product", X, "prod_x", "x-stripe").await;
    assert_eq!(
        version(&stack, "product", PLATFORM_ACCOUNT, "prod_same").as_deref(),
        Some("a1")
    );
    let calls = fake.calls();
    for acct in [B, X] {
        let of = |c: &&crate::support::catalog_stripe::Call| c.account == acct;
        assert!(calls.iter().filter(of).count() > 0, "{acct} was read");
        assert!(
            calls.iter().filter(of).all(|c| c.platform == B),
            "{acct} read with B's key only: {:?}",
            calls.iter().filter(of).collect::<Vec<_>>()
        );
    }

    // Backfill with `auto`: the default platform, B, and B's connected
    // account (known from the mirror), each through its own key.
    fake.put(
        PLATFORM_ACCOUNT,
        "products",
        object(product, "prod_bf", T, "a-bf", 0),
    );
    fake.put(B, "products", object(product, "prod_bf", T, "b-bf", 0));
    fake.put(X, "products", object(product, "prod_bfx", T, "x-bf", 0));
    let env: Env = stack
        .env
        .with("STRIPE_API_BASE", &fake.base())
        .with("STRIPE_ACCOUNTS", "auto");
    let cfg = PullConfig::load(&env).unwrap();
    let ctx = PullContext::build(&cfg).await.unwrap();
    let resolved = Accounts::parse("auto")
        .unwrap()
        .resolve(&ctx)
        .await
        .unwrap();
    let id = |a: &str| AccountId::parse(a).unwrap();
    assert_eq!(
        resolved,
        vec![AccountId::PLATFORM, id(B), id("acct_1PlatformC"), id(X)]
    );
    let stop = CancellationToken::new();
    let opts = resolved
        .iter()
        .filter(|a| a.as_str() != "acct_1PlatformC")
        .map(|a| BackfillOptions {
            account: a.clone(),
            ..BackfillOptions::new(product)
        })
        .collect();
    for report in backfill::run_all(&ctx, opts, 4, &stop).await {
        report.unwrap();
    }
    wait_version(&stack, "product", PLATFORM_ACCOUNT, "prod_bf", "a-bf").await;
    wait_version(&stack, "product", B, "prod_bf", "b-bf").await;
    wait_version(&stack, "product", X, "prod_bfx", "x-bf").await;

    // Resync on B, and of B's connected account: read with B's key.
    fake.put(
        B,
        "products",
        object(product, "prod_own", T + 2, "b-resync", 0),
    );
    fake.put(B, "accounts", object(account, X, T + 2, "x-resync", 0));
    let targets = resync::plan(&["prod_own".into()], None, &id(B))
        .unwrap()
        .into_iter()
        .chain(resync::plan(&[X.into()], None, &AccountId::PLATFORM).unwrap())
        .collect::<Vec<_>>();
    for result in resync::run(&ctx.stripe, &ctx.producer, &ctx.topic, &ctx.pool, &targets).await {
        result.unwrap();
    }
    wait_version(&stack, "product", B, "prod_own", "b-resync").await;
    wait_version(&stack, "account", B, X, "x-resync").await;
    // The default platform's key only listed its own products: B's objects
    // read with it would show as the default platform's own reads.
    let wrong_key: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            let b_s = c.account == B || c.account == X;
            (b_s && c.platform != B) || (c.platform == PLATFORM_ACCOUNT && c.path != "/v1/products")
        })
        .collect();
    assert!(wrong_key.is_empty(), "read with another key: {wrong_key:?}");
    assert_eq!(
        version(&stack, "product", PLATFORM_ACCOUNT, "prod_own"),
        None
    );

    // An event of a platform this worker holds no key for waits (the
    // partition is held, nothing dead-lettered) rather than being read
    // with another platform's key. It is the last thing this test sends.
    let body = serde_json::to_vec(&product_event(
        PLATFORM_ACCOUNT,
        "evt_orphan",
        "prod_orphan",
        T,
        "q1",
    ))
    .unwrap();
    let unconfigured = id("acct_1Unconfigured");
    let parsed = stripe_sync::stripe::EventEnvelope::parse_for(&body, &unconfigured).unwrap();
    let orphan = envelope::event_headers(&parsed, envelope::SOURCE_WEBHOOK);
    ctx.producer
        .send(&ctx.topic, b"prod_orphan", &body, &orphan)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.db.count("event_ledger WHERE event_id = 'evt_orphan'"),
        0,
        "an event of an unconfigured platform was applied"
    );
    // Held: not committed (the worker, caught up before, waits on it),
    // and not dead-lettered.
    let lag: Value = json_of(stack.admin(Method::GET, "/api/admin/lag")).await;
    let held: i64 = lag
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"] == stack.group.as_str() && r["topic"] == stack.topic.as_str())
        .map(|r| r["lag"].as_i64().unwrap())
        .sum();
    assert_eq!(held, 1, "{lag}");
    let dead: Value = json_of(stack.admin(Method::GET, "/api/admin/dlq?last=10")).await;
    assert!(
        !dead.to_string().contains("evt_orphan"),
        "dead-lettered: {dead}"
    );
}
