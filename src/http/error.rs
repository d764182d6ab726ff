//! The one API error type and the one place rejections become JSON
//! `{"error":{"code","message"}}` (invariant 9).

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::reject::Rejection;
use warp::reply::{json, with_status, Reply};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The input field at fault, for validation errors.
    pub field: Option<String>,
    /// More about the error, beside code and message: a card issuer's
    /// `decline_code`, the `payment_intent` and `client_secret` a customer
    /// must authenticate.
    pub details: Vec<(&'static str, serde_json::Value)>,
    /// What this answer does to the `Idempotency-Key` it was given under
    /// (see `super::idempotent`).
    pub for_key: ForKey,
    /// Seconds to wait before retrying, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

/// What an error answer does to the request's `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForKey {
    /// "Retry later": the key stays bound to the request and reopens, so
    /// the retry does the work again.
    Reopen,
    /// Final (Stripe's decline, Stripe's refusal of the request): saved
    /// and replayed to every retry.
    Replay,
    /// The key turned out to belong to another request (a purchase or a
    /// spend of its own): this request's claim on it is dropped.
    Release,
}

impl warp::reject::Reject for ApiError {}

/// No connection, or the task holding it died: 503, retry later.
impl From<crate::db::Unavailable> for ApiError {
    fn from(e: crate::db::Unavailable) -> Self {
        let code = match e {
            crate::db::Unavailable::NoConnection(_) => "database_unavailable",
            crate::db::Unavailable::TaskFailed(_) => "internal",
        };
        Self::unavailable(code, &e)
    }
}

/// A query that failed: Postgres is down or refused it; 503, retry later.
impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        Self::unavailable("database_unavailable", &e)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            details: Vec::new(),
            for_key: ForKey::Reopen,
            retry_after: None,
        }
    }

    /// Asks the client to retry after `seconds` (`Retry-After`).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Marks a refusal that a retry of the same request would get again
    /// (Stripe's decline, Stripe's refusal of the request): saved under
    /// the request's `Idempotency-Key` and replayed.
    pub fn final_answer(mut self) -> Self {
        self.for_key = ForKey::Replay;
        self
    }

    /// `422 idempotency_key_reused`: the key names another request.
    pub fn key_reused() -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request; use a new key for a new request",
        );
        e.for_key = ForKey::Release;
        e
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_detail(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.details.push((name, value.into()));
        self
    }

    /// A 5xx: the cause is logged once here; the client gets a generic text.
    pub fn unavailable(code: &'static str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, code, "request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            "a dependency is unavailable; retry later",
        )
    }

    /// The JSON body: `{"error": {"code", "message", "field"?, details…}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            error["field"] = serde_json::Value::String(field.clone());
        }
        for (name, value) in &self.details {
            error[*name] = value.clone();
        }
        serde_json::json!({ "error": error })
    }

    pub fn into_response(self) -> warp::reply::Response {
        let mut response = with_status(json(&self.body()), self.status).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", warp::http::HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                warp::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Turns every rejection (ours and warp's) into the JSON error shape.
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    use warp::reject;
    let err = if let Some(e) = rejection.find::<ApiError>() {
        ApiError {
            status: e.status,
            code: e.code,
            message: e.message.clone(),
            field: e.field.clone(),
            details: e.details.clone(),
            for_key: e.for_key,
            retry_after: e.retry_after,
        }
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    } else if rejection.find::<reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
    } else if rejection.find::<reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required",
        )
    } else if rejection.find::<reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if rejection.find::<reject::UnsupportedMediaType>().is_some() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content type",
        )
    } else if let Some(e) = rejection.find::<reject::InvalidHeader>() {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", e.to_string())
    } else if let Some(e) = rejection.find::<reject::InvalidQuery>() {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
    } else {
        tracing::error!(rejection = ?rejection, "unhandled rejection");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    };
    Ok(err.into_response())
}
