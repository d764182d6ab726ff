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
