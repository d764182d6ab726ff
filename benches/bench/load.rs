//! The webhook load generator: signed events sent over raw keep-alive
//! connections as fast as possible or at a fixed rate, and the end-to-end
//! probe (webhook answered → row visible).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use serde_json::Value;
use stripe_sync::stripe::signature::sign;

use crate::report::{latency_rows, row, Row};
use crate::{customer_event, customer_event_numbered, Scale, SECRET};

/// Webhook ingest through the `serve` at `base`: sustained events/s from
/// 64 connections, then latency at a fixed 1,000 events/s. `label` tells
/// the rows of one broker from another's.
pub(crate) async fn ingest_figures(
    base: &str,
    fixtures: &Value,
    scale: &Scale,
    label: &str,
    ceiling: f64,
    first_n: u64,
) -> anyhow::Result<Vec<Row>> {
    let sustained = load(
        &stripe_webhooks(base),
        &CustomerUpdates::new(fixtures, "cus_load", 10_000, first_n),
        64,
        None,
        Duration::from_secs(scale.ingest_secs),
    )
    .await?;
    let mut rows = vec![row(
        &format!("webhook ingest, sustained (64 connections){label}"),
        sustained.rate,
        "events/s",
        Some(ceiling),
        ">= 15000",
    )];
    let paced = load(
        &stripe_webhooks(base),
        &CustomerUpdates::new(fixtures, "cus_load", 10_000, first_n + 10_000_000),
        32,
        Some(1000.0),
        Duration::from_secs(scale.fixed_rate_secs),
    )
    .await?;
    rows.extend(latency_rows(
        &format!("webhook latency at 1000/s{label}"),
        &paced.latencies,
        "<= 10",
    ));
    Ok(rows)
}

/// What a load sends: event `i` of it (0, 1, ...), as the JSON Stripe
/// would post; false past its last event.
pub(crate) trait Events: Sync {
    fn write(&self, i: u64, out: &mut Vec<u8>) -> bool;
}

/// `customer.updated` events over `customers` customers (`{prefix}0` …),
/// numbered from `first_n`, each a second after the previous event: a
/// customer's events never share a second, as Stripe's would not (no
/// same-second ties to re-read). Endless unless limited.
pub(crate) struct CustomerUpdates {
    template: LoadEvent,
    customers: u64,
    first_n: u64,
    limit: Option<u64>,
}

impl CustomerUpdates {
    pub(crate) fn new(fixtures: &Value, prefix: &str, customers: u64, first_n: u64) -> Self {
        Self {
            template: LoadEvent::new(fixtures, prefix),
            customers,
            first_n,
            limit: None,
        }
    }

    /// One event per customer, then no more.
    pub(crate) fn once_each(mut self) -> Self {
        self.limit = Some(self.customers);
        self
    }

    /// The number of event `i` and the customer it updates.
    pub(crate) fn numbered(&self, i: u64) -> (u64, u64) {
        let n = self.first_n + i;
        (n, n % self.customers)
    }
}

/// The `created` of event number `n` of a [`CustomerUpdates`].
pub(crate) fn created_of(n: u64) -> i64 {
    1_700_000_000 + n as i64
}

impl Events for CustomerUpdates {
    fn write(&self, i: u64, out: &mut Vec<u8>) -> bool {
        if self.limit.is_some_and(|limit| i >= limit) {
            return false;
        }
        let (n, customer) = self.numbered(i);
        self.template.write(n, customer, created_of(n), out);
        true
    }
}

/// Events serialised before the load starts (for loads with no cheap
/// template, such as the type mix).
pub(crate) struct Prebuilt(pub(crate) Vec<Vec<u8>>);

impl Events for Prebuilt {
    fn write(&self, i: u64, out: &mut Vec<u8>) -> bool {
        let Some(body) = self.0.get(i as usize) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(body);
        true
    }
}

/// What a load did.
pub(crate) struct Sent {
    /// Accepted (200) events per second over the load.
    pub(crate) rate: f64,
    /// Latencies of the accepted requests, seconds, sorted.
    pub(crate) latencies: Vec<f64>,
    pub(crate) accepted: u64,
    /// Every event taken from the source (accepted or not) is in
    /// `0..issued`; the few numbers past a source's end that connections
    /// asked for as it ran out are counted too.
    pub(crate) issued: u64,
    pub(crate) started: Instant,
    /// When the last accepted answer came.
    pub(crate) last_accepted: Instant,
}

/// serve's webhook endpoint, at `base`.
pub(crate) fn stripe_webhooks(base: &str) -> String {
    format!("{base}/webhooks/stripe")
}

/// Sends `events` in order (each taken once, by whichever connection is
/// free) from `connections` workers, each on its own keep-alive
/// connection to `url` (`http://host:port/path`), either as fast as
/// possible or at `rate` per second in total, until `duration` passes or
/// the events run out.
pub(crate) async fn load(
    url: &str,
    events: &dyn Events,
    connections: usize,
    rate: Option<f64>,
    duration: Duration,
) -> anyhow::Result<Sent> {
    let (authority, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .context("the webhook URL has a path")?;
    let path = format!("/{path}");
    let latencies = Mutex::new(Vec::new());
    let (next_event, accepted) = (AtomicU64::new(0), AtomicU64::new(0));
    let last_accepted = Mutex::new(Instant::now());
    let start = Instant::now();
    let workers = (0..connections).map(|w| {
        let (latencies, next_event, accepted, last_accepted, path) =
            (&latencies, &next_event, &accepted, &last_accepted, &path);
        async move {
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            let mut next = Instant::now() + Duration::from_millis(w as u64 % 10);
            let mut conn: Option<WebhookConnection> = None;
            let mut body = Vec::new();
            let mut mine = Vec::new();
            while start.elapsed() < duration {
                if let Some(step) = interval {
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                    next += step;
                }
                let c = match conn.take() {
                    Some(c) => c,
                    None => match WebhookConnection::open(authority, path).await {
                        Ok(c) => c,
                        Err(_) => {
                            // No tight loop while serve is away.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                if !events.write(next_event.fetch_add(1, Ordering::Relaxed), &mut body) {
                    break;
                }
                let header = sign(SECRET, stripe_sync::ingest::unix_now(), &body);
                let sent = Instant::now();
                // A timeout, so one stuck request cannot hang the whole run.
                let answer = tokio::time::timeout(Duration::from_secs(10), c.post(&header, &body));
                if let Ok(Ok((c, status))) = answer.await {
                    conn = c;
                    if status == 200 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        mine.push(sent.elapsed().as_secs_f64());
                        let now = Instant::now();
                        let mut last = last_accepted.lock().unwrap();
                        *last = (*last).max(now);
                    }
                }
            }
            latencies.lock().unwrap().extend(mine);
        }
    });
    futures::future::join_all(workers).await;
    let accepted = accepted.into_inner();
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(Sent {
        rate: accepted as f64 / start.elapsed().as_secs_f64(),
        latencies,
        accepted,
        issued: next_event.into_inner(),
        started: start,
        last_accepted: last_accepted.into_inner().unwrap(),
    })
}

/// The load generator's event, [`customer_event`] serialised once with its
/// number, customer and time left open: it shares the two cores with what
/// it measures, so each request only fills those in (building and
/// serialising the tree cost as much CPU as serve's whole ingest).
pub(crate) struct LoadEvent {
    /// Literal bytes, each followed by a hole (none after the last).
    pieces: Vec<(Vec<u8>, Option<Hole>)>,
    /// Customer ids are this and their number.
    prefix: String,
}

#[derive(Clone, Copy)]
pub(crate) enum Hole {
    Number,
    Customer,
    Created,
}

impl LoadEvent {
    const NUMBER: &'static str = "@@n@@";
    const CUSTOMER: &'static str = "@@customer@@";
    const CREATED: i64 = 4_242_424_242_424;

    fn new(fixtures: &Value, prefix: &str) -> Self {
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
        let event = Self {
            pieces,
            prefix: prefix.to_owned(),
        };
        // The holes must give back exactly what customer_event builds.
        let mut filled = Vec::new();
        event.write(123, 45, 1_700_000_123, &mut filled);
        let built = customer_event(123, &format!("{prefix}45"), 1_700_000_123, fixtures);
        assert_eq!(
            filled,
            serde_json::to_vec(&built).unwrap(),
            "load event template"
        );
        event
    }

    /// Event `n` for customer `{prefix}{customer}`, into `out`.
    fn write(&self, n: u64, customer: u64, created: i64, out: &mut Vec<u8>) {
        use std::io::Write;
        out.clear();
        for (literal, hole) in &self.pieces {
            out.extend_from_slice(literal);
            let _ = match hole {
                Some(Hole::Number) => write!(out, "{n}"),
                Some(Hole::Customer) => write!(out, "{}{customer}", self.prefix),
                Some(Hole::Created) => write!(out, "{created}"),
                None => Ok(()),
            };
        }
    }
}

/// One keep-alive HTTP/1.1 connection to a webhook endpoint that
/// writes a request and reads the status and body of its answer, nothing
/// more (reqwest's pool, URL parsing and header maps cost the load
/// generator as much CPU as serve spends on the request).
pub(crate) struct WebhookConnection {
    stream: tokio::net::TcpStream,
    authority: String,
    path: String,
    buf: Vec<u8>,
}

impl WebhookConnection {
    async fn open(authority: &str, path: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            authority: authority.to_owned(),
            path: path.to_owned(),
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
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Stripe-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
            self.path,
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

/// At 1000 events/s, each for a new customer: time from the webhook's 200
/// to the customer's id_map row being visible. A poller looks up the
/// acknowledged, not yet seen ids by primary key every 2 ms, so polling
/// costs little however large the table is.
pub(crate) async fn end_to_end(
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
pub(crate) struct E2eRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    external_id: String,
}
