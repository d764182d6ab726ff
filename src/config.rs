//! Configuration from environment variables (and `.env` when present).
//!
//! Each process loads only the sections it needs, so a missing variable is
//! reported by name by the process that actually needs it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::SecretString;

use crate::apps::orders::smtp::{self, SmtpUrl};
use crate::kafka::topics;
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

    fn get(&self, name: &str) -> Option<&str> {
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
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
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
    /// add up to half of this to every message's latency.
    pub fetch_wait: Duration,
    /// Most bytes a fetch may return (`fetch.max.bytes`), counted as the
    /// broker stores batches (compressed, on Kafka). It bounds a worker's
    /// memory, and must hold the largest message: a broker that does not
    /// return a message larger than a fetch (nisshi) stalls its partition.
    pub fetch_max_bytes: usize,
}

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
            fetch_wait: Duration::from_millis(env.parsed("KAFKA_FETCH_WAIT_MS", 20)?),
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

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secrets: Vec<SecretString>,
    pub tolerance_secs: i64,
    pub max_body_bytes: u64,
}

impl WebhookConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let secrets: Vec<SecretString> = env
            .required("STRIPE_WEBHOOK_SECRET")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        if secrets.is_empty() {
            return Err(ConfigError::Missing("STRIPE_WEBHOOK_SECRET"));
        }
        Ok(Self {
            secrets,
            tolerance_secs: env.parsed(
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
                signature::DEFAULT_TOLERANCE_SECS,
            )?,
            max_body_bytes: env.parsed("WEBHOOK_MAX_BODY_BYTES", 1024 * 1024)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct StripeApiConfig {
    pub api_key: SecretString,
    pub api_base: String,
    pub api_version: String,
    pub timeout: Duration,
    /// Requests per second this process may send (0: no limit).
    pub rate_limit: f64,
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
        Ok(Self {
            api_key: SecretString::from(env.required("STRIPE_API_KEY")?.to_owned()),
            api_base,
            api_version: env
                .or("STRIPE_API_VERSION", client::DEFAULT_API_VERSION)
                .to_owned(),
            timeout: Duration::from_millis(env.parsed("STRIPE_API_TIMEOUT_MS", 10_000)?),
            // Test-mode keys get 25 req/s; keep headroom for other callers.
            rate_limit: env.parsed("STRIPE_RATE_LIMIT", 20.0)?,
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
    }
}

/// `stripe-sync serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen_addr: SocketAddr,
    /// Bearer token for `/api/*`.
    pub api_token: SecretString,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub webhook: WebhookConfig,
    /// Our topics and groups, for `/api/admin`.
    pub inventory: crate::ops::Inventory,
}

impl ServeConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let kafka = KafkaConfig::load(env)?;
        let webhook = WebhookConfig::load(env)?;
        // An event serve accepts must fit in the workers' fetch, or some
        // brokers never hand it to them; refuse the pair at startup rather
        // than stall a partition on the first large event.
        let largest = webhook.max_body_bytes + ENVELOPE_ALLOWANCE_BYTES;
        if largest > kafka.fetch_max_bytes as u64 {
            return Err(ConfigError::Invalid {
                name: "WEBHOOK_MAX_BODY_BYTES",
                reason: format!(
                    "an event of {} bytes with its envelope ({ENVELOPE_ALLOWANCE_BYTES} bytes) \
                     would not fit in a worker's fetch: raise KAFKA_FETCH_MAX_BYTES ({}) to at \
                     least {largest}, for every process",
                    webhook.max_body_bytes, kafka.fetch_max_bytes
                ),
            });
        }
        Ok(Self {
            listen_addr: env.parsed("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            api_token: {
                let token = env.required("API_TOKEN")?;
                if token.len() < 16 {
                    return Err(ConfigError::Invalid {
                        name: "API_TOKEN",
                        reason: "must be at least 16 characters".into(),
                    });
                }
                SecretString::from(token.to_owned())
            },
            database: DatabaseConfig::load(env)?,
            kafka,
            webhook,
            inventory: crate::ops::Inventory::load(env)?,
        })
    }
}

pub fn inbound_group(env: &Env) -> &str {
    env.or("INBOUND_CONSUMER_GROUP", "stripe-sync.stripe-inbound")
}

pub fn outbound_group(env: &Env) -> &str {
    env.or("OUTBOUND_CONSUMER_GROUP", "stripe-sync.stripe-outbound")
}

/// `workers/stripe-inbound`.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    pub metrics_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub stripe: StripeApiConfig,
    pub consumer_group: String,
    /// Messages per batch of a lane, at most (one transaction each).
    pub batch_size: usize,
    /// How long to wait for more messages to fill a batch once one arrived.
    pub batch_wait: Duration,
    /// Lanes applying at once, each with its own batches, transactions and
    /// connection; a partition always goes to the same lane.
    pub apply_lanes: usize,
}

impl InboundConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let batch_size: usize = env.parsed("INBOUND_BATCH_SIZE", 500)?;
        if batch_size == 0 {
            return Err(ConfigError::Invalid {
                name: "INBOUND_BATCH_SIZE",
                reason: "must be at least 1".into(),
            });
        }
        let database = DatabaseConfig::load(env)?;
        let apply_lanes: usize = env.parsed("INBOUND_APPLY_LANES", 1)?;
        // Each lane holds a connection for its transaction; more lanes than
        // connections would only queue for them.
        if apply_lanes == 0 || apply_lanes > database.pool_size as usize {
            return Err(ConfigError::Invalid {
                name: "INBOUND_APPLY_LANES",
                reason: format!(
                    "must be between 1 and DATABASE_POOL_SIZE ({})",
                    database.pool_size
                ),
            });
        }
        Ok(Self {
            metrics_addr: metrics_addr(env, 9101)?,
            database,
            kafka: KafkaConfig::load(env)?,
            stripe: StripeApiConfig::load(env)?,
            consumer_group: inbound_group(env).to_owned(),
            batch_size,
            batch_wait: Duration::from_millis(env.parsed("INBOUND_BATCH_WAIT_MS", 5)?),
            apply_lanes,
        })
    }
}

/// `workers/outbox-relay`.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub metrics_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub changes: ChangesConfig,
    /// How often to look for new outbox rows when idle.
    pub poll_interval: Duration,
    pub batch_size: i64,
}

impl RelayConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            metrics_addr: metrics_addr(env, 9102)?,
            database: DatabaseConfig::load(env)?,
            kafka: KafkaConfig::load(env)?,
            changes: ChangesConfig::load(env),
            poll_interval: Duration::from_millis(env.parsed("OUTBOX_POLL_MS", 100)?),
            batch_size: env.parsed("OUTBOX_BATCH_SIZE", 500)?,
        })
    }
}

/// `workers/stripe-outbound`.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    pub metrics_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub changes: ChangesConfig,
    pub stripe: StripeApiConfig,
    pub consumer_group: String,
}

impl OutboundConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            metrics_addr: metrics_addr(env, 9103)?,
            database: DatabaseConfig::load(env)?,
            kafka: KafkaConfig::load(env)?,
            changes: ChangesConfig::load(env),
            stripe: StripeApiConfig::load(env)?,
            consumer_group: outbound_group(env).to_owned(),
        })
    }
}

pub fn notifier_group(env: &Env) -> &str {
    env.or("NOTIFIER_CONSUMER_GROUP", "stripe-sync.order-notifier")
}

/// `workers/order-notifier`: one email per paid order.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub metrics_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    /// Line items the mirror does not hold yet are read from Stripe.
    pub stripe: StripeApiConfig,
    pub consumer_group: String,
    pub smtp: SmtpUrl,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    /// Only orders with a line item of one of these products; all if `None`.
    pub product_ids: Option<HashSet<String>>,
    /// How often the sender looks for due emails when nothing woke it.
    pub poll_interval: Duration,
    /// The longest wait between two attempts at one email (the wait
    /// doubles from one second up to this).
    pub retry_max: Duration,
    /// How long an email being sent is its sender's alone; after a crash,
    /// how long until another sender takes it.
    pub lease: Duration,
}

impl NotifierConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let invalid =
            |name: &'static str| move |reason: String| ConfigError::Invalid { name, reason };
        let product_ids: HashSet<String> = env
            .or("NOTIFY_PRODUCT_IDS", "")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            metrics_addr: metrics_addr(env, 9104)?,
            database: DatabaseConfig::load(env)?,
            kafka: KafkaConfig::load(env)?,
            stripe: StripeApiConfig::load(env)?,
            consumer_group: notifier_group(env).to_owned(),
            smtp: SmtpUrl::parse(env.required("SMTP_URL")?).map_err(invalid("SMTP_URL"))?,
            from: env.required("NOTIFY_EMAIL_FROM")?.parse().map_err(
                |e: lettre::address::AddressError| invalid("NOTIFY_EMAIL_FROM")(e.to_string()),
            )?,
            to: smtp::parse_mailboxes(env.required("NOTIFY_EMAIL_TO")?)
                .map_err(invalid("NOTIFY_EMAIL_TO"))?,
            product_ids: (!product_ids.is_empty()).then_some(product_ids),
            poll_interval: Duration::from_millis(env.parsed("NOTIFY_POLL_MS", 500)?),
            retry_max: Duration::from_millis(env.parsed("NOTIFY_RETRY_MAX_MS", 300_000)?),
            lease: {
                let ms: u64 = env.parsed("NOTIFY_LEASE_MS", 60_000)?;
                if ms < 2000 {
                    return Err(ConfigError::Invalid {
                        name: "NOTIFY_LEASE_MS",
                        reason: "must be at least 2000".into(),
                    });
                }
                Duration::from_millis(ms)
            },
        })
    }

    /// One SMTP delivery's timeout: well inside the lease, so a slow
    /// server never sees the same email from two senders at once.
    pub fn send_timeout(&self) -> Duration {
        (self.lease / 2).min(Duration::from_secs(30))
    }

    /// Where the notifier parks events whose email the server refused.
    pub fn dead_letter_topic(&self) -> String {
        topics::notifier_dead_letters(&self.kafka.events_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least `serve` starts with.
    fn serve_env() -> Env {
        Env::from_pairs([
            ("DATABASE_URL", "postgres://x"),
            ("KAFKA_BROKERS", "b:9092"),
            ("STRIPE_WEBHOOK_SECRET", "whsec"),
            ("API_TOKEN", "0123456789abcdef"),
        ])
    }

    #[test]
    fn the_notifier_names_what_is_missing_or_wrong() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://x"),
            ("KAFKA_BROKERS", "b:9092"),
            ("STRIPE_API_KEY", "sk_test_x"),
            ("SMTP_URL", "smtps://u:secret@smtp.example.com"),
            ("NOTIFY_EMAIL_FROM", "Shop <orders@shop.example>"),
            ("NOTIFY_EMAIL_TO", "a@shop.example, b@shop.example"),
            ("NOTIFY_PRODUCT_IDS", " prod_a ,prod_b,"),
        ]);
        let cfg = NotifierConfig::load(&env).unwrap();
        assert_eq!(cfg.to.len(), 2);
        assert_eq!(cfg.product_ids.as_ref().map(HashSet::len), Some(2));
        assert_eq!(cfg.send_timeout(), Duration::from_secs(30));
        assert!(!format!("{cfg:?}").contains("secret"));
        let unset = Env::from_pairs(env.vars().filter(|(k, _)| *k != "NOTIFY_EMAIL_TO"));
        assert_eq!(
            NotifierConfig::load(&unset).unwrap_err(),
            ConfigError::Missing("NOTIFY_EMAIL_TO")
        );
        for (name, value) in [
            ("SMTP_URL", "http://smtp.example.com"),
            ("NOTIFY_EMAIL_FROM", "not an address"),
            ("NOTIFY_EMAIL_TO", "a@shop.example, nope"),
            ("NOTIFY_LEASE_MS", "500"),
        ] {
            let err = NotifierConfig::load(&env.with(name, value)).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, .. } if *n == name),
                "{name}={value}: {err}"
            );
        }
        let short = NotifierConfig::load(&env.with("NOTIFY_LEASE_MS", "4000")).unwrap();
        assert_eq!(short.send_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn missing_required_variable_is_named() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://x"),
            ("KAFKA_BROKERS", "b:9092"),
            ("API_TOKEN", "0123456789abcdef"),
        ]);
        let err = ServeConfig::load(&env).unwrap_err();
        assert_eq!(err, ConfigError::Missing("STRIPE_WEBHOOK_SECRET"));
        assert_eq!(
            err.to_string(),
            "missing required environment variable STRIPE_WEBHOOK_SECRET"
        );
    }

    #[test]
    fn several_webhook_secrets_and_defaults() {
        let env = serve_env().with("STRIPE_WEBHOOK_SECRET", "whsec_new, whsec_old");
        let cfg = ServeConfig::load(&env).unwrap();
        assert_eq!(cfg.webhook.secrets.len(), 2);
        assert_eq!(cfg.kafka.events_topic, "stripe.events.v1");
        assert_eq!(cfg.kafka.dead_letter_topic(), "stripe.events.v1.dlq");
        assert_eq!(cfg.listen_addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn invalid_values_are_named() {
        let env = serve_env().with("LISTEN_ADDR", "nope");
        assert!(matches!(
            ServeConfig::load(&env),
            Err(ConfigError::Invalid {
                name: "LISTEN_ADDR",
                ..
            })
        ));
    }

    #[test]
    fn a_webhook_body_must_fit_in_the_workers_fetch() {
        let env = serve_env();
        // The defaults fit each other.
        let cfg = ServeConfig::load(&env).unwrap();
        assert!(
            cfg.webhook.max_body_bytes + ENVELOPE_ALLOWANCE_BYTES
                <= cfg.kafka.fetch_max_bytes as u64
        );
        let larger_body = env.with("WEBHOOK_MAX_BODY_BYTES", "2000000");
        let err = ServeConfig::load(&larger_body).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { name: "WEBHOOK_MAX_BODY_BYTES", reason }
                if reason.contains("KAFKA_FETCH_MAX_BYTES")),
            "{err}"
        );
        // Raised together, they fit again.
        let both = larger_body.with("KAFKA_FETCH_MAX_BYTES", "2065536");
        assert_eq!(
            ServeConfig::load(&both).unwrap().kafka.fetch_max_bytes,
            2_065_536
        );
        let tiny = env.with("KAFKA_FETCH_MAX_BYTES", "10");
        assert!(matches!(
            ServeConfig::load(&tiny),
            Err(ConfigError::Invalid {
                name: "KAFKA_FETCH_MAX_BYTES",
                ..
            })
        ));
    }

    #[test]
    fn apply_lanes_must_fit_the_pool() {
        let with = |lanes: &'static str| {
            InboundConfig::load(&Env::from_pairs([
                ("DATABASE_URL", "postgres://x"),
                ("KAFKA_BROKERS", "b:9092"),
                ("STRIPE_API_KEY", "sk_test_x"),
                ("DATABASE_POOL_SIZE", "4"),
                ("INBOUND_APPLY_LANES", lanes),
            ]))
        };
        assert_eq!(with("4").unwrap().apply_lanes, 4);
        for bad in ["0", "5"] {
            let err = with(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        name: "INBOUND_APPLY_LANES",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("DATABASE_POOL_SIZE (4)"), "{err}");
        }
    }

    #[test]
    fn debug_never_prints_secrets() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://user:pw-secret@h/db"),
            ("KAFKA_BROKERS", "b:9092"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret"),
            ("STRIPE_API_KEY", "sk_test_topsecret"),
            ("API_TOKEN", "api-token-topsecret"),
        ]);
        let printed = format!(
            "{:?} {:?}",
            ServeConfig::load(&env).unwrap(),
            InboundConfig::load(&env).unwrap()
        );
        for secret in [
            "pw-secret",
            "whsec_topsecret",
            "sk_test_topsecret",
            "api-token-topsecret",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
    }
}
