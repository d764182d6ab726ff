//! The mirror over HTTP (`/api/stripe/{relation}`), against the stack.

use std::time::Duration;

use serde_json::{json, Value};
use stripe_sync::registry;
use stripe_sync::stripe::PLATFORM_ACCOUNT;

use super::{catalog_stack, event, object, post_all, CONNECTED, T};
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::fixtures;
use crate::support::stack::Stack;

async fn get_json(stack: &Stack, path: &str) -> (u16, Value) {
    let r = stack.api(reqwest::Method::GET, path).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The mirror over HTTP: equality filters on typed columns, time and
/// amount ranges, cursor pagination, one object by id per account, a child
/// list by its parent; bad input is a 400 naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_reads_over_http_with_filters_and_cursors() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let price = registry::by_object("price").unwrap();
    let invoice = registry::by_object("invoice").unwrap();
    let mut events = Vec::new();
    for n in 0..5 {
        let mut p = object(price, &format!("price_h{n}"), T + n, "1", 0);
        p["product"] = json!(if n < 3 { "prod_a" } else { "prod_b" });
        p["unit_amount"] = json!(100 * (n + 1));
        events.push(event(
            PLATFORM_ACCOUNT,
            &format!("evt_h{n}"),
            "price.created",
            T + n,
            p,
        ));
    }
    let connected = object(price, "price_h0", T, "connected", 0);
    events.push(event(CONNECTED, "evt_hc", "price.created", T, connected));
    events.push(fixtures::customer_event(
        "evt_hcus",
        "customer.created",
        T,
        "cus_http",
        json!({"email": "http@example.com"}),
    ));
    events.push(event(
        PLATFORM_ACCOUNT,
        "evt_hi",
        "invoice.created",
        T,
        object(invoice, "in_h", T, "1", 3),
    ));
    post_all(&stack, &events).await;
    stack
        .wait_ledger(events.len() as i64, Duration::from_secs(60))
        .await;

    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, page) =
        get_json(&stack, "/api/stripe/prices?account=platform&product=prod_a").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["price_h0", "price_h1", "price_h2"]);
    let (_, page) = get_json(
        &stack,
        "/api/stripe/prices?account=platform&unit_amount[gte]=300&created[lt]=1760000004",
    )
    .await;
    assert_eq!(ids(&page), ["price_h2", "price_h3"]);

    // Every row, two at a time, across both accounts.
    let mut seen = Vec::new();
    let mut path = "/api/stripe/prices?limit=2".to_owned();
    loop {
        let (status, page) = get_json(&stack, &path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["data"].as_array().unwrap().iter().map(|r| {
            format!(
                "{}/{}",
                r["account"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        }));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/stripe/prices?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen[0], format!("{CONNECTED}/price_h0"));

    let (status, one) = get_json(
        &stack,
        &format!("/api/stripe/prices/price_h0?account={CONNECTED}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["data"]["metadata"]["v"], "connected");
    let (_, lines) = get_json(&stack, "/api/stripe/invoice_line_items?invoice=in_h").await;
    assert_eq!(lines["data"].as_array().unwrap().len(), 3);
    assert_eq!(lines["data"][0]["invoice"], "in_h");

    for (path, status, field) in [
        ("/api/stripe/prices?nickname=x", 400, Some("nickname")),
        (
            "/api/stripe/prices?created[gte]=soon",
            400,
            Some("created[gte]"),
        ),
        ("/api/stripe/prices?cursor=zz", 400, Some("cursor")),
        ("/api/stripe/nothings", 404, None),
        ("/api/stripe/prices/price_none", 404, None),
    ] {
        let (got, body) = get_json(&stack, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{path}");
        }
    }
    // stripe.customers, the view over the local-first table, reads the same way.
    let (status, customers) =
        get_json(&stack, "/api/stripe/customers?email=http@example.com").await;
    assert_eq!(status, 200, "{customers}");
    assert_eq!(customers["data"][0]["id"], "cus_http", "{customers}");
    let (_, doc) = get_json(&stack, "/api/openapi.json").await;
    assert!(doc["paths"]["/api/stripe/{relation}"]["get"].is_object());
    assert!(doc["paths"]["/api/stripe/{relation}/{id}"]["get"].is_object());
    let anonymous = stack
        .http
        .get(format!("http://{}/api/stripe/prices", stack.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    stack.stop().await;
}

/// A mirror row written straight into `stripe.prices`, for the tests that
/// need one to exist and nothing of the pipeline.
fn insert_price(stack: &Stack, id: &str, created: i64) {
    use diesel::RunQueryDsl;
    diesel::sql_query(
        "INSERT INTO stripe.prices (account, id, data, remote_version, remote_event_id) \
         VALUES ('platform', $1, jsonb_build_object('id', $1::text, 'object', 'price', \
         'created', $2::bigint, 'product', 'prod_x'), 1, 'evt_x')",
    )
    .bind::<diesel::sql_types::Text, _>(id)
    .bind::<diesel::sql_types::BigInt, _>(created)
    .execute(&mut stack.db.conn())
    .unwrap();
}

/// Input a new user sends by mistake, or a hostile one on purpose, is
/// answered 400 `invalid_query` naming what was wrong, at the edge: time
/// bounds Postgres would refuse (`timestamp out of range`), NUL (Postgres
/// refuses it in text), bytes that are not UTF-8 once percent-decoded (once
/// silently turned into U+FFFD), a cursor that decodes but carries NUL, an
/// account that is no account, in any parameter's value or name and in the
/// id of one object. None of it may be a 503: that is an outage, it pages
/// someone, and clients retry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_to_the_mirror_is_a_400_naming_the_parameter() {
    let stack = Stack::start(crate::support::stack::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    insert_price(&stack, "price_1", T);
    let nul_cursor = hex::encode(serde_json::to_vec(&["platform\u{0}", "price_1"]).unwrap());
    let cases: Vec<(String, &str)> = vec![
        (
            "/api/stripe/prices?created[gt]=10000000000000".into(),
            "created[gt]",
        ),
        (
            "/api/stripe/prices?created[gt]=-99999999999999".into(),
            "created[gt]",
        ),
        // Milliseconds by mistake: a year Postgres takes (57867), no row has.
        (
            "/api/stripe/prices?created[gte]=1764000000000".into(),
            "created[gte]",
        ),
        (
            "/api/stripe/prices?created[lt]=9999-12-31T23:59:59-23:00".into(),
            "created[lt]",
        ),
        ("/api/stripe/prices?created=253402300800".into(), "created"),
        ("/api/stripe/invoices?status=%00".into(), "status"),
        ("/api/stripe/prices?product=prod_%00x".into(), "product"),
        ("/api/stripe/prices?product=%FF".into(), "product"),
        ("/api/stripe/prices?product=%C3%28".into(), "product"),
        ("/api/stripe/prices?limit=%00".into(), "limit"),
        (
            "/api/stripe/prices?include_deleted=%FF".into(),
            "include_deleted",
        ),
        (
            "/api/stripe/prices?unit_amount[gte]=99999999999999999999".into(),
            "unit_amount[gte]",
        ),
        ("/api/stripe/prices?account=%00".into(), "account"),
        ("/api/stripe/prices?account=platform%00".into(), "account"),
        ("/api/stripe/prices?account=acct_1/../x".into(), "account"),
        (
            "/api/stripe/invoice_line_items?invoice=in_%00".into(),
            "invoice",
        ),
        // A name that is not UTF-8, or holds NUL: named as it was sent.
        ("/api/stripe/prices?%FF=1".into(), "%FF"),
        ("/api/stripe/prices?act%00ive=true".into(), "act%00ive"),
        (format!("/api/stripe/prices?cursor={nul_cursor}"), "cursor"),
        ("/api/stripe/prices?cursor=%00".into(), "cursor"),
        // One object: its id (percent-decoded) and its account.
        ("/api/stripe/prices/price_%00".into(), "id"),
        ("/api/stripe/prices/price_%FF".into(), "id"),
        ("/api/stripe/prices/price_1?account=%00".into(), "account"),
        ("/api/stripe/prices/price_1?account=%FF".into(), "account"),
        (
            "/api/stripe/prices/price_1?account=nobody".into(),
            "account",
        ),
        (
            "/api/stripe/prices/price_1?acc%00ount=platform".into(),
            "acc%00ount",
        ),
    ];
    for (path, field) in &cases {
        let (status, body) = get_json(&stack, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{path}: {body}");
        assert_eq!(body["error"]["field"], *field, "{path}: {body}");
    }
    // The edges of the range are in it, and an id is percent-decoded as
    // any client's encoder expects.
    for path in [
        "/api/stripe/prices?created[gte]=-62167219200",
        "/api/stripe/prices?created[lte]=253402300799",
        "/api/stripe/prices?created[gte]=0000-01-01T00:00:00Z&created[lte]=9999-12-31T23:59:59Z",
    ] {
        let (status, page) = get_json(&stack, path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(page["data"][0]["id"], "price_1", "{path}: {page}");
    }
    let (status, one) = get_json(&stack, "/api/stripe/prices/price%5F1?account=platform").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], "price_1");
    stack.stop().await;
}

/// A mirror read that Postgres cannot finish within `MIRROR_QUERY_TIMEOUT_MS`
/// is cancelled there and answered 504 `query_timeout`, for a list and for
/// one object, and logged as a warning, never an error (serve runs as its
/// own process here, so its log is its own to read); the timeout is the
/// transaction's own, so the connection goes back to the pool unbounded
/// and the next read, once the relation is free, answers 200. The wait is
/// real: another connection holds an ACCESS EXCLUSIVE lock on the
/// relation, and a statement waiting for a lock is cancelled at its
/// statement timeout like a slow scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_read_past_its_statement_timeout_is_a_504_query_timeout() {
    use diesel::connection::SimpleConnection;
    let stack = Stack::start(crate::support::stack::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    insert_price(&stack, "price_1", T);
    let timeout_ms = 300;
    let port = crate::support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let env = stack
        .serve_env()
        .with("LISTEN_ADDR", &addr)
        .with("MIRROR_QUERY_TIMEOUT_MS", &timeout_ms.to_string())
        // One connection: every request below runs on the same one.
        .with("DATABASE_POOL_SIZE", "1");
    let log_path = std::env::temp_dir().join(crate::support::unique("serve-log"));
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .arg("serve")
        .env_clear()
        .envs(env.vars())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_ready(&addr).await;
    // Without a bound the request would wait for the lock as long as it is
    // held: the client gives up well after the timeout instead of hanging.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let get = |path: &str| {
        let request = client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(crate::support::stack::API_TOKEN);
        async move {
            let started = std::time::Instant::now();
            let r = request
                .send()
                .await
                .expect("an answer before the client's timeout");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap(), started.elapsed())
        }
    };

    let mut locker = stack.db.conn();
    locker
        .batch_execute("BEGIN; LOCK TABLE stripe.prices IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    for path in [
        "/api/stripe/prices?product=prod_x",
        "/api/stripe/prices/price_1",
    ] {
        let (status, body, took) = get(path).await;
        assert_eq!(status, 504, "{path}: {body}");
        assert_eq!(body["error"]["code"], "query_timeout", "{path}: {body}");
        assert!(
            took >= Duration::from_millis(timeout_ms),
            "{path}: answered after {took:?}, before the timeout"
        );
    }
    // Another relation reads meanwhile.
    let (status, body, _) = get("/api/stripe/products").await;
    assert_eq!(status, 200, "{body}");
    locker.batch_execute("ROLLBACK").unwrap();
    let (status, body, _) = get("/api/stripe/prices?product=prod_x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], "price_1");
    // The bound was the transaction's own: the one connection of serve's
    // pool waits on a lock for longer than it, for a route that is not the
    // mirror's, and answers once the lock goes (a session-wide setting
    // would have cancelled it: 503).
    locker
        .batch_execute("BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let customers = tokio::spawn(get("/api/customers"));
    wait_for_a_lock_wait(&stack, "the list to wait for the lock").await;
    tokio::time::sleep(Duration::from_millis(3 * timeout_ms)).await;
    locker.batch_execute("ROLLBACK").unwrap();
    let (status, body, took) = customers.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(took >= Duration::from_millis(3 * timeout_ms), "{took:?}");

    let _ = serve.kill();
    let _ = serve.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("a JSON log line: {l}")))
        .collect();
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "serve logged errors: {errors:?}");
    let timeouts = lines
        .iter()
        .filter(|l| {
            l["level"] == "WARN"
                && l["message"] == "mirror read cancelled at its statement timeout"
                && l["relation"] == "prices"
        })
        .count();
    assert_eq!(timeouts, 2, "{log}");
    stack.stop().await;
}

/// A statement timeout bounds one read, not how many wait on one lock: the
/// mirror may hold at most half of serve's connections (here one of two),
/// so a read beyond that is refused at once with `503 mirror_busy` and
/// `Retry-After`, and the other routes and `/readyz` keep their connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_reads_waiting_on_a_lock_leave_the_other_routes_a_connection() {
    use diesel::connection::SimpleConnection;
    let stack = Stack::start(crate::support::stack::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    insert_price(&stack, "price_1", T);
    let addr = format!("127.0.0.1:{}", crate::support::free_port());
    let env = stack
        .serve_env()
        .with("LISTEN_ADDR", &addr)
        .with("MIRROR_QUERY_TIMEOUT_MS", "20000")
        .with("DATABASE_POOL_SIZE", "2");
    let mut serve =
        crate::support::spawn_binary(env!("CARGO_BIN_EXE_stripe-sync"), &["serve"], &env);
    wait_ready(&addr).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(crate::support::stack::API_TOKEN);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, r.json::<Value>().await.unwrap(), retry_after)
        }
    };
    let mut locker = stack.db.conn();
    locker
        .batch_execute("BEGIN; LOCK TABLE stripe.prices IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let waiting = tokio::spawn(get("/api/stripe/prices"));
    wait_for_a_lock_wait(&stack, "the read to wait for the lock").await;
    let (status, busy, retry_after) = get("/api/stripe/products").await;
    assert_eq!(
        (
            status,
            busy["error"]["code"].as_str(),
            retry_after.as_deref()
        ),
        (503, Some("mirror_busy"), Some("1")),
        "{busy}"
    );
    let (status, body, _) = get("/api/customers").await;
    assert_eq!(status, 200, "{body}");
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    locker.batch_execute("ROLLBACK").unwrap();
    let (status, body, _) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = get("/api/stripe/products").await;
    assert_eq!(status, 200, "the reader's place is free again: {body}");
    let _ = serve.kill();
    let _ = serve.wait();
    stack.stop().await;
}

/// Waits until serve at `addr` answers `/readyz`.
async fn wait_ready(addr: &str) {
    crate::support::wait_for(Duration::from_secs(60), "serve ready", || async {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// Waits until a session of the test's database waits on a lock: the
/// request sent before is held by the lock the test took.
async fn wait_for_a_lock_wait(stack: &Stack, what: &str) {
    crate::support::wait_for(Duration::from_secs(10), what, || {
        let waiting = stack.db.count(
            "pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        async move { (waiting > 0).then_some(()) }
    })
    .await;
}
