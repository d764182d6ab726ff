//! One configuration per process: `serve` and each worker, built from the
//! shared sections in the parent module.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::customers::settings::FanOut;
use crate::kafka::topics;

/// `stripe-sync serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen_addr: SocketAddr,
    /// `/metrics`, `/healthz` and `/readyz` on a listener of their own
    /// (`METRICS_ADDR`), so the public port carries only the webhook and
    /// the API; unset, they are served on `listen_addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// Bearer token for `/api/*`.
    pub api_token: SecretString,
    /// `/api/admin/*`; the admin API is off without it.
    pub admin_token: Option<SecretString>,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub webhook: WebhookConfig,
    /// Our topics and groups, for `/api/admin`.
    pub inventory: crate::ops::Inventory,
    /// For the payments API; it answers 503 while `STRIPE_API_KEY` is unset.
    pub stripe: Option<StripeApiConfig>,
    /// `POST /webhooks/salesforce`, on once `SALESFORCE_WEBHOOK_SECRET` is set.
    pub salesforce_relay: Option<SalesforceRelayConfig>,
    /// Statement timeout of each read of `/api/stripe/*`
    /// (`MIRROR_QUERY_TIMEOUT_MS`); past it the read answers 504
    /// `query_timeout`.
    pub mirror_query_timeout: Duration,
    /// How long a batch of the HTTP export is held after it was offered
    /// (`EXPORT_BATCH_LEASE_MS`), from every caller of its export, the
    /// one it went to included; unacknowledged after that, it is offered
    /// again to the next caller.
    pub export_batch_lease: Duration,
    /// The workers whose `/readyz` the console's overview reads
    /// (`CONSOLE_PROCESSES`).
    pub console_processes: Vec<crate::ops::overview::ProcessEndpoint>,
}

/// `EXPORT_BATCH_LEASE_MS` unless set: longer than most pollers wait
/// between two polls, so the next poll's acknowledgement comes first.
pub const DEFAULT_EXPORT_BATCH_LEASE_MS: u64 = 300_000;

/// `MIRROR_QUERY_TIMEOUT_MS` unless set: long enough for a filtered page
/// of a large relation through an index, short enough that a filter that
/// scans it cannot hold a connection of the pool for long.
pub const DEFAULT_MIRROR_QUERY_TIMEOUT_MS: u64 = 5000;
/// The smallest `MIRROR_QUERY_TIMEOUT_MS` accepted.
pub const MIN_MIRROR_QUERY_TIMEOUT_MS: u64 = 100;

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
            metrics_addr: env.optional_parsed("METRICS_ADDR")?,
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
            admin_token: match env.get("ADMIN_TOKEN") {
                None => None,
                Some(token) if token.len() < 16 => {
                    return Err(ConfigError::Invalid {
                        name: "ADMIN_TOKEN",
                        reason: "must be at least 16 characters".into(),
                    })
                }
                Some(token) if Some(token) == env.get("API_TOKEN") => {
                    return Err(ConfigError::Invalid {
                        name: "ADMIN_TOKEN",
                        reason: "must differ from API_TOKEN".into(),
                    })
                }
                Some(token) => Some(SecretString::from(token.to_owned())),
            },
            database: DatabaseConfig::load(env)?,
            kafka,
            webhook,
            inventory: crate::ops::Inventory::load(env)?,
            stripe: match env.get("STRIPE_API_KEY") {
                Some(_) => Some(StripeApiConfig::load(env)?),
                None => None,
            },
            salesforce_relay: SalesforceRelayConfig::load(env)?,
            mirror_query_timeout: {
                let ms: u64 =
                    env.parsed("MIRROR_QUERY_TIMEOUT_MS", DEFAULT_MIRROR_QUERY_TIMEOUT_MS)?;
                // 0 is Postgres's "no timeout", the opposite of a bound;
                // below a tenth of a second a network round trip would be
                // taken for the budget running out; statement_timeout
                // holds at most i32::MAX ms.
                if !(MIN_MIRROR_QUERY_TIMEOUT_MS..=i32::MAX as u64).contains(&ms) {
                    return Err(ConfigError::Invalid {
                        name: "MIRROR_QUERY_TIMEOUT_MS",
                        reason: format!(
                            "must be from {MIN_MIRROR_QUERY_TIMEOUT_MS} to {}",
                            i32::MAX
                        ),
                    });
                }
                Duration::from_millis(ms)
            },
            export_batch_lease: {
                let ms: u64 = env.parsed("EXPORT_BATCH_LEASE_MS", DEFAULT_EXPORT_BATCH_LEASE_MS)?;
                if !(1000..=86_400_000).contains(&ms) {
                    return Err(ConfigError::Invalid {
                        name: "EXPORT_BATCH_LEASE_MS",
                        reason: "must be from 1000 (a second) to 86400000 (a day)".into(),
                    });
                }
                Duration::from_millis(ms)
            },
            console_processes: crate::ops::overview::processes(env)?,
        })
    }
}

/// `salesforce.events.v1` unless `SALESFORCE_EVENTS_TOPIC` names another.
pub fn salesforce_events_topic(env: &Env) -> &str {
    env.or("SALESFORCE_EVENTS_TOPIC", topics::SALESFORCE_EVENTS)
}

/// The route a relay posts Contact versions to (Change Data Capture or
/// outbound messages, forwarded): signed like Stripe's webhooks, with a
/// secret of its own.
#[derive(Debug, Clone)]
pub struct SalesforceRelayConfig {
    pub secrets: Vec<SecretString>,
    pub tolerance_secs: i64,
    pub topic: String,
}

impl SalesforceRelayConfig {
    pub fn load(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(raw) = env.get("SALESFORCE_WEBHOOK_SECRET") else {
            return Ok(None);
        };
        let secrets = secret_list(raw);
        if secrets.iter().any(|s| s.expose_secret().len() < 16) || secrets.is_empty() {
            return Err(ConfigError::Invalid {
                name: "SALESFORCE_WEBHOOK_SECRET",
                reason: "each secret must be at least 16 characters".into(),
            });
        }
        Ok(Some(Self {
            secrets,
            tolerance_secs: env.parsed(
                "SALESFORCE_WEBHOOK_TOLERANCE_SECS",
                crate::stripe::signature::DEFAULT_TOLERANCE_SECS,
            )?,
            topic: salesforce_events_topic(env).to_owned(),
        }))
    }
}

pub fn salesforce_inbound_group(env: &Env) -> &str {
    env.or(
        "SALESFORCE_INBOUND_CONSUMER_GROUP",
        "stripe-sync.salesforce-inbound",
    )
}

/// `workers/salesforce-inbound`: Contact versions to local customers, and
/// the poller that finds them.
#[derive(Debug, Clone)]
pub struct SalesforceInboundConfig {
    pub metrics_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub salesforce: SalesforceConfig,
    pub consumer_group: String,
    pub events_topic: String,
    /// Between polls; zero turns the poller off (a relay alone feeds the
    /// topic then).
    pub poll_interval: Duration,
    /// How far behind the host clock the poller reads.
    pub poll_settle: Duration,
    pub poll_page_size: usize,
}

impl SalesforceInboundConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let poll_page_size: usize = env.parsed("SALESFORCE_POLL_PAGE_SIZE", 200)?;
        // queryAll returns at most 2,000 records a page.
        if !(1..=2000).contains(&poll_page_size) {
            return Err(ConfigError::Invalid {
                name: "SALESFORCE_POLL_PAGE_SIZE",
                reason: "must be between 1 and 2000".into(),
            });
        }
        Ok(Self {
            metrics_addr: metrics_addr(env, 9107)?,
            database: DatabaseConfig::load(env)?,
            kafka: KafkaConfig::load(env)?,
            salesforce: SalesforceConfig::required(env)?,
            consumer_group: salesforce_inbound_group(env).to_owned(),
            events_topic: salesforce_events_topic(env).to_owned(),
            poll_interval: Duration::from_millis(
                env.parsed("SALESFORCE_POLL_INTERVAL_MS", 10_000)?,
            ),
            poll_settle: Duration::from_millis(env.parsed("SALESFORCE_POLL_SETTLE_MS", 2_000)?),
            poll_page_size,
        })
    }

    pub fn dead_letter_topic(&self) -> String {
        topics::dead_letter_for(&self.events_topic)
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
    /// Payload bytes that end a lane's batch: the message that reaches them
    /// is its last, so a batch exceeds them by less than one message.
    pub batch_bytes: usize,
    /// How long to wait for more messages to fill a batch once one arrived.
    pub batch_wait: Duration,
    /// Lanes applying at once, each with its own batches, transactions and
    /// connection; a partition always goes to the same lane.
    pub apply_lanes: usize,
    /// Pass the customer changes Stripe reports on to the other services:
    /// on when Salesforce is configured (`SALESFORCE_INSTANCE_URL`).
    pub fan_out: FanOut,
    /// `STRIPE_EVENTS_RETENTION`: the raw events are kept in
    /// `stripe.events` unless it is `off`.
    pub events_retention: Option<Duration>,
}

/// `INBOUND_BATCH_SIZE` unless set: the longest batch, reached by small
/// events (a burst of customer updates) before their bytes fill it.
pub const DEFAULT_INBOUND_BATCH_SIZE: usize = 1000;

/// The longest batch allowed: a batch's multi-row inserts bind up to 9
/// parameters an event, and Postgres takes at most 65,535 in a statement.
pub const MAX_INBOUND_BATCH_SIZE: usize = 5000;

/// `INBOUND_BATCH_BYTES` unless set. A lane's memory follows the bytes of
/// the batch it holds (parsed objects and their binds): what 200 events of
/// the bench's type mix weigh (2.5 KB each on average) keeps the memory
/// measured with batches of 200, while its customer updates (835 bytes)
/// come 600 to a batch (docs/src/performance.md).
pub const DEFAULT_INBOUND_BATCH_BYTES: usize = 512 * 1024;

/// `INBOUND_APPLY_LANES` unless set: one per core, as Postgres and the
/// worker take turns within a lane and a second lane overlaps them, and
/// never more than the pool has connections for.
pub fn default_apply_lanes(pool_size: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, pool_size.max(1))
}

impl InboundConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let batch_size: usize = env.parsed("INBOUND_BATCH_SIZE", DEFAULT_INBOUND_BATCH_SIZE)?;
        if !(1..=MAX_INBOUND_BATCH_SIZE).contains(&batch_size) {
            return Err(ConfigError::Invalid {
                name: "INBOUND_BATCH_SIZE",
                reason: format!("must be between 1 and {MAX_INBOUND_BATCH_SIZE}"),
            });
        }
        let batch_bytes: usize = env.parsed("INBOUND_BATCH_BYTES", DEFAULT_INBOUND_BATCH_BYTES)?;
        if batch_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "INBOUND_BATCH_BYTES",
                reason: "must be at least 1".into(),
            });
        }
        let database = DatabaseConfig::load(env)?;
        let apply_lanes: usize = env.parsed(
            "INBOUND_APPLY_LANES",
            default_apply_lanes(database.pool_size as usize),
        )?;
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
            batch_bytes,
            batch_wait: Duration::from_millis(env.parsed("INBOUND_BATCH_WAIT_MS", 5)?),
            apply_lanes,
            fan_out: if SalesforceConfig::is_configured(env) {
                FanOut::ToOtherServices
            } else {
                FanOut::Off
            },
            events_retention: super::events_retention(env)?,
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
    pub commands: CommandsConfig,
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
            commands: CommandsConfig::load(env),
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

pub fn salesforce_outbound_group(env: &Env) -> &str {
    env.or(
        "SALESFORCE_OUTBOUND_CONSUMER_GROUP",
        "stripe-sync.salesforce-outbound",
    )
}

/// `workers/salesforce-outbound`: local customer changes to Salesforce.
#[derive(Debug, Clone)]
pub struct SalesforceOutboundConfig {
    pub metrics_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub changes: ChangesConfig,
    pub salesforce: SalesforceConfig,
    pub consumer_group: String,
}

impl SalesforceOutboundConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            metrics_addr: metrics_addr(env, 9106)?,
            database: DatabaseConfig::load(env)?,
            kafka: KafkaConfig::load(env)?,
            changes: ChangesConfig::load(env),
            salesforce: SalesforceConfig::required(env)?,
            consumer_group: salesforce_outbound_group(env).to_owned(),
        })
    }

    pub fn dead_letter_topic(&self) -> String {
        topics::salesforce_dead_letters(&self.changes.topic)
    }
}

pub fn commands_group(env: &Env) -> &str {
    env.or("COMMANDS_CONSUMER_GROUP", "stripe-sync.stripe-commands")
}

/// `workers/stripe-commands`: carries out queued refunds.
#[derive(Debug, Clone)]
pub struct CommandsWorkerConfig {
    pub metrics_addr: SocketAddr,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub commands: CommandsConfig,
    pub stripe: StripeApiConfig,
    pub consumer_group: String,
}

impl CommandsWorkerConfig {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            metrics_addr: metrics_addr(env, 9105)?,
            database: DatabaseConfig::load(env)?,
            kafka: KafkaConfig::load(env)?,
            commands: CommandsConfig::load(env),
            stripe: StripeApiConfig::load(env)?,
            consumer_group: commands_group(env).to_owned(),
        })
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

    /// A rate is 0 (unlimited) or one a clock can hold a window of; a
    /// negative, tiny or absurd one is refused by name.
    #[test]
    fn the_stripe_rate_limit_is_zero_or_a_usable_rate() {
        let stripe = |rate: &str| {
            StripeApiConfig::load(&Env::from_pairs([
                ("STRIPE_API_KEY", "sk_test"),
                ("STRIPE_RATE_LIMIT", rate),
            ]))
        };
        for ok in ["0", "0.5", "25", "80"] {
            assert!(stripe(ok).is_ok(), "{ok}");
        }
        for bad in ["-1", "1e-10", "1e9", "NaN"] {
            let err = stripe(bad).unwrap_err().to_string();
            assert!(err.contains("STRIPE_RATE_LIMIT"), "{bad}: {err}");
        }
    }

    /// stripe-inbound keeps the raw events 30 days unless told otherwise;
    /// `off` keeps none, and a value that is neither is refused by name.
    #[test]
    fn the_raw_events_retention_is_a_duration_or_off() {
        let inbound = |retention: Option<&str>| {
            let mut pairs = vec![
                ("DATABASE_URL", "postgres://x"),
                ("KAFKA_BROKERS", "b:9092"),
                ("STRIPE_API_KEY", "sk_test"),
            ];
            pairs.extend(retention.map(|r| ("STRIPE_EVENTS_RETENTION", r)));
            InboundConfig::load(&Env::from_pairs(pairs))
        };
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        assert_eq!(inbound(None).unwrap().events_retention, days(30));
        assert_eq!(inbound(Some("7d")).unwrap().events_retention, days(7));
        assert_eq!(inbound(Some("off")).unwrap().events_retention, None);
        for bad in ["0d", "forever", "30"] {
            let err = inbound(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("STRIPE_EVENTS_RETENTION"), "{bad:?}: {err}");
        }
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
    fn the_mirror_query_timeout_is_a_bound() {
        let env = serve_env();
        let of = |raw: &str| {
            ServeConfig::load(&env.with("MIRROR_QUERY_TIMEOUT_MS", raw))
                .map(|c| c.mirror_query_timeout)
        };
        assert_eq!(
            ServeConfig::load(&env).unwrap().mirror_query_timeout,
            Duration::from_millis(DEFAULT_MIRROR_QUERY_TIMEOUT_MS)
        );
        assert_eq!(of("250"), Ok(Duration::from_millis(250)));
        assert_eq!(of("2147483647"), Ok(Duration::from_millis(2_147_483_647)));
        assert_eq!(of("100"), Ok(Duration::from_millis(100)));
        // 0 would be Postgres's "no timeout", under 100 ms a round trip
        // would pass for the budget; past i32::MAX, SET refuses it.
        for raw in ["0", "99", "2147483648", "-1", "5s"] {
            assert!(
                matches!(
                    of(raw),
                    Err(ConfigError::Invalid {
                        name: "MIRROR_QUERY_TIMEOUT_MS",
                        ..
                    })
                ),
                "{raw}"
            );
        }
    }

    #[test]
    fn compression_is_one_of_librdkafkas_codecs() {
        let env = serve_env();
        let of = |raw: &str| {
            ServeConfig::load(&env.with("KAFKA_COMPRESSION", raw)).map(|c| c.kafka.compression)
        };
        assert_eq!(
            ServeConfig::load(&env).unwrap().kafka.compression,
            DEFAULT_COMPRESSION
        );
        assert_eq!(of("none"), Ok(Compression::None));
        assert_eq!(of("ZSTD"), Ok(Compression::Zstd));
        assert!(matches!(
            of("brotli"),
            Err(ConfigError::Invalid { name: "KAFKA_COMPRESSION", reason }) if reason.contains("lz4")
        ));
    }

    #[test]
    fn the_admin_token_is_optional_long_and_not_the_api_token() {
        let with = |admin: Option<&'static str>| {
            let mut pairs = vec![
                ("DATABASE_URL", "postgres://localhost/x"),
                ("KAFKA_BROKERS", "localhost:9092"),
                ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
                ("API_TOKEN", "0123456789abcdef"),
            ];
            if let Some(token) = admin {
                pairs.push(("ADMIN_TOKEN", token));
            }
            ServeConfig::load(&Env::from_pairs(pairs))
        };
        assert!(with(None).unwrap().admin_token.is_none());
        assert!(with(Some("admin-0123456789ab"))
            .unwrap()
            .admin_token
            .is_some());
        assert!(with(Some("short")).is_err());
        assert!(
            with(Some("0123456789abcdef")).is_err(),
            "the same as API_TOKEN"
        );
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
        // Unset: one per core, within the pool.
        let unset = InboundConfig::load(&Env::from_pairs([
            ("DATABASE_URL", "postgres://x"),
            ("KAFKA_BROKERS", "b:9092"),
            ("STRIPE_API_KEY", "sk_test_x"),
            ("DATABASE_POOL_SIZE", "1"),
        ]))
        .unwrap();
        assert_eq!(unset.apply_lanes, 1);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(default_apply_lanes(64), cores.min(64));
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
    fn a_batch_is_bounded_by_count_and_bytes_both_at_least_one() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![
                ("DATABASE_URL", "postgres://x"),
                ("KAFKA_BROKERS", "b:9092"),
                ("STRIPE_API_KEY", "sk_test_x"),
            ];
            all.extend_from_slice(pairs);
            InboundConfig::load(&Env::from_pairs(all))
        };
        let unset = with(&[]).unwrap();
        assert_eq!(
            (unset.batch_size, unset.batch_bytes),
            (DEFAULT_INBOUND_BATCH_SIZE, DEFAULT_INBOUND_BATCH_BYTES)
        );
        let set = with(&[("INBOUND_BATCH_SIZE", "7"), ("INBOUND_BATCH_BYTES", "4096")]).unwrap();
        assert_eq!((set.batch_size, set.batch_bytes), (7, 4096));
        for (name, bad) in [
            ("INBOUND_BATCH_SIZE", "0"),
            ("INBOUND_BATCH_SIZE", "5001"),
            ("INBOUND_BATCH_BYTES", "0"),
            ("INBOUND_BATCH_BYTES", "1MiB"),
            ("INBOUND_BATCH_BYTES", "-1"),
        ] {
            let err = with(&[(name, bad)]).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={bad}: {err}");
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

    #[test]
    fn salesforce_is_off_unless_configured_and_names_what_is_missing() {
        let base = Env::from_pairs([
            ("DATABASE_URL", "postgres://x"),
            ("KAFKA_BROKERS", "b:9092"),
        ]);
        assert!(SalesforceConfig::load(&base).unwrap().is_none());
        assert!(matches!(
            SalesforceOutboundConfig::load(&base),
            Err(ConfigError::Missing("SALESFORCE_INSTANCE_URL"))
        ));
        let url = base.with("SALESFORCE_INSTANCE_URL", "https://acme.my.salesforce.com/");
        assert!(matches!(
            SalesforceOutboundConfig::load(&url),
            Err(ConfigError::Missing("SALESFORCE_CLIENT_ID"))
        ));
        let full = url
            .with("SALESFORCE_CLIENT_ID", "3MVG9-id")
            .with("SALESFORCE_CLIENT_SECRET", "sf-topsecret");
        let cfg = SalesforceOutboundConfig::load(&full).unwrap();
        assert_eq!(
            cfg.salesforce.instance_url,
            "https://acme.my.salesforce.com"
        );
        assert_eq!(cfg.salesforce.api_version, "61.0");
        assert_eq!(cfg.salesforce.external_id_field, "StripeSync_Id__c");
        assert_eq!(cfg.consumer_group, "stripe-sync.salesforce-outbound");
        assert_eq!(
            cfg.dead_letter_topic(),
            "customers.changes.v1.salesforce.dlq"
        );
        assert!(!format!("{cfg:?}").contains("sf-topsecret"));
        assert_eq!(
            SalesforceConfig::load(&full.with("SALESFORCE_API_VERSION", "v62.0"))
                .unwrap()
                .unwrap()
                .api_version,
            "62.0"
        );
        for (name, bad) in [
            ("SALESFORCE_INSTANCE_URL", "acme.my.salesforce.com"),
            ("SALESFORCE_API_VERSION", "latest"),
            ("SALESFORCE_EXTERNAL_ID_FIELD", "Id/../Account"),
        ] {
            assert!(
                matches!(
                    SalesforceConfig::load(&full.with(name, bad)),
                    Err(ConfigError::Invalid { name: n, .. }) if n == name
                ),
                "{name}={bad}"
            );
        }
    }
}
