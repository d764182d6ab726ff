//! Diesel models: a queryable row type plus insert/update shapes per table.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{customers, event_ledger, id_map, outbox};

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = customers)]
pub struct Customer {
    pub id: crate::customers::CustomerId,
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub description: Option<String>,
    pub metadata: serde_json::Value,
    pub stripe_object: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// The columns a Stripe customer snapshot projects onto.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = customers, treat_none_as_null = true)]
pub struct CustomerProjection {
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub description: Option<String>,
    pub metadata: serde_json::Value,
    pub stripe_object: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, PartialEq)]
#[diesel(table_name = id_map)]
pub struct IdMapEntry {
    pub service: String,
    pub account: String,
    pub entity: String,
    pub external_id: String,
    pub local_id: crate::customers::CustomerId,
    pub remote_version: i64,
    pub remote_event_id: Option<String>,
    pub remote_deleted: bool,
    pub synced_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = id_map)]
pub struct NewIdMapEntry<'a> {
    pub service: &'a str,
    pub account: &'a str,
    pub entity: &'a str,
    pub external_id: &'a str,
    pub local_id: crate::customers::CustomerId,
    pub remote_version: i64,
    pub remote_event_id: Option<&'a str>,
    pub remote_deleted: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = event_ledger)]
pub struct LedgerEntry {
    pub service: String,
    pub account: String,
    pub event_id: String,
    pub event_type: String,
    pub object_id: String,
    pub event_created: i64,
    pub outcome: String,
    pub processed_at: DateTime<Utc>,
    pub echo: bool,
}

#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = event_ledger)]
pub struct NewLedgerEntry<'a> {
    pub service: &'a str,
    pub account: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub object_id: &'a str,
    pub event_created: i64,
    pub outcome: &'a str,
    pub echo: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub entity: String,
    pub local_id: Uuid,
    pub operation: String,
    pub fields: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub origin: String,
}
