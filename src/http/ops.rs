//! The operations surface every process has: `/metrics`, `/healthz`,
//! `/readyz`. The server mounts it on its main port; each worker serves it
//! on its own `METRICS_ADDR`.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use warp::{Filter, Rejection, Reply};

use super::{error, health};
use crate::db::PgPool;
use crate::kafka::EventProducer;
use crate::metrics;

pub fn metrics_route() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone
{
    warp::path!("metrics").and(warp::get()).map(|| {
        warp::reply::with_header(
            metrics::render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
        .into_response()
    })
}

/// Starts a worker's ops server; returns the bound address.
pub fn spawn(
    process: &str,
    addr: SocketAddr,
    pool: PgPool,
    producer: EventProducer,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    metrics::init(process);
    let routes = health::routes(pool, producer)
        .or(metrics_route())
        .unify()
        .recover(error::recover);
    let (bound, server) = warp::serve(routes)
        .try_bind_with_graceful_shutdown(addr, async move { shutdown.cancelled().await })?;
    tokio::spawn(server);
    tracing::info!(addr = %bound, "metrics and health on http://{bound}/metrics, /healthz, /readyz");
    Ok(bound)
}
