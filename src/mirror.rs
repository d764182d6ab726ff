//! Reading the Stripe mirror for tools that do not speak SQL
//! (`GET /api/stripe/{relation}`): equality filters on typed columns,
//! ranges on times and amounts, keyset pagination with an opaque cursor.
//! Every relation and filter comes from the [`registry`]; nothing a caller
//! sends reaches the SQL text but as a bound value, and no value reaches
//! Postgres that Postgres would refuse: a refusal there is an error the
//! caller caused, and must not come back as an outage. Each read runs in a
//! read-only transaction with its own statement timeout.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;
use serde_json::Value;

use crate::registry::{self, Column, ColumnKind, Resource};
use crate::stripe::AccountId;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// The earliest time a filter takes, 0000-01-01T00:00:00Z in unix seconds.
/// Filters take the times RFC 3339 can write (years 0000 to 9999), in
/// either form. Postgres reaches further (4713 BC to 294276 AD) but refuses
/// what lies beyond, and within its range a time past year 9999 is a
/// mistake (milliseconds sent as seconds) better refused than answered
/// with an empty page.
pub const MIN_TIME: i64 = -62_167_219_200;
/// The latest: 9999-12-31T23:59:59Z.
pub const MAX_TIME: i64 = 253_402_300_799;

/// A relation of the mirror: a type's or a child list's.
#[derive(Debug, Clone, Copy)]
pub struct Relation {
    pub name: &'static str,
    /// For a child list: the column naming its parent (part of its key).
    pub parent_column: Option<&'static str>,
    pub columns: &'static [Column],
}

impl Relation {
    pub fn find(name: &str) -> Option<Self> {
        if let Some(r) = registry::by_relation(name) {
            return Some(Self::of(r));
        }
        registry::child_by_relation(name).map(|(_, c)| Self {
            name: c.relation,
            parent_column: Some(c.parent_column),
            columns: c.columns,
        })
    }

    fn of(r: &'static Resource) -> Self {
        Self {
            name: r.relation,
            parent_column: None,
            columns: r.columns,
        }
    }

    /// The key columns, in the order rows are listed.
    fn key(&self) -> Vec<&'static str> {
        match self.parent_column {
            Some(parent) => vec!["account", parent, "id"],
            None => vec!["account", "id"],
        }
    }
}

use crate::input;
pub use crate::input::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            Self::Lte => "<=",
        }
    }
}

/// A filter's value, checked against its column's kind.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Text(String),
    Int(i64),
    Bool(bool),
    Time(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    column: &'static str,
    op: Op,
    value: Operand,
}

/// A parsed `GET /api/stripe/{relation}` request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    relation: Relation,
    limit: i64,
    after: Option<Vec<String>>,
    include_deleted: bool,
    filters: Vec<Filter>,
}

impl ListQuery {
    /// Parses the query string: `limit`, `cursor`, `include_deleted`,
    /// `account`, the parent column of a child list, `col=value` on a typed
    /// column, and `col[gt|gte|lt|lte]=value` on time and integer columns
    /// (times as unix seconds or RFC 3339). Anything else is refused.
    pub fn parse(relation: Relation, raw: &str) -> Result<Self, Invalid> {
        let pairs = query_pairs(raw)?;
        let mut q = Self {
            relation,
            limit: DEFAULT_LIMIT,
            after: None,
            include_deleted: false,
            filters: Vec::new(),
        };
        for (name, value) in pairs {
            match name.as_str() {
                "limit" => q.limit = input::limit(Some(&value), DEFAULT_LIMIT, MAX_LIMIT)?,
                "cursor" => q.after = Some(decode_cursor(&value, relation.key().len())?),
                "include_deleted" => q.include_deleted = parse_bool(&name, &value)?,
                _ => q.filters.push(filter(relation, &name, value)?),
            }
        }
        Ok(q)
    }
}

/// The query string's parameters, decoded as a form is (`+` is a space,
/// then percent-decoding), each name and value refused unless it is UTF-8
/// without NUL. serde_urlencoded would turn bytes that are not UTF-8 into
/// U+FFFD, a filter on a value nobody sent, and pass NUL on to Postgres,
/// which refuses it in text. A value's fault names its parameter; a name's
/// fault names it as it was sent, the only spelling of it the caller has.
fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, Invalid> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(raw_name).ok_or_else(|| {
                Invalid::new(
                    raw_name,
                    "parameter names must be UTF-8 without NUL once percent-decoded",
                )
            })?;
            let value = form_decode(raw_value).ok_or_else(|| {
                Invalid::new(&name, "must be UTF-8 without NUL once percent-decoded")
            })?;
            Ok((name, value))
        })
        .collect()
}

/// One `application/x-www-form-urlencoded` name or value, or `None` when it
/// decodes to bytes that are not UTF-8 or to a NUL.
fn form_decode(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .filter(|s| !s.contains('\0'))
        .map(|s| s.into_owned())
}

/// `platform` or an `acct_…` id: the only values the `account` column holds.
fn parse_account(field: &str, raw: &str) -> Result<AccountId, Invalid> {
    AccountId::parse(raw).map_err(|_| Invalid::new(field, "must be platform or an acct_… id"))
}

/// A parsed `GET /api/stripe/{relation}/{id}` request.
#[derive(Debug, Clone)]
pub struct GetQuery {
    relation: Relation,
    account: AccountId,
    id: String,
}

impl GetQuery {
    /// `id` is the path segment as sent; it is percent-decoded (warp hands
    /// segments over as they came) and must be UTF-8 without NUL. The query
    /// takes `account` only, the platform by default.
    pub fn parse(relation: Relation, id: &str, raw_query: &str) -> Result<Self, Invalid> {
        let id = percent_encoding::percent_decode_str(id)
            .decode_utf8()
            .ok()
            .filter(|s| !s.contains('\0'))
            .ok_or_else(|| Invalid::new("id", "must be UTF-8 without NUL once percent-decoded"))?
            .into_owned();
        let mut account = AccountId::PLATFORM;
        for (name, value) in query_pairs(raw_query)? {
            if name != "account" {
                return Err(Invalid::new(&name, "the only parameter here is account"));
            }
            account = parse_account(&name, &value)?;
        }
        Ok(Self {
            relation,
            account,
            id,
        })
    }
}

fn parse_bool(field: &str, raw: &str) -> Result<bool, Invalid> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Invalid::new(field, "must be true or false")),
    }
}

/// A time filter's value as whole unix seconds. Stripe's times are whole
/// seconds, so a time between two seconds is rounded to the one that keeps
/// the comparison's meaning: up for `[lt]` and `[gte]`, down for `[gt]` and
/// `[lte]`; an exact match on it matches nothing, and is refused.
fn parse_time(field: &str, raw: &str, op: Op) -> Result<i64, Invalid> {
    let out_of_range = || {
        Invalid::new(
            field,
            format!(
                "must be unix seconds from {MIN_TIME} to {MAX_TIME}, or an RFC 3339 time \
                 from 0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
            ),
        )
    };
    // `timestamp` is the second at or before the time.
    let (seconds, between) = match raw.parse::<i64>() {
        Ok(seconds) => (seconds, false),
        Err(_) => {
            let t = chrono::DateTime::parse_from_rfc3339(raw).map_err(|_| out_of_range())?;
            (t.timestamp(), t.timestamp_subsec_nanos() > 0)
        }
    };
    if !(MIN_TIME..=MAX_TIME).contains(&seconds) {
        return Err(out_of_range());
    }
    // One past MAX_TIME is still far inside Postgres's timestamptz range.
    match op {
        Op::Eq if between => Err(Invalid::new(
            field,
            "an exact time is a whole second (Stripe's times have no fraction)",
        )),
        Op::Lt | Op::Gte if between => Ok(seconds + 1),
        _ => Ok(seconds),
    }
}

fn filter(relation: Relation, name: &str, raw: String) -> Result<Filter, Invalid> {
    let (column, op) = match name.split_once('[') {
        Some((column, rest)) => {
            let op = match rest {
                "gt]" => Op::Gt,
                "gte]" => Op::Gte,
                "lt]" => Op::Lt,
                "lte]" => Op::Lte,
                _ => return Err(Invalid::new(name, "ranges are [gt], [gte], [lt] or [lte]")),
            };
            (column, op)
        }
        None => (name, Op::Eq),
    };
    // The key's own text columns.
    if column == "account" || Some(column) == relation.parent_column {
        if op != Op::Eq {
            return Err(Invalid::new(name, "takes an exact value"));
        }
        return Ok(if column == "account" {
            Filter {
                column: "account",
                op,
                value: Operand::Text(parse_account(name, &raw)?.to_string()),
            }
        } else {
            Filter {
                column: relation.parent_column.expect("matched the parent column"),
                op,
                value: Operand::Text(raw),
            }
        });
    }
    let col = relation
        .columns
        .iter()
        .find(|c| c.name == column)
        .ok_or_else(|| {
            let names: Vec<&str> = relation.columns.iter().map(|c| c.name).collect();
            Invalid::new(
                name,
                format!(
                    "not a filter of stripe.{}; filters: account, {}",
                    relation.name,
                    names.join(", ")
                ),
            )
        })?;
    let ranged = matches!(col.kind, ColumnKind::Time | ColumnKind::Int);
    if op != Op::Eq && !ranged {
        return Err(Invalid::new(
            name,
            "ranges apply to time and integer columns",
        ));
    }
    let value = match col.kind {
        ColumnKind::Text | ColumnKind::Ref => Operand::Text(raw),
        ColumnKind::Bool => Operand::Bool(parse_bool(name, &raw)?),
        ColumnKind::Int => Operand::Int(
            raw.parse()
                .map_err(|_| Invalid::new(name, "must be an integer"))?,
        ),
        ColumnKind::Time => Operand::Time(parse_time(name, &raw, op)?),
    };
    Ok(Filter {
        column: col.name,
        op,
        value,
    })
}

/// The cursor is the last row's key as hex-encoded JSON (as the customers
/// list encodes its own): opaque to callers.
fn encode_cursor(key: &[String]) -> String {
    hex::encode(serde_json::to_vec(key).expect("strings serialise"))
}

/// Refuses what no page returned: the wrong number of parts, or a part
/// with NUL (JSON can carry one, Postgres text cannot).
fn decode_cursor(raw: &str, parts: usize) -> Result<Vec<String>, Invalid> {
    hex::decode(raw)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
        .filter(|key| key.len() == parts && !key.iter().any(|k| k.contains('\0')))
        .ok_or_else(|| Invalid::new("cursor", "is not a cursor this API returned"))
}

/// Why a read of the mirror failed. Every value a caller sends is checked
/// before it gets here, so what remains is Postgres's side: the read ran
/// out of time, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Postgres cancelled the read at its statement timeout: a filter that
    /// scans a large relation, or a lock held elsewhere.
    #[error("the read was cancelled at its statement timeout of {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the database failed the read: {0}")]
    Database(#[from] DieselError),
    /// No database connection (pool exhausted, database down).
    #[error(transparent)]
    Unavailable(#[from] crate::db::Unavailable),
}

/// Runs `read` in a read-only transaction whose statement timeout is
/// `timeout`. `SET LOCAL` ends with the transaction, so the pool's
/// connections stay unbounded for every other path.
fn bounded<T>(
    conn: &mut PgConnection,
    timeout: Duration,
    read: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> Result<T, ReadError> {
    conn.build_transaction().read_only().run(|conn| {
        // SET takes no bind parameters; the number is the configuration's.
        // No lock_timeout of the database's or role's own applies: a lock
        // wait is bounded by the same budget and answered as a timeout.
        conn.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = 0",
            timeout.as_millis()
        ))?;
        let started = Instant::now();
        read(conn).map_err(|e| classify(e, started.elapsed(), timeout))
    })
}

/// How late after its budget a cancelled statement's error may arrive and
/// still be the budget's.
const CANCEL_SLACK: Duration = Duration::from_secs(1);

/// A statement timeout is SQLSTATE 57014, but diesel reports it as an
/// unknown database error with no SQLSTATE, and its message text follows
/// the server's `lc_messages`. The clock does not: an error from a server
/// still talking to us, for a statement that ran the whole budget, is the
/// budget running out (Postgres cancels at it, so nothing else lasts that
/// long and fails).
fn classify(e: DieselError, elapsed: Duration, timeout: Duration) -> ReadError {
    match &e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => ReadError::Database(e),
        // Postgres cancels at its next interrupt check, soon after the
        // budget: an error long after it (a storage failure that held the
        // statement up) is the database's, not the budget's.
        DieselError::DatabaseError(..)
            if elapsed >= timeout && elapsed < timeout + CANCEL_SLACK =>
        {
            ReadError::Timeout(timeout)
        }
        _ => ReadError::Database(e),
    }
}

/// One page of a relation.
#[derive(Debug, Serialize)]
pub struct Page {
    pub object: &'static str,
    pub data: Vec<Value>,
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(QueryableByName)]
struct Listed {
    /// The row as JSON text, built by Postgres.
    #[diesel(sql_type = Text)]
    listed: String,
    #[diesel(sql_type = diesel::sql_types::Array<Text>)]
    key: Vec<String>,
}

fn select(relation: Relation) -> String {
    let parent = relation
        .parent_column
        .map(|p| format!(", '{p}', \"{p}\""))
        .unwrap_or_default();
    let key: Vec<String> = relation.key().iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "SELECT jsonb_build_object('account', account, 'id', id, 'deleted', deleted, \
           'synced_at', synced_at, 'data', data{parent})::text AS listed, \
           ARRAY[{}]::text[] AS key FROM stripe.\"{}\"",
        key.join(", "),
        relation.name
    )
}

/// Lists a page, in key order: account, the parent for a child list, id,
/// within `timeout`.
pub fn list(conn: &mut PgConnection, q: &ListQuery, timeout: Duration) -> Result<Page, ReadError> {
    let mut sql = select(q.relation);
    let mut conditions: Vec<String> = Vec::new();
    let mut binds: Vec<Operand> = Vec::new();
    if !q.include_deleted {
        conditions.push("NOT deleted".into());
    }
    for f in &q.filters {
        binds.push(f.value.clone());
        let n = binds.len();
        let param = match f.value {
            Operand::Text(_) => format!("${n}"),
            Operand::Int(_) => format!("${n}::bigint"),
            Operand::Bool(_) => format!("${n}::boolean"),
            Operand::Time(_) => format!("to_timestamp(${n}::bigint)"),
        };
        conditions.push(format!("\"{}\" {} {param}", f.column, f.op.sql()));
    }
    let key = q.relation.key();
    if let Some(after) = &q.after {
        let first = binds.len() + 1;
        let params: Vec<String> = (0..key.len()).map(|i| format!("${}", first + i)).collect();
        let columns: Vec<String> = key.iter().map(|k| format!("\"{k}\"")).collect();
        conditions.push(format!(
            "({}) > ({})",
            columns.join(", "),
            params.join(", ")
        ));
        binds.extend(after.iter().cloned().map(Operand::Text));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let order: Vec<String> = key.iter().map(|k| format!("\"{k}\"")).collect();
    sql.push_str(&format!(
        " ORDER BY {} LIMIT {}",
        order.join(", "),
        q.limit + 1
    ));

    let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
    for value in binds {
        query = match value {
            Operand::Text(v) => query.bind::<Text, _>(v),
            Operand::Int(v) | Operand::Time(v) => query.bind::<BigInt, _>(v),
            Operand::Bool(v) => query.bind::<Text, _>(v.to_string()),
        };
    }
    let mut rows: Vec<Listed> = bounded(conn, timeout, |conn| query.load(conn))?;
    let has_more = rows.len() as i64 > q.limit;
    rows.truncate(q.limit as usize);
    Ok(Page {
        object: "list",
        next_cursor: has_more
            .then(|| rows.last().map(|r| encode_cursor(&r.key)))
            .flatten(),
        has_more,
        data: rows.iter().map(|r| parse_row(&r.listed)).collect(),
    })
}

fn parse_row(row: &str) -> Value {
    serde_json::from_str(row).expect("Postgres builds valid JSON")
}

/// One object by id on its account (for a child list, the first match by
/// parent), within `timeout`.
pub fn get(
    conn: &mut PgConnection,
    q: &GetQuery,
    timeout: Duration,
) -> Result<Option<Value>, ReadError> {
    let relation = q.relation;
    let sql = format!(
        "{} WHERE account = $1 AND id = $2 ORDER BY {} LIMIT 1",
        select(relation),
        relation
            .key()
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row: Option<Listed> = bounded(conn, timeout, |conn| {
        diesel::sql_query(sql)
            .bind::<Text, _>(&q.account)
            .bind::<Text, _>(&q.id)
            .get_result(conn)
            .optional()
    })?;
    Ok(row.map(|r| parse_row(&r.listed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Relation {
        Relation::find("prices").unwrap()
    }

    #[test]
    fn filters_follow_the_registry() {
        let q = ListQuery::parse(
            prices(),
            "product=prod_1&active=true&created[gte]=2026-01-01T00:00:00Z&unit_amount[lt]=500&limit=5",
        )
        .unwrap();
        assert_eq!(q.limit, 5);
        assert_eq!(q.filters.len(), 4);
        assert_eq!(q.filters[2].value, Operand::Time(1_767_225_600));
        assert_eq!(q.filters[3].op, Op::Lt);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        for (query, field) in [
            ("nickname=x", "nickname"),
            ("active=yes", "active"),
            ("product[gt]=prod_1", "product[gt]"),
            ("created[gte]=yesterday", "created[gte]"),
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("cursor=garbage", "cursor"),
            ("unit_amount=ten", "unit_amount"),
            ("created[between]=1", "created[between]"),
        ] {
            let err = ListQuery::parse(prices(), query).unwrap_err();
            assert_eq!(err.field, field, "{query}: {err:?}");
        }
    }

    #[test]
    fn values_postgres_would_refuse_are_refused_here_naming_the_parameter() {
        let nul_cursor = hex::encode(serde_json::to_vec(&["platform", "a\0"]).unwrap());
        for (query, field) in [
            ("created[gt]=10000000000000", "created[gt]"),
            ("created[gt]=-99999999999999", "created[gt]"),
            ("created=253402300800", "created"),
            ("created[lte]=-62167219201", "created[lte]"),
            ("created[lt]=9999-12-31T23:59:59-01:00", "created[lt]"),
            ("created[gt]=0000-01-01T00:00:00%2B01:00", "created[gt]"),
            ("unit_amount=9223372036854775808", "unit_amount"),
            ("product=%00", "product"),
            ("product=a%00b", "product"),
            ("product=%FF", "product"),
            ("product=%E2%82", "product"),
            ("currency=%C0%80", "currency"),
            ("limit=%FF", "limit"),
            ("account=%00", "account"),
            ("account=", "account"),
            ("account=acct_", "account"),
            ("account=acct_1%20x", "account"),
            ("%FF=1", "%FF"),
            ("a%00b=1", "a%00b"),
            ("cursor=%00", "cursor"),
        ] {
            let err = ListQuery::parse(prices(), query).unwrap_err();
            assert_eq!(err.field, field, "{query}: {err:?}");
        }
        assert_eq!(
            ListQuery::parse(prices(), &format!("cursor={nul_cursor}"))
                .unwrap_err()
                .field,
            "cursor"
        );
        let lines = Relation::find("invoice_line_items").unwrap();
        assert_eq!(
            ListQuery::parse(lines, "invoice=in_%00").unwrap_err().field,
            "invoice"
        );
    }

    /// Stripe's times are whole seconds: a time between two keeps the
    /// comparison's meaning (a row at 12:00:00 is before 12:00:00.5).
    #[test]
    fn a_time_between_seconds_rounds_the_way_its_comparison_means() {
        let at = 1_767_225_600; // 2026-01-01T00:00:00Z
        let time =
            |query: &str| ListQuery::parse(prices(), query).map(|q| q.filters[0].value.clone());
        for (query, seconds) in [
            ("created[lt]=2026-01-01T00:00:00.5Z", at + 1),
            ("created[gte]=2026-01-01T00:00:00.5Z", at + 1),
            ("created[gt]=2026-01-01T00:00:00.5Z", at),
            ("created[lte]=2026-01-01T00:00:00.5Z", at),
            ("created[lt]=2026-01-01T00:00:00Z", at),
            ("created=2026-01-01T00:00:00Z", at),
            ("created[lt]=1969-12-31T23:59:59.5Z", 0),
            ("created[lt]=9999-12-31T23:59:59.5Z", MAX_TIME + 1),
        ] {
            assert_eq!(time(query), Ok(Operand::Time(seconds)), "{query}");
        }
        let e = time("created=2026-01-01T00:00:00.5Z").unwrap_err();
        assert_eq!(e.field, "created");
    }

    #[test]
    fn the_time_range_is_what_rfc_3339_writes() {
        let time = |query: &str| ListQuery::parse(prices(), query).unwrap().filters[0].clone();
        assert_eq!(
            time("created[gte]=-62167219200").value,
            Operand::Time(MIN_TIME)
        );
        assert_eq!(
            time("created[lte]=253402300799").value,
            Operand::Time(MAX_TIME)
        );
        assert_eq!(
            time("created[gte]=0000-01-01T00:00:00Z").value,
            Operand::Time(MIN_TIME)
        );
        assert_eq!(
            time("created[lte]=9999-12-31T23:59:59Z").value,
            Operand::Time(MAX_TIME)
        );
    }

    #[test]
    fn the_query_is_decoded_as_a_form() {
        let q = ListQuery::parse(
            prices(),
            "lookup_key=a+b%2Bc&&nickname_absent=&product=%E2%82%AC&account=acct_1Ab",
        );
        // An unknown parameter is still refused, by its decoded name.
        assert_eq!(q.unwrap_err().field, "nickname_absent");
        let q = ListQuery::parse(
            prices(),
            "lookup_key=a+b%2Bc&&product=%E2%82%AC&account=acct_1Ab",
        )
        .unwrap();
        let values: Vec<&Operand> = q.filters.iter().map(|f| &f.value).collect();
        assert_eq!(
            values,
            [
                &Operand::Text("a b+c".into()),
                &Operand::Text("€".into()),
                &Operand::Text("acct_1Ab".into()),
            ]
        );
    }

    #[test]
    fn one_object_takes_a_decoded_id_and_an_account() {
        let q = GetQuery::parse(prices(), "price%5F1", "").unwrap();
        assert_eq!((q.id.as_str(), q.account.as_str()), ("price_1", "platform"));
        let q = GetQuery::parse(prices(), "price_1", "account=acct_9").unwrap();
        assert_eq!(q.account.as_str(), "acct_9");
        for (id, query, field) in [
            ("price_%00", "", "id"),
            ("price_%FF", "", "id"),
            ("price_1", "account=%00", "account"),
            ("price_1", "account=nobody", "account"),
            ("price_1", "limit=1", "limit"),
            ("price_1", "acc%00ount=platform", "acc%00ount"),
        ] {
            let err = GetQuery::parse(prices(), id, query).unwrap_err();
            assert_eq!(err.field, field, "{id}?{query}: {err:?}");
        }
    }

    #[test]
    fn only_a_read_that_ran_its_whole_budget_is_a_timeout() {
        let budget = Duration::from_millis(100);
        let failed = || {
            DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new("canceling statement due to statement timeout".to_owned()),
            )
        };
        assert!(matches!(
            classify(failed(), budget, budget),
            ReadError::Timeout(t) if t == budget
        ));
        assert!(matches!(
            classify(failed(), budget / 2, budget),
            ReadError::Database(_)
        ));
        // Long past the budget: a storage failure that held the statement.
        assert!(matches!(
            classify(failed(), budget + CANCEL_SLACK, budget),
            ReadError::Database(_)
        ));
        let closed = DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("server closed the connection".to_owned()),
        );
        assert!(matches!(
            classify(closed, budget * 2, budget),
            ReadError::Database(_)
        ));
        assert!(matches!(
            classify(DieselError::NotFound, budget * 2, budget),
            ReadError::Database(_)
        ));
    }

    #[test]
    fn cursors_round_trip_and_child_lists_filter_by_parent() {
        let key = vec!["platform".to_owned(), "in_1".to_owned(), "il_9".to_owned()];
        assert_eq!(decode_cursor(&encode_cursor(&key), 3).unwrap(), key);
        assert!(decode_cursor(&encode_cursor(&key), 2).is_err());
        let lines = Relation::find("invoice_line_items").unwrap();
        let q = ListQuery::parse(lines, "invoice=in_1").unwrap();
        assert_eq!(q.filters[0].column, "invoice");
        assert!(Relation::find("nope").is_none());
    }
}
