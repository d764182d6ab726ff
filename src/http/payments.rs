//! `/api/checkout-sessions`, `/api/payment-intents`, `/api/refunds` and
//! `/api/refund-requests`: the payments API (`crate::apps::payments`).
//! Every POST takes an `Idempotency-Key`; those that move money (a payment
//! intent that confirms, a refund, a queued refund) require one.

use std::collections::BTreeMap;

use serde_json::Value;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::body::{json_body, refused, typed};
use super::error::ApiError;
use super::idempotency;
use super::idempotent::{self, idempotent, Answer};
use super::stripe_errors::stripe_answer;
use crate::apps::payments::checkout;
use crate::apps::payments::input::{
    self, CheckoutBody, IntentBody, Invalid, RefundBody, RefundRequestBody,
};
use crate::apps::payments::intents::{self, PaymentsError};
use crate::apps::payments::refund_requests::{self, Queued};
use crate::customers::CustomerId;
use crate::db::{self, PgPool};
use crate::kafka::EventProducer;
use crate::stripe::client::StripeClient;
use crate::stripe::{AccountId, ObjectId};

/// What the payments and credits routes share.
#[derive(Clone)]
pub struct Ctx {
    pub(super) pool: PgPool,
    /// `None` when serve runs without `STRIPE_API_KEY`.
    pub(super) stripe: Option<StripeClient>,
    /// Where an object read from Stripe is published as a snapshot, so it
    /// reaches the mirror by the one path in.
    producer: EventProducer,
    events_topic: String,
}

impl Ctx {
    pub fn new(
        pool: PgPool,
        stripe: Option<StripeClient>,
        producer: EventProducer,
        events_topic: String,
    ) -> Self {
        Self {
            pool,
            stripe,
            producer,
            events_topic,
        }
    }

    /// A local customer's `cus_…` (`None` for none): 404 unknown, 409 not
    /// synced yet.
    async fn stripe_customer(&self, local: Option<CustomerId>) -> Result<Option<String>, ApiError> {
        match local {
            Some(local) => {
                db::blocking(&self.pool, move |conn| {
                    Ok(Some(crate::customers::stripe_customer(conn, local)?))
                })
                .await
            }
            None => Ok(None),
        }
    }

    pub(super) fn stripe(&self) -> Result<&StripeClient, ApiError> {
        self.stripe.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payments_not_configured",
                "the payments API needs STRIPE_API_KEY in serve's environment",
            )
        })
    }
}

pub fn routes(
    ctx: Ctx,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || ctx.clone());
    let key = warp::header::optional::<String>("idempotency-key");
    let create_checkout = warp::path!("checkout-sessions")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(|key: Option<String>, body: Value, ctx: Ctx| async move {
            let new = typed::<CheckoutBody>(&body)?.checked().map_err(refused)?;
            idempotent(
                ctx.pool.clone(),
                key,
                "checkout-sessions",
                &body,
                move |stripe_key| async move {
                    let stripe = ctx.stripe()?;
                    let customer = ctx.stripe_customer(new.customer).await?;
                    let form = checkout::form(&new, customer.as_deref());
                    let session = stripe
                        .post(
                            &AccountId::PLATFORM,
                            "/v1/checkout/sessions",
                            &form,
                            &stripe_key,
                        )
                        .await
                        .map_err(|e| api_error(e.into()))?;
                    Ok(Answer::done(
                        StatusCode::CREATED,
                        checkout::created_view(&session),
                    ))
                },
            )
            .await
        });
    let get_checkout = warp::path!("checkout-sessions" / String)
        .and(warp::get())
        .and(with.clone())
        .and_then(|id: String, ctx: Ctx| async move {
            let session = read_checkout(&ctx, id)
                .await
                .map_err(warp::reject::custom)?;
            Ok::<_, Rejection>(warp::reply::json(&checkout::view(&session)).into_response())
        });
    let create = warp::path!("payment-intents")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(|key: Option<String>, body: Value, ctx: Ctx| async move {
            let intent = typed::<IntentBody>(&body)?.checked().map_err(refused)?;
            // Confirming charges: a retry without the key could charge twice.
            let key = if intent.confirm {
                Some(idempotent::required(key)?)
            } else {
                key
            };
            idempotent(
                ctx.pool.clone(),
                key,
                "payment-intents",
                &body,
                move |stripe_key| async move {
                    let stripe = ctx.stripe()?;
                    let customer = ctx.stripe_customer(intent.customer).await?;
                    let form = intents::intent_form(&intent, customer.as_deref());
                    let pi = stripe
                        .post(
                            &AccountId::PLATFORM,
                            "/v1/payment_intents",
                            &form,
                            &stripe_key,
                        )
                        .await
                        .map_err(|e| api_error(e.into()))?;
                    Ok(Answer::done(
                        StatusCode::CREATED,
                        intents::created_view(&pi),
                    ))
                },
            )
            .await
        });
    let get = warp::path!("payment-intents" / String)
        .and(warp::get())
        .and(with.clone())
        .and_then(|id: String, ctx: Ctx| async move {
            let stripe = ctx.stripe().map_err(warp::reject::custom)?;
            let state = intents::read_intent(stripe, &id)
                .await
                .map_err(|e| warp::reject::custom(api_error(e)))?;
            Ok::<_, Rejection>(warp::reply::json(&state.view()).into_response())
        });
    let refund = warp::path!("refunds")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(|key: Option<String>, body: Value, ctx: Ctx| async move {
            let refund = typed::<RefundBody>(&body)?.checked().map_err(refused)?;
            let key = idempotent::required(key)?;
            idempotent(
                ctx.pool.clone(),
                Some(key),
                "refunds",
                &body,
                move |stripe_key| async move {
                    let stripe = ctx.stripe()?;
                    let done = intents::refund(stripe, &refund, &stripe_key)
                        .await
                        .map_err(api_error)?;
                    Ok(Answer::done(StatusCode::OK, done))
                },
            )
            .await
        });
    let queue_refund = warp::path!("refund-requests")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(|key: Option<String>, body: Value, ctx: Ctx| async move {
            let (request_id, refund) = typed::<RefundRequestBody>(&body)?
                .checked()
                .map_err(refused)?;
            let key = idempotent::required(key)?;
            let request_id = request_id.unwrap_or_else(|| idempotency::derived_request_id(&key));
            idempotent(
                ctx.pool.clone(),
                Some(key),
                "refund-requests",
                &body,
                move |_| async move {
                    let queued = db::blocking(&ctx.pool, move |conn| {
                        Ok(refund_requests::queue(conn, &request_id, &refund)?)
                    })
                    .await
                    .map_err(api_error)?;
                    match queued {
                        Queued::New(r) | Queued::Existing(r) => Ok(Answer::done(
                            StatusCode::ACCEPTED,
                            serde_json::json!({"request_id": r.id, "status": r.status}),
                        )),
                        Queued::Conflict => Err(ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "request_id_reused",
                            "this request_id was used for another refund",
                        )
                        .with_field("request_id")),
                    }
                },
            )
            .await
        });
    let get_refund_request = warp::path!("refund-requests" / String)
        .and(warp::get())
        .and(with.clone())
        .and_then(|id: String, ctx: Ctx| async move {
            let found = db::blocking(&ctx.pool, move |conn| Ok(refund_requests::get(conn, &id)?))
                .await
                .map_err(|e| warp::reject::custom(api_error(e)))?;
            match found {
                Some(r) => Ok(warp::reply::json(&r).into_response()),
                None => Err(warp::reject::custom(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no refund request with this id",
                ))),
            }
        });
    let list_refund_requests = warp::path!("refund-requests")
        .and(warp::get())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(with.clone())
        .and_then(|query: BTreeMap<String, String>, ctx: Ctx| async move {
            let pi = match (query.get("payment_intent"), query.len()) {
                (Some(pi), 1) if input::is_stripe_id(pi, "pi_") => pi.clone(),
                _ => {
                    return Err(refused(Invalid::new(
                        "payment_intent",
                        "list refund requests with ?payment_intent=pi_…",
                    )))
                }
            };
            let list = db::blocking(&ctx.pool, move |conn| {
                Ok(refund_requests::for_payment(conn, &pi)?)
            })
            .await
            .map_err(|e| warp::reject::custom(api_error(e)))?;
            Ok::<_, Rejection>(
                warp::reply::json(&serde_json::json!({"refund_requests": list})).into_response(),
            )
        });
    create_checkout
        .or(queue_refund)
        .unify()
        .or(get_refund_request)
        .unify()
        .or(list_refund_requests)
        .unify()
        .or(get_checkout)
        .unify()
        .or(create)
        .unify()
        .or(get)
        .unify()
        .or(refund)
        .unify()
}

/// The session from the mirror; else from Stripe, published as a snapshot
/// so the mirror has it from then on.
async fn read_checkout(ctx: &Ctx, id: String) -> Result<Value, ApiError> {
    let Some(object) = ObjectId::of_kind(&id, "cs_") else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_missing",
            "no such checkout session",
        ));
    };
    let lookup = id.clone();
    let mirrored = db::blocking(&ctx.pool, move |conn| {
        Ok(checkout::mirrored(conn, &lookup)?)
    })
    .await
    .map_err(api_error)?;
    if let Some(session) = mirrored {
        return Ok(session);
    }
    let stripe = ctx.stripe()?;
    let session = match stripe
        .retrieve(&AccountId::PLATFORM, "checkout/sessions", object)
        .await
    {
        Ok(crate::stripe::RemoteObject::Live(session)) => session,
        Ok(crate::stripe::RemoteObject::Deleted) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_missing",
                "no such checkout session",
            ))
        }
        Err(e) => return Err(api_error(e.into())),
    };
    let resource =
        crate::registry::by_object("checkout.session").expect("checkout sessions are mirrored");
    let snapshot = crate::pull::snapshot_event(
        resource,
        &AccountId::PLATFORM,
        &session,
        crate::ingest::unix_now(),
    );
    // The answer does not wait on the mirror: a failed publish is logged,
    // and the next read tries again.
    if let Err(e) = crate::pull::publish(
        &ctx.producer,
        &ctx.events_topic,
        &snapshot,
        "api-read",
        &AccountId::PLATFORM,
    )
    .await
    {
        tracing::warn!(checkout.session = %id, error = %format!("{e:#}"), "could not publish the session read from Stripe");
    }
    Ok(session)
}

/// A payments failure as the API answers it: Stripe's own code and message
/// for what Stripe refused. Stripe's refusals are final answers (a retry
/// of the same request under the same key gets them again); our own checks
/// (customer not synced yet, too much to refund by what Stripe says now)
/// and outages are not, so a retry looks again.
pub(super) fn api_error(e: PaymentsError) -> ApiError {
    match e {
        PaymentsError::Customer(e) => e.into(),
        PaymentsError::NoSuchIntent(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string())
        }
        PaymentsError::AmountTooLarge { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "amount_too_large", e.to_string())
                .with_field("amount")
        }
        PaymentsError::NothingToRefund => ApiError::new(
            StatusCode::BAD_REQUEST,
            "charge_already_refunded",
            e.to_string(),
        ),
        PaymentsError::Stripe(e) => stripe_answer(e),
        PaymentsError::Database(e) => ApiError::unavailable("database_unavailable", &e),
        PaymentsError::Unavailable(e) => e.into(),
    }
}
