//! What the benchmark and the chaos soak share: the environment their
//! scripts hand them, ports, the machine's description, their
//! throw-away database, and the Stripe fake's answers for checkout
//! line items.

use anyhow::Context;
use diesel::prelude::*;
use serde_json::{json, Value};

/// A variable the script (`scripts/bench`, `scripts/chaos`) sets.
pub fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: run this through its script"))
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Cores and CPU model, printed under every table.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu})
}

/// A new database beside `admin_url`'s, named `db_name`; returns its URL.
pub fn create_database(admin_url: &str, db_name: &str) -> anyhow::Result<String> {
    diesel::sql_query(format!("CREATE DATABASE {db_name}"))
        .execute(&mut PgConnection::establish(admin_url)?)?;
    Ok(format!(
        "{}/{db_name}",
        admin_url
            .rsplit_once('/')
            .context("admin URL ends in /<db>")?
            .0
    ))
}

/// Drops a run's own database, whoever is still connected.
pub fn drop_database(admin_url: &str, db_name: &str) -> anyhow::Result<()> {
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .execute(&mut PgConnection::establish(admin_url)?)?;
    Ok(())
}

/// Stripe's example objects, by resource (`customer`, `checkout.session`…).
pub fn fixtures() -> Value {
    serde_json::from_str::<Value>(include_str!("../tests/fixtures/stripe/fixtures3.json"))
        .expect("the fixtures parse")["resources"]
        .clone()
}

/// What a Stripe fake answers for a balance transaction, which the worker
/// reads when a charge, refund or payout names one the mirror lacks
/// (`registry::NAMED`): Stripe's example with that id, settled, so it is
/// read once.
pub fn balance_transaction(id: &str, fixtures: &Value) -> Value {
    let mut txn = fixtures["balance_transaction"].clone();
    txn["id"] = json!(id);
    txn["status"] = json!("available");
    txn
}

/// Checkout sessions whose line items are of a product no order
/// notification is for.
pub const OTHER_PRODUCT_SESSION_PREFIX: &str = "cs_chaosother";

/// What a Stripe fake answers for a checkout session's line items (the
/// payload leaves them out, so the worker reads them): Stripe's example
/// item, twice. The chaos soak's orders of another product
/// (`cs_chaosother…`) get another product, which the order notifier's
/// product filter leaves out.
pub fn line_items(session: &str, fixtures: &Value) -> Value {
    let items: Vec<Value> = (0..2)
        .map(|i| {
            let mut item = fixtures["item"].clone();
            item["id"] = json!(format!("li_{session}_{i}"));
            if session.starts_with(OTHER_PRODUCT_SESSION_PREFIX) {
                item["price"]["product"] = json!("prod_chaos_other");
            }
            item
        })
        .collect();
    json!({"object": "list", "data": items, "has_more": false, "url": "/v1/checkout/sessions/line_items"})
}
