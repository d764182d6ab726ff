//! Each console page and action: read through the [`Operator`], fill a
//! template. Paths arrive as the tail after `/console/`.

use std::collections::BTreeMap;

use chrono::Utc;
use warp::http::StatusCode;

use super::pages::*;
use super::session::Session;
use super::{field, html, pairs, problem, redirect, Console, Reply};
use crate::apps::orders::notifications::NotificationStatus;
use crate::apps::payments::refund_requests::RefundRequestStatus;
use crate::customers::CustomerId;
use crate::http::admin_apps::SyncQuery;
use crate::ops::operator::{FOUND_MAX, SEARCH_BUDGET, TAIL_MAX};

/// Dead letters a page lists per partition.
const LETTERS_SHOWN: i64 = 100;
/// Dead letters one replay takes, as `POST /api/admin/dlq/replay` does.
const REPLAY_MAX: usize = 1000;

pub async fn page(c: &Console, s: &Session, tail: &str, raw: &str) -> Reply {
    let query = pairs(raw.as_bytes());
    let segments = segments(tail);
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let result = match parts.as_slice() {
        [] => overview(c, s).await,
        ["topics"] => topics(c, s).await,
        ["topics", topic] => messages(c, s, topic, &query).await,
        ["dlq"] => dead_letters(c, s, &query).await,
        ["dlq", "confirm"] => Ok(confirm_replay(s, &query)),
        ["dlq", id] => dead_letter(c, s, id).await,
        ["sync"] => sync(c, s, &query).await,
        ["apps"] => apps(c, s, &query).await,
        ["mirror"] => super::mirror_view::list(c, s, &query).await,
        ["mirror", relation, id] => super::mirror_view::object(c, s, relation, id, &query).await,
        _ => Err((StatusCode::NOT_FOUND, "No such page.".to_owned())),
    };
    result.unwrap_or_else(|(status, message)| problem(s, status, &message, "/console"))
}

pub async fn act(c: &Console, s: &Session, tail: &str, fields: &[(String, String)]) -> Reply {
    let segments = segments(tail);
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["dlq", "replay"] => {
            let mut ids: Vec<String> = fields
                .iter()
                .filter(|(k, _)| k == "ids")
                .map(|(_, v)| v.clone())
                .collect();
            // Repeats dropped, the page's order kept (oldest first per
            // partition, as listed): two letters of one key go back in
            // the order they failed.
            let mut seen = std::collections::HashSet::new();
            ids.retain(|id| seen.insert(id.clone()));
            if ids.is_empty() || ids.len() > REPLAY_MAX {
                return problem(
                    s,
                    StatusCode::BAD_REQUEST,
                    &format!("Select from 1 to {REPLAY_MAX} dead letters."),
                    "/console/dlq",
                );
            }
            match c.op.replay(ids).await {
                Ok(done) => redirect(&format!("/console/dlq?{}", encode_all("replayed", &done))),
                Err(e) => {
                    let e = crate::http::admin::replay_failure(e);
                    problem(
                        s,
                        e.status,
                        &format!("Replay stopped: {}", e.message),
                        "/console/dlq",
                    )
                }
            }
        }
        ["sync", "retry"] => {
            let customer = field(fields, "customer").and_then(|c| c.parse::<CustomerId>().ok());
            let service = field(fields, "service").unwrap_or_default();
            let Some(customer) = customer else {
                return problem(
                    s,
                    StatusCode::BAD_REQUEST,
                    "No such customer.",
                    "/console/sync",
                );
            };
            match c.op.sync_retry(customer, service).await {
                Ok(letter) => redirect(&format!(
                    "/console/sync?{}",
                    encode_all(
                        "retried",
                        &[format!("{customer} at {service} (dead letter {letter})")]
                    )
                )),
                Err(e) => {
                    let e = crate::http::admin_apps::retry_error(e);
                    problem(s, e.status, &e.message, "/console/sync")
                }
            }
        }
        ["notifications", id, "retry"] => {
            let Ok(id) = id.parse::<i64>() else {
                return problem(s, StatusCode::NOT_FOUND, "No such email.", "/console/apps");
            };
            match c.op.retry_notification(id).await {
                Ok(Ok(n)) => redirect(&format!(
                    "/console/apps?{}",
                    encode_all("retried", &[format!("email {} for {}", n.id, n.session_id)])
                )),
                Ok(Err(e)) => {
                    let e = crate::http::error::ApiError::from(e);
                    problem(s, e.status, &e.message, "/console/apps")
                }
                Err(e) => problem(
                    s,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{e:#}"),
                    "/console/apps",
                ),
            }
        }
        _ => problem(s, StatusCode::NOT_FOUND, "No such action.", "/console"),
    }
}

/// A page, or what went wrong and the status to answer it with.
pub(super) type PageResult = Result<Reply, (StatusCode, String)>;

fn unavailable(e: impl std::fmt::Display) -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Could not read it: {e:#}"),
    )
}

/// A path's tail below `/console`, split into its decoded segments.
fn segments(tail: &str) -> Vec<String> {
    tail.split('/')
        .filter(|p| !p.is_empty())
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn encode_all(name: &str, values: &[String]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for v in values {
        out.append_pair(name, v);
    }
    out.finish()
}

fn all<'a>(query: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    query
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

async fn overview(c: &Console, s: &Session) -> PageResult {
    let o = c.op.overview().await.map_err(unavailable)?;
    let chrome = Chrome::new("Overview", "overview", &s.csrf);
    Ok(html(
        StatusCode::OK,
        &OverviewPage::new(chrome, &o, Utc::now()),
    ))
}

async fn topics(c: &Console, s: &Session) -> PageResult {
    let topics = c.op.topics().await.map_err(unavailable)?;
    let inv = c.op.inv.clone();
    let lag = tokio::task::spawn_blocking(move || {
        crate::ops::topics::lag(&inv.brokers, inv.fetch_max_bytes, &inv.groups())
    })
    .await
    .map_err(unavailable)?
    .map_err(unavailable)?;
    Ok(html(
        StatusCode::OK,
        &TopicsPage {
            chrome: Chrome::new("Topics", "topics", &s.csrf),
            topics,
            lag: lag.iter().map(LagView::from).collect(),
        },
    ))
}

async fn messages(c: &Console, s: &Session, topic: &str, query: &[(String, String)]) -> PageResult {
    let key = field(query, "key").map(str::trim).filter(|k| !k.is_empty());
    let last = match field(query, "last").filter(|l| !l.is_empty()) {
        None => 20,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=TAIL_MAX).contains(n))
            .ok_or((
                StatusCode::BAD_REQUEST,
                format!("Last is a number from 1 to {TAIL_MAX}."),
            ))?,
    };
    let found = c
        .op
        .messages(topic, last, key.map(str::to_owned))
        .await
        .map_err(|e| {
            if e.is::<crate::ops::topics::NoSuchTopic>() {
                (StatusCode::NOT_FOUND, format!("{topic} is not one of this deployment's topics, or has not been created yet."))
            } else {
                unavailable(e)
            }
        })?;
    let title = match key {
        Some(k) => format!("{topic}: messages with key {k}"),
        None => format!("{topic}: last {last} per partition"),
    };
    Ok(html(
        StatusCode::OK,
        &MessagesPage {
            chrome: Chrome::new(title, "topics", &s.csrf),
            topic: topic.to_owned(),
            last,
            key: key.unwrap_or_default().to_owned(),
            incomplete: (!found.complete).then(|| {
                format!(
                    "the search stops at {FOUND_MAX} messages or {} seconds",
                    SEARCH_BUDGET.as_secs()
                )
            }),
            messages: found.messages.iter().map(MessageView::from).collect(),
        },
    ))
}

async fn dead_letters(c: &Console, s: &Session, query: &[(String, String)]) -> PageResult {
    let letters =
        c.op.dead_letters(LETTERS_SHOWN)
            .await
            .map_err(unavailable)?;
    let mut chrome = Chrome::new("Dead letters", "dlq", &s.csrf);
    let replayed = all(query, "replayed");
    if !replayed.is_empty() {
        chrome.notices.push(format!(
            "Replayed {}: {}",
            replayed.len(),
            replayed.join(", ")
        ));
    }
    Ok(html(
        StatusCode::OK,
        &DeadLettersPage {
            chrome,
            letters: letters.iter().map(LetterView::from).collect(),
        },
    ))
}

async fn dead_letter(c: &Console, s: &Session, id: &str) -> PageResult {
    let letter =
        c.op.dead_letter(id)
            .await
            .map_err(unavailable)?
            .ok_or((StatusCode::NOT_FOUND, format!("No dead letter {id}.")))?;
    let (headers, payload) = match &letter.message {
        Some(m) => (
            m.headers.clone().into_iter().collect(),
            serde_json::to_string_pretty(&m.payload).unwrap_or_default(),
        ),
        None => (Vec::new(), String::new()),
    };
    Ok(html(
        StatusCode::OK,
        &DeadLetterPage {
            chrome: Chrome::new(format!("Dead letter {id}"), "dlq", &s.csrf),
            letter: LetterView::from(&letter),
            headers,
            payload,
        },
    ))
}

fn confirm_replay(s: &Session, query: &[(String, String)]) -> Reply {
    let ids: Vec<String> = all(query, "ids").into_iter().map(str::to_owned).collect();
    if ids.is_empty() {
        return problem(
            s,
            StatusCode::BAD_REQUEST,
            "Select at least one dead letter.",
            "/console/dlq",
        );
    }
    html(
        StatusCode::OK,
        &ConfirmReplayPage {
            chrome: Chrome::new("Replay dead letters?", "dlq", &s.csrf),
            ids,
        },
    )
}

async fn sync(c: &Console, s: &Session, query: &[(String, String)]) -> PageResult {
    // `retried` only carries the last action's result to this page.
    let map: BTreeMap<String, String> = query
        .iter()
        .filter(|(k, _)| k != "retried")
        .cloned()
        .collect();
    let q = SyncQuery::parse(&c.op, &map).map_err(|e| (StatusCode::BAD_REQUEST, e.message))?;
    let rows =
        c.op.sync_attention(q.services, q.status, q.limit)
            .await
            .map_err(unavailable)?;
    let mut chrome = Chrome::new("Customers not synced", "sync", &s.csrf);
    for r in all(query, "retried") {
        chrome.notices.push(format!("Retrying {r}."));
    }
    let chosen = |k: &str| map.get(k).cloned().unwrap_or_default();
    Ok(html(
        StatusCode::OK,
        &SyncPage {
            chrome,
            services: options(&c.op.sync_services(), &chosen("service")),
            statuses: options(&["pending", "failed"], &chosen("status")),
            rows: rows
                .into_iter()
                .map(|r| SyncRow {
                    customer_id: r.customer_id.to_string(),
                    email: r.email.unwrap_or_default(),
                    service: r.service.to_owned(),
                    status: serde_json::to_value(r.state.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    error: r.state.error.unwrap_or_default(),
                })
                .collect(),
        },
    ))
}

async fn apps(c: &Console, s: &Session, query: &[(String, String)]) -> PageResult {
    let mut chrome = Chrome::new("Apps", "apps", &s.csrf);
    for r in all(query, "retried") {
        chrome.notices.push(format!("Queued {r} again."));
    }
    // Every failed email (up to 100), then the newest others.
    let mut emails =
        c.op.notifications(Some(NotificationStatus::Failed), 100)
            .await
            .map_err(unavailable)?;
    let newest = c.op.notifications(None, 30).await.map_err(unavailable)?;
    emails.extend(
        newest
            .into_iter()
            .filter(|n| n.status != NotificationStatus::Failed),
    );
    let exports = c.op.exports().await.map_err(unavailable)?;
    let customer = field(query, "customer")
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let credits = if customer.is_empty() {
        None
    } else {
        match customer.parse::<CustomerId>() {
            Err(_) => {
                chrome
                    .problems
                    .push(format!("{customer:?} is not a customer id."));
                None
            }
            Ok(id) => match c.op.credits(id, 50).await.map_err(unavailable)? {
                None => {
                    chrome.problems.push(format!("No customer {id}."));
                    None
                }
                Some(h) => Some(CreditsView {
                    balance: h.balance,
                    rows: h
                        .transactions
                        .into_iter()
                        .map(|t| LedgerRow {
                            at: t.created_at.to_rfc3339(),
                            details: [t.reason, t.package_id, t.payment_intent]
                                .into_iter()
                                .flatten()
                                .chain(std::iter::once(t.status))
                                .collect::<Vec<_>>()
                                .join(" · "),
                            kind: t.kind,
                            amount: t.credits,
                        })
                        .collect(),
                }),
            },
        }
    };
    let refund_status = field(query, "refunds").unwrap_or_default().to_owned();
    let status = match refund_status.as_str() {
        "" => None,
        other => Some(other.parse::<RefundRequestStatus>().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("{other:?} is not a refund request status."),
            )
        })?),
    };
    let refunds =
        c.op.refund_requests(status, 100)
            .await
            .map_err(unavailable)?;
    Ok(html(
        StatusCode::OK,
        &AppsPage {
            chrome,
            emails: emails
                .into_iter()
                .map(|n| EmailRow {
                    id: n.id,
                    session_id: n.session_id,
                    status: n.status.to_string(),
                    attempts: n.attempts,
                    last_error: n.last_error.unwrap_or_default(),
                })
                .collect(),
            exports: exports
                .into_iter()
                .map(|e| ExportRow {
                    name: e.name,
                    last_xid: e.last_xid,
                    last_seq: e.last_seq,
                    runs: e.runs,
                    delivered: e.delivered,
                    updated_at: e.updated_at.to_rfc3339(),
                })
                .collect(),
            customer,
            credits,
            refund_statuses: options(RefundRequestStatus::NAMES, &refund_status),
            refund_status,
            refunds: refunds
                .into_iter()
                .map(|r| RefundRow {
                    id: r.id,
                    payment_intent: r.payment_intent,
                    amount: r.amount.map_or("the rest".into(), |a| a.to_string()),
                    status: r.status.to_string(),
                    refund_id: r.refund_id.unwrap_or_default(),
                    error: r.error.unwrap_or_default(),
                    updated_at: r.updated_at.to_rfc3339(),
                })
                .collect(),
        },
    ))
}
