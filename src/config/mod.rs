//! Configuration from environment variables (and `.env` when present).
//!
//! Each process loads only the sections it needs, so a missing variable is
//! reported by name by the process that actually needs it. This module has
//! the environment and the sections several processes share; `processes`
//! has one configuration per process, built from them.

mod notifier;
mod processes;
pub mod reference;

pub use notifier::*;
pub use processes::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use crate::kafka::producer::Compression;
use crate::kafka::topics;
use crate::stripe::platforms::Platform;
use crate::stripe::{client, signature};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("invalid value for environment variable {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A snapshot of the environment. Tests build one from pairs.
#[derive(Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    /// Reads `.env` (if any) into the process environment, then snapshots it.
    pub fn load() -> Self {
        let _ = dotenvy::dotenv();
        Self(std::env::vars().collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// A copy with `name` set to `value`.
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut copy = self.clone();
        copy.0.insert(name.to_owned(), value.to_owned());
        copy
    }

    /// Every variable, for handing to a child process.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    pub(crate) fn or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    fn parsed<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.optional_parsed(name)?.unwrap_or(default))
    }

    /// `name` parsed, or `None` when it is unset or empty.
    fn optional_parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|v| {
                v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                    name,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }
}

/// Where a worker serves `/metrics`, `/healthz` and `/readyz`
/// (`METRICS_ADDR`); each worker has its own default port.
pub fn metrics_addr(env: &Env, default_port: u16) -> Result<SocketAddr, ConfigError> {
    env.parsed(
        "METRICS_ADDR",
        SocketAddr::from(([127, 0, 0, 1], default_port)),
    )
}

/// How long a process may take to stop after SIGTERM/ctrl-c before it
/// exits anyway (`SHUTDOWN_GRACE_SECS`, default 30).
/// A duration as `90d`, `12h`, `30m` or `45s`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.len().saturating_sub(1);
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 90d, 12h, 30m or 45s"))?;
    let secs = match unit {
        "d" => n.checked_mul(24 * 3600),
        "h" => n.checked_mul(3600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .filter(|&s| s > 0)
    .ok_or_else(|| format!("{raw:?} is not a duration like 90d, 12h, 30m or 45s"))?;
    Ok(Duration::from_secs(secs))
}

/// `STRIPE_EVENTS_RETENTION`: how long `stripe.events` keeps the raw
/// events (`30d` by default; `off`: not kept at all). stripe-inbound reads
/// it to keep them, `prune` to delete what is older.
pub fn events_retention(env: &Env) -> Result<Option<Duration>, ConfigError> {
    match env.or("STRIPE_EVENTS_RETENTION", "30d") {
        "off" => Ok(None),
        raw => parse_duration(raw)
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                name: "STRIPE_EVENTS_RETENTION",
                reason: format!("{reason}, or off"),
            }),
    }
}

pub fn shutdown_grace(env: &Env) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(env.parsed("SHUTDOWN_GRACE_SECS", 30)?))
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub pool_size: u32,
}

impl DatabaseConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: SecretString::from(env.required("DATABASE_URL")?.to_owned()),
            pool_size: env.parsed("DATABASE_POOL_SIZE", 8)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub events_topic: String,
    pub topic_partitions: i32,
    pub replication_factor: i32,
    /// How long a produce may wait for the broker's ack before the webhook
    /// answers 503 (Stripe then retries).
    pub produce_timeout: Duration,
    /// How long the broker may hold a consumer's fetch while it has nothing
    /// new. Brokers that poll for new data instead of waking on it (nisshi)
    /// add up to half of this to the latency of a message that finds the
    /// worker idle; see [`DEFAULT_FETCH_WAIT`] for why it is not shorter.
    pub fetch_wait: Duration,
    /// Most bytes a fetch may return (`fetch.max.bytes`), counted as the
    /// broker stores batches (compressed, on Kafka). It bounds a worker's
    /// memory, and must hold the largest message: a broker that does not
    /// return a message larger than a fetch (nisshi) stalls its partition.
    pub fetch_max_bytes: usize,
    /// How producers compress batches (`KAFKA_COMPRESSION`); see
    /// [`Compression`] for what it does to a consumer's memory.
    pub compression: Compression,
}

/// `KAFKA_COMPRESSION` unless set: none, so that a fetch's limit is what a
/// worker holds. With lz4 the same fetch decompressed to 3-28 times its
/// size and two lanes took stripe-inbound from 61 to 77 MiB (see the
/// benchmark, docs/src/performance.md). On a cluster that pays for bytes, lz4 or zstd, with
/// the workers' memory budgeted for it.
pub const DEFAULT_COMPRESSION: Compression = Compression::None;

/// `KAFKA_FETCH_WAIT_MS` unless set. nisshi 0.6.0 on sqlite also spends
/// this wait on reading a fetch's records: what it has not read when the
/// wait runs out, it reads one record per round of queries (a watermark
/// query, the record query and a header query, each prepared afresh) until
/// the fetch's bytes are used up or the partition's end is reached. A
/// worker behind by more than it can read within the wait then costs the
/// broker more CPU per event, which whatever shares the broker's cores
/// then lacks, and the worker stays behind. The benchmark chose 50 ms over 20
/// (docs/src/performance.md). An event that finds the worker idle waits up
/// to half of it for nisshi's next poll. Apache Kafka answers a waiting
/// fetch as soon as data arrives, so there the wait adds nothing.
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(50);

/// `KAFKA_FETCH_MAX_BYTES` unless set: room for the default largest webhook
/// body (`WEBHOOK_MAX_BODY_BYTES`, 1 MiB) and its envelope.
pub const DEFAULT_FETCH_MAX_BYTES: usize = 1024 * 1024 + ENVELOPE_ALLOWANCE_BYTES as usize;

/// Room in a fetch for what a message carries beside the webhook body (key,
/// headers, batch framing); see [`ServeConfig::load`].
pub const ENVELOPE_ALLOWANCE_BYTES: u64 = 64 * 1024;

impl KafkaConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let partitions: i32 = env.parsed("KAFKA_TOPIC_PARTITIONS", 6)?;
        if partitions < 1 {
            return Err(ConfigError::Invalid {
                name: "KAFKA_TOPIC_PARTITIONS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            brokers: env.required("KAFKA_BROKERS")?.to_owned(),
            events_topic: env
                .or("STRIPE_EVENTS_TOPIC", topics::STRIPE_EVENTS)
                .to_owned(),
            topic_partitions: partitions,
            replication_factor: env.parsed("KAFKA_REPLICATION_FACTOR", 1)?,
            produce_timeout: Duration::from_millis(env.parsed("KAFKA_PRODUCE_TIMEOUT_MS", 5000)?),
            fetch_wait: Duration::from_millis(
                env.parsed("KAFKA_FETCH_WAIT_MS", DEFAULT_FETCH_WAIT.as_millis() as u64)?,
            ),
            fetch_max_bytes: {
                let bytes: usize = env.parsed("KAFKA_FETCH_MAX_BYTES", DEFAULT_FETCH_MAX_BYTES)?;
                // librdkafka's own bounds for it (and `message.max.bytes`).
                if !(1000..=1_000_000_000).contains(&bytes) {
                    return Err(ConfigError::Invalid {
                        name: "KAFKA_FETCH_MAX_BYTES",
                        reason: "must be between 1000 and 1000000000".into(),
                    });
                }
                bytes
            },
            compression: match env.get("KAFKA_COMPRESSION") {
                None => DEFAULT_COMPRESSION,
                Some(raw) => raw.parse().map_err(|reason| ConfigError::Invalid {
                    name: "KAFKA_COMPRESSION",
                    reason,
                })?,
            },
        })
    }

    pub fn dead_letter_topic(&self) -> String {
        topics::dead_letter_for(&self.events_topic)
    }
}

/// `customers.changes.v1` and its consumers.
#[derive(Debug, Clone)]
pub struct ChangesConfig {
    pub topic: String,
}

impl ChangesConfig {
    pub fn load(env: &Env) -> Self {
        Self {
            topic: env
                .or("CUSTOMER_CHANGES_TOPIC", topics::CUSTOMER_CHANGES)
                .to_owned(),
        }
    }

    pub fn dead_letter_topic(&self) -> String {
        topics::dead_letter_for(&self.topic)
    }
}

/// `stripe.commands.v1` (queued refunds) and its consumers.
#[derive(Debug, Clone)]
pub struct CommandsConfig {
    pub topic: String,
}

impl CommandsConfig {
    pub fn load(env: &Env) -> Self {
        Self {
            topic: env
                .or("STRIPE_COMMANDS_TOPIC", topics::STRIPE_COMMANDS)
                .to_owned(),
        }
    }

    pub fn dead_letter_topic(&self) -> String {
        topics::dead_letter_for(&self.topic)
    }
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secrets: Vec<SecretString>,
    /// Further platform accounts whose webhooks come in too, each told
    /// apart by its secrets (`STRIPE_PLATFORMS`).
    pub platforms: Vec<Platform>,
    pub tolerance_secs: i64,
    pub max_body_bytes: u64,
}

impl WebhookConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let secrets = secret_list(env.required("STRIPE_WEBHOOK_SECRET")?);
        if secrets.is_empty() {
            return Err(ConfigError::Missing("STRIPE_WEBHOOK_SECRET"));
        }
        Ok(Self {
            secrets,
            platforms: platforms(env)?,
            tolerance_secs: env.parsed(
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
                signature::DEFAULT_TOLERANCE_SECS,
            )?,
            max_body_bytes: env.parsed("WEBHOOK_MAX_BODY_BYTES", 1024 * 1024)?,
        })
    }
}

/// `STRIPE_PLATFORMS`: the platform accounts beside the default one.
pub fn platforms(env: &Env) -> Result<Vec<Platform>, ConfigError> {
    crate::stripe::platforms::parse(env.or("STRIPE_PLATFORMS", "")).map_err(|reason| {
        ConfigError::Invalid {
            name: "STRIPE_PLATFORMS",
            reason,
        }
    })
}

/// Webhook secrets as configured: comma-separated, several at once while
/// one is rotated.
pub(crate) fn secret_list(raw: &str) -> Vec<SecretString> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(s.to_owned()))
        .collect()
}

#[derive(Debug, Clone)]
pub struct StripeApiConfig {
    pub api_key: SecretString,
    pub api_base: String,
    pub api_version: String,
    pub timeout: Duration,
    /// Requests per second this process may send (0: no limit).
    pub rate_limit: f64,
    /// Further platform accounts, each read with its own key.
    pub platforms: Vec<Platform>,
}

impl StripeApiConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let api_base = env
            .or("STRIPE_API_BASE", client::DEFAULT_API_BASE)
            .to_owned();
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "STRIPE_API_BASE",
                reason: "must start with http:// or https://".into(),
            });
        }
        let rate_limit: f64 = env.parsed("STRIPE_RATE_LIMIT", 20.0)?;
        // 0 is unlimited; a positive rate below one request a minute (or
        // not a number) is a typo, and its window would not fit a clock.
        if !(rate_limit == 0.0 || (1.0 / 60.0..=100_000.0).contains(&rate_limit)) {
            return Err(ConfigError::Invalid {
                name: "STRIPE_RATE_LIMIT",
                reason: "must be 0 (unlimited) or between 1/60 and 100000 requests per second"
                    .into(),
            });
        }
        Ok(Self {
            api_key: SecretString::from(env.required("STRIPE_API_KEY")?.to_owned()),
            api_base,
            api_version: env
                .or("STRIPE_API_VERSION", client::DEFAULT_API_VERSION)
                .to_owned(),
            timeout: Duration::from_millis(env.parsed("STRIPE_API_TIMEOUT_MS", 10_000)?),
            // Test-mode keys get 25 req/s; keep headroom for other callers.
            rate_limit,
            platforms: platforms(env)?,
        })
    }

    pub fn client(&self) -> anyhow::Result<client::StripeClient> {
        let rate = (self.rate_limit > 0.0).then_some(self.rate_limit);
        client::StripeClient::new(
            &self.api_base,
            self.api_key.clone(),
            &self.api_version,
            self.timeout,
            rate,
        )
        .map(|c| c.with_platforms(&self.platforms))
    }
}

/// The Salesforce adapter (`SALESFORCE_*`). It is off unless
/// `SALESFORCE_INSTANCE_URL` is set: [`SalesforceConfig::load`] answers
/// `None` then, and a process that needs it names the variable.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// The org's My Domain URL (`https://acme.my.salesforce.com`), where the
    /// OAuth token is asked for; API calls go to the `instance_url` the
    /// token answer names.
    pub instance_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Pinned, like Stripe's: `61.0` calls `/services/data/v61.0/…`.
    pub api_version: String,
    /// The Contact field holding the local customer id, marked External ID
    /// in Salesforce, so an upsert by it never creates a second Contact.
    pub external_id_field: String,
    pub timeout: Duration,
}

pub const DEFAULT_SALESFORCE_API_VERSION: &str = "61.0";
pub const DEFAULT_SALESFORCE_EXTERNAL_ID_FIELD: &str = "StripeSync_Id__c";

impl SalesforceConfig {
    pub fn load(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(instance_url) = env.get("SALESFORCE_INSTANCE_URL") else {
            return Ok(None);
        };
        if !(instance_url.starts_with("http://") || instance_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "SALESFORCE_INSTANCE_URL",
                reason: "must start with http:// or https://".into(),
            });
        }
        let api_version = env
            .or("SALESFORCE_API_VERSION", DEFAULT_SALESFORCE_API_VERSION)
            .trim_start_matches('v')
            .to_owned();
        if !is_api_version(&api_version) {
            return Err(ConfigError::Invalid {
                name: "SALESFORCE_API_VERSION",
                reason: "must look like 61.0".into(),
            });
        }
        let external_id_field = env
            .or(
                "SALESFORCE_EXTERNAL_ID_FIELD",
                DEFAULT_SALESFORCE_EXTERNAL_ID_FIELD,
            )
            .to_owned();
        // It becomes a path segment of every upsert.
        if !external_id_field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::Invalid {
                name: "SALESFORCE_EXTERNAL_ID_FIELD",
                reason: "must be a field's API name (letters, digits, _)".into(),
            });
        }
        Ok(Some(Self {
            instance_url: instance_url.trim_end_matches('/').to_owned(),
            client_id: env.required("SALESFORCE_CLIENT_ID")?.to_owned(),
            client_secret: SecretString::from(env.required("SALESFORCE_CLIENT_SECRET")?.to_owned()),
            api_version,
            external_id_field,
            timeout: Duration::from_millis(env.parsed("SALESFORCE_API_TIMEOUT_MS", 10_000)?),
        }))
    }

    /// Whether the adapter is on, for processes that only list what runs
    /// (the topics and lag commands) and need none of its credentials.
    pub fn is_configured(env: &Env) -> bool {
        env.get("SALESFORCE_INSTANCE_URL").is_some()
    }

    /// [`Self::load`] for a process that cannot run without it.
    pub fn required(env: &Env) -> Result<Self, ConfigError> {
        Self::load(env)?.ok_or(ConfigError::Missing("SALESFORCE_INSTANCE_URL"))
    }
}

fn is_api_version(raw: &str) -> bool {
    match raw.split_once('.') {
        Some((major, minor)) => {
            !major.is_empty()
                && !minor.is_empty()
                && major
                    .bytes()
                    .chain(minor.bytes())
                    .all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}
