//! `GET /healthz` (the process answers) and `GET /readyz` (its
//! dependencies answer, and no part of it has failed for good).

use std::time::Duration;

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::db::{self, PgPool};
use crate::health::Health;
use crate::kafka::EventProducer;

/// `last_error` goes into `/readyz` only on a listener of the process's
/// own (`METRICS_ADDR`): an error's text (an SMTP server's answer naming an
/// address, Stripe's refusal) is for operators, not for the public port.
pub fn routes(
    pool: PgPool,
    producer: EventProducer,
    health: Health,
    with_last_error: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let readyz = warp::path!("readyz").and(warp::get()).then(move || {
        let (pool, producer, health) = (pool.clone(), producer.clone(), health.clone());
        async move { readiness(pool, producer, health, with_last_error).await }
    });
    healthz.or(readyz).unify()
}

async fn readiness(
    pool: PgPool,
    producer: EventProducer,
    health: Health,
    with_last_error: bool,
) -> warp::reply::Response {
    let (ready, body) = report(pool, producer, health, with_last_error).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Whether the process is ready, and `/readyz`'s body: its dependencies'
/// checks, failures for good, and the last error it met.
pub async fn report(
    pool: PgPool,
    producer: EventProducer,
    health: Health,
    with_last_error: bool,
) -> (bool, serde_json::Value) {
    let checks = tokio::task::spawn_blocking(move || {
        let postgres = db::ping(&pool).map_err(|e| format!("{e:#}"));
        let kafka = producer
            .check_reachable(Duration::from_secs(2))
            .map_err(|e| e.to_string());
        (postgres, kafka)
    })
    .await;
    let (postgres, kafka) = checks.unwrap_or_else(|e| (Err(e.to_string()), Err(e.to_string())));
    let failures = health.failures();
    let ready = postgres.is_ok() && kafka.is_ok() && failures.is_empty();
    let label = |r: &Result<(), String>| match r {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            "unreachable"
        }
    };
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {"postgres": label(&postgres), "kafka": label(&kafka)},
    });
    if !failures.is_empty() {
        body["failures"] = serde_json::json!(failures);
    }
    if let Some(last) = crate::metrics::last_error().filter(|_| with_last_error) {
        body["last_error"] = serde_json::json!(last);
    }
    (ready, body)
}
