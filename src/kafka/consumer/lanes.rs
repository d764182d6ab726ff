//! The consume loop's lanes: which lane applies a partition, the routing
//! of each partition's fetches to its lane's librdkafka queue, and the lane
//! itself, which fills batches from its queue and applies them in order.

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use super::apply::{apply_with_retry, dead_letter_all, store_offsets};
use super::{BatchHandler, ConsumeSettings, Delivery, GroupContext, Progress};
use crate::kafka::envelope;
use crate::kafka::producer::EventProducer;
use crate::retry::{sleep_or_shutdown, Backoff};

pub(super) type GroupConsumer = StreamConsumer<GroupContext>;
pub(super) type LaneQueue = StreamPartitionQueue<GroupContext>;

/// The lane that applies a partition's messages: always the same one for a
/// partition, so its messages (and with them each object's events, the
/// partition key) are applied one batch after another, in offset order.
pub fn lane_of(partition: i32, lanes: usize) -> usize {
    partition.unsigned_abs() as usize % lanes.max(1)
}

/// Which queue each partition of the topic is fetched into: lane `n`
/// reads partition `n`'s fetch queue, split off the consumer's own queue,
/// and every other partition of the lane is forwarded into it.
pub(super) struct LaneRouting {
    topic: CString,
    lanes: usize,
}

impl LaneRouting {
    pub(super) fn new(topic: &str, lanes: usize) -> anyhow::Result<Self> {
        Ok(Self {
            topic: CString::new(topic)?,
            lanes,
        })
    }

    pub(super) fn queue_partition(&self, lane: usize) -> i32 {
        lane as i32
    }

    /// Forwards the fetch queue of each newly assigned partition into its
    /// lane's queue. Runs before librdkafka starts fetching them, as it
    /// must after every rebalance: stopping a partition's fetch (a revoke)
    /// clears its forwarding, and starting it leaves a queue the
    /// application forwarded once alone instead of forwarding it to the
    /// consumer's queue. A partition that could not be forwarded is
    /// fetched into the consumer's queue, where `run` stops on it.
    pub(super) fn forward(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        assigned: &TopicPartitionList,
    ) {
        let topic = self.topic.to_str().unwrap_or_default();
        for element in assigned.elements() {
            if element.topic() != topic {
                continue;
            }
            let partition = element.partition();
            let into = self.queue_partition(lane_of(partition, self.lanes));
            if partition != into && !forward_fetch_queue(consumer, &self.topic, partition, into) {
                tracing::error!(
                    kafka.topic = topic,
                    kafka.partition = partition,
                    "could not route the partition to its lane's queue"
                );
            }
        }
    }
}

/// Forwards `partition`'s fetch queue into `into`'s (rdkafka has no safe
/// wrapper for forwarding to a queue other than the consumer's own).
fn forward_fetch_queue(
    consumer: &BaseConsumer<GroupContext>,
    topic: &CStr,
    partition: i32,
    into: i32,
) -> bool {
    let client = consumer.client().native_ptr();
    // SAFETY: `client` lives as long as `consumer`, which outlives this
    // call. `rd_kafka_queue_get_partition` returns a new handle (or null)
    // that only references the partition's queue; forwarding takes its own
    // reference to the destination, so both handles are released here.
    unsafe {
        let from = bindings::rd_kafka_queue_get_partition(client, topic.as_ptr(), partition);
        let to = bindings::rd_kafka_queue_get_partition(client, topic.as_ptr(), into);
        let forwarded = !from.is_null() && !to.is_null();
        if forwarded {
            bindings::rd_kafka_queue_forward(from, to);
        }
        for handle in [from, to] {
            if !handle.is_null() {
                bindings::rd_kafka_queue_destroy(handle);
            }
        }
        forwarded
    }
}

/// One apply lane: its own queue, batches, transaction and connection.
pub(super) struct Lane<H> {
    pub(super) settings: ConsumeSettings,
    pub(super) handler: Arc<H>,
    pub(super) dead_letters: EventProducer,
    pub(super) consumer: Arc<GroupConsumer>,
    pub(super) progress: Progress,
    pub(super) shutdown: CancellationToken,
}

impl<H: BatchHandler> Lane<H> {
    /// Applies batches from `queue` until shutdown fires; the batch in hand
    /// is finished first (unless it is waiting to retry).
    pub(super) async fn run(self, queue: LaneQueue) {
        let mut errors = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                m = queue.recv() => m.map(|m| to_delivery(&m)),
            };
            let first = match first {
                Ok(d) => d,
                Err(e) => {
                    let wait = errors.next_delay(None);
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "consumer error");
                    if sleep_or_shutdown(wait, &self.shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            errors.reset();
            let mut fill = Fill::new(self.settings.batch_size, self.settings.batch_bytes);
            let mut room = fill.take(&first);
            let mut batch = vec![first];
            let fill_until = tokio::time::Instant::now() + self.settings.batch_wait;
            while room {
                match tokio::time::timeout_at(fill_until, queue.recv()).await {
                    Ok(Ok(m)) => {
                        let d = to_delivery(&m);
                        room = fill.take(&d);
                        batch.push(d);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !self.apply(Arc::new(batch)).await {
                return;
            }
        }
    }

    /// Applies one batch, dead-letters what failed for good and stores the
    /// offsets; false when shutdown interrupted it (nothing stored, so the
    /// batch is redelivered).
    async fn apply(&self, batch: Arc<Vec<Delivery>>) -> bool {
        self.note_in_hand(&batch);
        let Some(outcomes) = apply_with_retry(&self.handler, &batch, &self.shutdown).await else {
            return false;
        };
        let settings = &self.settings;
        if !dead_letter_all(
            &self.dead_letters,
            &settings.dead_letter_topic,
            &batch,
            &outcomes,
            &self.shutdown,
        )
        .await
        {
            return false;
        }
        store_offsets(self.consumer.as_ref(), &batch);
        let mut done = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for d in batch.iter() {
            done.insert(d.partition, d.offset);
        }
        true
    }
}

impl<H> Lane<H> {
    /// Makes the lag reporter watch the batch's partitions from its first
    /// message on, before anything of them is applied: a lane that is stuck
    /// on its first batch (Postgres down since the start) shows its lag
    /// growing rather than nothing at all.
    fn note_in_hand(&self, batch: &[Delivery]) {
        let mut done = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for d in batch {
            done.entry(d.partition).or_insert(d.offset - 1);
        }
    }
}

/// What a batch being filled may still take: `batch_size` messages and
/// `batch_bytes` of payload. Counting bytes lets a batch of small events
/// (a burst of customer updates) be several times longer than one of large
/// ones (invoices, charges) for the same memory.
struct Fill {
    messages_left: usize,
    bytes_left: usize,
}

impl Fill {
    fn new(batch_size: usize, batch_bytes: usize) -> Self {
        Self {
            messages_left: batch_size.max(1),
            bytes_left: batch_bytes.max(1),
        }
    }

    /// Counts `d` into the batch; false once the batch is full.
    fn take(&mut self, d: &Delivery) -> bool {
        let bytes = d.payload.as_ref().map_or(0, Vec::len);
        self.messages_left -= 1;
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
        self.messages_left > 0 && self.bytes_left > 0
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> Delivery {
        Delivery {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(vec![b'x'; bytes]),
            headers: Vec::new(),
        }
    }

    /// How many messages of `sizes`, in turn, one batch takes.
    fn taken(fill: &mut Fill, sizes: &[usize]) -> usize {
        for (i, &size) in sizes.iter().enumerate() {
            if !fill.take(&message(size)) {
                return i + 1;
            }
        }
        sizes.len()
    }

    #[test]
    fn a_batch_ends_at_its_count_or_at_the_message_that_reaches_its_bytes() {
        assert_eq!(taken(&mut Fill::new(3, usize::MAX), &[10; 10]), 3);
        assert_eq!(taken(&mut Fill::new(100, 25), &[10; 10]), 3);
        assert_eq!(taken(&mut Fill::new(100, 30), &[10; 10]), 3);
        assert_eq!(taken(&mut Fill::new(100, 31), &[10; 10]), 4);
        // Small events make long batches, large ones short, for the same bytes.
        assert_eq!(taken(&mut Fill::new(1000, 8000), &[800; 100]), 10);
        assert_eq!(taken(&mut Fill::new(1000, 8000), &[80; 1000]), 100);
    }

    #[test]
    fn a_message_larger_than_the_bytes_is_a_batch_of_its_own() {
        assert_eq!(taken(&mut Fill::new(10, 100), &[500, 1, 1]), 1);
        // Empty payloads (tombstones) count against the number only.
        assert_eq!(taken(&mut Fill::new(4, 100), &[0; 10]), 4);
        // Bounds of zero still let one message through.
        assert_eq!(taken(&mut Fill::new(0, 0), &[1, 1]), 1);
    }
}
