//! `workers/order-notifier`: one email per paid order.
//!
//! Two halves share the `orders.notifications` table. The consume half
//! reads `stripe.events.v1` in its own group through the same
//! at-least-once loop as every worker, recognises paid orders, reads their
//! complete line items (mirror first, else Stripe), applies the product
//! filter and claims one row per order, keyed by the order (a session, or
//! a subscription for its first order); duplicates, the second event of a
//! session, replays and renewals find the row there and add nothing. The
//! send half takes due rows, sends each over SMTP with a `Message-ID`
//! derived from the order, and marks it sent; a transient failure
//! reschedules that row with backoff while events keep being consumed, a
//! refusal marks it failed and dead-letters its event.
//!
//! Each taken row is leased to its sender under a token (see
//! [`notifications`]). The sender renews the lease after the server took
//! the recipients and right before `DATA`, and sends the message only if
//! the row is still its own; it records the outcome only as the lease's
//! holder. So a sender held up past its lease (a tarpit, a paused
//! process) leaves the email to the sender that took it over, and its late
//! result never overwrites that one's.
//!
//! Right before the message is written the sender checks again: not
//! stopping, and not later since the renewal began than half of what the
//! lease leaves beyond the message's timeout ([`start_within`]); else it
//! lets the row go unsent (`held_back`). A message that went out without
//! an answer (a timeout, a connection lost) may well be at the server: the
//! row is let go with a long wait (`NOTIFY_UNKNOWN_OUTCOME_WAIT_MS`), not
//! the quick backoff of a failure before the message.
//!
//! The windows no lease can close: once the message has gone out, the
//! outcome must reach the database within the lease. A crash there, a
//! pause while the message is being written, or a database away for
//! longer than the lease sends it again once the lease runs out
//! (`NOTIFY_LEASE_MS`); a server that answers after the timeout gets it
//! again after the long wait. Each copy has the same `Message-ID`, which
//! mail clients and most servers use to drop it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use diesel::Connection;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::email;
use super::notifications::{self, AsHolder, Due, Lease, NewNotification};
use super::order::{self, PaidOrder};
use super::smtp::{Mailer, SendError};
use crate::apply::{ApplyError, RemoteReader};
use crate::config::NotifierConfig;
use crate::db::{self, PgPool};
use crate::inbound::{parse_delivery, StripeRemote};
use crate::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome, Transient};
use crate::kafka::envelope::{self, event_headers};
use crate::kafka::EventProducer;
use crate::metrics;
use crate::retry::{sleep_or_shutdown, Backoff};
use crate::stripe::platforms::KeyRing;
use crate::stripe::EventEnvelope;
use crate::worker;

/// The consume half: claims one notification per paid order.
pub struct OrderHandler {
    pool: PgPool,
    remote: Arc<dyn RemoteReader>,
    products: Option<HashSet<String>>,
    /// The sender's `Message-ID` domain.
    domain: String,
    /// Our dead-letter topic: an event replayed from it retries its order.
    dead_letter_topic: String,
    wake: Arc<Notify>,
}

impl OrderHandler {
    pub fn new(
        pool: PgPool,
        remote: Arc<dyn RemoteReader>,
        products: Option<HashSet<String>>,
        domain: &str,
        dead_letter_topic: &str,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            remote,
            products,
            domain: domain.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            wake,
        }
    }

    fn replayed_from_ours(&self, d: &Delivery) -> bool {
        envelope::header(&d.headers, envelope::H_REPLAYED_FROM)
            .is_some_and(|from| from.starts_with(&format!("{}:", self.dead_letter_topic)))
    }
}

/// A paid order ready to claim.
struct Claim {
    order: PaidOrder,
    event_id: String,
    /// The event as received, kept to dead-letter it if its email is refused.
    raw: serde_json::Value,
    items: Vec<serde_json::Value>,
    replayed: bool,
}

impl BatchHandler for OrderHandler {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        let mut conn = self.pool.get()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut claims: Vec<Claim> = Vec::new();
        for d in batch {
            let event = match parse_delivery(d) {
                Ok(event) => event,
                Err(reason) => {
                    outcomes.push(Outcome::DeadLetter(reason));
                    continue;
                }
            };
            outcomes.push(Outcome::Done);
            let Some(order) = order::paid_order(&event) else {
                continue;
            };
            // Its items may be read from Stripe, with its platform's key.
            self.remote
                .note_platform(&event.account, &event.platform)
                .map_err(ApplyError::into_retry)?;
            let replayed = self.replayed_from_ours(d);
            // Another event of an order already claimed (its duplicate, the
            // session's other event, a renewal): no need to read its items.
            if !replayed
                && (claims
                    .iter()
                    .any(|c| c.order.account == order.account && c.order.key == order.key)
                    || notifications::exists(&mut conn, &order.account, &order.key)?)
            {
                continue;
            }
            let items = match order::line_items(
                &mut conn,
                self.remote.as_ref(),
                &order.account,
                &order.session_id,
            ) {
                Ok(items) => items,
                Err(e @ ApplyError::Transient { .. }) => return Err(e.into_retry()),
                Err(ApplyError::Permanent(reason)) => {
                    *outcomes.last_mut().expect("pushed above") = Outcome::DeadLetter(format!(
                        "{} {}: cannot read the line items of {}: {reason}",
                        event.kind, event.id, order.session_id
                    ));
                    continue;
                }
            };
            if let Some(products) = &self.products {
                if !order::has_product(&items, products) {
                    tracing::debug!(checkout.session = %order.session_id, "order has none of NOTIFY_PRODUCT_IDS");
                    continue;
                }
            }
            let raw = serde_json::from_slice(d.payload.as_deref().unwrap_or_default())?;
            claims.push(Claim {
                order,
                event_id: event.id.as_str().to_owned(),
                raw,
                items,
                replayed,
            });
        }
        if claims.is_empty() {
            return Ok(outcomes);
        }
        let claimed = conn.transaction(|conn| {
            let mut claimed = 0;
            for c in &claims {
                let new = NewNotification {
                    account: &c.order.account,
                    order_key: &c.order.key,
                    session_id: &c.order.session_id,
                    event_id: &c.event_id,
                    event: &c.raw,
                    order_data: json!({"session": c.order.session, "line_items": c.items}),
                    message_id: email::message_id(&c.order.account, &c.order.key, &self.domain),
                };
                if notifications::claim(conn, &new)? {
                    claimed += 1;
                } else if c.replayed && notifications::requeue_failed(conn, &c.order.account, &c.order.key)? {
                    tracing::info!(order = %c.order.key, "failed notification queued again by a replay");
                    claimed += 1;
                }
            }
            Ok::<_, diesel::result::Error>(claimed)
        })?;
        metrics::NOTIFICATIONS
            .with_label_values(&["claimed"])
            .inc_by(claimed);
        if claimed > 0 {
            self.wake.notify_one();
        }
        Ok(outcomes)
    }
}

/// The send half: delivers due notifications until shutdown.
pub struct Sender {
    /// Which platform each account is read with: a dead letter carries its
    /// event's platform, so a replay is applied under it again.
    pub platforms: Arc<KeyRing>,
    pub pool: PgPool,
    pub mailer: Mailer,
    pub producer: EventProducer,
    pub events_topic: String,
    pub dead_letter_topic: String,
    pub poll_interval: Duration,
    pub retry_max: Duration,
    /// How long a taken notification is this sender's alone; renewed right
    /// before the message goes out, and at least twice what sending the
    /// message may take (`NotifierConfig::send_timeout`).
    pub lease: Duration,
    /// The wait before another attempt at an email whose message went out
    /// without an answer (`NOTIFY_UNKNOWN_OUTCOME_WAIT_MS`): the server
    /// may have it, so no quick retry.
    pub unknown_outcome_wait: Duration,
    pub wake: Arc<Notify>,
}

/// What became of one attempt at an email.
enum Attempt {
    Sent,
    /// A transient failure: again after a wait.
    Retry(String),
    /// Not sent, the row let go of (stopping, or too late to begin the
    /// message): again after `wait`.
    HeldBack(String, Duration),
    /// The message went out unanswered: again only after the long wait.
    Unknown(String),
    /// Refused for good.
    Failed(String),
}

impl Attempt {
    fn label(&self) -> &'static str {
        match self {
            Attempt::Sent => "sent",
            Attempt::Retry(_) => "retry",
            Attempt::HeldBack(..) => "held_back",
            Attempt::Unknown(_) => "outcome_unknown",
            Attempt::Failed(_) => "failed",
        }
    }
}

impl Sender {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut db_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            // One row at a time, each leased just before it is sent: a row
            // never waits behind others while its lease runs.
            let lease = self.lease;
            let taken = db::blocking(&self.pool, move |conn| -> anyhow::Result<_> {
                Ok(notifications::take_next(conn, lease)?)
            })
            .await;
            match taken {
                Ok(Some(n)) => {
                    db_backoff.reset();
                    self.deliver(n, &shutdown).await;
                }
                Ok(None) => {
                    db_backoff.reset();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.poll_interval) => {}
                    }
                }
                Err(e) => {
                    let wait = db_backoff.next_delay(None);
                    tracing::warn!(error = %format!("{e:#}"), wait_ms = wait.as_millis() as u64, "cannot take a due notification");
                    if sleep_or_shutdown(wait, &shutdown).await {
                        break;
                    }
                }
            }
        }
    }

    async fn deliver(&self, n: Due, shutdown: &CancellationToken) {
        let held = n.lease();
        let session = &n.order_data["session"];
        let items = n.order_data["line_items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mail = email::render(session, items);
        let sent = self
            .mailer
            .send(
                &n.message_id,
                &mail.subject,
                mail.text,
                mail.html,
                shutdown,
                || self.still_ours(held),
            )
            .await;
        let wait = retry_wait(n.attempts, self.retry_max);
        let attempt = match sent {
            Ok(()) => {
                tracing::info!(notification.id = n.id, order = %n.order_key, "order email sent");
                Attempt::Sent
            }
            Err(SendError::Withheld) => {
                tracing::warn!(notification.id = n.id, order = %n.order_key, "lease lost before the email went out; it is another sender's now, not sent here");
                metrics::NOTIFICATIONS
                    .with_label_values(&["lease_lost"])
                    .inc();
                return;
            }
            Err(SendError::HeldBack(e)) => {
                // Due again at once when stopping: another notifier (or
                // this one, restarted) takes it without waiting.
                let wait = if shutdown.is_cancelled() {
                    Duration::ZERO
                } else {
                    wait
                };
                tracing::warn!(notification.id = n.id, order = %n.order_key, wait_ms = wait.as_millis() as u64, reason = %e, "order email held back before the message went out; the row is let go");
                Attempt::HeldBack(format!("held back before the message: {e}"), wait)
            }
            Err(SendError::Unknown(e)) => {
                let wait = self.unknown_outcome_wait;
                tracing::warn!(notification.id = n.id, order = %n.order_key, wait_ms = wait.as_millis() as u64, error = %e, "order email went out without an answer; the server may have it, so it is tried again only after a long wait");
                Attempt::Unknown(format!(
                    "outcome unknown, not tried again for {} s: {e}",
                    wait.as_secs()
                ))
            }
            Err(SendError::Transient(e)) => {
                tracing::warn!(notification.id = n.id, order = %n.order_key, attempts = n.attempts, wait_ms = wait.as_millis() as u64, error = %e, "order email not sent, will retry");
                Attempt::Retry(e)
            }
            Err(SendError::Permanent(e)) => {
                tracing::error!(notification.id = n.id, order = %n.order_key, error = %e, "order email refused; notification failed");
                Attempt::Failed(e)
            }
        };
        let label = attempt.label();
        let recorded = match &attempt {
            Attempt::Sent => {
                self.record(shutdown, move |c| notifications::mark_sent(c, held))
                    .await
            }
            Attempt::Retry(e) | Attempt::HeldBack(e, _) | Attempt::Unknown(e) => {
                // Let go of the row, due again after the wait that fits.
                let wait = match &attempt {
                    Attempt::HeldBack(_, held_back) => *held_back,
                    Attempt::Unknown(_) => self.unknown_outcome_wait,
                    _ => wait,
                };
                let e = e.clone();
                self.record(shutdown, move |c| {
                    notifications::mark_retry(c, held, &e, wait)
                })
                .await
            }
            Attempt::Failed(e) => {
                let e = e.clone();
                self.record(shutdown, move |c| notifications::mark_failed(c, held, &e))
                    .await
            }
        };
        match recorded {
            Some(AsHolder::Applied) => {}
            Some(AsHolder::LeaseLost) => {
                // Its lease ran out and another sender took the row (or an
                // operator queued it again): that one's outcome stands.
                tracing::warn!(notification.id = n.id, order = %n.order_key, outcome = label, "lease lost before the outcome was recorded; left to the row's new holder");
                metrics::NOTIFICATIONS
                    .with_label_values(&["lease_lost"])
                    .inc();
                return;
            }
            // Stopping: the lease brings the row back.
            None => return,
        }
        metrics::NOTIFICATIONS.with_label_values(&[label]).inc();
        if let (Attempt::Failed(e), Some(payload)) = (&attempt, serde_json::to_vec(&n.event).ok()) {
            self.dead_letter(&n, &payload, e).await;
        }
    }

    /// The check right before `DATA`: renews the lease, so that the message
    /// goes out only while the row is this sender's, with a whole lease
    /// ahead to send it and record the outcome. Returns by when the
    /// message must begin to go out: half of what the lease leaves beyond
    /// the message's own timeout, counted from before the renewal (which
    /// sets the lease from a later moment), so that a sender paused
    /// between this check and the message holds it back instead, and the
    /// other half stays for recording the outcome.
    async fn still_ours(&self, held: Lease) -> Result<tokio::time::Instant, SendError> {
        let began = tokio::time::Instant::now();
        let start_by = began + start_within(self.lease, self.mailer.timeout());
        let lease = self.lease;
        let renewed = db::blocking(&self.pool, move |conn| -> anyhow::Result<AsHolder> {
            Ok(notifications::renew(conn, held, lease)?)
        })
        .await;
        match renewed {
            Ok(AsHolder::Applied) => Ok(start_by),
            Ok(AsHolder::LeaseLost) => Err(SendError::Withheld),
            // Unsure whether the row is still ours: not sending is safe.
            Err(e) => Err(SendError::Transient(format!(
                "cannot renew the lease before sending: {e:#}"
            ))),
        }
    }

    /// Records a send's outcome as the lease's holder, retrying while the
    /// database is away, until it is recorded, found to be another's, or
    /// the sender stops (`None`; the row's lease then brings it back).
    /// There is no point in giving up earlier: the write cannot overwrite
    /// another sender's, and an outcome not recorded only sends the email
    /// again once the lease runs out.
    async fn record(
        &self,
        shutdown: &CancellationToken,
        write: impl Fn(&mut diesel::PgConnection) -> diesel::QueryResult<AsHolder>
            + Send
            + Sync
            + 'static,
    ) -> Option<AsHolder> {
        let write = Arc::new(write);
        // Short waits: once the database is back, every moment lost here
        // is one in which the lease may run out and the email go out again.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let write = write.clone();
            let done = db::blocking(&self.pool, move |conn| -> anyhow::Result<AsHolder> {
                Ok(write(conn)?)
            })
            .await;
            match done {
                Ok(held) => return Some(held),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot record a notification's result, retrying")
                }
            }
            if sleep_or_shutdown(backoff.next_delay(None), shutdown).await {
                return None;
            }
        }
    }

    /// Parks the order's event on the notifier's dead-letter topic, where
    /// `dlq list` shows it and `dlq replay` queues the email again.
    async fn dead_letter(&self, n: &Due, payload: &[u8], error: &str) {
        metrics::note_error(format!("order email {} refused: {error}", n.id));
        let platform = self.platforms.platform_of(&n.account);
        let headers = match EventEnvelope::parse_for(payload, &platform) {
            Ok(e) => event_headers(&e, "order-notifier"),
            Err(_) => Vec::new(),
        };
        let headers = envelope::dead_letter_headers(&headers, error, &self.events_topic, None);
        let key = n.order_data["session"]["id"].as_str().unwrap_or_default();
        if let Err(e) = self
            .producer
            .send(&self.dead_letter_topic, key.as_bytes(), payload, &headers)
            .await
        {
            // The failure is recorded in Postgres and listed by
            // `notifications list`; only the DLQ copy is missing.
            tracing::error!(notification.id = n.id, error = %e, "cannot dead-letter a refused order email");
        } else {
            metrics::DEAD_LETTERS
                .with_label_values(&[&self.dead_letter_topic])
                .inc();
        }
    }
}

/// How long after its lease was renewed a message may still begin to go
/// out: half of what the lease leaves beyond the message's own timeout.
pub fn start_within(lease: Duration, timeout: Duration) -> Duration {
    lease.saturating_sub(timeout) / 2
}

/// The wait before attempt `attempts + 1`: one second, doubling, at most
/// `max`.
pub fn retry_wait(attempts: i32, max: Duration) -> Duration {
    let doublings = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(1u64 << doublings).min(max)
}

pub async fn run(cfg: NotifierConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let kafka = &cfg.kafka;
    let dead_letter_topic = cfg.dead_letter_topic();
    let worker::Started {
        pool,
        producer,
        health,
    } = worker::start(
        "order-notifier",
        &cfg.database,
        kafka,
        cfg.metrics_addr,
        &[&kafka.events_topic, &dead_letter_topic],
        &shutdown,
    )
    .await?;
    let mailer = Mailer::new(
        &cfg.smtp,
        cfg.from.clone(),
        cfg.to.clone(),
        cfg.send_timeout(),
    )?;
    tracing::info!(smtp = %cfg.smtp.endpoint(), "order emails go out through this server");
    // After a stop is asked for, a message already going out is let finish
    // (its answer, then its record); cut off by the grace, it is sent again.
    if cfg.shutdown_grace < cfg.send_timeout() + Duration::from_secs(5) {
        tracing::warn!(
            shutdown_grace_secs = cfg.shutdown_grace.as_secs(),
            send_timeout_ms = cfg.send_timeout().as_millis() as u64,
            "SHUTDOWN_GRACE_SECS is shorter than the SMTP timeout plus 5 s: a stop during a slow answer to a message can exit before it is recorded, and the email go out again"
        );
    }
    let wake = Arc::new(Notify::new());
    let client = cfg.stripe.client()?;
    let platforms = client.keys().clone();
    let remote = StripeRemote::new(client, tokio::runtime::Handle::current());
    let handler = Arc::new(OrderHandler::new(
        pool.clone(),
        Arc::new(remote),
        cfg.product_ids.clone(),
        mailer.domain(),
        &dead_letter_topic,
        wake.clone(),
    ));
    let sender = Sender {
        platforms,
        pool,
        mailer,
        producer: producer.clone(),
        events_topic: kafka.events_topic.clone(),
        dead_letter_topic: dead_letter_topic.clone(),
        poll_interval: cfg.poll_interval,
        retry_max: cfg.retry_max,
        lease: cfg.lease,
        unknown_outcome_wait: cfg.unknown_outcome_wait,
        wake,
    };
    // Either half ending (shutdown, or the consume loop failing) stops both.
    let stop = shutdown.child_token();
    let sending = tokio::spawn(sender.run(stop.clone()));
    let settings = ConsumeSettings {
        brokers: kafka.brokers.clone(),
        group: cfg.consumer_group.clone(),
        topic: kafka.events_topic.clone(),
        dead_letter_topic,
        batch_size: 100,
        batch_bytes: usize::MAX,
        batch_wait: Duration::from_millis(5),
        lanes: 1,
        fetch_wait: kafka.fetch_wait,
        fetch_max_bytes: kafka.fetch_max_bytes,
        health,
    };
    let consumed = consumer::run(settings, handler, producer, stop.clone()).await;
    stop.cancel();
    sending.await?;
    consumed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_the_maximum() {
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=12).map(|a| retry_wait(a, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(
            retry_wait(1, Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn a_message_begins_within_half_of_what_the_lease_leaves_beyond_its_timeout() {
        let at = |lease_ms, timeout_ms| {
            start_within(
                Duration::from_millis(lease_ms),
                Duration::from_millis(timeout_ms),
            )
        };
        assert_eq!(at(60_000, 20_000), Duration::from_secs(20));
        assert_eq!(at(3_000, 1_500), Duration::from_millis(750));
        assert_eq!(at(1_000, 2_000), Duration::ZERO);
    }
}
