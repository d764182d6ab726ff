//! A customer change one service reports, passed on to the others.
//!
//! The local row is the hub: Stripe and Salesforce never talk to each
//! other. When a service's report changes what the services share of a
//! customer, its inbound worker appends an outbox row with that service as
//! the origin, in the apply's transaction; every other service's outbound
//! worker delivers it and the origin's own skips it. Echoes stop at the
//! first hop: an echo is never passed on, and a report that changes
//! nothing shared appends nothing.

use std::collections::{BTreeMap, HashSet};

use diesel::prelude::*;
use serde_json::{Map, Value};

use crate::customers::CustomerId;
use crate::db::schema::customers;
use crate::outbox;

/// The columns every service maps, and so the ones a change is passed on
/// with. Metadata stays between the local row and Stripe.
pub const SHARED_FIELDS: [&str; 4] = ["email", "name", "phone", "description"];

/// A customer's shared columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub description: Option<&'a str>,
}

/// What an inbound apply reads, and locks, of a row before a report
/// changes it: the shared columns (what is passed on is their difference)
/// and whether the row is deleted here.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customers)]
pub struct SharedRow {
    pub id: CustomerId,
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub description: Option<String>,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl SharedRow {
    pub fn shared(&self) -> Shared<'_> {
        Shared {
            email: self.email.as_deref(),
            name: self.name.as_deref(),
            phone: self.phone.as_deref(),
            description: self.description.as_deref(),
        }
    }
}

impl<'a> Shared<'a> {
    fn fields(self) -> [(&'static str, Option<&'a str>); 4] {
        [
            ("email", self.email),
            ("name", self.name),
            ("phone", self.phone),
            ("description", self.description),
        ]
    }
}

fn text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |v| Value::String(v.to_owned()))
}

/// The shared columns `after` sets differently from `before` (`null`
/// clears), as a change's `fields`.
pub fn changed(before: Shared<'_>, after: Shared<'_>) -> Map<String, Value> {
    before
        .fields()
        .into_iter()
        .zip(after.fields())
        .filter(|((_, old), (_, new))| old != new)
        .map(|(_, (field, new))| (field.to_owned(), text(new)))
        .collect()
}

/// The shared columns a new customer has, as a create's `fields`.
pub fn created(after: Shared<'_>) -> Map<String, Value> {
    after
        .fields()
        .into_iter()
        .filter(|(_, value)| value.is_some())
        .map(|(field, value)| (field.to_owned(), text(value)))
        .collect()
}

/// Appends what `origin` changed of a customer, if anything (an update
/// that changes nothing shared is not passed on).
pub fn pass_on(
    conn: &mut PgConnection,
    origin: &str,
    local_id: CustomerId,
    operation: outbox::Operation,
    fields: Map<String, Value>,
) -> QueryResult<()> {
    if operation == outbox::Operation::Update && fields.is_empty() {
        return Ok(());
    }
    outbox::append_from(
        conn,
        origin,
        outbox::Subject::Customer(local_id),
        operation,
        fields,
    )
    .map(drop)
}

/// Tombstones the customers a service reported deleted and passes on the
/// deletion of each one that was live here, with the origin it names
/// (`None`: not passed on, as for an echo of our own write or with no
/// other service to tell), in the caller's transaction. Every inbound path
/// deletes through here.
///
/// Lock order, the API's: the rows are locked first, then tombstoned,
/// then the deletions appended. Appended before the lock, a deletion
/// would draw an outbox id below that of an API update holding the lock
/// and committing first; the relay publishes in id order, so the update
/// would reach the other services after the delete, and Salesforce would
/// write (or, unlinked, create) a Contact for a deleted customer. Locked
/// first, a customer's outbox ids follow its commits.
///
/// A row already deleted here is left as it is and nothing is passed on
/// for it: the tombstone keeps the time of the first deletion, which the
/// path that made it passed on, or not (an echo, or fan-out off then).
///
/// Returns the ids it tombstoned (in id order): a caller that writes more
/// to one of them counts that write in this deletion's version bump, and
/// any other write as a change of its own.
pub fn tombstone(
    conn: &mut PgConnection,
    deletions: &[(CustomerId, Option<&str>)],
) -> QueryResult<Vec<CustomerId>> {
    if deletions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<CustomerId> = deletions.iter().map(|(id, _)| *id).collect();
    // In id order, as every statement that locks several customers does;
    // NO KEY, as every customer row lock is (see `customers::lock`).
    let live: Vec<CustomerId> = customers::table
        .filter(customers::id.eq_any(&ids))
        .filter(customers::deleted_at.is_null())
        .order(customers::id)
        .select(customers::id)
        .for_no_key_update()
        .load(conn)?;
    if live.is_empty() {
        return Ok(live);
    }
    diesel::update(customers::table.filter(customers::id.eq_any(&live)))
        .set((
            customers::deleted_at.eq(diesel::dsl::now),
            customers::updated_at.eq(diesel::dsl::now),
            customers::version.eq(customers::version + 1),
        ))
        .execute(conn)?;
    let mut unpassed: HashSet<CustomerId> = live.iter().copied().collect();
    let mut by_origin: BTreeMap<&str, Vec<outbox::Appended>> = BTreeMap::new();
    for &(local_id, origin) in deletions {
        if let Some(origin) = origin.filter(|_| unpassed.remove(&local_id)) {
            by_origin.entry(origin).or_default().push(outbox::Appended {
                local_id,
                operation: outbox::Operation::Delete,
                fields: Map::new(),
            });
        }
    }
    for (origin, rows) in by_origin {
        outbox::append_many_from(conn, origin, rows)?;
    }
    Ok(live)
}

/// The shared fields changes not yet acknowledged by `service` set: under
/// the conflict policy they win over what `service` reports.
pub fn pending_for(
    conn: &mut PgConnection,
    local_id: CustomerId,
    service: &str,
) -> QueryResult<HashSet<String>> {
    Ok(outbox::undelivered(conn, local_id, service)?
        .iter()
        .filter_map(|row| row.fields.as_object())
        .flat_map(|fields| fields.keys().cloned())
        .filter(|field| SHARED_FIELDS.contains(&field.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_what_differs_is_passed_on_and_a_clear_is_null() {
        let before = Shared {
            email: Some("a@example.com"),
            name: Some("Ada"),
            phone: Some("+1"),
            description: None,
        };
        let after = Shared {
            email: Some("a@example.com"),
            name: Some("Ada Lovelace"),
            phone: None,
            description: None,
        };
        assert_eq!(
            Value::Object(changed(before, after)),
            json!({"name": "Ada Lovelace", "phone": null})
        );
        assert!(changed(after, after).is_empty());
        assert_eq!(
            Value::Object(created(after)),
            json!({"email": "a@example.com", "name": "Ada Lovelace"})
        );
    }
}
