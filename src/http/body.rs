//! JSON request bodies, read the same way by every route: 415 unless
//! `Content-Type: application/json`, 413 over the limit, 400 for malformed
//! JSON or an unknown field (named).

use serde::de::DeserializeOwned;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::error::ApiError;

/// The largest JSON body an API route accepts.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// A JSON body: 415 unless `Content-Type: application/json`, 413 over the
/// limit, 400 for malformed JSON or an unknown field (named).
pub fn json_body<T: DeserializeOwned + Send>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|ct: Option<String>| async move {
            let is_json = ct
                .as_deref()
                .and_then(|v| v.split(';').next())
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
            if is_json {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as Content-Type: application/json",
                )))
            }
        })
        .untuple_one()
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(whole_body())
        .and_then(|bytes: bytes::Bytes| async move {
            serde_json::from_slice::<T>(&bytes).map_err(|e| warp::reject::custom(body_error(&e)))
        })
}

/// The request's body, whole: a body that ends before its Content-Length
/// (the client went away or half-closed) is the client's fault, a 400,
/// not an internal error.
pub fn whole_body() -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    // Reading is the only way `bytes()` fails; warp keeps its error type
    // private, so it cannot be told apart in `recover`.
    warp::body::bytes().or_else(|_| async {
        Err(warp::reject::custom(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            "the request body ended before its Content-Length",
        )))
    })
}

/// A field refused at the edge: 400 naming it.
pub fn refused(e: crate::input::Invalid) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.message).with_field(e.field),
    )
}

/// A body already read as JSON (to fingerprint it), as the request type.
pub fn typed<T: DeserializeOwned>(body: &serde_json::Value) -> Result<T, Rejection> {
    T::deserialize(body).map_err(|e| warp::reject::custom(body_error(&e)))
}

fn body_error(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    // serde names the field: "unknown field `nickname`, expected one of ..."
    if let Some(rest) = text.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default().to_owned();
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown field {field:?}"),
        )
        .with_field(field);
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        format!("the body is not valid JSON for this request: {text}"),
    )
}
