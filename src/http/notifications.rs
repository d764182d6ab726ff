//! `/api/admin/notifications`: the order notifier's emails, and sending a
//! failed one again (the `notifications` commands over HTTP). A sent one,
//! or one a notifier is sending, is not queued again: 409.

use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use crate::apps::orders::notifications::{self, NotificationStatus, RetryError};
use crate::db::{self, PgPool};
use crate::input;

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
            let status = params
                .status
                .as_deref()
                .map(|s| {
                    s.parse::<NotificationStatus>().map_err(|_| {
                        invalid(
                            "status",
                            format!(
                                "{s:?} is not one of {}",
                                NotificationStatus::NAMES.join(", ")
                            ),
                        )
                    })
                })
                .transpose()?;
            let limit = input::limit_within(Some(params.limit.unwrap_or(100)), 1000)
                .map_err(|e| invalid(&e.field, e.message))?;
            let rows = db::blocking(&pool, move |conn| -> Result<_, ApiError> {
                Ok(notifications::list(conn, status, limit)?)
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
            let retried = db::blocking(&pool, move |conn| notifications::retry(conn, id))
                .await
                .map_err(ApiError::from)?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({ "notification": retried })).into_response(),
            )
        });
    list.or(retry).unify()
}

impl From<RetryError> for ApiError {
    fn from(e: RetryError) -> Self {
        match e {
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
            RetryError::Unavailable(e) => e.into(),
        }
    }
}

fn invalid(field: &str, message: String) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).with_field(field),
    )
}
