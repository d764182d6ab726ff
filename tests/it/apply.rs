//! The set-based batch apply must have exactly the effect of applying the
//! same events one at a time (invariants 3 and 4 are written, and tested
//! end to end, against the one-at-a-time rules). Random sequences of
//! creates, updates, deletes, snapshots, same-second ties, duplicates,
//! foreign types and malformed events go through both paths on real
//! Postgres; results, rows, links and ledger must match.
//!
//! Ties need Stripe's current state: a deterministic in-process reader
//! stands in for Stripe here, since what is under test is the rules, not
//! the HTTP client (that is covered against localstripe and fakes).

use std::collections::HashSet;

use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use stripe_sync::apply::{self, Applied, ApplyError, EventResult, FanOut, Refusal, RemoteReader};
use stripe_sync::config::DatabaseConfig;
use stripe_sync::inbound::InboundHandler;
use stripe_sync::kafka::consumer::{BatchHandler, Delivery, Outcome};
use stripe_sync::registry::{Child, Resource};
use stripe_sync::stripe::{AccountId, RemoteObject, StripeEvent};

use crate::support::db::TestDb;

/// A local customer created through the API whose create Stripe echoes
/// (its events name it in metadata), one linked customer with a local
/// change Stripe has not acknowledged yet, and one linked customer deleted
/// here (through the API, its deletion delivered) that Stripe still
/// reports on.
const ECHO_LOCAL: &str = "00000000-0000-4000-8000-0000000000e1";
const PENDING_LOCAL: &str = "00000000-0000-4000-8000-0000000000b2";
const GONE_LOCAL: &str = "00000000-0000-4000-8000-0000000000d3";

struct Reread;

impl RemoteReader for Reread {
    fn current(&self, _: &AccountId, path: &str, id: &str) -> Result<RemoteObject, ApplyError> {
        let object = if path == "customers" {
            "customer"
        } else {
            "product"
        };
        Ok(if id == "cus_5" || id == "prod_gone" {
            RemoteObject::Deleted
        } else {
            RemoteObject::Live(json!({"id": id, "object": object, "name": "as re-read"}))
        })
    }

    fn children(
        &self,
        _: &AccountId,
        _: &Resource,
        _: &Child,
        id: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        panic!("products have no child lists, yet {id}'s were read")
    }
}

fn setup(conn: &mut PgConnection) {
    for sql in [
        "TRUNCATE customers, id_map, event_ledger, outbox, outbox_deliveries, stripe.products CASCADE",
        &format!(
            "INSERT INTO customers (id, email, name) VALUES \
             ('{ECHO_LOCAL}', 'echo@example.com', 'Local'), ('{PENDING_LOCAL}', 'p@example.com', 'Local name')"
        ),
        &format!(
            "INSERT INTO customers (id, email, name, deleted_at, version) VALUES \
             ('{GONE_LOCAL}', 'gone@example.com', 'Gone', now(), 2)"
        ),
        &format!(
            "INSERT INTO outbox (entity, local_id, operation, fields) VALUES \
             ('customer', '{ECHO_LOCAL}', 'create', '{{\"email\": \"echo@example.com\"}}'), \
             ('customer', '{PENDING_LOCAL}', 'update', '{{\"name\": \"Local name\"}}')"
        ),
        &format!(
            "INSERT INTO id_map (service, account, entity, external_id, local_id, remote_version) \
             VALUES ('stripe', 'platform', 'customer', 'cus_pend', '{PENDING_LOCAL}', 100), \
                    ('stripe', 'platform', 'customer', 'cus_5', '{GONE_LOCAL}', 100)"
        ),
    ] {
        diesel::sql_query(sql).execute(conn).unwrap();
    }
}

/// A random sequence of raw events, with repeats.
fn random_events(rng: &mut StdRng, n: usize) -> Vec<Vec<u8>> {
    let customers = [
        "cus_0", "cus_1", "cus_2", "cus_3", "cus_4", "cus_5", "cus_echo", "cus_pend",
    ];
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(n);
    for i in 0..n {
        if !out.is_empty() && rng.gen_bool(0.12) {
            let again = out[rng.gen_range(0..out.len())].clone();
            out.push(again);
            continue;
        }
        let cus = customers[rng.gen_range(0..customers.len())];
        let mut metadata = json!({"n": i.to_string()});
        if cus == "cus_echo" {
            metadata["stripe_sync_id"] = json!(ECHO_LOCAL);
        }
        let mut object = json!({
            "id": cus, "object": "customer", "email": format!("c{i}@example.com"),
            "name": format!("Name {i}"), "phone": null, "metadata": metadata,
        });
        let (kind, created) = match rng.gen_range(0..100) {
            0..=14 => ("customer.created", rng.gen_range(100..108)),
            15..=59 => ("customer.updated", rng.gen_range(100..108)),
            60..=66 => ("customer.deleted", rng.gen_range(100..108)),
            67..=81 => ("customer.snapshot", rng.gen_range(100..250)),
            82..=85 => {
                object = json!({"id": cus, "object": "customer", "deleted": true});
                ("customer.snapshot", rng.gen_range(100..250))
            }
            // A mirrored type through the same rules.
            86..=91 => {
                let id = ["prod_1", "prod_2", "prod_gone"][rng.gen_range(0..3)];
                object = json!({"id": id, "object": "product", "name": format!("P{i}")});
                let kind =
                    ["product.created", "product.updated", "product.deleted"][rng.gen_range(0..3)];
                (kind, rng.gen_range(100..106))
            }
            // A type nobody registered.
            92..=93 => {
                object = json!({"object": "balance", "available": []});
                ("balance.available", 100)
            }
            _ => {
                object = json!({"id": "not-a-customer", "object": "customer"});
                ("customer.updated", 100)
            }
        };
        let mut event = json!({
            "id": format!("evt_{i}"), "object": "event", "type": kind, "created": created,
            "livemode": false, "data": {"object": object},
        });
        // Some report our own writes back: those are never passed on.
        if rng.gen_bool(0.15) {
            event["request"] = json!({"id": format!("req_{i}"), "idempotency_key": format!("stripe-sync-outbox-{i}")});
        }
        out.push(serde_json::to_vec(&event).unwrap());
    }
    out
}

#[derive(QueryableByName)]
struct Dump {
    #[diesel(sql_type = Nullable<Text>)]
    j: Option<String>,
}

/// Everything the apply may change, as canonical JSON.
fn dump(conn: &mut PgConnection) -> (String, String) {
    let rows = diesel::sql_query(
        "SELECT json_agg(x ORDER BY x.key)::text AS j FROM ( \
           SELECT coalesce(m.external_id, c.id::text) AS key, c.email, c.name, c.phone, \
                  c.description, c.metadata, c.stripe_object, c.deleted_at IS NOT NULL AS deleted, \
                  c.version, m.remote_version, m.remote_event_id, m.remote_deleted, \
                  c.id::text IN ($1, $2, $3) AS fixed_local_id \
           FROM customers c LEFT JOIN id_map m ON m.local_id = c.id) x",
    )
    .bind::<Text, _>(ECHO_LOCAL)
    .bind::<Text, _>(PENDING_LOCAL)
    .bind::<Text, _>(GONE_LOCAL)
    .get_result::<Dump>(conn)
    .unwrap();
    let ledger = diesel::sql_query(
        "SELECT json_agg(json_build_array(account, event_id, event_type, object_id, outcome, echo) \
                ORDER BY event_id)::text AS j FROM event_ledger",
    )
    .get_result::<Dump>(conn)
    .unwrap();
    let products = diesel::sql_query(
        "SELECT json_agg(json_build_array(account, id, data, deleted, remote_version, remote_event_id) \
                ORDER BY id)::text AS j FROM stripe.products",
    )
    .get_result::<Dump>(conn)
    .unwrap();
    (
        rows.j.unwrap_or_default() + &products.j.unwrap_or_default(),
        ledger.j.unwrap_or_default(),
    )
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    key: String,
}

#[derive(QueryableByName)]
struct PassedOn {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    operation: String,
    #[diesel(sql_type = Text)]
    fields: String,
    #[diesel(sql_type = Text)]
    row: String,
}

/// What the customer changes passed on with origin `stripe` leave another
/// service holding, replayed in outbox order: the customers it holds, by
/// Stripe id. Checks on the way that each one it holds that is live here,
/// and that no echo changed, holds what the local row holds.
fn passed_on(conn: &mut PgConnection, seed: u64) -> std::collections::BTreeSet<String> {
    let rows: Vec<PassedOn> = diesel::sql_query(
        "SELECT coalesce(m.external_id, c.id::text) AS key, o.operation, o.fields::text AS fields,                 json_build_object('email', c.email, 'name', c.name, 'phone', c.phone,                   'description', c.description, 'deleted', c.deleted_at IS NOT NULL)::text AS row            FROM outbox o JOIN customers c ON c.id = o.local_id            LEFT JOIN id_map m ON m.local_id = c.id AND m.service = 'stripe'           WHERE o.origin = 'stripe' ORDER BY o.id",
    )
    .load(conn)
    .unwrap();
    let mut held: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        Default::default();
    let mut rows_now = std::collections::BTreeMap::new();
    for r in rows {
        let fields: serde_json::Map<String, Value> = serde_json::from_str(&r.fields).unwrap();
        match r.operation.as_str() {
            "create" => {
                held.insert(r.key.clone(), fields);
            }
            "update" => held.entry(r.key.clone()).or_default().extend(fields),
            _ => {
                held.remove(&r.key);
            }
        }
        rows_now.insert(r.key, serde_json::from_str::<Value>(&r.row).unwrap());
    }
    // What an applied echo changed is not passed on: in the engine the
    // change it echoes is, from the outbox row that made it, which these
    // synthetic echoes do not have.
    let echoed: std::collections::HashSet<String> = diesel::sql_query(
        "SELECT DISTINCT object_id AS key FROM event_ledger \
          WHERE echo AND outcome IN ('upserted', 'tie_resolved', 'deleted')",
    )
    .load::<Key>(conn)
    .unwrap()
    .into_iter()
    .map(|k| k.key)
    .collect();
    for (key, fields) in &held {
        let row = &rows_now[key];
        if row["deleted"] == true || echoed.contains(key) {
            continue;
        }
        for (field, value) in fields {
            assert_eq!(
                &row[field], value,
                "{key}.{field} was passed on stale (seed {seed})"
            );
        }
    }
    held.into_keys().collect()
}

type Path = fn(
    &mut PgConnection,
    &dyn RemoteReader,
    &[&StripeEvent],
    FanOut,
) -> Result<Vec<EventResult>, ApplyError>;

fn run(conn: &mut PgConnection, path: Path, chunks: &[Vec<StripeEvent>]) -> Vec<EventResult> {
    let mut results = Vec::new();
    for chunk in chunks {
        let events: Vec<&StripeEvent> = chunk.iter().collect();
        let r = conn
            .transaction(|conn| path(conn, &Reread, &events, FanOut::ToOtherServices))
            .expect("no transient failures here");
        results.extend(r);
    }
    results
}

#[test]
fn the_batch_apply_has_exactly_the_effect_of_one_event_at_a_time() {
    let batched = TestDb::migrated();
    let reference = TestDb::migrated();
    let (mut a, mut b) = (batched.conn(), reference.conn());
    let mut seen_outcomes: HashSet<&'static str> = HashSet::new();
    for seed in 0..24u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let raw = random_events(&mut rng, 160);
        // Random batch boundaries: a customer's events are split across
        // batches as they are on a real partition.
        let mut chunks: Vec<Vec<StripeEvent>> = Vec::new();
        let mut rest = &raw[..];
        while !rest.is_empty() {
            let take = rng.gen_range(1..=rest.len().min(60));
            chunks.push(
                rest[..take]
                    .iter()
                    .map(|r| StripeEvent::parse(r).unwrap())
                    .collect(),
            );
            rest = &rest[take..];
        }
        setup(&mut a);
        setup(&mut b);
        let got = run(&mut a, apply::apply_batch, &chunks);
        let want = run(&mut b, apply::apply_each, &chunks);
        assert_eq!(got, want, "per-event results differ (seed {seed})");
        assert_eq!(
            dump(&mut a),
            dump(&mut b),
            "stored state differs (seed {seed})"
        );
        // The batch passes a customer's changes on once per batch, one at
        // a time once per event: the rows differ, what they leave the
        // other services holding must not.
        let (passed_a, passed_b) = (passed_on(&mut a, seed), passed_on(&mut b, seed));
        assert_eq!(
            passed_a, passed_b,
            "customers the other services hold differ (seed {seed})"
        );
        for r in &got {
            seen_outcomes.insert(match r {
                Ok(applied) => applied.as_str(),
                Err(_) => "refused",
            });
        }
    }
    // The sequences must have exercised every path, or the comparison
    // proves little.
    for expected in [
        Applied::Duplicate,
        Applied::Ignored,
        Applied::Stale,
        Applied::AfterTombstone,
        Applied::Upserted,
        Applied::TieResolved,
        Applied::Deleted,
    ] {
        assert!(
            seen_outcomes.contains(expected.as_str()),
            "no event ended {expected:?}: {seen_outcomes:?}"
        );
    }
    assert!(seen_outcomes.contains("refused"));
}

#[test]
fn a_refused_event_leaves_no_claim_so_its_replay_applies() {
    let db = TestDb::migrated();
    let mut conn = db.conn();
    let good = StripeEvent::parse(
        br#"{"id":"evt_ok","type":"customer.created","created":100,
            "data":{"object":{"id":"cus_ok","object":"customer","name":"A"}}}"#,
    )
    .unwrap();
    let bad = StripeEvent::parse(
        br#"{"id":"evt_bad","type":"customer.updated","created":100,
            "data":{"object":{"id":"oops","object":"customer"}}}"#,
    )
    .unwrap();
    let results = conn
        .transaction(|conn| apply::apply_batch(conn, &Reread, &[&good, &bad], FanOut::Off))
        .unwrap();
    assert_eq!(results[0], Ok(Applied::Upserted));
    assert!(
        matches!(&results[1], Err(Refusal::Malformed(reason)) if reason.contains("no customer id")),
        "{results:?}"
    );
    assert_eq!(db.count("event_ledger WHERE event_id = 'evt_ok'"), 1);
    assert_eq!(
        db.count("event_ledger WHERE event_id = 'evt_bad'"),
        0,
        "a refused event must not stay claimed"
    );
}

/// The pending customer with two writes of its name (outbox rows `older`
/// and `newer`; the row holds the newer one), linked at version 100, and
/// the writes Stripe acknowledged so far (`delivered`).
fn customer_with_two_writes(conn: &mut PgConnection, older: i64, newer: i64, delivered: &[i64]) {
    let mut statements = vec![
        format!(
            "INSERT INTO customers (id, email, name, phone) VALUES \
             ('{PENDING_LOCAL}', 'p@example.com', 'Newer name', '+1 555 0100')"
        ),
        format!(
            "INSERT INTO outbox (id, entity, local_id, operation, fields) VALUES \
             ({older}, 'customer', '{PENDING_LOCAL}', 'update', '{{\"name\": \"Older name\"}}'), \
             ({newer}, 'customer', '{PENDING_LOCAL}', 'update', '{{\"name\": \"Newer name\"}}')"
        ),
        format!(
            "INSERT INTO id_map (service, account, entity, external_id, local_id, remote_version) \
             VALUES ('stripe', 'platform', 'customer', 'cus_pend', '{PENDING_LOCAL}', 100)"
        ),
    ];
    statements.extend(delivered.iter().map(|row| {
        format!(
            "INSERT INTO outbox_deliveries (outbox_id, service, status) VALUES ({row}, 'stripe', 'synced')"
        )
    }));
    for sql in statements {
        diesel::sql_query(sql).execute(conn).unwrap();
    }
}

/// The pending customer's name and phone.
fn name_and_phone(conn: &mut PgConnection) -> (Option<String>, Option<String>) {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Text>)]
        name: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        phone: Option<String>,
    }
    let row = diesel::sql_query(format!(
        "SELECT name, phone FROM customers WHERE id = '{PENDING_LOCAL}'"
    ))
    .get_result::<Row>(conn)
    .unwrap();
    (row.name, row.phone)
}

/// Webhooks arrive in any order: the echo of our older write, applied
/// after a later write of the same field was acknowledged but before that
/// write's own echo, must not roll the row back (with Salesforce on, its
/// report of the later value would then be passed back on to Stripe).
#[test]
fn an_echo_of_an_older_write_of_ours_does_not_roll_back_a_later_one() {
    for path in [apply::apply_batch as Path, apply::apply_each] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        customer_with_two_writes(&mut conn, 1, 2, &[1, 2]);
        // Row 1's echo: Stripe's state right after it, phone changed there
        // since by someone else.
        let echo = StripeEvent::parse(
            br#"{"id":"evt_echo1","type":"customer.updated","created":101,
                "request":{"id":"req_1","idempotency_key":"stripe-sync-outbox-1"},
                "data":{"object":{"id":"cus_pend","object":"customer","email":"p@example.com",
                    "name":"Older name","phone":"+1 555 0199"}}}"#,
        )
        .unwrap();
        conn.transaction(|conn| path(conn, &Reread, &[&echo], FanOut::ToOtherServices))
            .unwrap();
        assert_eq!(
            name_and_phone(&mut conn),
            (Some("Newer name".into()), Some("+1 555 0199".into()))
        );
        assert_eq!(db.count("outbox"), 2, "an echo is never passed on");
    }
}

/// Reads a customer as Stripe held it before our newer write (outbox row
/// 9002), and meanwhile, on another connection, records that write delivered:
/// Stripe answered the read, then did our write, and stripe-outbound
/// recorded it before the apply took the customer's row lock.
/// With `records_link`, stripe-outbound also records the customer's link
/// (our create's) meanwhile.
struct ReadRacingOurWrite {
    db_url: String,
    records_link: bool,
}

impl RemoteReader for ReadRacingOurWrite {
    fn current(&self, _: &AccountId, _: &str, id: &str) -> Result<RemoteObject, ApplyError> {
        let mut other = PgConnection::establish(&self.db_url).unwrap();
        if self.records_link {
            diesel::sql_query(format!(
                "INSERT INTO id_map (service, account, entity, external_id, local_id, remote_version) \
                 VALUES ('stripe', 'platform', 'customer', '{id}', '{PENDING_LOCAL}', 100)"
            ))
            .execute(&mut other)
            .unwrap();
        }
        diesel::sql_query(
            "INSERT INTO outbox_deliveries (outbox_id, service, status) VALUES (9002, 'stripe', 'synced')",
        )
        .execute(&mut other)
        .unwrap();
        Ok(RemoteObject::Live(json!({
            "id": id, "object": "customer", "email": "p@example.com",
            "name": "Older name", "phone": "+1 555 0199"
        })))
    }

    fn children(
        &self,
        _: &AccountId,
        _: &Resource,
        _: &Child,
        id: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        panic!("customers have no child lists, yet {id}'s were read")
    }
}

/// Someone's change in the same second as the pending customer's stored
/// version: a tie, settled by reading Stripe.
const TIE: &[u8] = br#"{"id":"evt_tie","type":"customer.updated","created":100,
    "request":{"id":null,"idempotency_key":null},
    "data":{"object":{"id":"cus_pend","object":"customer","email":"p@example.com",
        "name":"Older name","phone":"+1 555 0199"}}}"#;

fn tie() -> StripeEvent {
    StripeEvent::parse(TIE).unwrap()
}

/// A same-second tie is settled by reading Stripe; a write of ours that
/// Stripe did after answering that read, and that was acknowledged before
/// the apply locked the row, keeps its value (the read is older than it),
/// while what the read says of other fields is taken.
#[test]
fn a_re_read_older_than_our_write_acknowledged_meanwhile_does_not_roll_it_back() {
    for path in [apply::apply_batch as Path, apply::apply_each] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        customer_with_two_writes(&mut conn, 9001, 9002, &[9001]);
        let reader = ReadRacingOurWrite {
            db_url: db.url.clone(),
            records_link: false,
        };
        conn.transaction(|conn| path(conn, &reader, &[&tie()], FanOut::ToOtherServices))
            .unwrap();
        assert_eq!(
            name_and_phone(&mut conn),
            (Some("Newer name".into()), Some("+1 555 0199".into())),
            "a read older than our acknowledged write rolled it back"
        );
    }
}

/// The worker reads a tie's customer before its transaction opens
/// (`apply::prefetch`), so a marker taken inside the transaction comes too
/// late: our write acknowledged between that read and the apply must keep
/// its value all the same (with Salesforce on, the rolled-back name would
/// otherwise be passed back on as Salesforce's own edit).
#[test]
fn a_prefetched_re_read_older_than_our_write_acknowledged_since_does_not_roll_it_back() {
    for path in [apply::apply_batch as Path, apply::apply_each] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        customer_with_two_writes(&mut conn, 9001, 9002, &[9001]);
        let reader = ReadRacingOurWrite {
            db_url: db.url.clone(),
            records_link: false,
        };
        let tie = tie();
        let read = apply::prefetch(&mut conn, &reader, &[&tie]).unwrap();
        assert_eq!(read.len(), 1, "the tie's customer is read before the apply");
        conn.transaction(|conn| path(conn, &read, &[&tie], FanOut::ToOtherServices))
            .unwrap();
        assert!(!read.missed(), "the apply asked for a read not made");
        assert_eq!(
            name_and_phone(&mut conn),
            (Some("Newer name".into()), Some("+1 555 0199".into())),
            "a prefetched read older than our acknowledged write rolled it back"
        );
        let passed_on: i64 = diesel::sql_query(
            "SELECT count(*) AS n FROM outbox WHERE origin = 'stripe' AND fields ? 'name'",
        )
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n;
        assert_eq!(passed_on, 0, "our own name was passed back on");
        assert_eq!(
            db.count("outbox"),
            3,
            "the phone someone changed in Stripe is passed on"
        );
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The pending customer made through the API and not linked to Stripe
/// yet: its name `writes` of ours (outbox id, operation, name; the row
/// holds the last), of which Stripe acknowledged the first (its create).
fn created_by_us(conn: &mut PgConnection, writes: &[(i64, &str, &str)]) {
    let (_, _, name_now) = writes.last().expect("at least the create");
    let rows: Vec<String> = writes
        .iter()
        .map(|(id, operation, name)| {
            format!(
                "({id}, 'customer', '{PENDING_LOCAL}', '{operation}', '{{\"name\": \"{name}\"}}')"
            )
        })
        .collect();
    for sql in [
        format!(
            "INSERT INTO customers (id, email, name) VALUES \
             ('{PENDING_LOCAL}', 'p@example.com', '{name_now}')"
        ),
        format!(
            "INSERT INTO outbox (id, entity, local_id, operation, fields) VALUES {}",
            rows.join(", ")
        ),
        format!(
            "INSERT INTO outbox_deliveries (outbox_id, service, status) VALUES ({}, 'stripe', 'synced')",
            writes[0].0
        ),
    ] {
        diesel::sql_query(sql).execute(conn).unwrap();
    }
}

/// Our create's echo and a tie in the same second, in one batch, before
/// stripe-outbound recorded the create's link: the prefetch reads the
/// customer for the tie with no link to find our changes by. The link and
/// our later write, both recorded between that read and the apply, must
/// not let the read roll the write back: the marker is taken for the local
/// row the echo names.
#[test]
fn a_prefetched_re_read_before_our_create_was_linked_does_not_roll_back_our_later_write() {
    for path in [apply::apply_batch as Path, apply::apply_each] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        created_by_us(
            &mut conn,
            &[
                (9001, "create", "Older name"),
                (9002, "update", "Newer name"),
            ],
        );
        let event = |id: &str, key: &str| {
            StripeEvent::parse(
                format!(
                    r#"{{"id":"{id}","type":"customer.updated","created":100,
                    "request":{{"id":"req_{id}","idempotency_key":{key}}},
                    "data":{{"object":{{"id":"cus_new","object":"customer","email":"p@example.com",
                        "name":"Older name","phone":"+1 555 0199",
                        "metadata":{{"stripe_sync_id":"{PENDING_LOCAL}"}}}}}}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let (echo, tie) = (
            event("evt_created", r#""stripe-sync-outbox-9001""#),
            event("evt_tie", "null"),
        );
        let reader = ReadRacingOurWrite {
            db_url: db.url.clone(),
            records_link: true,
        };
        let read = apply::prefetch(&mut conn, &reader, &[&echo, &tie]).unwrap();
        assert_eq!(read.len(), 1, "the tie's customer is read before the apply");
        conn.transaction(|conn| path(conn, &read, &[&echo, &tie], FanOut::ToOtherServices))
            .unwrap();
        assert!(!read.missed(), "the apply asked for a read not made");
        assert_eq!(
            name_and_phone(&mut conn),
            (Some("Newer name".into()), Some("+1 555 0199".into())),
            "a read made before our create was linked rolled our later write back"
        );
    }
}

/// The same race through stripe-inbound's own handler, as the worker runs
/// it: the first apply misses the tie's read, the batch is prepared again
/// (`apply::prefetch`) and applied against what was read.
#[test]
fn the_inbound_worker_keeps_our_write_acknowledged_after_its_prefetched_read() {
    let db = TestDb::migrated();
    let mut conn = db.conn();
    customer_with_two_writes(&mut conn, 9001, 9002, &[9001]);
    let reader = ReadRacingOurWrite {
        db_url: db.url.clone(),
        records_link: false,
    };
    assert_eq!(through_the_worker(&db, reader, &[TIE]), vec![Outcome::Done]);
    assert_eq!(
        name_and_phone(&mut conn),
        (Some("Newer name".into()), Some("+1 555 0199".into())),
        "the worker's prefetched read rolled back our acknowledged write"
    );
}

/// Hands events about `cus_pend` to stripe-inbound's own batch handler,
/// as one batch the way the worker does, with Stripe read through `remote`.
fn through_the_worker(
    db: &TestDb,
    remote: impl RemoteReader + 'static,
    payloads: &[&[u8]],
) -> Vec<Outcome> {
    through_the_worker_keeping(db, remote, payloads, false)
}

/// [`through_the_worker`], keeping the raw events in `stripe.events` or not.
fn through_the_worker_keeping(
    db: &TestDb,
    remote: impl RemoteReader + 'static,
    payloads: &[&[u8]],
    keep_events: bool,
) -> Vec<Outcome> {
    let pool = stripe_sync::db::pool(&DatabaseConfig {
        url: db.url.clone().into(),
        pool_size: 2,
    });
    let handler = InboundHandler::new(pool, std::sync::Arc::new(remote), FanOut::ToOtherServices)
        .keeping_events(keep_events);
    let batch: Vec<Delivery> = payloads
        .iter()
        .zip(0..)
        .map(|(payload, offset)| Delivery {
            topic: "stripe.events.v1".into(),
            partition: 0,
            offset,
            key: Some(b"cus_pend".to_vec()),
            payload: Some(payload.to_vec()),
            headers: Vec::new(),
        })
        .collect();
    handler
        .handle(&batch)
        .expect("the batch is applied, not retried")
}

/// Stripe as it is now: one customer's current state, whatever is asked.
struct StripeNow(Value);

impl RemoteReader for StripeNow {
    fn current(&self, _: &AccountId, _: &str, _: &str) -> Result<RemoteObject, ApplyError> {
        Ok(RemoteObject::Live(self.0.clone()))
    }

    fn children(
        &self,
        _: &AccountId,
        _: &Resource,
        _: &Child,
        id: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        panic!("customers have no child lists, yet {id}'s were read")
    }
}

/// A person's edit in Stripe made just before a write of ours, whose
/// webhook comes after stripe-outbound recorded that write and before the
/// write's echo: newer than the stored version, yet its state lacks our
/// write. Applied as it is, it would roll the write back and pass the
/// rollback on to Salesforce, and the echo that restores the row is passed
/// on nowhere. It is settled by reading the customer instead, on every
/// path, the worker's included.
#[test]
fn a_stripe_edit_older_than_our_acknowledged_write_does_not_roll_it_back() {
    let made = chrono::Utc::now().timestamp() - 5;
    let edit = format!(
        r#"{{"id":"evt_person","type":"customer.updated","created":{made},
        "request":{{"id":"req_person","idempotency_key":null}},
        "data":{{"object":{{"id":"cus_pend","object":"customer","email":"p@example.com",
            "name":"Older name","phone":"+1 555 0199"}}}}}}"#
    );
    let now = json!({"id": "cus_pend", "object": "customer", "email": "p@example.com",
                     "name": "Newer name", "phone": "+1 555 0199"});
    let check = |db: &TestDb, conn: &mut PgConnection, how: &str| {
        assert_eq!(
            name_and_phone(conn),
            (Some("Newer name".into()), Some("+1 555 0199".into())),
            "{how}: an edit older than our acknowledged write rolled it back"
        );
        let name_passed_on: i64 = diesel::sql_query(
            "SELECT count(*) AS n FROM outbox WHERE origin = 'stripe' AND fields ? 'name'",
        )
        .get_result::<Count>(conn)
        .unwrap()
        .n;
        assert_eq!(name_passed_on, 0, "{how}: our own name was passed back on");
        assert_eq!(
            db.count("outbox"),
            3,
            "{how}: the person's phone is passed on"
        );
    };
    for (path, how) in [
        (apply::apply_batch as Path, "apply_batch"),
        (apply::apply_each, "apply_each"),
    ] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        customer_with_two_writes(&mut conn, 9001, 9002, &[9001, 9002]);
        let event = StripeEvent::parse(edit.as_bytes()).unwrap();
        conn.transaction(|conn| {
            path(
                conn,
                &StripeNow(now.clone()),
                &[&event],
                FanOut::ToOtherServices,
            )
        })
        .unwrap();
        check(&db, &mut conn, how);
    }
    let db = TestDb::migrated();
    let mut conn = db.conn();
    customer_with_two_writes(&mut conn, 9001, 9002, &[9001, 9002]);
    assert_eq!(
        through_the_worker(&db, StripeNow(now), &[edit.as_bytes()]),
        vec![Outcome::Done]
    );
    check(&db, &mut conn, "the inbound worker");
}

/// The same edit, made well before our write was acknowledged (older
/// than the clocks can be apart): its state has our write, and it is
/// written as it is, with no read.
#[test]
fn a_stripe_edit_well_before_our_last_acknowledged_write_is_written_without_a_read() {
    a_person_s_edit_is_written_without_a_read(&[
        "INSERT INTO outbox_deliveries (outbox_id, service, status) VALUES \
         (9001, 'stripe', 'synced'), (9002, 'stripe', 'synced')",
        "UPDATE outbox_deliveries SET delivered_at = now() - interval '10 minutes'",
    ]);
}

/// A person's edit in Stripe made 5 s ago is applied as it is, with no
/// read, on both paths, to the pending customer whose two writes of ours
/// have the delivery records `deliveries` makes.
fn a_person_s_edit_is_written_without_a_read(deliveries: &[&str]) {
    for path in [apply::apply_batch as Path, apply::apply_each] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        customer_with_two_writes(&mut conn, 9001, 9002, &[]);
        for sql in deliveries {
            diesel::sql_query(*sql).execute(&mut conn).unwrap();
        }
        let edit = person_edit("Person's name");
        let results = conn
            .transaction(|conn| path(conn, &Unreachable, &[&edit], FanOut::ToOtherServices))
            .unwrap();
        assert_eq!(results, vec![Ok(Applied::Upserted)]);
        assert_eq!(
            name_and_phone(&mut conn),
            (Some("Person's name".into()), Some("+1 555 0199".into()))
        );
    }
}

/// Our create's echo and, in the same batch, a person's edit made within
/// the clock skew of the create's acknowledgement. Before the batch the
/// customer is not linked; by the edit's turn it is, and the edit is
/// settled by reading. The read must be in the plan made before the
/// transaction, or every try of the batch misses it and the partition
/// stops for good.
#[test]
fn a_person_s_edit_batched_after_our_create_s_echo_is_read_before_the_transaction() {
    let db = TestDb::migrated();
    let mut conn = db.conn();
    created_by_us(&mut conn, &[(9001, "create", "Our name")]);
    let now = chrono::Utc::now().timestamp();
    let event = |id: &str, key: &str, created: i64, phone: &str| {
        format!(
            r#"{{"id":"{id}","type":"customer.updated","created":{created},
            "request":{{"id":"req_{id}","idempotency_key":{key}}},
            "data":{{"object":{{"id":"cus_pend","object":"customer","email":"p@example.com",
                "name":"Our name","phone":{phone},
                "metadata":{{"stripe_sync_id":"{PENDING_LOCAL}"}}}}}}}}"#
        )
    };
    let echo = event(
        "evt_created",
        r#""stripe-sync-outbox-9001""#,
        now - 10,
        "null",
    );
    let edit = event("evt_person", "null", now - 5, r#""+1 555 0199""#);
    let stripe_now = json!({"id": "cus_pend", "object": "customer", "email": "p@example.com",
                            "name": "Our name", "phone": "+1 555 0199",
                            "metadata": {"stripe_sync_id": PENDING_LOCAL}});
    assert_eq!(
        through_the_worker(
            &db,
            StripeNow(stripe_now),
            &[echo.as_bytes(), edit.as_bytes()]
        ),
        vec![Outcome::Done, Outcome::Done]
    );
    assert_eq!(
        name_and_phone(&mut conn),
        (Some("Our name".into()), Some("+1 555 0199".into()))
    );
}

/// A write of ours recorded as failed may still be one Stripe performed
/// (it answered 2xx with a body we could not read, or refused a retry of a
/// key whose first attempt may have done the work): a person's edit made
/// within the clock skew of it is settled by reading, as for an
/// acknowledged write, on both paths; counted when Stripe did nothing, it
/// costs only a read.
#[test]
fn a_write_of_ours_recorded_failed_still_makes_a_near_stripe_edit_a_re_read() {
    for path in [apply::apply_batch as Path, apply::apply_each] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        customer_with_two_writes(&mut conn, 9001, 9002, &[]);
        diesel::sql_query(
            "INSERT INTO outbox_deliveries (outbox_id, service, status, error) VALUES \
             (9001, 'stripe', 'synced', NULL), (9002, 'stripe', 'failed', 'unreadable answer')",
        )
        .execute(&mut conn)
        .unwrap();
        let edit = person_edit("Older name");
        let now = json!({"id": "cus_pend", "object": "customer", "email": "p@example.com",
                         "name": "Newer name", "phone": "+1 555 0199"});
        let results = conn
            .transaction(|conn| path(conn, &StripeNow(now), &[&edit], FanOut::ToOtherServices))
            .unwrap();
        assert_eq!(results, vec![Ok(Applied::TieResolved)]);
        assert_eq!(
            name_and_phone(&mut conn),
            (Some("Newer name".into()), Some("+1 555 0199".into())),
            "an edit older than our write Stripe performed rolled it back"
        );
    }
}

/// A person's edit in Stripe of the pending customer's name (and its
/// phone), made 5 s ago: not an echo of ours.
fn person_edit(name: &str) -> StripeEvent {
    let made = chrono::Utc::now().timestamp() - 5;
    StripeEvent::parse(
        format!(
            r#"{{"id":"evt_person","type":"customer.updated","created":{made},
            "request":{{"id":"req_person","idempotency_key":null}},
            "data":{{"object":{{"id":"cus_pend","object":"customer","email":"p@example.com",
                "name":"{name}","phone":"+1 555 0199"}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A Stripe no test may read.
struct Unreachable;

impl RemoteReader for Unreachable {
    fn current(&self, _: &AccountId, path: &str, id: &str) -> Result<RemoteObject, ApplyError> {
        panic!("{path}/{id} was read")
    }

    fn children(
        &self,
        _: &AccountId,
        _: &Resource,
        _: &Child,
        id: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        panic!("{id}'s lists were read")
    }
}

/// An event whose `account` is not an account (ingest routes it as it
/// came) is dead-lettered by the worker, naming why, and leaves no claim;
/// its neighbour in the batch is applied.
#[test]
fn an_event_with_a_malformed_account_is_dead_lettered_and_its_neighbour_applied() {
    let db = TestDb::migrated();
    let mut bad = crate::support::fixtures::customer_event(
        "evt_bad_account",
        "customer.created",
        10,
        "cus_bad_account",
        serde_json::json!({"email": "bad@example.com"}),
    );
    bad["account"] = serde_json::json!("acct_1/../x");
    let good = crate::support::fixtures::customer_event(
        "evt_good_account",
        "customer.created",
        10,
        "cus_good_account",
        serde_json::json!({"email": "good@example.com"}),
    );
    let (bad, good) = (bad.to_string(), good.to_string());
    let outcomes = through_the_worker(&db, Unreachable, &[bad.as_bytes(), good.as_bytes()]);
    match outcomes.as_slice() {
        [Outcome::DeadLetter(reason), Outcome::Done] => {
            assert!(reason.contains("invalid account"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        db.count("event_ledger WHERE event_id = 'evt_bad_account'"),
        0
    );
    assert_eq!(
        db.count("event_ledger WHERE event_id = 'evt_good_account'"),
        1
    );
    assert_eq!(db.count("customers WHERE email = 'good@example.com'"), 1);
}

/// A body `jsonb` would refuse though the event parsed (a lone surrogate in
/// a field the parser skips) is applied, and kept in `stripe.events` as
/// the text it came as, beside the rest of the batch.
#[test]
fn an_event_whose_body_jsonb_refuses_is_applied_and_kept_as_received() {
    let db = TestDb::migrated();
    let odd = crate::support::fixtures::customer_event(
        "evt_odd_body",
        "customer.created",
        10,
        "cus_odd_body",
        serde_json::json!({"email": "odd@example.com"}),
    )
    .to_string()
    .replacen(
        "\"data\":{",
        "\"data\":{\"previous_attributes\":{\"x\":\"\\ud800\"},",
        1,
    );
    let fine = crate::support::fixtures::customer_event(
        "evt_fine_body",
        "customer.created",
        10,
        "cus_fine_body",
        serde_json::json!({"email": "fine@example.com"}),
    )
    .to_string();
    assert!(odd.contains("\\ud800"), "{odd}");
    let outcomes =
        through_the_worker_keeping(&db, Unreachable, &[odd.as_bytes(), fine.as_bytes()], true);
    assert_eq!(outcomes, vec![Outcome::Done, Outcome::Done]);
    assert_eq!(
        db.count("customers WHERE email IN ('odd@example.com', 'fine@example.com')"),
        2
    );
    assert_eq!(db.count("stripe.events WHERE id = 'evt_fine_body'"), 1);
    assert_eq!(
        db.count(&format!(
            "stripe.events WHERE id = 'evt_odd_body' AND data::text = '{}'",
            odd.replace('\'', "''")
        )),
        1,
        "kept byte for byte"
    );
}
