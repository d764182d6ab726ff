//! `/api/stripe/{relation}` and `/api/stripe/{relation}/{id}`: the Stripe
//! mirror read over HTTP (queries in `crate::mirror`).

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::with_db;
use crate::db::PgPool;
use crate::mirror::{self, ListQuery, Relation};
use crate::stripe::PLATFORM_ACCOUNT;

pub fn routes(
    pool: PgPool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with_pool = warp::any().map(move || pool.clone());
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();

    let list = warp::path!("stripe" / String)
        .and(warp::get())
        .and(raw_query)
        .and(with_pool.clone())
        .and_then(|relation: String, raw: String, pool: PgPool| async move {
            let relation = find(&relation)?;
            let query = ListQuery::parse(relation, &raw).map_err(invalid)?;
            let page = with_db(pool, move |conn| mirror::list(conn, &query)).await?;
            Ok::<_, Rejection>(warp::reply::json(&page).into_response())
        });

    let get = warp::path!("stripe" / String / String)
        .and(warp::get())
        .and(raw_query)
        .and(with_pool)
        .and_then(
            |relation: String, id: String, raw: String, pool: PgPool| async move {
                let relation = find(&relation)?;
                let account = account_param(&raw)?;
                let found =
                    with_db(pool, move |conn| mirror::get(conn, relation, &account, &id)).await?;
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

fn find(relation: &str) -> Result<Relation, Rejection> {
    Relation::find(relation).ok_or_else(|| {
        warp::reject::custom(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_relation",
            format!("stripe.{relation} is not a relation of the mirror; `stripe-sync catalog types` lists them"),
        ))
    })
}

/// `?account=acct_…` (the platform by default); nothing else is accepted.
fn account_param(raw: &str) -> Result<String, Rejection> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|e| {
        invalid(mirror::Invalid {
            field: "query".into(),
            message: format!("invalid query: {e}"),
        })
    })?;
    let mut account = PLATFORM_ACCOUNT.to_owned();
    for (name, value) in pairs {
        if name != "account" {
            return Err(invalid(mirror::Invalid {
                message: "the only parameter here is account".into(),
                field: name,
            }));
        }
        account = value;
    }
    Ok(account)
}

fn invalid(e: mirror::Invalid) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.message).with_field(e.field),
    )
}
