//! `Idempotency-Key` on the API's POSTs (payments, credits), with the
//! rules of [`crate::apps::payments::idempotency`]: a replay answers what
//! the first request answered, and the work gets the key to send to Stripe.

use std::future::Future;

use serde_json::Value;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::{Rejection, Reply};

use super::body::refused;
use super::error::ApiError;
use crate::apps::payments::idempotency::{self, Claim};
use crate::apps::payments::input::Invalid;
use crate::db::PgPool;

/// The `Idempotency-Key` of a route that moves money or credits, where a
/// request without one is refused rather than risked.
pub(super) fn required(key: Option<String>) -> Result<String, Rejection> {
    key.ok_or_else(|| {
        warp::reject::custom(ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "send an Idempotency-Key header, so a retry of this request cannot repeat it",
        ))
    })
}

/// Runs `work` under the request's `Idempotency-Key` (see
/// [`idempotency`]): a replay answers what the first request answered; the
/// work gets the key to send to Stripe. Without a header, the work still
/// gets a fresh key, so our own retries to Stripe stay single.
pub(super) async fn idempotent<F, Fut>(
    pool: PgPool,
    key: Option<String>,
    route: &str,
    body: &Value,
    work: F,
) -> Result<warp::reply::Response, Rejection>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let Some(key) = key else {
        let answer = work(format!("stripe-sync-req-{}", Uuid::new_v4())).await;
        return Ok(respond(answer));
    };
    if key.is_empty() || key.len() > idempotency::MAX_KEY_LEN {
        return Err(refused(Invalid::new(
            "Idempotency-Key",
            format!(
                "an Idempotency-Key is 1 to {} characters",
                idempotency::MAX_KEY_LEN
            ),
        )));
    }
    let hash = idempotency::request_hash(route, body);
    let claimed = {
        let (pool, key, route) = (pool.clone(), key.clone(), route.to_owned());
        super::with_db(pool, move |conn| {
            idempotency::claim(conn, &key, &route, &hash)
        })
        .await?
    };
    match claimed {
        Claim::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response =
                warp::reply::with_status(warp::reply::json(&body), status).into_response();
            response.headers_mut().insert(
                "idempotent-replayed",
                warp::http::HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        Claim::Mismatch => Err(warp::reject::custom(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request; use a new key for a new request",
        ))),
        Claim::InProgress => Err(warp::reject::custom(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still running; retry shortly",
        ))),
        Claim::Proceed => {
            let answer = work(idempotency::stripe_key(&key)).await;
            let (status, saved) = match &answer {
                Ok((status, body)) => (*status, Some(body.clone())),
                // A failure to reach Stripe (or our database) did nothing a
                // retry must not redo: keep no answer.
                Err(e) if e.status.is_server_error() => (e.status, None),
                Err(e) => (e.status, Some(e.body())),
            };
            super::with_db(pool, move |conn| match saved {
                Some(body) => idempotency::complete(conn, &key, status.as_u16(), &body),
                None => idempotency::release(conn, &key),
            })
            .await?;
            Ok(respond(answer))
        }
    }
}

fn respond(answer: Result<(StatusCode, Value), ApiError>) -> warp::reply::Response {
    match answer {
        Ok((status, body)) => {
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        }
        Err(e) => e.into_response(),
    }
}
