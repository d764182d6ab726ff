//! The `export` and `notifications` commands: what they print.

use std::path::Path;

use anyhow::Context;
use diesel::PgConnection;

use super::export::{self, ExportSpec};
use super::notifications::{self, RetryError};
use crate::ops::table;

/// Runs the paid sessions export into `dir` and says what it did.
pub fn export_paid_sessions(
    conn: &mut PgConnection,
    spec: &ExportSpec,
    dir: &Path,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = None;
    let done = export::run(conn, spec, |sessions, _| {
        written = Some(export::write_file(dir, sessions)?);
        Ok(())
    })?;
    Ok(match written {
        Some(path) => format!(
            "exported {} paid session(s) to {}",
            done.sessions.len(),
            path.display()
        ),
        None => format!("no new paid sessions for export {:?}", spec.name),
    })
}

/// `notifications list`: a table, or JSON lines.
pub fn list(
    conn: &mut PgConnection,
    status: Option<&str>,
    limit: i64,
    as_json: bool,
) -> anyhow::Result<String> {
    let status = status
        .map(str::parse::<notifications::NotificationStatus>)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let rows = notifications::list(conn, status, limit)?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&rows)?);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.status.to_string(),
                n.order_key.clone(),
                n.account.to_string(),
                n.attempts.to_string(),
                n.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                n.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Ok(table(
        &[
            "ID",
            "STATUS",
            "ORDER",
            "ACCOUNT",
            "ATTEMPTS",
            "CREATED",
            "LAST ERROR",
        ],
        &cells,
    ))
}

/// `notifications retry ID`.
pub fn retry(conn: &mut PgConnection, id: i64) -> anyhow::Result<String> {
    match notifications::retry(conn, id) {
        Ok(n) => Ok(format!(
            "notification {} ({}) queued again; the notifier sends it shortly",
            n.id, n.order_key
        )),
        Err(
            e @ (RetryError::NotFound(_)
            | RetryError::AlreadySent(_)
            | RetryError::BeingSent { .. }),
        ) => Err(e.into()),
        Err(RetryError::Database(e)) => Err(e).context("cannot queue the notification again"),
        Err(RetryError::Unavailable(e)) => Err(e).context("cannot queue the notification again"),
    }
}
