//! The at-least-once consume loop every worker runs.
//!
//! Contract (invariant 3): an offset is stored for commit only after the
//! handler's Postgres transaction for that message has committed, or after
//! the message is safely on the dead-letter topic. Transient failures retry
//! the same batch with backoff and never skip it. A batch is split into
//! lanes by partition and the lanes are applied concurrently; a partition's
//! messages always share one lane, in poll order, and the next batch starts
//! only when every lane of this one is done, so each partition (and with it
//! each object, the partition key) is handled in order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::envelope::{self, HeaderList};
use super::producer::EventProducer;
use crate::metrics;
use crate::retry::Backoff;

/// One consumed message, owned so it can move to the blocking pool.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HeaderList,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect (or its recognised harmlessness) is committed in Postgres.
    Done,
    /// It can never succeed; park it on the dead-letter topic with this error.
    DeadLetter(String),
}

/// A failure worth retrying (database down, Stripe 5xx/429, ...).
#[derive(Debug)]
pub struct Transient {
    pub error: anyhow::Error,
    /// A server-given wait (Stripe's `Retry-After`), honoured over backoff.
    pub retry_after: Option<Duration>,
}

impl<E: Into<anyhow::Error>> From<E> for Transient {
    fn from(e: E) -> Self {
        Self {
            error: e.into(),
            retry_after: None,
        }
    }
}

/// Applies a batch of messages. Runs on tokio's blocking pool, because the
/// database layer is synchronous diesel.
pub trait BatchHandler: Send + Sync + 'static {
    /// Returns exactly one outcome per delivery, in order, or a transient
    /// error meaning nothing of the batch was committed.
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient>;
}

#[derive(Debug, Clone)]
pub struct ConsumeSettings {
    pub brokers: String,
    pub group: String,
    pub topic: String,
    pub dead_letter_topic: String,
    /// Messages per batch, at most, whatever the lanes (this bounds the
    /// worker's memory).
    pub batch_size: usize,
    pub batch_wait: Duration,
    /// Lanes applied concurrently (each on its own database connection).
    pub lanes: usize,
    /// `fetch.wait.max.ms`: see `KafkaConfig::fetch_wait`.
    pub fetch_wait: Duration,
}

/// Logs group rebalances and tracks whether the group join completed;
/// librdkafka commits the stored offsets of revoked partitions itself
/// because auto-commit is on.
#[derive(Default)]
struct GroupContext {
    joined: AtomicBool,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked")
            }
            Rebalance::Assign(tpl) => {
                self.joined.store(true, AtomicOrdering::Relaxed);
                tracing::info!(partitions = %describe(tpl), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Not fatal: the next commit carries the same or later offsets.
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// How every worker fetches: the settings that decide its latency, its
/// throughput from a backlog and its memory (the benchmark measures the
/// broker's consume ceiling with the same).
pub fn fetch_config(brokers: &str, fetch_wait: Duration) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        // Prefetch at most 8 MiB (default 64 MiB): a batch is far smaller,
        // and a worker catching up on a backlog should not hold the
        // backlog in memory.
        .set("queued.max.messages.kbytes", "8192");
    config
}

/// Runs until `shutdown` fires, then finishes the batch in hand, commits and
/// returns.
pub async fn run<H: BatchHandler>(
    settings: ConsumeSettings,
    handler: Arc<H>,
    dead_letters: EventProducer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer<GroupContext> =
        fetch_config(&settings.brokers, settings.fetch_wait)
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // We store offsets ourselves, after the apply committed.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Also the rebalance timeout: how long the coordinator waits for
            // members to rejoin. A member that leaves mid-join (stopped while
            // starting) would otherwise stall the group for the default 5 min.
            .set("max.poll.interval.ms", "30000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(GroupContext::default())?;
    consumer.subscribe(&[&settings.topic])?;
    let progress: Progress = Arc::default();
    spawn_lag_reporter(&settings, progress.clone(), shutdown.clone())?;
    tracing::info!(kafka.topic = %settings.topic, kafka.group = %settings.group, "consuming");

    let mut poll_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let mut batch = match first {
            Ok(m) => vec![to_delivery(&m)],
            Err(e) => {
                let wait = poll_backoff.next_delay(None);
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "consumer error");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        poll_backoff.reset();
        let fill_until = tokio::time::Instant::now() + settings.batch_wait;
        while batch.len() < settings.batch_size {
            match tokio::time::timeout_at(fill_until, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(to_delivery(&m)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error while filling a batch");
                    break;
                }
                Err(_) => break,
            }
        }

        let lanes = split_into_lanes(batch, settings.lanes);
        let applied = futures::future::join_all(lanes.into_iter().map(|lane| {
            let (handler, shutdown) = (&handler, &shutdown);
            async move {
                let lane = Arc::new(lane);
                let outcomes = apply_with_retry(handler, &lane, shutdown).await;
                (lane, outcomes)
            }
        }))
        .await;
        // Shutting down mid-retry: a lane that did not finish stores
        // nothing and is redelivered; the lanes that did are stored below.
        let mut stopping = false;
        for (lane, outcomes) in applied {
            let Some(outcomes) = outcomes else {
                stopping = true;
                continue;
            };
            if !dead_letter_all(
                &dead_letters,
                &settings.dead_letter_topic,
                &lane,
                &outcomes,
                &shutdown,
            )
            .await
            {
                stopping = true;
                continue;
            }
            store_offsets(&consumer, &lane);
            let mut done = progress.lock().expect("progress lock");
            for d in lane.iter() {
                done.insert(d.partition, d.offset);
            }
        }
        if stopping {
            break;
        }
    }

    // Leaving a group in the middle of its join leaves some brokers (nisshi
    // 0.6) waiting for this member forever, so a restarted worker never gets
    // partitions. Finish joining first (bounded), then leave. Messages seen
    // meanwhile are not stored: they are redelivered.
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !consumer.context().joined.load(AtomicOrdering::Relaxed)
        && tokio::time::Instant::now() < join_deadline
    {
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
    }
    // Stored offsets only: never the position of a batch we did not finish.
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "final offset commit failed; the last messages will be redelivered and recognised as duplicates")
        }
    }
    dead_letters.flush(Duration::from_secs(5));
    consumer.unsubscribe();
    tracing::info!(kafka.group = %settings.group, "consumer stopped");
    Ok(())
}

/// Splits a batch into at most `lanes` lanes: every message of a partition
/// goes to the same lane (partition modulo lanes), in the order polled.
/// Lanes without messages are left out.
pub fn split_into_lanes(batch: Vec<Delivery>, lanes: usize) -> Vec<Vec<Delivery>> {
    let lanes = lanes.max(1);
    let mut split: Vec<Vec<Delivery>> = (0..lanes).map(|_| Vec::new()).collect();
    for d in batch {
        split[d.partition.unsigned_abs() as usize % lanes].push(d);
    }
    split.retain(|lane| !lane.is_empty());
    split
}

fn to_delivery<M: Message>(m: &M) -> Delivery {
    Delivery {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers: envelope::from_headers(m.headers()),
    }
}

/// Retries the handler until it succeeds or shutdown is requested.
async fn apply_with_retry<H: BatchHandler>(
    handler: &Arc<H>,
    batch: &Arc<Vec<Delivery>>,
    shutdown: &CancellationToken,
) -> Option<Vec<Outcome>> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let (h, b) = (handler.clone(), batch.clone());
        let result = tokio::task::spawn_blocking(move || h.handle(&b)).await;
        let transient = match result {
            Ok(Ok(outcomes)) => {
                assert_eq!(
                    outcomes.len(),
                    batch.len(),
                    "handler must return one outcome per message"
                );
                return Some(outcomes);
            }
            Ok(Err(t)) => t,
            Err(join) => Transient::from(anyhow::anyhow!("handler panicked: {join}")),
        };
        let wait = backoff.next_delay(transient.retry_after);
        let first = &batch[0];
        metrics::RETRIES.with_label_values(&[&first.topic]).inc();
        tracing::warn!(
            error = format!("{:#}", transient.error),
            kafka.topic = %first.topic, kafka.partition = first.partition, kafka.offset = first.offset,
            batch_len = batch.len(), attempt = backoff.attempts(), wait_ms = wait.as_millis() as u64,
            "transient failure, retrying batch"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Puts every dead-lettered message on the DLQ; returns false only when
/// shutdown interrupted it (nothing is then stored, so nothing is lost).
async fn dead_letter_all(
    producer: &EventProducer,
    dlq_topic: &str,
    batch: &[Delivery],
    outcomes: &[Outcome],
    shutdown: &CancellationToken,
) -> bool {
    for (d, outcome) in batch.iter().zip(outcomes) {
        let Outcome::DeadLetter(error) = outcome else {
            continue;
        };
        tracing::error!(kafka.topic = %d.topic, kafka.partition = d.partition, kafka.offset = d.offset, error = %error, "dead-lettering message");
        let mut headers = d.headers.clone();
        headers.retain(|(k, _)| !k.starts_with("dlq-"));
        headers.extend([
            (envelope::H_DLQ_ERROR.to_owned(), error.clone().into_bytes()),
            (
                envelope::H_DLQ_SOURCE_TOPIC.to_owned(),
                d.topic.clone().into_bytes(),
            ),
            (
                envelope::H_DLQ_SOURCE_PARTITION.to_owned(),
                d.partition.to_string().into_bytes(),
            ),
            (
                envelope::H_DLQ_SOURCE_OFFSET.to_owned(),
                d.offset.to_string().into_bytes(),
            ),
            (
                envelope::H_DLQ_FAILED_AT.to_owned(),
                chrono::Utc::now().to_rfc3339().into_bytes(),
            ),
        ]);
        let key = d.key.as_deref().unwrap_or_default();
        let payload = d.payload.as_deref().unwrap_or_default();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            match producer.send(dlq_topic, key, payload, &headers).await {
                Ok(_) => {
                    metrics::DEAD_LETTERS.with_label_values(&[dlq_topic]).inc();
                    break;
                }
                Err(e) => {
                    let wait = backoff.next_delay(None);
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "dead-letter produce failed, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
    true
}

fn store_offsets<C: Consumer<GroupContext>>(consumer: &C, batch: &[Delivery]) {
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for d in batch {
        last.insert((d.topic.as_str(), d.partition), d.offset);
    }
    for ((topic, partition), offset) in last {
        // Stores offset+1 (the next to read). Fails only if the partition was
        // revoked meanwhile; its new owner then re-reads and deduplicates.
        if let Err(e) = consumer.store_offset(topic, partition, offset) {
            tracing::warn!(error = %e, kafka.topic = topic, kafka.partition = partition, kafka.offset = offset, "could not store offset");
        }
    }
}

/// Last offset processed per partition of the consumed topic.
type Progress = Arc<std::sync::Mutex<BTreeMap<i32, i64>>>;

/// Every 10 s, publishes `high watermark - next offset` per partition this
/// consumer has worked on, through its own group-less client so the
/// consume loop is never blocked by the measurement.
fn spawn_lag_reporter(
    settings: &ConsumeSettings,
    progress: Progress,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{}.lag-probe", settings.group))
        .set("enable.auto.commit", "false")
        .create()?;
    let (group, topic) = (settings.group.clone(), settings.topic.clone());
    tokio::spawn(async move {
        let probe = Arc::new(probe);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
            let done: Vec<(i32, i64)> = progress
                .lock()
                .expect("progress lock")
                .iter()
                .map(|(p, o)| (*p, *o))
                .collect();
            let (probe, group, topic) = (probe.clone(), group.clone(), topic.clone());
            let _ = tokio::task::spawn_blocking(move || {
                for (partition, offset) in done {
                    if let Ok((_, high)) =
                        probe.fetch_watermarks(&topic, partition, Duration::from_secs(2))
                    {
                        metrics::CONSUMER_LAG
                            .with_label_values(&[&group, &topic, &partition.to_string()])
                            .set((high - offset - 1).max(0));
                    }
                }
            })
            .await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delivery(partition: i32, offset: i64) -> Delivery {
        Delivery {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            payload: None,
            headers: Vec::new(),
        }
    }

    proptest! {
        /// Per-partition order (invariant 4) depends on this: whatever the
        /// batch, a partition's messages land in exactly one lane, in the
        /// order they were polled, and nothing is lost or repeated.
        #[test]
        fn lanes_keep_each_partition_whole_and_in_order(
            partitions in proptest::collection::vec(0i32..12, 0..200),
            lanes in 1usize..5,
        ) {
            let mut next_offset = BTreeMap::new();
            let batch: Vec<Delivery> = partitions
                .iter()
                .map(|&p| {
                    let offset = next_offset.entry(p).or_insert(0i64);
                    *offset += 1;
                    delivery(p, *offset)
                })
                .collect();
            let split = split_into_lanes(batch.clone(), lanes);

            prop_assert!(split.len() <= lanes);
            prop_assert!(split.iter().all(|lane| !lane.is_empty()));
            prop_assert_eq!(split.iter().map(Vec::len).sum::<usize>(), batch.len());
            let mut lane_of = BTreeMap::new();
            for (i, lane) in split.iter().enumerate() {
                for d in lane {
                    prop_assert_eq!(*lane_of.entry(d.partition).or_insert(i), i);
                }
                // Within a lane, messages keep their order in the batch.
                let positions: Vec<usize> = lane
                    .iter()
                    .map(|d| {
                        batch
                            .iter()
                            .position(|b| (b.partition, b.offset) == (d.partition, d.offset))
                            .expect("from the batch")
                    })
                    .collect();
                prop_assert!(positions.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn one_lane_is_the_batch_as_polled() {
        let batch = vec![delivery(3, 1), delivery(0, 1), delivery(3, 2)];
        let split = split_into_lanes(batch, 1);
        assert_eq!(split.len(), 1);
        let order: Vec<(i32, i64)> = split[0].iter().map(|d| (d.partition, d.offset)).collect();
        assert_eq!(order, vec![(3, 1), (0, 1), (3, 2)]);
    }
}
