//! A batch's lookups by key must cost about one index entry per key
//! whatever the planner's statistics say. On a new database the tables
//! are analyzed nearly empty and then grow by hundreds of thousands of
//! rows in minutes (the first burst, a backfill): a plan made for a few
//! rows that reads every row of the service per batch (a LATERAL lookup
//! flattened into a hash join) made the first burst on a new database
//! apply at a quarter of the speed of the next (`docs/src/performance.md`).
//! Here the tables are analyzed while empty, then grown without new
//! statistics; `db::statistics` must find and analyze them (stripe-inbound
//! runs it every two seconds), after which the rows a batch reads, counted
//! from Postgres' own per-transaction statistics, stay a few per key.
//! Without it, the same batch read 477,317 rows of `id_map` alone.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::json;
use stripe_sync::apply::{self, Applied, FanOut};
use stripe_sync::db::statistics;
use stripe_sync::stripe::StripeEvent;

use crate::support::db::TestDb;

/// Rows each table holds when the batch comes: far more than any batch.
const GROWN: i64 = 20_000;

/// Keys each batch looks up, per kind of object.
const BATCH: i64 = 40;

fn grow(conn: &mut PgConnection) {
    for sql in [
        // Statistics taken while the tables hold next to nothing, as on a
        // new database whose first batch has just been applied.
        "ANALYZE customers, id_map, event_ledger, stripe.products",
        &format!(
            "WITH c AS (INSERT INTO customers (id, email, name) \
                 SELECT gen_random_uuid(), 'c' || g || '@example.com', 'C ' || g \
                 FROM generate_series(1, {GROWN}) g RETURNING id, email) \
             INSERT INTO id_map (service, account, entity, external_id, local_id, remote_version) \
             SELECT 'stripe', 'platform', 'customer', 'cus_' || split_part(substr(email, 2), '@', 1), id, 100 \
             FROM c"
        ),
        &ledger_rows(),
        &format!(
            "INSERT INTO stripe.products (account, id, data, remote_version, remote_event_id) \
             SELECT 'platform', 'prod_' || g, jsonb_build_object('id', 'prod_' || g, 'object', 'product'), \
                    100, 'evt_old' || g \
             FROM generate_series(1, {GROWN}) g"
        ),
    ] {
        diesel::sql_query(sql).execute(conn).unwrap();
    }
}

/// `GROWN` ledger rows, for events `evt_old1`… of customers `cus_1`….
fn ledger_rows() -> String {
    format!(
        "INSERT INTO event_ledger (service, account, event_id, event_type, object_id, event_created, outcome) \
         SELECT 'stripe', 'platform', 'evt_old' || g, 'customer.updated', 'cus_' || g, 100, 'applied' \
         FROM generate_series(1, {GROWN}) g"
    )
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The number `sql` selects as `n`.
fn number(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<N>(conn).unwrap().n
}

/// How many rows the ledger's statistics say it holds.
fn ledger_estimate(conn: &mut PgConnection) -> i64 {
    number(
        conn,
        "SELECT reltuples::bigint AS n FROM pg_class WHERE oid = 'event_ledger'::regclass",
    )
}

/// Rows read so far in this transaction from `tables` and their indexes:
/// tuples returned by sequential scans of the table and by scans of each
/// of its indexes.
fn rows_read(conn: &mut PgConnection, tables: &[&str]) -> i64 {
    let list = tables
        .iter()
        .map(|t| format!("'{t}'::regclass"))
        .collect::<Vec<_>>()
        .join(", ");
    number(
        conn,
        &format!(
            "SELECT (sum(pg_stat_get_xact_tuples_returned(c.oid)) + \
                     coalesce(sum((SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid)) \
                                   FROM pg_index i WHERE i.indrelid = c.oid)), 0))::bigint AS n \
             FROM pg_class c WHERE c.oid IN ({list})"
        ),
    )
}

fn event(id: &str, kind: &str, object: serde_json::Value) -> StripeEvent {
    let body = json!({
        "id": id, "object": "event", "type": kind, "created": 200,
        "livemode": false, "data": {"object": object},
    });
    StripeEvent::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

const GROWN_TABLES: [&str; 4] = [
    "public.customers",
    "public.event_ledger",
    "public.id_map",
    "stripe.products",
];

/// What `statistics::grown` lists once the server's counters show the
/// growth (a backend reports them at most once a second).
fn grown_once_reported(conn: &mut PgConnection) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        diesel::sql_query("SELECT pg_stat_clear_snapshot()")
            .execute(conn)
            .unwrap();
        let mut grown: Vec<String> = statistics::grown(conn)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        if grown.len() >= GROWN_TABLES.len() || std::time::Instant::now() > deadline {
            grown.sort();
            return grown;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits until the server's statistics count at least `at_least` in
/// `table`'s `column` of `pg_stat_user_tables` (`n_live_tup`, `n_tup_upd`).
fn wait_counted(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
    at_least: i64,
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        diesel::sql_query("SELECT pg_stat_clear_snapshot()")
            .execute(conn)
            .unwrap();
        let counted = number(
            conn,
            &format!(
                "SELECT {column} AS n FROM pg_stat_user_tables WHERE relid = '{table}'::regclass"
            ),
        );
        if counted >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{table}: {column} {counted}, never {at_least}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_table_someone_else_holds_is_skipped_not_waited_on() {
    let db = TestDb::migrated();
    let conn = &mut db.conn();
    grow(conn);
    grown_once_reported(conn);
    // Another session (a migration, autovacuum, another replica's ANALYZE)
    // holds the ledger in the mode ANALYZE needs.
    let holder = &mut db.conn();
    diesel::sql_query("BEGIN").execute(holder).unwrap();
    diesel::sql_query("LOCK TABLE event_ledger IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(holder)
        .unwrap();
    let started = std::time::Instant::now();
    let round = statistics::analyze_grown(conn, || true).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "waited {:?} on the lock",
        started.elapsed()
    );
    assert!(round.failed.is_empty(), "{round:?}");
    diesel::sql_query("COMMIT").execute(holder).unwrap();
    // Skipped: the ledger's statistics still say empty, the others' not.
    diesel::sql_query("SELECT pg_stat_clear_snapshot()")
        .execute(conn)
        .unwrap();
    let still: Vec<String> = statistics::grown(conn)
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(still, ["public.event_ledger"]);
    // And a round told to stop analyzes nothing.
    let stopped = statistics::analyze_grown(conn, || false).unwrap();
    assert!(stopped.analyzed.is_empty(), "{stopped:?}");
    assert_eq!(statistics::grown(conn).unwrap().len(), 1);
}

#[test]
fn tables_that_outgrew_their_statistics_are_analyzed_and_tables_changed_in_place_are_not() {
    let db = TestDb::migrated();
    let conn = &mut db.conn();
    grow(conn);
    // A table of the user's own in the same database, grown as much: not
    // the engine's to analyze.
    diesel::sql_query(format!(
        "CREATE TABLE app_orders AS SELECT g AS id FROM generate_series(1, {GROWN}) g"
    ))
    .execute(conn)
    .unwrap();
    wait_counted(
        conn,
        "app_orders",
        "n_live_tup",
        GROWN,
        std::time::Duration::from_secs(20),
    );
    assert_eq!(grown_once_reported(conn), GROWN_TABLES);
    let round = statistics::analyze_grown(conn, || true).unwrap();
    let mut analyzed = round.analyzed.clone();
    analyzed.sort();
    assert_eq!(analyzed, GROWN_TABLES);
    assert!(
        round.not_ours.is_empty() && round.failed.is_empty(),
        "{round:?}"
    );
    assert_eq!(ledger_estimate(conn), GROWN);
    // Every customer and link rewritten twice (as events update them):
    // as many rows as before, so nothing to analyze.
    for _ in 0..2 {
        diesel::sql_query("UPDATE customers SET name = name || '.'")
            .execute(conn)
            .unwrap();
        diesel::sql_query("UPDATE id_map SET remote_version = remote_version + 1")
            .execute(conn)
            .unwrap();
    }
    // Once the server counts the updates, nothing has outgrown its
    // statistics.
    wait_counted(
        conn,
        "customers",
        "n_tup_upd",
        2 * GROWN,
        std::time::Duration::from_secs(10),
    );
    assert_eq!(statistics::grown(conn).unwrap(), Vec::new());
}

#[test]
fn a_batch_reads_about_one_entry_per_key_once_grown_tables_are_analyzed() {
    let db = TestDb::migrated();
    let conn = &mut db.conn();
    grow(conn);
    grown_once_reported(conn);
    statistics::analyze_grown(conn, || true).unwrap();
    // Updates of linked customers and stored products, and a redelivery
    // of events already ledgered: every lookup the set path makes (the
    // ledger, the links, the mirror's stored state, each locked or not).
    let mut events = Vec::new();
    for g in 1..=BATCH {
        events.push(event(
            &format!("evt_new_c{g}"),
            "customer.updated",
            json!({"id": format!("cus_{g}"), "object": "customer", "email": format!("n{g}@example.com"), "metadata": {}}),
        ));
        events.push(event(
            &format!("evt_new_p{g}"),
            "product.updated",
            json!({"id": format!("prod_{g}"), "object": "product", "name": format!("P{g}")}),
        ));
        events.push(event(
            &format!("evt_old{g}"),
            "customer.updated",
            json!({"id": format!("cus_{g}"), "object": "customer", "metadata": {}}),
        ));
    }
    let batch: Vec<&StripeEvent> = events.iter().collect();
    let tables = ["event_ledger", "id_map", "customers", "stripe.products"];
    let (read, results) = conn
        .transaction(|conn| {
            let before = rows_read(conn, &tables);
            let results = apply::apply_batch(conn, &NoReads, &batch, FanOut::Off).unwrap();
            Ok::<_, diesel::result::Error>((rows_read(conn, &tables) - before, results))
        })
        .unwrap();
    let applied = results
        .iter()
        .filter(|r| matches!(r, Ok(Applied::Upserted)))
        .count();
    let duplicates = results
        .iter()
        .filter(|r| matches!(r, Ok(Applied::Duplicate)))
        .count();
    assert_eq!(
        (applied, duplicates),
        (2 * BATCH as usize, BATCH as usize),
        "{results:?}"
    );
    // A few probes per key; a plan that scans a table reads its 20,000.
    let keys = events.len() as i64;
    assert!(
        read <= 10 * keys,
        "the batch of {keys} events read {read} rows of tables holding {GROWN} each"
    );
}

/// Nothing here needs Stripe: no tie, no child list.
struct NoReads;

impl apply::RemoteReader for NoReads {
    fn current(
        &self,
        _: &stripe_sync::stripe::AccountId,
        path: &str,
        id: &str,
    ) -> Result<stripe_sync::stripe::RemoteObject, apply::ApplyError> {
        panic!("{path}/{id} was read from Stripe")
    }

    fn children(
        &self,
        _: &stripe_sync::stripe::AccountId,
        _: &stripe_sync::registry::Resource,
        _: &stripe_sync::registry::Child,
        id: &str,
    ) -> Result<Vec<serde_json::Value>, apply::ApplyError> {
        panic!("{id}'s children were read from Stripe")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_worker_analyzes_a_ledger_that_outgrew_its_statistics() {
    // Within seconds: autovacuum, where it is on at all (not on the CI
    // machines), looks once a minute.
    let stack = crate::support::stack::Stack::start(Default::default()).await;
    let mut conn = stack.db.conn();
    diesel::sql_query("ANALYZE event_ledger")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query(ledger_rows()).execute(&mut conn).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let estimate = ledger_estimate(&mut conn);
        if estimate == GROWN {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stripe-inbound left the ledger's statistics at {estimate} rows of {GROWN}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(conn);
    stack.stop().await;
}
