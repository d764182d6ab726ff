//! Stripe event types, parsed at the edge into values inner code can trust.

use serde::Deserialize;

/// Account label for events of the platform's own account. Stripe only sets
/// `account` on events of connected accounts; every key we store carries an
/// account so Connect fits in later without a migration.
pub const PLATFORM_ACCOUNT: &str = "platform";

/// A Stripe event id such as `evt_1Pgc76B7WZ01zgkWwyRHS12y`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StripeEventId(String);

impl StripeEventId {
    /// Accepts Stripe's `evt_…` ids and the synthetic ids this engine mints
    /// for snapshots, both bounded so they fit the ledger and Kafka headers.
    pub fn parse(raw: &str) -> Result<Self, EventError> {
        let ok = !raw.is_empty()
            && raw.len() <= 255
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(EventError::InvalidEventId(raw.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StripeEventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the payload is not a Stripe event: {0}")]
    NotAnEvent(String),
    #[error("invalid event id {0:?}")]
    InvalidEventId(String),
}

/// A verified Stripe event: the fields routing and ordering need, plus the
/// object snapshot it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    pub id: StripeEventId,
    pub kind: String,
    /// Whole seconds, as Stripe sends it; ties are common and handled by the
    /// ordering rules in `apply`.
    pub created: i64,
    pub account: String,
    pub livemode: bool,
    pub object: serde_json::Value,
    /// `request.idempotency_key` of the API call that caused the event, if
    /// any; how our own writes are recognised when they echo back.
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    livemode: bool,
    data: RawData,
    #[serde(default)]
    request: Option<RawRequest>,
}

#[derive(Deserialize)]
struct RawData {
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    idempotency_key: Option<String>,
}

impl StripeEvent {
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let raw: RawEvent =
            serde_json::from_slice(body).map_err(|e| EventError::NotAnEvent(e.to_string()))?;
        if !raw.data.object.is_object() {
            return Err(EventError::NotAnEvent(
                "data.object is not an object".into(),
            ));
        }
        if raw.kind.is_empty() {
            return Err(EventError::NotAnEvent("type is empty".into()));
        }
        Ok(Self {
            id: StripeEventId::parse(&raw.id)?,
            kind: raw.kind,
            created: raw.created,
            account: raw
                .account
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| PLATFORM_ACCOUNT.to_owned()),
            livemode: raw.livemode,
            object: raw.data.object,
            idempotency_key: raw.request.and_then(|r| r.idempotency_key),
        })
    }

    /// The id of the object the event is about. Some objects (a `balance`)
    /// have none; the event id stands in so the message still has a key.
    pub fn object_id(&self) -> &str {
        self.object
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or(self.id.as_str())
    }

    /// The object type, e.g. `customer`, from `data.object.object`.
    pub fn object_type(&self) -> Option<&str> {
        self.object.get("object").and_then(|v| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_connect_event_and_its_key() {
        let body = br#"{"id":"evt_1","type":"customer.updated","created":10,"account":"acct_9",
            "data":{"object":{"id":"cus_1","object":"customer"}},"request":{"id":"req_1","idempotency_key":"ik"}}"#;
        let e = StripeEvent::parse(body).unwrap();
        assert_eq!(e.object_id(), "cus_1");
        assert_eq!(e.account, "acct_9");
        assert_eq!(e.idempotency_key.as_deref(), Some("ik"));
        assert_eq!(e.object_type(), Some("customer"));
    }

    #[test]
    fn platform_account_and_object_without_id() {
        let body = br#"{"id":"evt_2","type":"balance.available","created":10,"data":{"object":{"object":"balance"}}}"#;
        let e = StripeEvent::parse(body).unwrap();
        assert_eq!(e.account, PLATFORM_ACCOUNT);
        assert_eq!(e.object_id(), "evt_2");
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        for body in [
            &b"not json"[..],
            br#"{"id":"evt_1"}"#,
            br#"{"id":"evt 1","type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x","created":1,"data":{"object":[]}}"#,
            br#"{"id":"evt_1","type":"","created":1,"data":{"object":{}}}"#,
        ] {
            assert!(
                StripeEvent::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
