//! The spine's benchmark: this machine's ceilings and stripe-sync's own
//! figures, measured in one run against real Postgres, a real broker and
//! the real binaries. Run through `scripts/bench` (which starts the
//! services); `--quick` is the short smoke run CI uses.
//!
//! - `load`: the webhook load generator (and the end-to-end latency probe);
//! - `supervise`: the engine's processes as the bench runs them, and the
//!   in-process Stripe fake;
//! - `postgres`: Postgres' upsert ceiling and the apply's Postgres side;
//! - `backlog`: the broker's ceilings and the apply from a backlog;
//! - `pipeline`: ingest and apply at once, until every row is newest;
//! - `peer`: the pipeline beside supabase/stripe-sync-engine's (`--peer DIR`);
//! - `usage`: CPU per event per process and row writes per event;
//! - `report`: the table and the JSON.

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{json, Value};
use stripe_sync::config::DatabaseConfig;
use stripe_sync::db;
use stripe_sync::stripe::signature::{sign, WebhookVerifier};

mod backfill;
mod backlog;
#[path = "../common.rs"]
mod common;
mod load;
mod mix;
mod peer;
mod pipeline;
mod postgres;
mod report;
mod supervise;
mod usage;

use backlog::{
    backlog_apply_rate, customer_backlog_event, memory_backlog, produce_backlog, raw_consume_rate,
    raw_produce_rate, CUSTOMERS_ONLY, TYPE_MIX,
};
use common::{drop_database, env, free_port, machine};
use load::{end_to_end, ingest_figures};
use postgres::postgres_figures;
use report::{latency_rows, max_rss, print_table, row, Row};
use supervise::{bench_events_topic, engine_processes, wait_http};

const SECRET: &str = "whsec_bench";

const TOKEN: &str = "bench-api-token-0123456789";

/// Engine settings the bench hands on to the processes when set.
const TUNING_PASSED_THROUGH: &[&str] = &[
    "KAFKA_FETCH_WAIT_MS",
    "INBOUND_BATCH_SIZE",
    "INBOUND_BATCH_BYTES",
    "INBOUND_BATCH_WAIT_MS",
    "INBOUND_APPLY_LANES",
    "KAFKA_FETCH_MAX_BYTES",
    "KAFKA_COMPRESSION",
    // Whether stripe-inbound keeps each event in stripe.events (default
    // 30d), so its cost can be measured with `off`.
    "STRIPE_EVENTS_RETENTION",
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
    /// How long each pipeline phase sends at full speed.
    pipeline_secs: u64,
    /// Events of the type-mix pipeline (built before it starts).
    pipeline_mix_events: usize,
    /// Objects the backfill lists (three types).
    backfill_objects: usize,
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

/// Clears the dead row versions the previous phase left. The bench updates
/// 5,000 customers hundreds of thousands of times within minutes, far
/// faster than autovacuum (a minute between rounds) follows; without this,
/// each phase would pay for the bloat of the ones before it, and the
/// figures would depend on their order rather than on the engine.
fn vacuum(conn: &mut PgConnection) -> anyhow::Result<()> {
    diesel::sql_query("VACUUM (ANALYZE) customers, id_map, event_ledger").execute(conn)?;
    Ok(())
}

/// [`vacuum`] for every table, the mirror's too: before a phase that
/// writes the type mix.
fn vacuum_all(conn: &mut PgConnection) -> anyhow::Result<()> {
    diesel::sql_query("VACUUM (ANALYZE)").execute(conn)?;
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
            pipeline_secs: 2,
            pipeline_mix_events: 2_000,
            backfill_objects: 5_000,
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
            pipeline_secs: 20,
            pipeline_mix_events: 150_000,
            backfill_objects: 100_000,
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
        let measured = postgres::store_apply_only(&pool, &fixtures, &scale, lanes);
        drop(pool);
        drop_database(&admin_url, &db_name)?;
        return measured;
    }
    // `--backlog`: only the inbound worker's apply from the memory broker's
    // backlog and its peak RSS, to try settings (INBOUND_APPLY_LANES, ...).
    if std::env::args().any(|a| a == "--backlog") {
        let measured = backlog::backlog_only(&db_url, &suffix, &scale, &fixtures).await;
        drop(pool);
        drop_database(&admin_url, &db_name)?;
        return measured;
    }
    // `--backfill`: only the backfill against a slow, rate-limited Stripe.
    if std::env::args().any(|a| a == "--backfill") {
        let measured = backfill::backfill_rows(
            &db_url,
            &brokers,
            &suffix,
            scale.backfill_objects,
            &fixtures,
        )
        .await;
        drop(pool);
        drop_database(&admin_url, &db_name)?;
        print_table(&measured?, quick);
        return Ok(());
    }
    let peer_dir = peer::peer_dir()?;
    // `--versus-peer` (with `--peer DIR`): only the rounds beside the peer.
    if std::env::args().any(|a| a == "--versus-peer") {
        let peer_dir = peer_dir.context("--versus-peer needs --peer DIR (a built checkout)")?;
        let mut conn = PgConnection::establish(&db_url)?;
        let mut procs = engine_processes(&db_url, &brokers, &suffix, free_port()?)?;
        let measured = peer::rows(
            &mut procs, &mut conn, &fixtures, &suffix, &scale, &peer_dir, quick,
        )
        .await;
        drop((procs, conn, pool));
        drop_database(&admin_url, &db_name)?;
        print_table(&measured?, quick);
        return Ok(());
    }
    // `--pipeline`: only the pipeline phases, on both brokers.
    if std::env::args().any(|a| a == "--pipeline") {
        let mut conn = PgConnection::establish(&db_url)?;
        let mut procs = engine_processes(&db_url, &brokers, &suffix, free_port()?)?;
        let measured =
            pipeline::rows(&mut procs, &mut conn, &fixtures, &suffix, &scale, None).await;
        drop((procs, conn, pool));
        drop_database(&admin_url, &db_name)?;
        print_table(&measured?, quick);
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

    rows.extend(
        backfill::backfill_rows(
            &db_url,
            &brokers,
            &suffix,
            scale.backfill_objects,
            &fixtures,
        )
        .await?,
    );

    // Last: ingest and apply at once, with the processes above stopped.
    rows.extend(
        pipeline::rows(
            &mut procs,
            &mut conn,
            &fixtures,
            &suffix,
            &scale,
            Some((memory_produce_rate, produce_rate)),
        )
        .await?,
    );
    match &peer_dir {
        Some(dir) => rows.extend(
            peer::rows(&mut procs, &mut conn, &fixtures, &suffix, &scale, dir, quick).await?,
        ),
        None => eprintln!(
            "versus the peer: skipped (no --peer DIR; docs/src/performance.md says how to build one)"
        ),
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

/// Waits until the ledger holds `n` events (or `limit` passes).
async fn wait_ledger(conn: &mut PgConnection, n: i64, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit && count(conn, "SELECT count(*) AS n FROM event_ledger") < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
