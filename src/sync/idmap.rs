//! Queries on `id_map`, the one place that knows its shape.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Text};

use crate::customers::CustomerId;
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

/// A local customer's link to a service (as a Stripe customer, a
/// Salesforce contact: `entity`). A local row may be linked once per
/// account (Connect); the platform's link comes first, then by account.
pub fn find_by_local(
    conn: &mut PgConnection,
    service: &str,
    entity: &str,
    local_id: CustomerId,
) -> QueryResult<Option<IdMapEntry>> {
    id_map::table
        .filter(id_map::service.eq(service))
        .filter(id_map::entity.eq(entity))
        .filter(id_map::local_id.eq(local_id))
        .order((
            id_map::account.eq(crate::stripe::PLATFORM_ACCOUNT).desc(),
            id_map::account,
        ))
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

/// The links of many objects of one service and entity, locked like
/// [`find_for_update`], in key order so that concurrent lockers cannot
/// deadlock. `keys` are (account, external id) pairs.
pub fn lock_many(
    conn: &mut PgConnection,
    service: &str,
    entity: &str,
    keys: &[(&str, &str)],
) -> QueryResult<Vec<IdMapEntry>> {
    many(conn, service, entity, keys, " FOR UPDATE OF m")
}

/// [`lock_many`] without the locks: a read to plan with, before a
/// transaction that locks.
pub fn find_many(
    conn: &mut PgConnection,
    service: &str,
    entity: &str,
    keys: &[(&str, &str)],
) -> QueryResult<Vec<IdMapEntry>> {
    many(conn, service, entity, keys, "")
}

fn many(
    conn: &mut PgConnection,
    service: &str,
    entity: &str,
    keys: &[(&str, &str)],
    lock: &str,
) -> QueryResult<Vec<IdMapEntry>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
    // One primary-key probe per key (LATERAL) while the statistics are
    // near the table's size, which stripe-inbound keeps them
    // (db::statistics): on statistics taken while the table was empty the
    // planner read every link of the service instead. Not `LIMIT 1` as in
    // ledger::already_applied: the row locks would then be taken inside
    // the subquery, in the keys' order rather than the sorted one.
    diesel::sql_query(format!(
        "SELECT m.* FROM unnest($3, $4) AS k(account, external_id) \
         CROSS JOIN LATERAL (SELECT * FROM id_map WHERE service = $1 AND account = k.account \
             AND entity = $2 AND external_id = k.external_id) AS m \
         ORDER BY m.account, m.external_id{lock}"
    ))
    .bind::<Text, _>(service)
    .bind::<Text, _>(entity)
    .bind::<Array<Text>, _>(accounts)
    .bind::<Array<Text>, _>(ids)
    .load(conn)
}

pub fn insert_many(conn: &mut PgConnection, entries: &[NewIdMapEntry<'_>]) -> QueryResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    diesel::insert_into(id_map::table)
        .values(entries)
        .execute(conn)
        .map(drop)
}

/// One link's new ordering state, for [`advance_many`].
#[derive(Debug, Clone, Copy)]
pub struct Advance<'a> {
    pub account: &'a str,
    pub external_id: &'a str,
    pub version: i64,
    pub event_id: &'a str,
    pub deleted: bool,
}

/// [`advance`] for many links of one service and entity, in one statement.
pub fn advance_many(
    conn: &mut PgConnection,
    service: &str,
    entity: &str,
    links: &[Advance<'_>],
) -> QueryResult<()> {
    if links.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "UPDATE id_map AS m SET remote_version = v.version, remote_event_id = v.event_id, \
                remote_deleted = v.deleted, synced_at = now() \
         FROM unnest($3, $4, $5, $6, $7) AS v(account, external_id, version, event_id, deleted) \
         WHERE m.service = $1 AND m.entity = $2 AND m.account = ANY($8) AND m.external_id = ANY($4) \
           AND m.account = v.account AND m.external_id = v.external_id",
    )
    .bind::<Text, _>(service)
    .bind::<Text, _>(entity)
    .bind::<Array<Text>, _>(links.iter().map(|l| l.account).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(links.iter().map(|l| l.external_id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(links.iter().map(|l| l.version).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(links.iter().map(|l| l.event_id).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(links.iter().map(|l| l.deleted).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(distinct(links.iter().map(|l| l.account)))
    .execute(conn)
    .map(drop)
}

fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut values: Vec<&str> = values.collect();
    values.sort_unstable();
    values.dedup();
    values
}
