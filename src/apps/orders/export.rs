//! The paid sessions export: checkout sessions that became paid since an
//! export's last run, read from the mirror (never from Stripe).
//!
//! The order is the one in which the mirror saw sessions *become* paid
//! (`orders.paid_sessions`, filled by a trigger on the mirror), so a
//! session created yesterday whose async payment succeeded today is in
//! today's export. Each export name keeps a watermark in `orders.exports`.
//! The file export moves it once the file is durably renamed into place,
//! inside the transaction that read the batch: a crash in between repeats
//! the batch, never skips it. The HTTP export never moves it on an
//! answer: it records the batch as pending before the answer is sent, and
//! moves the watermark only when a later call acknowledges that batch
//! (see [`super::batches`]). An advisory lock per name makes two
//! concurrent runs of one export take turns, so they never emit the same
//! sessions.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz};
use serde::Serialize;

use crate::db::schema::orders::exports;

/// What to export, and under which watermark.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// The watermark's name; one per consumer of the export.
    pub name: String,
    /// Only sessions of these payment links; every paid session if empty.
    pub payment_links: Vec<String>,
    /// Only sessions created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many paid sessions are looked at per run (the rest
    /// wait for the next run); `None` for all.
    pub limit: Option<i64>,
}

pub const DEFAULT_NAME: &str = "default";

/// An export name's watermark and counters, as `orders.exports` holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable)]
#[diesel(table_name = exports, check_for_backend(diesel::pg::Pg))]
pub struct ExportState {
    pub name: String,
    /// The watermark: the position in `orders.paid_sessions` (transaction
    /// id, then sequence) of the last session exported.
    pub last_xid: i64,
    pub last_seq: i64,
    pub runs: i64,
    pub delivered: i64,
    /// When the watermark last moved (the last run that moved it).
    pub updated_at: DateTime<Utc>,
}

/// Every export name, by name.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<ExportState>> {
    exports::table
        .order(exports::name)
        .select(ExportState::as_select())
        .load(conn)
}

/// A `since` as Postgres stores it (`timestamptz` keeps microseconds): a
/// finer time given by a client would never compare equal to the one it
/// was stored as.
pub fn as_stored(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}
/// Per HTTP call, at most this many sessions (`has_more` says there are more).
pub const HTTP_DEFAULT_LIMIT: i64 = 1000;
pub const HTTP_MAX_LIMIT: i64 = 10_000;

/// An export name: 1–100 letters, digits, `-`, `_` or `.`.
pub fn valid_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not an export name: use 1-100 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// One exported session, as workflow tools receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
pub struct PaidSession {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub payment_link: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub amount_total: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub currency: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub customer_email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub customer_name: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    #[serde(serialize_with = "rfc3339")]
    pub created: Option<DateTime<Utc>>,
}

fn rfc3339<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => s.serialize_none(),
    }
}

/// A paid session this export wants, with its place in the paid order.
#[derive(QueryableByName)]
struct Wanted {
    #[diesel(sql_type = BigInt)]
    paid_xid: i64,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(embed)]
    session: PaidSession,
}

#[derive(QueryableByName)]
struct Horizon {
    #[diesel(sql_type = BigInt)]
    xmin: i64,
}

#[derive(QueryableByName)]
struct Watermark {
    #[diesel(sql_type = BigInt)]
    last_xid: i64,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub sessions: Vec<PaidSession>,
    /// More paid sessions wait beyond the run's limit.
    pub has_more: bool,
}

/// The paid sessions after a watermark, and where the watermark goes once
/// they are delivered.
pub(super) struct Next {
    pub sessions: Vec<PaidSession>,
    /// More paid sessions wait beyond the limit.
    pub has_more: bool,
    /// `None`: no settled paid session after the watermark at all.
    pub end: Option<(i64, i64)>,
}

/// Makes concurrent runs of one export take turns, until the transaction
/// ends. Taken before anything gives the transaction an id, so the
/// horizon in [`read_next`] is not held back by the export itself.
pub(super) fn lock(conn: &mut PgConnection, name: &str) -> QueryResult<()> {
    // Raw SQL: a call of Postgres's lock function, outside any table.
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('orders.exports:' || $1, 0))")
        .bind::<Text, _>(name)
        .execute(conn)
        .map(drop)
}

/// The export's watermark: the last `(paid_xid, seq)` delivered.
pub(super) fn watermark(conn: &mut PgConnection, name: &str) -> QueryResult<(i64, i64)> {
    let mark: Option<(i64, i64)> = exports::table
        .find(name)
        .select((exports::last_xid, exports::last_seq))
        .first(conn)
        .optional()?;
    Ok(mark.unwrap_or((0, 0)))
}

/// Reads the export's settled paid sessions after `from`, in a transaction
/// that has no id yet.
pub(super) fn read_next(
    conn: &mut PgConnection,
    spec: &ExportSpec,
    (last_xid, last_seq): (i64, i64),
) -> QueryResult<Next> {
    let horizon: Horizon = diesel::sql_query(HORIZON).get_result(conn)?;
    let wanted: Vec<Wanted> = diesel::sql_query(WANTED)
        .bind::<BigInt, _>(last_xid)
        .bind::<BigInt, _>(last_seq)
        .bind::<BigInt, _>(horizon.xmin)
        .bind::<Array<Text>, _>(&spec.payment_links)
        .bind::<Nullable<Timestamptz>, _>(spec.since)
        .bind::<BigInt, _>(spec.limit.map_or(i64::MAX, |l| l + 1))
        .load(conn)?;
    let has_more = spec.limit.is_some_and(|l| wanted.len() as i64 > l);
    let wanted = match spec.limit {
        Some(l) if has_more => &wanted[..l as usize],
        _ => &wanted[..],
    };
    // With more to come, up to the last session delivered; else past
    // every settled paid session, those of other payment links too
    // (they are not this export's).
    let end = match wanted.last() {
        Some(last) if has_more => Some((last.paid_xid, last.seq)),
        _ => diesel::sql_query(LAST_SETTLED)
            .bind::<BigInt, _>(last_xid)
            .bind::<BigInt, _>(last_seq)
            .bind::<BigInt, _>(horizon.xmin)
            .get_result::<Watermark>(conn)
            .optional()?
            .map(|m| (m.last_xid, m.last_seq)),
    };
    Ok(Next {
        sessions: wanted.iter().map(|w| w.session.clone()).collect(),
        has_more,
        end,
    })
}

/// Moves the watermark to `to`, counting `delivered` sessions.
pub(super) fn advance(
    conn: &mut PgConnection,
    name: &str,
    (to_xid, to_seq): (i64, i64),
    delivered: i64,
) -> QueryResult<()> {
    diesel::sql_query(ADVANCE)
        .bind::<Text, _>(name)
        .bind::<BigInt, _>(to_xid)
        .bind::<BigInt, _>(to_seq)
        .bind::<BigInt, _>(delivered)
        .execute(conn)
        .map(drop)
}

/// Runs one export: reads the paid sessions after the watermark, hands
/// them to `deliver` with whether more wait beyond the limit (not called
/// when there are none) and moves the watermark past them only if
/// `deliver` succeeded, all in one transaction. An error from `deliver`
/// leaves the watermark where it was. Refused while the HTTP export of the
/// same name has a batch pending: the two would deliver the same sessions.
pub fn run(
    conn: &mut PgConnection,
    spec: &ExportSpec,
    deliver: impl FnOnce(&[PaidSession], bool) -> anyhow::Result<()>,
) -> anyhow::Result<Exported> {
    conn.transaction(|conn| {
        lock(conn, &spec.name)?;
        if let Some(batch) = super::batches::pending_id(conn, &spec.name)? {
            anyhow::bail!(
                "export {:?} has HTTP batch {batch} pending (offered, not acknowledged yet); \
                 acknowledge it (POST /api/exports/paid-sessions/ack), or use another --name here",
                spec.name
            );
        }
        let from = watermark(conn, &spec.name)?;
        let next = read_next(conn, spec, from)?;
        let Some(end) = next.end else {
            return Ok(Exported {
                sessions: Vec::new(),
                has_more: false,
            });
        };
        if !next.sessions.is_empty() {
            deliver(&next.sessions, next.has_more)?;
        }
        advance(conn, &spec.name, end, next.sessions.len() as i64)?;
        Ok(Exported {
            sessions: next.sessions,
            has_more: next.has_more,
        })
    })
}

/// The oldest transaction still running in this database: every paid
/// session recorded by an older one is settled (committed or gone). A
/// transaction that recorded a session and has not committed yet holds
/// this back, so it cannot commit behind a watermark that has already
/// moved past it. Transactions of other databases on the cluster do not
/// count (`pg_snapshot_xmin` alone would let any long writer anywhere hold
/// every export back): the snapshot's in-progress ids are matched, by their
/// low 32 bits, with this database's backends and prepared transactions.
/// Ids from `xmax` on are in progress by definition. Taken while this
/// transaction has no id of its own.
const HORIZON: &str = "\
WITH snap AS (SELECT pg_current_snapshot() AS s),
ours AS (
    SELECT backend_xid::text::bigint AS xid32 FROM pg_stat_activity
    WHERE datname = current_database() AND backend_xid IS NOT NULL
    UNION ALL
    SELECT transaction::text::bigint FROM pg_prepared_xacts WHERE database = current_database()
)
SELECT LEAST(
    pg_snapshot_xmax(s)::text::bigint,
    (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s) x
     WHERE x::text::bigint % 4294967296 IN (SELECT xid32 FROM ours))
) AS xmin
FROM snap";

/// This export's settled paid sessions after the watermark, in the order
/// they became paid.
const WANTED: &str = "\
SELECT p.paid_xid, p.seq,
       s.id, s.payment_link, s.amount_total, s.currency,
       COALESCE(NULLIF(s.customer_email, ''), s.customer_details_email) AS customer_email,
       COALESCE(NULLIF(s.data->>'customer_name', ''), s.data->'customer_details'->>'name') AS customer_name,
       s.created
FROM orders.paid_sessions p
JOIN stripe.checkout_sessions s ON s.account = p.account AND s.id = p.session_id
WHERE (p.paid_xid, p.seq) > ($1, $2) AND p.paid_xid < $3
  AND (cardinality($4::text[]) = 0 OR s.payment_link = ANY($4))
  AND ($5::timestamptz IS NULL OR s.created >= $5)
ORDER BY p.paid_xid, p.seq
LIMIT $6";

/// The last settled paid session after the watermark, whoever wants it.
const LAST_SETTLED: &str = "\
SELECT paid_xid AS last_xid, seq AS last_seq FROM orders.paid_sessions
WHERE (paid_xid, seq) > ($1, $2) AND paid_xid < $3
ORDER BY paid_xid DESC, seq DESC LIMIT 1";

const ADVANCE: &str = "\
INSERT INTO orders.exports AS e (name, last_xid, last_seq, runs, delivered)
VALUES ($1, $2, $3, 1, $4)
ON CONFLICT (name) DO UPDATE SET last_xid = $2, last_seq = $3, runs = e.runs + 1,
    delivered = e.delivered + $4, updated_at = now()";

/// `paid_sessions_YYYY-MM-DD_HH-MM-SS.json` for a run at `at` (UTC).
pub fn file_name(at: DateTime<Utc>) -> String {
    format!("paid_sessions_{}.json", at.format("%Y-%m-%d_%H-%M-%S"))
}

/// Writes `sessions` as a JSON array to `dir/file_name(now)`, durably: a
/// hidden temporary file is written and fsynced, then linked to its name
/// (which fails rather than replace a file already there) and the
/// directory fsynced. Readers never see a partial file. A name already
/// taken (a second run in the same second) waits for the next second, so
/// names stay in the documented form and sort in the order of the runs.
/// Returns the path.
pub fn write_file(dir: &Path, sessions: &[PaidSession]) -> anyhow::Result<PathBuf> {
    let temp = dir.join(format!(
        ".paid_sessions.{}.{:08x}.partial",
        std::process::id(),
        rand::random::<u32>()
    ));
    let body = serde_json::to_vec_pretty(sessions)?;
    let mut file =
        File::create(&temp).with_context(|| format!("failed to create {}", temp.display()))?;
    file.write_all(&body)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", temp.display()))?;
    let named = (0..5).find_map(|_| {
        let target = dir.join(file_name(Utc::now()));
        match fs::hard_link(&temp, &target) {
            Ok(()) => Some(Ok(target)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let into_second = Utc::now().timestamp_subsec_millis() as u64;
                std::thread::sleep(std::time::Duration::from_millis(
                    1000 - into_second.min(999),
                ));
                None
            }
            Err(e) => Some(Err(e).with_context(|| format!("failed to name {}", target.display()))),
        }
    });
    let named = named.unwrap_or_else(|| Err(anyhow::anyhow!("every file name was taken")));
    // The temporary name goes whatever happened; only a crash leaves it.
    let _ = fs::remove_file(&temp);
    let target = named?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to sync directory {}", dir.display()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_the_run_time_in_utc() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T09:05:07+01:00").unwrap();
        assert_eq!(
            file_name(at.with_timezone(&Utc)),
            "paid_sessions_2026-11-26_08-05-07.json"
        );
    }

    #[test]
    fn a_second_file_in_the_same_second_never_replaces_the_first() {
        let dir = std::env::temp_dir().join(format!("export-test-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        let at = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
        let one = PaidSession {
            id: "cs_1".into(),
            payment_link: None,
            amount_total: Some(100),
            currency: Some("usd".into()),
            customer_email: None,
            customer_name: None,
            created: Some(at),
        };
        let first = write_file(&dir, std::slice::from_ref(&one)).unwrap();
        let second = write_file(&dir, &[one.clone(), one]).unwrap();
        assert!(first < second, "names sort in the order of the runs");
        assert_ne!(first, second);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no partial file is left: {names:?}");
        let read = |p: &Path| {
            serde_json::from_slice::<Vec<serde_json::Value>>(&fs::read(p).unwrap()).unwrap()
        };
        assert_eq!(read(&first).len(), 1);
        assert_eq!(read(&second).len(), 2);
        assert_eq!(
            read(&first)[0]["created"],
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
