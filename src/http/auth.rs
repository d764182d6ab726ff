//! Bearer-token auth for `/api/*`. The webhook route is signature-only.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::error::ApiError;

/// The tokens `/api/*` accepts: the API token for the application routes,
/// the admin token (if configured) for `/api/admin/*`, which replays dead
/// letters, retries emails, changes credit packages and mints credits.
/// Neither opens the other's routes.
#[derive(Clone)]
pub struct Tokens {
    pub api: Arc<SecretString>,
    pub admin: Option<Arc<SecretString>>,
}

/// Rejects with 401 unless `Authorization: Bearer <token>` carries the
/// token of the route's kind; an admin route without a configured admin
/// token is 403.
pub fn bearer(tokens: Tokens) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::full()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |path: warp::path::FullPath, header: Option<String>| {
            let tokens = tokens.clone();
            async move {
                let admin_route =
                    path.as_str() == "/api/admin" || path.as_str().starts_with("/api/admin/");
                let expected = if admin_route {
                    match &tokens.admin {
                        Some(token) => token.clone(),
                        None => {
                            return Err(warp::reject::custom(ApiError::new(
                                StatusCode::FORBIDDEN,
                                "admin_disabled",
                                "the admin API is off: set ADMIN_TOKEN in serve's environment",
                            )))
                        }
                    }
                } else {
                    tokens.api.clone()
                };
                let presented = header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim);
                match presented {
                    Some(p) if token_matches(p, expected.expose_secret()) => Ok(()),
                    Some(p) if admin_route && token_matches(p, tokens.api.expose_secret()) => {
                        Err(warp::reject::custom(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            "the API token cannot use the admin API; send the ADMIN_TOKEN",
                        )))
                    }
                    // The admin token on an application route: known, not
                    // allowed here; the operators' routes are under admin.
                    Some(p)
                        if !admin_route
                            && tokens
                                .admin
                                .as_ref()
                                .is_some_and(|a| token_matches(p, a.expose_secret())) =>
                    {
                        Err(warp::reject::custom(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            "the admin token opens only /api/admin/* (operators' routes, credit packages and adjustments among them); send the API token here",
                        )))
                    }
                    Some(_) => Err(warp::reject::custom(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the bearer token is not valid",
                    ))),
                    None => Err(warp::reject::custom(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        if admin_route {
                            "send Authorization: Bearer <admin token>"
                        } else {
                            "send Authorization: Bearer <API token>"
                        },
                    ))),
                }
            }
        })
        .untuple_one()
}

/// Constant-time comparison that also hides the token's length: both sides
/// are reduced to a keyed MAC of equal size before comparing.
pub(crate) fn token_matches(presented: &str, expected: &str) -> bool {
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
