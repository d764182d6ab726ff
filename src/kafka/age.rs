//! Lag in seconds: how long the oldest message a reader has not processed
//! yet has been waiting. Offsets say how many events are behind; only the
//! age says whether the mirror is a second or an hour stale, and it is what
//! an alert wants (a quiet topic with 10 waiting events can be worse than a
//! busy one with 10,000).
//!
//! The age is read from the broker: the message at the reader's next offset
//! is fetched on a client of its own (assigned, never subscribed, so no
//! group is disturbed) and its timestamp, the time `serve` produced it, is
//! compared with now.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A client for [`oldest_unread_ages`]: no subscription, no commits, and a
/// prefetch that stops after the first fetch rather than librdkafka's
/// default of 64 MiB (it reads one message per partition and stops).
/// `fetch_max_bytes` must be the workers' (`KAFKA_FETCH_MAX_BYTES`): nisshi
/// never returns a message larger than the fetch, so a smaller one would
/// never read a large event. `group` is required by librdkafka and never
/// joined.
pub fn peek_client(
    brokers: &str,
    group: &str,
    fetch_max_bytes: usize,
) -> anyhow::Result<BaseConsumer> {
    let fetch = fetch_max_bytes.to_string();
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.max.bytes", &fetch)
        .set("message.max.bytes", &fetch)
        .set("queued.max.messages.kbytes", "64")
        .create()?)
}

/// For each `(partition, next offset)` of `topic`, how long ago the message
/// at that offset was produced. A partition whose message could not be read
/// within `timeout` (none there yet, the broker away) is left out: the
/// caller knows whether it is behind at all from the watermarks.
///
/// Takes over `client`'s assignment for the call and clears it after.
pub fn oldest_unread_ages(
    client: &BaseConsumer,
    topic: &str,
    next: &[(i32, i64)],
    timeout: Duration,
) -> BTreeMap<i32, Duration> {
    let mut ages = BTreeMap::new();
    if next.is_empty() {
        return ages;
    }
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in next {
        if assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .is_err()
        {
            return ages;
        }
    }
    if client.assign(&assignment).is_err() {
        return ages;
    }
    let deadline = Instant::now() + timeout;
    while ages.len() < next.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(Ok(message)) = client.poll(left.min(Duration::from_millis(200))) else {
            continue;
        };
        let partition = message.partition();
        if ages.contains_key(&partition) {
            continue;
        }
        // The first message fetched from the assigned offset is the oldest
        // unread one (or the first still retained after it).
        if let Some(produced_ms) = message.timestamp().to_millis() {
            ages.insert(partition, age_of(produced_ms));
        }
    }
    let _ = client.unassign();
    ages
}

/// Time since `produced_ms` (Unix milliseconds); zero for a timestamp in
/// the future (clocks of producer and reader disagree).
fn age_of(produced_ms: i64) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Duration::from_millis(now_ms.saturating_sub(produced_ms).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_from_the_future_is_not_waiting() {
        let later = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 60_000;
        assert_eq!(age_of(later), Duration::ZERO);
    }

    #[test]
    fn the_age_counts_from_the_production_time() {
        let ten_s_ago = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - 10_000;
        let age = age_of(ten_s_ago);
        assert!(
            age >= Duration::from_secs(10) && age < Duration::from_secs(12),
            "{age:?}"
        );
    }
}
