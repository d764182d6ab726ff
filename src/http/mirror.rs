//! `/api/stripe/{relation}` and `/api/stripe/{relation}/{id}`: the Stripe
//! mirror read over HTTP (queries in `crate::mirror`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use crate::db::{self, PgPool};
use crate::mirror::{self, GetQuery, ListQuery, ReadError, Relation};

/// The routes; each read is cancelled by Postgres after `query_timeout`
/// (`MIRROR_QUERY_TIMEOUT_MS`), and at most half the pool's connections
/// read the mirror at once.
pub fn routes(
    pool: PgPool,
    readers: Readers,
    query_timeout: Duration,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with_pool = warp::any().map(move || (pool.clone(), readers.clone()));
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();

    let list = warp::path!("stripe" / String)
        .and(warp::get())
        .and(raw_query)
        .and(with_pool.clone())
        .and_then(
            move |relation: String, raw: String, (pool, readers): (PgPool, Readers)| async move {
                let relation = find(&relation)?;
                let query = ListQuery::parse(relation, &raw).map_err(invalid)?;
                let page = read(
                    pool,
                    readers,
                    relation,
                    query_timeout,
                    move |conn, timeout| mirror::list(conn, &query, timeout),
                )
                .await
                .map_err(warp::reject::custom)?;
                Ok::<_, Rejection>(warp::reply::json(&page).into_response())
            },
        );

    let get =
        warp::path!("stripe" / String / String)
            .and(warp::get())
            .and(raw_query)
            .and(with_pool)
            .and_then(
                move |relation: String,
                      id: String,
                      raw: String,
                      (pool, readers): (PgPool, Readers)| async move {
                    let relation = find(&relation)?;
                    let query = GetQuery::parse(relation, &id, &raw).map_err(invalid)?;
                    let found = read(
                        pool,
                        readers,
                        relation,
                        query_timeout,
                        move |conn, timeout| mirror::get(conn, &query, timeout),
                    )
                    .await
                    .map_err(warp::reject::custom)?;
                    match found {
                        Some(row) => Ok::<_, Rejection>(warp::reply::json(&row).into_response()),
                        None => Err(warp::reject::custom(ApiError::new(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            "no object with this id on this account",
                        ))),
                    }
                },
            );

    list.or(get).unify()
}

/// The mirror reads allowed at once. A statement timeout bounds each
/// read, not how many wait on one lock or scan: without a cap, a few slow
/// reads would hold every pooled connection, and the customers API,
/// payments and `/readyz` would answer 503 for a lock held elsewhere. Half
/// the pool (at least one) is the mirror's; a read beyond that is refused
/// at once with `503 mirror_busy` and `Retry-After`, holding nothing.
/// The API's and the console's reads share one cap.
#[derive(Clone)]
pub struct Readers(Arc<Semaphore>);

impl Readers {
    pub fn for_pool(pool: &PgPool) -> Self {
        let share = (pool.max_size() as usize).div_ceil(2).max(1);
        Self(Arc::new(Semaphore::new(share)))
    }
}

/// Runs a read of the mirror on the blocking pool, at most as many at once
/// as `readers` allows. A read that ran out of time is answered 504: it is
/// neither the database being down nor worth paging anyone for.
pub async fn read<T: Send + 'static>(
    pool: PgPool,
    readers: Readers,
    relation: Relation,
    timeout: Duration,
    op: impl FnOnce(&mut diesel::PgConnection, Duration) -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ApiError> {
    let Ok(permit) = readers.0.try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mirror_busy",
            "as many mirror reads as allowed are running; retry shortly",
        )
        .with_retry_after(1));
    };
    db::blocking(&pool, move |conn| {
        let _permit = permit;
        op(conn, timeout)
    })
    .await
    .map_err(|e| match e {
        ReadError::Timeout(after) => {
            // The caller's query, or a lock held elsewhere: worth a look
            // if it recurs, not an outage.
            tracing::warn!(
                relation = relation.name,
                timeout_ms = after.as_millis() as u64,
                "mirror read cancelled at its statement timeout"
            );
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query_timeout",
                format!(
                    "the database did not finish this read within {} ms; narrow the \
                     filters or lower limit, or retry later",
                    after.as_millis()
                ),
            )
        }
        ReadError::Database(e) => ApiError::unavailable("database_unavailable", &e),
        ReadError::Unavailable(e) => ApiError::from(e),
    })
}

fn find(relation: &str) -> Result<Relation, Rejection> {
    Relation::find(relation).ok_or_else(|| {
        warp::reject::custom(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_relation",
            format!("stripe.{relation} is not a relation of the mirror; `stripe-sync catalog types` lists them"),
        ))
    })
}

fn invalid(e: crate::input::Invalid) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.message).with_field(e.field),
    )
}
