//! `/api/admin/notifications`: the order notifier's emails, and sending a
//! failed one again (the `notifications` commands over HTTP). A sent one,
//! or one a notifier is sending, is not queued again: 409.

use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::with_db;
use crate::apps::orders::notifications::{self, RetryError, STATUSES};
use crate::db::PgPool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
}

pub fn routes(
    pool: PgPool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with_pool = warp::any().map(move || pool.clone());
    let list = warp::path!("admin" / "notifications")
        .and(warp::get())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(with_pool.clone())
        .and_then(|raw: String, pool: PgPool| async move {
            let params: ListParams = serde_urlencoded::from_str(&raw)
                .map_err(|e| invalid("query", format!("invalid query: {e}")))?;
            if let Some(status) = params.status.as_deref().filter(|s| !STATUSES.contains(s)) {
                return Err(invalid(
                    "status",
                    format!("{status:?} is not one of {}", STATUSES.join(", ")),
                ));
            }
            let limit = params.limit.unwrap_or(100);
            if !(1..=1000).contains(&limit) {
                return Err(invalid("limit", "limit must be between 1 and 1000".into()));
            }
            let rows = with_db(pool, move |conn| {
                notifications::list(conn, params.status.as_deref(), limit)
            })
            .await?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({ "notifications": rows })).into_response(),
            )
        });
    let retry = warp::path!("admin" / "notifications" / i64 / "retry")
        .and(warp::post())
        .and(with_pool)
        .and_then(|id: i64, pool: PgPool| async move {
            let retried = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
                let mut conn = pool
                    .get()
                    .map_err(|e| ApiError::unavailable("database_unavailable", &e))?;
                notifications::retry(&mut conn, id).map_err(|e| match e {
                    RetryError::NotFound(_) => {
                        ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
                    }
                    RetryError::AlreadySent(_) => {
                        ApiError::new(StatusCode::CONFLICT, "already_sent", e.to_string())
                    }
                    RetryError::BeingSent { .. } => {
                        ApiError::new(StatusCode::CONFLICT, "being_sent", e.to_string())
                    }
                    RetryError::Database(e) => ApiError::unavailable("database_unavailable", &e),
                })
            })
            .await
            .map_err(|e| warp::reject::custom(ApiError::unavailable("internal", &e)))?
            .map_err(warp::reject::custom)?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({ "notification": retried })).into_response(),
            )
        });
    list.or(retry).unify()
}

fn invalid(field: &str, message: String) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).with_field(field),
    )
}
