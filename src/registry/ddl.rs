//! The SQL of a registry entry's relations, so a new type's migration is
//! printed (`stripe-sync catalog ddl TYPE`), not written by hand. The
//! integration tests compare the migrated schema with the registry.

use std::fmt::Write;

use super::{Child, Column, ColumnKind, Resource};

/// Related ids people join on get an index; other typed columns do not, so
/// each write pays for few indexes.
const INDEXED_REFS: &[&str] = &[
    "customer",
    "product",
    "price",
    "payment_intent",
    "charge",
    "invoice",
    "subscription",
];

/// Objects stay inline and uncompressed up to a full page: Stripe objects
/// of 2–8 KB (invoices, charges, checkout sessions) would otherwise be
/// compressed and moved to TOAST on every write, which made the upsert of
/// invoice-sized rows 2–3× slower here, for a third of the disk.
const STORAGE: &str = "WITH (toast_tuple_target = 8160)";

/// The expression Postgres computes a typed column with. Values of another
/// JSON kind than expected become NULL rather than failing the write. A
/// field that moved between API versions is read at each of its paths,
/// the newest first ([`Column::moved`]).
pub fn expression(col: &Column) -> String {
    if col.moved.is_empty() {
        return at_path(col.path, col.kind);
    }
    let each: Vec<String> = col.paths().map(|path| at_path(path, col.kind)).collect();
    format!("COALESCE({})", each.join(", "))
}

fn at_path(path: &str, kind: ColumnKind) -> String {
    let mut value = String::from("data");
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts {
        write!(value, "->'{part}'").expect("writing to a String");
    }
    let text = {
        let (last, init) = parts.split_last().expect("a path has a part");
        let mut t = String::from("data");
        for part in init {
            write!(t, "->'{part}'").expect("writing to a String");
        }
        write!(t, "->>'{last}'").expect("writing to a String");
        t
    };
    match kind {
        ColumnKind::Text => {
            format!("CASE WHEN jsonb_typeof({value}) = 'string' THEN {text} END")
        }
        ColumnKind::Ref => format!(
            "CASE jsonb_typeof({value}) WHEN 'string' THEN {text} WHEN 'object' THEN {value}->>'id' END"
        ),
        // Out-of-range numbers become NULL too: a generated column that
        // fails would refuse the whole object.
        ColumnKind::Int => format!(
            "CASE WHEN jsonb_typeof({value}) = 'number' AND abs(({text})::numeric) < 9e18 \
             THEN trunc(({text})::numeric)::bigint END"
        ),
        ColumnKind::Time => format!(
            "CASE WHEN jsonb_typeof({value}) = 'number' AND abs(({text})::numeric) < 1e11 \
             THEN to_timestamp(({text})::double precision) END"
        ),
        ColumnKind::Bool => {
            format!("CASE WHEN jsonb_typeof({value}) = 'boolean' THEN ({value})::boolean END")
        }
    }
}

fn typed_columns(sql: &mut String, columns: &[Column]) {
    for col in columns {
        writeln!(
            sql,
            "    \"{}\" {} GENERATED ALWAYS AS ({}) STORED,",
            col.name,
            col.kind.sql_type(),
            expression(col)
        )
        .expect("writing to a String");
    }
}

fn indexes(sql: &mut String, relation: &str, columns: &[Column]) {
    for col in columns {
        if col.kind == ColumnKind::Ref && INDEXED_REFS.contains(&col.name) || col.name == "created"
        {
            writeln!(
                sql,
                "CREATE INDEX \"{relation}_{name}_idx\" ON stripe.\"{relation}\" (account, \"{name}\");",
                name = col.name
            )
            .expect("writing to a String");
        }
    }
}

/// `CREATE TABLE` (and indexes) for a resource and its child lists.
pub fn create_relation(resource: &Resource) -> String {
    assert!(
        !resource.is_local_customer(),
        "stripe.customers is a view over the local-first table"
    );
    let mut sql = String::new();
    let r = resource.relation;
    writeln!(sql, "-- {}: data.object.object = '{}'", r, resource.object).unwrap();
    writeln!(sql, "CREATE TABLE stripe.\"{r}\" (").unwrap();
    sql.push_str(
        "    account text NOT NULL,\n    id text NOT NULL,\n    data jsonb NOT NULL,\n    \
         deleted boolean NOT NULL DEFAULT false,\n    synced_at timestamptz NOT NULL DEFAULT now(),\n    \
         remote_version bigint NOT NULL,\n    remote_event_id text NOT NULL,\n",
    );
    typed_columns(&mut sql, resource.columns);
    writeln!(sql, "    PRIMARY KEY (account, id)\n) {STORAGE};").unwrap();
    indexes(&mut sql, r, resource.columns);
    for child in resource.children {
        sql.push_str(&create_child(child));
    }
    sql
}

/// `stripe.customers`: a view over the local-first `customers` table and
/// its Stripe links, with the registry's typed columns computed from the
/// last Stripe snapshot, and `local_id` to join the local row.
pub fn customers_view(resource: &Resource) -> String {
    assert!(resource.is_local_customer());
    let mut sql = String::from(
        "-- customers: data.object.object = 'customer' (local-first table, two-way sync)\n\
         CREATE VIEW stripe.customers AS\nSELECT s.account, s.id, s.data, s.deleted, s.synced_at, s.local_id",
    );
    for col in resource.columns {
        write!(sql, ",\n    {} AS \"{}\"", expression(col), col.name).unwrap();
    }
    sql.push_str(
        "\nFROM (SELECT m.account, m.external_id AS id, \
         coalesce(c.stripe_object, jsonb_build_object('id', m.external_id)) AS data, \
         (m.remote_deleted OR c.deleted_at IS NOT NULL) AS deleted, m.synced_at, c.id AS local_id \
         FROM id_map m JOIN customers c ON c.id = m.local_id \
         WHERE m.service = 'stripe' AND m.entity = 'customer') AS s;\n",
    );
    sql
}

/// The DDL of the given resources, in registry order.
pub fn for_resources<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> String {
    resources
        .into_iter()
        .map(|r| {
            if r.is_local_customer() {
                customers_view(r)
            } else {
                create_relation(r)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The DDL of the types, child lists or columns (`invoices.subscription`:
/// made again, as when its field moved) named on the command line.
pub fn for_names(names: &[String]) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for name in names {
        if let Some((relation, column)) = name
            .split_once('.')
            .filter(|_| super::by_name(name).is_none())
        {
            parts.push(remake_column(relation, column)?);
            continue;
        }
        match super::child_by_relation(name) {
            Some((_, child)) => parts.push(create_child(child)),
            None => parts.push(for_resources(super::resolve(std::slice::from_ref(name))?)),
        }
    }
    Ok(parts.join("\n"))
}

/// Drops a typed column and adds it again as the registry now computes it
/// (Postgres 15 cannot change a generated column's expression), with its
/// index.
fn remake_column(relation: &str, column: &str) -> anyhow::Result<String> {
    let columns = match super::by_relation(relation) {
        Some(r) => r.columns,
        None => super::child_by_relation(relation)
            .map(|(_, c)| c.columns)
            .ok_or_else(|| anyhow::anyhow!("{relation:?} is not a relation of the mirror"))?,
    };
    let col = columns
        .iter()
        .find(|c| c.name == column)
        .ok_or_else(|| anyhow::anyhow!("stripe.{relation} has no typed column {column:?}"))?;
    let mut sql = String::new();
    writeln!(
        sql,
        "-- stripe.{relation}.{column}, computed as the registry says"
    )
    .unwrap();
    writeln!(
        sql,
        "ALTER TABLE stripe.\"{relation}\" DROP COLUMN \"{column}\";"
    )
    .unwrap();
    writeln!(
        sql,
        "ALTER TABLE stripe.\"{relation}\" ADD COLUMN \"{column}\" {} GENERATED ALWAYS AS ({}) STORED;",
        col.kind.sql_type(),
        expression(col)
    )
    .unwrap();
    indexes(&mut sql, relation, std::slice::from_ref(col));
    Ok(sql)
}

fn create_child(child: &Child) -> String {
    let mut sql = String::new();
    let (r, parent) = (child.relation, child.parent_column);
    writeln!(sql, "CREATE TABLE stripe.\"{r}\" (").unwrap();
    write!(
        sql,
        "    account text NOT NULL,\n    \"{parent}\" text NOT NULL,\n    id text NOT NULL,\n    \
         position integer NOT NULL,\n    data jsonb NOT NULL,\n    \
         deleted boolean NOT NULL DEFAULT false,\n    synced_at timestamptz NOT NULL DEFAULT now(),\n"
    )
    .unwrap();
    typed_columns(&mut sql, child.columns);
    writeln!(
        sql,
        "    PRIMARY KEY (account, \"{parent}\", id)\n) {STORAGE};"
    )
    .unwrap();
    indexes(&mut sql, r, child.columns);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{by_object, ColumnKind};

    #[test]
    fn nested_paths_read_through_objects() {
        let col = Column {
            name: "customer_details_email",
            path: "customer_details.email",
            kind: ColumnKind::Text,
            moved: &[],
        };
        assert_eq!(
            expression(&col),
            "CASE WHEN jsonb_typeof(data->'customer_details'->'email') = 'string' \
             THEN data->'customer_details'->>'email' END"
        );
    }

    /// A field that moved reads its newest place first, then the older
    /// ones, each with the kind's checks.
    #[test]
    fn a_moved_field_is_read_at_each_of_its_paths() {
        let invoice = by_object("invoice").unwrap();
        let sql = expression(invoice.column("subscription").unwrap());
        let newest = sql.find("data->'parent'->'subscription_details'->'subscription'");
        let pinned = sql.find("jsonb_typeof(data->'subscription')");
        assert!(sql.starts_with("COALESCE("), "{sql}");
        assert!(
            newest.is_some() && pinned.is_some() && newest < pinned,
            "{sql}"
        );
    }

    #[test]
    fn a_relation_has_the_contract_s_columns() {
        let sql = create_relation(by_object("invoice").unwrap());
        for needle in [
            "CREATE TABLE stripe.\"invoices\"",
            "account text NOT NULL",
            "data jsonb NOT NULL",
            "deleted boolean",
            "synced_at timestamptz",
            "\"amount_due\" bigint GENERATED",
            "\"created\" timestamptz GENERATED",
            "CREATE TABLE stripe.\"invoice_line_items\"",
            "\"invoice\" text NOT NULL",
        ] {
            assert!(sql.contains(needle), "{needle} missing from\n{sql}");
        }
    }
}
