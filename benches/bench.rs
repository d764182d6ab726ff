//! The spine's benchmark: this machine's ceilings and stripe-sync's own
//! figures, measured in one run against real Postgres, a real broker and
//! the real binaries. Run through `scripts/bench` (which starts the
//! services); `--quick` is the short smoke run CI uses.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use futures::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use serde_json::{json, Value};
use stripe_sync::config::DatabaseConfig;
use stripe_sync::db;
use stripe_sync::kafka::EventProducer;
use stripe_sync::stripe::signature::{sign, WebhookVerifier};
use warp::Filter;

mod common;
mod mix;

use common::{drop_database, env, free_port, machine};

const SECRET: &str = "whsec_bench";
const TOKEN: &str = "bench-api-token-0123456789";
/// Engine settings the bench hands on to the processes when set.
const TUNING_PASSED_THROUGH: &[&str] = &[
    "KAFKA_FETCH_WAIT_MS",
    "INBOUND_BATCH_SIZE",
    "INBOUND_BATCH_WAIT_MS",
    "INBOUND_APPLY_LANES",
    "KAFKA_FETCH_MAX_BYTES",
    // glibc's, not ours: how many malloc arenas a process keeps.
    "MALLOC_ARENA_MAX",
];

#[derive(Clone, Copy)]
struct Scale {
    hmac_iterations: u64,
    producer_messages: usize,
    upsert_rows: usize,
    ingest_secs: u64,
    fixed_rate_secs: u64,
    backlog_events: usize,
    outbound_writes: usize,
}

#[derive(serde::Serialize, Clone)]
struct Row {
    figure: String,
    value: f64,
    unit: String,
    ceiling: Option<f64>,
    ratio: Option<f64>,
    target: String,
}

/// A figure for the table; also printed as soon as it is measured, so a
/// long run shows its progress.
fn row(figure: &str, value: f64, unit: &str, ceiling: Option<f64>, target: &str) -> Row {
    eprintln!("measured: {figure}: {value:.1} {unit}");
    Row {
        figure: figure.into(),
        value,
        unit: unit.into(),
        ceiling,
        ratio: ceiling.map(|c| value / c),
        target: target.into(),
    }
}

/// Rows for the p50, p95 and p99 of `sorted` latencies (seconds) in ms;
/// the target applies to the p99.
fn latency_rows(figure: &str, sorted: &[f64], p99_target: &str) -> Vec<Row> {
    [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")]
        .into_iter()
        .map(|(p, name)| {
            row(
                &format!("{figure}, {name}"),
                percentile(sorted, p) * 1000.0,
                "ms",
                None,
                if name == "p99" { p99_target } else { "-" },
            )
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn customer_event(n: u64, customer: &str, created: i64, fixtures: &Value) -> Value {
    customer_event_numbered(&n, customer, created, fixtures)
}

/// [`customer_event`] with its number written by `n` (the load generator's
/// template leaves it open).
fn customer_event_numbered(
    n: &dyn std::fmt::Display,
    customer: &str,
    created: i64,
    fixtures: &Value,
) -> Value {
    let mut c = fixtures["customer"].clone();
    c["id"] = json!(customer);
    c["name"] = json!(format!("Customer {n}"));
    c["email"] = json!(format!("c{n}@example.com"));
    c["discount"] = Value::Null;
    let mut e = fixtures["event"].clone();
    e["id"] = json!(format!("evt_bench_{n}"));
    e["type"] = json!("customer.updated");
    e["created"] = json!(created);
    e["data"] = json!({"object": c});
    e["request"] = json!({"id": null, "idempotency_key": null});
    e
}

/// Event number `n` of a hot spot: 5,000 customers (`{prefix}0` …) updated
/// in turn, each a second after its previous event.
fn hot_spot_event(prefix: &str, n: u64, fixtures: &Value) -> Value {
    customer_event(
        n,
        &format!("{prefix}{}", n % 5000),
        1_800_000_000 + (n / 5000) as i64,
        fixtures,
    )
}

/// Peak resident set size of a process, from /proc (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

struct Processes {
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
    children: HashMap<&'static str, Child>,
}

impl Processes {
    fn spawn(
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

    fn stop(&mut self, name: &str) -> Option<f64> {
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

async fn wait_http(url: &str) -> anyhow::Result<()> {
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

/// Clears the dead row versions the previous phase left. The bench updates
/// 5,000 customers hundreds of thousands of times within minutes, far
/// faster than autovacuum (a minute between rounds) follows; without this,
/// each phase would pay for the bloat of the ones before it, and the
/// figures would depend on their order rather than on the engine.
fn vacuum(conn: &mut PgConnection) -> anyhow::Result<()> {
    diesel::sql_query("VACUUM (ANALYZE) customers, id_map, event_ledger").execute(conn)?;
    Ok(())
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<N>(conn)
        .map(|r| r.n)
        .unwrap_or(-1)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick {
        Scale {
            hmac_iterations: 20_000,
            producer_messages: 5_000,
            upsert_rows: 5_000,
            ingest_secs: 2,
            fixed_rate_secs: 2,
            backlog_events: 5_000,
            outbound_writes: 200,
        }
    } else {
        Scale {
            hmac_iterations: 300_000,
            producer_messages: 100_000,
            upsert_rows: 100_000,
            ingest_secs: 10,
            fixed_rate_secs: 10,
            backlog_events: 100_000,
            outbound_writes: 3_000,
        }
    };
    let admin_url = env("BENCH_PG_ADMIN_URL")?;
    let brokers = env("BENCH_KAFKA_BROKERS")?;
    let suffix = format!("{:08x}", rand::random::<u32>());
    let db_name = format!("bench_{suffix}");
    let db_url = common::create_database(&admin_url, &db_name)?;
    let pool = db::pool(&DatabaseConfig {
        url: SecretString::from(db_url.clone()),
        pool_size: 4,
    });
    db::run_migrations(&pool)?;
    let fixtures = common::fixtures();
    let mut rows: Vec<Row> = Vec::new();
    // Parallel lanes (connections) for the Postgres rows: one per core.
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get());
    // `--store-apply`: only the Postgres side of the inbound apply and its
    // ceiling, for profiling (perf record -p <pid>) without the rest.
    if std::env::args().any(|a| a == "--store-apply") {
        let figures =
            [1, lanes].map(|lanes| (lanes, postgres_figures(&pool, &fixtures, &scale, lanes)));
        // The type mix on one connection (its objects are not split by
        // lane as customers are).
        let mix = store_apply_rate(&pool, &fixtures, scale.backlog_events, 1, TYPE_MIX);
        let mix_ceiling = mix::upsert_ceiling(&mut *pool.get()?, &fixtures, scale.upsert_rows);
        drop(pool);
        drop_database(&admin_url, &db_name)?;
        for (lanes, figures) in figures {
            let (ceiling, rate) = figures?;
            println!(
                "{lanes} connection(s): batched upsert ceiling: {ceiling:.0} rows/s; inbound \
                 apply, Postgres side only: {rate:.0} events/s ({:.0}%)",
                100.0 * rate / ceiling
            );
        }
        let (mix, mix_ceiling) = (mix?, mix_ceiling?);
        println!(
            "1 connection: batched upsert ceiling of the type mix: {mix_ceiling:.0} events/s; \
             inbound apply of the type mix, Postgres side only: {mix:.0} events/s ({:.0}%)",
            100.0 * mix / mix_ceiling
        );
        return Ok(());
    }

    // `--backlog`: only the inbound worker's apply from the memory broker's
    // backlog and its peak RSS, to try settings (INBOUND_APPLY_LANES, ...).
    if std::env::args().any(|a| a == "--backlog") {
        let memory_brokers = env("BENCH_KAFKA_MEMORY_BROKERS")?;
        let mut procs = engine_processes(&db_url, &memory_brokers, &suffix, free_port()?)?;
        let http = reqwest::Client::new();
        let mut conn = PgConnection::establish(&db_url)?;
        let mut measured = Vec::new();
        for backlog in [CUSTOMERS_ONLY, TYPE_MIX] {
            let figures = memory_backlog(
                &mut procs,
                &http,
                &mut conn,
                &memory_brokers,
                &bench_events_topic(&suffix),
                &suffix,
                scale.backlog_events,
                &fixtures,
                backlog,
            )
            .await;
            measured.push((backlog.name, figures));
        }
        drop((conn, pool));
        drop_database(&admin_url, &db_name)?;
        for (name, figures) in measured {
            let (rate, rss) = figures?;
            println!(
                "inbound apply from the memory broker's backlog of {} ({name}): {rate:.0} events/s, \
                 peak RSS {rss:.0?} MiB",
                scale.backlog_events
            );
        }
        return Ok(());
    }

    // --- ceilings -----------------------------------------------------------
    let body = serde_json::to_vec(&customer_event(1, "cus_ceiling", 1_700_000_000, &fixtures))?;
    let verifier = WebhookVerifier::new(vec![SecretString::from(SECRET.to_owned())], 300);
    let now = stripe_sync::ingest::unix_now();
    let header = sign(SECRET, now, &body);
    let start = Instant::now();
    for _ in 0..scale.hmac_iterations {
        verifier.verify(Some(&header), &body, now).expect("valid");
    }
    let hmac_rate = scale.hmac_iterations as f64 / start.elapsed().as_secs_f64();
    rows.push(row(
        &format!("ceiling: HMAC verify, {} B event, 1 core", body.len()),
        hmac_rate,
        "events/s",
        None,
        "-",
    ));

    let raw_topic = format!("bench.raw.{suffix}");
    let produce_rate =
        raw_produce_rate(&brokers, &raw_topic, &body, scale.producer_messages).await?;
    rows.push(row(
        "ceiling: raw produce of the envelope (acks=all, idempotent)",
        produce_rate,
        "msgs/s",
        None,
        "-",
    ));
    let memory_brokers = env("BENCH_KAFKA_MEMORY_BROKERS")?;
    let memory_produce_rate =
        raw_produce_rate(&memory_brokers, &raw_topic, &body, scale.producer_messages).await?;
    rows.push(row(
        "ceiling: raw produce of the envelope, memory broker",
        memory_produce_rate,
        "msgs/s",
        None,
        "-",
    ));

    // Postgres' ceiling and the apply's Postgres side (the worker's batch
    // apply on parsed events, batches of 500, no broker), on one connection
    // as one lane applies, and on one per core, as parallel lanes would.
    let mut postgres = Vec::new();
    for lanes in [1, lanes] {
        let (pool, fixtures) = (pool.clone(), fixtures.clone());
        let (ceiling, rate) =
            tokio::task::spawn_blocking(move || postgres_figures(&pool, &fixtures, &scale, lanes))
                .await??;
        let (ceiling_label, apply_label) = if lanes == 1 {
            (String::new(), String::new())
        } else {
            (format!(", {lanes} connections"), format!(", {lanes} lanes"))
        };
        rows.push(row(
            &format!("ceiling: batched upsert (500/tx), real customer rows{ceiling_label}"),
            ceiling,
            "rows/s",
            None,
            "-",
        ));
        rows.push(row(
            &format!("inbound apply, Postgres side only (batches of 500, no broker){apply_label}"),
            rate,
            "events/s",
            Some(ceiling),
            ">= 20000 and >= 50% of ceiling",
        ));
        postgres.push(ceiling);
    }
    // The engine's figures compare with the single-connection ceiling.
    let upsert_rate = postgres[0];

    // --- the engine, as separate processes ----------------------------------
    let events_topic = bench_events_topic(&suffix);
    let listen_port = free_port()?;
    let mut procs = engine_processes(&db_url, &brokers, &suffix, listen_port)?;
    procs.spawn("serve", "stripe-sync", &["serve"], &[])?;
    let base = format!("http://127.0.0.1:{listen_port}");
    wait_http(&format!("{base}/readyz")).await?;
    // A timeout, so one stuck request cannot hang the whole run.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(10))
        .build()?;

    rows.extend(
        ingest_figures(
            &base,
            &fixtures,
            &scale,
            "",
            produce_rate.min(hmac_rate),
            10_000_000,
        )
        .await?,
    );

    // The same against a broker that keeps records in memory: what `serve`
    // itself sustains when the sqlite broker is not the bottleneck.
    let memory_port = free_port()?;
    procs.spawn(
        "serve-memory-broker",
        "stripe-sync",
        &["serve"],
        &[
            ("KAFKA_BROKERS", memory_brokers.clone()),
            ("LISTEN_ADDR", format!("127.0.0.1:{memory_port}")),
        ],
    )?;
    let memory_base = format!("http://127.0.0.1:{memory_port}");
    wait_http(&format!("{memory_base}/readyz")).await?;
    rows.extend(
        ingest_figures(
            &memory_base,
            &fixtures,
            &scale,
            ", memory broker",
            memory_produce_rate.min(hmac_rate),
            30_000_000,
        )
        .await?,
    );
    let serve_memory_rss = procs.stop("serve-memory-broker");

    // End to end at 1000/s: webhook 200 → row visible.
    procs.spawn(
        "stripe-inbound",
        "stripe-inbound",
        &[],
        &[("METRICS_ADDR", format!("127.0.0.1:{}", free_port()?))],
    )?;
    let mut conn = PgConnection::establish(&db_url)?;
    // Let the worker join and apply everything produced so far (each
    // message on the topic is a distinct event, so one ledger row each).
    let produced =
        stripe_sync::ops::topics::list(&brokers, std::slice::from_ref(&events_topic))?[0].messages;
    wait_ledger(&mut conn, produced, Duration::from_secs(300)).await;
    vacuum(&mut conn)?;
    let e2e = end_to_end(
        &http,
        &base,
        &fixtures,
        &db_url,
        Duration::from_secs(scale.fixed_rate_secs),
    )
    .await?;
    rows.extend(latency_rows(
        "end to end (200 → row visible) at 1000/s",
        &e2e,
        "<= 100",
    ));

    // Inbound apply rate from a backlog, first through the sqlite broker.
    let inbound_rss_1 = procs.stop("stripe-inbound");
    // Where the backlog begins: each partition's high watermark before it.
    let backlog_starts =
        stripe_sync::ops::topics::list(&brokers, std::slice::from_ref(&events_topic))?
            .remove(0)
            .partitions;
    produce_backlog(
        &brokers,
        &events_topic,
        50_000_000,
        scale.backlog_events,
        &fixtures,
        customer_backlog_event,
    )
    .await?;
    // The broker's own consume ceiling, with the workers' fetch settings,
    // over what the worker is about to read: the backlog alone.
    let consume_rate = {
        let (brokers, topic) = (brokers.clone(), events_topic.clone());
        tokio::task::spawn_blocking(move || raw_consume_rate(&brokers, &topic, &backlog_starts))
            .await??
    };
    rows.push(row(
        "ceiling: raw consume of the backlog (the workers' fetch settings)",
        consume_rate,
        "msgs/s",
        None,
        "-",
    ));
    vacuum(&mut conn)?;
    let apply_rate = backlog_apply_rate(
        &mut procs,
        &http,
        "stripe-inbound",
        &[],
        scale.backlog_events,
    )
    .await?;
    rows.push(row(
        "inbound apply from a backlog",
        apply_rate,
        "events/s",
        Some(upsert_rate),
        ">= 20000 and >= 50% of ceiling",
    ));
    rows.push(row(
        "inbound apply from a backlog, against consume",
        apply_rate,
        "events/s",
        Some(consume_rate),
        "-",
    ));
    // The same from the memory broker, whose consume is not the bottleneck:
    // what the worker itself sustains.
    let (memory_apply_rate, inbound_memory_rss) = memory_backlog(
        &mut procs,
        &http,
        &mut conn,
        &memory_brokers,
        &events_topic,
        &suffix,
        scale.backlog_events,
        &fixtures,
        CUSTOMERS_ONLY,
    )
    .await?;
    rows.push(row(
        "inbound apply from a backlog, memory broker",
        memory_apply_rate,
        "events/s",
        Some(upsert_rate),
        ">= 20000 and >= 50% of ceiling",
    ));
    // Outbound: API writes through outbox → relay → Kafka → stripe-outbound → fake.
    procs.spawn(
        "outbox-relay",
        "outbox-relay",
        &[],
        &[("METRICS_ADDR", format!("127.0.0.1:{}", free_port()?))],
    )?;
    procs.spawn(
        "stripe-outbound",
        "stripe-outbound",
        &[],
        &[("METRICS_ADDR", format!("127.0.0.1:{}", free_port()?))],
    )?;
    tokio::time::sleep(Duration::from_secs(8)).await; // consumer group join
                                                      // As many clients as the ingest runs with; each write must be accepted
                                                      // (201) to count, and the figure waits for exactly the accepted ones.
    let start = Instant::now();
    let creates = (0..scale.outbound_writes).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.post(format!("{base}/api/customers"))
                .bearer_auth(TOKEN)
                .json(&json!({"email": format!("out{i}@example.com")}))
                .send()
                .await
                .is_ok_and(|r| r.status() == 201)
        }
    });
    let accepted_writes = futures::stream::iter(creates)
        .buffer_unordered(64)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let accepted = start.elapsed();
    if accepted_writes < scale.outbound_writes {
        eprintln!(
            "outbound: only {accepted_writes} of {} API writes were accepted",
            scale.outbound_writes
        );
    }
    loop {
        let delivered = count(
            &mut conn,
            "SELECT count(*) AS n FROM outbox_deliveries WHERE status = 'synced'",
        );
        if delivered >= accepted_writes as i64 || start.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outbound_rate = accepted_writes as f64 / start.elapsed().as_secs_f64();
    rows.push(row(
        "API writes accepted (POST /api/customers, 64 clients)",
        accepted_writes as f64 / accepted.as_secs_f64(),
        "writes/s",
        None,
        "-",
    ));
    rows.push(row(
        "outbound: API write → Stripe fake acknowledged",
        outbound_rate,
        "writes/s",
        None,
        "-",
    ));

    // The catalog: the same backlog size as a realistic mix of types
    // (checkout sessions' line items read from the Stripe fake), against
    // the customers-only figure. Last of the phases: its quarter of a
    // gigabyte of writes leaves Postgres vacuuming and checkpointing, which
    // would weigh on the phases after it.
    let (mix_apply_rate, inbound_mix_rss) = memory_backlog(
        &mut procs,
        &http,
        &mut conn,
        &memory_brokers,
        &events_topic,
        &suffix,
        scale.backlog_events,
        &fixtures,
        TYPE_MIX,
    )
    .await?;
    rows.push(row(
        "inbound apply from a backlog, memory broker, type mix",
        mix_apply_rate,
        "events/s",
        Some(memory_apply_rate),
        ">= 90% of customers-only",
    ));
    rows.push(row(
        "peak RSS, stripe-inbound (type-mix backlog)",
        inbound_mix_rss.unwrap_or(f64::NAN),
        "MiB",
        None,
        "<= 64",
    ));
    eprintln!(
        "peak RSS of stripe-inbound: {inbound_rss_1:?} MiB through end to end, \
         {inbound_memory_rss:?} MiB from the memory broker's backlog, \
         {inbound_mix_rss:?} MiB from the type mix"
    );

    for (name, rss) in [
        ("serve", max_rss(procs.stop("serve"), serve_memory_rss)),
        (
            "stripe-inbound",
            max_rss(
                max_rss(procs.stop("stripe-inbound"), inbound_rss_1),
                inbound_memory_rss,
            ),
        ),
        ("outbox-relay", procs.stop("outbox-relay")),
        ("stripe-outbound", procs.stop("stripe-outbound")),
    ] {
        rows.push(row(
            &format!("peak RSS, {name}"),
            rss.unwrap_or(f64::NAN),
            "MiB",
            None,
            "<= 64",
        ));
    }

    print_table(&rows, quick);
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let file = if quick { "smoke.json" } else { "latest.json" };
    std::fs::write(
        out_dir.join(file),
        serde_json::to_string_pretty(&json!({
            "quick": quick,
            "machine": machine(),
            "rows": rows,
        }))?,
    )?;
    drop(conn);
    drop(pool);
    // The figures are written; a database left behind is no reason to fail.
    if let Err(e) = drop_database(&admin_url, &db_name) {
        eprintln!("could not drop the bench database {db_name}: {e:#}");
    }
    Ok(())
}

/// The broker's rate for what `serve` produces (the event body and its
/// envelope headers) through the engine's producer, 2,000 sends in flight;
/// returns msgs/s.
async fn raw_produce_rate(
    brokers: &str,
    topic: &str,
    body: &[u8],
    n: usize,
) -> anyhow::Result<f64> {
    let producer = EventProducer::new(brokers, Duration::from_secs(30))?;
    stripe_sync::kafka::admin::ensure_topics(brokers, &[topic], 6, 1).await?;
    let event = stripe_sync::stripe::EventEnvelope::parse(body)?;
    let headers = stripe_sync::kafka::envelope::event_headers(&event, "bench");
    let start = Instant::now();
    let sends = (0..n).map(|i| {
        let (producer, headers) = (&producer, &headers);
        async move {
            producer
                .send(topic, format!("cus_{}", i % 1000).as_bytes(), body, headers)
                .await
        }
    });
    futures::stream::iter(sends)
        .buffer_unordered(2000)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Webhook ingest through the `serve` at `base`: sustained events/s from
/// 64 connections, then latency at a fixed 1,000 events/s. `label` tells
/// the rows of one broker from another's.
async fn ingest_figures(
    base: &str,
    fixtures: &Value,
    scale: &Scale,
    label: &str,
    ceiling: f64,
    first_n: u64,
) -> anyhow::Result<Vec<Row>> {
    let (rate, _) = load(
        base,
        fixtures,
        64,
        None,
        Duration::from_secs(scale.ingest_secs),
        first_n,
    )
    .await?;
    let mut rows = vec![row(
        &format!("webhook ingest, sustained (64 connections){label}"),
        rate,
        "events/s",
        Some(ceiling),
        ">= 15000",
    )];
    let (_, lat) = load(
        base,
        fixtures,
        32,
        Some(1000.0),
        Duration::from_secs(scale.fixed_rate_secs),
        first_n + 10_000_000,
    )
    .await?;
    rows.extend(latency_rows(
        &format!("webhook latency at 1000/s{label}"),
        &lat,
        "<= 10",
    ));
    Ok(rows)
}

/// Sends signed events from `connections` workers, each on its own
/// keep-alive connection, either as fast as possible or at `rate` per second
/// in total; returns events/s and the sorted latencies (seconds) of
/// successful requests.
async fn load(
    base: &str,
    fixtures: &Value,
    connections: usize,
    rate: Option<f64>,
    duration: Duration,
    first_n: u64,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let template = Arc::new(LoadEvent::new(fixtures));
    let authority = base.trim_start_matches("http://").to_owned();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let workers = (0..connections).map(|w| {
        let (template, authority, latencies, ok) = (
            template.clone(),
            authority.clone(),
            latencies.clone(),
            ok.clone(),
        );
        async move {
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            let mut next = Instant::now() + Duration::from_millis(w as u64 % 10);
            let mut conn: Option<WebhookConnection> = None;
            let mut body = Vec::new();
            let mut mine = Vec::new();
            let mut i = 0u64;
            while start.elapsed() < duration {
                if let Some(step) = interval {
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                    next += step;
                }
                // Distinct per worker and per load() call (first_n).
                let n = first_n + w as u64 * 100_000 + i;
                i += 1;
                // Each event of a customer a second apart from the others,
                // as Stripe's would be: no same-second ties to re-read.
                template.write(n, n % 10_000, 1_700_000_000 + n as i64, &mut body);
                let header = sign(SECRET, stripe_sync::ingest::unix_now(), &body);
                let sent = Instant::now();
                let c = match conn.take() {
                    Some(c) => c,
                    None => match WebhookConnection::open(&authority).await {
                        Ok(c) => c,
                        Err(_) => {
                            // Not counted; and no tight loop while serve is away.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                // A timeout, so one stuck request cannot hang the whole run.
                let answer = tokio::time::timeout(Duration::from_secs(10), c.post(&header, &body));
                if let Ok(Ok((c, status))) = answer.await {
                    conn = c;
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                        mine.push(sent.elapsed().as_secs_f64());
                    }
                }
            }
            latencies.lock().unwrap().extend(mine);
        }
    });
    futures::future::join_all(workers).await;
    let rate = ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok((rate, lat))
}

/// The load generator's event, [`customer_event`] serialised once with its
/// number, customer and time left open: it shares the two cores with what
/// it measures, so each request only fills those in (building and
/// serialising the tree cost as much CPU as serve's whole ingest).
struct LoadEvent {
    /// Literal bytes, each followed by a hole (none after the last).
    pieces: Vec<(Vec<u8>, Option<Hole>)>,
}

#[derive(Clone, Copy)]
enum Hole {
    Number,
    Customer,
    Created,
}

impl LoadEvent {
    const NUMBER: &'static str = "@@n@@";
    const CUSTOMER: &'static str = "@@customer@@";
    const CREATED: i64 = 4_242_424_242_424;

    fn new(fixtures: &Value) -> Self {
        let open = customer_event_numbered(&Self::NUMBER, Self::CUSTOMER, Self::CREATED, fixtures);
        let mut rest = serde_json::to_string(&open).unwrap();
        let created = Self::CREATED.to_string();
        let marks = [
            (Self::NUMBER, Hole::Number),
            (Self::CUSTOMER, Hole::Customer),
            (created.as_str(), Hole::Created),
        ];
        let mut pieces = Vec::new();
        while let Some((at, mark, hole)) = marks
            .iter()
            .filter_map(|&(mark, hole)| rest.find(mark).map(|at| (at, mark, hole)))
            .min_by_key(|&(at, _, _)| at)
        {
            pieces.push((rest.as_bytes()[..at].to_vec(), Some(hole)));
            rest = rest[at + mark.len()..].to_owned();
        }
        pieces.push((rest.into_bytes(), None));
        let event = Self { pieces };
        // The holes must give back exactly what customer_event builds.
        let mut filled = Vec::new();
        event.write(123, 45, 1_700_000_123, &mut filled);
        let built = customer_event(123, "cus_load45", 1_700_000_123, fixtures);
        assert_eq!(
            filled,
            serde_json::to_vec(&built).unwrap(),
            "load event template"
        );
        event
    }

    /// Event `n` for customer `cus_load{customer}`, into `out`.
    fn write(&self, n: u64, customer: u64, created: i64, out: &mut Vec<u8>) {
        use std::io::Write;
        out.clear();
        for (literal, hole) in &self.pieces {
            out.extend_from_slice(literal);
            let _ = match hole {
                Some(Hole::Number) => write!(out, "{n}"),
                Some(Hole::Customer) => write!(out, "cus_load{customer}"),
                Some(Hole::Created) => write!(out, "{created}"),
                None => Ok(()),
            };
        }
    }
}

/// One keep-alive HTTP/1.1 connection to serve's webhook endpoint that
/// writes a request and reads the status and body of its answer, nothing
/// more (reqwest's pool, URL parsing and header maps cost the load
/// generator as much CPU as serve spends on the request).
struct WebhookConnection {
    stream: tokio::net::TcpStream,
    authority: String,
    buf: Vec<u8>,
}

impl WebhookConnection {
    async fn open(authority: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            authority: authority.to_owned(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Posts one signed webhook and returns the answer's status, and the
    /// connection when it can carry the next request.
    async fn post(mut self, signature: &str, body: &[u8]) -> anyhow::Result<(Option<Self>, u16)> {
        use std::io::Write;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.buf.clear();
        write!(
            self.buf,
            "POST /webhooks/stripe HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Stripe-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
            self.authority,
            body.len()
        )?;
        self.buf.extend_from_slice(body);
        self.stream.write_all(&self.buf).await?;

        self.buf.clear();
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                anyhow::bail!("serve closed the connection");
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?;
        let status: u16 = head.split(' ').nth(1).context("no status line")?.parse()?;
        let mut length = None;
        let mut reusable = head.starts_with("HTTP/1.1");
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                anyhow::bail!("a {value} answer: only sized bodies are read");
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                reusable = false;
            }
        }
        let end = head_end + length.context("an answer without Content-Length")?;
        while self.buf.len() < end {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                anyhow::bail!("serve closed the connection mid-answer");
            }
        }
        anyhow::ensure!(self.buf.len() == end, "more than one answer to one request");
        Ok((reusable.then_some(self), status))
    }
}

/// Postgres' batched-upsert ceiling and the apply's Postgres-side rate, both
/// on `lanes` connections.
fn postgres_figures(
    pool: &db::PgPool,
    fixtures: &Value,
    scale: &Scale,
    lanes: usize,
) -> anyhow::Result<(f64, f64)> {
    Ok((
        upsert_ceiling(pool, fixtures, scale.upsert_rows, lanes)?,
        store_apply_rate(pool, fixtures, scale.backlog_events, lanes, CUSTOMERS_ONLY)?,
    ))
}

/// The lane (connection) that applies customer number `customer`: the
/// bench's stand-in for partition modulo lanes.
fn lane_of(customer: usize, lanes: usize) -> usize {
    customer % 5000 % lanes
}

/// Postgres' own rate for what the inbound apply writes, without any of its
/// logic: rows of the customers table with a real Stripe customer as
/// `stripe_object`, for the same 5,000 customers updated over and over,
/// 500 per multi-row INSERT … ON CONFLICT DO UPDATE (one transaction each),
/// from `connections` connections at once, each with its own customers.
/// Returns rows/s; then empties the table again.
fn upsert_ceiling(
    pool: &db::PgPool,
    fixtures: &Value,
    n: usize,
    connections: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    in_parallel(connections, |lane| {
        let mut conn = pool.get()?;
        let mine: Vec<usize> = (0..n)
            .filter(|&i| lane_of(i, connections) == lane)
            .collect();
        for batch in mine.chunks(500) {
            let values: Vec<String> = batch
                .iter()
                .map(|i| {
                    let mut object = fixtures["customer"].clone();
                    object["id"] = json!(format!("cus_ceiling{}", i % 5000));
                    object["name"] = json!(format!("Customer {i}"));
                    let literal = object.to_string().replace('\'', "''");
                    format!(
                        "(md5('cus_ceiling{k}')::uuid, 'c{i}@example.com', 'Customer {i}', '{{}}'::jsonb, '{literal}'::jsonb)",
                        k = i % 5000
                    )
                })
                .collect();
            diesel::sql_query(format!(
                "INSERT INTO customers (id, email, name, metadata, stripe_object) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, \
                   metadata = EXCLUDED.metadata, stripe_object = EXCLUDED.stripe_object, \
                   updated_at = now(), version = customers.version + 1",
                values.join(",")
            ))
            .execute(&mut conn)?;
        }
        Ok(())
    })?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    diesel::sql_query("TRUNCATE customers CASCADE").execute(&mut pool.get()?)?;
    Ok(rate)
}

/// Applies `n` customer events (5,000 customers, each updated n/5,000
/// times a second apart) through `apply::apply_batch` on `connections`
/// lanes at once, as the inbound worker does: each lane its own customers
/// in batches of 500, one transaction each; returns events/s, then empties
/// the tables.
fn store_apply_rate(
    pool: &db::PgPool,
    fixtures: &Value,
    n: usize,
    connections: usize,
    backlog: Backlog,
) -> anyhow::Result<f64> {
    /// Answers what the events need: no ties (they never share a second),
    /// and checkout sessions' line items as the bench's Stripe fake does.
    struct NoTies<'f>(&'f Value);
    impl stripe_sync::apply::RemoteReader for NoTies<'_> {
        fn current(
            &self,
            _: &str,
            _: &str,
            id: &str,
        ) -> Result<stripe_sync::stripe::RemoteObject, stripe_sync::apply::ApplyError> {
            Err(stripe_sync::apply::ApplyError::Permanent(format!(
                "unexpected re-read of {id}: the events have no ties"
            )))
        }
        fn children(
            &self,
            _: &str,
            _: &'static stripe_sync::registry::Resource,
            _: &'static stripe_sync::registry::Child,
            id: &str,
        ) -> Result<Vec<Value>, stripe_sync::apply::ApplyError> {
            Ok(common::line_items(id, self.0)["data"]
                .as_array()
                .cloned()
                .unwrap_or_default())
        }
    }
    let events: Vec<stripe_sync::stripe::StripeEvent> = (0..n as u64)
        .map(|i| {
            let ev = (backlog.event_at)(70_000_000 + i, fixtures);
            stripe_sync::stripe::StripeEvent::parse(&serde_json::to_vec(&ev).unwrap())
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    // As the worker does: each lane (connection) gets its own customers, the
    // stand-in for partitions, and applies them in batches of 500, one
    // transaction each, without waiting for the other lanes.
    in_parallel(connections, |lane| {
        let mut conn = pool.get()?;
        let mine: Vec<&stripe_sync::stripe::StripeEvent> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| lane_of(*i, connections) == lane)
            .map(|(_, e)| e)
            .collect();
        for batch in mine.chunks(500) {
            let results = conn
                .transaction(|conn| stripe_sync::apply::apply_batch(conn, &NoTies(fixtures), batch))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(results.iter().all(Result::is_ok), "an event was refused");
        }
        Ok(())
    })?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    diesel::sql_query("TRUNCATE customers, id_map, event_ledger CASCADE")
        .execute(&mut pool.get()?)?;
    for r in stripe_sync::registry::RESOURCES
        .iter()
        .filter(|r| !r.is_local_customer())
    {
        diesel::sql_query(format!("TRUNCATE {}", r.table())).execute(&mut pool.get()?)?;
        for c in r.children {
            diesel::sql_query(format!("TRUNCATE {}", c.table())).execute(&mut pool.get()?)?;
        }
    }
    Ok(rate)
}

/// Runs `work(lane)` for each of `lanes` lanes on its own thread and waits
/// for all of them.
fn in_parallel(
    lanes: usize,
    work: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let work = &work;
                scope.spawn(move || work(lane))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("bench lane panicked"))
    })
}

/// Produces `n` customer events (numbered from `first`, over 5,000
/// customers, each updated a second after its previous event) to `topic`
/// with the envelope `serve` gives them.
/// A backlog's events: event number `n` of it, built from the fixtures.
type EventAt = fn(u64, &Value) -> Value;

/// The customers-only backlog: 5,000 customers updated in turn.
fn customer_backlog_event(n: u64, fixtures: &Value) -> Value {
    hot_spot_event("cus_backlog", n, fixtures)
}

async fn produce_backlog(
    brokers: &str,
    topic: &str,
    first: u64,
    n: usize,
    fixtures: &Value,
    event_at: EventAt,
) -> anyhow::Result<()> {
    let producer = EventProducer::new(brokers, Duration::from_secs(30))?;
    let sends: Vec<_> = (0..n as u64)
        .map(|i| {
            // Numbered from `first`, so two backlogs of the same objects
            // never carry the same second (a tie the apply would settle by
            // re-reading each object from Stripe).
            let ev = event_at(first + i, fixtures);
            let producer = producer.clone();
            async move {
                let body = serde_json::to_vec(&ev).unwrap();
                let parsed = stripe_sync::stripe::EventEnvelope::parse(&body).unwrap();
                let headers = stripe_sync::kafka::envelope::event_headers(&parsed, "bench");
                producer
                    .send(topic, parsed.object_id.as_bytes(), &body, &headers)
                    .await
            }
        })
        .collect();
    futures::stream::iter(sends)
        .buffer_unordered(2000)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Starts a stripe-inbound (`name`, with `extra` settings) on a backlog of
/// `n` events it has not seen and returns its apply rate in events/s, from
/// its first applied event (so the group join is left out) to its last.
/// Progress is read from the worker's own applied-events counter, so the
/// measurement puts no load on Postgres.
async fn backlog_apply_rate(
    procs: &mut Processes,
    http: &reqwest::Client,
    name: &'static str,
    extra: &[(&str, String)],
    n: usize,
) -> anyhow::Result<f64> {
    let port = free_port()?;
    let mut settings = extra.to_vec();
    settings.push(("METRICS_ADDR", format!("127.0.0.1:{port}")));
    procs.spawn(name, "stripe-inbound", &[], &settings)?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let start = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let applied = applied_events(http, &metrics).await;
        if applied > 0 && first.is_none() {
            first = Some((Instant::now(), applied));
        }
        if applied >= n as u64 || start.elapsed() > Duration::from_secs(900) {
            let (since, at_first) = first.context("the worker applied nothing")?;
            return Ok((applied - at_first) as f64 / since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a backlog holds: its name (the topic's and the worker's suffix)
/// and its events.
#[derive(Clone, Copy)]
struct Backlog {
    name: &'static str,
    event_at: EventAt,
}

const CUSTOMERS_ONLY: Backlog = Backlog {
    name: "backlog",
    event_at: customer_backlog_event,
};

const TYPE_MIX: Backlog = Backlog {
    name: "mix",
    event_at: mix::mixed_event,
};

/// Has a stripe-inbound of its own (own topic and group, so it reads only
/// this backlog) apply a backlog of `n` events from the memory broker;
/// returns its apply rate in events/s and its peak RSS in MiB.
#[allow(clippy::too_many_arguments)]
async fn memory_backlog(
    procs: &mut Processes,
    http: &reqwest::Client,
    conn: &mut PgConnection,
    memory_brokers: &str,
    events_topic: &str,
    suffix: &str,
    n: usize,
    fixtures: &Value,
    backlog: Backlog,
) -> anyhow::Result<(f64, Option<f64>)> {
    let topic = format!("{events_topic}.{}", backlog.name);
    produce_backlog(
        memory_brokers,
        &topic,
        60_000_000,
        n,
        fixtures,
        backlog.event_at,
    )
    .await?;
    vacuum(conn)?;
    let worker = "stripe-inbound-memory-broker";
    let rate = backlog_apply_rate(
        procs,
        http,
        worker,
        &[
            ("KAFKA_BROKERS", memory_brokers.to_owned()),
            ("STRIPE_EVENTS_TOPIC", topic),
            (
                "INBOUND_CONSUMER_GROUP",
                format!("bench.inbound.{suffix}.{}", backlog.name),
            ),
        ],
        n,
    )
    .await?;
    Ok((rate, procs.stop(worker)))
}

/// The inbound worker's count of events applied (every outcome), from its
/// `/metrics`; 0 while it is not answering yet.
async fn applied_events(http: &reqwest::Client, metrics_url: &str) -> u64 {
    let Ok(response) = http.get(metrics_url).send().await else {
        return 0;
    };
    let body = response.text().await.unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("stripe_sync_events_applied_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Reads `topic` from each partition's high watermark in `from` to its
/// end with a plain consumer configured as the workers are (no group, no
/// apply) and returns messages/s.
fn raw_consume_rate(
    brokers: &str,
    topic: &str,
    from: &[stripe_sync::ops::topics::PartitionInfo],
) -> anyhow::Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = stripe_sync::kafka::consumer::fetch_config(
        brokers,
        Duration::from_millis(20),
        // As the workers of this run fetch (KAFKA_FETCH_MAX_BYTES is handed
        // on to them when set).
        std::env::var("KAFKA_FETCH_MAX_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(stripe_sync::config::DEFAULT_FETCH_MAX_BYTES),
        1,
    )
    .set("group.id", "bench.raw-consume")
    .set("enable.auto.commit", "false")
    .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for start in from {
        let (_, high) =
            consumer.fetch_watermarks(topic, start.partition, Duration::from_secs(10))?;
        assignment.add_partition_offset(topic, start.partition, Offset::Offset(start.high))?;
        remaining += high - start.high;
    }
    consumer.assign(&assignment)?;
    let total = remaining;
    let start = Instant::now();
    while remaining > 0 && start.elapsed() < Duration::from_secs(600) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_secs(1)) {
            remaining -= 1;
        }
    }
    Ok((total - remaining) as f64 / start.elapsed().as_secs_f64())
}

/// Waits until the ledger holds `n` events (or `limit` passes).
async fn wait_ledger(conn: &mut PgConnection, n: i64, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit && count(conn, "SELECT count(*) AS n FROM event_ledger") < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// At 1000 events/s, each for a new customer: time from the webhook's 200
/// to the customer's id_map row being visible. A poller looks up the
/// acknowledged, not yet seen ids by primary key every 2 ms, so polling
/// costs little however large the table is.
async fn end_to_end(
    http: &reqwest::Client,
    base: &str,
    fixtures: &Value,
    db_url: &str,
    duration: Duration,
) -> anyhow::Result<Vec<f64>> {
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (acked, seen, done, url) =
            (acked.clone(), seen.clone(), done.clone(), db_url.to_owned());
        std::thread::spawn(move || {
            let mut conn = PgConnection::establish(&url).unwrap();
            let quiet_after = Duration::from_secs(30);
            let mut stop_at: Option<Instant> = None;
            loop {
                let waiting: Vec<String> = {
                    let (acked, seen) = (acked.lock().unwrap(), seen.lock().unwrap());
                    acked
                        .keys()
                        .filter(|id| !seen.contains_key(*id))
                        .cloned()
                        .collect()
                };
                let finished = done.load(Ordering::Relaxed);
                if finished && waiting.is_empty() {
                    return;
                }
                if !waiting.is_empty() {
                    let rows = diesel::sql_query(
                        "SELECT external_id FROM id_map WHERE service = 'stripe' AND account = 'platform' \
                         AND entity = 'customer' AND external_id = ANY($1)",
                    )
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&waiting)
                    .load::<E2eRow>(&mut conn)
                    .unwrap_or_else(|e| {
                        eprintln!("end-to-end poll failed: {e}");
                        Vec::new()
                    });
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap();
                    for row in rows {
                        seen.entry(row.external_id).or_insert(now);
                    }
                }
                if finished && Instant::now() > *stop_at.get_or_insert(Instant::now() + quiet_after)
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let start = Instant::now();
    let total = (duration.as_secs_f64() * 1000.0) as u64;
    let workers = (0..16u64).map(|w| {
        let (http, base, fixtures, acked) = (
            http.clone(),
            base.to_owned(),
            fixtures.clone(),
            acked.clone(),
        );
        async move {
            let mut i = w;
            while i < total {
                let due = start + Duration::from_secs_f64(i as f64 / 1000.0);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                let id = format!("cus_e2e{i}");
                let ev = customer_event(90_000_000 + i, &id, 1_700_000_000, &fixtures);
                let body = serde_json::to_vec(&ev).unwrap();
                let header = sign(SECRET, stripe_sync::ingest::unix_now(), &body);
                let r = http
                    .post(format!("{base}/webhooks/stripe"))
                    .header("Stripe-Signature", header)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 200) {
                    acked.lock().unwrap().insert(id, Instant::now());
                }
                i += 16;
            }
        }
    });
    futures::future::join_all(workers).await;
    done.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let acked = acked.lock().unwrap();
    let seen = seen.lock().unwrap();
    eprintln!(
        "end to end: {} acknowledged, {} seen applied",
        acked.len(),
        seen.len()
    );
    let mut lat: Vec<f64> = acked
        .iter()
        .filter_map(|(id, t)| {
            seen.get(id)
                .map(|s| s.saturating_duration_since(*t).as_secs_f64())
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(lat)
}

#[derive(QueryableByName)]
struct E2eRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    external_id: String,
}

/// The events topic of the bench run named `suffix`.
fn bench_events_topic(suffix: &str) -> String {
    format!("stripe.events.v1.bench.{suffix}")
}

/// The engine's processes as the bench runs them: one database, the bench's
/// own topics and groups (named after `suffix`), an in-process Stripe fake,
/// and the tuning settings set for the bench handed on.
fn engine_processes(
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
fn start_fake_stripe() -> String {
    // Shared, not copied: warp clones a route for every connection.
    let fixtures: Arc<Value> = Arc::new(common::fixtures());
    let line_items = warp::path!("v1" / "checkout" / "sessions" / String / "line_items")
        .and(warp::get())
        .map(move |session: String| warp::reply::json(&common::line_items(&session, &fixtures)));
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
    let (addr, server) =
        warp::serve(route.or(retrieve).or(line_items)).bind_ephemeral(([127, 0, 0, 1], 0));
    tokio::spawn(server);
    format!("http://{addr}")
}

fn max_rss(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn print_table(rows: &[Row], quick: bool) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.figure.clone(),
                format!("{:.1} {}", r.value, r.unit),
                r.ceiling.map_or("-".into(), |c| format!("{c:.0}")),
                r.ratio.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
                r.target.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        stripe_sync::ops::table(&["FIGURE", "VALUE", "CEILING", "RATIO", "TARGET"], &cells)
    );
    if quick {
        println!("(--quick smoke run: short and small; figures are not representative)");
    }
    println!("machine: {}", machine());
}
