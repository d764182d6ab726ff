//! Backfill against a Stripe that answers like Stripe does under load:
//! each list page after a latency (300 ms), and a rate limit enforced in
//! every one-second window (429 beyond it). The ceiling is the limit's:
//! 100 objects a page × the requests a second allowed. Measured from a
//! cold start: `stripe-sync backfill` started as a process, its objects
//! published to the broker, until it exits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use warp::Filter;

use crate::report::{row, Row};

/// What the fake Stripe holds and how it answers.
pub(crate) struct Limits {
    /// Requests a second the fake answers; the rest get 429.
    pub per_second: u32,
    pub latency: Duration,
}

#[derive(Default)]
struct Counts {
    answered: u64,
    refused: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

struct FakeState {
    /// collection -> objects, newest first (created desc, id desc).
    lists: HashMap<String, Vec<Value>>,
    /// When the requests of the last second were let in.
    window: Mutex<VecDeque<Instant>>,
    counts: Mutex<Counts>,
    limits: Limits,
}

/// Objects of three types, Stripe's examples under new ids, created over
/// three years (more of them recent, as accounts grow).
fn dataset(total: usize, fixtures: &Value) -> HashMap<String, Vec<Value>> {
    let now = 1_760_000_000i64;
    let span = 3 * 365 * 86_400i64;
    let mut lists = HashMap::new();
    for (collection, object, share, prefix) in [
        ("customers", "customer", 0.6, "cus_bf"),
        ("products", "product", 0.25, "prod_bf"),
        ("prices", "price", 0.15, "price_bf"),
    ] {
        let n = (total as f64 * share) as usize;
        let mut objects: Vec<Value> = (0..n)
            .map(|i| {
                let mut o = fixtures[object].clone();
                o["id"] = json!(format!("{prefix}{i:08}"));
                // Quadratic: the newest year holds more than the oldest two.
                let age = (span as f64 * (i as f64 / n as f64).powi(2)) as i64;
                o["created"] = json!(now - age);
                o
            })
            .collect();
        objects.sort_by(|a, b| {
            (b["created"].as_i64(), b["id"].as_str())
                .cmp(&(a["created"].as_i64(), a["id"].as_str()))
        });
        lists.insert(collection.to_owned(), objects);
    }
    lists
}

fn start_fake(lists: HashMap<String, Vec<Value>>, limits: Limits) -> (String, Arc<FakeState>) {
    let state = Arc::new(FakeState {
        lists,
        window: Mutex::new(VecDeque::new()),
        counts: Mutex::new(Counts::default()),
        limits,
    });
    let shared = state.clone();
    let route = warp::get()
        .and(warp::path!("v1" / String))
        .and(warp::query::<Vec<(String, String)>>())
        .and_then(move |collection: String, query: Vec<(String, String)>| {
            let state = shared.clone();
            async move {
                {
                    let mut counts = state.counts.lock().unwrap();
                    let now = Instant::now();
                    counts.first.get_or_insert(now);
                    counts.last = Some(now);
                }
                let admitted = {
                    let mut window = state.window.lock().unwrap();
                    let now = Instant::now();
                    while window
                        .front()
                        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                    {
                        window.pop_front();
                    }
                    let ok = window.len() < state.limits.per_second as usize;
                    if ok {
                        window.push_back(now);
                    }
                    ok
                };
                tokio::time::sleep(state.limits.latency).await;
                let (status, body) = if admitted {
                    state.counts.lock().unwrap().answered += 1;
                    page(&state, &collection, &query)
                } else {
                    state.counts.lock().unwrap().refused += 1;
                    (
                        429,
                        json!({"error": {"type": "rate_limit_error", "message": "Too many requests"}}),
                    )
                };
                Ok::<_, warp::Rejection>(
                    warp::http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .unwrap(),
                )
            }
        });
    let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(server);
    (format!("http://{addr}"), state)
}

/// One page as Stripe serves it: `created` bounds, `starting_after`,
/// `limit` up to 100, newest first.
fn page(state: &FakeState, collection: &str, query: &[(String, String)]) -> (u16, Value) {
    let Some(all) = state.lists.get(collection) else {
        return (
            404,
            json!({"error": {"message": "Unrecognized request URL"}}),
        );
    };
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let bound = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    let (gte, lt) = (bound("created[gte]"), bound("created[lt]"));
    let limit = get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10usize)
        .min(100);
    let within = |o: &Value| {
        let c = o["created"].as_i64().unwrap_or(0);
        gte.is_none_or(|g| c >= g) && lt.is_none_or(|l| c < l)
    };
    // Positioned by the cursor's sort key, as Stripe does: a cursor need
    // not pass the bounds (the newer part of a split slice keeps it).
    let cursor = match get("starting_after") {
        Some(after) => match all.iter().find(|o| o["id"] == after) {
            Some(c) => Some((c["created"].as_i64(), c["id"].as_str())),
            None => return (400, json!({"error": {"message": "No such object"}})),
        },
        None => None,
    };
    let data: Vec<&Value> = all
        .iter()
        .filter(|o| within(o))
        .filter(|o| cursor.is_none_or(|key| (o["created"].as_i64(), o["id"].as_str()) < key))
        .take(limit + 1)
        .collect();
    let has_more = data.len() > limit;
    let data: Vec<&Value> = data.into_iter().take(limit).collect();
    (
        200,
        json!({"object": "list", "data": data, "has_more": has_more}),
    )
}

/// The backfill row: objects a second from a cold start, against the
/// limit's ceiling.
pub(crate) async fn backfill_rows(
    db_url: &str,
    brokers: &str,
    suffix: &str,
    objects: usize,
    fixtures: &Value,
) -> anyhow::Result<Vec<Row>> {
    let limits = Limits {
        per_second: 25,
        latency: Duration::from_millis(300),
    };
    let (per_second, latency) = (limits.per_second, limits.latency);
    let lists = dataset(objects, fixtures);
    let total: usize = lists.values().map(Vec::len).sum();
    let (base, state) = start_fake(lists, limits);
    let bin = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .join("stripe-sync");
    let started = Instant::now();
    let out = tokio::process::Command::new(bin)
        .args(["backfill", "customer", "product", "price"])
        .env_clear()
        .env("DATABASE_URL", db_url)
        .env("KAFKA_BROKERS", brokers)
        .env(
            "STRIPE_EVENTS_TOPIC",
            format!("stripe.events.v1.backfill.{suffix}"),
        )
        .env("STRIPE_API_KEY", "sk_test_bench")
        .env("STRIPE_API_BASE", &base)
        // The client keeps to the account's limit, as a user sets it.
        .env("STRIPE_RATE_LIMIT", per_second.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "backfill failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let published: u64 = said
        .lines()
        .filter_map(|l| {
            l.split("backfilled ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    anyhow::ensure!(
        published as usize == total,
        "backfill published {published} of {total} objects: {said}"
    );
    let counts = state.counts.lock().unwrap();
    let since_start = |t: Option<Instant>| t.map_or(f64::NAN, |t| (t - started).as_secs_f64());
    eprintln!(
        "backfill: {total} objects in {secs:.1} s, {} list calls answered, {} refused (429); \
         first call at {:.2} s, last at {:.2} s",
        counts.answered,
        counts.refused,
        since_start(counts.first),
        since_start(counts.last)
    );
    let ceiling = 100.0 * per_second as f64;
    Ok(vec![row(
        &format!(
            "backfill from a cold start, {total} objects of 3 types, {} ms a page, \
             {per_second} requests/s allowed ({} answered 429)",
            latency.as_millis(),
            counts.refused
        ),
        total as f64 / secs,
        "objects/s",
        Some(ceiling),
        ">= 90% of the rate limit's ceiling",
    )])
}
