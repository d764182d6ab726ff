//! `/api/admin/*` for what the apps leave an operator to watch: customers
//! whose sync is pending or failed (and retrying one), export watermarks,
//! a customer's credit ledger, refund requests by status. Through
//! [`Operator`], as the console reads them.

use std::collections::BTreeMap;

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use crate::apps::payments::refund_requests::RefundRequestStatus;
use crate::customers::sync_state::Status;
use crate::customers::CustomerId;
use crate::input;
use crate::ops::operator::Operator;
use crate::ops::sync::RetryError;

/// What one list route answers at most, and by default.
const LIST_MAX: i64 = 1000;
const LIST_DEFAULT: i64 = 100;

pub fn routes(
    op: Operator,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || op.clone());
    let sync = warp::path!("admin" / "sync")
        .and(warp::get())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(with.clone())
        .and_then(|query: BTreeMap<String, String>, op: Operator| async move {
            let q = SyncQuery::parse(&op, &query).map_err(reject)?;
            let rows = op
                .sync_attention(q.services, q.status, q.limit)
                .await
                .map_err(database)?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({ "customers": rows })).into_response(),
            )
        });
    let retry = warp::path!("admin" / "sync" / String / String / "retry")
        .and(warp::post())
        .and(with.clone())
        .and_then(
            |customer: String, service: String, op: Operator| async move {
                let customer = customer_id(&customer)?;
                let replayed = op
                    .sync_retry(customer, &service)
                    .await
                    .map_err(|e| reject(retry_error(e)))?;
                Ok::<_, Rejection>(
                    warp::reply::json(&serde_json::json!({ "replayed": [replayed] }))
                        .into_response(),
                )
            },
        );
    let exports = warp::path!("admin" / "exports")
        .and(warp::get())
        .and(with.clone())
        .and_then(|op: Operator| async move {
            let exports = op.exports().await.map_err(database)?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({ "exports": exports })).into_response(),
            )
        });
    let credits = warp::path!("admin" / "customers" / String / "credits")
        .and(warp::get())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(with.clone())
        .and_then(
            |customer: String, query: BTreeMap<String, String>, op: Operator| async move {
                only(&query, &["limit"]).map_err(reject)?;
                let limit = limit(&query).map_err(reject)?;
                let customer = customer_id(&customer)?;
                let history = op
                    .credits(customer, limit)
                    .await
                    .map_err(database)?
                    .ok_or_else(|| reject(no_customer()))?;
                Ok::<_, Rejection>(warp::reply::json(&history).into_response())
            },
        );
    let refunds = warp::path!("admin" / "refund-requests")
        .and(warp::get())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(with)
        .and_then(|query: BTreeMap<String, String>, op: Operator| async move {
            only(&query, &["status", "limit"]).map_err(reject)?;
            let status = query
                .get("status")
                .map(|s| {
                    s.parse::<RefundRequestStatus>().map_err(|_| {
                        invalid(
                            "status",
                            format!(
                                "{s:?} is not one of {}",
                                RefundRequestStatus::NAMES.join(", ")
                            ),
                        )
                    })
                })
                .transpose()
                .map_err(reject)?;
            let limit = limit(&query).map_err(reject)?;
            let rows = op.refund_requests(status, limit).await.map_err(database)?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({ "refund_requests": rows })).into_response(),
            )
        });
    sync.or(retry)
        .unify()
        .or(exports)
        .unify()
        .or(credits)
        .unify()
        .or(refunds)
        .unify()
}

/// `GET /api/admin/sync`'s query: `service`, `status` (`pending` or
/// `failed`; both unless given), `limit`.
pub struct SyncQuery {
    pub services: Vec<&'static str>,
    pub status: Option<Status>,
    pub limit: i64,
}

impl SyncQuery {
    pub fn parse(op: &Operator, query: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        only(query, &["service", "status", "limit"])?;
        let known = op.sync_services();
        let services = match query.get("service").filter(|s| !s.is_empty()) {
            None => known,
            Some(s) => vec![*known.iter().find(|k| *k == s).ok_or_else(|| {
                invalid(
                    "service",
                    format!("{s:?} is not one of {}", known.join(", ")),
                )
            })?],
        };
        let status = match query
            .get("status")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some("pending") => Some(Status::Pending),
            Some("failed") => Some(Status::Failed),
            Some(other) => {
                return Err(invalid(
                    "status",
                    format!("{other:?} is not one of pending, failed"),
                ))
            }
        };
        Ok(Self {
            services,
            status,
            limit: limit(query)?,
        })
    }
}

/// A retry's failure as the API answers it.
pub fn retry_error(e: RetryError) -> ApiError {
    let message = e.to_string();
    match e {
        RetryError::UnknownService(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_service", message)
        }
        RetryError::NotFailed { .. } => ApiError::new(StatusCode::CONFLICT, "not_failed", message),
        RetryError::NoDeadLetter { .. } => {
            ApiError::new(StatusCode::CONFLICT, "no_dead_letter", message)
        }
        RetryError::Unavailable(e) => ApiError::unavailable("unavailable", &format!("{e:#}")),
    }
}

fn only(query: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(
            k,
            format!(
                "unknown parameter {k:?}; this route takes {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn limit(query: &BTreeMap<String, String>) -> Result<i64, ApiError> {
    let raw = query
        .get("limit")
        .map(String::as_str)
        .filter(|l| !l.is_empty());
    input::limit(raw, LIST_DEFAULT, LIST_MAX).map_err(|e| invalid(&e.field, e.message))
}

fn customer_id(raw: &str) -> Result<CustomerId, Rejection> {
    raw.parse().map_err(|_| reject(no_customer()))
}

fn no_customer() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "customer_not_found",
        "no customer with this id",
    )
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).with_field(field)
}

fn reject(e: ApiError) -> Rejection {
    warp::reject::custom(e)
}

fn database(e: anyhow::Error) -> Rejection {
    reject(ApiError::unavailable(
        "database_unavailable",
        &format!("{e:#}"),
    ))
}
