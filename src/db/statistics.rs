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
//! after event) never is on this account. Only the engine's own tables
//! are looked at, and only those the role owns.

use std::collections::HashSet;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use tokio_util::sync::CancellationToken;

use super::{blocking, PgPool, Unavailable};
use crate::config::DatabaseConfig;
use crate::retry::sleep_or_shutdown;

/// How often a worker checks whether a table outgrew its statistics.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Tables this small are planned well enough whatever their statistics.
const SMALL: i64 = 1_000;

/// The tables whose statistics are kept: what stripe-inbound fills (the
/// ledger, the links, the local customers, and every relation of the
/// `stripe` schema: the mirror and its event log). Other tables of the
/// database, the user's own among them, are left to autovacuum.
const KEPT: &str =
    "(c.oid IN ('event_ledger'::regclass, 'id_map'::regclass, 'customers'::regclass) \
                    OR n.nspname = 'stripe')";

/// A table that outgrew its statistics.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct Grown {
    /// Schema and name, quoted by Postgres' own `format('%I.%I')`.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Whether this role may analyze it (only a table's owner may, before
    /// PostgreSQL 17's MAINTAIN privilege).
    #[diesel(sql_type = Bool)]
    pub may_analyze: bool,
}

/// The kept tables whose live rows outgrew their statistics, largest first.
pub fn grown(conn: &mut PgConnection) -> QueryResult<Vec<Grown>> {
    // `n_live_tup` is what the server's statistics count now (inserts less
    // deletes, as each backend reports them: within a second while it is
    // busy, within ten once idle);
    // `reltuples` is what the last ANALYZE or VACUUM found (-1: never).
    diesel::sql_query(format!(
        "SELECT format('%I.%I', n.nspname, c.relname) AS name, \
                pg_has_role(c.relowner, 'USAGE') AS may_analyze \
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
              JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE {KEPT} AND s.n_live_tup > {SMALL} + 2 * greatest(c.reltuples, 0)::bigint \
         ORDER BY s.n_live_tup DESC"
    ))
    .load(conn)
}

/// What one round of [`analyze_grown`] did.
#[derive(Debug, Default)]
pub struct Round {
    pub analyzed: Vec<String>,
    /// Tables this role may not analyze.
    pub not_ours: Vec<String>,
    /// Tables whose ANALYZE failed, with Postgres' message.
    pub failed: Vec<(String, String)>,
}

/// Analyzes each kept table that outgrew its statistics, each on its own,
/// while `go_on()` holds: one that fails (or is locked by someone else:
/// skipped) leaves the others to be done. A lost connection ends the
/// round.
pub fn analyze_grown(conn: &mut PgConnection, go_on: impl Fn() -> bool) -> QueryResult<Round> {
    use diesel::result::{DatabaseErrorKind, Error};
    let mut round = Round::default();
    for table in grown(conn)? {
        if !go_on() {
            break;
        }
        if !table.may_analyze {
            round.not_ours.push(table.name);
            continue;
        }
        // SKIP_LOCKED: a table another replica, autovacuum or a migration
        // holds is left for the next round rather than waited on; and a
        // time limit within the processes' shutdown grace, as the
        // statement holds a connection and a thread meanwhile.
        let done = conn.transaction(|conn| {
            diesel::sql_query("SET LOCAL statement_timeout = '20s'").execute(conn)?;
            diesel::sql_query(format!("ANALYZE (SKIP_LOCKED) {}", table.name)).execute(conn)
        });
        match done {
            Ok(_) => round.analyzed.push(table.name),
            Err(Error::DatabaseError(kind, info))
                if !matches!(kind, DatabaseErrorKind::ClosedConnection) =>
            {
                round.failed.push((table.name, info.message().to_owned()))
            }
            Err(other) => return Err(other),
        }
    }
    Ok(round)
}

/// Runs [`analyze_grown`] every [`CHECK_EVERY`] until `shutdown` (a round
/// under way stops after the table in hand), on a connection of its own
/// (an ANALYZE never holds up a lane waiting for the pool). A table it may
/// not analyze, or whose ANALYZE fails, is named once at warn level; a
/// round that could not run at all (Postgres down) is tried again at the
/// next.
pub async fn keep(database: DatabaseConfig, shutdown: CancellationToken) {
    let pool: PgPool = super::pool(&DatabaseConfig {
        pool_size: 1,
        ..database
    });
    let mut warned: HashSet<String> = HashSet::new();
    while !sleep_or_shutdown(CHECK_EVERY, &shutdown).await {
        let stop = shutdown.clone();
        let round = blocking(&pool, move |conn| {
            Ok::<_, Failed>(analyze_grown(conn, || !stop.is_cancelled())?)
        });
        match round.await {
            Ok(round) => {
                if !round.analyzed.is_empty() {
                    tracing::debug!(tables = ?round.analyzed, "analyzed tables that outgrew their statistics");
                }
                // Named again should it fail again later.
                for table in &round.analyzed {
                    warned.remove(table);
                }
                for table in round.not_ours {
                    if warned.insert(table.clone()) {
                        tracing::warn!(%table, "cannot keep this table's statistics: the role does not own it; leaving it to autovacuum");
                    }
                }
                for (table, error) in round.failed {
                    if warned.insert(table.clone()) {
                        tracing::warn!(%table, %error, "analyzing a table that outgrew its statistics failed; trying again");
                    }
                }
            }
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
