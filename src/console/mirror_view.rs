//! The console's mirror pages: a relation's rows through the same query
//! engine and reader cap as `GET /api/stripe/{relation}`, and one object.

use warp::http::StatusCode;

use super::pages::*;
use super::session::Session;
use super::views::PageResult;
use super::{field, html, Console};
use crate::mirror::{self, ListQuery, Relation};
use crate::registry;

/// Typed columns shown as cells in the mirror's table.
const CELLS_SHOWN: usize = 4;

fn relation_names() -> Vec<&'static str> {
    registry::RESOURCES
        .iter()
        .flat_map(|r| std::iter::once(r.relation).chain(r.children.iter().map(|c| c.relation)))
        .collect()
}

pub(super) async fn list(c: &Console, s: &Session, query: &[(String, String)]) -> PageResult {
    let name = field(query, "relation").unwrap_or_default().to_owned();
    let mut page = MirrorPage {
        chrome: Chrome::new("Mirror", "mirror", &s.csrf),
        relations: options(&relation_names(), &name),
        relation: String::new(),
        fields: Vec::new(),
        limit: mirror::DEFAULT_LIMIT,
        shown: Vec::new(),
        rows: Vec::new(),
        next: None,
    };
    if name.is_empty() {
        return Ok(html(StatusCode::OK, &page));
    }
    let relation = relation_or_404(&name)?;
    // What reaches the engine: every non-empty field but the relation,
    // exactly as `GET /api/stripe/{relation}` would take it.
    let given: Vec<(String, String)> = query
        .iter()
        .filter(|(k, v)| k != "relation" && !v.trim().is_empty())
        .cloned()
        .collect();
    let raw = query_string(given.iter().map(|(k, v)| (k.as_str(), v.trim())));
    page.relation = relation.name.to_owned();
    page.limit = field(&given, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(mirror::DEFAULT_LIMIT);
    page.fields = relation
        .columns
        .iter()
        .map(|col| FieldView {
            name: col.name.to_owned(),
            kind: kind_name(col.kind),
            value: field(&given, col.name).unwrap_or_default().to_owned(),
        })
        .collect();
    page.shown = relation
        .columns
        .iter()
        .take(CELLS_SHOWN)
        .map(|c| c.name.to_owned())
        .collect();
    let list = match ListQuery::parse(relation, &raw) {
        Ok(q) => q,
        Err(e) => {
            page.chrome
                .problems
                .push(format!("{}: {}", e.field, e.message));
            return Ok(html(StatusCode::BAD_REQUEST, &page));
        }
    };
    let read = crate::http::mirror::read(
        c.pool.clone(),
        c.readers.clone(),
        relation,
        c.mirror_timeout,
        move |conn, timeout| mirror::list(conn, &list, timeout),
    )
    .await;
    let listed = match read {
        Ok(listed) => listed,
        Err(e) => {
            page.chrome.problems.push(e.message);
            return Ok(html(e.status, &page));
        }
    };
    let columns: Vec<_> = relation.columns.iter().take(CELLS_SHOWN).collect();
    page.rows = listed
        .data
        .iter()
        .map(|row| MirrorRow {
            id: row["id"].as_str().unwrap_or_default().to_owned(),
            account: row["account"].as_str().unwrap_or_default().to_owned(),
            deleted: row["deleted"].as_bool().unwrap_or(false),
            synced_at: row["synced_at"].as_str().unwrap_or_default().to_owned(),
            cells: columns.iter().map(|col| cell(&row["data"], col)).collect(),
        })
        .collect();
    page.next = listed.next_cursor.map(|cursor| {
        let kept = given
            .iter()
            .filter(|(k, _)| k != "cursor")
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let next = std::iter::once(("relation", relation.name))
            .chain(kept)
            .chain(std::iter::once(("cursor", cursor.as_str())));
        format!("/console/mirror?{}", query_string(next))
    });
    Ok(html(StatusCode::OK, &page))
}

/// The mirror's relation of that name, or the page's 404.
fn relation_or_404(name: &str) -> Result<Relation, (StatusCode, String)> {
    Relation::find(name).ok_or((
        StatusCode::NOT_FOUND,
        format!("stripe.{name} is not a relation of the mirror."),
    ))
}

/// `pairs` as a URL-encoded query string.
fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

fn kind_name(kind: registry::ColumnKind) -> &'static str {
    match kind {
        registry::ColumnKind::Text => "text",
        registry::ColumnKind::Ref => "id",
        registry::ColumnKind::Int => "integer",
        registry::ColumnKind::Time => "time",
        registry::ColumnKind::Bool => "true/false",
    }
}

/// A column's value in an object, as text (an expanded object by its id,
/// a time in RFC 3339).
fn cell(data: &serde_json::Value, col: &registry::Column) -> String {
    let value = col.path.split('.').fold(data, |v, part| &v[part]);
    if let (registry::ColumnKind::Time, Some(secs)) = (col.kind, value.as_i64()) {
        if let Some(t) = chrono::DateTime::from_timestamp(secs, 0) {
            return t.to_rfc3339();
        }
    }
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .get("id")
            .and_then(|i| i.as_str())
            .unwrap_or("{…}")
            .to_owned(),
        other => other.to_string(),
    }
}

pub(super) async fn object(
    c: &Console,
    s: &Session,
    name: &str,
    id: &str,
    query: &[(String, String)],
) -> PageResult {
    let relation = relation_or_404(name)?;
    let account = field(query, "account").filter(|a| !a.is_empty());
    let raw = query_string(account.map(|a| ("account", a)));
    let get = mirror::GetQuery::parse(relation, id, &raw).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("{}: {}", e.field, e.message),
        )
    })?;
    let found = crate::http::mirror::read(
        c.pool.clone(),
        c.readers.clone(),
        relation,
        c.mirror_timeout,
        move |conn, timeout| mirror::get(conn, &get, timeout),
    )
    .await
    .map_err(|e| (e.status, e.message))?
    .ok_or((
        StatusCode::NOT_FOUND,
        format!("No {id} in stripe.{name} on this account."),
    ))?;
    Ok(html(
        StatusCode::OK,
        &ObjectPage {
            chrome: Chrome::new(format!("{name} {id}"), "mirror", &s.csrf),
            relation: relation.name.to_owned(),
            json: serde_json::to_string_pretty(&found).unwrap_or_default(),
        },
    ))
}
