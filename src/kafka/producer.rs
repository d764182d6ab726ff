//! The one producer configuration the engine uses: idempotent, `acks=all`,
//! and an answer (delivered or failed) within a bounded time.

use std::time::Duration;

use rdkafka::config::ClientConfig;
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

#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
}

impl EventProducer {
    pub fn new(brokers: &str, delivery_timeout: Duration) -> anyhow::Result<Self> {
        let inner: FutureProducer = ClientConfig::new()
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
            .set("compression.type", "lz4")
            .create()?;
        Ok(Self { inner })
    }

    /// Sends and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &HeaderList,
    ) -> Result<Delivered, ProduceError> {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(to_owned_headers(headers));
        // The queue wait is bounded by message.timeout.ms already.
        match self.inner.send(record, Timeout::Never).await {
            Ok(d) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((e, _)) => Err(ProduceError(e.to_string())),
        }
    }

    /// Cheap reachability probe for `/readyz`.
    pub fn check_reachable(&self, timeout: Duration) -> Result<(), ProduceError> {
        self.inner
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| ProduceError(e.to_string()))
    }

    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.inner.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}
