//! What a Stripe call's failure, or a customer Stripe cannot be asked
//! about, answers over HTTP: the payments and credits routes share it.

use warp::http::StatusCode;

use super::error::ApiError;
use crate::customers::NoStripeCustomer;
use crate::stripe::client::StripeError;

/// Stripe's refusals (400, 402, 404) are passed on as final answers with
/// Stripe's code and message; a key Stripe holds an earlier attempt under
/// is a conflict to retry; anything else is Stripe being unavailable.
pub fn stripe_answer(e: StripeError) -> ApiError {
    match e {
        StripeError::Api {
            status,
            code,
            message,
            decline_code,
            ..
        } if matches!(status, 400 | 402 | 404) => {
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
            if let Some(decline_code) = decline_code {
                err = err.with_detail("decline_code", decline_code);
            }
            err.final_answer()
        }
        e @ StripeError::Idempotency { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "stripe_idempotency_conflict",
            format!("Stripe holds an earlier attempt of this request under the same key; retry with the same Idempotency-Key shortly ({e})"),
        ),
        e => ApiError::unavailable("stripe_unavailable", &e),
    }
}

impl From<NoStripeCustomer> for ApiError {
    fn from(e: NoStripeCustomer) -> Self {
        match e {
            NoStripeCustomer::NotSynced(_) => {
                ApiError::new(StatusCode::CONFLICT, "customer_not_synced", e.to_string())
            }
            NoStripeCustomer::Missing(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "customer_not_found", e.to_string())
                    .with_field("customer_id")
            }
            NoStripeCustomer::Database(e) => ApiError::unavailable("database_unavailable", &e),
        }
    }
}

/// Stripe's error codes we pass through (ApiError codes are static); any
/// other is reported as a generic one, with Stripe's message.
pub(super) fn stripe_code(code: &str) -> &'static str {
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
