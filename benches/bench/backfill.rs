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
    /// Each answered call: when it arrived, and the page's size against
    /// the limit asked for (where the calls went, for the report).
    pages: Vec<(Instant, usize, usize)>,
}

/// One collection, newest first (created desc, id desc), indexed so a
/// page costs the fake next to nothing: a slow fake delays its own
/// arrivals unevenly and refuses requests that were sent in time.
struct List {
    objects: Vec<Value>,
    /// `created` of each object, in the same (descending) order.
    created: Vec<i64>,
    /// id -> position.
    at: HashMap<String, usize>,
}

impl List {
    fn new(objects: Vec<Value>) -> Self {
        let created = objects
            .iter()
            .map(|o| o["created"].as_i64().unwrap_or(0))
            .collect();
        let at = objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o["id"].as_str().unwrap_or_default().to_owned(), i))
            .collect();
        Self {
            objects,
            created,
            at,
        }
    }
}

struct FakeState {
    lists: HashMap<String, List>,
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
        lists: lists
            .into_iter()
            .map(|(collection, objects)| (collection, List::new(objects)))
            .collect(),
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
                let arrived = Instant::now();
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
                    let (status, body) = page(&state, &collection, &query);
                    let size = body["data"].as_array().map_or(0, Vec::len);
                    let limit = query
                        .iter()
                        .find(|(k, _)| k == "limit")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(10usize)
                        .min(100);
                    let mut counts = state.counts.lock().unwrap();
                    counts.answered += 1;
                    counts.pages.push((arrived, size, limit));
                    (status, body)
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
    let Some(list) = state.lists.get(collection) else {
        return (
            404,
            json!({"error": {"message": "Unrecognized request URL"}}),
        );
    };
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let bound = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    let limit = get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10usize)
        .min(100);
    // Newest first: the objects created before `lt` start where the
    // descending `created` drops below it, those at or after `gte` end
    // where it drops below that.
    let from = bound("created[lt]").map_or(0, |lt| list.created.partition_point(|c| *c >= lt));
    let to = bound("created[gte]").map_or(list.created.len(), |gte| {
        list.created.partition_point(|c| *c >= gte)
    });
    // Positioned by the cursor's sort key, as Stripe does: a cursor need
    // not pass the bounds (the newer part of a split slice keeps it).
    let from = match get("starting_after") {
        Some(after) => match list.at.get(after) {
            Some(i) => from.max(i + 1),
            None => return (400, json!({"error": {"message": "No such object"}})),
        },
        None => from,
    };
    let data: &[Value] = list.objects.get(from..to.max(from)).unwrap_or_default();
    let has_more = data.len() > limit;
    let data = &data[..data.len().min(limit)];
    (
        200,
        json!({"object": "list", "data": data, "has_more": has_more}),
    )
}

/// Where the calls went: full pages, partial pages, empty pages and
/// one-item probes, and the calls that arrived in each second of the run.
fn where_calls_went(pages: &[(Instant, usize, usize)], started: Instant) -> String {
    let count =
        |f: &dyn Fn(usize, usize) -> bool| pages.iter().filter(|(_, n, l)| f(*n, *l)).count();
    let full = count(&|n, l| n == l && l > 1);
    let partial = count(&|n, l| n > 0 && n < l && l > 1);
    let empty = count(&|n, l| n == 0 && l > 1);
    let probes = count(&|_, l| l == 1);
    // How many of `pages` arrived in each `seconds` from the start.
    let per = |seconds: u64, pages: &mut dyn Iterator<Item = &(Instant, usize, usize)>| {
        let mut buckets: Vec<usize> = Vec::new();
        for (at, _, _) in pages {
            let bucket = ((*at - started).as_secs() / seconds) as usize;
            if buckets.len() <= bucket {
                buckets.resize(bucket + 1, 0);
            }
            buckets[bucket] += 1;
        }
        buckets
    };
    let per_second = per(1, &mut pages.iter());
    // A slice ends on a partial or empty page: when they came says
    // whether slices ended through the run (uneven splits) or at its end.
    let ends = per(5, &mut pages.iter().filter(|(_, n, l)| n < l && *l > 1));
    let in_partial: usize = pages
        .iter()
        .filter(|(_, n, l)| n < l && *l > 1)
        .map(|(_, n, _)| n)
        .sum();
    let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(" ");
    format!(
        "{full} full pages, {partial} partial ({in_partial} objects), {empty} empty, \
         {probes} one-item probes; calls answered in each second from the start: {}; \
         partial or empty pages in each 5 s: {}",
        join(&per_second),
        join(&ends)
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
    eprintln!("backfill: {}", where_calls_went(&counts.pages, started));
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
