//! The Kafka envelope of a Stripe event: the key is the object's id, the
//! value the raw event body exactly as Stripe signed it (its id, type and
//! account inside), and the message's timestamp when the engine took it
//! in. Headers carry only what those do not say: where an event came from
//! when that was not a webhook, and the further platform it belongs to.
//! Each header costs a broker a row to write and to read again (nisshi's
//! sqlite storage produced a third as fast with five headers per message as
//! with none), so a webhook's event carries none.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::stripe::{AccountId, EventEnvelope, InvalidAccount};

/// The further platform (`STRIPE_PLATFORMS`) whose endpoint or pull the
/// event came from, whose key reads it; absent for the default platform.
pub const H_PLATFORM: &str = "stripe-platform";
/// Where the event entered the engine, when not by webhook: one of the
/// other `SOURCE_*` values, or the worker that dead-lettered it
/// (`order-notifier`).
pub const H_SOURCE: &str = "source";
pub const SOURCE_WEBHOOK: &str = "webhook";
pub const SOURCE_BACKFILL: &str = "backfill";
pub const SOURCE_RECONCILE: &str = "reconcile";
pub const SOURCE_REPAIR: &str = "diff-repair";
pub const SOURCE_RESYNC: &str = "resync";

pub const H_DLQ_ERROR: &str = "dlq-error";
pub const H_DLQ_SOURCE_TOPIC: &str = "dlq-source-topic";
pub const H_DLQ_SOURCE_PARTITION: &str = "dlq-source-partition";
pub const H_DLQ_SOURCE_OFFSET: &str = "dlq-source-offset";
pub const H_DLQ_FAILED_AT: &str = "dlq-failed-at";
/// Set on a message put back from a dead-letter topic: the dead letter's id.
pub const H_REPLAYED_FROM: &str = "replayed-from";

/// Header list as owned pairs, so messages can cross task boundaries.
pub type HeaderList = Vec<(String, Vec<u8>)>;

pub fn to_owned_headers(headers: &HeaderList) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |acc, (k, v)| {
            acc.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            })
        },
    )
}

pub fn from_headers<H: Headers>(headers: Option<&H>) -> HeaderList {
    headers
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn header<'a>(headers: &'a HeaderList, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The headers of a message on the events topic, whichever path (webhook,
/// backfill, reconcile) put it there: none for a webhook's event of the
/// default platform.
pub fn event_headers(event: &EventEnvelope, source: &str) -> HeaderList {
    let mut headers = Vec::new();
    if source != SOURCE_WEBHOOK {
        headers.push((H_SOURCE.to_owned(), source.as_bytes().to_vec()));
    }
    if !event.platform.is_platform() {
        headers.push((
            H_PLATFORM.to_owned(),
            event.platform.as_str().as_bytes().to_vec(),
        ));
    }
    headers
}

/// The platform a message's event came from ([`H_PLATFORM`]); the default
/// platform without the header.
pub fn platform(headers: &HeaderList) -> Result<AccountId, InvalidAccount> {
    match header(headers, H_PLATFORM) {
        Some(raw) => AccountId::parse(raw),
        None => Ok(AccountId::PLATFORM),
    }
}

/// A message's headers as it goes to a dead-letter topic: its own (less
/// any earlier `dlq-*`), plus why and where from. `partition` and `offset`
/// are left out when the failure came later than the consume (the order
/// notifier's refused emails).
pub fn dead_letter_headers(
    headers: &HeaderList,
    error: &str,
    source_topic: &str,
    position: Option<(i32, i64)>,
) -> HeaderList {
    let mut out: HeaderList = headers
        .iter()
        .filter(|(k, _)| !k.starts_with("dlq-"))
        .cloned()
        .collect();
    out.push((H_DLQ_ERROR.to_owned(), error.as_bytes().to_vec()));
    out.push((
        H_DLQ_SOURCE_TOPIC.to_owned(),
        source_topic.as_bytes().to_vec(),
    ));
    if let Some((partition, offset)) = position {
        out.push((
            H_DLQ_SOURCE_PARTITION.to_owned(),
            partition.to_string().into_bytes(),
        ));
        out.push((
            H_DLQ_SOURCE_OFFSET.to_owned(),
            offset.to_string().into_bytes(),
        ));
    }
    out.push((
        H_DLQ_FAILED_AT.to_owned(),
        chrono::Utc::now().to_rfc3339().into_bytes(),
    ));
    out
}

/// The event id in a message's body, for tools that list messages: the
/// body is scanned, but only its top-level `id` and `object` are kept.
pub fn event_id_in(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
        object: Option<String>,
    }
    serde_json::from_slice::<Id>(payload)
        .ok()
        .filter(|e| e.object.as_deref() == Some("event"))
        .map(|e| e.id)
}
