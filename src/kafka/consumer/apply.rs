//! Applying one batch: the handler on the blocking pool, retried with
//! backoff while it fails transiently; a message it keeps panicking on
//! dead-lettered; dead letters produced; offsets stored only after that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use super::{BatchHandler, Delivery, GroupContext, Outcome, Transient};
use crate::kafka::envelope;
use crate::kafka::producer::EventProducer;
use crate::metrics;
use crate::retry::{sleep_or_shutdown, Backoff};

/// A handler that panics this many times in a row on the same batch has a
/// bug the batch triggers, not a passing fault: retrying forever would
/// block its partitions (invariant 8).
pub const PANICS_BEFORE_DEAD_LETTER: u32 = 3;

/// How a batch's attempts ended.
enum Attempts {
    Outcomes(Vec<Outcome>),
    /// The handler panicked on it [`PANICS_BEFORE_DEAD_LETTER`] times running.
    Panicking(String),
}

/// Applies the batch, retrying transient failures until it succeeds or
/// shutdown is requested (`None`). A batch the handler keeps panicking on
/// is applied again one message at a time, in order, so that only the
/// message that panics is dead-lettered, with the panic's message.
pub(super) async fn apply_with_retry<H: BatchHandler>(
    handler: &Arc<H>,
    batch: &Arc<Vec<Delivery>>,
    shutdown: &CancellationToken,
) -> Option<Vec<Outcome>> {
    let panic = match attempt(handler, batch, shutdown).await? {
        Attempts::Outcomes(outcomes) => return Some(outcomes),
        Attempts::Panicking(panic) => panic,
    };
    if batch.len() == 1 {
        return Some(vec![panicked(&panic)]);
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for d in batch.iter() {
        let one = Arc::new(vec![d.clone()]);
        match attempt(handler, &one, shutdown).await? {
            Attempts::Outcomes(mut o) => outcomes.append(&mut o),
            Attempts::Panicking(panic) => outcomes.push(panicked(&panic)),
        }
    }
    Some(outcomes)
}

fn panicked(panic: &str) -> Outcome {
    Outcome::DeadLetter(format!(
        "the handler panicked {PANICS_BEFORE_DEAD_LETTER} times on this message: {panic}"
    ))
}

/// Calls the handler until it answers, backing off between failures.
async fn attempt<H: BatchHandler>(
    handler: &Arc<H>,
    batch: &Arc<Vec<Delivery>>,
    shutdown: &CancellationToken,
) -> Option<Attempts> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut panics = 0;
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
                return Some(Attempts::Outcomes(outcomes));
            }
            Ok(Err(t)) => {
                panics = 0;
                t
            }
            Err(join) => {
                let panic = panic_message(join);
                panics += 1;
                if panics >= PANICS_BEFORE_DEAD_LETTER {
                    return Some(Attempts::Panicking(panic));
                }
                Transient::from(anyhow::anyhow!("handler panicked: {panic}"))
            }
        };
        let wait = backoff.next_delay(transient.retry_after);
        let first = &batch[0];
        metrics::RETRIES.with_label_values(&[&first.topic]).inc();
        metrics::note_error(format!(
            "retrying {} partition {} offset {}: {:#}",
            first.topic, first.partition, first.offset, transient.error
        ));
        tracing::warn!(
            error = format!("{:#}", transient.error),
            kafka.topic = %first.topic, kafka.partition = first.partition, kafka.offset = first.offset,
            batch_len = batch.len(), attempt = backoff.attempts(), wait_ms = wait.as_millis() as u64,
            "transient failure, retrying batch"
        );
        if sleep_or_shutdown(wait, shutdown).await {
            return None;
        }
    }
}

/// What a panicking handler said.
fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return join.to_string();
    }
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Puts every dead-lettered message on the DLQ; returns false only when
/// shutdown interrupted it (nothing is then stored, so nothing is lost).
pub(super) async fn dead_letter_all(
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
        metrics::note_error(format!(
            "dead-lettered {} partition {} offset {}: {error}",
            d.topic, d.partition, d.offset
        ));
        let headers = envelope::dead_letter_headers(
            &d.headers,
            error,
            &d.topic,
            Some((d.partition, d.offset)),
        );
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
                    if sleep_or_shutdown(wait, shutdown).await {
                        return false;
                    }
                }
            }
        }
    }
    true
}

pub(super) fn store_offsets<C: Consumer<GroupContext>>(consumer: &C, batch: &[Delivery]) {
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
