//! The chaos soak (`scripts/chaos`): the whole engine under a steady mixed
//! load while processes are killed and paused, the broker and Postgres
//! restarted and Stripe fails; then, once everything has drained, a check
//! that nothing acknowledged was lost, nothing applied twice, the mirror
//! holds every object's newest state and every local change reached Stripe
//! exactly once. Prints a table, writes target/chaos/latest.json, and
//! exits 1 on any finding.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use secrecy::SecretString;
use stripe_sync::config::{DatabaseConfig, Env};

mod check;
#[path = "../common.rs"]
mod common;
// The test suite's Salesforce fake; the soak uses part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/fake_salesforce/mod.rs"]
mod fake_salesforce;
mod faults;
mod load;
mod orders;
mod orders_check;
mod orders_export;
mod orders_selftest;
mod payments;
mod payments_check;
mod payments_routes;
mod payments_selftest;
mod payments_stripe;
mod report;
mod salesforce;
mod salesforce_check;
mod salesforce_pingpong;
mod salesforce_selftest;
mod salesforce_story;
mod smtp_sink;
mod stripe;
mod supervise;

use faults::{Injected, Injector};
use load::{ApiWriter, Deliveries, Generator};
use supervise::{Spec, StopOnDrop, Supervisor};

const SECRET: &str = "whsec_chaos";
const API_TOKEN: &str = "chaos-api-token-0123456789";
const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789";

struct Plan {
    quick: bool,
    duration: Duration,
    /// Generated events per second (each delivered 1–3 times).
    events_per_sec: f64,
    api_writes_per_sec: f64,
    /// Money requests per second (purchases, spends, payments, refunds).
    payment_ops_per_sec: f64,
    /// Customers the money load buys and spends for.
    payment_customers: usize,
    objects_per_resource: usize,
    poison: usize,
    /// Seconds between faults, at random in this range.
    fault_gap: (u64, u64),
    storm: Duration,
}

impl Plan {
    fn from_args() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut plan = if quick {
            Self {
                quick,
                // 75 s, 30 s more for the five paid-orders faults and 30 s
                // for Salesforce's three.
                duration: Duration::from_secs(75 + 30 + 30),
                events_per_sec: 60.0,
                api_writes_per_sec: 3.0,
                payment_ops_per_sec: 2.0,
                payment_customers: 6,
                objects_per_resource: 40,
                poison: 2,
                fault_gap: (2, 4),
                storm: Duration::from_secs(4),
            }
        } else {
            Self {
                quick,
                duration: Duration::from_secs(600),
                events_per_sec: 150.0,
                api_writes_per_sec: 4.0,
                payment_ops_per_sec: 3.0,
                payment_customers: 16,
                objects_per_resource: 300,
                poison: 5,
                fault_gap: (8, 20),
                storm: Duration::from_secs(8),
            }
        };
        if let Some(at) = args.iter().position(|a| a == "--duration") {
            let value = args
                .get(at + 1)
                .context("--duration needs a value, e.g. 10m or 90s")?;
            plan.duration = parse_duration(value)?;
        }
        Ok(plan)
    }
}

fn parse_duration(value: &str) -> anyhow::Result<Duration> {
    let (number, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("a duration like 10m or 90s, not {value:?}"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => anyhow::bail!("a duration like 10m or 90s, not {value:?}"),
    }))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args()?;
    let admin_url = common::env("CHAOS_PG_ADMIN_URL")?;
    let pg_restart = common::env("CHAOS_PG_RESTART")?;
    let nisshi = common::env("NISSHI_BIN")?;
    let state_dir = std::path::PathBuf::from(common::env("CHAOS_STATE_DIR")?);
    let db_name = format!("chaos_{:08x}", rand::random::<u32>());
    let db_url = common::create_database(&admin_url, &db_name)?;
    let result = soak(&plan, &db_url, &pg_restart, &nisshi, &state_dir).await;
    if let Err(e) = common::drop_database(&admin_url, &db_name) {
        eprintln!("chaos: could not drop {db_name}: {e:#}");
    }
    let pass = result?;
    std::process::exit(if pass { 0 } else { 1 });
}

/// Runs the soak; returns whether the check passed.
async fn soak(
    plan: &Plan,
    db_url: &str,
    pg_restart: &str,
    nisshi: &str,
    state_dir: &std::path::Path,
) -> anyhow::Result<bool> {
    let pool = stripe_sync::db::pool(&DatabaseConfig {
        url: SecretString::from(db_url.to_owned()),
        pool_size: 2,
    });
    stripe_sync::db::run_migrations(&pool)?;
    check::install_applications_log(&mut *pool.get()?)?;
    drop(pool);

    let supervisor = Supervisor::new(state_dir.join("logs"))?;
    let _stop = StopOnDrop(supervisor.clone());
    let broker_port = common::free_port()?;
    let broker_dir = state_dir.join("broker");
    std::fs::create_dir_all(&broker_dir)?;
    let listener = format!("tcp://127.0.0.1:{broker_port}");
    supervisor.start(Spec {
        name: "broker",
        program: nisshi.into(),
        args: [
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            "--storage-engine",
            "sqlite://broker.db",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        dir: Some(broker_dir.clone()),
    })?;
    supervise::wait_port(broker_port, "the broker").await?;
    index_broker_headers(&broker_dir.join("broker.db"))?;
    let brokers = format!("127.0.0.1:{broker_port}");

    let fixtures = Arc::new(common::fixtures());
    let deliveries = Deliveries::new(SECRET);
    let (fake, stripe_base) = stripe::FakeStripe::start(fixtures.clone(), deliveries.clone());
    let salesforce = salesforce::Salesforce::start();
    let serve_port = common::free_port()?;
    let mut ops_ports = Vec::new();
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let shared_env: Vec<(String, String)> = [
        ("DATABASE_URL", db_url.to_owned()),
        ("KAFKA_BROKERS", brokers.clone()),
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("API_TOKEN", API_TOKEN.to_owned()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("STRIPE_API_KEY", "sk_test_chaos".to_owned()),
        ("STRIPE_API_BASE", stripe_base),
        ("LISTEN_ADDR", format!("127.0.0.1:{serve_port}")),
        ("OUTBOX_POLL_MS", "50".to_owned()),
        // Short: a poller that dropped an answer half-read gets its batch
        // again soon.
        ("EXPORT_BATCH_LEASE_MS", "2000".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(salesforce.env())
    .collect();
    for name in faults::ENGINE {
        let ops_port = common::free_port()?;
        ops_ports.push(ops_port);
        let mut env = shared_env.clone();
        env.push(("METRICS_ADDR".into(), format!("127.0.0.1:{ops_port}")));
        let (program, args) = match *name {
            "serve" => (bin_dir.join("stripe-sync"), vec!["serve".to_owned()]),
            worker => (bin_dir.join(worker), vec![]),
        };
        supervisor.start(Spec {
            name,
            program,
            args,
            env,
            dir: None,
        })?;
    }
    let orders = orders::Orders::start(
        &supervisor,
        &shared_env,
        &bin_dir,
        format!("http://127.0.0.1:{serve_port}"),
        API_TOKEN,
        &fixtures,
    )
    .await?;
    ops_ports.extend(orders.ops_ports());
    let http = reqwest::Client::new();
    for port in &ops_ports {
        wait_ready(&http, *port).await?;
    }
    supervisor.watch();
    eprintln!(
        "chaos: the engine is up; {} s of load with faults",
        plan.duration.as_secs()
    );

    // --- load ------------------------------------------------------------
    let started = Instant::now();
    let stop_senders = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(deliveries.clone().send(
                format!("http://127.0.0.1:{serve_port}/webhooks/stripe"),
                stop_senders.clone(),
            ))
        })
        .collect();
    let load_on = Arc::new(AtomicBool::new(true));
    let generator = {
        let (deliveries, load_on) = (deliveries.clone(), load_on.clone());
        let mut generator = Generator::new(fixtures.clone(), plan.objects_per_resource);
        let (rate, poison) = (plan.events_per_sec, plan.poison);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut n = 0u64;
            while load_on.load(Ordering::Relaxed) {
                tick.tick().await;
                // Back-pressure while serve is away, as Stripe's queue would.
                if deliveries.pending() > 5_000 {
                    continue;
                }
                generator.next(&deliveries);
                n += 1;
                if n % 500 == 250 && deliveries.expected().poison.len() < poison {
                    generator.poison(&deliveries);
                }
            }
        })
    };
    let api = {
        let load_on = load_on.clone();
        let mut writer = ApiWriter::new(
            format!("http://127.0.0.1:{serve_port}"),
            API_TOKEN.to_owned(),
            deliveries.clone(),
        );
        let rate = plan.api_writes_per_sec;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            while load_on.load(Ordering::Relaxed) {
                tick.tick().await;
                writer.write_one().await?;
            }
            anyhow::Ok(())
        })
    };

    let order_load = orders.spawn_load(deliveries.clone(), fixtures.clone(), load_on.clone());
    let export_pollers = orders.export.spawn();
    let people = tokio::spawn(salesforce.clone().people(
        deliveries.clone(),
        format!("http://127.0.0.1:{serve_port}/webhooks/salesforce"),
        salesforce::PEOPLE_EDITS_PER_SEC,
        load_on.clone(),
    ));
    let money = tokio::spawn(
        payments::MoneyLoad {
            base: format!("http://127.0.0.1:{serve_port}"),
            token: API_TOKEN.to_owned(),
            deliveries: deliveries.clone(),
            load_on: load_on.clone(),
            ops_per_sec: plan.payment_ops_per_sec,
            customers: plan.payment_customers,
        }
        .run(),
    );

    // --- faults ----------------------------------------------------------
    let injector = Injector {
        supervisor: supervisor.clone(),
        stripe: fake.clone(),
        salesforce: salesforce.clone(),
        pg_restart: pg_restart.to_owned(),
        storm: plan.storm,
        orders: orders.clone(),
    };
    let injected: Arc<Mutex<Vec<Injected>>> = Arc::default();
    let mut catch_ups = Vec::new();
    let rounds = if plan.quick { 1 } else { 1000 };
    for kind in faults::schedule(rounds) {
        tokio::time::sleep(faults::gap(plan.fault_gap)).await;
        if started.elapsed() >= plan.duration {
            break;
        }
        let at = started.elapsed();
        eprintln!("chaos: {:>5.0} s: {}", at.as_secs_f64(), kind.label());
        let (target, lasted) = injector.inject(kind).await?;
        let index = {
            let mut list = injected.lock().unwrap();
            list.push(Injected {
                kind,
                target,
                at_secs: at.as_secs_f64(),
                lasted_secs: lasted.as_secs_f64(),
                catch_up_secs: None,
            });
            list.len() - 1
        };
        catch_ups.push(tokio::spawn(measure_catch_up(
            db_url.to_owned(),
            deliveries.clone(),
            injected.clone(),
            index,
        )));
    }
    let rest = plan.duration.saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let duration = started.elapsed();
    load_on.store(false, Ordering::Relaxed);
    generator.await?;
    api.await??;
    order_load.await?;
    people.await?;
    money.await??;

    // --- drain and check -------------------------------------------------
    eprintln!("chaos: load off; draining");
    let settle = settle(db_url, &deliveries, &salesforce, &brokers).await;
    let orders_settle_secs = orders.settle(db_url).await;
    orders.export.stop();
    for p in export_pollers {
        p.await?;
    }
    stop_senders.store(true, Ordering::Relaxed);
    for s in senders {
        s.await?;
    }
    for c in catch_ups {
        c.await?;
    }
    let settle_secs = settle?;
    let env = Env::from_pairs(shared_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let inventory = stripe_sync::ops::Inventory::load(&env)?;
    let mut conn = PgConnection::establish(db_url)?;
    let dead = tokio::task::block_in_place(|| {
        stripe_sync::ops::dlq::list(
            &brokers,
            &mut conn,
            &inventory.dead_letter_topics(),
            stripe_sync::ops::topics::TailFrom::Last(10_000),
        )
    })?;
    let (refused, dead) =
        orders_check::split_dead_letters(&mut conn, &inventory.events_topic, dead)?;
    let dead_ids: Vec<Option<String>> = dead.into_iter().map(|d| d.event_id).collect();
    let stripe_record = fake.record();
    let salesforce_record = salesforce.record();
    let api_names_superseded =
        salesforce.supersede_api_names(&mut deliveries.expected(), &salesforce_record);
    let faults = injected.lock().unwrap().clone();
    let mut verdict = check::verify(&mut conn, &deliveries.expected(), &stripe_record, &dead_ids)?;
    let mut missed =
        check::self_test(&mut conn, &deliveries.expected(), &stripe_record, &dead_ids)?;
    {
        let expected = deliveries.expected();
        let edits = salesforce.edits();
        let inputs = salesforce_check::Inputs {
            expected: &expected,
            edits: &edits,
            salesforce: &salesforce_record,
            stripe: &stripe_record,
            api_names_superseded: &api_names_superseded,
            repeating_faults: salesforce_check::repeating_faults(&faults),
            stats: &salesforce.stats,
        };
        salesforce_check::verify(&mut conn, &inputs, &mut verdict)?;
        if !verdict.salesforce.suspects.is_empty() {
            let story = salesforce_story::explain(&mut conn, &inputs, &verdict)?;
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/chaos/salesforce-findings.txt");
            std::fs::create_dir_all(path.parent().expect("a directory"))?;
            std::fs::write(&path, story)?;
            eprintln!("chaos: the Salesforce findings' story: {}", path.display());
        }
        missed.extend(salesforce_selftest::self_test(&mut conn, &inputs)?);
    }
    missed.extend(
        orders_check::check(
            &orders,
            &mut conn,
            refused,
            orders_settle_secs,
            &mut verdict,
        )
        .await?,
    );
    let report = report::Report {
        quick: plan.quick,
        duration_secs: duration.as_secs_f64(),
        settle_secs,
        load: deliveries.stats(),
        faults: &faults,
        unplanned_exits: supervisor.unplanned_exits.load(Ordering::Relaxed),
        stripe_faulted_answers: stripe_record.faulted_answers,
        verdict: &verdict,
        self_test_missed: &missed,
    };
    report.print();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_vec_pretty(&report.json())?,
    )?;
    println!("written: {}", out.join("latest.json").display());
    Ok(report.pass())
}

async fn wait_ready(http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
    for _ in 0..600 {
        if http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the process with ops port {port} was not ready within 60 s (logs: CHAOS_STATE_DIR/logs)"
    )
}

/// Events in the ledger; `None` while Postgres is away.
fn ledger_count(db_url: &str) -> Option<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(db_url).ok()?;
    diesel::sql_query("SELECT count(*) AS n FROM event_ledger")
        .get_result::<N>(&mut conn)
        .ok()
        .map(|r| r.n)
}

/// After a fault healed: how long until the ledger held every event
/// acknowledged by then (bounded at two minutes).
async fn measure_catch_up(
    db_url: String,
    deliveries: Deliveries,
    injected: Arc<Mutex<Vec<Injected>>>,
    index: usize,
) {
    let healed = Instant::now();
    let target = deliveries.acked_appliable() as i64;
    while healed.elapsed() < Duration::from_secs(120) {
        let url = db_url.clone();
        let count = tokio::task::spawn_blocking(move || ledger_count(&url))
            .await
            .ok()
            .flatten();
        if count.is_some_and(|n| n >= target) {
            injected.lock().unwrap()[index].catch_up_secs = Some(healed.elapsed().as_secs_f64());
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every delivery is acknowledged, the ledger holds every
/// acknowledged event, every local change is delivered and the Salesforce
/// workers have drained (`Salesforce::drained`), steadily for
/// 3 s (Stripe's echoes of late writes arrive meanwhile); returns the time
/// it took, or fails after five minutes.
async fn settle(
    db_url: &str,
    deliveries: &Deliveries,
    salesforce: &salesforce::Salesforce,
    brokers: &str,
) -> anyhow::Result<f64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(300) {
        let url = db_url.to_owned();
        let undelivered = tokio::task::spawn_blocking(move || {
            let mut conn = PgConnection::establish(&url).ok()?;
            diesel::sql_query(
                "SELECT count(*) AS n FROM outbox o WHERE NOT EXISTS
                 (SELECT 1 FROM outbox_deliveries d WHERE d.outbox_id = o.id)",
            )
            .get_result::<N>(&mut conn)
            .ok()
            .map(|r| r.n)
        })
        .await?;
        let url = db_url.to_owned();
        let ledger = tokio::task::spawn_blocking(move || ledger_count(&url)).await?;
        let done = deliveries.pending() == 0
            && undelivered == Some(0)
            && ledger.is_some_and(|n| n >= deliveries.acked_appliable() as i64)
            && salesforce.drained(db_url, brokers).await;
        match (done, quiet_since) {
            (true, Some(since)) if since.elapsed() >= Duration::from_secs(3) => {
                return Ok(started.elapsed().as_secs_f64());
            }
            (true, None) => quiet_since = Some(Instant::now()),
            (false, _) => quiet_since = None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "not drained after five minutes: {} deliveries pending; see the process logs under CHAOS_STATE_DIR/logs",
        deliveries.pending()
    )
}

/// nisshi 0.6's sqlite schema lacks an index its fetch needs (see
/// scripts/lib.sh); the same script adds it here.
fn index_broker_headers(db: &std::path::Path) -> anyhow::Result<()> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/index-broker-headers");
    let status = std::process::Command::new(&script)
        .arg(db)
        .status()
        .with_context(|| format!("run {}", script.display()))?;
    anyhow::ensure!(status.success(), "{} failed", script.display());
    Ok(())
}
