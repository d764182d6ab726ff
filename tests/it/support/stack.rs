//! The engine under test, started in-process the same way the binaries
//! start it: `serve` and the `stripe-inbound` worker, on a fresh database
//! and fresh topics.

use std::net::SocketAddr;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::Value;
use stripe_sync::config::{Env, InboundConfig, OutboundConfig, RelayConfig, ServeConfig};
use stripe_sync::db::models::{Customer, IdMapEntry};
use stripe_sync::db::schema::{customers, id_map};
use stripe_sync::stripe::signature;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::db::TestDb;

pub const SECRET: &str = "whsec_test_primary";
pub const API_TOKEN: &str = "test-api-token-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-9876543210";
/// `SALESFORCE_WEBHOOK_SECRET`: what a relay signs Contact versions with.
pub const RELAY_SECRET: &str = "relay-secret-0123456789abcdef";

pub struct Options {
    pub brokers: String,
    pub stripe_base: String,
    /// Where stripe-outbound sends its writes (defaults to `stripe_base`);
    /// a counting proxy or a fault-injecting fake in some tests.
    pub outbound_stripe_base: Option<String>,
    pub start_worker: bool,
    /// Start outbox-relay and stripe-outbound.
    pub start_outbound: bool,
    pub produce_timeout_ms: u64,
    pub stripe_timeout_ms: u64,
    /// stripe-inbound's `INBOUND_APPLY_LANES`.
    pub apply_lanes: usize,
    /// `STRIPE_PLATFORMS`, for every process of the stack.
    pub platforms: Option<String>,
    /// serve's `CONSOLE_PROCESSES` (unset: none, not the default ports,
    /// where another test's process might answer).
    pub console_processes: Option<String>,
    /// Whether serve has `ADMIN_TOKEN` (the admin API and the console).
    pub admin: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            brokers: super::broker::shared_brokers(),
            // Nothing listens here: tests that need Stripe pass localstripe.
            stripe_base: "http://127.0.0.1:9".into(),
            outbound_stripe_base: None,
            start_worker: true,
            start_outbound: false,
            produce_timeout_ms: 5000,
            stripe_timeout_ms: 10_000,
            // Two lanes over three partitions: every inbound test also runs
            // the concurrent apply (the engine's default is one lane).
            apply_lanes: 2,
            platforms: None,
            console_processes: None,
            admin: true,
        }
    }
}

pub struct Stack {
    pub db: TestDb,
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub changes_topic: String,
    pub outbound_group: String,
    pub salesforce_group: String,
    pub salesforce_topic: String,
    pub addr: SocketAddr,
    pub env: Env,
    pub http: reqwest::Client,
    server_shutdown: CancellationToken,
    server: JoinHandle<()>,
    worker: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    outbound: Option<(CancellationToken, Vec<JoinHandle<anyhow::Result<()>>>)>,
    salesforce_inbound: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    outbound_env: Env,
}

impl Stack {
    pub async fn start(opts: Options) -> Self {
        super::init_logs();
        let db = TestDb::migrated();
        let topic = super::unique("stripe.events.v1");
        let group = super::unique("inbound");
        let changes_topic = super::unique("customers.changes.v1");
        let outbound_group = super::unique("outbound");
        let commands_topic = super::unique("stripe.commands.v1");
        let commands_group = super::unique("commands");
        let salesforce_group = super::unique("salesforce-outbound");
        let salesforce_topic = super::unique("salesforce.events.v1");
        let salesforce_inbound_group = super::unique("salesforce-inbound");
        let stripe_timeout = opts.stripe_timeout_ms.to_string();
        let apply_lanes = opts.apply_lanes.to_string();
        let pairs = [
            ("DATABASE_URL", db.url.as_str()),
            ("KAFKA_BROKERS", opts.brokers.as_str()),
            ("STRIPE_EVENTS_TOPIC", topic.as_str()),
            ("KAFKA_TOPIC_PARTITIONS", "3"),
            ("INBOUND_APPLY_LANES", apply_lanes.as_str()),
            (
                "KAFKA_PRODUCE_TIMEOUT_MS",
                &opts.produce_timeout_ms.to_string(),
            ),
            (
                "STRIPE_WEBHOOK_SECRET",
                &format!("{SECRET},whsec_test_rotated_out"),
            ),
            ("STRIPE_API_KEY", super::localstripe::API_KEY),
            ("STRIPE_API_BASE", opts.stripe_base.as_str()),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("API_TOKEN", API_TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("INBOUND_CONSUMER_GROUP", group.as_str()),
            ("CUSTOMER_CHANGES_TOPIC", changes_topic.as_str()),
            ("OUTBOUND_CONSUMER_GROUP", outbound_group.as_str()),
            ("STRIPE_COMMANDS_TOPIC", commands_topic.as_str()),
            ("COMMANDS_CONSUMER_GROUP", commands_group.as_str()),
            (
                "SALESFORCE_OUTBOUND_CONSUMER_GROUP",
                salesforce_group.as_str(),
            ),
            ("SALESFORCE_EVENTS_TOPIC", salesforce_topic.as_str()),
            (
                "SALESFORCE_INBOUND_CONSUMER_GROUP",
                salesforce_inbound_group.as_str(),
            ),
            ("SALESFORCE_WEBHOOK_SECRET", RELAY_SECRET),
            ("OUTBOX_POLL_MS", "20"),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("STRIPE_API_TIMEOUT_MS", stripe_timeout.as_str()),
        ];
        let env = Env::from_pairs(
            pairs
                .into_iter()
                .filter(|(k, _)| opts.admin || *k != "ADMIN_TOKEN")
                .chain(opts.platforms.as_deref().map(|p| ("STRIPE_PLATFORMS", p)))
                .chain(std::iter::once((
                    "CONSOLE_PROCESSES",
                    opts.console_processes.as_deref().unwrap_or("none"),
                ))),
        );
        let outbound_base = opts
            .outbound_stripe_base
            .clone()
            .unwrap_or_else(|| opts.stripe_base.clone());
        let outbound_env = Env::from_pairs(pairs.into_iter().map(|(k, v)| {
            if k == "STRIPE_API_BASE" {
                (k, outbound_base.as_str())
            } else {
                (k, v)
            }
        }));
        let server_shutdown = CancellationToken::new();
        let server = stripe_sync::serve::Server::build(
            &ServeConfig::load(&serve_env(&env)).unwrap(),
            server_shutdown.clone(),
        )
        .await
        .expect("server starts");
        let addr = server.addr;
        let server = tokio::spawn(server.run());
        let mut stack = Self {
            db,
            brokers: opts.brokers,
            topic,
            group,
            changes_topic,
            outbound_group,
            salesforce_group,
            salesforce_topic,
            addr,
            env,
            http: reqwest::Client::new(),
            server_shutdown,
            server,
            worker: None,
            outbound: None,
            salesforce_inbound: None,
            outbound_env,
        };
        if opts.start_worker {
            stack.start_worker();
        }
        if opts.start_outbound {
            stack.start_outbound();
        }
        stack
    }

    /// Starts outbox-relay and stripe-outbound in-process.
    pub fn start_outbound(&mut self) {
        assert!(self.outbound.is_none(), "outbound already running");
        let token = CancellationToken::new();
        let relay = stripe_sync::relay::run(
            RelayConfig::load(&self.outbound_env).unwrap(),
            token.clone(),
        );
        let outbound = stripe_sync::outbound::run(
            OutboundConfig::load(&self.outbound_env).unwrap(),
            token.clone(),
        );
        self.outbound = Some((token, vec![tokio::spawn(relay), tokio::spawn(outbound)]));
    }

    /// Points every process of the stack at `salesforce` (a fake), so
    /// stripe-inbound passes Stripe's changes on (it is restarted if it
    /// runs); `extra` adds settings (the poller's, say).
    pub async fn connect_salesforce(
        &mut self,
        salesforce: &super::fake_salesforce::FakeSalesforce,
        extra: &[(&str, &str)],
    ) {
        let mut settings = salesforce.env();
        settings.extend([
            ("SALESFORCE_POLL_INTERVAL_MS", "100".to_owned()),
            ("SALESFORCE_POLL_SETTLE_MS", "0".to_owned()),
        ]);
        settings.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        for (name, value) in settings {
            self.env = self.env.with(name, &value);
            self.outbound_env = self.outbound_env.with(name, &value);
        }
        if self.worker.is_some() {
            self.stop_worker().await;
            self.start_worker();
        }
    }

    /// Starts salesforce-inbound (its consumer and poller) in-process;
    /// [`Self::connect_salesforce`] first.
    pub fn start_salesforce_inbound(&mut self) {
        assert!(self.salesforce_inbound.is_none(), "already running");
        let cfg = stripe_sync::config::SalesforceInboundConfig::load(&self.env).unwrap();
        let token = CancellationToken::new();
        let handle = tokio::spawn(stripe_sync::salesforce::inbound::run(cfg, token.clone()));
        self.salesforce_inbound = Some((token, handle));
    }

    pub async fn stop_salesforce_inbound(&mut self) {
        if let Some((token, handle)) = self.salesforce_inbound.take() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("salesforce-inbound stops in time")
                .unwrap()
                .expect("salesforce-inbound exits cleanly");
        }
    }

    /// Posts `body` to `POST /webhooks/salesforce`, signed with
    /// [`RELAY_SECRET`] unless `signed` is false.
    pub async fn post_relay(&self, body: &Value, signed: bool) -> (reqwest::StatusCode, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let mut req = self
            .http
            .post(format!("http://{}/webhooks/salesforce", self.addr))
            .header("content-type", "application/json");
        if signed {
            let header = signature::sign(RELAY_SECRET, stripe_sync::ingest::unix_now(), &body);
            req = req.header("StripeSync-Signature", header);
        }
        let r = req.body(body).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Starts salesforce-outbound in-process against `salesforce` (a fake),
    /// beside whatever outbound workers run; [`Self::stop_outbound`] stops
    /// it with them. Start outbox-relay too ([`Self::start_outbound`]) for
    /// changes to flow.
    pub fn start_salesforce_outbound(
        &mut self,
        salesforce: &super::fake_salesforce::FakeSalesforce,
    ) {
        let mut env = self.outbound_env.clone();
        for (name, value) in salesforce.env() {
            env = env.with(name, &value);
        }
        let cfg = stripe_sync::config::SalesforceOutboundConfig::load(&env).unwrap();
        let (token, handles) = self
            .outbound
            .get_or_insert_with(|| (CancellationToken::new(), Vec::new()));
        handles.push(tokio::spawn(stripe_sync::salesforce::run(
            cfg,
            token.clone(),
        )));
    }

    pub async fn stop_outbound(&mut self) {
        if let Some((token, handles)) = self.outbound.take() {
            token.cancel();
            for handle in handles {
                tokio::time::timeout(Duration::from_secs(30), handle)
                    .await
                    .expect("outbound workers stop in time")
                    .unwrap()
                    .expect("outbound workers exit cleanly");
            }
        }
    }

    /// A request to the API with the bearer token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(API_TOKEN)
    }

    /// A request to the admin API (`/api/admin/*`) with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// `GET /api/customers/{id}` as JSON.
    pub async fn api_customer(&self, id: &str) -> Value {
        let r = self
            .api(reqwest::Method::GET, &format!("/api/customers/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Waits until the customer's Stripe sync status is `status`.
    pub async fn wait_sync_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        super::wait_for(
            timeout,
            &format!("customer {id} to be {status}"),
            || async {
                let c = self.api_customer(id).await;
                (c["sync"]["stripe"]["status"] == status).then_some(c)
            },
        )
        .await
    }

    /// The environment for a `serve` of this stack: the tests reach its
    /// `/metrics` and `/readyz` on its main port, while `env`'s
    /// `METRICS_ADDR` (port 0) is for the workers.
    pub fn serve_env(&self) -> Env {
        serve_env(&self.env)
    }

    pub fn start_worker(&mut self) {
        self.start_worker_with_ops("127.0.0.1:0");
    }

    /// Starts stripe-inbound with its `/readyz` at `ops_addr`.
    pub fn start_worker_with_ops(&mut self, ops_addr: &str) {
        assert!(self.worker.is_none(), "worker already running");
        let cfg = InboundConfig::load(&self.env.with("METRICS_ADDR", ops_addr)).unwrap();
        let token = CancellationToken::new();
        let handle = tokio::spawn(stripe_sync::inbound::run(cfg, token.clone()));
        self.worker = Some((token, handle));
    }

    /// Graceful stop of the in-process worker (as on SIGTERM).
    pub async fn stop_worker(&mut self) {
        if let Some((token, handle)) = self.worker.take() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("worker stops in time")
                .unwrap()
                .expect("worker exits cleanly");
        }
    }

    pub async fn stop(mut self) {
        self.stop_salesforce_inbound().await;
        self.stop_outbound().await;
        self.stop_worker().await;
        self.server_shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.server).await;
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/stripe", self.addr)
    }

    /// Posts `event` signed with the primary secret at the current time.
    pub async fn post_event(&self, event: &Value) -> reqwest::StatusCode {
        let body = serde_json::to_vec(event).unwrap();
        let header = signature::sign(SECRET, stripe_sync::ingest::unix_now(), &body);
        self.post_raw(body, Some(&header)).await.0
    }

    pub async fn post_raw(
        &self,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> (reqwest::StatusCode, Value) {
        let mut req = self
            .http
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("Stripe-Signature", s);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub fn ledger_count(&self) -> i64 {
        self.db.count("event_ledger")
    }

    /// The local row mirrored from a Stripe customer, with its link.
    pub fn customer(&self, stripe_id: &str) -> Option<(Customer, IdMapEntry)> {
        id_map::table
            .inner_join(customers::table.on(customers::id.eq(id_map::local_id)))
            .filter(id_map::service.eq("stripe"))
            .filter(id_map::entity.eq("customer"))
            .filter(id_map::external_id.eq(stripe_id))
            .select((Customer::as_select(), IdMapEntry::as_select()))
            .first(&mut self.db.conn())
            .optional()
            .unwrap()
    }

    pub async fn wait_ledger(&self, n: i64, timeout: Duration) {
        super::wait_for(timeout, &format!("{n} ledger rows"), || async {
            (self.ledger_count() >= n).then_some(())
        })
        .await;
    }
}

fn serve_env(env: &Env) -> Env {
    env.with("METRICS_ADDR", "")
}
