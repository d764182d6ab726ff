//! Checkpoints of the pull paths (`sync_cursors`), so a killed backfill or
//! reconcile continues where it stopped.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::db::schema::sync_cursors;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = sync_cursors)]
pub struct Checkpoint {
    pub position: Option<String>,
    pub scope: String,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Names one stream of one account at one service.
#[derive(Debug, Clone, Copy)]
pub struct StreamKey<'a> {
    pub service: &'a str,
    pub account: &'a str,
    pub stream: &'a str,
}

pub fn load(conn: &mut PgConnection, key: StreamKey<'_>) -> QueryResult<Option<Checkpoint>> {
    sync_cursors::table
        .find((key.service, key.account, key.stream))
        .select(Checkpoint::as_select())
        .first(conn)
        .optional()
}

/// Records `position` (and whether the stream is complete) for `scope`.
pub fn save(
    conn: &mut PgConnection,
    key: StreamKey<'_>,
    position: Option<&str>,
    scope: &str,
    completed: bool,
) -> QueryResult<()> {
    let completed_at = completed.then(Utc::now);
    diesel::insert_into(sync_cursors::table)
        .values((
            sync_cursors::service.eq(key.service),
            sync_cursors::account.eq(key.account),
            sync_cursors::stream.eq(key.stream),
            sync_cursors::position.eq(position),
            sync_cursors::scope.eq(scope),
            sync_cursors::completed_at.eq(completed_at),
        ))
        .on_conflict((
            sync_cursors::service,
            sync_cursors::account,
            sync_cursors::stream,
        ))
        .do_update()
        .set((
            sync_cursors::position.eq(position),
            sync_cursors::scope.eq(scope),
            sync_cursors::completed_at.eq(completed_at),
            sync_cursors::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(drop)
}

/// Forgets the checkpoints of an account's streams that start with
/// `prefix` (`backfill:`).
pub fn delete_prefixed(
    conn: &mut PgConnection,
    service: &str,
    account: &str,
    prefix: &str,
) -> QueryResult<usize> {
    let pattern = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    diesel::delete(
        sync_cursors::table
            .filter(sync_cursors::service.eq(service))
            .filter(sync_cursors::account.eq(account))
            .filter(sync_cursors::stream.like(pattern)),
    )
    .execute(conn)
}
