//! Queries on `id_map`, the one place that knows its shape.

use diesel::prelude::*;
use uuid::Uuid;

use crate::db::models::{IdMapEntry, NewIdMapEntry};
use crate::db::schema::id_map;

/// Names one object of an external service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalKey<'a> {
    pub service: &'a str,
    pub account: &'a str,
    pub entity: &'a str,
    pub external_id: &'a str,
}

/// The link for an external object, locked until the transaction ends so
/// two appliers of the same object serialise.
pub fn find_for_update(
    conn: &mut PgConnection,
    key: ExternalKey<'_>,
) -> QueryResult<Option<IdMapEntry>> {
    id_map::table
        .find((key.service, key.account, key.entity, key.external_id))
        .select(IdMapEntry::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn find_by_local(
    conn: &mut PgConnection,
    service: &str,
    entity: &str,
    local_id: Uuid,
) -> QueryResult<Option<IdMapEntry>> {
    id_map::table
        .filter(id_map::service.eq(service))
        .filter(id_map::entity.eq(entity))
        .filter(id_map::local_id.eq(local_id))
        .select(IdMapEntry::as_select())
        .first(conn)
        .optional()
}

pub fn insert(conn: &mut PgConnection, entry: &NewIdMapEntry<'_>) -> QueryResult<()> {
    diesel::insert_into(id_map::table)
        .values(entry)
        .execute(conn)
        .map(drop)
}

/// Records that the remote state as of `version` (and event) is applied.
pub fn advance(
    conn: &mut PgConnection,
    key: ExternalKey<'_>,
    version: i64,
    event_id: &str,
    deleted: bool,
) -> QueryResult<()> {
    diesel::update(id_map::table.find((key.service, key.account, key.entity, key.external_id)))
        .set((
            id_map::remote_version.eq(version),
            id_map::remote_event_id.eq(event_id),
            id_map::remote_deleted.eq(deleted),
            id_map::synced_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(drop)
}
