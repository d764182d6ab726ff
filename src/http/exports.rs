//! `POST /api/exports/paid-sessions` and `POST /api/exports/paid-sessions/ack`:
//! the paid sessions export for workflow tools that poll over HTTP (n8n,
//! Zapier-style pollers), at least once with an explicit acknowledgement
//! (see [`crate::apps::orders::batches`]).
//!
//! A call's database work (acknowledge, then offer a batch, recorded as
//! pending) is done and its connection returned to the pool before the
//! answer is sent: a client that reads slowly, or not at all, holds no
//! connection, and loses nothing, since the batch waits for its
//! acknowledgement.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::body::json_body;
use super::error::ApiError;
use crate::apps::orders::batches::{self, Acked, BatchError, Offer};
use crate::apps::orders::export::{self, ExportSpec, HTTP_DEFAULT_LIMIT, HTTP_MAX_LIMIT};
use crate::db::{self, PgPool};
use crate::input;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    payment_links: Vec<String>,
    /// RFC 3339: only sessions created at or after it.
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    /// The `batch_id` of the previous answer, acknowledged by this call.
    #[serde(default)]
    ack: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    batch_id: Option<String>,
    /// The export the batch belongs to, checked when given.
    #[serde(default)]
    name: Option<String>,
}

fn bad(field: &str, message: String) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).with_field(field),
    )
}

fn batch_id(field: &str, raw: &str) -> Result<Uuid, Rejection> {
    Uuid::parse_str(raw).map_err(|_| {
        bad(
            field,
            format!("{raw:?} is not a batch id (the batch_id of an answer)"),
        )
    })
}

impl ExportBody {
    fn into_spec(self) -> Result<(ExportSpec, Option<Uuid>), Rejection> {
        let ack = self
            .ack
            .as_deref()
            .map(|a| batch_id("ack", a))
            .transpose()?;
        let name = self.name.unwrap_or_else(|| export::DEFAULT_NAME.to_owned());
        export::valid_name(&name).map_err(|m| bad("name", m))?;
        if let Some(link) = self.payment_links.iter().find(|l| !l.starts_with("plink_")) {
            return Err(bad(
                "payment_links",
                format!("{link:?} is not a payment link id (plink_…)"),
            ));
        }
        let since = self
            .since
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(&s)
                    .map(|t| export::as_stored(t.to_utc()))
                    .map_err(|_| bad("since", format!("{s:?} is not an RFC 3339 time")))
            })
            .transpose()?;
        let limit = input::limit_within(
            Some(self.limit.unwrap_or(HTTP_DEFAULT_LIMIT)),
            HTTP_MAX_LIMIT,
        )
        .map_err(|e| bad(&e.field, e.message))?;
        Ok((
            ExportSpec {
                name,
                payment_links: self.payment_links,
                since,
                limit: Some(limit),
            },
            ack,
        ))
    }
}

/// The answer to a poll. `batch_id` comes first, so that a client that
/// reads only the beginning of a long answer still learns it.
#[derive(Serialize)]
struct Answer {
    status: &'static str,
    batch_id: Option<Uuid>,
    redelivered: bool,
    count: i64,
    sessions: Value,
    has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
}

impl Answer {
    fn of(offer: Offer) -> Self {
        let none = |status, retry_after_seconds| Answer {
            status,
            batch_id: None,
            redelivered: false,
            count: 0,
            sessions: Value::Array(Vec::new()),
            has_more: false,
            retry_after_seconds,
        };
        match offer {
            Offer::Batch {
                id,
                sessions,
                count,
                has_more,
                redelivered,
            } => Answer {
                status: "success",
                batch_id: Some(id),
                redelivered,
                count,
                sessions,
                has_more,
                retry_after_seconds: None,
            },
            Offer::NothingNew => none("no_new_data", None),
            Offer::InFlight { retry_after } => none(
                "batch_in_flight",
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            ),
        }
    }

    fn into_response(self) -> warp::reply::Response {
        let retry_after = self.retry_after_seconds;
        let mut response = warp::reply::json(&self).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", warp::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::UnknownBatch { .. } => {
                ApiError::new(StatusCode::CONFLICT, "unknown_batch", e.to_string())
            }
            BatchError::FiltersChanged { .. } => {
                ApiError::new(StatusCode::CONFLICT, "filters_changed", e.to_string())
            }
            BatchError::Database(e) => ApiError::unavailable("database_unavailable", &e),
            BatchError::Unavailable(e) => e.into(),
        }
    }
}

/// `lease`: how long an offered batch is held (from every caller).
pub fn routes(
    pool: PgPool,
    lease: Duration,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with_pool = warp::any().map(move || pool.clone());
    let poll = warp::path!("exports" / "paid-sessions")
        .and(warp::post())
        .and(json_body::<ExportBody>())
        .and(with_pool.clone())
        .and_then(move |body: ExportBody, pool: PgPool| async move {
            let (spec, ack) = body.into_spec()?;
            let offer = db::blocking(&pool, move |conn| {
                if let Some(id) = ack {
                    batches::acknowledge(conn, Some(&spec.name), id)?;
                }
                batches::offer(conn, &spec, lease)
            })
            .await
            .map_err(ApiError::from)?;
            Ok::<_, Rejection>(Answer::of(offer).into_response())
        });
    let ack = warp::path!("exports" / "paid-sessions" / "ack")
        .and(warp::post())
        .and(json_body::<AckBody>())
        .and(with_pool)
        .and_then(|body: AckBody, pool: PgPool| async move {
            let raw = body
                .batch_id
                .ok_or_else(|| bad("batch_id", "batch_id is required".into()))?;
            let id = batch_id("batch_id", &raw)?;
            if let Some(name) = &body.name {
                export::valid_name(name).map_err(|m| bad("name", m))?;
            }
            let name = body.name;
            let acked = db::blocking(&pool, move |conn| {
                batches::acknowledge(conn, name.as_deref(), id)
            })
            .await
            .map_err(ApiError::from)?;
            let (status, count) = match acked {
                Acked::Acknowledged { count } => ("acknowledged", count),
                Acked::AlreadyAcknowledged { count } => ("already_acknowledged", count),
            };
            Ok::<_, Rejection>(
                warp::reply::json(
                    &serde_json::json!({"status": status, "batch_id": id, "count": count}),
                )
                .into_response(),
            )
        });
    ack.or(poll).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(since: &str) -> ExportBody {
        serde_json::from_value(serde_json::json!({"name": "n8n", "since": since})).unwrap()
    }

    /// Postgres keeps microseconds: a `since` given in nanoseconds is cut to
    /// them, so the pending batch it made still matches the next poll's.
    #[test]
    fn since_is_kept_to_the_microsecond_as_postgres_stores_it() {
        let (spec, _) = body("2026-12-04T10:00:00.123456789Z").into_spec().unwrap();
        let stored = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00.123456Z")
            .unwrap()
            .to_utc();
        assert_eq!(spec.since, Some(stored));
        let (same, _) = body("2026-12-04T11:00:00.123456+01:00")
            .into_spec()
            .unwrap();
        assert_eq!(same.since, Some(stored));
    }
}
