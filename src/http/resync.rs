//! `POST /api/admin/resync`: `stripe-sync resync` over HTTP, behind the
//! admin token. Every id is checked (and its type found) before any is
//! read; each is then read from Stripe and published as a snapshot.

use serde::Deserialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::body::json_body;
use super::error::ApiError;
use crate::db::PgPool;
use crate::kafka::EventProducer;
use crate::pull::resync::{self, Refused};
use crate::stripe::{AccountId, StripeClient};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResyncBody {
    ids: Vec<String>,
    /// The type, where an id's prefix does not name one.
    #[serde(rename = "type")]
    type_name: Option<String>,
    /// The account the objects belong to; the platform by default.
    account: Option<AccountId>,
}

#[derive(Clone)]
struct Ctx {
    stripe: Option<StripeClient>,
    pool: PgPool,
    producer: EventProducer,
    topic: String,
}

pub fn route(
    stripe: Option<StripeClient>,
    pool: PgPool,
    producer: EventProducer,
    topic: String,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let ctx = Ctx {
        stripe,
        pool,
        producer,
        topic,
    };
    warp::path!("admin" / "resync")
        .and(warp::post())
        .and(json_body::<ResyncBody>())
        .and(warp::any().map(move || ctx.clone()))
        .and_then(|body: ResyncBody, c: Ctx| async move {
            let account = body.account.unwrap_or(AccountId::PLATFORM);
            let targets = resync::plan(&body.ids, body.type_name.as_deref(), &account)
                .map_err(|e| warp::reject::custom(refusal(&e)))?;
            let Some(stripe) = &c.stripe else {
                return Err(warp::reject::custom(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stripe_not_configured",
                    "resync reads Stripe: set STRIPE_API_KEY in serve's environment",
                )));
            };
            let results = resync::run(stripe, &c.producer, &c.topic, &c.pool, &targets).await;
            let (resynced, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
            let resynced: Vec<_> = resynced.into_iter().filter_map(Result::ok).collect();
            let failed: Vec<_> = failed.into_iter().filter_map(Result::err).collect();
            // Some objects not resynced: the caller must see it in the
            // status, not only in the body: 404 when each of them is one
            // Stripe and the mirror both lack, 502 when Stripe or the
            // broker failed.
            let status = if failed.is_empty() {
                StatusCode::OK
            } else if failed.iter().all(|f| f.code == "not_found") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_GATEWAY
            };
            Ok::<_, Rejection>(
                warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"resynced": resynced, "failed": failed})),
                    status,
                )
                .into_response(),
            )
        })
}

fn refusal(e: &Refused) -> ApiError {
    let field = match e {
        Refused::Type(crate::registry::IdTypeError::NoSuchType { .. }) => "type",
        _ => "ids",
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.to_string()).with_field(field)
}
