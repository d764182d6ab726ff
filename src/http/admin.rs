//! `/api/admin/*`: the operators' reads and actions as JSON, behind the
//! admin token (`ADMIN_TOKEN`, see `auth`): topics, lag and the overview,
//! tailing, dead letters and replays. The apps' operator routes are in
//! `admin_apps`. Both go through [`Operator`], as the console does.

use std::collections::BTreeMap;

use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use crate::ops::operator::{Operator, TAIL_MAX};
use crate::ops::{commands, topics};

pub fn routes(
    op: Operator,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || op.clone());
    let overview = warp::path!("admin" / "overview")
        .and(warp::get())
        .and(with.clone())
        .and_then(|op: Operator| async move { json(op.overview().await) });
    let topics = warp::path!("admin" / "topics")
        .and(warp::get())
        .and(with.clone())
        .and_then(|op: Operator| async move { json(op.topics().await) });
    let lag = warp::path!("admin" / "lag")
        .and(warp::get())
        .and(with.clone())
        .and_then(|op: Operator| async move {
            let inv = op.inv.clone();
            json(
                tokio::task::spawn_blocking(move || {
                    topics::lag(&inv.brokers, inv.fetch_max_bytes, &inv.groups())
                })
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
            )
        });
    let messages = warp::path!("admin" / "topics" / String / "messages")
        .and(warp::get())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(with.clone())
        .and_then(
            |topic: String, query: BTreeMap<String, String>, op: Operator| async move {
                let (last, key) = tail_query(&query)?;
                let found = op.messages(&topic, last, key).await.map_err(|e| {
                    if e.is::<topics::NoSuchTopic>() {
                        reject(ApiError::new(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            format!("{topic} is not one of this deployment's topics"),
                        ))
                    } else {
                        kafka_unavailable(e)
                    }
                })?;
                Ok::<_, Rejection>(warp::reply::json(&found).into_response())
            },
        );
    let dlq_list = warp::path!("admin" / "dlq")
        .and(warp::get())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(with.clone())
        .and_then(|query: BTreeMap<String, String>, op: Operator| async move {
            let last = dlq_window(&query)?;
            json(op.dead_letters(last).await)
        });
    let dlq_show = warp::path!("admin" / "dlq" / String)
        .and(warp::get())
        .and(with.clone())
        .and_then(|id: String, op: Operator| async move {
            let letter = op
                .dead_letter(&id)
                .await
                .map_err(kafka_unavailable)?
                .ok_or_else(|| {
                    reject(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "no dead letter with this id",
                    ))
                })?;
            Ok::<_, Rejection>(
                warp::reply::json(
                    &serde_json::json!({"dead_letter": letter, "message": letter.message}),
                )
                .into_response(),
            )
        });
    let dlq_replay_one = warp::path!("admin" / "dlq" / String / "replay")
        .and(warp::post())
        .and(with.clone())
        .and_then(|id: String, op: Operator| async move { replay(op, vec![id]).await });
    let dlq_replay_many = warp::path!("admin" / "dlq" / "replay")
        .and(warp::post())
        .and(super::body::json_body::<ReplaySelection>())
        .and(with)
        .and_then(|selection: ReplaySelection, op: Operator| async move {
            if selection.ids.is_empty() || selection.ids.len() > DLQ_WINDOW_MAX as usize {
                return Err(reject(
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        format!("ids lists 1 to {DLQ_WINDOW_MAX} dead letter ids"),
                    )
                    .with_field("ids"),
                ));
            }
            // Repeats dropped, the given order kept.
            let mut seen = std::collections::HashSet::new();
            let ids = selection
                .ids
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            replay(op, ids).await
        });
    overview
        .or(topics)
        .unify()
        .or(lag)
        .unify()
        .or(messages)
        .unify()
        .or(dlq_list)
        .unify()
        .or(dlq_replay_many)
        .unify()
        .or(dlq_show)
        .unify()
        .or(dlq_replay_one)
        .unify()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaySelection {
    ids: Vec<String>,
}

/// Replays dead letters: every id is found first, so an unknown one (404)
/// replays none.
pub async fn replay(op: Operator, ids: Vec<String>) -> Result<warp::reply::Response, Rejection> {
    let done = op.replay(ids).await.map_err(replay_error)?;
    Ok(warp::reply::json(&serde_json::json!({ "replayed": done })).into_response())
}

fn replay_error(e: anyhow::Error) -> Rejection {
    reject(replay_failure(e))
}

/// A replay's failure as the API answers it: an unknown id is 404.
pub fn replay_failure(e: anyhow::Error) -> ApiError {
    let message = format!("{e:#}");
    if e.chain().any(|c| c.is::<commands::NoSuchDeadLetter>()) {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    } else {
        ApiError::unavailable("kafka_unavailable", &message)
    }
}

/// Dead letters listed per partition: `?last=N` (1–1000, default 100).
pub const DLQ_WINDOW: i64 = 100;
const DLQ_WINDOW_MAX: i64 = 1000;

fn dlq_window(query: &BTreeMap<String, String>) -> Result<i64, Rejection> {
    if query.keys().any(|k| k != "last") {
        return Err(invalid_last());
    }
    query
        .get("last")
        .map_or(Ok(DLQ_WINDOW), |raw| parse_last(raw, DLQ_WINDOW_MAX))
}

/// `?last=N` (1–1000, default 20) or `?key=ID` (every message under it).
fn tail_query(query: &BTreeMap<String, String>) -> Result<(i64, Option<String>), Rejection> {
    if query.keys().any(|k| k != "last" && k != "key") || query.len() > 1 {
        return Err(reject(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("either last (1 to {TAIL_MAX}) or key, not both; nothing else"),
            )
            .with_field("query"),
        ));
    }
    let last = query
        .get("last")
        .map_or(Ok(20), |raw| parse_last(raw, TAIL_MAX))?;
    let key = query.get("key").map(|k| k.trim().to_owned());
    if key.as_deref() == Some("") {
        return Err(reject(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "key is empty")
                .with_field("key"),
        ));
    }
    Ok((last, key))
}

fn parse_last(raw: &str, max: i64) -> Result<i64, Rejection> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(invalid_last)
}

fn invalid_last() -> Rejection {
    reject(
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("last is an integer from 1 to {DLQ_WINDOW_MAX}; the only parameter"),
        )
        .with_field("last"),
    )
}

fn reject(e: ApiError) -> Rejection {
    warp::reject::custom(e)
}

fn kafka_unavailable(e: anyhow::Error) -> Rejection {
    reject(ApiError::unavailable(
        "kafka_unavailable",
        &format!("{e:#}"),
    ))
}

fn json<T: serde::Serialize>(
    result: anyhow::Result<T>,
) -> Result<warp::reply::Response, Rejection> {
    Ok(warp::reply::json(&result.map_err(kafka_unavailable)?).into_response())
}
