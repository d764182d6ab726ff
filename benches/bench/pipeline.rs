//! The pipeline phase: webhooks at full speed into `serve` while
//! stripe-inbound applies them, both on the same two cores as in a small
//! deployment, until every object's newest state is in Postgres. Ingest
//! alone says how fast events are accepted and a backlog alone how fast
//! they are applied; this is what a user sees: events per second into
//! rows, and how long the mirror trails the last accepted webhook.

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use serde_json::Value;

use crate::backlog::raw_produce_rate;
use crate::common::{env, free_port};
use crate::load::{self, created_of, CustomerUpdates, Prebuilt, Sent};
use crate::report::{max_rss, row, Row};
use crate::supervise::{applied_events, bench_events_topic, wait_http, Processes};
use crate::usage::{self, Cost, Process};
use crate::{customer_event, mix, vacuum_all, Scale};

/// Customers a customer-only pipeline updates over and over.
pub(crate) const CUSTOMERS: u64 = 1_000;

/// What the pipeline carries.
#[derive(Clone, Copy)]
pub(crate) enum Traffic {
    /// `customer.updated` over [`CUSTOMERS`] customers, at full speed for
    /// the phase's time, then one newest version of each.
    Customers,
    /// The catalog's type mix ([`mix::mixed_event`]), `n` events built
    /// before the load.
    Mix(usize),
}

impl Traffic {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Mix(_) => "type mix",
        }
    }

    /// For topic and group names.
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Mix(_) => "mix",
        }
    }
}

/// What one pipeline run measured.
pub(crate) struct Pipeline {
    /// Events accepted (200) in all.
    pub(crate) accepted: u64,
    /// Accepted events per second while the load ran.
    pub(crate) ingest_rate: f64,
    /// Accepted events per second from the first webhook until every one
    /// was applied.
    pub(crate) pipeline_rate: f64,
    /// From the last accepted webhook until every event was applied.
    pub(crate) catch_up: Duration,
    pub(crate) serve_rss: Option<f64>,
    pub(crate) inbound_rss: Option<f64>,
    /// From after the warm-up event until every event was applied.
    pub(crate) cost: Cost,
}

/// Where a run's events and processes live.
pub(crate) struct Place<'a> {
    pub(crate) brokers: &'a str,
    /// The run's own topic (and group): it reads nothing of other phases.
    pub(crate) topic: String,
    pub(crate) group: String,
    /// Event numbers of this run start here (distinct from every other
    /// phase's, so the ledger never takes one for a duplicate, and above
    /// them, so each event is newer than the stored state).
    pub(crate) first_n: u64,
}

/// The pipeline phases: customers and the type mix, on the memory broker
/// (what the engine sustains) and on the sqlite broker (what the scripts
/// start), beside each broker's produce ceiling for the envelope
/// (`produce_ceilings`: memory, sqlite; measured here when not given).
pub(crate) async fn rows(
    procs: &mut Processes,
    conn: &mut PgConnection,
    fixtures: &Value,
    suffix: &str,
    scale: &Scale,
    produce_ceilings: Option<(f64, f64)>,
) -> anyhow::Result<Vec<Row>> {
    let brokers = env("BENCH_KAFKA_BROKERS")?;
    let memory_brokers = env("BENCH_KAFKA_MEMORY_BROKERS")?;
    let (memory_ceiling, sqlite_ceiling) = match produce_ceilings {
        Some(ceilings) => ceilings,
        None => {
            let body =
                serde_json::to_vec(&customer_event(1, "cus_ceiling", 1_700_000_000, fixtures))?;
            let topic = format!("bench.raw.{suffix}");
            let n = scale.producer_messages;
            (
                raw_produce_rate(&memory_brokers, &topic, &body, n).await?,
                raw_produce_rate(&brokers, &topic, &body, n).await?,
            )
        }
    };
    let mut rows = Vec::new();
    let (mut serve_rss, mut inbound_rss) = (None, None);
    let runs = [
        (
            "memory broker",
            &memory_brokers,
            memory_ceiling,
            200_000_000,
        ),
        ("sqlite broker", &brokers, sqlite_ceiling, 220_000_000),
    ];
    // `--broker memory` (or `sqlite`): only that broker's runs, to try
    // settings quickly.
    let only = std::env::args().skip_while(|a| a != "--broker").nth(1);
    for (broker, address, ceiling, first_n) in runs {
        if only.as_deref().is_some_and(|o| !broker.starts_with(o)) {
            continue;
        }
        let mut customers_rate = None;
        for (traffic, offset) in [
            (Traffic::Customers, 0),
            (Traffic::Mix(scale.pipeline_mix_events), 10_000_000),
        ] {
            let slug = format!(
                "{}.{}",
                broker.split(' ').next().unwrap_or(broker),
                traffic.slug()
            );
            let place = Place {
                brokers: address,
                topic: format!("{}.pipeline.{slug}", bench_events_topic(suffix)),
                group: format!("bench.inbound.{suffix}.pipeline.{slug}"),
                first_n: first_n + offset,
            };
            let p = run(
                procs,
                conn,
                fixtures,
                place,
                traffic,
                Duration::from_secs(scale.pipeline_secs),
            )
            .await?;
            let label = format!("{}, {broker}", traffic.name());
            let (versus, target) = match (traffic, broker, customers_rate) {
                (Traffic::Mix(_), _, Some(customers)) => {
                    (customers, ">= 90% of customers".to_owned())
                }
                (_, "memory broker", _) => (ceiling, ">= 12000".to_owned()),
                _ => (ceiling, ">= 90% of ceiling".to_owned()),
            };
            rows.push(row(
                &format!("pipeline: webhook → newest row, {label}"),
                p.pipeline_rate,
                "events/s",
                Some(versus),
                &target,
            ));
            rows.push(row(
                &format!("pipeline: ingest while applying, {label}"),
                p.ingest_rate,
                "events/s",
                Some(ceiling),
                "-",
            ));
            rows.push(row(
                &format!("pipeline: catch-up after the last 2xx, {label}"),
                p.catch_up.as_secs_f64(),
                "s",
                None,
                "-",
            ));
            eprintln!("pipeline, {label}: {} events accepted", p.accepted);
            customers_rate.get_or_insert(p.pipeline_rate);
            serve_rss = max_rss(serve_rss, p.serve_rss);
            inbound_rss = max_rss(inbound_rss, p.inbound_rss);
        }
    }
    for (name, rss) in [("serve", serve_rss), ("stripe-inbound", inbound_rss)] {
        rows.push(row(
            &format!("peak RSS, {name} (pipeline)"),
            rss.unwrap_or(f64::NAN),
            "MiB",
            None,
            "<= 64",
        ));
    }
    Ok(rows)
}

/// Runs `serve` and stripe-inbound on `place`, sends `traffic` for
/// `duration` at full speed from 64 connections and waits until the
/// worker has applied every accepted event; then checks that the store
/// holds what was sent.
pub(crate) async fn run(
    procs: &mut Processes,
    conn: &mut PgConnection,
    fixtures: &Value,
    place: Place<'_>,
    traffic: Traffic,
    duration: Duration,
) -> anyhow::Result<Pipeline> {
    vacuum_all(conn)?;
    let (serve_port, metrics_port) = (free_port()?, free_port()?);
    let placed = [
        ("KAFKA_BROKERS", place.brokers.to_owned()),
        ("STRIPE_EVENTS_TOPIC", place.topic.clone()),
    ];
    let mut serve_env = placed.to_vec();
    serve_env.push(("LISTEN_ADDR", format!("127.0.0.1:{serve_port}")));
    procs.spawn("serve-pipeline", "stripe-sync", &["serve"], &serve_env)?;
    let base = format!("http://127.0.0.1:{serve_port}");
    wait_http(&format!("{base}/readyz")).await?;
    let mut inbound_env = placed.to_vec();
    inbound_env.push(("INBOUND_CONSUMER_GROUP", place.group.clone()));
    inbound_env.push(("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")));
    procs.spawn(
        "stripe-inbound-pipeline",
        "stripe-inbound",
        &[],
        &inbound_env,
    )?;
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let webhooks = load::stripe_webhooks(&base);
    let http = reqwest::Client::new();

    // One event first, so the group join is behind us before the clock
    // starts: the phase measures the flow, not a worker's start.
    let warm_up = CustomerUpdates::new(fixtures, "cus_pipewarm", 1, place.first_n).once_each();
    load::load(&webhooks, &warm_up, 1, None, Duration::from_secs(30)).await?;
    wait_applied(&http, &metrics, 1, Duration::from_secs(120)).await?;
    let baseline = applied_events(&http, &metrics).await;

    let processes = [
        Process::Pid("serve", procs.pid("serve-pipeline").context("serve runs")?),
        Process::Pid(
            "stripe-inbound",
            procs
                .pid("stripe-inbound-pipeline")
                .context("stripe-inbound runs")?,
        ),
        Process::Command("postgres"),
        Process::Command("nisshi"),
    ];
    let before = usage::snapshot(conn, usage::cpu(&processes))?;
    let first_n = place.first_n + 1;
    let (burst, newest) = match traffic {
        Traffic::Customers => {
            let (burst, newest, last) =
                customer_burst(&webhooks, fixtures, first_n, duration).await?;
            (burst, Some((newest, last)))
        }
        Traffic::Mix(n) => {
            let bodies = (0..n as u64)
                .map(|i| serde_json::to_vec(&mix::mixed_event(first_n + i, fixtures)))
                .collect::<Result<Vec<_>, _>>()?;
            let burst = load::load(&webhooks, &Prebuilt(bodies), 64, None, duration).await?;
            (burst, None)
        }
    };
    let accepted = burst.accepted + newest.as_ref().map_or(0, |(_, last)| last.accepted);
    let last_accepted = newest
        .as_ref()
        .map_or(burst.last_accepted, |(_, last)| last.last_accepted);
    wait_applied(
        &http,
        &metrics,
        baseline + accepted,
        Duration::from_secs(900),
    )
    .await?;
    let applied_at = Instant::now();
    // CPU while the processes run; the rows once they have stopped (their
    // backends then report every count). Every process commits in this
    // database; the worker's batches are nearly all of it.
    let cpu = usage::cpu(&processes);
    let serve_rss = procs.stop("serve-pipeline");
    let inbound_rss = procs.stop("stripe-inbound-pipeline");
    usage::settle().await;
    let cost = Cost::between(&before, &usage::snapshot(conn, cpu)?, accepted);
    eprintln!(
        "pipeline, {}: {accepted} events in {} transactions ({:.1} per transaction); {}",
        traffic.name(),
        cost.transactions,
        accepted as f64 / cost.transactions.max(1) as f64,
        cost.summary()
    );
    let figures = Pipeline {
        accepted,
        ingest_rate: burst.accepted as f64 / (burst.last_accepted - burst.started).as_secs_f64(),
        pipeline_rate: accepted as f64 / (applied_at - burst.started).as_secs_f64(),
        catch_up: applied_at.saturating_duration_since(last_accepted),
        serve_rss,
        inbound_rss,
        cost,
    };
    match &newest {
        Some((newest, _)) => check_newest_customers(conn, newest)?,
        None => check_ledgered(conn, first_n, burst.issued, burst.accepted)?,
    }
    Ok(figures)
}

/// The customers' load at `webhooks`: `customer.updated` over
/// [`CUSTOMERS`] customers from 64 connections for `duration`, then each
/// customer's newest version once, numbered past every event of the
/// burst (what the store must end with). Returns the burst, the newest
/// versions and how their sending went.
pub(crate) async fn customer_burst(
    webhooks: &str,
    fixtures: &Value,
    first_n: u64,
    duration: Duration,
) -> anyhow::Result<(Sent, CustomerUpdates, Sent)> {
    let updates = CustomerUpdates::new(fixtures, "cus_pipe", CUSTOMERS, first_n);
    let burst = load::load(webhooks, &updates, 64, None, duration).await?;
    let newest = CustomerUpdates::new(
        fixtures,
        "cus_pipe",
        CUSTOMERS,
        first_n + burst.issued.next_multiple_of(CUSTOMERS),
    )
    .once_each();
    let last = load::load(webhooks, &newest, 64, None, Duration::from_secs(60)).await?;
    anyhow::ensure!(
        last.accepted == CUSTOMERS,
        "only {} of the {CUSTOMERS} newest versions were accepted",
        last.accepted
    );
    Ok((burst, newest, last))
}

/// Waits until the worker's applied-events counter reaches `n`.
async fn wait_applied(
    http: &reqwest::Client,
    metrics: &str,
    n: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let applied = applied_events(http, metrics).await;
        if applied >= n {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "the worker applied {applied} of {n} events in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every customer's link holds the version of its newest event: the
/// mirror ended with the newest state, whatever order the burst's events
/// of a customer were applied in.
fn check_newest_customers(conn: &mut PgConnection, newest: &CustomerUpdates) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct Link {
        #[diesel(sql_type = Text)]
        external_id: String,
        #[diesel(sql_type = BigInt)]
        remote_version: i64,
    }
    let expected: std::collections::HashMap<String, i64> = (0..CUSTOMERS)
        .map(|i| {
            let (n, customer) = newest.numbered(i);
            (format!("cus_pipe{customer}"), created_of(n))
        })
        .collect();
    let ids: Vec<&String> = expected.keys().collect();
    let links: Vec<Link> = diesel::sql_query(
        "SELECT external_id, remote_version FROM id_map WHERE service = 'stripe' \
         AND entity = 'customer' AND external_id = ANY($1)",
    )
    .bind::<Array<Text>, _>(ids)
    .load(conn)?;
    let newest_held = links
        .iter()
        .filter(|l| expected.get(&l.external_id) == Some(&l.remote_version))
        .count();
    anyhow::ensure!(
        newest_held == CUSTOMERS as usize,
        "{newest_held} of {CUSTOMERS} customers hold their newest version"
    );
    Ok(())
}

/// Every accepted event of the mix (numbered `first_n..first_n + issued`)
/// is in the ledger.
fn check_ledgered(
    conn: &mut PgConnection,
    first_n: u64,
    issued: u64,
    accepted: u64,
) -> anyhow::Result<()> {
    let ids: Vec<String> = (first_n..first_n + issued)
        .map(|n| format!("evt_mix_{n}"))
        .collect();
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let ledgered = diesel::sql_query(
        "SELECT count(*) AS n FROM event_ledger WHERE service = 'stripe' AND event_id = ANY($1)",
    )
    .bind::<Array<Text>, _>(&ids)
    .get_result::<N>(conn)
    .context("count the ledgered events")?
    .n;
    anyhow::ensure!(
        ledgered as u64 >= accepted,
        "{ledgered} of {accepted} accepted events are in the ledger"
    );
    Ok(())
}
