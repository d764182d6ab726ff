//! Stripe event types, parsed at the edge into values inner code can trust.

use serde::Deserialize;

use super::account::AccountId;

/// How the ids of the snapshot events the pull commands build begin.
pub const SNAPSHOT_ID_PREFIX: &str = "evt_snap_";

/// Objects Stripe gives no `id`, one per customer: their customer is their
/// key, so one customer's stay in one partition, in order.
pub const KEYED_BY_CUSTOMER: &[&str] = &["entitlements.active_entitlement_summary"];

/// What a connected account's events about our Connect application begin
/// with (`account.application.authorized`, `….deauthorized`). They carry
/// the application, not the account, yet are about the account: they are
/// keyed by it, so they share its `account.updated` events' partition.
pub const ACCOUNT_APPLICATION_PREFIX: &str = "account.application.";

/// The connected account an event of `kind` from `account` (of
/// `platform`) is about, when it is one of [`ACCOUNT_APPLICATION_PREFIX`]'s.
/// The platform's own account authorizing someone else's application is
/// not about a connected account of ours.
pub fn application_account<'a>(kind: &str, account: &'a str, platform: &str) -> Option<&'a str> {
    (kind.starts_with(ACCOUNT_APPLICATION_PREFIX) && account != platform).then_some(account)
}

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
    #[error("invalid account: {0}")]
    InvalidAccount(#[from] super::account::InvalidAccount),
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
    /// Whose object it is: a platform's own (`platform`, or a further
    /// platform's `acct_…`), or a connected account's.
    pub account: AccountId,
    /// The platform whose endpoint received it, whose key reads its
    /// account: [`AccountId::PLATFORM`] but for a further platform of
    /// `STRIPE_PLATFORMS` (the `stripe-platform` header).
    pub platform: AccountId,
    pub livemode: bool,
    pub object: serde_json::Value,
    /// `request.idempotency_key` of the API call that caused the event, if
    /// any; how our own writes are recognised when they echo back.
    pub idempotency_key: Option<String>,
    /// The API version Stripe rendered `object` in; none on the snapshots
    /// the pull commands build.
    pub api_version: Option<String>,
}

#[derive(Deserialize)]
struct RawEvent<O> {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    livemode: bool,
    data: RawData<O>,
    #[serde(default)]
    request: Option<RawRequest>,
    #[serde(default)]
    api_version: Option<String>,
}

#[derive(Deserialize)]
struct RawData<O> {
    object: O,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// What is kept of `data.object`: the whole tree, or only its key.
trait EventObject {
    fn is_object(&self) -> bool;
    /// The object's `id`; for one of [`KEYED_BY_CUSTOMER`], its customer.
    fn key(&self) -> Option<&str>;
}

impl EventObject for serde_json::Value {
    fn is_object(&self) -> bool {
        self.is_object()
    }

    fn key(&self) -> Option<&str> {
        let text = |field: &str| self.get(field).and_then(|v| v.as_str());
        text("id").or_else(|| {
            text("object")
                .filter(|o| KEYED_BY_CUSTOMER.contains(o))
                .and_then(|_| text("customer"))
        })
    }
}

impl<O: EventObject> RawEvent<O> {
    /// The checks every event passes, whichever part of its object is kept.
    fn checked_id(&self) -> Result<StripeEventId, EventError> {
        if !self.data.object.is_object() {
            return Err(EventError::NotAnEvent(
                "data.object is not an object".into(),
            ));
        }
        if self.kind.is_empty() {
            return Err(EventError::NotAnEvent("type is empty".into()));
        }
        StripeEventId::parse(&self.id)
    }

    /// The event's `account`; a platform's own events carry none.
    fn account(&mut self, platform: &AccountId) -> String {
        self.account
            .take()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| platform.as_str().to_owned())
    }
}

impl StripeEvent {
    /// An event of the default platform's endpoint.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        Self::parse_for(body, &AccountId::PLATFORM)
    }

    /// An event that came to `platform`'s endpoint.
    pub fn parse_for(body: &[u8], platform: &AccountId) -> Result<Self, EventError> {
        let mut raw: RawEvent<serde_json::Value> =
            serde_json::from_slice(body).map_err(|e| EventError::NotAnEvent(e.to_string()))?;
        let id = raw.checked_id()?;
        Ok(Self {
            account: AccountId::parse(&raw.account(platform))?,
            platform: platform.clone(),
            id,
            kind: raw.kind,
            created: raw.created,
            livemode: raw.livemode,
            object: raw.data.object,
            idempotency_key: raw.request.and_then(|r| r.idempotency_key),
            api_version: raw.api_version,
        })
    }

    /// The id of the object the event is about: its `id`, or the customer
    /// of an object keyed by it ([`KEYED_BY_CUSTOMER`]). Some objects (a
    /// `balance`) have neither; the event id stands in so the message
    /// still has a key.
    pub fn object_id(&self) -> &str {
        self.object_key().unwrap_or(self.id.as_str())
    }

    /// [`Self::object_id`] when the object has a key of its own; for an
    /// event about a connected account's authorization of our application,
    /// the account ([`application_account`]).
    pub fn object_key(&self) -> Option<&str> {
        application_account(&self.kind, self.account.as_str(), self.platform.as_str())
            .or_else(|| self.object.key())
    }

    /// Whether we built this event from a read (backfill, diff, refresh),
    /// rather than Stripe sending it.
    pub fn is_snapshot(&self) -> bool {
        self.id.as_str().starts_with(SNAPSHOT_ID_PREFIX)
    }

    /// The object type, e.g. `customer`, from `data.object.object`.
    pub fn object_type(&self) -> Option<&str> {
        self.object.get("object").and_then(|v| v.as_str())
    }

    /// Whether Stripe reports this event for a write of our own (its
    /// request carried one of our Idempotency-Keys): an echo, which must
    /// never be sent back out.
    pub fn is_own_echo(&self) -> bool {
        self.idempotency_key
            .as_deref()
            .is_some_and(crate::outbox::is_own_idempotency_key)
    }
}

/// An event as ingest sees it: the same checks as [`StripeEvent::parse`],
/// but of the object only its id is kept, so the webhook's hot path never
/// builds the object's tree (the raw body is what goes on to Kafka).
///
/// What it skips is checked to be JSON, not to fit the full parser's
/// limits (nesting deeper than 128, numbers beyond an `f64`): such an
/// event, valid JSON that Stripe has never sent, is accepted here and
/// dead-lettered by the worker with the parser's error, rather than
/// refused to Stripe, whose retries would end in losing it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    pub id: StripeEventId,
    pub kind: String,
    pub account: String,
    /// As [`StripeEvent::platform`].
    pub platform: AccountId,
    /// As [`StripeEvent::object_id`]: the message key.
    pub object_id: String,
}

impl EventEnvelope {
    /// An event of the default platform's endpoint.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        Self::parse_for(body, &AccountId::PLATFORM)
    }

    /// An event that came to `platform`'s endpoint.
    pub fn parse_for(body: &[u8], platform: &AccountId) -> Result<Self, EventError> {
        // serde_json scans what it skips without checking its UTF-8, so the
        // whole body is checked first: ingest must refuse what the workers'
        // full parse would.
        let text = std::str::from_utf8(body).map_err(|e| EventError::NotAnEvent(e.to_string()))?;
        let mut raw: RawEvent<ObjectKey> =
            serde_json::from_str(text).map_err(|e| EventError::NotAnEvent(e.to_string()))?;
        let id = raw.checked_id()?;
        let account = raw.account(platform);
        let object_id = match application_account(&raw.kind, &account, platform.as_str()) {
            Some(connected) => connected.to_owned(),
            None => raw
                .data
                .object
                .into_key()
                .unwrap_or_else(|| id.as_str().to_owned()),
        };
        Ok(Self {
            account,
            platform: platform.clone(),
            object_id,
            id,
            kind: raw.kind,
        })
    }
}

/// `data.object` reduced to the fields its key is read from: `id`, and
/// `object` and `customer` for an object keyed by its customer (each when a
/// string; the last one wins, as in a parsed object). Anything but a JSON
/// object is refused.
#[derive(Default)]
struct ObjectKey {
    id: Option<String>,
    object: Option<String>,
    customer: Option<String>,
}

impl ObjectKey {
    fn into_key(self) -> Option<String> {
        self.key().map(str::to_owned)
    }
}

impl EventObject for ObjectKey {
    fn is_object(&self) -> bool {
        true
    }

    fn key(&self) -> Option<&str> {
        let keyed_by_customer = self
            .object
            .as_deref()
            .is_some_and(|o| KEYED_BY_CUSTOMER.contains(&o));
        self.id
            .as_deref()
            .or_else(|| self.customer.as_deref().filter(|_| keyed_by_customer))
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ObjectKey;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("data.object to be an object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ObjectKey, A::Error> {
                let mut key = ObjectKey::default();
                while let Some(field) = map.next_key::<KeyField>()? {
                    let slot = match field {
                        KeyField::Id => &mut key.id,
                        KeyField::Object => &mut key.object,
                        KeyField::Customer => &mut key.customer,
                        KeyField::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map
                        .next_value::<serde_json::Value>()?
                        .as_str()
                        .map(str::to_owned);
                }
                Ok(key)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A key of `data.object`, told apart without allocating.
enum KeyField {
    Id,
    Object,
    Customer,
    Other,
}

impl<'de> Deserialize<'de> for KeyField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KeyField;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<KeyField, E> {
                Ok(match key {
                    "id" => KeyField::Id,
                    "object" => KeyField::Object,
                    "customer" => KeyField::Customer,
                    _ => KeyField::Other,
                })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_is_an_event_of_our_own_idempotency_key() {
        let event = |key: serde_json::Value| {
            StripeEvent::parse(
                serde_json::json!({
                    "id": "evt_1", "type": "customer.updated", "created": 1,
                    "data": {"object": {"id": "cus_1", "object": "customer"}},
                    "request": {"id": "req_1", "idempotency_key": key},
                })
                .to_string()
                .as_bytes(),
            )
            .unwrap()
        };
        let ours = crate::outbox::idempotency_key(7, None);
        assert!(event(serde_json::json!(ours)).is_own_echo());
        assert!(!event(serde_json::json!("dashboard-edit")).is_own_echo());
        assert!(!event(serde_json::Value::Null).is_own_echo());
    }

    #[test]
    fn parses_a_connect_event_and_its_key() {
        let body = br#"{"id":"evt_1","type":"customer.updated","created":10,"account":"acct_9",
            "data":{"object":{"id":"cus_1","object":"customer"}},"request":{"id":"req_1","idempotency_key":"ik"}}"#;
        let e = StripeEvent::parse(body).unwrap();
        assert_eq!(e.object_id(), "cus_1");
        assert_eq!(e.account.as_str(), "acct_9");
        assert_eq!(e.idempotency_key.as_deref(), Some("ik"));
        assert_eq!(e.object_type(), Some("customer"));
    }

    /// A customer's active entitlement summary has no id: it is keyed by
    /// its customer, in both parses; another object without an id is keyed
    /// by the event, even with a customer.
    #[test]
    fn an_entitlement_summary_is_keyed_by_its_customer() {
        let summary =
            br#"{"id":"evt_s","type":"entitlements.active_entitlement_summary.updated","created":1,
            "data":{"object":{"object":"entitlements.active_entitlement_summary","customer":"cus_9",
            "entitlements":{"object":"list","data":[],"has_more":false}}}}"#;
        assert_eq!(StripeEvent::parse(summary).unwrap().object_id(), "cus_9");
        assert_eq!(EventEnvelope::parse(summary).unwrap().object_id, "cus_9");
        let other = br#"{"id":"evt_o","type":"x.updated","created":1,
            "data":{"object":{"object":"cash_balance","customer":"cus_9"}}}"#;
        assert_eq!(StripeEvent::parse(other).unwrap().object_id(), "evt_o");
        assert_eq!(EventEnvelope::parse(other).unwrap().object_id, "evt_o");
    }

    /// A connected account's authorization of our application carries the
    /// application: both parses key it by the account; the platform's own
    /// authorization of another application keeps the application's id.
    #[test]
    fn an_application_event_of_a_connected_account_is_keyed_by_the_account() {
        let of = |account: &str| {
            format!(
                r#"{{"id":"evt_a","type":"account.application.deauthorized","created":1,{account}
                "data":{{"object":{{"id":"ca_1","object":"application","name":"Ours"}}}}}}"#
            )
        };
        let connected = of(r#""account":"acct_9","#);
        assert_eq!(
            StripeEvent::parse(connected.as_bytes())
                .unwrap()
                .object_id(),
            "acct_9"
        );
        assert_eq!(
            EventEnvelope::parse(connected.as_bytes())
                .unwrap()
                .object_id,
            "acct_9"
        );
        let platform = of("");
        assert_eq!(
            StripeEvent::parse(platform.as_bytes()).unwrap().object_id(),
            "ca_1"
        );
        assert_eq!(
            EventEnvelope::parse(platform.as_bytes()).unwrap().object_id,
            "ca_1"
        );
    }

    #[test]
    fn platform_account_and_object_without_id() {
        let body = br#"{"id":"evt_2","type":"balance.available","created":10,"data":{"object":{"object":"balance"}}}"#;
        let e = StripeEvent::parse(body).unwrap();
        assert_eq!(e.account, AccountId::PLATFORM);
        assert_eq!(e.object_id(), "evt_2");
    }

    /// Ingest only routes an event by its account; the worker's full parse
    /// refuses a malformed one, so it is dead-lettered (kept) rather than
    /// refused to Stripe, whose retries would end in losing it.
    #[test]
    fn a_malformed_account_is_routed_by_ingest_and_refused_by_the_full_parse() {
        let body =
            br#"{"id":"evt_7","type":"customer.updated","created":10,"account":"acct_1\r\nX: y",
            "data":{"object":{"id":"cus_1","object":"customer"}}}"#;
        assert_eq!(
            EventEnvelope::parse(body).unwrap().account,
            "acct_1\r\nX: y"
        );
        assert!(matches!(
            StripeEvent::parse(body),
            Err(EventError::InvalidAccount(_))
        ));
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
            assert!(
                EventEnvelope::parse(body).is_err(),
                "envelope: {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// What ingest keys and labels a message with, from the envelope-only
    /// parse, next to the same fields from the full parse the workers use.
    fn both(body: &[u8]) -> (EventEnvelope, EventEnvelope) {
        let full = StripeEvent::parse(body).unwrap();
        let from_full = EventEnvelope {
            object_id: full.object_id().to_owned(),
            id: full.id,
            kind: full.kind,
            account: full.account.to_string(),
            platform: full.platform,
        };
        (EventEnvelope::parse(body).unwrap(), from_full)
    }

    #[test]
    fn the_envelope_agrees_with_the_full_parse_on_every_stripe_object() {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/stripe/fixtures3.json"))
                .unwrap();
        let resources = fixtures["resources"].as_object().unwrap();
        assert!(resources.len() > 100, "the fixtures hold every resource");
        for (name, object) in resources {
            for account in [None, Some("acct_1")] {
                let event = serde_json::json!({
                    "id": "evt_fixture", "type": format!("{name}.updated"), "created": 1,
                    "account": account, "data": {"object": object},
                });
                let body = serde_json::to_vec(&event).unwrap();
                let (envelope, full) = both(&body);
                assert_eq!(envelope, full, "{name}");
            }
        }
    }

    #[test]
    fn the_envelope_keys_odd_objects_as_the_full_parse_does() {
        for body in [
            // a non-string id: the event's id is the key
            &br#"{"id":"evt_3","type":"x.y","created":1,"data":{"object":{"id":7}}}"#[..],
            // the id twice: the last one, as in a parsed object
            br#"{"id":"evt_4","type":"x.y","created":1,"data":{"object":{"id":"a","id":"b"}}}"#,
            // an escaped key that reads "id"
            br#"{"id":"evt_5","type":"x.y","created":1,"data":{"object":{"i\u0064":"c"}}}"#,
            // a nested id is not the object's
            br#"{"id":"evt_6","type":"x.y","created":1,"data":{"object":{"card":{"id":"d"}}}}"#,
        ] {
            let (envelope, full) = both(body);
            assert_eq!(envelope, full, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_full_parsers_limits_are_left_to_the_worker() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for value in [deep.as_str(), "1e400"] {
            let body = format!(
                r#"{{"id":"evt_8","type":"x.y","created":1,"data":{{"object":{{"id":"o","v":{value}}}}}}}"#
            );
            assert!(StripeEvent::parse(body.as_bytes()).is_err(), "{value:.20}");
            assert_eq!(
                EventEnvelope::parse(body.as_bytes()).unwrap().object_id,
                "o"
            );
        }
    }

    #[test]
    fn the_envelope_refuses_invalid_utf8_even_where_it_skips() {
        let body = b"{\"id\":\"evt_7\",\"type\":\"x.y\",\"created\":1,\"data\":{\"object\":{\"name\":\"\xff\"}}}";
        assert!(StripeEvent::parse(body).is_err());
        assert!(EventEnvelope::parse(body).is_err());
    }
}
