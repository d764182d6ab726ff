//! A small Stripe REST client: just the calls the engine makes, with the
//! API version pinned and errors split into transient and permanent.

use std::time::Duration;

use std::sync::Arc;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};

use super::account::AccountId;
use super::object_id::ObjectId;
use super::platforms::{KeyRing, Platform};
use super::rate::RateLimiter;

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// The API version every request pins, so object shapes do not change under
/// us when the account's default version is upgraded.
pub const DEFAULT_API_VERSION: &str = "2024-06-20";

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe rate limit hit (429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("Stripe answered {status}")]
    Server { status: u16 },
    #[error("could not reach Stripe: {0}")]
    Network(String),
    #[error("Stripe refused the request ({status}): {message}")]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
        /// A card issuer's reason, on card errors (`insufficient_funds`).
        decline_code: Option<String>,
        /// The payment intent a card error is about (Stripe names it when
        /// confirming one failed, e.g. `authentication_required`).
        payment_intent: Option<String>,
    },
    /// Stripe's `idempotency_error`: the key is in use by a request still
    /// running (409), or was first used with other parameters (400). The
    /// first attempt may have done the work: never a failure of it.
    #[error("Stripe refused the idempotency key ({status}): {message}")]
    Idempotency { status: u16, message: String },
    #[error("invalid Stripe object id {0:?}")]
    InvalidId(String),
    /// A 2xx whose body is not JSON: not a network hiccup (a retry gets the
    /// same answer), so it fails the work instead of retrying it forever.
    #[error("Stripe's answer is not JSON: {0}")]
    Unreadable(String),
}

impl StripeError {
    /// Transient errors are retried with backoff and never skip a message.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Network(_)
                | Self::Idempotency { status: 409, .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// What Stripe holds for an object right now.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteObject {
    Live(serde_json::Value),
    /// Stripe answers a deleted customer with `{"deleted": true}`, and any
    /// object it does not have with 404 `resource_missing`. Both mean the
    /// object is gone for good. Any other 404 (a wrong base URL, a path
    /// Stripe does not know) is an error, never a delete.
    Deleted,
}

/// The error code Stripe gives an object that does not exist.
pub const RESOURCE_MISSING: &str = "resource_missing";

/// Where the platform reads its connected accounts: `GET /v1/accounts/{id}`.
pub const CONNECTED_ACCOUNTS: &str = "accounts";

/// What Stripe's 403 says of an account the platform's key cannot see.
pub(crate) const NO_ACCESS_TO_ACCOUNT: &str = "does not have access to account";

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    /// The key each account's calls go with; shared by the clones, so an
    /// account noted under a platform is noted for all of them.
    keys: Arc<KeyRing>,
    api_version: String,
    limiter: Option<Arc<RateLimiter>>,
}

/// One page of a list call.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub data: Vec<serde_json::Value>,
    pub has_more: bool,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .field("api_key", &"[redacted]")
            .field("platforms", &self.keys.others())
            .field("api_version", &self.api_version)
            .field(
                "rate_per_second",
                &self.limiter.as_ref().map(|l| l.per_second()),
            )
            .finish()
    }
}

impl StripeClient {
    /// `rate_per_second`: the client's request budget (`None`: unlimited).
    pub fn new(
        base: &str,
        api_key: SecretString,
        api_version: &str,
        timeout: Duration,
        rate_per_second: Option<f64>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("stripe-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            keys: Arc::new(KeyRing::new(api_key)),
            api_version: api_version.to_owned(),
            limiter: rate_per_second.map(|r| Arc::new(RateLimiter::new(r))),
        })
    }

    /// Serves the further platforms of `STRIPE_PLATFORMS` too, each
    /// account with its platform's key ([`KeyRing`]). One rate limit still
    /// paces them all.
    pub fn with_platforms(self, platforms: &[Platform]) -> Self {
        Self {
            keys: Arc::new(self.keys.with_more(platforms)),
            ..self
        }
    }

    /// The platform accounts and the key for each account
    /// ([`KeyRing`]), shared with every clone of this client.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Whether the request budget is used up (callers wait for their turn):
    /// more requests at once would only queue. Never, without a limit.
    pub async fn saturated(&self) -> bool {
        match &self.limiter {
            Some(limiter) => limiter.saturated().await,
            None => false,
        }
    }

    /// `GET /v1/{collection}?limit=…&starting_after=…&…`. Stripe returns
    /// newest first (fakes may not); callers must not depend on the order.
    pub async fn list(
        &self,
        account: &AccountId,
        collection: &str,
        params: &[(String, String)],
    ) -> Result<ListPage, StripeError> {
        let query =
            serde_urlencoded::to_string(params).map_err(|e| StripeError::Network(e.to_string()))?;
        let page = match self
            .call(
                Method::GET,
                account,
                &format!("/v1/{collection}?{query}"),
                &[],
                None,
            )
            .await?
        {
            RemoteObject::Live(v) => v,
            RemoteObject::Deleted => {
                return Err(StripeError::Api {
                    status: 404,
                    code: Some(RESOURCE_MISSING.into()),
                    message: format!("/v1/{collection} does not exist"),
                    decline_code: None,
                    payment_intent: None,
                })
            }
        };
        Ok(ListPage {
            data: page
                .get("data")
                .and_then(|d| d.as_array())
                .cloned()
                .unwrap_or_default(),
            has_more: page
                .get("has_more")
                .and_then(|h| h.as_bool())
                .unwrap_or(false),
        })
    }

    /// Every item of a list endpoint (`limit=100`, following
    /// `starting_after` page after page), e.g. an invoice's lines.
    pub async fn list_all(
        &self,
        account: &AccountId,
        collection: &str,
        filters: &[(String, String)],
    ) -> Result<Vec<serde_json::Value>, StripeError> {
        page_through(filters, |params| async move {
            self.list(account, collection, &params).await
        })
        .await
        .map(|(items, _pages)| items)
    }

    /// `GET /v1/{collection}/{id}`, e.g. `("customers", "cus_123")`.
    pub async fn retrieve(
        &self,
        account: &AccountId,
        collection: &str,
        id: ObjectId<'_>,
    ) -> Result<RemoteObject, StripeError> {
        let answer = self
            .call(
                Method::GET,
                account,
                &format!("/v1/{collection}/{id}"),
                &[],
                None,
            )
            .await;
        match answer {
            // Stripe answers a connected account the platform cannot see
            // (deauthorized, or never connected) with 403: the key "does
            // not have access to account … (or that account does not
            // exist)". Gone from the platform's view, as a deleted object
            // is; a newer sign of access brings it back. Any other 403 (a
            // restricted key, a missing permission) says nothing about the
            // account and stays an error. Stripe gives that answer no code
            // of its own, so its message is what tells them apart.
            Err(StripeError::Api {
                status: 403,
                ref message,
                ..
            }) if collection == CONNECTED_ACCOUNTS
                && self.keys.is_platform(account)
                && message.contains(NO_ACCESS_TO_ACCOUNT) =>
            {
                Ok(RemoteObject::Deleted)
            }
            other => other,
        }
    }

    /// `POST /v1/{path}` with form fields, e.g. create or update.
    pub async fn post(
        &self,
        account: &AccountId,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<serde_json::Value, StripeError> {
        check_path(path)?;
        match self
            .call(Method::POST, account, path, form, Some(idempotency_key))
            .await?
        {
            RemoteObject::Live(v) => Ok(v),
            RemoteObject::Deleted => Err(StripeError::Api {
                status: 404,
                code: Some("resource_missing".into()),
                message: format!("{path} does not exist"),
                decline_code: None,
                payment_intent: None,
            }),
        }
    }

    /// `DELETE /v1/{collection}/{id}`; an object already gone is `Deleted` too.
    pub async fn delete(
        &self,
        account: &AccountId,
        collection: &str,
        id: ObjectId<'_>,
        idempotency_key: &str,
    ) -> Result<RemoteObject, StripeError> {
        self.call(
            Method::DELETE,
            account,
            &format!("/v1/{collection}/{id}"),
            &[],
            Some(idempotency_key),
        )
        .await
        .map(|_| RemoteObject::Deleted)
    }

    async fn call(
        &self,
        method: Method,
        account: &AccountId,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<RemoteObject, StripeError> {
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let (key, on_behalf_of) = self.keys.route(account);
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(key.expose_secret())
            .header("Stripe-Version", &self.api_version);
        if let Some(connected) = on_behalf_of {
            req = req.header("Stripe-Account", connected.as_str());
        }
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if method != Method::GET {
            req = req.form(form);
        }
        let endpoint = crate::metrics::endpoint_label(method.as_str(), path);
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                crate::metrics::STRIPE_CALLS
                    .with_label_values(&[&endpoint, "network_error"])
                    .inc();
                return Err(StripeError::Network(e.to_string()));
            }
        };
        let status = resp.status().as_u16();
        crate::metrics::STRIPE_CALLS
            .with_label_values(&[&endpoint, &status.to_string()])
            .inc();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .bytes()
            .await
            .map_err(|e| StripeError::Network(e.to_string()))?;
        match status {
            200..=299 => {
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| StripeError::Unreadable(e.to_string()))?;
                if value.get("deleted").and_then(|d| d.as_bool()) == Some(true) {
                    Ok(RemoteObject::Deleted)
                } else {
                    Ok(RemoteObject::Live(value))
                }
            }
            404 => match api_error(status, &body) {
                StripeError::Api {
                    code: Some(code), ..
                } if code == RESOURCE_MISSING => Ok(RemoteObject::Deleted),
                other => Err(other),
            },
            429 => {
                if let (Some(limiter), Some(wait)) = (&self.limiter, retry_after) {
                    limiter.pause(wait).await;
                }
                Err(StripeError::RateLimited { retry_after })
            }
            500..=599 => Err(StripeError::Server { status }),
            _ => Err(api_error(status, &body)),
        }
    }
}

/// Follows a list from page to page: `fetch` is given each page's
/// parameters (`limit=100`, `filters`, and `starting_after` the last id so
/// far) until a page says there is no more. Returns the items and the
/// number of pages read. The one pager: callers differ only in how a page
/// is fetched (retried or not).
pub async fn page_through<E, F, Fut>(
    filters: &[(String, String)],
    mut fetch: F,
) -> Result<(Vec<serde_json::Value>, u64), E>
where
    F: FnMut(Vec<(String, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<ListPage, E>>,
{
    let mut items = Vec::new();
    let mut pages = 0;
    let mut starting_after: Option<String> = None;
    loop {
        let mut params = vec![("limit".to_owned(), "100".to_owned())];
        params.extend_from_slice(filters);
        if let Some(after) = &starting_after {
            params.push(("starting_after".into(), after.clone()));
        }
        let page = fetch(params).await?;
        pages += 1;
        starting_after = page
            .data
            .last()
            .and_then(|o| o.get("id"))
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        items.extend(page.data);
        if !page.has_more || starting_after.is_none() {
            return Ok((items, pages));
        }
    }
}

/// A POST path is built from ids (`/v1/customers/{id}`): only Stripe's id
/// alphabet and slashes, so no id can reach another endpoint or a query.
fn check_path(path: &str) -> Result<(), StripeError> {
    let plain = path.starts_with("/v1/")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/')
        && !path.contains("//");
    if plain {
        Ok(())
    } else {
        Err(StripeError::InvalidId(path.to_owned()))
    }
}

fn api_error(status: u16, body: &[u8]) -> StripeError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let message = || {
        err.and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("no error message")
            .to_owned()
    };
    if err.and_then(|e| e.get("type")).and_then(|t| t.as_str()) == Some("idempotency_error") {
        return StripeError::Idempotency {
            status,
            message: message(),
        };
    }
    StripeError::Api {
        status,
        code: err
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_owned),
        message: message(),
        decline_code: err
            .and_then(|e| e.get("decline_code"))
            .and_then(|c| c.as_str())
            .map(str::to_owned),
        payment_intent: err
            .and_then(|e| e.get("payment_intent"))
            .and_then(|pi| pi.get("id").or(Some(pi)))
            .and_then(|id| id.as_str())
            .map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_2xx_that_is_not_json_is_not_retried() {
        use warp::Filter;
        let route = warp::any().map(|| "<html>gateway says hello</html>");
        let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
        tokio::spawn(server);
        let client = StripeClient::new(
            &format!("http://{addr}"),
            SecretString::from("sk_test_x"),
            "2024-06-20",
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        let err = client
            .retrieve(
                &AccountId::PLATFORM,
                "customers",
                ObjectId::parse("cus_1").unwrap(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StripeError::Unreadable(_)), "{err:?}");
        assert!(!err.is_transient());
    }

    /// Stripe's idempotency refusals say nothing of the payment: the first
    /// attempt may have done it. They are told apart from refusals of the
    /// request by their `type`, never by their text.
    #[test]
    fn idempotency_refusals_are_their_own_kind() {
        let in_use = br#"{"error":{"type":"idempotency_error","code":"idempotency_key_in_use","message":"another request"}}"#;
        let reused = br#"{"error":{"type":"idempotency_error","message":"other parameters"}}"#;
        let declined =
            br#"{"error":{"type":"card_error","code":"card_declined","message":"declined"}}"#;
        let e = api_error(409, in_use);
        assert!(
            matches!(e, StripeError::Idempotency { status: 409, .. }),
            "{e:?}"
        );
        assert!(e.is_transient(), "the first request is still running");
        let e = api_error(400, reused);
        assert!(
            matches!(e, StripeError::Idempotency { status: 400, .. }),
            "{e:?}"
        );
        assert!(!e.is_transient());
        let e = api_error(402, declined);
        assert!(
            matches!(&e, StripeError::Api { status: 402, code: Some(c), .. } if c == "card_declined"),
            "{e:?}"
        );
    }

    #[test]
    fn post_paths_hold_only_ids() {
        for ok in [
            "/v1/customers",
            "/v1/customers/cus_1",
            "/v1/payment_methods/pm_1/attach",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/v1/customers/cus_1?expand=x",
            "/v1/customers/../charges",
            "/v1/customers/cus 1",
            "/v1//customers",
            "v1/customers",
            "/v1/customers/cus_1#x",
        ] {
            assert!(
                matches!(check_path(bad), Err(StripeError::InvalidId(_))),
                "{bad}"
            );
        }
    }
}
