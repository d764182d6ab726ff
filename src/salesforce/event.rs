//! `salesforce.events.v1`: one message per version of a Contact, whoever
//! reported it (the poller, or a relay through `POST /webhooks/salesforce`),
//! keyed by the Contact's id so its versions stay in one partition.
//!
//! A version is named by the Contact's id, its `SystemModstamp` and a
//! digest of what it says (`{Id}@{ms}:{digest}`). Real orgs stamp whole
//! seconds (the API returns `.000` milliseconds), so two changes in one
//! second share a stamp: the digest tells them apart, while the poller and
//! a relay reporting the same version still make one ledger entry. Two
//! versions with one stamp cannot be ordered by it; the inbound apply
//! settles such a tie as Stripe's are, by reading the Contact's current
//! state.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client::RecordId;

/// Where a version came from, for logs and the ledger's event type.
pub const SOURCE_POLL: &str = "poll";
pub const SOURCE_RELAY: &str = "relay";

/// The Contact fields the poller selects and the relay must send: the
/// mapped ones, and what ordering, tombstones and echoes are read from.
pub const CONTACT_FIELDS: [&str; 9] = [
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "Description",
    "IsDeleted",
    "SystemModstamp",
    "LastModifiedById",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceEvent {
    /// `{Id}@{SystemModstamp in ms}:{digest of the version's fields}`.
    pub id: String,
    /// The org the record belongs to, when the reporter knows it (the
    /// poller does); the inbound worker refuses another org's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub source: String,
    /// The Contact as the REST API returns it.
    pub record: Map<String, Value>,
}

/// What ordering and the apply read of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    pub contact_id: RecordId<'a>,
    /// `SystemModstamp`, milliseconds since the epoch.
    pub modstamp: i64,
    pub deleted: bool,
    pub modified_by: Option<&'a str>,
}

impl SalesforceEvent {
    /// The event for one Contact record; refused with the reason when the
    /// record lacks what ordering needs.
    pub fn of_record(
        record: Map<String, Value>,
        org: Option<&str>,
        source: &str,
    ) -> Result<Self, String> {
        let id = version_id(&record)?;
        Ok(Self {
            id,
            org: org.map(str::to_owned),
            source: source.to_owned(),
            record,
        })
    }

    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let event: Self =
            serde_json::from_slice(payload).map_err(|e| format!("not a Salesforce event: {e}"))?;
        // Versions published before ids carried a digest (`{Id}@{ms}`) may
        // still be in the topic after an upgrade: they are applied under
        // the id they were published with.
        let version = event.version()?;
        let legacy = format!("{}@{}", version.contact_id, version.modstamp);
        if event.id != legacy && event.id != version_id(&event.record)? {
            return Err(format!(
                "event id {:?} does not name the record's version",
                event.id
            ));
        }
        Ok(event)
    }

    pub fn version(&self) -> Result<Version<'_>, String> {
        version_of(&self.record)
    }

    /// `event_ledger.event_type`.
    pub fn kind(&self) -> &'static str {
        match self.version() {
            Ok(v) if v.deleted => "contact.deleted",
            _ => "contact.changed",
        }
    }
}

/// The fields a version's digest covers: what it says of the Contact,
/// besides the id and stamp its name already holds.
const DIGESTED: [&str; 7] = [
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "Description",
    "IsDeleted",
    "LastModifiedById",
];

/// `{Id}@{ms}:{digest}`: the digest is the first 48 bits of a SHA-256 over
/// the [`DIGESTED`] fields the record carries (a field left out and one
/// sent as `null` differ), so one version reads the same from the poller
/// and a relay sending the whole record.
fn version_id(record: &Map<String, Value>) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let version = version_of(record)?;
    let said: Vec<(&str, &Value)> = DIGESTED
        .iter()
        .filter_map(|field| record.get(*field).map(|value| (*field, value)))
        .collect();
    let canonical = serde_json::to_vec(&said).map_err(|e| e.to_string())?;
    let digest = Sha256::digest(&canonical);
    Ok(format!(
        "{}@{}:{}",
        version.contact_id,
        version.modstamp,
        hex::encode(&digest[..6])
    ))
}

fn version_of(record: &Map<String, Value>) -> Result<Version<'_>, String> {
    let text = |field: &str| record.get(field).and_then(Value::as_str);
    let contact_id = text("Id")
        .and_then(RecordId::parse)
        .filter(|id| id.prefix() == "003")
        .ok_or("the record has no Contact Id (003…)")?;
    let stamp = text("SystemModstamp").ok_or("the record has no SystemModstamp")?;
    let modstamp = parse_datetime(stamp)
        .ok_or_else(|| format!("SystemModstamp {stamp:?} is not a Salesforce dateTime"))?;
    let deleted = match record.get("IsDeleted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("IsDeleted is {other}, not a boolean")),
    };
    Ok(Version {
        contact_id,
        modstamp,
        deleted,
        modified_by: text("LastModifiedById"),
    })
}

/// A dateTime as the REST API returns it (`2026-12-01T22:28:00.123+0000`)
/// or in ISO 8601 (`…Z`, `…+00:00`), as milliseconds since the epoch.
pub fn parse_datetime(raw: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| Utc.from_utc_datetime(&t).timestamp_millis())
}

/// Milliseconds as a SOQL dateTime literal (`2026-12-01T22:28:00.123Z`).
pub fn soql_datetime(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_formats_salesforce_sends_read_to_the_same_millisecond() {
        let ms = 1_764_628_080_123;
        for raw in [
            "2025-12-01T22:28:00.123+0000",
            "2025-12-01T22:28:00.123Z",
            "2025-12-01T22:28:00.123+00:00",
            "2025-12-01T23:28:00.123+01:00",
        ] {
            assert_eq!(parse_datetime(raw), Some(ms), "{raw}");
        }
        assert_eq!(soql_datetime(ms), "2025-12-01T22:28:00.123Z");
        assert_eq!(parse_datetime(&soql_datetime(ms)), Some(ms));
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn a_version_is_named_by_its_contact_and_stamp_and_refused_without_them() {
        let record = json!({"Id": "003000000000001AAA", "SystemModstamp": "2025-12-01T22:28:00.123+0000",
                            "IsDeleted": true, "LastModifiedById": "005000000000001AAA"});
        let event =
            SalesforceEvent::of_record(record.as_object().unwrap().clone(), None, SOURCE_RELAY)
                .unwrap();
        assert!(
            event.id.starts_with("003000000000001AAA@1764628080123:"),
            "{}",
            event.id
        );
        assert_eq!(event.kind(), "contact.deleted");
        let again = SalesforceEvent::parse(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(again, event);
        for (bad, why) in [
            (
                json!({"SystemModstamp": "2025-12-01T22:28:00Z"}),
                "Contact Id",
            ),
            (
                json!({"Id": "001000000000001AAA", "SystemModstamp": "2025-12-01T22:28:00Z"}),
                "Contact Id",
            ),
            (json!({"Id": "003000000000001AAA"}), "SystemModstamp"),
            (
                json!({"Id": "003000000000001AAA", "SystemModstamp": "soon"}),
                "dateTime",
            ),
            (
                json!({"Id": "003000000000001AAA", "SystemModstamp": "2025-12-01T22:28:00Z", "IsDeleted": "yes"}),
                "boolean",
            ),
        ] {
            let err =
                SalesforceEvent::of_record(bad.as_object().unwrap().clone(), None, SOURCE_POLL)
                    .unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let mut forged = serde_json::to_value(&event).unwrap();
        forged["id"] = json!("003000000000001AAA@1");
        assert!(SalesforceEvent::parse(forged.to_string().as_bytes()).is_err());
        // An id of the form before digests, still in a topic after an
        // upgrade, is read as it was published.
        forged["id"] = json!("003000000000001AAA@1764628080123");
        let legacy = SalesforceEvent::parse(forged.to_string().as_bytes()).unwrap();
        assert_eq!(legacy.id, "003000000000001AAA@1764628080123");
    }

    #[test]
    fn versions_in_one_second_differ_by_what_they_say_and_not_by_who_reports_them() {
        let id = |record: Value| {
            SalesforceEvent::of_record(record.as_object().unwrap().clone(), None, SOURCE_POLL)
                .unwrap()
                .id
        };
        let first = json!({"Id": "003000000000001AAA", "SystemModstamp": "2025-12-01T22:28:00.000+0000",
                           "Phone": "+1 1", "LastModifiedById": "005000000000002AAA"});
        let mut second = first.clone();
        second["Phone"] = json!("+1 2");
        assert_ne!(id(first.clone()), id(second));
        // Extra fields (the relay's whole record, `attributes`, the
        // external id) do not change the name; a field left out does.
        let mut whole = first.clone();
        whole["attributes"] = json!({"type": "Contact"});
        whole["StripeSync_Id__c"] = json!(null);
        assert_eq!(id(first.clone()), id(whole));
        let mut cut = first.clone();
        cut.as_object_mut().unwrap().remove("Phone");
        assert_ne!(id(first.clone()), id(cut.clone()));
        cut["Phone"] = json!(null);
        assert_ne!(id(first), id(cut));
    }
}
