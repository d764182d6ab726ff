//! What an operator can see and do, in one place: `/api/admin/*` answers
//! it as JSON and the console draws it as pages, so the page holds no
//! power the API lacks and both read the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::history::History;
use super::overview::{self, Overview, ProcessEndpoint, ProcessHealth};
use super::topics::{self, NoSuchTopic, TailFrom, TailedMessage};
use super::{commands, dlq, Inventory};
use crate::apps::credits::ledger;
use crate::apps::orders::export::{self, ExportState};
use crate::apps::orders::notifications::{self, Notification, NotificationStatus};
use crate::apps::payments::refund_requests::{self, RefundRequest, RefundRequestStatus};
use crate::customers::sync_state::{self, NeedsAttention, Status};
use crate::customers::CustomerId;
use crate::db::PgPool;
use crate::health::Health;
use crate::kafka::EventProducer;

/// The most messages a search for one key returns.
pub const FOUND_MAX: usize = 200;
/// The most messages a tail reads per partition.
pub const TAIL_MAX: i64 = 1000;
/// How long a search for one key reads before answering with what it
/// found: a request must not hold a Kafka client over a large topic.
pub const SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// Messages read, and whether the read covered everything asked for
/// (false: it stopped at [`FOUND_MAX`] or [`SEARCH_BUDGET`]).
#[derive(Debug, serde::Serialize)]
pub struct Found {
    pub messages: Vec<TailedMessage>,
    pub complete: bool,
}

/// Everything the operators' routes and pages need; clones share it.
#[derive(Clone)]
pub struct Operator {
    pub inv: Inventory,
    pub pool: PgPool,
    pub producer: EventProducer,
    /// Serve's own readiness.
    pub health: Health,
    /// The workers whose `/readyz` the overview reads.
    pub processes: Arc<Vec<ProcessEndpoint>>,
    pub history: History,
}

impl Operator {
    pub async fn overview(&self) -> anyhow::Result<Overview> {
        let (ready, report) = crate::http::health::report(
            self.pool.clone(),
            self.producer.clone(),
            self.health.clone(),
            true,
        )
        .await;
        let own = ProcessHealth {
            name: "serve".into(),
            url: None,
            status: if ready { "ready" } else { "not_ready" }.into(),
            report: Some(report),
        };
        overview::gather(&self.inv, &self.pool, &self.processes, own, &self.history).await
    }

    pub async fn topics(&self) -> anyhow::Result<Vec<topics::TopicInfo>> {
        let inv = self.inv.clone();
        tokio::task::spawn_blocking(move || topics::list(&inv.brokers, &inv.topics())).await?
    }

    /// The last `last` messages of each partition of one of our topics, or,
    /// with `key`, every message under that key (an object's id, a
    /// customer's id), oldest first per partition, at most [`FOUND_MAX`]
    /// within [`SEARCH_BUDGET`].
    pub async fn messages(
        &self,
        topic: &str,
        last: i64,
        key: Option<String>,
    ) -> anyhow::Result<Found> {
        if !self.inv.topics().iter().any(|t| t == topic) {
            return Err(NoSuchTopic(topic.to_owned()).into());
        }
        let (brokers, topic) = (self.inv.brokers.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let from = match key {
                Some(_) => TailFrom::Beginning,
                None => TailFrom::Last(last.clamp(1, TAIL_MAX)),
            };
            // Set when the budget runs out (by the watch below) or enough
            // was found; `tail` looks at it between polls.
            let stop = Arc::new(AtomicBool::new(false));
            let finished = Arc::new(AtomicBool::new(false));
            let budget_spent = Arc::new(AtomicBool::new(false));
            {
                let (stop, finished, spent) =
                    (stop.clone(), finished.clone(), budget_spent.clone());
                std::thread::spawn(move || {
                    let started = std::time::Instant::now();
                    while !finished.load(Ordering::Relaxed) {
                        if started.elapsed() >= SEARCH_BUDGET {
                            spent.store(true, Ordering::Release);
                            stop.store(true, Ordering::Release);
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                });
            }
            let mut found = Vec::new();
            let read = topics::tail(&brokers, &topic, from, key.as_deref(), false, &stop, |m| {
                found.push(TailedMessage::from_message(m));
                if found.len() >= FOUND_MAX {
                    stop.store(true, Ordering::Relaxed);
                }
            });
            finished.store(true, Ordering::Relaxed);
            read?;
            let complete = found.len() < FOUND_MAX && !budget_spent.load(Ordering::Acquire);
            Ok(Found {
                messages: found,
                complete,
            })
        })
        .await?
    }

    /// The last `last` dead letters of each dead-letter partition.
    pub async fn dead_letters(&self, last: i64) -> anyhow::Result<Vec<dlq::DeadLetter>> {
        let (inv, pool) = (self.inv.clone(), self.pool.clone());
        tokio::task::spawn_blocking(move || {
            dlq::list(
                &inv.brokers,
                &mut *pool.get()?,
                &inv.dead_letter_topics(),
                TailFrom::Last(last),
            )
        })
        .await?
    }

    /// One dead letter; `None` when it is not on one of our dead-letter
    /// topics.
    pub async fn dead_letter(&self, id: &str) -> anyhow::Result<Option<dlq::DeadLetter>> {
        let (inv, pool, id) = (self.inv.clone(), self.pool.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || {
            let ours = dlq::parse_id(&id)
                .is_some_and(|(topic, _, _)| inv.dead_letter_topics().contains(&topic));
            if !ours {
                return Ok(None);
            }
            dlq::get(&inv.brokers, &mut *pool.get()?, &id)
        })
        .await?
    }

    /// Replays the chosen dead letters; all are looked up before any is
    /// replayed, so one unknown id replays none.
    pub async fn replay(&self, ids: Vec<String>) -> anyhow::Result<Vec<String>> {
        commands::dlq_replay(
            &self.inv,
            &self.pool,
            &self.producer,
            commands::Selection::Ids(ids),
        )
        .await
    }

    /// The services customers are synced to here.
    pub fn sync_services(&self) -> Vec<&'static str> {
        super::sync::services(&self.inv)
    }

    /// Customers pending or failed at each of `services`.
    pub async fn sync_attention(
        &self,
        services: Vec<&'static str>,
        status: Option<Status>,
        limit: i64,
    ) -> anyhow::Result<Vec<NeedsAttention>> {
        self.read(move |conn| {
            let mut out = Vec::new();
            for service in services {
                out.extend(sync_state::needing_attention(conn, service, status, limit)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn sync_retry(
        &self,
        customer: CustomerId,
        service: &str,
    ) -> Result<String, super::sync::RetryError> {
        super::sync::retry(&self.inv, &self.pool, &self.producer, customer, service).await
    }

    pub async fn exports(&self) -> anyhow::Result<Vec<ExportState>> {
        self.read(|conn| Ok(export::list(conn)?)).await
    }

    /// A customer's credit balance and newest `limit` transactions; `None`
    /// for an unknown customer.
    pub async fn credits(
        &self,
        customer: CustomerId,
        limit: i64,
    ) -> anyhow::Result<Option<ledger::History>> {
        self.read(move |conn| {
            if !crate::customers::exists(conn, customer)? {
                return Ok(None);
            }
            Ok(Some(ledger::history(conn, customer, limit, None)?))
        })
        .await
    }

    pub async fn refund_requests(
        &self,
        status: Option<RefundRequestStatus>,
        limit: i64,
    ) -> anyhow::Result<Vec<RefundRequest>> {
        self.read(move |conn| Ok(refund_requests::list(conn, status, limit)?))
            .await
    }

    pub async fn notifications(
        &self,
        status: Option<NotificationStatus>,
        limit: i64,
    ) -> anyhow::Result<Vec<Notification>> {
        self.read(move |conn| Ok(notifications::list(conn, status, limit)?))
            .await
    }

    /// Queues a failed order email again (`notifications::retry`).
    pub async fn retry_notification(
        &self,
        id: i64,
    ) -> anyhow::Result<Result<Notification, notifications::RetryError>> {
        self.read(move |conn| Ok(notifications::retry(conn, id)))
            .await
    }

    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut diesel::PgConnection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || op(&mut *pool.get()?)).await?
    }
}
