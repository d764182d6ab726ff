//! Reading the Stripe mirror for tools that do not speak SQL
//! (`GET /api/stripe/{relation}`): equality filters on typed columns,
//! ranges on times and amounts, keyset pagination with an opaque cursor.
//! Every relation and filter comes from the [`registry`]; nothing a caller
//! sends reaches the SQL text but as a bound value.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;
use serde_json::Value;

use crate::registry::{self, Column, ColumnKind, Resource};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

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

/// A query parameter the API refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

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
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| bad("query", format!("invalid query: {e}")))?;
        let mut q = Self {
            relation,
            limit: DEFAULT_LIMIT,
            after: None,
            include_deleted: false,
            filters: Vec::new(),
        };
        for (name, value) in pairs {
            match name.as_str() {
                "limit" => {
                    q.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
                        })?
                }
                "cursor" => q.after = Some(decode_cursor(&value, relation.key().len())?),
                "include_deleted" => q.include_deleted = parse_bool(&name, &value)?,
                _ => q.filters.push(filter(relation, &name, value)?),
            }
        }
        Ok(q)
    }
}

fn parse_bool(field: &str, raw: &str) -> Result<bool, Invalid> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(field, "must be true or false")),
    }
}

fn parse_time(field: &str, raw: &str) -> Result<i64, Invalid> {
    raw.parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .ok()
                .map(|t| t.timestamp())
        })
        .ok_or_else(|| bad(field, "must be unix seconds or an RFC 3339 time"))
}

fn filter(relation: Relation, name: &str, raw: String) -> Result<Filter, Invalid> {
    let (column, op) = match name.split_once('[') {
        Some((column, rest)) => {
            let op = match rest {
                "gt]" => Op::Gt,
                "gte]" => Op::Gte,
                "lt]" => Op::Lt,
                "lte]" => Op::Lte,
                _ => return Err(bad(name, "ranges are [gt], [gte], [lt] or [lte]")),
            };
            (column, op)
        }
        None => (name, Op::Eq),
    };
    // The key's own text columns.
    if column == "account" || Some(column) == relation.parent_column {
        if op != Op::Eq {
            return Err(bad(name, "takes an exact value"));
        }
        let column = if column == "account" {
            "account"
        } else {
            relation.parent_column.expect("matched the parent column")
        };
        return Ok(Filter {
            column,
            op,
            value: Operand::Text(raw),
        });
    }
    let col = relation
        .columns
        .iter()
        .find(|c| c.name == column)
        .ok_or_else(|| {
            let names: Vec<&str> = relation.columns.iter().map(|c| c.name).collect();
            bad(
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
        return Err(bad(name, "ranges apply to time and integer columns"));
    }
    let value = match col.kind {
        ColumnKind::Text | ColumnKind::Ref => Operand::Text(raw),
        ColumnKind::Bool => Operand::Bool(parse_bool(name, &raw)?),
        ColumnKind::Int => Operand::Int(raw.parse().map_err(|_| bad(name, "must be an integer"))?),
        ColumnKind::Time => Operand::Time(parse_time(name, &raw)?),
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

fn decode_cursor(raw: &str, parts: usize) -> Result<Vec<String>, Invalid> {
    hex::decode(raw)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
        .filter(|key| key.len() == parts)
        .ok_or_else(|| bad("cursor", "is not a cursor this API returned"))
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

/// Lists a page, in key order: account, the parent for a child list, id.
pub fn list(conn: &mut PgConnection, q: &ListQuery) -> QueryResult<Page> {
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
    let mut rows: Vec<Listed> = query.load(conn)?;
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

/// One object by id on `account` (for a child list, the first match by
/// parent).
pub fn get(
    conn: &mut PgConnection,
    relation: Relation,
    account: &str,
    id: &str,
) -> QueryResult<Option<Value>> {
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
    let row: Option<Listed> = diesel::sql_query(sql)
        .bind::<Text, _>(account)
        .bind::<Text, _>(id)
        .get_result(conn)
        .optional()?;
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
