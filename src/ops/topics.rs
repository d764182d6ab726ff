//! Topic listing, consumer lag and tailing. Nothing here joins a worker's
//! group or commits an offset: inspection never disturbs the workers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::kafka::age;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A client for reading only: assigned partitions, no subscriptions, no
/// commits. The group id is required by librdkafka but never joined.
pub fn reader(brokers: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("stripe-sync.inspect.{:08x}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?)
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TopicInfo {
    pub topic: String,
    pub exists: bool,
    pub partitions: Vec<PartitionInfo>,
    /// Messages currently retained (sum of high − low).
    pub messages: i64,
}

fn partitions_of(client: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let md = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .context("cannot reach Kafka")?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

pub fn list(brokers: &str, topics: &[String]) -> anyhow::Result<Vec<TopicInfo>> {
    let client = reader(brokers)?;
    topics
        .iter()
        .map(|topic| {
            let mut partitions = Vec::new();
            for p in partitions_of(&client, topic)? {
                let (low, high) = client.fetch_watermarks(topic, p, TIMEOUT)?;
                partitions.push(PartitionInfo {
                    partition: p,
                    low,
                    high,
                });
            }
            partitions.sort_by_key(|p| p.partition);
            Ok(TopicInfo {
                topic: topic.clone(),
                exists: !partitions.is_empty(),
                messages: partitions.iter().map(|p| p.high - p.low).sum(),
                partitions,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LagRow {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// Next offset the group will read; none if it never committed.
    pub committed: Option<i64>,
    pub high: i64,
    pub lag: i64,
    /// How long the oldest message the group has not committed yet has
    /// been waiting (0 when caught up; none when it could not be read).
    pub oldest_age_seconds: Option<f64>,
}

/// Committed offset, high watermark, lag and the age of the oldest message
/// not committed for each (group, topic).
pub fn lag(
    brokers: &str,
    fetch_max_bytes: usize,
    groups: &[(String, String)],
) -> anyhow::Result<Vec<LagRow>> {
    let mut rows = Vec::new();
    // Reads the message each lagging partition waits on, for its age.
    let peek = age::peek_client(
        brokers,
        &format!("stripe-sync.inspect.{:08x}", rand::random::<u32>()),
        fetch_max_bytes,
    )?;
    for (group, topic) in groups {
        // Reading a group's committed offsets needs its id, but the client
        // never subscribes, so the group's members are not disturbed.
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let partitions = partitions_of(&client, topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(topic, *p);
        }
        let committed = client.committed_offsets(tpl, TIMEOUT)?;
        let mut group_rows = Vec::new();
        for p in partitions {
            let (low, high) = client.fetch_watermarks(topic, p, TIMEOUT)?;
            let committed = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            group_rows.push(LagRow {
                group: group.clone(),
                topic: topic.clone(),
                partition: p,
                committed,
                high,
                lag: high - committed.unwrap_or(low),
                oldest_age_seconds: None,
            });
        }
        let behind: Vec<(i32, i64)> = group_rows
            .iter()
            .filter(|r| r.lag > 0)
            .map(|r| (r.partition, r.high - r.lag))
            .collect();
        let ages = age::oldest_unread_ages(&peek, topic, &behind, TIMEOUT);
        for row in &mut group_rows {
            row.oldest_age_seconds = if row.lag == 0 {
                Some(0.0)
            } else {
                ages.get(&row.partition).map(Duration::as_secs_f64)
            };
        }
        rows.extend(group_rows);
    }
    rows.sort_by(|a, b| (&a.group, a.partition).cmp(&(&b.group, b.partition)));
    Ok(rows)
}

/// Where tailing starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    Beginning,
    /// The last N messages of each partition.
    Last(i64),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TailedMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// JSON when the payload is JSON, otherwise its text (lossy).
    pub payload: serde_json::Value,
}

impl TailedMessage {
    pub fn from_message<M: Message>(m: &M) -> Self {
        let payload = m.payload().unwrap_or_default();
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            payload: serde_json::from_slice(payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
            }),
        }
    }

    /// `key` `partition:offset` `timestamp`, headers, then pretty JSON.
    pub fn render(&self) -> String {
        let ts = self
            .timestamp_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into());
        let mut out = format!(
            "--- {} partition {} offset {}  {}  key={}\n",
            self.topic,
            self.partition,
            self.offset,
            ts,
            self.key.as_deref().unwrap_or("-")
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push_str(&serde_json::to_string_pretty(&self.payload).unwrap_or_default());
        out
    }
}

/// A topic the broker does not have (never created, or deleted).
#[derive(Debug, thiserror::Error)]
#[error("topic {0} does not exist")]
pub struct NoSuchTopic(pub String);

/// Reads `topic` from `from`, calling `each` per message (filtered by
/// `key`; see [`TailedMessage::from_message`] to decode one). Without
/// `follow` it stops at the high watermarks seen at start; with it, it
/// runs until `stop` is set. A missing topic is a [`NoSuchTopic`].
pub fn tail(
    brokers: &str,
    topic: &str,
    from: TailFrom,
    key: Option<&str>,
    follow: bool,
    stop: &AtomicBool,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let client = reader(brokers)?;
    let partitions = partitions_of(&client, topic)?;
    if partitions.is_empty() {
        return Err(NoSuchTopic(topic.to_owned()).into());
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in &partitions {
        let (low, high) = client.fetch_watermarks(topic, *p, TIMEOUT)?;
        let start = match from {
            TailFrom::Beginning => low,
            TailFrom::Last(n) => (high - n).max(low),
        };
        tpl.add_partition_offset(topic, *p, Offset::Offset(start))?;
        if start < high {
            ends.insert(*p, high);
        }
    }
    client.assign(&tpl)?;
    while !stop.load(Ordering::Relaxed) && (follow || !ends.is_empty()) {
        let Some(result) = client.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = result?;
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
        if key.is_some_and(|k| m.key() != Some(k.as_bytes())) {
            continue;
        }
        each(&m);
    }
    Ok(())
}
