//! What an event costs: CPU time of each process (from /proc), rows
//! written in the database and the server's write-ahead log (Postgres'
//! statistics), read before and after a run and divided by its events.

use diesel::prelude::*;
use diesel::sql_types::BigInt;

/// The processes a run's cost is split across: the bench's own children by
/// pid, and servers it did not start (Postgres' backends, the broker) by
/// their command name. The server must be the bench's alone while it runs:
/// another database's backends would count too.
pub(crate) enum Process {
    Pid(&'static str, u32),
    Command(&'static str),
}

impl Process {
    fn name(&self) -> &'static str {
        match self {
            Self::Pid(name, _) | Self::Command(name) => name,
        }
    }

    /// CPU seconds so far of each process it stands for, by pid.
    fn cpu(&self) -> Cpu {
        let pids: Vec<u32> = match self {
            Self::Pid(_, pid) => vec![*pid],
            Self::Command(command) => std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim_end() == *command)
                })
                .collect(),
        };
        Cpu(pids
            .into_iter()
            .filter_map(|pid| Some((pid, cpu_seconds(pid)?)))
            .collect())
    }
}

/// CPU seconds by pid.
#[derive(Clone)]
pub(crate) struct Cpu(std::collections::HashMap<u32, f64>);

impl Cpu {
    /// What the processes spent since `before`. A process that ended in
    /// between is counted in its parent's reaped children (Postgres'
    /// backends and autovacuum workers in the postmaster's), and one that
    /// began in between from zero.
    fn since(&self, before: &Cpu) -> f64 {
        self.0
            .iter()
            .map(|(pid, now)| now - before.0.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

/// User and system CPU of a process and of its children it has reaped so
/// far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces, so split after its
    // closing parenthesis): utime, stime, cutime and cstime are the 12th
    // to 15th.
    let rest = stat.rsplit_once(')')?.1;
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|t| t.parse::<f64>().ok())
        .sum::<Option<f64>>()?;
    // In clock ticks of 1/100 s: USER_HZ, fixed at 100 in Linux's ABI on
    // the architectures the bench runs on.
    Some(ticks / 100.0)
}

/// CPU of each of `processes` so far: read while they run (a run's last
/// snapshot reads them before stopping them, then [`snapshot`]).
pub(crate) fn cpu(processes: &[Process]) -> Vec<(&'static str, Cpu)> {
    processes.iter().map(|p| (p.name(), p.cpu())).collect()
}

/// CPU seconds per process, and rows written and transactions committed
/// in one database, so far.
pub(crate) struct Usage {
    cpu: Vec<(&'static str, Cpu)>,
    row_writes: i64,
    commits: i64,
    /// Row writes by table (the schema's tables, the mirror's too).
    tables: std::collections::HashMap<String, i64>,
    /// The server's write-ahead log, all databases: bytes, full-page
    /// images (a page's first change after a checkpoint is logged whole),
    /// and checkpoints begun.
    wal: Wal,
}

#[derive(QueryableByName, Clone, Copy)]
struct Wal {
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = BigInt)]
    full_pages: i64,
    #[diesel(sql_type = BigInt)]
    checkpoints: i64,
}

/// `cpu` and the rows `conn`'s database has written. A backend reports
/// its counts when it ends, and otherwise at most once a second, or 10 s
/// after it went idle, so a run's last snapshot is taken once the
/// processes whose backends wrote have stopped.
pub(crate) fn snapshot(
    conn: &mut PgConnection,
    cpu: Vec<(&'static str, Cpu)>,
) -> anyhow::Result<Usage> {
    #[derive(QueryableByName)]
    struct Counts {
        #[diesel(sql_type = BigInt)]
        writes: i64,
        #[diesel(sql_type = BigInt)]
        commits: i64,
    }
    // A fresh read of the statistics, not the transaction's cached one.
    diesel::sql_query("SELECT pg_stat_clear_snapshot()").execute(conn)?;
    let counts = diesel::sql_query(
        "SELECT (tup_inserted + tup_updated + tup_deleted)::bigint AS writes, \
         xact_commit AS commits FROM pg_stat_database WHERE datname = current_database()",
    )
    .get_result::<Counts>(conn)?;
    #[derive(QueryableByName)]
    struct Table {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = BigInt)]
        writes: i64,
    }
    let tables = diesel::sql_query(
        "SELECT schemaname || '.' || relname AS name, \
         (n_tup_ins + n_tup_upd + n_tup_del)::bigint AS writes FROM pg_stat_user_tables",
    )
    .load::<Table>(conn)?
    .into_iter()
    .map(|t| (t.name, t.writes))
    .collect();
    // PostgreSQL 17 moved the checkpoint counts to their own view.
    let checkpoints = if server_version(conn)? >= 170_000 {
        "SELECT (num_timed + num_requested)::bigint FROM pg_stat_checkpointer"
    } else {
        "SELECT (checkpoints_timed + checkpoints_req)::bigint FROM pg_stat_bgwriter"
    };
    let wal = diesel::sql_query(format!(
        "SELECT wal_bytes::bigint AS bytes, wal_fpi AS full_pages, ({checkpoints}) AS checkpoints \
         FROM pg_stat_wal"
    ))
    .get_result::<Wal>(conn)?;
    Ok(Usage {
        tables,
        wal,
        cpu,
        row_writes: counts.writes,
        commits: counts.commits,
    })
}

fn server_version(conn: &mut PgConnection) -> QueryResult<i32> {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        number: i32,
    }
    diesel::sql_query("SELECT current_setting('server_version_num')::int AS number")
        .get_result::<Version>(conn)
        .map(|v| v.number)
}

/// Waits until the backends of processes just stopped have ended and
/// reported their counts (Postgres notices a closed connection at once).
pub(crate) async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
}

/// What one event cost between two snapshots.
pub(crate) struct Cost {
    /// CPU microseconds per event, by process.
    pub(crate) cpu_us: Vec<(&'static str, f64)>,
    pub(crate) row_writes: f64,
    /// Transactions committed in all (not per event).
    pub(crate) transactions: i64,
    /// Row writes per event by table, most first (tables written at all).
    pub(crate) by_table: Vec<(String, f64)>,
    /// Write-ahead log bytes and full-page images per event, and the
    /// checkpoints begun during the run.
    pub(crate) wal_bytes: f64,
    pub(crate) wal_full_pages: f64,
    pub(crate) checkpoints: i64,
}

impl Cost {
    pub(crate) fn between(before: &Usage, after: &Usage, events: u64) -> Self {
        let events = events.max(1) as f64;
        Self {
            cpu_us: before
                .cpu
                .iter()
                .zip(&after.cpu)
                .map(|((name, b), (_, a))| (*name, a.since(b) * 1e6 / events))
                .collect(),
            row_writes: (after.row_writes - before.row_writes) as f64 / events,
            transactions: after.commits - before.commits,
            wal_bytes: (after.wal.bytes - before.wal.bytes) as f64 / events,
            wal_full_pages: (after.wal.full_pages - before.wal.full_pages) as f64 / events,
            checkpoints: after.wal.checkpoints - before.wal.checkpoints,
            by_table: {
                let mut by_table: Vec<(String, f64)> = after
                    .tables
                    .iter()
                    .map(|(name, a)| {
                        let b = before.tables.get(name).copied().unwrap_or(0);
                        (name.clone(), (a - b) as f64 / events)
                    })
                    .filter(|(_, per_event)| *per_event > 0.0)
                    .collect();
                by_table.sort_by(|a, b| b.1.total_cmp(&a.1));
                by_table
            },
        }
    }

    /// One line for the log: CPU by process, row writes in all and by table.
    pub(crate) fn summary(&self) -> String {
        let cpu: Vec<String> = self
            .cpu_us
            .iter()
            .map(|(name, us)| format!("{name} {us:.0} µs"))
            .collect();
        let tables: Vec<String> = self
            .by_table
            .iter()
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        format!(
            "CPU per event: {}; {:.2} row writes per event ({}); WAL {:.0} bytes and {:.2} full pages per event, {} checkpoint(s) begun",
            cpu.join(", "),
            self.row_writes,
            tables.join(", "),
            self.wal_bytes,
            self.wal_full_pages,
            self.checkpoints
        )
    }
}
