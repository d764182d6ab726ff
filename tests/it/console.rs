//! The operator's console in headless Chromium against a running stack:
//! log in, watch a stopped worker's lag grow, find an object's messages,
//! filter the mirror, retry a failed sync and replay a dead letter; every
//! page is screenshotted under `target/console/` and checked for labels
//! and contrast. The HTTP checks (off without ADMIN_TOKEN, CSRF, the
//! admin API behind each action) need no browser.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::browser::Browser;
use crate::support::fake_stripe::{FakeStripe, Fault};
use crate::support::fixtures::customer_event;
use crate::support::stack::{Options, Stack, ADMIN_TOKEN};
use crate::support::{free_port, wait_for};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_sees_lag_grow_finds_messages_and_filters_the_mirror() {
    let ops_port = free_port();
    let mut stack = Stack::start(Options {
        start_worker: false,
        console_processes: Some(format!("stripe-inbound=http://127.0.0.1:{ops_port}")),
        ..Options::default()
    })
    .await;
    stack.start_worker_with_ops(&format!("127.0.0.1:{ops_port}"));
    for (i, email) in ["ada@example.com", "grace@example.com"].iter().enumerate() {
        let e = customer_event(
            &format!("evt_c{i}"),
            "customer.created",
            1_700_000_000 + i as i64,
            &format!("cus_console{i}"),
            json!({"email": email}),
        );
        assert_eq!(stack.post_event(&e).await, 200);
    }
    stack.wait_ledger(2, WAIT).await;

    let browser = Browser::open(stack.addr).await;
    // Not logged in: every page leads to the login form.
    browser.goto("").await;
    assert_eq!(browser.path().await, "/login");
    browser.assert_accessible("login").await;
    browser.screenshot("login").await;
    browser.log_in("not-the-admin-token-at-all").await;
    assert!(browser.text().await.contains("not the admin token"));
    browser.log_in(ADMIN_TOKEN).await;
    assert_eq!(browser.path().await, "");

    // Running: ready and caught up.
    let group = stack.group.clone();
    let inbound_lag = |page: &str| -> i64 {
        let line = page
            .lines()
            .find(|l| l.starts_with(&group))
            .unwrap_or_else(|| panic!("no row for {group} in {page}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let page = wait_for(WAIT, "the inbound worker ready and caught up", || async {
        browser.goto("").await;
        let page = browser.text().await;
        (page.contains("stripe-inbound ready") && inbound_lag(&page) == 0).then_some(page)
    })
    .await;
    assert!(page.contains("serve ready"), "{page}");

    // Stopped: unreachable, and its lag grows with every event.
    stack.stop_worker().await;
    for i in 0..3 {
        let e = customer_event(
            &format!("evt_lag{i}"),
            "customer.updated",
            1_700_000_100 + i,
            "cus_console0",
            json!({"email": "ada@example.com", "name": format!("Ada {i}")}),
        );
        assert_eq!(stack.post_event(&e).await, 200);
    }
    browser.goto("").await;
    let page = browser.text().await;
    assert!(page.contains("stripe-inbound unreachable"), "{page}");
    assert_eq!(inbound_lag(&page), 3, "{page}");
    let e = customer_event(
        "evt_lag3",
        "customer.updated",
        1_700_000_200,
        "cus_console1",
        json!({"email": "grace@example.com"}),
    );
    assert_eq!(stack.post_event(&e).await, 200);
    browser.goto("").await;
    assert_eq!(inbound_lag(&browser.text().await), 4, "the lag grew");
    browser.assert_accessible("overview").await;
    browser.screenshot("overview").await;

    // Keyboard: the first Tab reaches the skip link, the next the menu.
    use fantoccini::key::Key;
    let body = browser
        .client
        .find(fantoccini::Locator::Css("body"))
        .await
        .unwrap();
    body.send_keys(&char::from(Key::Tab).to_string())
        .await
        .unwrap();
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(focused.text().await.unwrap(), "Skip to content");
    focused
        .send_keys(&char::from(Key::Tab).to_string())
        .await
        .unwrap();
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(focused.text().await.unwrap(), "Overview");

    // Topics, then every message of one customer.
    browser.click("nav a[href='/console/topics']").await;
    let page = browser.text().await;
    assert!(
        page.contains(&stack.topic) && page.contains(&stack.group),
        "{page}"
    );
    browser.assert_accessible("topics").await;
    browser.screenshot("topics").await;
    browser.goto(&format!("/topics/{}", stack.topic)).await;
    browser.fill("#key", "cus_console0").await;
    browser.click("form.filters button").await;
    let page = browser.text().await;
    assert!(
        page.contains("4 message(s)"),
        "evt_c0 and three updates: {page}"
    );
    assert!(
        page.contains("evt_lag2") && !page.contains("evt_lag3"),
        "{page}"
    );
    browser.assert_accessible("messages").await;
    browser.screenshot("messages").await;

    // The mirror: back up, filter customers on a typed column, open one.
    stack.start_worker();
    stack.wait_ledger(6, WAIT).await;
    browser.goto("/mirror?relation=customers").await;
    browser.fill("#f-email", "grace@example.com").await;
    browser
        .click("form[aria-label='filter customers'] button")
        .await;
    let page = browser.text().await;
    assert!(
        page.contains("cus_console1") && !page.contains("cus_console0"),
        "{page}"
    );
    browser.assert_accessible("mirror").await;
    browser.screenshot("mirror").await;
    browser.click("main table a").await;
    let page = browser.text().await;
    assert!(page.contains("\"id\": \"cus_console1\""), "{page}");
    // A filter the engine refuses is said, not an error page.
    browser
        .goto("/mirror?relation=customers&created=yesterday")
        .await;
    assert!(
        browser.text().await.contains("created"),
        "the refused field is named"
    );

    browser.close().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_sync_is_retried_and_a_dead_letter_replayed_from_the_console() {
    let refusal = "Your account cannot currently make live charges.";
    // Three refusals: both creates, then the first retry of the first.
    let fake = FakeStripe::start(vec![
        Fault::Refuse(refusal.into()),
        Fault::Refuse(refusal.into()),
        Fault::Refuse(refusal.into()),
    ]);
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        start_outbound: true,
        start_worker: false,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for email in ["retry@example.com", "replay@example.com"] {
        let r = stack
            .api(Method::POST, "/api/customers")
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        stack.wait_sync_status(&id, "failed", WAIT).await;
        ids.push(id);
    }
    let browser = Browser::open(stack.addr).await;
    browser.log_in(ADMIN_TOKEN).await;
    let page = wait_for(WAIT, "both dead letters", || async {
        browser.goto("/dlq").await;
        let page = browser.text().await;
        (page.matches("cannot currently make live charges").count() == 2).then_some(page)
    })
    .await;
    assert!(page.contains(&stack.changes_topic), "{page}");
    browser.assert_accessible("dead letters").await;
    browser.screenshot("dlq").await;

    browser.goto("/sync?status=failed").await;
    let page = browser.text().await;
    assert!(
        page.contains(&ids[0]) && page.contains(&ids[1]) && page.contains(refusal),
        "{page}"
    );
    browser.assert_accessible("sync").await;
    browser.screenshot("sync").await;
    // Retry the first from the sync page: refused again (a third dead
    // letter, itself a replay), then retried again: that replay needs a
    // key of its own, or Stripe answers with the refusal it saved for the
    // first retry's key.
    let letters = || async {
        let v: Value = stack
            .admin(Method::GET, "/api/admin/dlq")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array().unwrap().len()
    };
    browser
        .click(&format!("button[aria-label='retry {} at stripe']", ids[0]))
        .await;
    assert!(
        browser.text().await.contains("Retrying"),
        "{}",
        browser.text().await
    );
    wait_for(WAIT, "the retry refused again", || async {
        (letters().await == 3).then_some(())
    })
    .await;
    stack.wait_sync_status(&ids[0], "failed", WAIT).await;
    browser.goto("/sync?status=failed").await;
    browser
        .click(&format!("button[aria-label='retry {} at stripe']", ids[0]))
        .await;
    stack.wait_sync_status(&ids[0], "synced", WAIT).await;

    // Replay the second's dead letter from the dead letters page: select,
    // confirm, see the result.
    browser.goto("/dlq").await;
    let rows = browser
        .client
        .find_all(fantoccini::Locator::Css("main tbody tr"))
        .await
        .unwrap();
    let mut picked = None;
    for row in rows {
        let text = row.text().await.unwrap();
        if text.contains(&ids[1]) && text.contains("not yet") {
            row.find(fantoccini::Locator::Css("input[type=checkbox]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            picked = Some(text);
        }
    }
    assert!(
        picked.is_some(),
        "the second customer's dead letter is listed, not replayed"
    );
    browser.click("main form button[type=submit]").await;
    assert!(browser.path().await.starts_with("/dlq/confirm?ids="));
    browser.assert_accessible("confirm").await;
    browser.screenshot("dlq-confirm").await;
    browser.click("main form button[type=submit]").await;
    assert!(browser.path().await.starts_with("/dlq?replayed="));
    assert!(browser.text().await.contains("Replayed 1"));
    stack.wait_sync_status(&ids[1], "synced", WAIT).await;
    browser.goto("/sync").await;
    assert!(browser.text().await.contains("Every customer is synced."));
    browser.close().await;
    stack.stop().await;
}

/// The console's guard rails and the admin API behind each of its
/// actions, over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_needs_a_session_and_csrf_and_the_api_holds_every_action() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |p: &str| format!("http://{}{p}", stack.addr);
    let r = http.get(url("/console/dlq")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    // A wrong token: 401 and no cookie.
    let r = http
        .post(url("/console/login"))
        .form(&[("token", "wrong-token-wrong-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = http
        .post(url("/console/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    // An action without the CSRF token, or with another one, does nothing.
    for form in [
        vec![("ids", "x:0:0")],
        vec![("ids", "x:0:0"), ("csrf", "00ff")],
    ] {
        let r = http
            .post(url("/console/dlq/replay"))
            .header("cookie", &session)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    // With the session's token, the action runs (an unknown id: nothing replayed).
    let page = http
        .get(url("/console/dlq"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let r = http
        .post(url("/console/dlq/replay"))
        .header("cookie", &session)
        .form(&[("ids", "nope:0:0"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "as the API answers an unknown id");
    assert!(r.text().await.unwrap().contains("Replay stopped"));
    // Another session's CSRF token does not open this one's actions.
    let other = http
        .post(url("/console/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let other = other.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(other, session);
    let r = http
        .post(url("/console/dlq/replay"))
        .header("cookie", &other)
        .form(&[("ids", "nope:0:0"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Logging out clears the cookie in the browser.
    let r = http
        .post(url("/console/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // A forged or expired cookie is no session.
    let r = http
        .get(url("/console"))
        .header("cookie", "stripe_sync_console=1.00.00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // The admin API answers what each page shows and does.
    let stack_ref = &stack;
    let get = |p: &'static str| async move {
        let r = stack_ref.admin(Method::GET, p).send().await.unwrap();
        let status = r.status();
        (status, r.json::<Value>().await.unwrap())
    };
    let (s, overview) = get("/api/admin/overview").await;
    assert_eq!(s, 200, "{overview}");
    assert_eq!(overview["processes"][0]["name"], "serve");
    assert!(overview["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["group"] == stack.group.as_str()));
    let (s, v) = get("/api/admin/sync?status=failed").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["customers"], json!([]));
    assert_eq!(get("/api/admin/sync?status=synced").await.0, 400);
    assert_eq!(get("/api/admin/exports").await.1, json!({"exports": []}));
    assert_eq!(
        get("/api/admin/refund-requests?status=queued").await.1,
        json!({"refund_requests": []})
    );
    assert_eq!(get("/api/admin/refund-requests?status=lost").await.0, 400);
    assert_eq!(
        get("/api/admin/customers/00000000-0000-0000-0000-000000000000/credits")
            .await
            .0,
        404
    );
    assert_eq!(get("/api/admin/topics/nope/messages").await.0, 404);
    let r = stack
        .admin(Method::POST, "/api/admin/dlq/replay")
        .json(&json!({"ids": ["nope:0:0"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an unknown id replays none");
    let r = stack
        .admin(
            Method::POST,
            &format!("/api/admin/sync/{}/stripe/retry", uuid::Uuid::new_v4()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "nothing failed, nothing to retry");
    // The API token opens none of it.
    let r = stack
        .api(Method::GET, "/api/admin/overview")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    stack.stop().await;

    // Without ADMIN_TOKEN the console is not there at all.
    let off = Stack::start(Options {
        start_worker: false,
        admin: false,
        ..Options::default()
    })
    .await;
    for path in ["/console", "/console/login", "/console/console.css"] {
        let r = http
            .get(format!("http://{}{path}", off.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    off.stop().await;
}
