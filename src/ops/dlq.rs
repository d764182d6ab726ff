//! Dead letters: list them with their error, show one, and put them back on
//! their source topic once the cause is fixed. Replays are recorded in
//! `dlq_replays`; replaying twice is harmless anyway (the ledger and the
//! outbox delivery records make the second apply a no-op).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::topics::{self, TailFrom, TailedMessage};
use crate::db::schema::dlq_replays;
use crate::kafka::envelope::{self, HeaderList};
use crate::kafka::EventProducer;

const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// `<dlq topic>:<partition>:<offset>`, stable for the message's life.
    pub id: String,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub error: Option<String>,
    pub failed_at: Option<String>,
    pub key: Option<String>,
    pub event_id: Option<String>,
    pub replayed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    raw: RawMessage,
    /// The decoded message, for `show`.
    #[serde(skip)]
    pub message: Option<TailedMessage>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RawMessage {
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: HeaderList,
}

pub fn id_of(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}:{partition}:{offset}")
}

/// Splits an id into (topic, partition, offset); topics may contain ':'.
pub fn parse_id(id: &str) -> Option<(String, i32, i64)> {
    let (rest, offset) = id.rsplit_once(':')?;
    let (topic, partition) = rest.rsplit_once(':')?;
    Some((
        topic.to_owned(),
        partition.parse().ok()?,
        offset.parse().ok()?,
    ))
}

/// Dead letters on the given topics, oldest first per partition, with
/// their replay status: every one (`TailFrom::Beginning`, for the CLI and
/// `replay --all`), or the last N of each partition (the admin API, which
/// must not read whole topics per request).
pub fn list(
    brokers: &str,
    conn: &mut PgConnection,
    dlq_topics: &[String],
    window: TailFrom,
) -> anyhow::Result<Vec<DeadLetter>> {
    let replayed = replays(conn)?;
    let mut out = Vec::new();
    for topic in dlq_topics {
        let stop = AtomicBool::new(false);
        let result = topics::tail(brokers, topic, window, None, false, &stop, |m| {
            out.push(letter(topic, m, &replayed));
        });
        match result {
            Ok(()) => {}
            // A dead-letter topic that was never created holds nothing.
            Err(e) if e.is::<topics::NoSuchTopic>() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// One dead letter by id, read at its offset alone; `None` when the topic
/// holds no such offset.
pub fn get(brokers: &str, conn: &mut PgConnection, id: &str) -> anyhow::Result<Option<DeadLetter>> {
    let Some((topic, partition, offset)) = parse_id(id) else {
        return Ok(None);
    };
    let client = topics::reader(brokers)?;
    let Ok((low, high)) = client.fetch_watermarks(&topic, partition, READ_TIMEOUT) else {
        return Ok(None);
    };
    if offset < low || offset >= high {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
    client.assign(&tpl)?;
    let replayed = replays(conn)?;
    let deadline = std::time::Instant::now() + READ_TIMEOUT * 2;
    while std::time::Instant::now() < deadline {
        if let Some(m) = client.poll(Duration::from_millis(200)) {
            let m = m?;
            if m.offset() == offset {
                return Ok(Some(letter(&topic, &m, &replayed)));
            }
        }
    }
    anyhow::bail!("timed out reading dead letter {id}")
}

type Replays = HashMap<(String, i32, i64), DateTime<Utc>>;

fn replays(conn: &mut PgConnection) -> QueryResult<Replays> {
    Ok(dlq_replays::table
        .select((
            dlq_replays::dlq_topic,
            dlq_replays::partition,
            dlq_replays::offset,
            dlq_replays::replayed_at,
        ))
        .load::<(String, i32, i64, DateTime<Utc>)>(conn)?
        .into_iter()
        .map(|(t, p, o, at)| ((t, p, o), at))
        .collect())
}

fn letter(topic: &str, m: &BorrowedMessage<'_>, replayed: &Replays) -> DeadLetter {
    let headers = envelope::from_headers(m.headers());
    let h = |k: &str| envelope::header(&headers, k).map(str::to_owned);
    DeadLetter {
        id: id_of(topic, m.partition(), m.offset()),
        source_topic: h(envelope::H_DLQ_SOURCE_TOPIC),
        source_partition: h(envelope::H_DLQ_SOURCE_PARTITION).and_then(|p| p.parse().ok()),
        source_offset: h(envelope::H_DLQ_SOURCE_OFFSET).and_then(|p| p.parse().ok()),
        error: h(envelope::H_DLQ_ERROR),
        failed_at: h(envelope::H_DLQ_FAILED_AT),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        event_id: m
            .payload()
            .and_then(envelope::event_id_in)
            .or_else(|| h("outbox-id").map(|id| format!("outbox {id}"))),
        replayed_at: replayed
            .get(&(topic.to_owned(), m.partition(), m.offset()))
            .copied(),
        message: Some(TailedMessage::from_message(m)),
        raw: RawMessage {
            key: m.key().unwrap_or_default().to_vec(),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        },
    }
}

/// Produces each dead letter back onto its source topic (same key and
/// payload, original headers with `replayed-from` naming this dead letter)
/// and returns the ids sent. A letter that was itself a replay had a
/// `replayed-from` of its own: it is replaced, not kept beside the new one,
/// since consumers key a replay's writes on it (stripe-outbound's
/// idempotency key), and the old key would get Stripe's saved answer to
/// the attempt that failed.
pub async fn replay(
    producer: &EventProducer,
    letters: &[DeadLetter],
) -> Result<Vec<String>, PartialReplay> {
    let mut done = Vec::new();
    for letter in letters {
        if let Err(error) = replay_one(producer, letter).await {
            return Err(PartialReplay { done, error });
        }
        done.push(letter.id.clone());
    }
    Ok(done)
}

/// A replay that stopped part way: `done` were sent before `error`.
#[derive(Debug, thiserror::Error)]
#[error("{}", match done.len() {
    0 => format!("nothing was replayed: {error:#}"),
    n => format!("replayed {n} ({}) before failing: {error:#}", done.join(", ")),
})]
pub struct PartialReplay {
    pub done: Vec<String>,
    pub error: anyhow::Error,
}

async fn replay_one(producer: &EventProducer, letter: &DeadLetter) -> anyhow::Result<()> {
    let source = letter.source_topic.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no {} header",
            letter.id,
            envelope::H_DLQ_SOURCE_TOPIC
        )
    })?;
    let mut headers: HeaderList = letter
        .raw
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("dlq-") && k != envelope::H_REPLAYED_FROM)
        .cloned()
        .collect();
    headers.push((
        envelope::H_REPLAYED_FROM.into(),
        letter.id.clone().into_bytes(),
    ));
    producer
        .send(source, &letter.raw.key, &letter.raw.payload, &headers)
        .await?;
    Ok(())
}

pub fn record_replays(conn: &mut PgConnection, ids: &[String]) -> QueryResult<()> {
    for id in ids {
        if let Some((topic, partition, offset)) = parse_id(id) {
            diesel::insert_into(dlq_replays::table)
                .values((
                    dlq_replays::dlq_topic.eq(topic),
                    dlq_replays::partition.eq(partition),
                    dlq_replays::offset.eq(offset),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_round_trip_even_with_colons_in_topics() {
        let id = super::id_of("a:b.dlq", 2, 41);
        assert_eq!(super::parse_id(&id), Some(("a:b.dlq".to_owned(), 2, 41)));
        assert_eq!(super::parse_id("nope"), None);
    }
}
