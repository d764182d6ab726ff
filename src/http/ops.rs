//! The operations surface every process has: `/metrics`, `/healthz`,
//! `/readyz`. Each worker serves it on its own `METRICS_ADDR`; the server
//! on its `METRICS_ADDR` when that is set, else on its main port.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use warp::{Filter, Rejection, Reply};

use super::{error, health};
use crate::db::PgPool;
use crate::health::Health;
use crate::kafka::EventProducer;
use crate::metrics;

/// `/metrics`, `/healthz` and `/readyz`.
pub fn routes(
    pool: PgPool,
    producer: EventProducer,
    health: Health,
    own_listener: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    health::routes(pool, producer, health, own_listener)
        .or(metrics_route())
        .unify()
}

fn metrics_route() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(|| {
        warp::reply::with_header(
            metrics::render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
        .into_response()
    })
}

/// Starts a process's ops server on its own listener; returns the bound
/// address.
pub fn spawn(
    process: &str,
    addr: SocketAddr,
    pool: PgPool,
    producer: EventProducer,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    metrics::init(process);
    let routes = routes(pool, producer, health, true).recover(error::recover);
    let (bound, server) = warp::serve(routes)
        .try_bind_with_graceful_shutdown(addr, async move { shutdown.cancelled().await })?;
    tokio::spawn(server);
    tracing::info!(addr = %bound, "metrics and health on http://{bound}/metrics, /healthz, /readyz");
    Ok(bound)
}
