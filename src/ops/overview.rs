//! "Is it keeping up?" in one read: every process's readiness, each
//! worker group's lag in messages and seconds, dead letters per topic, the
//! outbox's backlog, and the last hour's throughput. Served as
//! `GET /api/admin/overview` and drawn by the console's first page.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::history::{History, Rates, Sample};
use super::{topics, Inventory};
use crate::config::{ConfigError, Env};
use crate::db::PgPool;

/// A process whose `/readyz` the overview reads (`CONSOLE_PROCESSES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEndpoint {
    pub name: String,
    /// Where it serves `/readyz` (its `METRICS_ADDR`).
    pub base_url: url::Url,
}

/// The workers' own `METRICS_ADDR` defaults, which `CONSOLE_PROCESSES`
/// replaces when set.
const DEFAULT_PROCESSES: &[(&str, u16)] = &[
    ("stripe-inbound", 9101),
    ("outbox-relay", 9102),
    ("stripe-outbound", 9103),
    ("order-notifier", 9104),
    ("stripe-commands", 9105),
];
const DEFAULT_SALESFORCE_PROCESSES: &[(&str, u16)] =
    &[("salesforce-outbound", 9106), ("salesforce-inbound", 9107)];

/// `CONSOLE_PROCESSES=name=http://host:port,…`; unset, each worker at its
/// default `METRICS_ADDR` on this host (the Salesforce ones when the
/// adapter is configured); `none`, none.
pub fn processes(env: &Env) -> Result<Vec<ProcessEndpoint>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "CONSOLE_PROCESSES",
        reason,
    };
    let Some(raw) = env.get("CONSOLE_PROCESSES") else {
        let salesforce = crate::config::SalesforceConfig::is_configured(env);
        return Ok(DEFAULT_PROCESSES
            .iter()
            .chain(
                salesforce
                    .then_some(DEFAULT_SALESFORCE_PROCESSES)
                    .into_iter()
                    .flatten(),
            )
            .map(|(name, port)| ProcessEndpoint {
                name: (*name).to_owned(),
                base_url: format!("http://127.0.0.1:{port}/")
                    .parse()
                    .expect("a valid URL"),
            })
            .collect());
    };
    let mut out = Vec::new();
    if raw == "none" {
        return Ok(out);
    }
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = entry
            .split_once('=')
            .ok_or_else(|| invalid(format!("{entry:?} is not name=http://host:port")))?;
        // A base without a trailing slash would lose its last segment
        // when `readyz` is joined to it.
        let address = address.trim();
        let address = if address.ends_with('/') {
            address.to_owned()
        } else {
            format!("{address}/")
        };
        let base_url = url::Url::parse(&address)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| invalid(format!("{address:?} (of {name}) is not an http(s) URL")))?;
        if name.trim().is_empty() || out.iter().any(|p: &ProcessEndpoint| p.name == name.trim()) {
            return Err(invalid(format!("{name:?} is empty or named twice")));
        }
        out.push(ProcessEndpoint {
            name: name.trim().to_owned(),
            base_url,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessHealth {
    pub name: String,
    pub url: Option<String>,
    /// `ready`, `not_ready` or `unreachable`.
    pub status: String,
    /// What `/readyz` says: its checks, failures and the last error.
    pub report: Option<serde_json::Value>,
}

impl ProcessHealth {
    /// The process's last error, as `/readyz` reports it.
    pub fn last_error(&self) -> Option<String> {
        let report = self.report.as_ref()?;
        let last = &report["last_error"];
        let failures = report["failures"].as_array().and_then(|f| f.last());
        match (failures, last["message"].as_str()) {
            (Some(failure), _) => failure.as_str().map(str::to_owned),
            (None, Some(message)) => Some(format!(
                "{} ({})",
                message,
                last["at"].as_str().unwrap_or("?")
            )),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub lag: i64,
    /// How long the oldest uncommitted message has waited, over the
    /// group's partitions; none when one could not be read.
    pub oldest_age_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterCount {
    pub topic: String,
    pub messages: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxBacklog {
    pub unpublished: i64,
    pub oldest_created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub processes: Vec<ProcessHealth>,
    pub groups: Vec<GroupLag>,
    pub dead_letters: Vec<DeadLetterCount>,
    /// `None` when Postgres could not be read (see `problems`).
    pub outbox: Option<OutboxBacklog>,
    /// What could not be read, section by section.
    pub problems: Vec<String>,
    /// Throughput over the last sampling interval, once two samples exist.
    pub rates: Option<Rates>,
    pub history: Vec<Sample>,
    pub rate_history: Vec<Rates>,
}

/// Everything the overview shows. `own` is serve's own readiness, read in
/// process rather than over HTTP.
pub async fn gather(
    inv: &Inventory,
    pool: &PgPool,
    processes: &[ProcessEndpoint],
    own: ProcessHealth,
    history: &History,
) -> anyhow::Result<Overview> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut polled = vec![own];
    polled.extend(futures::future::join_all(processes.iter().map(|p| readiness(&client, p))).await);
    // Each section is read on its own: with Kafka down the processes'
    // health and the outbox still show, and the reason for the rest.
    let (groups, dead_letters, outbox, problems) = {
        let (inv, pool) = (inv.clone(), pool.clone());
        tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            let mut note = |what: &str, e: anyhow::Error| problems.push(format!("{what}: {e:#}"));
            let groups = match group_lags(&inv) {
                Ok(groups) => groups,
                Err(e) => {
                    note("consumer lag unavailable", e);
                    Vec::new()
                }
            };
            let dead_letters = match topics::list(&inv.brokers, &inv.dead_letter_topics()) {
                Ok(list) => list
                    .into_iter()
                    .map(|t| DeadLetterCount {
                        topic: t.topic,
                        messages: t.messages,
                    })
                    .collect(),
                Err(e) => {
                    note("dead letters unavailable", e);
                    Vec::new()
                }
            };
            let outbox = pool
                .get()
                .map_err(anyhow::Error::from)
                .and_then(|mut conn| Ok(crate::outbox::backlog(&mut conn)?));
            let outbox = match outbox {
                Ok((unpublished, oldest_created_at)) => Some(OutboxBacklog {
                    unpublished,
                    oldest_created_at,
                }),
                Err(e) => {
                    note("outbox backlog unavailable", e);
                    None
                }
            };
            (groups, dead_letters, outbox, problems)
        })
        .await?
    };
    let rate_history = history.rates();
    Ok(Overview {
        processes: polled,
        groups,
        dead_letters,
        outbox,
        problems,
        rates: rate_history.last().copied(),
        history: history.samples(),
        rate_history,
    })
}

/// Lag per worker group, summed over its partitions.
fn group_lags(inv: &Inventory) -> anyhow::Result<Vec<GroupLag>> {
    let rows = topics::lag(&inv.brokers, inv.fetch_max_bytes, &inv.groups())?;
    Ok(inv
        .groups()
        .into_iter()
        .map(|(group, topic)| {
            let mine: Vec<&topics::LagRow> = rows
                .iter()
                .filter(|r| r.group == group && r.topic == topic)
                .collect();
            GroupLag {
                lag: mine.iter().map(|r| r.lag).sum(),
                oldest_age_seconds: mine
                    .iter()
                    .map(|r| r.oldest_age_seconds)
                    .try_fold(0.0_f64, |max, age| age.map(|a| max.max(a))),
                group,
                topic,
            }
        })
        .collect())
}

async fn readiness(client: &reqwest::Client, p: &ProcessEndpoint) -> ProcessHealth {
    let url = p.base_url.join("readyz").expect("a relative path joins");
    let answer = async {
        let response = client.get(url.clone()).send().await?;
        response.json::<serde_json::Value>().await
    }
    .await;
    let (status, report) = match answer {
        Ok(body) => (
            body["status"].as_str().unwrap_or("not_ready").to_owned(),
            Some(body),
        ),
        Err(e) => (
            "unreachable".to_owned(),
            Some(serde_json::json!({ "error": e.to_string() })),
        ),
    };
    ProcessHealth {
        name: p.name.clone(),
        url: Some(url.to_string()),
        status,
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_default_to_the_workers_ports_and_parse_a_list() {
        let none = Env::from_pairs([("KAFKA_BROKERS", "b:9092")]);
        let defaults = processes(&none).unwrap();
        assert_eq!(defaults.len(), 5);
        assert_eq!(defaults[0].base_url.as_str(), "http://127.0.0.1:9101/");
        let listed = processes(&none.with(
            "CONSOLE_PROCESSES",
            "stripe-inbound=http://inbound:9101, relay=https://relay.internal/ops",
        ))
        .unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[1].base_url.join("readyz").unwrap().as_str(),
            "https://relay.internal/ops/readyz"
        );
        assert!(processes(&none.with("CONSOLE_PROCESSES", "none"))
            .unwrap()
            .is_empty());
        for bad in ["inbound", "a=ftp://x", "a=http://x,a=http://y", "=http://x"] {
            assert!(
                processes(&none.with("CONSOLE_PROCESSES", bad)).is_err(),
                "{bad}"
            );
        }
    }
}
