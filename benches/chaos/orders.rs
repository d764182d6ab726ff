//! The paid-orders path under the soak: two order-notifier processes
//! sending through a real SMTP server (aiosmtpd) that the soak starts,
//! watches and breaks; checkout sessions that become paid (and some that
//! do not, or are of another product) as webhooks through the same
//! delivery pool as every other event; and the HTTP export's pollers
//! (`orders_export`). The check is in `orders_check`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use diesel::prelude::*;
use rand::Rng;
use serde_json::{json, Value};

use crate::load::Deliveries;
use crate::orders_export::Exporter;
use crate::smtp_sink::smtp::{Phase, SmtpSink};
use crate::supervise::{Spec, Supervisor};

/// The notifier processes: both kill and pause targets.
pub const NOTIFIERS: &[&str] = &["order-notifier-1", "order-notifier-2"];
const FROM: &str = "Shop <orders@shop.example>";
const TO: &[&str] = &["orders@shop.example", "ops@shop.example"];
/// Longer than a pause (13 s) plus the quarter of the lease a message may
/// start after its renewal: a notifier paused mid-message still records
/// its outcome before the other may take the row, so a pause never sends
/// an email twice. Each half of a delivery times out after half of it
/// (15 s), also longer than a pause, so a paused sender finds the server's
/// answer waiting instead of timing out on it. A kill leaves a row for
/// this long before the other notifier takes it.
const LEASE_MS: u64 = 30_000;
/// Short, so a 4xx storm or an outage is over for the notifier within
/// seconds of healing.
const RETRY_MAX_MS: u64 = 2_000;
/// The soak's server never answers a message late (no stall of `DATA` past
/// the timeout), so an unknown outcome here only comes from the server or
/// the connection dying mid-message; the wait needs to outlast nothing
/// but a slow answer under load, and keeps the drain short.
const UNKNOWN_OUTCOME_WAIT_MS: u64 = 10_000;
/// Paid orders per second of load (a third of them not the notifier's).
const ORDERS_PER_SEC: f64 = 2.0;

/// What the load made of one checkout session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// Paid, with the filtered product: exactly one email.
    Paid,
    /// Paid, of another product: in the export, no email.
    OtherProduct,
    /// Completed unpaid: neither.
    Unpaid,
}

/// What the soak did to the notifiers and the SMTP server, for the check.
#[derive(Default)]
pub struct OrdersState {
    pub sessions: HashMap<String, SessionKind>,
    /// When a notifier was killed or the SMTP server stopped: the moments
    /// that may, by design, leave a message accepted and not recorded.
    pub disruptions: Vec<(SystemTime, String)>,
    /// `550` answers planted, one message each.
    pub refusals_planted: usize,
}

struct Inner {
    sink: tokio::sync::Mutex<SmtpSink>,
    sink_port: u16,
    /// The soak stopped the server on purpose: the watch leaves it down.
    sink_down: AtomicBool,
    sink_unplanned_restarts: AtomicU64,
    state: Mutex<OrdersState>,
    supervisor: Supervisor,
    ops_ports: Vec<u16>,
}

#[derive(Clone)]
pub struct Orders {
    inner: Arc<Inner>,
    pub export: Exporter,
}

impl Orders {
    /// Starts the SMTP server and both notifiers; `shared_env` is the
    /// engine's.
    pub async fn start(
        supervisor: &Supervisor,
        shared_env: &[(String, String)],
        bin_dir: &std::path::Path,
        serve_base: String,
        api_token: &str,
        fixtures: &Value,
    ) -> anyhow::Result<Self> {
        let sink = SmtpSink::start().await;
        let product = fixtures["item"]["price"]["product"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut ops_ports = Vec::new();
        for name in NOTIFIERS {
            let ops_port = crate::common::free_port()?;
            ops_ports.push(ops_port);
            let mut env = shared_env.to_vec();
            for (k, v) in [
                ("METRICS_ADDR", format!("127.0.0.1:{ops_port}")),
                ("SMTP_URL", sink.url()),
                ("NOTIFY_EMAIL_FROM", FROM.to_owned()),
                ("NOTIFY_EMAIL_TO", TO.join(", ")),
                ("NOTIFY_PRODUCT_IDS", product.clone()),
                ("NOTIFY_LEASE_MS", LEASE_MS.to_string()),
                ("NOTIFY_RETRY_MAX_MS", RETRY_MAX_MS.to_string()),
                (
                    "NOTIFY_UNKNOWN_OUTCOME_WAIT_MS",
                    UNKNOWN_OUTCOME_WAIT_MS.to_string(),
                ),
            ] {
                env.push((k.to_owned(), v));
            }
            supervisor.start(Spec {
                name,
                program: bin_dir.join("order-notifier"),
                args: vec![],
                env,
                dir: None,
            })?;
        }
        let orders = Self {
            inner: Arc::new(Inner {
                sink_port: sink.port,
                sink: tokio::sync::Mutex::new(sink),
                sink_down: AtomicBool::new(false),
                sink_unplanned_restarts: AtomicU64::new(0),
                state: Mutex::default(),
                supervisor: supervisor.clone(),
                ops_ports,
            }),
            export: Exporter::new(serve_base, api_token.to_owned()),
        };
        orders.watch_sink();
        Ok(orders)
    }

    /// The notifiers' ops ports, to wait for their readiness.
    pub fn ops_ports(&self) -> &[u16] {
        &self.inner.ops_ports
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, OrdersState> {
        self.inner.state.lock().unwrap()
    }

    /// Restarts the SMTP server if it goes away when the soak did not stop
    /// it, as the supervisor does the engine's processes. Holds it weakly:
    /// when the soak lets go of it, the server is stopped (its handle's
    /// drop) and the watch ends.
    fn watch_sink(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut refused = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if inner.sink_down.load(Ordering::Relaxed) {
                    refused = 0;
                    continue;
                }
                let up = tokio::net::TcpStream::connect(("127.0.0.1", inner.sink_port))
                    .await
                    .is_ok();
                refused = if up { 0 } else { refused + 1 };
                if refused >= 3 && !inner.sink_down.load(Ordering::Relaxed) {
                    eprintln!("chaos: the SMTP server went away by itself; restarting it");
                    inner
                        .sink_unplanned_restarts
                        .fetch_add(1, Ordering::Relaxed);
                    let mut sink = inner.sink.lock().await;
                    sink.stop();
                    sink.resume().await;
                    refused = 0;
                }
            }
        });
    }

    /// Queues checkout sessions at `ORDERS_PER_SEC` while `load_on`.
    pub fn spawn_load(
        &self,
        deliveries: Deliveries,
        fixtures: Arc<Value>,
        load_on: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ORDERS_PER_SEC));
            let mut n = 0u64;
            while load_on.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let kind = match rand::thread_rng().gen_range(0..100) {
                    0..70 => SessionKind::Paid,
                    70..85 => SessionKind::OtherProduct,
                    _ => SessionKind::Unpaid,
                };
                let event = session_event(&fixtures, n, kind);
                let id = event["data"]["object"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                this.state().sessions.insert(id, kind);
                deliveries.push(&event);
            }
        })
    }

    // --- faults --------------------------------------------------------

    fn disrupted(&self, what: &str) {
        self.state()
            .disruptions
            .push((SystemTime::now(), what.to_owned()));
    }

    /// Notes a kill of `name` if it is a notifier (see `disruptions`).
    pub fn note_kill(&self, name: &str) {
        if NOTIFIERS.contains(&name) {
            self.disrupted(&format!("{name} killed"));
        }
    }

    /// The server stopped (connections refused) for `outage`, then started
    /// again on the same port.
    pub async fn smtp_down(&self, outage: Duration) {
        self.inner.sink_down.store(true, Ordering::Relaxed);
        self.inner.sink.lock().await.stop();
        self.disrupted("SMTP server stopped");
        tokio::time::sleep(outage).await;
        self.inner.sink.lock().await.resume().await;
        self.inner.sink_down.store(false, Ordering::Relaxed);
    }

    /// Every recipient answered `451` (greylisting) for `storm`.
    pub async fn smtp_defers(&self, storm: Duration) {
        self.inner.sink.lock().await.defer(TO);
        tokio::time::sleep(storm).await;
        self.inner.sink.lock().await.defer(&[]);
    }

    /// The next message refused for good (`550` at the end of `DATA`): the
    /// engine must mark its notification failed with that reason and
    /// dead-letter its event, and never send it.
    pub async fn smtp_refuses_one(&self) {
        let sink = self.inner.sink.lock().await;
        sink.hold_next(
            Phase::Data,
            Some("550 5.7.1 message refused for good by the chaos soak"),
        );
        // Released at once: the refusal comes without delay, whenever the
        // next message does.
        sink.release(Phase::Data);
        self.state().refusals_planted += 1;
    }

    /// Holds the server's answer to the next `RCPT`, kills the notifier
    /// whose conversation it is, then lets the answer go: the row is left
    /// leased by a dead sender, and the other notifier must send it once,
    /// after the lease. Returns the notifier killed.
    pub async fn kill_notifier_mid_send(&self) -> Option<String> {
        self.inner.sink.lock().await.hold_next(Phase::Rcpt, None);
        let started = Instant::now();
        let mut victim = None;
        while started.elapsed() < Duration::from_secs(30) {
            if self.inner.sink.lock().await.stalled(Phase::Rcpt) {
                // The other notifier's conversations come and go; the held
                // one stays.
                for _ in 0..100 {
                    let talking: Vec<&str> = NOTIFIERS
                        .iter()
                        .copied()
                        .filter(|n| {
                            self.inner
                                .supervisor
                                .pid(n)
                                .is_some_and(|pid| connected_to(pid, self.inner.sink_port))
                        })
                        .collect();
                    if let [one] = talking[..] {
                        victim = Some(one.to_owned());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(name) = &victim {
            self.inner.supervisor.kill(name);
            self.disrupted(&format!("{name} killed mid-send"));
        }
        self.inner.sink.lock().await.release(Phase::Rcpt);
        victim
    }

    // --- drain and record ------------------------------------------------

    /// Waits until no notification is pending and the export's pollers
    /// have every paid session of the mirror acknowledged, steadily for
    /// 2 s; returns the time it took (at most three minutes: the check
    /// then reports what is left).
    pub async fn settle(&self, db_url: &str) -> f64 {
        let started = Instant::now();
        let mut quiet_since: Option<Instant> = None;
        while started.elapsed() < Duration::from_secs(180) {
            let url = db_url.to_owned();
            let state = tokio::task::spawn_blocking(move || {
                let mut conn = PgConnection::establish(&url).ok()?;
                Some((
                    pending_notifications(&mut conn).ok()?,
                    paid_in_mirror(&mut conn).ok()?,
                ))
            })
            .await
            .ok()
            .flatten();
            let done = state
                .is_some_and(|(pending, paid)| pending == 0 && self.export.acknowledged_all(&paid));
            match (done, quiet_since) {
                (true, Some(since)) if since.elapsed() >= Duration::from_secs(2) => break,
                (true, None) => quiet_since = Some(Instant::now()),
                (false, _) => quiet_since = None,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        started.elapsed().as_secs_f64()
    }

    /// What the SMTP server received, oldest first.
    pub async fn received(&self) -> Vec<Received> {
        self.inner
            .sink
            .lock()
            .await
            .messages()
            .iter()
            .map(|m| Received {
                message_id: m.message_id().to_owned(),
                session_id: session_of_subject(m.subject()),
                received_at: m.0["received_at"].as_f64().unwrap_or(0.0),
            })
            .collect()
    }

    pub fn load_figures(&self) -> crate::orders_check::OrdersLoad {
        let stats = self.export.stats();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::orders_check::OrdersLoad {
            sessions: self.state().sessions.len(),
            export_polls: n(&stats.polls),
            export_half_read_drops: n(&stats.half_read_drops),
            export_redeliveries: n(&stats.redelivered),
            export_in_flight_answers: n(&stats.in_flight),
            export_second_poller_stretches: n(&stats.second_poller_stretches),
            smtp_unplanned_restarts: self.inner.sink_unplanned_restarts.load(Ordering::Relaxed),
        }
    }
}

/// One message at the SMTP server.
#[derive(Clone, Debug)]
pub struct Received {
    pub message_id: String,
    /// From the subject, `New paid order cs_…: …`.
    pub session_id: String,
    /// Unix seconds.
    pub received_at: f64,
}

fn session_of_subject(subject: &str) -> String {
    subject
        .strip_prefix("New paid order ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or(subject)
        .to_owned()
}

/// A `checkout.session.completed` event for the `n`th session, from the
/// fixtures: paid or not, and with the filtered product or another (its
/// id says which, and the Stripe fake's line items follow it).
fn session_event(fixtures: &Value, n: u64, kind: SessionKind) -> Value {
    let id = match kind {
        SessionKind::OtherProduct => {
            format!("{}{n}", crate::common::OTHER_PRODUCT_SESSION_PREFIX)
        }
        _ => format!("cs_chaosorder{n}"),
    };
    let mut session = fixtures["checkout.session"].clone();
    session["id"] = json!(id);
    session["status"] = json!("complete");
    session["payment_status"] = json!(if kind == SessionKind::Unpaid {
        "unpaid"
    } else {
        "paid"
    });
    session["amount_total"] = json!(2500);
    session["currency"] = json!("usd");
    session["customer_email"] = json!(format!("buyer{n}@example.com"));
    session["created"] = json!(stripe_sync::ingest::unix_now());
    let mut event = fixtures["event"].clone();
    event["id"] = json!(format!("evt_chaosorder{n}"));
    event["type"] = json!("checkout.session.completed");
    event["created"] = json!(stripe_sync::ingest::unix_now());
    event["data"] = json!({"object": session});
    event["request"] = json!({"id": null, "idempotency_key": null});
    event
}

/// Whether process `pid` has an established TCP connection to
/// 127.0.0.1:`port` (from /proc: its sockets' inodes against the
/// kernel's table).
fn connected_to(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let remote = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // rem_address, st (01: established), inode
            (cols.len() > 9 && cols[2] == remote && cols[3] == "01")
                .then(|| format!("socket:[{}]", cols[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.to_string_lossy() == *i))
    })
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

fn pending_notifications(conn: &mut PgConnection) -> QueryResult<i64> {
    diesel::sql_query("SELECT count(*) AS n FROM orders.notifications WHERE status = 'pending'")
        .get_result::<N>(conn)
        .map(|r| r.n)
}

/// The checkout sessions the mirror holds paid: what the export owes.
pub fn paid_in_mirror(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    diesel::sql_query(
        "SELECT id FROM stripe.checkout_sessions
         WHERE data->>'payment_status' = 'paid' AND NOT deleted",
    )
    .load::<Id>(conn)
    .map(|rows| rows.into_iter().map(|r| r.id).collect())
}
