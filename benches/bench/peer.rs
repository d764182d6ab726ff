//! The engine beside the simple peer: supabase/stripe-sync-engine, a Node
//! server that verifies each webhook and upserts its object in the same
//! request, on the same Postgres and the same two cores. Both take the same
//! load (64 keep-alive connections for the phase's time, signed
//! `customer.updated` over 1,000 customers, then each customer's newest
//! version once), in rounds of the peer, the engine on the memory broker
//! and the engine on the sqlite broker, whose order turns each round, so a
//! slow minute of the machine falls on all three. Pipeline = events ÷ time from the first webhook
//! until every customer's newest version is visible.
//!
//! The peer is not ours and is not built here: `--peer DIR` names a built
//! checkout (docs/src/performance.md says how to build one).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use serde_json::Value;

use crate::common::{create_database, drop_database, env, free_port};
use crate::load::{self, created_of, CustomerUpdates};
use crate::pipeline::{self, Place, Traffic, CUSTOMERS};
use crate::report::{row, Row};
use crate::supervise::{bench_events_topic, wait_http, Processes};
use crate::usage::{self, Cost, Process};
use crate::{Scale, SECRET};

/// The peer's checkout, from `--peer DIR`; `None` (the phase is skipped)
/// without it.
pub(crate) fn peer_dir() -> anyhow::Result<Option<PathBuf>> {
    let Some(dir) = std::env::args().skip_while(|a| a != "--peer").nth(1) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    let server = dir.join(SERVER);
    anyhow::ensure!(
        server.is_file(),
        "--peer {}: no {} (build the checkout first: pnpm install && pnpm -r run build)",
        dir.display(),
        SERVER
    );
    Ok(Some(dir))
}

/// The peer's server, built, inside its checkout.
const SERVER: &str = "packages/fastify-app/dist/src/server.js";

/// Rounds of the three runs (`--rounds N`; 3, or 1 in a quick run).
fn rounds(quick: bool) -> anyhow::Result<u64> {
    match std::env::args().skip_while(|a| a != "--rounds").nth(1) {
        Some(n) => n.parse().context("--rounds N"),
        None => Ok(if quick { 1 } else { 3 }),
    }
}

/// What one run of either side measured.
struct Run {
    pipeline_rate: f64,
    ingest_rate: f64,
    catch_up: Duration,
    cost: Cost,
}

/// The phase's rows: each round's pipeline figures with the peer's as
/// their ceiling (so the ratio column is the ratio to the peer), and what
/// an event cost each side in the last round.
pub(crate) async fn rows(
    procs: &mut Processes,
    conn: &mut PgConnection,
    fixtures: &Value,
    suffix: &str,
    scale: &Scale,
    peer: &Path,
    quick: bool,
) -> anyhow::Result<Vec<Row>> {
    let admin_url = env("BENCH_PG_ADMIN_URL")?;
    let peer_db = format!("bench_{suffix}_peer");
    let peer_url = create_database(&admin_url, &peer_db)?;
    let measured = compare(procs, conn, fixtures, suffix, scale, peer, &peer_url, quick).await;
    drop_database(&admin_url, &peer_db)?;
    measured
}

#[allow(clippy::too_many_arguments)]
async fn compare(
    procs: &mut Processes,
    conn: &mut PgConnection,
    fixtures: &Value,
    suffix: &str,
    scale: &Scale,
    peer: &Path,
    peer_url: &str,
    quick: bool,
) -> anyhow::Result<Vec<Row>> {
    let brokers = env("BENCH_KAFKA_BROKERS")?;
    let memory_brokers = env("BENCH_KAFKA_MEMORY_BROKERS")?;
    let duration = Duration::from_secs(scale.pipeline_secs);
    let mut peer_conn = PgConnection::establish(peer_url)?;
    let mut rows = Vec::new();
    let mut last_costs = Vec::new();
    for round in 0..rounds(quick)? {
        // Event numbers: above every other phase's, and each run's above
        // the last run's of its side (each event newer than the stored row).
        let first_n = 300_000_000 + round * 3_000_000;
        // Who goes first turns each round, so neither side always runs on
        // the machine the other has just warmed (or left busy).
        let mut sides: Vec<Option<(&'static str, &String)>> = vec![
            None,
            Some(("memory broker", &memory_brokers)),
            Some(("sqlite broker", &brokers)),
        ];
        sides.rotate_left((round % 3) as usize);
        let mut theirs = None;
        let mut ours = Vec::new();
        for (position, side) in (0u64..).zip(sides) {
            // Each run's events above those of the runs before it.
            let n = first_n + position * 1_000_000;
            let Some((broker, address)) = side else {
                // As `pipeline::run` does for ours: the dead row versions
                // of the last round are not this round's cost.
                diesel::sql_query("VACUUM (ANALYZE)").execute(&mut peer_conn)?;
                theirs = Some(
                    run_peer(procs, &mut peer_conn, peer, peer_url, fixtures, n, duration)
                        .await
                        .context("the peer's run")?,
                );
                continue;
            };
            let slug = format!("peer.{}.{round}", &broker[..6]);
            let place = Place {
                brokers: address,
                topic: format!("{}.{slug}", bench_events_topic(suffix)),
                group: format!("bench.inbound.{suffix}.{slug}"),
                first_n: n,
            };
            let p = pipeline::run(procs, conn, fixtures, place, Traffic::Customers, duration)
                .await
                .with_context(|| format!("stripe-sync's run on the {broker}"))?;
            ours.push((
                broker,
                Run {
                    pipeline_rate: p.pipeline_rate,
                    ingest_rate: p.ingest_rate,
                    catch_up: p.catch_up,
                    cost: p.cost,
                },
            ));
        }
        ours.sort_by_key(|(broker, _)| *broker);
        let theirs = theirs.expect("the peer ran this round");
        let round = round + 1;
        eprintln!(
            "versus the peer, round {round}: peer {:.0} events/s (ingest {:.0}); {}",
            theirs.pipeline_rate,
            theirs.ingest_rate,
            ours.iter()
                .map(|(broker, r)| format!(
                    "stripe-sync on the {broker} {:.0} ({:.2}× the peer; ingest {:.0}, caught up {:.1} s after the last 2xx)",
                    r.pipeline_rate,
                    r.pipeline_rate / theirs.pipeline_rate,
                    r.ingest_rate,
                    r.catch_up.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        rows.push(row(
            &format!("versus the peer, round {round}: the peer, webhook → newest row"),
            theirs.pipeline_rate,
            "events/s",
            None,
            "-",
        ));
        for (broker, r) in &ours {
            let target = if broker.starts_with("memory") {
                ">= 3× peer"
            } else {
                ">= 1× peer"
            };
            rows.push(row(
                &format!("versus the peer, round {round}: stripe-sync, {broker}"),
                r.pipeline_rate,
                "events/s",
                Some(theirs.pipeline_rate),
                target,
            ));
            rows.push(row(
                &format!("versus the peer, round {round}: catch-up after the last 2xx, {broker}"),
                r.catch_up.as_secs_f64(),
                "s",
                None,
                if broker.starts_with("memory") {
                    "<= 5"
                } else {
                    "-"
                },
            ));
        }
        last_costs = std::iter::once(("the peer", theirs.cost))
            .chain(ours.into_iter().map(|(broker, r)| (broker, r.cost)))
            .collect();
    }
    for (side, cost) in &last_costs {
        for (process, us) in &cost.cpu_us {
            rows.push(row(
                &format!("versus the peer, last round: CPU per event, {process} ({side})"),
                *us,
                "µs",
                None,
                "-",
            ));
        }
        rows.push(row(
            &format!("versus the peer, last round: row writes per event ({side})"),
            cost.row_writes,
            "rows",
            None,
            "-",
        ));
    }
    Ok(rows)
}

/// Starts the peer on its own database, sends it the load and waits until
/// every customer's newest version is in its `stripe.customers`.
async fn run_peer(
    procs: &mut Processes,
    conn: &mut PgConnection,
    dir: &Path,
    db_url: &str,
    fixtures: &Value,
    first_n: u64,
    duration: Duration,
) -> anyhow::Result<Run> {
    let port = free_port()?;
    // As the peer's README configures it for webhooks alone: no Stripe
    // calls (no re-reads, no related objects, no list expansion), its own
    // migrations at start, its default pool. Its log goes nowhere: a pipe
    // left unread would stall it.
    let child = Command::new("node")
        .arg(SERVER)
        .current_dir(dir)
        .env_clear()
        .envs([
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            (
                "DATABASE_URL",
                format!("{db_url}?sslmode=disable&search_path=stripe"),
            ),
            ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
            ("STRIPE_SECRET_KEY", "sk_test_bench".to_owned()),
            ("API_KEY", "bench_peer_api_key".to_owned()),
            ("PORT", port.to_string()),
            ("REVALIDATE_OBJECTS_VIA_STRIPE_API", String::new()),
            ("BACKFILL_RELATED_ENTITIES", "false".to_owned()),
            ("AUTO_EXPAND_LISTS", "false".to_owned()),
            ("NODE_ENV", "production".to_owned()),
            ("DOTENV_CONFIG_QUIET", "true".to_owned()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the peer (node)")?;
    let pid = child.id();
    procs.adopt("peer", child);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/health")).await?;
    let webhooks = format!("{base}/webhooks");

    let warm_up = CustomerUpdates::new(fixtures, "cus_pipewarm", 1, first_n).once_each();
    load::load(&webhooks, &warm_up, 1, None, Duration::from_secs(30)).await?;
    let processes = [Process::Pid("node", pid), Process::Command("postgres")];
    let before = usage::snapshot(conn, usage::cpu(&processes))?;
    let (burst, newest, last) =
        pipeline::customer_burst(&webhooks, fixtures, first_n + 1, duration).await?;
    wait_newest(conn, &newest, Duration::from_secs(120)).await?;
    let visible_at = Instant::now();
    let accepted = burst.accepted + last.accepted;
    let cpu = usage::cpu(&processes);
    procs.stop("peer");
    usage::settle().await;
    let cost = Cost::between(&before, &usage::snapshot(conn, cpu)?, accepted);
    eprintln!("the peer: {accepted} events; {}", cost.summary());
    Ok(Run {
        pipeline_rate: accepted as f64 / (visible_at - burst.started).as_secs_f64(),
        ingest_rate: burst.accepted as f64 / (burst.last_accepted - burst.started).as_secs_f64(),
        catch_up: visible_at.saturating_duration_since(last.last_accepted),
        cost,
    })
}

/// Waits until each customer's row in the peer's table is the version of
/// its newest event (the peer stamps a row with its event's `created`).
async fn wait_newest(
    conn: &mut PgConnection,
    newest: &CustomerUpdates,
    limit: Duration,
) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let (ids, created): (Vec<String>, Vec<i64>) = (0..CUSTOMERS)
        .map(|i| {
            let (n, customer) = newest.numbered(i);
            (format!("cus_pipe{customer}"), created_of(n))
        })
        .unzip();
    let start = Instant::now();
    loop {
        let held = diesel::sql_query(
            "SELECT count(*) AS n FROM stripe.customers c \
             JOIN unnest($1::text[], $2::bigint[]) AS e(id, created) ON c.id = e.id \
             WHERE c.last_synced_at = to_timestamp(e.created)",
        )
        .bind::<Array<Text>, _>(&ids)
        .bind::<Array<BigInt>, _>(&created)
        .get_result::<N>(conn)?
        .n;
        if held == CUSTOMERS as i64 {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "{held} of {CUSTOMERS} of the peer's customers hold their newest version after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
