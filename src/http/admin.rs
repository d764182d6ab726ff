//! `/api/admin/*`: the `topics` and `dlq` commands' information as JSON,
//! behind the admin token (`ADMIN_TOKEN`, see `auth`).

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use crate::db::PgPool;
use crate::kafka::EventProducer;
use crate::ops::{commands, dlq, topics, Inventory};

#[derive(Clone)]
struct Ctx {
    inv: Inventory,
    pool: PgPool,
    producer: EventProducer,
}

pub fn routes(
    inv: Inventory,
    pool: PgPool,
    producer: EventProducer,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let ctx = Ctx {
        inv,
        pool,
        producer,
    };
    let with = warp::any().map(move || ctx.clone());
    let topics = warp::path!("admin" / "topics")
        .and(warp::get())
        .and(with.clone())
        .and_then(|c: Ctx| blocking(move || topics::list(&c.inv.brokers, &c.inv.topics())));
    let lag = warp::path!("admin" / "lag")
        .and(warp::get())
        .and(with.clone())
        .and_then(|c: Ctx| {
            blocking(move || topics::lag(&c.inv.brokers, c.inv.fetch_max_bytes, &c.inv.groups()))
        });
    let dlq_list = warp::path!("admin" / "dlq")
        .and(warp::get())
        .and(warp::query::<std::collections::BTreeMap<String, String>>())
        .and(with.clone())
        .and_then(
            |query: std::collections::BTreeMap<String, String>, c: Ctx| async move {
                let last = dlq_window(&query)?;
                blocking(move || {
                    dlq::list(
                        &c.inv.brokers,
                        &mut *c.pool.get()?,
                        &c.inv.dead_letter_topics(),
                        topics::TailFrom::Last(last),
                    )
                })
                .await
            },
        );
    let dlq_show = warp::path!("admin" / "dlq" / String)
        .and(warp::get())
        .and(with.clone())
        .and_then(|id: String, c: Ctx| async move {
            let found = blocking_value(move || {
                let ours = dlq::parse_id(&id)
                    .is_some_and(|(topic, _, _)| c.inv.dead_letter_topics().contains(&topic));
                if !ours {
                    return Ok(None);
                }
                dlq::get(&c.inv.brokers, &mut *c.pool.get()?, &id)
            })
            .await?;
            let letter = found.ok_or_else(|| {
                warp::reject::custom(ApiError::new(
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
    let dlq_replay = warp::path!("admin" / "dlq" / String / "replay")
        .and(warp::post())
        .and(with)
        .and_then(|id: String, c: Ctx| async move {
            let done = commands::dlq_replay(
                &c.inv,
                &c.pool,
                &c.producer,
                commands::Selection::Ids(vec![id]),
            )
            .await
            .map_err(|e| {
                let message = format!("{e:#}");
                if e.chain()
                    .any(|cause| cause.is::<commands::NoSuchDeadLetter>())
                {
                    warp::reject::custom(ApiError::new(StatusCode::NOT_FOUND, "not_found", message))
                } else {
                    warp::reject::custom(ApiError::unavailable("kafka_unavailable", &message))
                }
            })?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({"replayed": done})).into_response(),
            )
        });
    topics
        .or(lag)
        .unify()
        .or(dlq_list)
        .unify()
        .or(dlq_show)
        .unify()
        .or(dlq_replay)
        .unify()
}

/// Dead letters listed per partition: `?last=N` (1–1000, default 100).
pub const DLQ_WINDOW: i64 = 100;
const DLQ_WINDOW_MAX: i64 = 1000;

fn dlq_window(query: &std::collections::BTreeMap<String, String>) -> Result<i64, Rejection> {
    let invalid = || {
        warp::reject::custom(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("last is an integer from 1 to {DLQ_WINDOW_MAX}; the only parameter"),
            )
            .with_field("last"),
        )
    };
    if query.keys().any(|k| k != "last") {
        return Err(invalid());
    }
    match query.get("last") {
        None => Ok(DLQ_WINDOW),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=DLQ_WINDOW_MAX).contains(n))
            .ok_or_else(invalid),
    }
}

async fn blocking_value<T: Send + 'static>(
    op: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Rejection> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| warp::reject::custom(ApiError::unavailable("internal", &e)))?
        .map_err(|e| {
            warp::reject::custom(ApiError::unavailable(
                "kafka_unavailable",
                &format!("{e:#}"),
            ))
        })
}

async fn blocking<T: serde::Serialize + Send + 'static>(
    op: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<warp::reply::Response, Rejection> {
    Ok(warp::reply::json(&blocking_value(op).await?).into_response())
}
