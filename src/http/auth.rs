//! Bearer-token auth for `/api/*`. The webhook route is signature-only.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::error::ApiError;

/// Rejects with 401 unless `Authorization: Bearer <token>` carries the
/// configured token.
pub fn bearer(token: Arc<SecretString>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                let presented = header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim);
                match presented {
                    Some(p) if token_matches(p, token.expose_secret()) => Ok(()),
                    Some(_) => Err(warp::reject::custom(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the bearer token is not valid",
                    ))),
                    None => Err(warp::reject::custom(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "send Authorization: Bearer <API token>",
                    ))),
                }
            }
        })
        .untuple_one()
}

/// Constant-time comparison that also hides the token's length: both sides
/// are reduced to a keyed MAC of equal size before comparing.
fn token_matches(presented: &str, expected: &str) -> bool {
    let mac = |s: &str| {
        let mut m =
            Hmac::<Sha256>::new_from_slice(b"stripe-sync api token").expect("any key length");
        m.update(s.as_bytes());
        m
    };
    mac(expected)
        .verify_slice(&mac(presented).finalize().into_bytes())
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_only_the_exact_token() {
        assert!(super::token_matches("secret-token", "secret-token"));
        assert!(!super::token_matches("secret-toke", "secret-token"));
        assert!(!super::token_matches("", "secret-token"));
        assert!(!super::token_matches("secret-token ", "secret-token"));
    }
}
