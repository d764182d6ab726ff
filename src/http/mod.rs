//! The HTTP surface of `stripe-sync serve`.

pub mod admin;
pub mod admin_apps;
pub mod auth;
pub mod body;
pub mod credits;
pub mod customers;
pub mod error;
pub mod exports;
pub mod health;
pub mod idempotency;
pub mod idempotent;
pub mod mirror;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod payments;
pub mod resync;
pub mod salesforce;
pub mod stripe_errors;
pub mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use warp::{Filter, Reply};

use crate::db::PgPool;
use crate::ingest::WebhookIngest;
use crate::kafka::EventProducer;

/// Everything the routes need, built once by [`crate::serve::run`].
#[derive(Clone)]
pub struct AppState {
    pub ingest: Arc<WebhookIngest>,
    pub pool: PgPool,
    pub producer: EventProducer,
    pub max_body_bytes: u64,
    pub tokens: auth::Tokens,
    pub inventory: crate::ops::Inventory,
    /// The payments API's Stripe client; `None` without `STRIPE_API_KEY`.
    pub stripe: Option<crate::stripe::StripeClient>,
    pub health: crate::health::Health,
    /// Whether `/metrics`, `/healthz` and `/readyz` are served here too
    /// (serve without a `METRICS_ADDR` of its own).
    pub ops_on_main_port: bool,
    /// `POST /webhooks/salesforce`; `None` without `SALESFORCE_WEBHOOK_SECRET`.
    pub salesforce_relay: Option<Arc<salesforce::Relay>>,
    /// Statement timeout of each read of `/api/stripe/*`.
    pub mirror_query_timeout: std::time::Duration,
    /// How long a batch of the HTTP export is held after it is offered (from every caller).
    pub export_batch_lease: std::time::Duration,
    /// The operators' reads and actions, for `/api/admin/*` and `/console`.
    pub operator: crate::ops::operator::Operator,
}

pub fn routes(state: AppState) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let payments_ctx = payments::Ctx::new(
        state.pool.clone(),
        state.stripe.clone(),
        state.producer.clone(),
        state.inventory.events_topic.clone(),
    );
    // Every `or` keeps a clone of the filter it falls back to in each
    // request's future, and a filter's clone copies everything its closures
    // captured (pools, clients, names, token sets): most of serve's CPU per
    // webhook went to copying and freeing the routes after it. Boxed, a
    // filter is an `Arc`, and that clone is a reference count.
    //
    // Auth runs for everything under /api before any route matches, so an
    // unauthenticated caller learns nothing about which routes exist. The
    // admin routes (`/api/admin/*`: dead letters, notifications, credit
    // packages and adjustments) take the admin token, the others the API
    // token.
    let readers = mirror::Readers::for_pool(&state.pool);
    let console = state
        .tokens
        .admin
        .clone()
        .map(|token| crate::console::Console {
            sessions: crate::console::session::Sessions::new(token),
            op: state.operator.clone(),
            pool: state.pool.clone(),
            readers: readers.clone(),
            mirror_timeout: state.mirror_query_timeout,
        });
    let api = warp::path("api")
        .and(auth::bearer(state.tokens.clone()))
        .and(
            customers::routes(state.pool.clone())
                .boxed()
                .or(mirror::routes(state.pool.clone(), readers, state.mirror_query_timeout).boxed())
                .unify()
                .or(exports::routes(state.pool.clone(), state.export_batch_lease).boxed())
                .unify()
                .or(notifications::routes(state.pool.clone()).boxed())
                .unify()
                .or(payments::routes(payments_ctx.clone()).boxed())
                .unify()
                .or(credits::routes(payments_ctx).boxed())
                .unify()
                .or(openapi::route().boxed())
                .unify()
                .or(admin::routes(state.operator.clone()).boxed())
                .unify()
                .or(admin_apps::routes(state.operator.clone()).boxed())
                .unify()
                .or(resync::route(
                    state.stripe.clone(),
                    state.pool.clone(),
                    state.producer.clone(),
                    state.inventory.events_topic.clone(),
                )
                .boxed())
                .unify(),
        )
        .boxed();
    let on_main_port = state.ops_on_main_port;
    let ops = warp::any()
        .and_then(move || async move {
            if on_main_port {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(ops::routes(
            state.pool.clone(),
            state.producer.clone(),
            state.health.clone(),
            false,
        ))
        .boxed();
    let salesforce_relay = match state.salesforce_relay.clone() {
        Some(relay) => salesforce::route(relay, state.max_body_bytes).boxed(),
        None => warp::any()
            .and_then(|| async { Err::<warp::reply::Response, _>(warp::reject::not_found()) })
            .boxed(),
    };
    webhook::route(state.ingest.clone(), state.max_body_bytes)
        .boxed()
        .or(salesforce_relay)
        .unify()
        .or(ops)
        .unify()
        .or(crate::console::routes(console).boxed())
        .unify()
        .or(api)
        .unify()
        .recover(error::recover)
        .with(warp::log::custom(log_outcome))
        .with(warp::trace::request())
}

/// One line per answered request, in warp's request span (whose own lines
/// `telemetry` drops). A 5xx is an error, but for a 504: serve answers it
/// only for a mirror read Postgres cancelled at its statement timeout,
/// which the mirror logs as a warning with the relation, and which is a
/// caller's filter or a lock held elsewhere, not an outage to page for.
fn log_outcome(info: warp::log::Info<'_>) {
    let status = info.status();
    let elapsed_ms = info.elapsed().as_millis() as u64;
    if status.is_server_error() && status != warp::http::StatusCode::GATEWAY_TIMEOUT {
        tracing::error!(
            status = status.as_u16(),
            elapsed_ms,
            "unable to process request (internal error)"
        );
    } else if status.is_client_error() || status.is_server_error() {
        tracing::warn!(
            status = status.as_u16(),
            elapsed_ms,
            "unable to serve request"
        );
    } else {
        tracing::info!(status = status.as_u16(), elapsed_ms, "finished processing");
    }
}

/// Binds (port 0 picks a free port) and returns the bound address and the
/// server future, which completes after `shutdown` once in-flight requests
/// have finished.
pub fn bind(
    state: AppState,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let (bound, server) = warp::serve(routes(state))
        .try_bind_with_graceful_shutdown(addr, async move { shutdown.cancelled().await })?;
    Ok((bound, server))
}
