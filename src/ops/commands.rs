//! The `topics` and `dlq` commands: each returns what to print, as an
//! aligned table or as JSON (`--json`), so the binary stays a dispatcher.

use std::io::Write;
use std::sync::atomic::AtomicBool;

use super::topics::TailFrom;
use super::{dlq, table, topics, Inventory};
use crate::db::PgPool;
use crate::kafka::EventProducer;

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

pub fn topics_list(inv: &Inventory, as_json: bool) -> anyhow::Result<String> {
    let list = topics::list(&inv.brokers, &inv.topics())?;
    if as_json {
        return json(&list);
    }
    let rows = list
        .iter()
        .map(|t| {
            let low: i64 = t.partitions.iter().map(|p| p.low).sum();
            let high: i64 = t.partitions.iter().map(|p| p.high).sum();
            vec![
                t.topic.clone(),
                if t.exists {
                    t.partitions.len().to_string()
                } else {
                    "missing".into()
                },
                low.to_string(),
                high.to_string(),
                t.messages.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    Ok(table(
        &["TOPIC", "PARTITIONS", "LOW", "HIGH", "MESSAGES"],
        &rows,
    ))
}

pub fn topics_lag(inv: &Inventory, group: Option<&str>, as_json: bool) -> anyhow::Result<String> {
    let groups: Vec<(String, String)> = match group {
        // An unknown group is checked against every topic of ours.
        Some(g) => match inv.groups().into_iter().find(|(name, _)| name == g) {
            Some(known) => vec![known],
            None => inv
                .topics()
                .into_iter()
                .map(|t| (g.to_owned(), t))
                .collect(),
        },
        None => inv.groups(),
    };
    let rows = topics::lag(&inv.brokers, inv.fetch_max_bytes, &groups)?;
    if as_json {
        return json(&rows);
    }
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                r.group.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                r.committed.map_or("-".into(), |c| c.to_string()),
                r.high.to_string(),
                r.lag.to_string(),
                r.oldest_age_seconds
                    .map_or("-".into(), |s| format!("{s:.1}s")),
            ]
        })
        .collect::<Vec<_>>();
    let total: i64 = rows.iter().map(|r| r.lag).sum();
    let oldest = rows
        .iter()
        .filter_map(|r| r.oldest_age_seconds)
        .fold(0.0, f64::max);
    Ok(format!(
        "{}\ntotal lag: {total}, oldest waiting: {oldest:.1}s",
        table(
            &[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "HIGH",
                "LAG",
                "AGE"
            ],
            &cells
        )
    ))
}

/// What `topics tail` should print.
pub struct TailRequest {
    pub topic: String,
    pub from: topics::TailFrom,
    pub key: Option<String>,
    pub follow: bool,
    pub json: bool,
}

pub fn topics_tail(
    inv: &Inventory,
    req: &TailRequest,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut failed = None;
    topics::tail(
        &inv.brokers,
        &req.topic,
        req.from,
        req.key.as_deref(),
        req.follow,
        stop,
        |m| {
            let decoded = topics::TailedMessage::from_message(m);
            let text = if req.json {
                serde_json::to_string(&decoded).unwrap_or_default()
            } else {
                decoded.render()
            };
            if let Err(e) = writeln!(out, "{text}") {
                failed.get_or_insert(e);
            }
        },
    )?;
    failed.map_or(Ok(()), |e| Err(e.into()))
}

pub fn dlq_list(
    inv: &Inventory,
    pool: &PgPool,
    include_replayed: bool,
    as_json: bool,
) -> anyhow::Result<String> {
    let letters: Vec<_> = dlq::list(
        &inv.brokers,
        &mut *pool.get()?,
        &inv.dead_letter_topics(),
        TailFrom::Beginning,
    )?
    .into_iter()
    .filter(|l| include_replayed || l.replayed_at.is_none())
    .collect();
    if as_json {
        return json(&letters);
    }
    let rows = letters
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.failed_at.clone().unwrap_or_default(),
                l.key.clone().unwrap_or_default(),
                l.replayed_at.map_or("-".into(), |t| t.to_rfc3339()),
                l.error
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(100)
                    .collect(),
            ]
        })
        .collect::<Vec<_>>();
    Ok(format!(
        "{}\n{} dead letter(s)",
        table(&["ID", "FAILED AT", "KEY", "REPLAYED", "ERROR"], &rows),
        letters.len()
    ))
}

pub fn dlq_show(inv: &Inventory, pool: &PgPool, id: &str, as_json: bool) -> anyhow::Result<String> {
    let letter = find(inv, pool, id)?;
    if as_json {
        return json(&serde_json::json!({"dead_letter": letter, "message": letter.message}));
    }
    let message = letter
        .message
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    Ok(format!(
        "id: {}\nerror: {}\nsource: {}:{}:{}\nreplayed: {}\n{message}",
        letter.id,
        letter.error.as_deref().unwrap_or("-"),
        letter.source_topic.as_deref().unwrap_or("-"),
        letter
            .source_partition
            .map_or("-".into(), |p| p.to_string()),
        letter.source_offset.map_or("-".into(), |o| o.to_string()),
        letter.replayed_at.map_or("no".into(), |t| t.to_rfc3339()),
    ))
}

/// An id that names no dead letter of ours (the API answers 404).
#[derive(Debug, thiserror::Error)]
pub enum NoSuchDeadLetter {
    #[error("no dead letter {0:?}: ids are topic:partition:offset")]
    Malformed(String),
    #[error("no dead letter {id}: {topic} is not one of our dead-letter topics")]
    NotOurs { id: String, topic: String },
    #[error("no dead letter {0}")]
    Absent(String),
}

fn find(inv: &Inventory, pool: &PgPool, id: &str) -> anyhow::Result<dlq::DeadLetter> {
    let (topic, _, _) =
        dlq::parse_id(id).ok_or_else(|| NoSuchDeadLetter::Malformed(id.to_owned()))?;
    if !inv.dead_letter_topics().contains(&topic) {
        return Err(NoSuchDeadLetter::NotOurs {
            id: id.to_owned(),
            topic,
        }
        .into());
    }
    dlq::get(&inv.brokers, &mut *pool.get()?, id)?
        .ok_or_else(|| NoSuchDeadLetter::Absent(id.to_owned()).into())
}

/// Which dead letters to replay.
pub enum Selection {
    Ids(Vec<String>),
    /// Every one not replayed yet.
    AllPending,
}

pub async fn dlq_replay(
    inv: &Inventory,
    pool: &PgPool,
    producer: &EventProducer,
    selection: Selection,
) -> anyhow::Result<Vec<String>> {
    let chosen = {
        let (inv, pool) = (inv.clone(), pool.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<dlq::DeadLetter>> {
            match selection {
                Selection::AllPending => Ok(dlq::list(
                    &inv.brokers,
                    &mut *pool.get()?,
                    &inv.dead_letter_topics(),
                    TailFrom::Beginning,
                )?
                .into_iter()
                .filter(|l| l.replayed_at.is_none())
                .collect()),
                // Each read at its own offset, not by scanning the topics.
                Selection::Ids(ids) => ids.iter().map(|id| find(&inv, &pool, id)).collect(),
            }
        })
        .await??
    };
    // What was sent is recorded even when a later send failed, so the
    // list shows those replayed and the error says which they were.
    let (done, failed) = match dlq::replay(producer, &chosen).await {
        Ok(done) => (done, None),
        Err(partial) => (partial.done.clone(), Some(partial)),
    };
    if !done.is_empty() {
        let (pool, sent) = (pool.clone(), done.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            Ok(dlq::record_replays(&mut *pool.get()?, &sent)?)
        })
        .await?
        .map_err(|e| {
            let also = failed
                .as_ref()
                .map(|p| format!("; the rest were not sent: {:#}", p.error))
                .unwrap_or_default();
            e.context(format!(
                "replayed {} but could not record it{also}",
                done.join(", ")
            ))
        })?;
    }
    match failed {
        Some(partial) => Err(partial.into()),
        None => Ok(done),
    }
}
