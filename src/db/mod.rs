//! Postgres: connection pool, embedded migrations, schema and models.

pub mod models;
pub mod schema;
pub mod statistics;
mod text_enum;
mod uuid_id;

use std::time::Duration;

use anyhow::Context;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::RunQueryDsl;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use crate::config::DatabaseConfig;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

/// Why an operation handed to [`blocking`] did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// No connection within [`POOL_CHECKOUT_TIMEOUT`]: Postgres is down or
    /// every connection is busy.
    #[error("no database connection: {0}")]
    NoConnection(#[from] diesel::r2d2::PoolError),
    /// The task running the operation panicked or was cancelled.
    #[error("the database task did not finish: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
}

/// Runs `op` with a pooled connection on the blocking pool: the one way
/// async code reaches Postgres (diesel's connections block). Every error
/// type an operation returns says how it takes [`Unavailable`]: the API
/// answers 503, a worker retries.
pub async fn blocking<T, E>(
    pool: &PgPool,
    op: impl FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Unavailable> + Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(Unavailable::from)?;
        op(&mut conn)
    })
    .await
    .map_err(Unavailable::from)?
}

/// How long a caller waits for a pooled connection before it fails.
pub const POOL_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the pool without connecting eagerly, so a process can start (and
/// report not-ready) while Postgres is still coming up.
pub fn pool(cfg: &DatabaseConfig) -> PgPool {
    let manager = ConnectionManager::<PgConnection>::new(cfg.url.expose_secret());
    Pool::builder()
        .max_size(cfg.pool_size)
        .min_idle(Some(0))
        .connection_timeout(POOL_CHECKOUT_TIMEOUT)
        .build_unchecked(manager)
}

/// Applies every pending embedded migration (`stripe-sync migrate`) and
/// returns the names of those applied.
pub fn run_migrations(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let mut conn = pool.get().context("failed to connect to Postgres")?;
    let names = pending_migration_names(&mut conn)?;
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("failed to run migrations: {e}"))?;
    Ok(names)
}

fn pending_migration_names(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let pending = conn
        .pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("failed to read migration state: {e}"))?;
    Ok(pending.iter().map(|m| m.name().to_string()).collect())
}

/// Refuses to run against a database that lacks migrations: better a clear
/// message at start-up than a confusing SQL error on the first event.
pub fn ensure_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.get().context("failed to connect to Postgres")?;
    let names = pending_migration_names(&mut conn)?;
    if !names.is_empty() {
        anyhow::bail!(
            "the database is not migrated ({} pending: {}); run `stripe-sync migrate` first",
            names.len(),
            names.join(", ")
        );
    }
    Ok(())
}

/// `SELECT 1` for readiness checks.
pub fn ping(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.get()?;
    diesel::sql_query("SELECT 1").execute(&mut conn)?;
    Ok(())
}
