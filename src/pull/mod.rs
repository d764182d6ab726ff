//! The pull paths: backfill (list API), reconcile (Events API) and diff.
//! They publish into `stripe.events.v1` in the same envelope as webhooks,
//! so there is one way data enters the store and one ledger.

pub mod accounts;
pub mod backfill;
pub mod diff;
pub mod reconcile;
pub mod refresh;
pub mod resync;

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, DatabaseConfig, Env, KafkaConfig, StripeApiConfig};
use crate::db::{self, PgPool};
use crate::kafka::envelope;
use crate::kafka::{admin, EventProducer};
use crate::registry::{Listing, Parent, Resource};
use crate::retry::Backoff;
use crate::stripe::event::SNAPSHOT_ID_PREFIX;
use crate::stripe::{AccountId, ObjectId};
use crate::stripe::{EventEnvelope, ListPage, StripeClient, StripeError, PLATFORM_ACCOUNT};
pub use accounts::{AccountChoice, Accounts};

/// Configuration of `backfill`, `reconcile` and `diff`.
#[derive(Debug, Clone)]
pub struct PullConfig {
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub stripe: StripeApiConfig,
    /// `STRIPE_ACCOUNTS`: the accounts the pull commands cover when no
    /// `--account` is given (`platform`, `acct_…`, `auto`).
    pub accounts: Accounts,
}

impl PullConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseConfig::load(env)?,
            kafka: KafkaConfig::load(env)?,
            stripe: StripeApiConfig::load(env)?,
            accounts: Accounts::parse(env.or("STRIPE_ACCOUNTS", PLATFORM_ACCOUNT))?,
        })
    }

    /// The accounts a command covers: those named on its command line, or
    /// else `STRIPE_ACCOUNTS`.
    pub fn accounts_or(&self, named: &[AccountChoice]) -> Accounts {
        if named.is_empty() {
            self.accounts.clone()
        } else {
            Accounts::of(named)
        }
    }
}

/// What every pull command needs, built once.
pub struct PullContext {
    pub pool: PgPool,
    pub producer: EventProducer,
    pub stripe: StripeClient,
    pub topic: String,
}

impl PullContext {
    pub async fn build(cfg: &PullConfig) -> anyhow::Result<Self> {
        let pool = db::pool(&cfg.database);
        {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || db::ensure_migrated(&pool)).await??;
        }
        let kafka = &cfg.kafka;
        admin::ensure_topics(
            &kafka.brokers,
            &[&kafka.events_topic, &kafka.dead_letter_topic()],
            kafka.topic_partitions,
            kafka.replication_factor,
        )
        .await?;
        Ok(Self {
            pool,
            producer: EventProducer::for_config(kafka)?,
            stripe: cfg.stripe.client()?,
            topic: kafka.events_topic.clone(),
        })
    }

    /// Runs a database operation on the blocking pool.
    pub async fn db<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut diesel::PgConnection) -> diesel::QueryResult<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        crate::db::blocking(&self.pool, move |conn| Ok::<_, anyhow::Error>(op(conn)?)).await
    }

    /// Publishes one event (webhook-shaped JSON) of `account`, keyed by its
    /// object id, and waits for Kafka's acknowledgement.
    pub async fn publish(
        &self,
        event: &Value,
        source: &str,
        account: &AccountId,
    ) -> anyhow::Result<()> {
        let platform = self.stripe.keys().platform_of(account);
        publish(&self.producer, &self.topic, event, source, &platform).await
    }

    /// Every object of a list call, following `starting_after` from page to
    /// page (in whatever order the API returns them). Returns the objects
    /// and the number of list calls made.
    pub async fn list_all(
        &self,
        account: &AccountId,
        collection: &str,
        filters: &[(String, String)],
    ) -> anyhow::Result<(Vec<Value>, u64)> {
        crate::stripe::client::page_through(filters, |params| async move {
            self.list_page(account, collection, &params).await
        })
        .await
    }

    /// One list page, retried on 429 (after `Retry-After`) and 5xx; a
    /// permanent error stops the command.
    pub async fn list_page(
        &self,
        account: &AccountId,
        collection: &str,
        params: &[(String, String)],
    ) -> anyhow::Result<ListPage> {
        self.list_page_retrying(account, collection, params, |e, _| e.is_transient())
            .await
    }

    /// One list page, retried (up to 20 times) while `retry`, given the
    /// error and the attempts so far, says it may pass.
    pub async fn list_page_retrying(
        &self,
        account: &AccountId,
        collection: &str,
        params: &[(String, String)],
        retry: fn(&StripeError, u32) -> bool,
    ) -> anyhow::Result<ListPage> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self.stripe.list(account, collection, params).await {
                Ok(page) => return Ok(page),
                Err(e) if retry(&e, backoff.attempts()) && backoff.attempts() < 20 => {
                    let wait = backoff.next_delay(e.retry_after());
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "list call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("listing /v1/{collection} failed"))
                    )
                }
            }
        }
    }
}

/// The parents a type listed one parent at a time
/// ([`Resource::listed_per`]) is listed under on `account`, in byte order
/// (so a checkpoint resumes exactly): the account's customers as Stripe
/// lists them, or a connected account itself (the platform's own `acct_…` id
/// is not known, so nothing for the platform).
pub async fn parents(
    ctx: &PullContext,
    resource: &Resource,
    account: &AccountId,
) -> anyhow::Result<Vec<String>> {
    match resource.listed_per() {
        Some(Parent::ACCOUNT) if account.is_platform() => Ok(Vec::new()),
        Some(Parent::ACCOUNT) => Ok(vec![account.to_string()]),
        _ => listed_customers(ctx, account).await,
    }
}

/// The list call for `resource`'s objects under one parent: its collection
/// filtered by the customer, or the collection under the parent (whose id
/// goes into the path only when it is a plain Stripe id).
pub fn list_under(
    resource: &Resource,
    parent_id: &str,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let pairs = |extra: &[(&str, &str)]| {
        extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    Ok(match resource.listing {
        Listing::Nested(parent, extra) => (
            resource.path_under(parent, ObjectId::parse(parent_id)?.as_str()),
            pairs(extra),
        ),
        _ => (
            resource.path.to_owned(),
            vec![("customer".to_owned(), parent_id.to_owned())],
        ),
    })
}

/// The customers Stripe lists for an account, in byte order of their ids
/// (as Rust compares them, so a checkpoint resumes exactly). Stripe's list,
/// not the mirror's: a backfill of customers publishes them before the
/// worker applies them, and a type listed per customer read right after
/// would find them missing.
async fn listed_customers(ctx: &PullContext, account: &AccountId) -> anyhow::Result<Vec<String>> {
    let (customers, _calls) = ctx.list_all(account, "customers", &[]).await?;
    let mut ids: Vec<String> = customers
        .iter()
        .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Publishes an event we built (a snapshot) or read (`/v1/events`) onto
/// the events topic, keyed like a webhook's and with a `source` header
/// saying where it came from, so it takes the one path into the mirror. `platform` is the one whose key read it, which
/// the worker reads it with again; an event without an `account` is that
/// platform's own.
pub async fn publish(
    producer: &EventProducer,
    topic: &str,
    event: &Value,
    source: &str,
    platform: &AccountId,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(event)?;
    let parsed = EventEnvelope::parse_for(&body, platform).context("built an invalid event")?;
    let headers = envelope::event_headers(&parsed, source);
    producer
        .send(topic, parsed.object_id.as_bytes(), &body, &headers)
        .await?;
    Ok(())
}

/// A synthetic event carrying an object's current state. Its id is derived
/// from the account and the object's content, so listing an unchanged
/// object again yields the same id and the ledger skips it.
pub fn snapshot_event(
    resource: &Resource,
    account: &AccountId,
    object: &Value,
    read_at: i64,
) -> Value {
    let mut hasher = Sha256::new();
    hasher.update(account.as_str().as_bytes());
    hasher.update([0]);
    // serde_json maps are sorted, so this serialisation is canonical.
    hasher.update(serde_json::to_vec(object).unwrap_or_default());
    let digest = hasher.finalize();
    let mut event = json!({
        "id": format!("{SNAPSHOT_ID_PREFIX}{}", hex::encode(&digest[..12])),
        "object": "event",
        "type": resource.snapshot_type(),
        "created": read_at,
        "livemode": object.get("livemode").cloned().unwrap_or(Value::Bool(false)),
        "api_version": null,
        "pending_webhooks": 0,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object},
    });
    if !account.is_platform() {
        event["account"] = Value::String(account.to_string());
    }
    event
}

/// Progress output: a live bar on a terminal, a log line every few
/// seconds otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    started: std::time::Instant,
    last_log: std::time::Instant,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            what,
            started: std::time::Instant::now(),
            last_log: std::time::Instant::now(),
        }
    }

    pub fn update(&mut self, objects: u64, pages: u64) {
        let rate = objects as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let msg = format!(
            "{}: {objects} objects, {pages} pages, {rate:.0} objects/s",
            self.what
        );
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None if self.last_log.elapsed() >= Duration::from_secs(5) => {
                self.last_log = std::time::Instant::now();
                tracing::info!(
                    objects,
                    pages,
                    objects_per_sec = rate as u64,
                    "{}",
                    self.what
                );
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
