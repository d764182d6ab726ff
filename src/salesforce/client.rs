//! A small Salesforce REST client: the OAuth 2.0 client-credentials flow
//! and the sObject calls the adapter makes, with the API version pinned
//! and errors split into transient and permanent like Stripe's.

use std::sync::Arc;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::SalesforceConfig;

#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// The org's API request limit (24 h rolling) or its concurrency limit.
    #[error("Salesforce's request limit is exceeded (REQUEST_LIMIT_EXCEEDED): {0}")]
    RequestLimit(String),
    #[error("Salesforce answered {status}")]
    Server { status: u16 },
    #[error("could not reach Salesforce: {0}")]
    Network(String),
    /// The token endpoint refused our client: configuration, not the
    /// change's fault, so it is retried until an operator fixes it.
    #[error("Salesforce refused the OAuth client ({status}): {message}")]
    Auth { status: u16, message: String },
    #[error("Salesforce refused the request ({status} {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The fields the refusal names (`["Email"]`), when it names any.
        fields: Vec<String>,
    },
    #[error("Salesforce's answer is unreadable: {0}")]
    Unreadable(String),
    #[error("invalid Salesforce record id {0:?}")]
    InvalidId(String),
}

impl SalesforceError {
    /// Transient errors are retried with backoff and never skip a change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RequestLimit(_) | Self::Server { .. } | Self::Network(_) | Self::Auth { .. } => {
                true
            }
            // Still unauthorised after a fresh token: the connected app's
            // permissions, not the change.
            Self::Api { status, .. } => *status == 401,
            Self::Unreadable(_) | Self::InvalidId(_) => false,
        }
    }
}

/// Salesforce's error code for a record that does not exist (any more).
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const ENTITY_IS_DELETED: &str = "ENTITY_IS_DELETED";
const INVALID_SESSION_ID: &str = "INVALID_SESSION_ID";
const REQUEST_LIMIT_EXCEEDED: &str = "REQUEST_LIMIT_EXCEEDED";

/// What the token endpoint granted.
#[derive(Clone)]
struct Session {
    token: SecretString,
    /// Where API calls go: the token answer's `instance_url`.
    instance_url: String,
    /// The org's id (`00D…`), from the identity URL the answer names.
    org_id: String,
    /// The integration user's id (`005…`), from the same URL: every write
    /// this client makes is stamped `LastModifiedById` with it, which is
    /// how inbound recognises the echo of its own writes.
    user_id: String,
    /// Counts grants, so that of several calls refused with the same
    /// expired token only the first asks for a new one.
    generation: u64,
}

/// Who a client acts as: the org, and its integration user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub org_id: String,
    pub user_id: String,
}

/// One page of a query's answer.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPage {
    pub records: Vec<Map<String, Value>>,
    pub done: bool,
}

/// The result of an upsert by external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub id: String,
    pub created: bool,
}

#[derive(Clone)]
pub struct SalesforceClient {
    http: reqwest::Client,
    config: Arc<SalesforceConfig>,
    session: Arc<Mutex<Option<Session>>>,
}

impl SalesforceClient {
    pub fn new(config: &SalesforceConfig) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(config.timeout).build()?,
            config: Arc::new(config.clone()),
            session: Arc::default(),
        })
    }

    /// The org every call of this client acts on (`id_map.account`).
    pub async fn org_id(&self) -> Result<String, SalesforceError> {
        Ok(self.session(None).await?.org_id)
    }

    /// The org and the user this client acts as.
    pub async fn identity(&self) -> Result<Identity, SalesforceError> {
        let session = self.session(None).await?;
        Ok(Identity {
            org_id: session.org_id,
            user_id: session.user_id,
        })
    }

    /// One page of a SOQL query through `queryAll`, which also returns
    /// deleted records (`IsDeleted = true`) from the recycle bin.
    pub async fn query_all(&self, soql: &str) -> Result<QueryPage, SalesforceError> {
        let path = format!(
            "queryAll?q={}",
            percent_encoding::utf8_percent_encode(soql, percent_encoding::NON_ALPHANUMERIC)
        );
        let answer = self
            .call(Method::GET, &path, None)
            .await?
            .ok_or_else(|| SalesforceError::Unreadable("an empty query answer".into()))?;
        serde_json::from_value(answer).map_err(|e| SalesforceError::Unreadable(e.to_string()))
    }

    /// Creates or updates the `sobject` whose external-id `field` holds
    /// `value`: the same call on every retry, and never a second record.
    pub async fn upsert_by_external_id(
        &self,
        sobject: &str,
        field: &str,
        value: &str,
        fields: &Map<String, Value>,
    ) -> Result<Upserted, SalesforceError> {
        let path = self.upsert_path(sobject, field, value);
        let body = Value::Object(fields.clone());
        upserted(self.call(Method::PATCH, &path, Some(&body)).await?.as_ref())
    }

    /// The path of an upsert by external id, for [`Self::composite`].
    pub fn upsert_path(&self, sobject: &str, field: &str, value: &str) -> String {
        format!(
            "sobjects/{sobject}/{field}/{}",
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
        )
    }

    /// The path of record `id`, for [`Self::composite`].
    pub fn record_path(&self, sobject: &str, id: RecordId<'_>) -> String {
        format!("sobjects/{sobject}/{id}")
    }

    /// Several independent calls in one request (the Composite API, with
    /// `allOrNone: false`, at most 25), made in order; one answer each:
    /// its body, or its error as [`Self::call`] would have returned it.
    /// An error of the request as a whole is returned as such.
    pub async fn composite(
        &self,
        calls: &[SubRequest],
    ) -> Result<Vec<Result<Option<Value>, SalesforceError>>, SalesforceError> {
        assert!(
            calls.len() <= COMPOSITE_LIMIT,
            "at most {COMPOSITE_LIMIT} calls"
        );
        let prefix = format!("/services/data/v{}/", self.config.api_version);
        let requests: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut r = serde_json::json!({
                    "method": c.method.as_str(),
                    "url": format!("{prefix}{}", c.path),
                    "referenceId": format!("r{i}"),
                });
                if let Some(body) = &c.body {
                    r["body"] = body.clone();
                }
                r
            })
            .collect();
        let body = serde_json::json!({"allOrNone": false, "compositeRequest": requests});
        let answer = self
            .call(Method::POST, "composite", Some(&body))
            .await?
            .ok_or_else(|| SalesforceError::Unreadable("an empty composite answer".into()))?;
        let responses = answer
            .get("compositeResponse")
            .and_then(Value::as_array)
            .filter(|r| r.len() == calls.len())
            .ok_or_else(|| {
                SalesforceError::Unreadable("a composite answer without one response a call".into())
            })?;
        Ok(responses
            .iter()
            .map(|r| {
                let status = r.get("httpStatusCode").and_then(Value::as_u64).unwrap_or(0) as u16;
                let body = r.get("body").filter(|b| !b.is_null()).cloned();
                if (200..300).contains(&status) {
                    Ok(body)
                } else {
                    Err(api_error(
                        status,
                        &body.map(|b| b.to_string()).unwrap_or_default(),
                    ))
                }
            })
            .collect())
    }

    /// Sets `fields` on record `id`.
    pub async fn update(
        &self,
        sobject: &str,
        id: RecordId<'_>,
        fields: &Map<String, Value>,
    ) -> Result<(), SalesforceError> {
        let path = self.record_path(sobject, id);
        self.call(Method::PATCH, &path, Some(&Value::Object(fields.clone())))
            .await
            .map(drop)
    }

    /// Deletes record `id`; true if this call deleted it, false if it was
    /// gone already (a retry after a lost answer, or deleted in Salesforce).
    pub async fn delete(&self, sobject: &str, id: RecordId<'_>) -> Result<bool, SalesforceError> {
        let path = self.record_path(sobject, id);
        deleted(self.call(Method::DELETE, &path, None).await)
    }

    /// One REST call under `/services/data/v{version}/`, with a fresh
    /// token once if Salesforce says the session expired.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, SalesforceError> {
        let mut session = self.session(None).await?;
        let mut refreshed = false;
        loop {
            let url = format!(
                "{}/services/data/v{}/{path}",
                session.instance_url, self.config.api_version
            );
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(session.token.expose_secret())
                .header("Accept", "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, text) = exchange(request).await?;
            if (200..300).contains(&status) {
                if text.trim().is_empty() {
                    return Ok(None);
                }
                return serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| SalesforceError::Unreadable(e.to_string()));
            }
            let error = api_error(status, &text);
            match &error {
                SalesforceError::Api { code, .. } if code == INVALID_SESSION_ID && !refreshed => {
                    tracing::info!("Salesforce session expired; asking for a new token");
                    session = self.session(Some(session.generation)).await?;
                    refreshed = true;
                }
                _ => return Err(error),
            }
        }
    }

    /// The current session, or a new one when there is none or when the
    /// one a call was refused with (`expired`) is still the current one.
    async fn session(&self, expired: Option<u64>) -> Result<Session, SalesforceError> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref() {
            if expired != Some(session.generation) {
                return Ok(session.clone());
            }
        }
        let generation = current.as_ref().map_or(0, |s| s.generation + 1);
        let fresh = self.grant(generation).await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// OAuth 2.0 client credentials at the configured My Domain.
    async fn grant(&self, generation: u64) -> Result<Session, SalesforceError> {
        let url = format!("{}/services/oauth2/token", self.config.instance_url);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose_secret()),
        ];
        let (status, text) = exchange(self.http.post(url).form(&form)).await?;
        if status >= 500 {
            return Err(SalesforceError::Server { status });
        }
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let message = answer
                .get("error_description")
                .or_else(|| answer.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_owned();
            return Err(SalesforceError::Auth { status, message });
        }
        let field = |name: &str| answer.get(name).and_then(Value::as_str);
        let token = field("access_token")
            .ok_or_else(|| SalesforceError::Unreadable("a token answer without a token".into()))?;
        let (org_id, user_id) = field("id").and_then(ids_of_identity_url).ok_or_else(|| {
            SalesforceError::Unreadable("a token answer without the org's identity URL".into())
        })?;
        let instance_url = field("instance_url")
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .unwrap_or(&self.config.instance_url)
            .trim_end_matches('/')
            .to_owned();
        Ok(Session {
            token: SecretString::from(token.to_owned()),
            instance_url,
            org_id,
            user_id,
            generation,
        })
    }
}

/// At most this many calls go in one Composite request.
pub const COMPOSITE_LIMIT: usize = 25;

/// One call of a Composite request: a path under `/services/data/vXX.X/`.
#[derive(Debug, Clone)]
pub struct SubRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

/// What an upsert answered: the record's id, and whether it was made.
pub fn upserted(answer: Option<&Value>) -> Result<Upserted, SalesforceError> {
    let id = answer
        .and_then(|a| a.get("id"))
        .and_then(Value::as_str)
        .filter(|id| is_record_id(id))
        .ok_or_else(|| SalesforceError::Unreadable("an upsert answer without an id".into()))?;
    Ok(Upserted {
        id: id.to_owned(),
        created: answer
            .and_then(|a| a.get("created"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Whether a record not being there any more is what an error says.
pub fn is_gone(e: &SalesforceError) -> bool {
    matches!(e, SalesforceError::Api { code, .. } if code == NOT_FOUND || code == ENTITY_IS_DELETED)
}

/// A delete's answer: true if it deleted the record, false if the record
/// was gone already.
pub fn deleted<T>(answer: Result<T, SalesforceError>) -> Result<bool, SalesforceError> {
    match answer {
        Ok(_) => Ok(true),
        Err(e) if is_gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `request` and reads its status and body; failing to do either is
/// a network error (the URL, which may carry ids, left out).
async fn exchange(request: reqwest::RequestBuilder) -> Result<(u16, String), SalesforceError> {
    let network = |e: reqwest::Error| SalesforceError::Network(e.without_url().to_string());
    let response = request.send().await.map_err(network)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(network)?;
    Ok((status, text))
}

/// A REST error answer (`[{"message", "errorCode", "fields"}]`) as an error.
fn api_error(status: u16, body: &str) -> SalesforceError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let first = parsed.as_array().and_then(|a| a.first()).unwrap_or(&parsed);
    let code = first
        .get("errorCode")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message = first
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_owned();
    if code == REQUEST_LIMIT_EXCEEDED {
        return SalesforceError::RequestLimit(message);
    }
    if status >= 500 {
        return SalesforceError::Server { status };
    }
    let fields = first
        .get("fields")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    SalesforceError::Api {
        status,
        code,
        message,
        fields,
    }
}

/// `https://login.salesforce.com/id/00D…/005…` → (`00D…`, `005…`).
fn ids_of_identity_url(url: &str) -> Option<(String, String)> {
    let mut parts = url.rsplit('/');
    let user = parts.next()?;
    let org = parts.next()?;
    let is = |raw, prefix| RecordId::parse(raw).is_some_and(|id| id.prefix() == prefix);
    (is(org, "00D") && is(user, "005")).then(|| (org.to_owned(), user.to_owned()))
}

/// Salesforce record ids: 15 or 18 letters and digits.
pub fn is_record_id(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A Salesforce record id, checked once where it comes in, so it goes
/// into a URL path or a SOQL literal as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordId<'a>(&'a str);

impl<'a> RecordId<'a> {
    pub fn parse(raw: &'a str) -> Option<Self> {
        is_record_id(raw).then_some(Self(raw))
    }

    /// [`Self::parse`], or the error a call with it would answer.
    pub fn checked(raw: &'a str) -> Result<Self, SalesforceError> {
        Self::parse(raw).ok_or_else(|| SalesforceError::InvalidId(raw.chars().take(40).collect()))
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }

    /// The key prefix, which names the object: `003` a Contact, `005` a
    /// User, `00D` an org.
    pub fn prefix(self) -> &'a str {
        &self.0[..3]
    }
}

impl std::fmt::Display for RecordId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_follow_salesforces_codes() {
        let limit = api_error(
            403,
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert!(matches!(limit, SalesforceError::RequestLimit(_)) && limit.is_transient());
        let field = api_error(
            400,
            r#"[{"message":"Email: invalid email address: nope","errorCode":"INVALID_EMAIL_ADDRESS","fields":["Email"]}]"#,
        );
        assert!(!field.is_transient());
        assert!(
            matches!(&field, SalesforceError::Api { code, fields, message, .. }
                if code == "INVALID_EMAIL_ADDRESS" && fields == &["Email"] && message.contains("nope")),
            "{field}"
        );
        assert!(api_error(503, "<html>down</html>").is_transient());
        assert!(!api_error(404, r#"[{"message":"gone","errorCode":"NOT_FOUND"}]"#).is_transient());
    }

    #[test]
    fn the_org_and_user_come_from_the_identity_url() {
        assert_eq!(
            ids_of_identity_url(
                "https://login.salesforce.com/id/00D5g000004XyZ1EAK/0055g00000AbCdEAAZ"
            ),
            Some(("00D5g000004XyZ1EAK".into(), "0055g00000AbCdEAAZ".into()))
        );
        for bad in [
            "",
            "https://x/id/005abc",
            "https://x/id/../0055g00000AbCdEAAZ",
            "https://x/id/00D5g000004XyZ1EAK/..",
        ] {
            assert_eq!(ids_of_identity_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn record_ids_are_checked_before_they_become_a_path() {
        assert!(is_record_id("0035g00000AbCdE"));
        assert!(is_record_id("0035g00000AbCdEAAZ"));
        for bad in ["", "003", "0035g00000AbCdE/../x", "0035g00000AbCdEAAZ1"] {
            assert!(!is_record_id(bad), "{bad}");
        }
    }
}
