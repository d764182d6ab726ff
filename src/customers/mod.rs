//! Local customers: the `/api/customers` operations. Every write commits
//! the row and its outbox record in one transaction (invariant 5).

pub mod fanout;
pub mod input;
pub mod list;
pub mod settings;
pub mod sync_state;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use crate::db::models::Customer;
use crate::db::schema::customers;
use crate::outbox::{self, Operation, Subject};
use crate::sync::{entity, idmap, service};
use input::{merged_metadata, CustomerPatch, Invalid, NewCustomer};
use sync_state::SyncState;

crate::uuid_id! {
    /// A local customer: `customers.id`, and `id_map.local_id` and
    /// `outbox.local_id` where the entity is a customer. Its own type, so
    /// a purchase's or a refund request's id cannot stand in for it.
    pub struct CustomerId;
}

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("no customer with this id")]
    NotFound,
    #[error("the customer is deleted")]
    Deleted,
    #[error("the customer changed since version {expected}; it is now at version {current}")]
    VersionMismatch { expected: String, current: i64 },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// No database connection (pool exhausted, database down).
    #[error(transparent)]
    Unavailable(#[from] crate::db::Unavailable),
}

/// What the API shows of a customer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CustomerView {
    pub id: CustomerId,
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub description: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// Per external service: its id, `pending|synced|failed`, when, and why.
    pub sync: BTreeMap<&'static str, SyncState>,
}

impl CustomerView {
    fn new(c: Customer, sync: BTreeMap<&'static str, SyncState>) -> Self {
        Self {
            id: c.id,
            email: c.email,
            name: c.name,
            phone: c.phone,
            description: c.description,
            metadata: c.metadata,
            created_at: c.created_at,
            updated_at: c.updated_at,
            deleted: c.deleted_at.is_some(),
            deleted_at: c.deleted_at,
            version: c.version,
            sync,
        }
    }

    /// The entity tag for `ETag`/`If-Match`: the row version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// An `If-Match` precondition: `*` (any current version) or a list of tags.
pub fn check_if_match(if_match: Option<&str>, current_version: i64) -> Result<(), CustomerError> {
    let Some(header) = if_match else {
        return Ok(());
    };
    let current = format!("\"{current_version}\"");
    let matches = header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current);
    if matches {
        Ok(())
    } else {
        Err(CustomerError::VersionMismatch {
            expected: header.to_owned(),
            current: current_version,
        })
    }
}

/// Whether a local customer exists and is not deleted.
pub fn exists(conn: &mut PgConnection, id: CustomerId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        customers::table
            .find(id)
            .filter(customers::deleted_at.is_null()),
    ))
    .get_result(conn)
}

/// Why a local customer has no Stripe customer to charge or credit.
#[derive(Debug, thiserror::Error)]
pub enum NoStripeCustomer {
    #[error("no such customer {0}")]
    Missing(CustomerId),
    #[error("customer {0} has no Stripe customer yet; retry once it is synced")]
    NotSynced(CustomerId),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// The Stripe customer a live local customer is linked to (the
/// platform's link first, see [`idmap::find_by_local`]).
pub fn stripe_customer(
    conn: &mut PgConnection,
    local: CustomerId,
) -> Result<String, NoStripeCustomer> {
    if !exists(conn, local)? {
        return Err(NoStripeCustomer::Missing(local));
    }
    idmap::find_by_local(conn, service::STRIPE, entity::CUSTOMER, local)?
        .map(|link| link.external_id)
        .ok_or(NoStripeCustomer::NotSynced(local))
}

pub fn get(conn: &mut PgConnection, id: CustomerId) -> Result<CustomerView, CustomerError> {
    let row = customers::table
        .find(id)
        .select(Customer::as_select())
        .first(conn)
        .optional()?
        .ok_or(CustomerError::NotFound)?;
    view(conn, row)
}

fn view(conn: &mut PgConnection, row: Customer) -> Result<CustomerView, CustomerError> {
    let mut states = sync_state::for_customers(conn, &[row.id])?;
    let sync = states.remove(&row.id).unwrap_or_default();
    Ok(CustomerView::new(row, sync))
}

pub fn create(conn: &mut PgConnection, new: NewCustomer) -> Result<CustomerView, CustomerError> {
    let metadata = merged_metadata(&Value::Object(Map::new()), &new.metadata)?;
    let row = conn.transaction::<_, CustomerError, _>(|conn| {
        let id = CustomerId::random();
        let row: Customer = diesel::insert_into(customers::table)
            .values((
                customers::id.eq(id),
                customers::email.eq(new.email.as_ref().map(|e| e.as_str())),
                customers::name.eq(&new.name),
                customers::phone.eq(&new.phone),
                customers::description.eq(&new.description),
                customers::metadata.eq(Value::Object(metadata.clone())),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        let mut fields = Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                fields.insert(k.to_owned(), Value::String(v.to_owned()));
            }
        };
        put("email", row.email.as_deref());
        put("name", row.name.as_deref());
        put("phone", row.phone.as_deref());
        put("description", row.description.as_deref());
        if !metadata.is_empty() {
            fields.insert("metadata".into(), Value::Object(metadata));
        }
        outbox::append(conn, Subject::Customer(id), Operation::Create, fields)?;
        Ok(row)
    })?;
    view(conn, row)
}

pub fn update(
    conn: &mut PgConnection,
    id: CustomerId,
    patch: CustomerPatch,
    if_match: Option<&str>,
) -> Result<CustomerView, CustomerError> {
    let row = conn.transaction::<_, CustomerError, _>(|conn| {
        let current = lock(conn, id)?;
        if current.deleted_at.is_some() {
            return Err(CustomerError::Deleted);
        }
        check_if_match(if_match, current.version)?;
        let metadata = merged_metadata(&current.metadata, &patch.metadata)?;

        let mut fields = Map::new();
        let text = |v: &Option<Option<String>>, cur: &Option<String>| {
            v.clone().unwrap_or_else(|| cur.clone())
        };
        let email = patch
            .email
            .clone()
            .map(|e| e.map(|e| e.as_str().to_owned()));
        for (key, value) in [
            ("email", &email),
            ("name", &patch.name),
            ("phone", &patch.phone),
            ("description", &patch.description),
        ] {
            if let Some(v) = value {
                fields.insert(
                    key.to_owned(),
                    v.clone().map(Value::String).unwrap_or(Value::Null),
                );
            }
        }
        if !patch.metadata.is_empty() {
            let changes: Map<String, Value> = patch
                .metadata
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.clone().map(Value::String).unwrap_or(Value::Null),
                    )
                })
                .collect();
            fields.insert("metadata".into(), Value::Object(changes));
        }

        let row: Customer = diesel::update(customers::table.find(id))
            .set((
                customers::email.eq(text(&email, &current.email)),
                customers::name.eq(text(&patch.name, &current.name)),
                customers::phone.eq(text(&patch.phone, &current.phone)),
                customers::description.eq(text(&patch.description, &current.description)),
                customers::metadata.eq(Value::Object(metadata)),
                customers::version.eq(customers::version + 1),
                customers::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        outbox::append(conn, Subject::Customer(id), Operation::Update, fields)?;
        Ok(row)
    })?;
    view(conn, row)
}

/// Soft delete. Deleting a deleted customer changes nothing and succeeds,
/// so a retried DELETE is harmless.
pub fn delete(
    conn: &mut PgConnection,
    id: CustomerId,
    if_match: Option<&str>,
) -> Result<CustomerView, CustomerError> {
    let row = conn.transaction::<_, CustomerError, _>(|conn| {
        let current = lock(conn, id)?;
        if current.deleted_at.is_some() {
            return Ok(current);
        }
        check_if_match(if_match, current.version)?;
        let row: Customer = diesel::update(customers::table.find(id))
            .set((
                customers::deleted_at.eq(diesel::dsl::now),
                customers::version.eq(customers::version + 1),
                customers::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Customer::as_returning())
            .get_result(conn)?;
        outbox::append(conn, Subject::Customer(id), Operation::Delete, Map::new())?;
        Ok(row)
    })?;
    view(conn, row)
}

/// Locks the customer's row for the write that follows.
///
/// Every customer row lock (here, the Stripe and Salesforce applies,
/// `fanout::tombstone`) is FOR NO KEY UPDATE, never FOR UPDATE: the credits
/// tables (`credits.purchases`, `balances`, `ledger`) reference
/// `customers (id)`, and each insert there checks its foreign key with FOR
/// KEY SHARE on the customer row, which FOR UPDATE blocks and FOR NO KEY
/// UPDATE does not. Blocked, a credits spend holding `credits.balances`
/// for the customer would wait on us while we wait on it (an apply that
/// settles a refund of that customer later in its transaction). No writer
/// changes `customers.id`, so the weaker lock is all any needs
/// (`tests/it/row_lock.rs`).
fn lock(conn: &mut PgConnection, id: CustomerId) -> Result<Customer, CustomerError> {
    customers::table
        .find(id)
        .select(Customer::as_select())
        .for_no_key_update()
        .first(conn)
        .optional()?
        .ok_or(CustomerError::NotFound)
}
