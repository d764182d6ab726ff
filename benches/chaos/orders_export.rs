//! Pollers of the HTTP export (`POST /api/exports/paid-sessions`), as a
//! workflow tool polls it: they read each answer, then acknowledge its
//! batch (`…/ack`). Now and then, and all the time while the fault is on,
//! a poller reads half an answer and drops the connection, so it never
//! learns the batch; a second poller of the same name is sometimes
//! active at once. Every answer read whole, every acknowledgement and
//! when each was made are logged for the check.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The export name both pollers share.
pub const NAME: &str = "chaos";
/// Sessions per answer: small, so the soak makes many batches.
const LIMIT: i64 = 20;
/// The share of answers dropped half-read when the fault is off.
const DROP_SHARE: f64 = 0.1;

/// A batch as a poller read it whole.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub batch: String,
    pub sessions: Vec<String>,
    /// When its poll was sent: any batch asked for after an
    /// acknowledgement was answered is made after it.
    pub asked_at: Instant,
}

/// An acknowledgement the server answered (`acknowledged` or
/// `already_acknowledged`).
#[derive(Clone, Debug)]
pub struct Acked {
    pub batch: String,
    pub answered_at: Instant,
}

#[derive(Clone, Default)]
pub struct ExportLog {
    pub receipts: Vec<Receipt>,
    pub acks: Vec<Acked>,
    /// Answers that say the export is wrong (`409`s, unparsable answers).
    pub errors: Vec<String>,
}

#[derive(Default, serde::Serialize)]
pub struct ExportStats {
    pub polls: AtomicU64,
    pub half_read_drops: AtomicU64,
    pub redelivered: AtomicU64,
    pub in_flight: AtomicU64,
    pub acknowledged: AtomicU64,
    pub already_acknowledged: AtomicU64,
    /// Stretches in which the second poller was active.
    pub second_poller_stretches: AtomicU64,
}

struct Inner {
    base: String,
    token: String,
    http: reqwest::Client,
    log: Mutex<ExportLog>,
    stats: ExportStats,
    drop_every_answer: AtomicBool,
    second_on: AtomicBool,
    stop: AtomicBool,
}

#[derive(Clone)]
pub struct Exporter(Arc<Inner>);

impl Exporter {
    pub fn new(base: String, token: String) -> Self {
        Self(Arc::new(Inner {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            log: Mutex::default(),
            stats: ExportStats::default(),
            drop_every_answer: AtomicBool::new(false),
            second_on: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        }))
    }

    pub fn log(&self) -> ExportLog {
        self.0.log.lock().unwrap().clone()
    }

    pub fn stats(&self) -> &ExportStats {
        &self.0.stats
    }

    /// Two pollers of one name, the second on and off at random, until
    /// [`Self::stop`].
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let toggler = {
            let this = self.clone();
            tokio::spawn(async move {
                while !this.0.stop.load(Ordering::Relaxed) {
                    let secs = rand::thread_rng().gen_range(2..8);
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    let on = !this.0.second_on.load(Ordering::Relaxed);
                    if on {
                        this.0
                            .stats
                            .second_poller_stretches
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    this.0.second_on.store(on, Ordering::Relaxed);
                }
            })
        };
        let mut tasks = vec![toggler];
        for second in [false, true] {
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                while !this.0.stop.load(Ordering::Relaxed) {
                    let active = !second
                        || this.0.second_on.load(Ordering::Relaxed)
                        || this.0.drop_every_answer.load(Ordering::Relaxed);
                    if active {
                        this.poll_once().await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
        tasks
    }

    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }

    /// The fault: every answer dropped half-read, both pollers on, for
    /// `storm`.
    pub async fn drop_answers(&self, storm: Duration) {
        self.0.drop_every_answer.store(true, Ordering::Relaxed);
        tokio::time::sleep(storm).await;
        self.0.drop_every_answer.store(false, Ordering::Relaxed);
    }

    /// Whether every one of `paid` is in a batch acknowledged.
    pub fn acknowledged_all(&self, paid: &[String]) -> bool {
        let log = self.0.log.lock().unwrap();
        let acked: HashSet<&String> = log.acks.iter().map(|a| &a.batch).collect();
        let delivered: HashSet<&String> = log
            .receipts
            .iter()
            .filter(|r| acked.contains(&r.batch))
            .flat_map(|r| &r.sessions)
            .collect();
        paid.iter().all(|s| delivered.contains(s))
    }

    async fn poll_once(&self) {
        let stats = &self.0.stats;
        stats.polls.fetch_add(1, Ordering::Relaxed);
        let body = json!({"name": NAME, "limit": LIMIT});
        let drop_it = self.0.drop_every_answer.load(Ordering::Relaxed)
            || rand::thread_rng().gen_bool(DROP_SHARE);
        if drop_it {
            if self.half_read(&body).await {
                stats.half_read_drops.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let asked_at = Instant::now();
        let answer = self
            .0
            .http
            .post(format!("{}/api/exports/paid-sessions", self.0.base))
            .bearer_auth(&self.0.token)
            .json(&body)
            .send()
            .await;
        let answer = match answer {
            Ok(a) if a.status() == 409 || a.status() == 400 => {
                let text = a.text().await.unwrap_or_default();
                self.error(format!("a poll was refused: {text}"));
                return;
            }
            Ok(a) if a.status().is_success() => a,
            // serve away, the database restarting: poll again.
            _ => return,
        };
        let Ok(answer) = answer.json::<Value>().await else {
            return;
        };
        match answer["status"].as_str() {
            Some("success") => {}
            Some("batch_in_flight") => {
                stats.in_flight.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some("no_new_data") => return,
            other => {
                self.error(format!("a poll answered status {other:?}"));
                return;
            }
        }
        let (Some(batch), Some(sessions)) =
            (answer["batch_id"].as_str(), answer["sessions"].as_array())
        else {
            self.error(format!("a batch without an id or sessions: {answer}"));
            return;
        };
        if answer["redelivered"] == true {
            stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let sessions = sessions
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        self.0.log.lock().unwrap().receipts.push(Receipt {
            batch: batch.to_owned(),
            sessions,
            asked_at,
        });
        self.acknowledge(batch).await;
    }

    /// Acknowledges `batch` until the server answers, as a client that
    /// processed it must.
    async fn acknowledge(&self, batch: &str) {
        for _ in 0..600 {
            let answer = self
                .0
                .http
                .post(format!("{}/api/exports/paid-sessions/ack", self.0.base))
                .bearer_auth(&self.0.token)
                .json(&json!({"batch_id": batch, "name": NAME}))
                .send()
                .await;
            match answer {
                Ok(a) if a.status().is_success() => {
                    let answered_at = Instant::now();
                    let status = a
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["status"].as_str().map(str::to_owned));
                    let counter = match status.as_deref() {
                        Some("acknowledged") => &self.0.stats.acknowledged,
                        _ => &self.0.stats.already_acknowledged,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.0.log.lock().unwrap().acks.push(Acked {
                        batch: batch.to_owned(),
                        answered_at,
                    });
                    return;
                }
                Ok(a) if a.status().is_client_error() => {
                    let text = a.text().await.unwrap_or_default();
                    self.error(format!("the ack of {batch} was refused: {text}"));
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.error(format!("the ack of {batch} got no answer in two minutes"));
    }

    /// A poll over a bare connection that reads the head of the answer and
    /// half its body, then closes it: the client never learns the batch.
    /// Returns whether an answer began to arrive.
    async fn half_read(&self, body: &Value) -> bool {
        let Some(addr) = self.0.base.strip_prefix("http://") else {
            return false;
        };
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
        else {
            return false;
        };
        let payload = body.to_string();
        let request = format!(
            "POST /api/exports/paid-sessions HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            self.0.token,
            payload.len()
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut chunk = [0u8; 64];
        let read = async {
            loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return !got.is_empty();
                }
                got.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(128);
                    if got.len() - (head_end + 4) >= length / 2 {
                        return true;
                    }
                }
            }
        };
        // Dropped here, unread bytes and all.
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap_or(false)
    }

    fn error(&self, finding: String) {
        self.0.log.lock().unwrap().errors.push(finding);
    }
}
