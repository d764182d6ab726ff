//! `workers/order-notifier`'s configuration.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use lettre::message::Mailbox;

use super::*;
use crate::apps::orders::settings::{self, SmtpUrl};
use crate::kafka::topics;

/// `NOTIFY_UNKNOWN_OUTCOME_WAIT_MS` unless set: 10 minutes.
pub const DEFAULT_UNKNOWN_OUTCOME_WAIT_MS: u64 = 600_000;

/// The longest an SMTP server may take over either half of a delivery.
pub const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// The wait before another attempt at an email whose message went out
    /// and got no answer (`NOTIFY_UNKNOWN_OUTCOME_WAIT_MS`, default 10
    /// minutes, the wait RFC 5321 §4.5.3.2.6 gives a server for its reply
    /// to the end of the message): the server may have it, and a quick
    /// retry would send it again each time the server is slow.
    pub unknown_outcome_wait: Duration,
    /// `SHUTDOWN_GRACE_SECS`: a message under way when the process is told
    /// to stop should be answered and recorded within it.
    pub shutdown_grace: Duration,
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
            to: settings::parse_mailboxes(env.required("NOTIFY_EMAIL_TO")?)
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
            unknown_outcome_wait: Duration::from_millis(env.parsed(
                "NOTIFY_UNKNOWN_OUTCOME_WAIT_MS",
                DEFAULT_UNKNOWN_OUTCOME_WAIT_MS,
            )?),
            shutdown_grace: shutdown_grace(env)?,
        })
    }

    /// How long each half of an SMTP delivery (connecting up to the
    /// recipients; the message itself) may take: half the lease at most,
    /// so that a message that goes out right after its lease was renewed
    /// leaves half the lease to record the outcome in; and at most
    /// [`MAX_SEND_TIMEOUT`], so that a message under way when the process
    /// is told to stop is answered and recorded within the default
    /// `SHUTDOWN_GRACE_SECS` (30).
    pub fn send_timeout(&self) -> Duration {
        (self.lease / 2).min(MAX_SEND_TIMEOUT)
    }

    /// Where the notifier parks events whose email the server refused.
    pub fn dead_letter_topic(&self) -> String {
        topics::notifier_dead_letters(&self.kafka.events_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cfg.send_timeout(), Duration::from_secs(20));
        assert_eq!(cfg.unknown_outcome_wait, Duration::from_secs(600));
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
}
