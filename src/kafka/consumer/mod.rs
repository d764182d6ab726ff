//! The at-least-once consume loop every worker runs.
//!
//! Contract (invariant 3): an offset is stored for commit only after the
//! handler's Postgres transaction for that message has committed, or after
//! the message is safely on the dead-letter topic. Transient failures retry
//! the same batch with backoff and never skip it. Partitions are spread
//! over lanes that apply concurrently and independently; a partition always
//! goes to the same lane, which applies its messages in poll order one batch
//! after another, so each partition (and with it each object, the partition
//! key) is handled in order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::age;
use super::envelope::HeaderList;
use super::producer::EventProducer;
use crate::metrics;
use crate::retry::{sleep_or_shutdown, Backoff};

mod apply;
mod lanes;

pub use apply::PANICS_BEFORE_DEAD_LETTER;
pub use lanes::lane_of;
use lanes::{GroupConsumer, Lane, LaneRouting};

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
    /// Messages per batch of a lane, at most.
    pub batch_size: usize,
    /// Payload bytes that end a batch of a lane: the message that reaches
    /// them is the batch's last, so a batch exceeds them by less than one
    /// message (and one larger message is a batch of its own).
    /// `usize::MAX` bounds batches by their count alone.
    pub batch_bytes: usize,
    pub batch_wait: Duration,
    /// Lanes applying at once, each with its own batches (and, in the
    /// handler, its own database connection).
    pub lanes: usize,
    /// `fetch.wait.max.ms`: see `KafkaConfig::fetch_wait`.
    pub fetch_wait: Duration,
    /// `fetch.max.bytes`: see `KafkaConfig::fetch_max_bytes`.
    pub fetch_max_bytes: usize,
    /// The process's health, told when a lane dies.
    pub health: crate::health::Health,
}

/// Logs group rebalances, routes newly assigned partitions to their lanes'
/// queues and tracks whether the group join completed; librdkafka commits
/// the stored offsets of revoked partitions itself because auto-commit is
/// on.
struct GroupContext {
    joined: AtomicBool,
    routing: LaneRouting,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked")
            }
            Rebalance::Assign(tpl) => {
                self.joined.store(true, AtomicOrdering::Relaxed);
                self.routing.forward(consumer, tpl);
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

/// What librdkafka may prefetch for a worker in all, in KiB (its default is
/// 64 MiB): about 1,800 events, more than the lanes hold at once, and a
/// worker catching up on a backlog should not hold the backlog in memory.
pub const PREFETCH_KIB: usize = 4096;

/// How every worker fetches: the settings that decide its latency, its
/// throughput from a backlog and its memory (the benchmark measures the
/// broker's consume ceiling with the same). `queues` is how many queues
/// the prefetch is read from (one per lane); each may fill its share.
pub fn fetch_config(
    brokers: &str,
    fetch_wait: Duration,
    fetch_max_bytes: usize,
    queues: usize,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        // librdkafka stops fetching a partition while the queue it is read
        // from (its lane's, in the workers) holds this much.
        .set(
            "queued.max.messages.kbytes",
            (PREFETCH_KIB / queues.max(1)).max(1).to_string(),
        )
        // A fetch answers with at most `fetch_max_bytes` (1.06 MiB by
        // default; librdkafka's default follows the prefetch, 4 MiB). The
        // limit counts batches as stored, compressed, and lz4 compresses
        // event JSON 3 times (a mix of Stripe objects) to 28 times (the
        // bench's customer updates): a 4 MiB fetch decompressed to up to
        // ~100 MB, which librdkafka held whatever the prefetch limit says
        // (stripe-inbound peaked at 120 MiB on the bench's backlog; 66 MiB
        // with the default, 48 MiB with 256 KiB). librdkafka wants
        // `message.max.bytes` (for a consumer, only the size of the
        // requests it sends) no larger than this.
        .set("fetch.max.bytes", fetch_max_bytes.to_string())
        .set("message.max.bytes", fetch_max_bytes.to_string())
        // Once the prefetch is full, fetch again 20 ms later (default 1 s):
        // with the default, lanes catching up on a backlog drained the
        // prefetch and then sat idle for the rest of the second (apply from
        // a backlog went from ~10.5k to ~13k events/s on 2 lanes).
        .set("fetch.queue.backoff.ms", "20");
    config
}

/// Runs until `shutdown` fires, then lets every lane finish the batch in
/// hand, commits and returns.
///
/// Each lane reads its own librdkafka queue, into which the fetch queue of
/// every partition of the lane ([`lane_of`]) is forwarded ([`LaneRouting`])
/// before librdkafka starts fetching it, after every rebalance. librdkafka
/// stops fetching the partitions of a lane whose queue is full, so a lane
/// that falls behind (or retries) holds up only its own partitions, and the
/// prefetch split between the lanes bounds the messages in memory. This
/// task only polls the consumer itself, which serves rebalances and errors.
pub async fn run<H: BatchHandler>(
    settings: ConsumeSettings,
    handler: Arc<H>,
    dead_letters: EventProducer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let probe = probe_client(&settings)?;
    let partitions = partition_count(&probe, &settings.topic).await?;
    // A lane without a partition would never have work.
    let lane_count = settings.lanes.clamp(1, partitions);
    if lane_count < settings.lanes {
        tracing::warn!(
            kafka.topic = %settings.topic, partitions, lanes = lane_count,
            "fewer partitions than lanes asked for; the extra lanes would idle"
        );
    }
    let routing = LaneRouting::new(&settings.topic, lane_count)?;
    let consumer: Arc<GroupConsumer> = Arc::new(
        fetch_config(
            &settings.brokers,
            settings.fetch_wait,
            settings.fetch_max_bytes,
            lane_count,
        )
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
        .create_with_context(GroupContext {
            joined: AtomicBool::new(false),
            routing,
        })?,
    );
    // Every lane's queue exists before the first assignment, whose routing
    // the context does: no partition is ever fetched into the consumer's
    // own queue.
    let lane_queues = (0..lane_count)
        .map(|lane| {
            let partition = consumer.context().routing.queue_partition(lane);
            consumer
                .split_partition_queue(&settings.topic, partition)
                .ok_or_else(|| anyhow::anyhow!("no queue for lane {lane} of {}", settings.topic))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    consumer.subscribe(&[&settings.topic])?;
    let progress: Progress = Arc::default();
    spawn_lag_reporter(probe, &settings, progress.clone(), shutdown.clone());
    tracing::info!(kafka.topic = %settings.topic, kafka.group = %settings.group, lanes = lane_count, "consuming");

    // Lanes stop on shutdown, or when this task finds the routing broken,
    // or when a lane died: its partitions would stall unseen, so the others
    // finish their batches and the process fails, to be restarted.
    let stop_lanes = shutdown.child_token();
    let lane_died = CancellationToken::new();
    let lanes: Vec<_> = lane_queues
        .into_iter()
        .map(|queue| {
            let lane = Lane {
                settings: settings.clone(),
                handler: handler.clone(),
                dead_letters: dead_letters.clone(),
                consumer: consumer.clone(),
                progress: progress.clone(),
                shutdown: stop_lanes.clone(),
            };
            let running = tokio::spawn(lane.run(queue));
            let died = lane_died.clone();
            tokio::spawn(async move {
                let ended = running.await;
                if ended.is_err() {
                    died.cancel();
                }
                ended
            })
        })
        .collect();

    // Only errors come here, never a success to reset the backoff on, so
    // it stays short: the rebalances served by this loop must not wait.
    let mut poll_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let misrouted = loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => break None,
            _ = lane_died.cancelled() => break None,
            m = consumer.recv() => m.map(|m| (m.partition(), m.offset())),
        };
        match polled {
            // Applying it here could overtake its partition's lane, and
            // skipping it would lose it: stop instead, unstored, so that it
            // is redelivered after the restart.
            Ok((partition, offset)) => {
                break Some(anyhow::anyhow!(
                    "{}/{partition} offset {offset} was fetched outside its lane's queue; stopping so that it is redelivered",
                    settings.topic
                ))
            }
            Err(e) => {
                let wait = poll_backoff.next_delay(None);
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "consumer error");
                if sleep_or_shutdown(wait, &shutdown).await {
                    break None;
                }
            }
        }
    };
    stop_lanes.cancel();
    let mut lane_failure = None;
    for lane in lanes {
        if let Ok(Err(e)) | Err(e) = lane.await {
            settings.health.report_failure(format!(
                "an apply lane of {} (group {}) died: {e}",
                settings.topic, settings.group
            ));
            lane_failure = Some(anyhow::anyhow!("an apply lane panicked: {e}"));
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
    // What the other lanes finished is committed above; the process still
    // fails, so that it is restarted rather than quietly stopped.
    misrouted.or(lane_failure).map_or(Ok(()), Err)
}

/// Last offset processed per partition of the consumed topic (for a
/// partition whose first batch is still in hand, the offset before it).
type Progress = Arc<std::sync::Mutex<BTreeMap<i32, i64>>>;

/// A group-less client for looking at the topic (its partitions, their
/// watermarks, the age of the next message to apply) without ever blocking
/// the consume loop.
fn probe_client(settings: &ConsumeSettings) -> anyhow::Result<Arc<BaseConsumer>> {
    let group = format!("{}.lag-probe", settings.group);
    Ok(Arc::new(age::peek_client(
        &settings.brokers,
        &group,
        settings.fetch_max_bytes,
    )?))
}

/// The topic's partition count. A topic created a moment ago may not show
/// its partitions yet, so an empty answer is asked again for a few seconds.
async fn partition_count(probe: &Arc<BaseConsumer>, topic: &str) -> anyhow::Result<usize> {
    let mut attempts = 0;
    loop {
        let (probe, name) = (probe.clone(), topic.to_owned());
        let partitions = tokio::task::spawn_blocking(move || {
            let metadata = probe.fetch_metadata(Some(&name), Duration::from_secs(10))?;
            anyhow::Ok(
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .map_or(0, |t| t.partitions().len()),
            )
        })
        .await??;
        attempts += 1;
        if partitions > 0 {
            return Ok(partitions);
        }
        anyhow::ensure!(attempts < 20, "topic {topic} has no partitions");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How often the lag gauges are refreshed.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Every [`LAG_REPORT_INTERVAL`], publishes per partition this consumer has
/// worked on `high watermark - next offset` and the age of the message at
/// the next offset (zero when there is none), through `probe` so the
/// consume loop is never blocked by the measurement.
fn spawn_lag_reporter(
    probe: Arc<BaseConsumer>,
    settings: &ConsumeSettings,
    progress: Progress,
    shutdown: CancellationToken,
) {
    let (group, topic) = (settings.group.clone(), settings.topic.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(LAG_REPORT_INTERVAL) => {}
            }
            let done: Vec<(i32, i64)> = progress
                .lock()
                .expect("progress lock")
                .iter()
                .map(|(p, o)| (*p, *o))
                .collect();
            let (probe, group, topic) = (probe.clone(), group.clone(), topic.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let mut behind = Vec::new();
                for (partition, offset) in done {
                    let labels = [group.as_str(), topic.as_str(), &partition.to_string()];
                    if let Ok((_, high)) =
                        probe.fetch_watermarks(&topic, partition, Duration::from_secs(2))
                    {
                        let lag = (high - offset - 1).max(0);
                        metrics::CONSUMER_LAG.with_label_values(&labels).set(lag);
                        if lag == 0 {
                            metrics::CONSUMER_LAG_SECONDS
                                .with_label_values(&labels)
                                .set(0.0);
                        } else {
                            behind.push((partition, offset + 1));
                        }
                    }
                }
                // A partition whose next message could not be read keeps its
                // last age rather than claiming to be caught up.
                let ages = age::oldest_unread_ages(&probe, &topic, &behind, Duration::from_secs(2));
                for (partition, age) in ages {
                    metrics::CONSUMER_LAG_SECONDS
                        .with_label_values(&[&group, &topic, &partition.to_string()])
                        .set(age.as_secs_f64());
                }
            })
            .await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every lane is used once there are at least as many partitions
        /// as lanes, and a partition's lane is always one of them (the
        /// ordering side is in tests/it/consume.rs, against the broker).
        #[test]
        fn partitions_spread_over_every_lane(partitions in 1i32..64, lanes in 1usize..8) {
            let used: std::collections::BTreeSet<usize> =
                (0..partitions).map(|p| lane_of(p, lanes)).collect();
            prop_assert!(used.iter().all(|&lane| lane < lanes));
            prop_assert_eq!(used.len(), lanes.min(partitions as usize));
        }
    }
}
