//! A local customer as a Salesforce Contact: which fields map where.
//!
//! | customer | Contact |
//! |---|---|
//! | `name` | `FirstName` (all but the last word), `LastName` (the last word) |
//! | `email` | `Email` |
//! | `phone` | `Phone` |
//! | `description` | `Description` |
//! | `id` | the external-id field (`SALESFORCE_EXTERNAL_ID_FIELD`) |
//!
//! `LastName` is required on a Contact; a customer without a name gets
//! [`NO_NAME`] there, as Salesforce's own imports do. Metadata stays local.

use serde_json::{Map, Value};

use crate::db::models::Customer;

/// The sObject a customer becomes.
pub const SOBJECT: &str = "Contact";

/// `LastName` of a customer without a name.
pub const NO_NAME: &str = "[not provided]";

/// Every Contact field of `customer`: what a create (an upsert by external
/// id) sends, so a Contact made late still carries the whole customer.
pub fn contact_of(customer: &Customer) -> Map<String, Value> {
    let mut contact = Map::new();
    name_fields(customer.name.as_deref(), &mut contact);
    for (field, value) in [
        ("Email", &customer.email),
        ("Phone", &customer.phone),
        ("Description", &customer.description),
    ] {
        contact.insert(
            field.into(),
            value.clone().map_or(Value::Null, Value::String),
        );
    }
    contact
}

/// The Contact fields a local change sets (an update sends only those);
/// `null` clears, as in the change.
pub fn contact_changes(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut contact = Map::new();
    for (field, value) in fields {
        match field.as_str() {
            "name" => name_fields(value.as_str(), &mut contact),
            "email" => put(&mut contact, "Email", value),
            "phone" => put(&mut contact, "Phone", value),
            "description" => put(&mut contact, "Description", value),
            _ => {}
        }
    }
    contact
}

/// The customer columns a Contact record carries, each with its value
/// (`None`: empty in Salesforce); a column whose fields the record leaves
/// out is not listed, so a relay sending part of a record changes only
/// that part. The name joins `FirstName` and `LastName`, without the mark
/// [`contact_of`] puts in `LastName` for a customer without one; a record
/// with one part and not the other ([`has_partial_name`]) must be read
/// whole first.
pub fn customer_fields(record: &Map<String, Value>) -> Vec<(&'static str, Option<String>)> {
    let text = |field: &str| {
        record
            .get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut fields = Vec::new();
    if record.contains_key("FirstName") || record.contains_key("LastName") {
        let last = text("LastName").filter(|l| *l != NO_NAME);
        let name = match (text("FirstName"), last) {
            (Some(first), Some(last)) => Some(format!("{first} {last}")),
            (one, other) => one.or(other).map(str::to_owned),
        };
        fields.push(("name", name));
    }
    for (column, field) in [
        ("email", "Email"),
        ("phone", "Phone"),
        ("description", "Description"),
    ] {
        if record.contains_key(field) {
            fields.push((column, text(field).map(str::to_owned)));
        }
    }
    fields
}

/// Whether a record carries one name part without the other: what the
/// name is then depends on how Salesforce split it.
pub fn has_partial_name(record: &Map<String, Value>) -> bool {
    record.contains_key("FirstName") != record.contains_key("LastName")
}

/// Whether a record carries every field a customer is made from, and the
/// external-id field that may name one already.
pub fn is_whole(record: &Map<String, Value>, external_id_field: &str) -> bool {
    [
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "Description",
        external_id_field,
    ]
    .iter()
    .all(|field| record.contains_key(*field))
}

/// A name as `FirstName` (all but the last word) and `LastName` (the last
/// word), each `None` when empty.
fn split_name(name: Option<&str>) -> (Option<&str>, Option<&str>) {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => (None, None),
        Some(name) => match name.rsplit_once(char::is_whitespace) {
            Some((first, last)) => (Some(first.trim_end()), Some(last)),
            None => (None, Some(name)),
        },
    }
}

fn put(contact: &mut Map<String, Value>, field: &str, value: &Value) {
    let value = match value {
        Value::String(s) => Value::String(s.clone()),
        _ => Value::Null,
    };
    contact.insert(field.into(), value);
}

fn name_fields(name: Option<&str>, contact: &mut Map<String, Value>) {
    let (first, last) = split_name(name);
    let last = last.unwrap_or(NO_NAME);
    contact.insert(
        "FirstName".into(),
        first.map_or(Value::Null, |f| Value::String(f.to_owned())),
    );
    contact.insert("LastName".into(), Value::String(last.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_split_on_the_last_word_and_a_missing_one_is_marked() {
        let of = |name: Value| {
            Value::Object(contact_changes(json!({"name": name}).as_object().unwrap()))
        };
        assert_eq!(
            of(json!("Ada King Lovelace")),
            json!({"FirstName": "Ada King", "LastName": "Lovelace"})
        );
        assert_eq!(
            of(json!("Cher")),
            json!({"FirstName": null, "LastName": "Cher"})
        );
        assert_eq!(
            of(json!("  ")),
            json!({"FirstName": null, "LastName": NO_NAME})
        );
        assert_eq!(
            of(Value::Null),
            json!({"FirstName": null, "LastName": NO_NAME})
        );
    }

    #[test]
    fn a_contact_reads_back_as_the_customer_it_was_written_from() {
        let record = json!({"FirstName": "Ada King", "LastName": "Lovelace",
                            "Email": "ada@example.com", "Phone": null, "Description": "  "});
        assert_eq!(
            customer_fields(record.as_object().unwrap()),
            vec![
                ("name", Some("Ada King Lovelace".to_owned())),
                ("email", Some("ada@example.com".to_owned())),
                ("phone", None),
                ("description", None),
            ]
        );
        let unnamed = json!({"FirstName": null, "LastName": NO_NAME});
        assert_eq!(
            customer_fields(unnamed.as_object().unwrap()),
            vec![("name", None)]
        );
        let partial = json!({"Email": "new@example.com"});
        assert_eq!(
            customer_fields(partial.as_object().unwrap()),
            vec![("email", Some("new@example.com".to_owned()))]
        );
    }

    #[test]
    fn a_record_with_one_name_part_or_without_fields_is_not_whole() {
        let of = |v: Value| v.as_object().unwrap().clone();
        assert!(has_partial_name(&of(json!({"LastName": "Gogh"}))));
        assert!(has_partial_name(&of(json!({"FirstName": null}))));
        assert!(!has_partial_name(&of(
            json!({"FirstName": "A", "LastName": "B"})
        )));
        assert!(!has_partial_name(&of(json!({"Email": "a@example.com"}))));
        let whole = json!({"FirstName": null, "LastName": "Cher", "Email": null, "Phone": null,
                           "Description": null, "X__c": null});
        assert!(is_whole(&of(whole.clone()), "X__c"));
        let mut part = whole;
        part.as_object_mut().unwrap().remove("X__c");
        assert!(!is_whole(&of(part), "X__c"));
    }

    #[test]
    fn a_change_maps_only_what_it_sets() {
        let change =
            json!({"email": "ada@example.com", "phone": null, "metadata": {"tier": "gold"}});
        assert_eq!(
            Value::Object(contact_changes(change.as_object().unwrap())),
            json!({"Email": "ada@example.com", "Phone": null})
        );
    }
}
