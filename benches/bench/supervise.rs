//! The engine's processes as the bench runs them (started, stopped, their
//! peak memory), what they are configured with, and the in-process Stripe
//! fake they talk to.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use warp::Filter;

use crate::common;
use crate::report::peak_rss_mib;
use crate::{SECRET, TOKEN, TUNING_PASSED_THROUGH};

pub(crate) struct Processes {
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
    children: HashMap<&'static str, Child>,
}

impl Processes {
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        bin: &str,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        // stripe-inbound runs with two malloc arenas, as docker-compose and
        // scripts/dev run it (a MALLOC_ARENA_MAX passed through overrides).
        let arenas = (bin == "stripe-inbound").then_some(("MALLOC_ARENA_MAX", "2"));
        let child = Command::new(self.dir.join(bin))
            .args(args)
            .env_clear()
            .envs(arenas)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {bin}"))?;
        let pid = child.id();
        self.children.insert(name, child);
        Ok(pid)
    }

    /// Runs `child`, started by the caller, as one of these processes.
    pub(crate) fn adopt(&mut self, name: &'static str, child: Child) {
        self.children.insert(name, child);
    }

    pub(crate) fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name).map(Child::id)
    }

    pub(crate) fn stop(&mut self, name: &str) -> Option<f64> {
        let mut child = self.children.remove(name)?;
        let rss = peak_rss_mib(child.id());
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        rss
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) async fn wait_http(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not become ready")
}

/// The inbound worker's count of events applied (every outcome), from its
/// `/metrics`; 0 while it is not answering yet.
pub(crate) async fn applied_events(http: &reqwest::Client, metrics_url: &str) -> u64 {
    let Ok(response) = http.get(metrics_url).send().await else {
        return 0;
    };
    let body = response.text().await.unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("stripe_sync_events_applied_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The events topic of the bench run named `suffix`.
pub(crate) fn bench_events_topic(suffix: &str) -> String {
    format!("stripe.events.v1.bench.{suffix}")
}

/// The engine's processes as the bench runs them: one database, the bench's
/// own topics and groups (named after `suffix`), an in-process Stripe fake,
/// and the tuning settings set for the bench handed on.
pub(crate) fn engine_processes(
    db_url: &str,
    brokers: &str,
    suffix: &str,
    listen_port: u16,
) -> anyhow::Result<Processes> {
    let fake = start_fake_stripe();
    let dir = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let env = [
        ("DATABASE_URL", db_url.to_owned()),
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("STRIPE_EVENTS_TOPIC", bench_events_topic(suffix)),
        (
            "CUSTOMER_CHANGES_TOPIC",
            format!("customers.changes.v1.bench.{suffix}"),
        ),
        ("INBOUND_CONSUMER_GROUP", format!("bench.inbound.{suffix}")),
        (
            "OUTBOUND_CONSUMER_GROUP",
            format!("bench.outbound.{suffix}"),
        ),
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("API_TOKEN", TOKEN.to_owned()),
        ("STRIPE_API_KEY", "sk_test_bench".to_owned()),
        ("STRIPE_API_BASE", fake),
        ("STRIPE_RATE_LIMIT", "0".to_owned()),
        ("LISTEN_ADDR", format!("127.0.0.1:{listen_port}")),
        ("DATABASE_POOL_SIZE", "16".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    // Tuning settings set for the bench reach the processes, to try them.
    .chain(
        TUNING_PASSED_THROUGH
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v))),
    )
    .collect();
    Ok(Processes {
        dir,
        env,
        children: HashMap::new(),
    })
}

/// An in-process Stripe that answers instantly, so the outbound figure
/// measures stripe-sync, not a fake.
pub(crate) fn start_fake_stripe() -> String {
    // Shared, not copied: warp clones a route for every connection.
    let fixtures: Arc<Value> = Arc::new(common::fixtures());
    let txn_fixtures = fixtures.clone();
    let line_items = warp::path!("v1" / "checkout" / "sessions" / String / "line_items")
        .and(warp::get())
        .map(move |session: String| warp::reply::json(&common::line_items(&session, &fixtures)));
    let balance_transaction = warp::path!("v1" / "balance_transactions" / String)
        .and(warp::get())
        .map(move |id: String| warp::reply::json(&common::balance_transaction(&id, &txn_fixtures)));
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let route = warp::path!("v1" / "customers").and(warp::post()).map(move || {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        warp::reply::json(&json!({"id": format!("cus_fast{n}"), "object": "customer", "created": 1_700_000_000, "metadata": {}}))
    });
    // Re-reads (same-second ties) find the customer live.
    let retrieve = warp::path!("v1" / "customers" / String)
        .and(warp::get())
        .map(|id: String| {
            warp::reply::json(
                &json!({"id": id, "object": "customer", "created": 1_700_000_000, "metadata": {}}),
            )
        });
    let (addr, server) = warp::serve(route.or(retrieve).or(line_items).or(balance_transaction))
        .bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(server);
    format!("http://{addr}")
}
