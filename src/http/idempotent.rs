//! `Idempotency-Key` on the API's POSTs (payments, credits), with the
//! rules of [`super::idempotency`]: a replay answers what
//! the first request finally answered, and the work gets the key to send
//! to Stripe.

use std::future::Future;

use serde_json::Value;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::{Rejection, Reply};

use super::body::refused;
use super::error::{ApiError, ForKey};
use super::idempotency::{self, Claim};
use crate::db::{self, PgPool};
use crate::input::Invalid;

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

/// A successful answer of work done under a key.
pub(super) struct Answer {
    status: StatusCode,
    body: Value,
    is_final: bool,
}

impl Answer {
    /// What the request did: every retry with its key gets this again.
    pub(super) fn done(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            is_final: true,
        }
    }

    /// How things stand for now (a payment still processing): a retry with
    /// the key looks again instead of being told the same.
    pub(super) fn for_now(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            is_final: false,
        }
    }
}

/// Runs `work` under the request's `Idempotency-Key` (see
/// [`idempotency`]): a replay answers what the first request finally
/// answered; the work gets the key to send to Stripe. Without a header
/// (only where [`required`] was not asked), the work gets a fresh key, so
/// our own retries to Stripe stay single.
pub(super) async fn idempotent<F, Fut>(
    pool: PgPool,
    key: Option<String>,
    route: &str,
    body: &Value,
    work: F,
) -> Result<warp::reply::Response, Rejection>
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Answer, ApiError>> + Send + 'static,
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
        db::blocking(&pool, move |conn| -> Result<_, ApiError> {
            Ok(idempotency::claim(conn, &key, &route, &hash)?)
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
        Claim::Mismatch => Err(warp::reject::custom(ApiError::key_reused())),
        Claim::InProgress => Err(warp::reject::custom(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still running; retry shortly",
        ))),
        // The work and the saving of its answer run as one task: a client
        // that hangs up drops this handler, not the task, so work that
        // finished never leaves its key claimed (409 for a minute) or
        // unanswered for the retry.
        Claim::Proceed => tokio::spawn(async move {
            let answer = work(idempotency::stripe_key(&key)).await;
            // Only a final answer is saved. Any other (not synced yet, in
            // progress, Stripe or the database unreachable, a payment
            // still processing) reopens the key, so the retry it asks for
            // does the work again, under the same Stripe key. A request
            // that found the key on another purchase or spend drops its
            // claim: the key is that request's.
            let for_key = match &answer {
                Ok(a) if a.is_final => ForKey::Replay,
                Ok(_) => ForKey::Reopen,
                Err(e) => e.for_key,
            };
            let saved = match &answer {
                Ok(a) => (a.status, a.body.clone()),
                Err(e) => (e.status, e.body()),
            };
            db::blocking(&pool, move |conn| -> Result<_, ApiError> {
                match for_key {
                    ForKey::Replay => {
                        idempotency::complete(conn, &key, saved.0.as_u16(), &saved.1)?
                    }
                    ForKey::Reopen => idempotency::reopen(conn, &key)?,
                    ForKey::Release => idempotency::release(conn, &key)?,
                }
                Ok(())
            })
            .await?;
            Ok(respond(answer))
        })
        .await
        .map_err(|e| warp::reject::custom(ApiError::unavailable("internal", &e)))?,
    }
}

fn respond(answer: Result<Answer, ApiError>) -> warp::reply::Response {
    match answer {
        Ok(Answer { status, body, .. }) => {
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        }
        Err(e) => e.into_response(),
    }
}
