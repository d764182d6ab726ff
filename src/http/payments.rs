//! `/api/payment-intents` and `/api/refunds`: the payments API
//! (`crate::apps::payments`). Every POST takes an `Idempotency-Key`.

use std::collections::BTreeMap;
use std::future::Future;

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::body::{json_body, typed};
use super::error::ApiError;
use crate::apps::payments::idempotency::{self, Claim};
use crate::apps::payments::intents::{
    self, NewIntent, NewRefund, PaymentsError, MAX_AMOUNT, REFUND_REASONS,
};
use crate::db::PgPool;
use crate::stripe::client::{StripeClient, StripeError};
use crate::stripe::currency;

#[derive(Clone)]
struct Ctx {
    pool: PgPool,
    /// `None` when serve runs without `STRIPE_API_KEY`.
    stripe: Option<StripeClient>,
}

impl Ctx {
    fn stripe(&self) -> Result<&StripeClient, ApiError> {
        self.stripe.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payments_not_configured",
                "the payments API needs STRIPE_API_KEY in serve's environment",
            )
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentBody {
    amount: i64,
    currency: String,
    #[serde(default)]
    customer_id: Option<Uuid>,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    payment_intent: String,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).with_field(field)
}

fn check_amount(field: &str, amount: i64) -> Result<i64, ApiError> {
    if (1..=MAX_AMOUNT).contains(&amount) {
        Ok(amount)
    } else {
        Err(invalid(
            field,
            format!(
                "{field} must be a whole number of the currency's smallest unit, 1 to {MAX_AMOUNT}"
            ),
        ))
    }
}

fn is_stripe_id(id: &str, prefix: &str) -> bool {
    id.len() > prefix.len()
        && id.starts_with(prefix)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl IntentBody {
    fn checked(self) -> Result<NewIntent, ApiError> {
        let currency = currency::parse(&self.currency).ok_or_else(|| {
            invalid(
                "currency",
                format!("{:?} is not an ISO 4217 currency", self.currency),
            )
        })?;
        if let Some(pm) = self
            .payment_method
            .as_deref()
            .filter(|pm| !is_stripe_id(pm, "pm_"))
        {
            return Err(invalid(
                "payment_method",
                format!("{pm:?} is not a payment method id (pm_…)"),
            ));
        }
        Ok(NewIntent {
            amount: check_amount("amount", self.amount)?,
            currency,
            customer: self.customer_id,
            payment_method: self.payment_method,
            confirm: self.confirm,
            metadata: self.metadata,
        })
    }
}

impl RefundBody {
    fn checked(self) -> Result<NewRefund, ApiError> {
        if !is_stripe_id(&self.payment_intent, "pi_") {
            return Err(invalid(
                "payment_intent",
                format!(
                    "{:?} is not a payment intent id (pi_…)",
                    self.payment_intent
                ),
            ));
        }
        if let Some(reason) = self
            .reason
            .as_deref()
            .filter(|r| !REFUND_REASONS.contains(r))
        {
            return Err(invalid(
                "reason",
                format!("{reason:?} is not one of {}", REFUND_REASONS.join(", ")),
            ));
        }
        Ok(NewRefund {
            payment_intent: self.payment_intent,
            amount: self.amount.map(|a| check_amount("amount", a)).transpose()?,
            reason: self.reason,
        })
    }
}

pub fn routes(
    pool: PgPool,
    stripe: Option<StripeClient>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let ctx = Ctx { pool, stripe };
    let with = warp::any().map(move || ctx.clone());
    let key = warp::header::optional::<String>("idempotency-key");
    let create = warp::path!("payment-intents")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(|key: Option<String>, body: Value, ctx: Ctx| async move {
            let intent = typed::<IntentBody>(&body)?
                .checked()
                .map_err(warp::reject::custom)?;
            idempotent(
                ctx.clone(),
                key,
                "payment-intents",
                &body,
                |stripe_key| async move {
                    let stripe = ctx.stripe()?;
                    let customer = match intent.customer {
                        Some(local) => Some(
                            with_conn(ctx.pool.clone(), move |conn| {
                                intents::stripe_customer(conn, local)
                            })
                            .await?,
                        ),
                        None => None,
                    };
                    let form = intents::intent_form(&intent, customer.as_deref());
                    let pi = stripe
                        .post(
                            crate::stripe::PLATFORM_ACCOUNT,
                            "/v1/payment_intents",
                            &form,
                            &stripe_key,
                        )
                        .await
                        .map_err(|e| api_error(e.into()))?;
                    Ok((StatusCode::CREATED, intents::created_view(&pi)))
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
        .and(with)
        .and_then(|key: Option<String>, body: Value, ctx: Ctx| async move {
            let refund = typed::<RefundBody>(&body)?
                .checked()
                .map_err(warp::reject::custom)?;
            idempotent(
                ctx.clone(),
                key,
                "refunds",
                &body,
                |stripe_key| async move {
                    let stripe = ctx.stripe()?;
                    let done = intents::refund(stripe, &refund, &stripe_key)
                        .await
                        .map_err(api_error)?;
                    Ok((StatusCode::OK, done))
                },
            )
            .await
        });
    create.or(get).unify().or(refund).unify()
}

async fn with_conn<T: Send + 'static>(
    pool: PgPool,
    op: impl FnOnce(&mut diesel::PgConnection) -> Result<T, PaymentsError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get()
            .map_err(|e| ApiError::unavailable("database_unavailable", &e))?;
        op(&mut conn).map_err(api_error)
    })
    .await
    .map_err(|e| ApiError::unavailable("internal", &e))?
}

/// Runs `work` under the request's `Idempotency-Key` (see
/// [`idempotency`]): a replay answers what the first request answered; the
/// work gets the key to send to Stripe. Without a header, the work still
/// gets a fresh key, so our own retries to Stripe stay single.
async fn idempotent<F, Fut>(
    ctx: Ctx,
    key: Option<String>,
    route: &'static str,
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
        return Err(warp::reject::custom(invalid(
            "Idempotency-Key",
            format!(
                "an Idempotency-Key is 1 to {} characters",
                idempotency::MAX_KEY_LEN
            ),
        )));
    }
    let hash = idempotency::request_hash(route, body);
    let claimed = {
        let (pool, key) = (ctx.pool.clone(), key.clone());
        super::with_db(pool, move |conn| {
            idempotency::claim(conn, &key, route, &hash)
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
            let pool = ctx.pool.clone();
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

/// A payments failure as the API answers it: Stripe's own code and message
/// for what Stripe refused.
fn api_error(e: PaymentsError) -> ApiError {
    match e {
        PaymentsError::CustomerNotSynced(_) => {
            ApiError::new(StatusCode::CONFLICT, "customer_not_synced", e.to_string())
        }
        PaymentsError::NoSuchCustomer(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "customer_not_found", e.to_string())
                .with_field("customer_id")
        }
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
        PaymentsError::Stripe(StripeError::Api {
            status,
            code,
            message,
            decline_code,
        }) if matches!(status, 400 | 402 | 404) => {
            let code: &'static str = match code.as_deref() {
                Some(known) => stripe_code(known),
                None if status == 402 => "card_error",
                None => "invalid_request",
            };
            let mut err = ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                code,
                message,
            );
            err.decline_code = decline_code;
            err
        }
        PaymentsError::Stripe(e) => ApiError::unavailable("stripe_unavailable", &e),
        PaymentsError::Database(e) => ApiError::unavailable("database_unavailable", &e),
    }
}

/// Stripe's error codes we pass through (ApiError codes are static); any
/// other is reported as a generic one, with Stripe's message.
fn stripe_code(code: &str) -> &'static str {
    const PASSED: &[&str] = &[
        "card_declined",
        "expired_card",
        "incorrect_cvc",
        "processing_error",
        "incorrect_number",
        "authentication_required",
        "insufficient_funds",
        "resource_missing",
        "amount_too_large",
        "amount_too_small",
        "charge_already_refunded",
        "parameter_invalid_integer",
        "parameter_missing",
        "parameter_unknown",
        "payment_intent_unexpected_state",
        "idempotency_key_in_use",
        "invalid_request_error",
    ];
    PASSED
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("stripe_error")
}
