//! SIGTERM under a steady load of webhooks and API writes, with the real
//! binaries (the server and all five workers): every process stops in bounded time with its work finished,
//! and after a restart nothing is lost and nothing is applied twice. The
//! same run checks /metrics, /healthz and /readyz on every process and
//! that no secret ever reaches a log line.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{json, Value};
use stripe_sync::db::schema::event_ledger;
use stripe_sync::stripe::signature::sign;

use crate::support::fixtures::customer_event;
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack, ADMIN_TOKEN, API_TOKEN, SECRET};
use crate::support::{free_port, wait_for};

const STRIPE_KEY: &str = "sk_test_must_never_be_logged_4242";
/// The order notifier's SMTP password (no order is sent here, so nothing
/// needs to listen at its SMTP URL).
const SMTP_PASSWORD: &str = "smtp-password-never-logged-77";

struct Fleet {
    env: Vec<(String, String)>,
    logs: PathBuf,
    serve_port: u16,
    ops_ports: [u16; 5],
    children: Vec<(&'static str, Child)>,
    /// Log to a pipe whose reader is gone (as after `| tee` died), instead
    /// of to files.
    closed_pipes: bool,
}

impl Drop for Fleet {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Fleet {
    /// The six processes on `stack`'s database, topics and Stripe, logging
    /// JSON at debug level (every secret present in their environment).
    fn new(stack: &Stack, logs: PathBuf, closed_pipes: bool) -> Self {
        std::fs::create_dir_all(&logs).unwrap();
        // Each worker gets its METRICS_ADDR below; serve answers on its port.
        let env: Vec<(String, String)> = stack
            .serve_env()
            .with("STRIPE_API_KEY", STRIPE_KEY)
            .with("LOG_FORMAT", "json")
            .with("RUST_LOG", "debug")
            .with("SHUTDOWN_GRACE_SECS", "20")
            .with(
                "SMTP_URL",
                &format!("smtps://shop:{SMTP_PASSWORD}@127.0.0.1:{}", free_port()),
            )
            .with("NOTIFY_EMAIL_FROM", "orders@shop.example")
            .with("NOTIFY_EMAIL_TO", "owner@shop.example")
            .with(
                "NOTIFIER_CONSUMER_GROUP",
                &crate::support::unique("notifier"),
            )
            .with("PATH", &std::env::var("PATH").unwrap_or_default())
            .vars()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self {
            env,
            logs,
            serve_port: free_port(),
            ops_ports: [
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                free_port(),
            ],
            children: Vec::new(),
            closed_pipes,
        }
    }

    /// Waits until every process answers `/readyz` (and `/healthz`).
    async fn wait_ready(&self, http: &reqwest::Client) {
        for url in self.ops_urls() {
            wait_for(Duration::from_secs(60), &format!("{url}/readyz"), || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let r = http.get(format!("{url}/readyz")).send().await.ok()?;
                    (r.status() == 200).then_some(())
                }
            })
            .await;
            let h = http.get(format!("{url}/healthz")).send().await.unwrap();
            assert_eq!(h.status(), 200);
        }
    }

    fn start(&mut self) {
        let bins = [
            (
                "serve",
                env!("CARGO_BIN_EXE_stripe-sync"),
                Some("serve"),
                None,
            ),
            (
                "stripe-inbound",
                env!("CARGO_BIN_EXE_stripe-inbound"),
                None,
                Some(self.ops_ports[0]),
            ),
            (
                "outbox-relay",
                env!("CARGO_BIN_EXE_outbox-relay"),
                None,
                Some(self.ops_ports[1]),
            ),
            (
                "stripe-outbound",
                env!("CARGO_BIN_EXE_stripe-outbound"),
                None,
                Some(self.ops_ports[2]),
            ),
            (
                "order-notifier",
                env!("CARGO_BIN_EXE_order-notifier"),
                None,
                Some(self.ops_ports[3]),
            ),
            (
                "stripe-commands",
                env!("CARGO_BIN_EXE_stripe-commands"),
                None,
                Some(self.ops_ports[4]),
            ),
        ];
        for (name, bin, arg, ops_port) in bins {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.join(format!("{name}.log")))
                .unwrap();
            let mut cmd = Command::new(bin);
            cmd.args(arg)
                .env_clear()
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.serve_port))
                .current_dir(std::env::temp_dir());
            if self.closed_pipes {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            } else {
                cmd.stdout(Stdio::null()).stderr(log);
            }
            if let Some(port) = ops_port {
                cmd.env("METRICS_ADDR", format!("127.0.0.1:{port}"));
            }
            let mut child = cmd.spawn().expect("start a binary");
            // The reader exits: from now on every write to the pipe fails.
            drop(child.stdout.take());
            drop(child.stderr.take());
            self.children.push((name, child));
        }
    }

    /// SIGTERM to every process; returns how long each took to exit.
    fn terminate(&mut self) -> Vec<(&'static str, Duration)> {
        let started = Instant::now();
        for (_, child) in &self.children {
            let ok = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        let mut took = Vec::new();
        let mut stuck = Vec::new();
        for (name, mut child) in self.children.drain(..) {
            let deadline = started + Duration::from_secs(40);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            match status {
                Some(status) => {
                    assert!(
                        status.success(),
                        "{name} exited with {status} after SIGTERM"
                    );
                    took.push((name, started.elapsed()));
                }
                None => stuck.push(name),
            }
        }
        assert!(stuck.is_empty(), "{stuck:?} ignored SIGTERM for 40 s");
        took
    }

    fn ops_urls(&self) -> Vec<String> {
        std::iter::once(self.serve_port)
            .chain(self.ops_ports)
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_in_flight_work_and_loses_nothing() {
    let mut ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        start_worker: false,
        ..Options::default()
    })
    .await;
    let logs = std::env::temp_dir().join(crate::support::unique("fleet-logs"));
    let mut fleet = Fleet::new(&stack, logs.clone(), false);
    stack.db.log_customer_writes();
    fleet.start();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", fleet.serve_port);
    ls.register_webhook(&format!("{base}/webhooks/stripe"), SECRET)
        .await;
    fleet.wait_ready(&http).await;

    // Steady load: signed webhooks for 20 customers and API creates.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let clock = Arc::new(AtomicI64::new(1_000));
    let load = {
        let (stop, acknowledged, created, clock, http, base) = (
            stop.clone(),
            acknowledged.clone(),
            created.clone(),
            clock.clone(),
            http.clone(),
            base.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = clock.fetch_add(1, Ordering::Relaxed);
                let event = customer_event(
                    &format!("evt_load{n}"),
                    "customer.updated",
                    t,
                    &format!("cus_load{}", n % 20),
                    json!({"name": format!("n{n}")}),
                );
                let body = serde_json::to_vec(&event).unwrap();
                let header = sign(SECRET, stripe_sync::ingest::unix_now(), &body);
                let sent = http
                    .post(format!("{base}/webhooks/stripe"))
                    .header("Stripe-Signature", header)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == 200) {
                    acknowledged.lock().unwrap().insert(format!("evt_load{n}"));
                }
                if n.is_multiple_of(10) {
                    let r = http
                        .post(format!("{base}/api/customers"))
                        .bearer_auth(API_TOKEN)
                        .json(&json!({"email": format!("load{n}@example.com")}))
                        .send()
                        .await;
                    if let Ok(r) = r {
                        if r.status() == 201 {
                            let body: Value = r.json().await.unwrap();
                            created
                                .lock()
                                .unwrap()
                                .push(body["id"].as_str().unwrap().to_owned());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    for url in fleet.ops_urls() {
        let metrics = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("stripe_sync_"),
            "{url}/metrics has no stripe_sync_ metrics"
        );
    }
    let server_metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        server_metrics.contains("stripe_sync_webhooks_total{reason=\"\",result=\"accepted\"}"),
        "{server_metrics}"
    );

    let took = fleet.terminate();
    for (name, t) in &took {
        assert!(*t < Duration::from_secs(15), "{name} took {t:?} to stop");
    }
    fleet.start();
    fleet.wait_ready(&http).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let acknowledged: BTreeSet<String> = acknowledged.lock().unwrap().clone();
    let created: Vec<String> = created.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 100 && created.len() > 10,
        "too little load: {} / {}",
        acknowledged.len(),
        created.len()
    );
    // Every acknowledged webhook applied, once.
    wait_for(
        Duration::from_secs(90),
        "every acknowledged webhook in the ledger",
        || async {
            let n: i64 = event_ledger::table
                .filter(event_ledger::event_id.like("evt_load%"))
                .count()
                .get_result(&mut stack.db.conn())
                .unwrap();
            (n as usize >= acknowledged.len()).then_some(())
        },
    )
    .await;
    let ledgered: BTreeSet<String> = event_ledger::table
        .filter(event_ledger::event_id.like("evt_load%"))
        .select(event_ledger::event_id)
        .load::<String>(&mut stack.db.conn())
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        ledgered.is_superset(&acknowledged),
        "an acknowledged webhook was lost"
    );
    // Applied once each: no event's state (each sets its own name) was
    // written twice across the stop and the restart.
    assert_eq!(
        stack.db.customer_rewrites(),
        0,
        "an event was applied twice"
    );
    // Every accepted API write reached Stripe exactly once.
    for id in &created {
        wait_for(Duration::from_secs(90), &format!("{id} synced"), || async {
            let r = http
                .get(format!("{base}/api/customers/{id}"))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            (v["sync"]["stripe"]["status"] == "synced").then_some(())
        })
        .await;
    }
    let remote = ls.list_customers().await;
    for id in &created {
        let copies = remote
            .iter()
            .filter(|c| c["metadata"]["stripe_sync_id"] == id.as_str())
            .count();
        assert_eq!(copies, 1, "customer {id} is in Stripe {copies} times");
    }

    fleet.terminate();
    // No secret in any log line, at debug level, in JSON.
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().count() > 5,
            "{} logged almost nothing",
            path.display()
        );
        for secret in [SECRET, API_TOKEN, ADMIN_TOKEN, STRIPE_KEY, SMTP_PASSWORD] {
            assert!(!text.contains(secret), "{} leaks a secret", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
    stack.stop().await;
}

/// A log pipe whose reader has exited (`scripts/dev up 2>&1 | tee`, then
/// Ctrl-C: tee dies first) stops nothing. Every binary keeps serving while
/// its log lines go nowhere, and each exits cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_stops_nothing() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let logs = std::env::temp_dir().join(crate::support::unique("fleet-pipes"));
    let mut fleet = Fleet::new(&stack, logs.clone(), true);
    fleet.start();
    let http = reqwest::Client::new();
    fleet.wait_ready(&http).await;
    let base = format!("http://127.0.0.1:{}", fleet.serve_port);
    // Requests log (at info) into the closed pipe; serve still answers, and
    // the webhook is applied by a worker that logs too.
    let event = customer_event(
        "evt_piped",
        "customer.created",
        1_000,
        "cus_piped",
        json!({"name": "Piped"}),
    );
    let body = serde_json::to_vec(&event).unwrap();
    let r = http
        .post(format!("{base}/webhooks/stripe"))
        .header(
            "Stripe-Signature",
            sign(SECRET, stripe_sync::ingest::unix_now(), &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for(Duration::from_secs(60), "the webhook applied", || async {
        (stack.db.count("event_ledger WHERE event_id = 'evt_piped'") == 1).then_some(())
    })
    .await;
    let r = http
        .get(format!("{base}/api/customers"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (name, t) in fleet.terminate() {
        assert!(t < Duration::from_secs(15), "{name} took {t:?} to stop");
    }
    let _ = std::fs::remove_dir_all(&logs);
    stack.stop().await;
}

/// A stop that cannot finish (a client that sent half a webhook and went
/// quiet keeps its request in flight) ends at `SHUTDOWN_GRACE_SECS` with
/// exit status 1: orchestrators need a bounded stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_overruns_its_grace_exits_1() {
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let port = free_port();
    let env = stack
        .serve_env()
        .with("LISTEN_ADDR", &format!("127.0.0.1:{port}"))
        .with("SHUTDOWN_GRACE_SECS", "1");
    let mut serve =
        crate::support::spawn_binary(env!("CARGO_BIN_EXE_stripe-sync"), &["serve"], &env);
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(60), "serve ready", || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stalled
        .write_all(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Stripe-Signature: t=1,v1=00\r\nContent-Length: 100\r\n\r\n{\"half\":",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "serve outlived its grace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "it waited the grace"
    );
    drop(stalled);
    stack.stop().await;
}
