//! The console's pages: one askama template each, filled from what
//! [`Operator`](crate::ops::operator::Operator) reads. Every value is
//! escaped by the templates; only the charts, drawn here, go in as markup.

use askama::Template;
use chrono::{DateTime, Utc};

use crate::ops::dlq::DeadLetter;
use crate::ops::overview::Overview;
use crate::ops::topics::{LagRow, TailedMessage, TopicInfo};

use super::chart::{self, Series};

/// What every page around its content shows.
pub struct Chrome {
    pub title: String,
    /// Which section is current in the navigation.
    pub section: &'static str,
    pub csrf: String,
    pub notices: Vec<String>,
    pub problems: Vec<String>,
    /// Loads the live-refresh script (the overview only).
    pub refresh: bool,
}

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// A `<select>`'s option.
pub struct Opt {
    pub value: String,
    pub selected: bool,
}

/// Options from `values`, the one equal to `chosen` selected.
pub fn options<S: AsRef<str>>(values: &[S], chosen: &str) -> Vec<Opt> {
    values
        .iter()
        .map(|v| Opt {
            value: v.as_ref().to_owned(),
            selected: v.as_ref() == chosen,
        })
        .collect()
}

const SECTIONS: &[(&str, &str, &str)] = &[
    ("/console", "Overview", "overview"),
    ("/console/topics", "Topics", "topics"),
    ("/console/dlq", "Dead letters", "dlq"),
    ("/console/sync", "Sync", "sync"),
    ("/console/apps", "Apps", "apps"),
    ("/console/mirror", "Mirror", "mirror"),
];

impl Chrome {
    pub fn new(title: impl Into<String>, section: &'static str, csrf: &str) -> Self {
        Self {
            title: title.into(),
            section,
            csrf: csrf.to_owned(),
            notices: Vec::new(),
            problems: Vec::new(),
            refresh: false,
        }
    }

    pub fn nav(&self) -> Vec<NavItem> {
        SECTIONS
            .iter()
            .map(|(href, label, key)| NavItem {
                href,
                label,
                current: *key == self.section,
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct Login {
    pub problem: Option<String>,
}

#[derive(Template)]
#[template(path = "problem.html")]
pub struct Problem {
    pub chrome: Chrome,
    pub back: String,
}

pub struct ProcessRow {
    pub name: String,
    pub status: String,
    pub last_error: String,
}

pub struct GroupRow {
    pub group: String,
    pub topic: String,
    pub lag: i64,
    pub age: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub read_at: String,
    pub processes: Vec<ProcessRow>,
    pub groups: Vec<GroupRow>,
    pub events_in: String,
    pub applied: String,
    pub outbox: String,
    pub dead_letters: Vec<(String, i64)>,
    pub lag_chart: String,
    pub rate_chart: String,
}

impl OverviewPage {
    pub fn new(mut chrome: Chrome, o: &Overview, now: DateTime<Utc>) -> Self {
        chrome.refresh = true;
        chrome.problems.extend(o.problems.iter().cloned());
        let since = |at: DateTime<Utc>, first: DateTime<Utc>| {
            (at - first).num_milliseconds() as f64 / 1000.0
        };
        let first = o.history.first().map(|s| s.at).unwrap_or(now);
        let rate_first = o.rate_history.first().map(|r| r.at).unwrap_or(now);
        let per_sec = |v: Option<f64>| {
            v.map_or("measured after the next sample".to_owned(), |v| {
                format!("{v:.1}/s")
            })
        };
        Self {
            read_at: now.format("%H:%M:%S UTC").to_string(),
            processes: o
                .processes
                .iter()
                .map(|p| ProcessRow {
                    name: p.name.clone(),
                    status: p.status.clone(),
                    last_error: match p.status.as_str() {
                        "unreachable" => p
                            .report
                            .as_ref()
                            .and_then(|r| r["error"].as_str())
                            .map(|e| {
                                format!("no answer at {}: {e}", p.url.as_deref().unwrap_or("?"))
                            })
                            .unwrap_or_default(),
                        _ => p.last_error().unwrap_or_else(|| "none".into()),
                    },
                })
                .collect(),
            groups: o
                .groups
                .iter()
                .map(|g| GroupRow {
                    group: g.group.clone(),
                    topic: g.topic.clone(),
                    lag: g.lag,
                    age: g
                        .oldest_age_seconds
                        .map_or("?".into(), |a| format!("{a:.1}")),
                })
                .collect(),
            events_in: per_sec(o.rates.map(|r| r.events_in_per_sec)),
            applied: per_sec(o.rates.map(|r| r.applied_per_sec)),
            outbox: match &o.outbox {
                None => "unavailable".into(),
                Some(b) => match b.oldest_created_at {
                    Some(at) => format!(
                        "{} unpublished, oldest {} s",
                        b.unpublished,
                        (now - at).num_seconds().max(0)
                    ),
                    None => "empty".into(),
                },
            },
            dead_letters: o
                .dead_letters
                .iter()
                .map(|d| (d.topic.clone(), d.messages))
                .collect(),
            lag_chart: chart::lines(
                "Lag, last hour",
                "messages",
                &[Series {
                    label: "lag",
                    colour: "#0b57b5",
                    points: o
                        .history
                        .iter()
                        .map(|s| (since(s.at, first), s.lag as f64))
                        .collect(),
                }],
            ),
            rate_chart: chart::lines(
                "Throughput, last hour",
                "events/s",
                &[
                    Series {
                        label: "in",
                        colour: "#0b57b5",
                        points: o
                            .rate_history
                            .iter()
                            .map(|r| (since(r.at, rate_first), r.events_in_per_sec))
                            .collect(),
                    },
                    Series {
                        label: "applied",
                        colour: "#b5410b",
                        points: o
                            .rate_history
                            .iter()
                            .map(|r| (since(r.at, rate_first), r.applied_per_sec))
                            .collect(),
                    },
                ],
            ),
            chrome,
        }
    }
}

pub struct LagView {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: String,
    pub high: i64,
    pub lag: i64,
    pub age: String,
}

impl From<&LagRow> for LagView {
    fn from(r: &LagRow) -> Self {
        Self {
            group: r.group.clone(),
            topic: r.topic.clone(),
            partition: r.partition,
            committed: r.committed.map_or("none".into(), |c| c.to_string()),
            high: r.high,
            lag: r.lag,
            age: r
                .oldest_age_seconds
                .map_or("?".into(), |a| format!("{a:.1}")),
        }
    }
}

#[derive(Template)]
#[template(path = "topics.html")]
pub struct TopicsPage {
    pub chrome: Chrome,
    pub topics: Vec<TopicInfo>,
    pub lag: Vec<LagView>,
}

pub struct MessageView {
    pub partition: i32,
    pub offset: i64,
    pub time: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: String,
}

impl From<&TailedMessage> for MessageView {
    fn from(m: &TailedMessage) -> Self {
        Self {
            partition: m.partition,
            offset: m.offset,
            time: m
                .timestamp_ms
                .and_then(DateTime::from_timestamp_millis)
                .map_or("-".into(), |t| t.to_rfc3339()),
            key: m.key.clone().unwrap_or_else(|| "-".into()),
            headers: m.headers.clone().into_iter().collect(),
            payload: serde_json::to_string_pretty(&m.payload).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "messages.html")]
pub struct MessagesPage {
    pub chrome: Chrome,
    pub topic: String,
    pub last: i64,
    pub key: String,
    /// Why the read stopped before the end (its cap on messages or time).
    pub incomplete: Option<String>,
    pub messages: Vec<MessageView>,
}

pub struct LetterView {
    pub id: String,
    pub source: String,
    pub key: String,
    pub error: String,
    pub failed_at: String,
    pub replayed: String,
}

impl From<&DeadLetter> for LetterView {
    fn from(l: &DeadLetter) -> Self {
        Self {
            id: l.id.clone(),
            source: match (&l.source_topic, l.source_partition, l.source_offset) {
                (Some(t), Some(p), Some(o)) => format!("{t} {p}:{o}"),
                (Some(t), _, _) => t.clone(),
                _ => "?".into(),
            },
            key: l.key.clone().unwrap_or_default(),
            error: l.error.clone().unwrap_or_default(),
            failed_at: l.failed_at.clone().unwrap_or_default(),
            replayed: l
                .replayed_at
                .map_or("not yet".into(), |t| format!("at {}", t.to_rfc3339())),
        }
    }
}

#[derive(Template)]
#[template(path = "dlq.html")]
pub struct DeadLettersPage {
    pub chrome: Chrome,
    pub letters: Vec<LetterView>,
}

#[derive(Template)]
#[template(path = "dlq_letter.html")]
pub struct DeadLetterPage {
    pub chrome: Chrome,
    pub letter: LetterView,
    pub headers: Vec<(String, String)>,
    pub payload: String,
}

#[derive(Template)]
#[template(path = "dlq_confirm.html")]
pub struct ConfirmReplayPage {
    pub chrome: Chrome,
    pub ids: Vec<String>,
}

pub struct SyncRow {
    pub customer_id: String,
    pub email: String,
    pub service: String,
    pub status: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "sync.html")]
pub struct SyncPage {
    pub chrome: Chrome,
    pub services: Vec<Opt>,
    pub statuses: Vec<Opt>,
    pub rows: Vec<SyncRow>,
}

pub struct EmailRow {
    pub id: i64,
    pub session_id: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: String,
}

pub struct ExportRow {
    pub name: String,
    pub last_xid: i64,
    pub last_seq: i64,
    pub runs: i64,
    pub delivered: i64,
    pub updated_at: String,
}

pub struct LedgerRow {
    pub at: String,
    pub kind: String,
    pub amount: i64,
    pub details: String,
}

pub struct CreditsView {
    pub balance: i64,
    pub rows: Vec<LedgerRow>,
}

pub struct RefundRow {
    pub id: String,
    pub payment_intent: String,
    pub amount: String,
    pub status: String,
    pub refund_id: String,
    pub error: String,
    pub updated_at: String,
}

#[derive(Template)]
#[template(path = "apps.html")]
pub struct AppsPage {
    pub chrome: Chrome,
    pub emails: Vec<EmailRow>,
    pub exports: Vec<ExportRow>,
    pub customer: String,
    pub credits: Option<CreditsView>,
    pub refund_status: String,
    pub refund_statuses: Vec<Opt>,
    pub refunds: Vec<RefundRow>,
}

pub struct FieldView {
    pub name: String,
    pub kind: &'static str,
    pub value: String,
}

pub struct MirrorRow {
    pub id: String,
    pub account: String,
    pub deleted: bool,
    pub synced_at: String,
    pub cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "mirror.html")]
pub struct MirrorPage {
    pub chrome: Chrome,
    pub relations: Vec<Opt>,
    pub relation: String,
    pub fields: Vec<FieldView>,
    pub limit: i64,
    /// The typed columns shown as table cells.
    pub shown: Vec<String>,
    pub rows: Vec<MirrorRow>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "object.html")]
pub struct ObjectPage {
    pub chrome: Chrome,
    pub relation: String,
    pub json: String,
}
