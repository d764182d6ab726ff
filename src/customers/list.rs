//! `GET /api/customers`: keyset pagination over `(created_at, id)` with an
//! opaque cursor, so pages stay stable while rows are added.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::input::{Email, Invalid};
use super::{sync_state, CustomerError, CustomerView};
use crate::customers::CustomerId;
use crate::db::models::Customer;
use crate::db::schema::customers;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// Raw query parameters; unknown ones are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub email: Option<String>,
    pub updated_since: Option<String>,
    pub include_deleted: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub limit: i64,
    pub after: Option<Cursor>,
    pub email: Option<Email>,
    pub updated_since: Option<DateTime<Utc>>,
    pub include_deleted: bool,
}

impl ListQuery {
    pub fn parse(p: ListParams) -> Result<Self, Invalid> {
        let limit = crate::input::limit(p.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
        Ok(Self {
            limit,
            after: p.cursor.as_deref().map(Cursor::decode).transpose()?,
            email: p.email.as_deref().map(Email::parse).transpose()?,
            updated_since: p
                .updated_since
                .as_deref()
                .map(|raw| {
                    DateTime::parse_from_rfc3339(raw)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| {
                            Invalid::new(
                                "updated_since",
                                "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z",
                            )
                        })
                })
                .transpose()?,
            include_deleted: match p.include_deleted.as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err(Invalid::new("include_deleted", "must be true or false")),
            },
        })
    }
}

/// Position after the last row of a page. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    created_at_micros: i64,
    id: Uuid,
}

impl Cursor {
    /// The position just after the row created at `at` with `id`.
    pub fn after(at: DateTime<Utc>, id: Uuid) -> Self {
        Self {
            created_at_micros: at.timestamp_micros(),
            id,
        }
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_micros(self.created_at_micros).unwrap_or_default()
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn encode(&self) -> String {
        hex::encode(format!("{}.{}", self.created_at_micros, self.id))
    }

    pub fn decode(raw: &str) -> Result<Self, Invalid> {
        let invalid = || Invalid::new("cursor", "is not a cursor this API returned");
        let text = hex::decode(raw)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(invalid)?;
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            created_at_micros: micros.parse().map_err(|_| invalid())?,
            id: id.parse().map_err(|_| invalid())?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub data: Vec<CustomerView>,
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

pub fn list(conn: &mut PgConnection, q: &ListQuery) -> Result<Page, CustomerError> {
    let mut query = customers::table.select(Customer::as_select()).into_boxed();
    if let Some(after) = &q.after {
        let ts = after.created_at();
        query = query.filter(
            customers::created_at
                .gt(ts)
                .or(customers::created_at.eq(ts).and(customers::id.gt(after.id))),
        );
    }
    if let Some(email) = &q.email {
        query = query.filter(customers::email.eq(email.as_str().to_owned()));
    }
    if let Some(since) = q.updated_since {
        query = query.filter(customers::updated_at.ge(since));
    }
    if !q.include_deleted {
        query = query.filter(customers::deleted_at.is_null());
    }
    let mut rows: Vec<Customer> = query
        .order((customers::created_at.asc(), customers::id.asc()))
        .limit(q.limit + 1)
        .load(conn)?;
    let has_more = rows.len() as i64 > q.limit;
    rows.truncate(q.limit as usize);
    let next_cursor = has_more
        .then(|| rows.last())
        .flatten()
        .map(|last| Cursor::after(last.created_at, last.id.as_uuid()).encode());
    let ids: Vec<CustomerId> = rows.iter().map(|r| r.id).collect();
    let mut states = sync_state::for_customers(conn, &ids)?;
    let data = rows
        .into_iter()
        .map(|r| {
            let sync = states.remove(&r.id).unwrap_or_default();
            CustomerView::new(r, sync)
        })
        .collect();
    Ok(Page {
        data,
        has_more,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at_micros: 1_700_000_000_123_456,
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "zz", &hex::encode("nodot"), &hex::encode("1.notauuid")] {
            assert_eq!(Cursor::decode(bad).unwrap_err().field, "cursor");
        }
    }

    #[test]
    fn params_are_checked() {
        let parse = |p: ListParams| ListQuery::parse(p).map_err(|e| e.field);
        assert_eq!(parse(ListParams::default()).unwrap().limit, DEFAULT_LIMIT);
        for (limit, ok) in [
            ("1", true),
            ("100", true),
            ("0", false),
            ("101", false),
            ("x", false),
        ] {
            let r = parse(ListParams {
                limit: Some(limit.into()),
                ..Default::default()
            });
            assert_eq!(r.is_ok(), ok, "{limit}");
        }
        assert_eq!(
            parse(ListParams {
                updated_since: Some("yesterday".into()),
                ..Default::default()
            })
            .unwrap_err(),
            "updated_since"
        );
        assert_eq!(
            parse(ListParams {
                include_deleted: Some("yes".into()),
                ..Default::default()
            })
            .unwrap_err(),
            "include_deleted"
        );
    }
}
