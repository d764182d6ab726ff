//! Keeps the planner's statistics of the tables a worker fills up to their
//! size. A new database's tables are analyzed nearly empty (by a first
//! `VACUUM ANALYZE`, or by autovacuum after the first rows), and with
//! those statistics Postgres plans a batch's lookups by key as scans of
//! every row of the service (an index's leading columns and a filter, or a
//! hash join over them): the first burst of events applied at a quarter
//! of the speed of the next, each batch slower than the one before
//! (`docs/src/performance.md`). Autovacuum, where it runs at all (it can
//! be off, as on the CI machines), looks once a minute; a burst fills the
//! ledger with hundreds of thousands of rows in less.
//!
//! A table is analyzed again once its live rows are more than twice what
//! its statistics say (and a thousand more): a table that grows from
//! nothing is analyzed a logarithmic number of times, and a table that
//! only changes in place (the links and the mirror's rows, updated event
//! after event) never is on this account.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Text;
use tokio_util::sync::CancellationToken;

use super::{blocking, PgPool, Unavailable};
use crate::retry::sleep_or_shutdown;

/// How often a worker checks whether a table outgrew its statistics.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Tables this small are planned well enough whatever their statistics.
const SMALL: i64 = 1_000;

#[derive(QueryableByName)]
struct Grown {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The tables of the current database whose live rows outgrew their
/// statistics, as quoted names.
pub fn grown(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    // `n_live_tup` is what the server's statistics count now (inserts less
    // deletes, reported by each backend at least once a second);
    // `reltuples` is what the last ANALYZE or VACUUM found (-1: never).
    let grown: Vec<Grown> = diesel::sql_query(format!(
        "SELECT format('%I.%I', s.schemaname, s.relname) AS name \
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
         WHERE s.n_live_tup > {SMALL} + 2 * greatest(c.reltuples, 0)::bigint \
         ORDER BY s.n_live_tup DESC"
    ))
    .load(conn)?;
    Ok(grown.into_iter().map(|g| g.name).collect())
}

/// Analyzes each table that outgrew its statistics; returns their names.
pub fn analyze_grown(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    let tables = grown(conn)?;
    for table in &tables {
        // `table` is quoted by Postgres' own format('%I.%I').
        diesel::sql_query(format!("ANALYZE {table}")).execute(conn)?;
    }
    Ok(tables)
}

/// Runs [`analyze_grown`] every [`CHECK_EVERY`] until `shutdown`; a
/// failed round (Postgres down, the statement cancelled) is retried at the
/// next. A role that does not own a table gets only Postgres' warning that
/// it was skipped: the engine's role owns the tables it migrated.
pub async fn keep(pool: PgPool, shutdown: CancellationToken) {
    while !sleep_or_shutdown(CHECK_EVERY, &shutdown).await {
        match blocking(&pool, |conn| Ok::<_, Failed>(analyze_grown(conn)?)).await {
            Ok(tables) if !tables.is_empty() => {
                tracing::debug!(?tables, "analyzed tables that outgrew their statistics");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "statistics check failed; trying again"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}
