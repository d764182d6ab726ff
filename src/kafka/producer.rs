//! The one producer configuration the engine uses: idempotent, `acks=all`,
//! and an answer (delivered or failed) within a bounded time.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::envelope::{to_owned_headers, HeaderList};

#[derive(Debug, thiserror::Error)]
#[error("Kafka did not acknowledge the message: {0}")]
pub struct ProduceError(pub String);

/// Where a delivered message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A cheaply clonable handle; clones share one underlying producer.
#[derive(Clone)]
pub struct EventProducer {
    config: ClientConfig,
    current: Arc<RwLock<(u64, FutureProducer)>>,
    last_rebuild: Arc<Mutex<Option<Instant>>>,
}

/// Rebuilding a producer costs a broker round trip; never more often.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_secs(1);

/// How the producer compresses its batches (`KAFKA_COMPRESSION`).
///
/// A consumer's fetch limit counts batches as the broker stores them, so
/// compression multiplies what one fetch holds once decompressed: by 3
/// for a mix of Stripe objects and by 28 for near-identical updates of one
/// object, which is what a worker's memory follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Zstd,
    Gzip,
    Snappy,
}

impl Compression {
    /// librdkafka's name for it (`compression.type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        [Self::None, Self::Lz4, Self::Zstd, Self::Gzip, Self::Snappy]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(raw))
            .ok_or_else(|| "must be one of none, lz4, zstd, gzip, snappy".to_owned())
    }
}

impl EventProducer {
    /// The engine's producer for `kafka`'s brokers, timeout and compression.
    pub fn for_config(kafka: &crate::config::KafkaConfig) -> anyhow::Result<Self> {
        Self::new(&kafka.brokers, kafka.produce_timeout, kafka.compression)
    }

    pub fn new(
        brokers: &str,
        delivery_timeout: Duration,
        compression: Compression,
    ) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            // Idempotence implies acks=all and ordered, de-duplicated retries
            // within the producer session; we spell acks out for readers.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "1")
            .set("compression.type", compression.as_str());
        let producer: FutureProducer = config.create()?;
        Ok(Self {
            config,
            current: Arc::new(RwLock::new((0, producer))),
            last_rebuild: Arc::new(Mutex::new(None)),
        })
    }

    /// The producer in use. A panic elsewhere while a lock was held
    /// (poisoning) must not turn every later webhook into an error: the
    /// pair under the lock is only ever replaced whole, so it is sound.
    fn producer(&self) -> (u64, FutureProducer) {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &HeaderList,
    ) -> Result<Delivered, ProduceError> {
        let (generation, producer) = self.producer();
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if !headers.is_empty() {
            record = record.headers(to_owned_headers(headers));
        }
        // The queue wait is bounded by message.timeout.ms already.
        match producer.send(record, Timeout::Never).await {
            Ok(d) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((e, _)) => {
                if needs_new_session(&e, &producer) {
                    self.rebuild(generation);
                }
                Err(ProduceError(e.to_string()))
            }
        }
    }

    /// Replaces the producer after an error that a fresh idempotent session
    /// cures: a broker that restarted without our producer id answers every
    /// later message with an error, forever, on the old session. The failed
    /// request was already answered 503, so Stripe retries it.
    fn rebuild(&self, failed_generation: u64) {
        let mut last = self
            .last_rebuild
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < MIN_REBUILD_INTERVAL) {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 != failed_generation {
            return; // another request already rebuilt it
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(
                    generation = failed_generation + 1,
                    "recreated the Kafka producer after a broker-side error"
                );
                *current = (failed_generation + 1, fresh);
                *last = Some(Instant::now());
            }
            Err(e) => tracing::error!(error = %e, "could not recreate the Kafka producer"),
        }
    }

    /// Cheap reachability probe for `/readyz`.
    pub fn check_reachable(&self, timeout: Duration) -> Result<(), ProduceError> {
        self.producer()
            .1
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| ProduceError(e.to_string()))
    }

    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer().1.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}

/// Timeouts and a full local queue clear up by themselves; anything else
/// the broker answered, or a fatal client state, calls for a new session.
fn needs_new_session(e: &KafkaError, producer: &FutureProducer) -> bool {
    if producer.client().fatal_error().is_some() {
        return true;
    }
    !matches!(
        e,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::QueueFull
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_does_not_break_later_sends() {
        let producer =
            EventProducer::new("127.0.0.1:9", Duration::from_secs(1), Compression::None).unwrap();
        for lock in 0..2 {
            let p = producer.clone();
            let _ = std::thread::spawn(move || {
                if lock == 0 {
                    let _held = p.current.write().unwrap();
                    panic!("a panic while the producer lock is held");
                }
                let _held = p.last_rebuild.lock().unwrap();
                panic!("a panic while the rebuild lock is held");
            })
            .join();
        }
        assert!(producer.current.is_poisoned() && producer.last_rebuild.is_poisoned());
        assert_eq!(producer.producer().0, 0);
        producer.rebuild(0);
        assert_eq!(producer.producer().0, 1, "a rebuild still works");
    }
}
