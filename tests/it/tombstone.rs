//! A service's report that a customer is deleted, racing an API update of
//! that customer: the outbox must hold the two changes in the order they
//! took the customer's row lock, since the relay publishes in outbox id
//! order and the outbound workers apply in that order. A delete passed on
//! before the update that committed first would reach Salesforce first,
//! and the update after it would write to (or, unlinked, create) a
//! Contact for a customer deleted everywhere.
//!
//! Deterministic: the API's transaction is paused right after it locked
//! the row (its first statement), the apply is started and runs until it
//! waits for that lock, and only then does the API write its row and
//! outbox row and commit.

use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};
use serde_json::{json, Value};
use stripe_sync::apply::{self, ApplyError, FanOut, RemoteReader};
use stripe_sync::customers::CustomerId;
use stripe_sync::customers::{self, input::CustomerPatch};
use stripe_sync::registry::{Child, Resource};
use stripe_sync::salesforce::apply::Context;
use stripe_sync::salesforce::event::{SalesforceEvent, SOURCE_POLL};
use stripe_sync::stripe::{AccountId, RemoteObject, StripeEvent};

use crate::support::db::TestDb;

pub(crate) const LOCAL: &str = "00000000-0000-4000-8000-00000000d001";
pub(crate) const ORG: &str = "00D000000000001AAA";
pub(crate) const CONTACT: &str = "003000000000001AAA";
pub(crate) const INTEGRATION_USER: &str = "005000000000009AAA";
pub(crate) const PERSON: &str = "005000000000001AAA";

/// A delete needs no read from Stripe.
pub(crate) struct NoReads;

impl RemoteReader for NoReads {
    fn current(&self, _: &AccountId, _: &str, id: &str) -> Result<RemoteObject, ApplyError> {
        panic!("a customer.deleted needs no re-read, yet {id} was read")
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

/// A live customer, linked to a Stripe customer and a Salesforce Contact,
/// with nothing in flight.
pub(crate) fn setup(conn: &mut PgConnection) {
    for sql in [
        format!("INSERT INTO customers (id, email, name) VALUES ('{LOCAL}', 'r@example.com', 'Before')"),
        format!(
            "INSERT INTO id_map (service, account, entity, external_id, local_id, remote_version) VALUES \
             ('stripe', 'platform', 'customer', 'cus_race', '{LOCAL}', 100), \
             ('salesforce', '{ORG}', 'contact', '{CONTACT}', '{LOCAL}', 1764583200000)"
        ),
    ] {
        diesel::sql_query(sql).execute(conn).unwrap();
    }
}

fn stripe_deleted() -> StripeEvent {
    let event = json!({
        "id": "evt_race_deleted", "object": "event", "type": "customer.deleted", "created": 200,
        "livemode": false,
        "data": {"object": {"id": "cus_race", "object": "customer", "email": "r@example.com",
                            "name": "Before", "metadata": {}}},
    });
    StripeEvent::parse(&serde_json::to_vec(&event).unwrap()).unwrap()
}

fn contact_deleted() -> SalesforceEvent {
    let record = json!({
        "Id": CONTACT, "LastName": "Before", "Email": "r@example.com", "IsDeleted": true,
        "SystemModstamp": "2025-12-01T10:00:01.000+0000", "LastModifiedById": PERSON,
    });
    SalesforceEvent::of_record(record.as_object().unwrap().clone(), Some(ORG), SOURCE_POLL).unwrap()
}

#[derive(QueryableByName)]
struct Waiting {
    #[diesel(sql_type = Bool)]
    waiting: bool,
}

/// Polls until the backend `pid` waits for a lock, and hands `applying`
/// (the thread that drives `pid`) back. Should that thread end first, its
/// panic is raised here as it is, and a clean finish is reported as never
/// having waited, without running out the clock.
fn wait_until_blocked<'s>(
    watch: &mut PgConnection,
    pid: i32,
    applying: ScopedJoinHandle<'s, ()>,
) -> ScopedJoinHandle<'s, ()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w: Waiting = diesel::sql_query(
            "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) AS waiting \
               FROM pg_stat_activity WHERE pid = $1",
        )
        .bind::<Integer, _>(pid)
        .get_result(watch)
        .unwrap();
        if w.waiting {
            return applying;
        }
        if applying.is_finished() {
            if let Err(panic) = applying.join() {
                std::panic::resume_unwind(panic);
            }
            panic!("the apply finished without waiting for the customer's row lock");
        }
        assert!(
            Instant::now() < deadline,
            "the apply never waited for the customer's row lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Passed {
    #[diesel(sql_type = Text)]
    operation: String,
    #[diesel(sql_type = Text)]
    origin: String,
}

/// Runs `tombstone` (in its own transaction, as the workers do) while an
/// API update holds the customer's row lock, lets the update commit, and
/// returns the customer's outbox rows in the order the relay publishes
/// them.
fn race(tombstone: impl FnOnce(&mut PgConnection) + Send) -> Vec<Passed> {
    race_with(api_update, tombstone)
}

/// The rest of an API update, after its row lock.
fn api_update(api: &mut PgConnection) {
    let patch = CustomerPatch {
        name: Some(Some("After".into())),
        ..CustomerPatch::default()
    };
    customers::update(api, LOCAL.parse().unwrap(), patch, None).expect("the update is accepted");
}

/// The rest of an API DELETE, after its row lock.
fn api_delete(api: &mut PgConnection) {
    let row = customers::delete(api, LOCAL.parse().unwrap(), None).expect("the delete is accepted");
    assert!(row.deleted);
}

/// [`race`] with the API's `write` (run after its row lock, as a
/// savepoint in the transaction that holds it).
fn race_with(
    write: fn(&mut PgConnection),
    tombstone: impl FnOnce(&mut PgConnection) + Send,
) -> Vec<Passed> {
    let db = TestDb::migrated();
    let (mut api, mut worker, mut watch) = (db.conn(), db.conn(), db.conn());
    setup(&mut api);
    let id: CustomerId = LOCAL.parse().unwrap();
    let worker_pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut worker)
        .unwrap()
        .pid;
    std::thread::scope(|s| {
        api.transaction::<_, diesel::result::Error, _>(|api| {
            // What the API's writes do first (`customers::lock`): the row lock.
            diesel::sql_query(format!(
                "SELECT id FROM customers WHERE id = '{LOCAL}' FOR NO KEY UPDATE"
            ))
            .execute(api)?;
            let applying = s.spawn(move || {
                worker
                    .transaction::<_, diesel::result::Error, _>(|conn| {
                        tombstone(conn);
                        Ok(())
                    })
                    .unwrap()
            });
            let applying = wait_until_blocked(&mut watch, worker_pid, applying);
            write(api);
            assert!(!applying.is_finished(), "the apply must wait for the API");
            Ok(())
        })
        .unwrap();
    });
    let row = customers::get(&mut api, id).unwrap();
    assert!(
        row.deleted,
        "the report's delete is applied after the API's write"
    );
    outbox(&mut api)
}

/// The customer's outbox rows in the order the relay publishes them.
fn outbox(conn: &mut PgConnection) -> Vec<Passed> {
    diesel::sql_query(format!(
        "SELECT operation, origin FROM outbox WHERE local_id = '{LOCAL}' ORDER BY id"
    ))
    .load(conn)
    .unwrap()
}

fn passed(operation: &str, origin: &str) -> Passed {
    Passed {
        operation: operation.into(),
        origin: origin.into(),
    }
}

/// Stripe's `customer.deleted`, one event at a time.
pub(crate) fn per_event(conn: &mut PgConnection) {
    let event = stripe_deleted();
    let results = apply::apply_each(conn, &NoReads, &[&event], FanOut::ToOtherServices).unwrap();
    assert_eq!(results, vec![Ok(apply::Applied::Deleted)]);
}

/// Stripe's `customer.deleted`, folded in a batch.
pub(crate) fn batch(conn: &mut PgConnection) {
    let event = stripe_deleted();
    let results = apply::apply_batch(conn, &NoReads, &[&event], FanOut::ToOtherServices).unwrap();
    assert_eq!(results, vec![Ok(apply::Applied::Deleted)]);
}

/// Salesforce's deleted Contact version.
pub(crate) fn salesforce(conn: &mut PgConnection) {
    let ctx = Context {
        org_id: ORG.into(),
        user_id: INTEGRATION_USER.into(),
        external_id_field: "StripeSync_Id__c".into(),
    };
    let applied = stripe_sync::salesforce::apply::apply(conn, &ctx, &contact_deleted()).unwrap();
    assert_eq!(applied, apply::Applied::Deleted);
}

#[test]
fn a_stripe_delete_applied_per_event_is_passed_on_after_the_update_it_waited_for() {
    assert_eq!(
        race(per_event),
        [passed("update", "local"), passed("delete", "stripe")]
    );
}

#[test]
fn a_stripe_delete_applied_in_a_batch_is_passed_on_after_the_update_it_waited_for() {
    assert_eq!(
        race(batch),
        [passed("update", "local"), passed("delete", "stripe")]
    );
}

#[test]
fn a_salesforce_delete_is_passed_on_after_the_update_it_waited_for() {
    assert_eq!(
        race(salesforce),
        [passed("update", "local"), passed("delete", "salesforce")]
    );
}

/// A deletion Stripe reports while an API DELETE of the customer holds the
/// row lock finds the row deleted once it gets the lock: one deletion is
/// passed on, the API's.
#[test]
fn a_stripe_delete_racing_an_api_delete_is_passed_on_once() {
    for (name, path) in [
        ("per event", per_event as fn(&mut PgConnection)),
        ("batch", batch),
    ] {
        assert_eq!(
            race_with(api_delete, path),
            [passed("delete", "local")],
            "{name}"
        );
    }
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Tombstone {
    #[diesel(sql_type = Text)]
    deleted_at: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    /// Everything else a change moves: the columns and `updated_at`.
    #[diesel(sql_type = Text)]
    content: String,
}

/// A deletion reported for a customer already deleted here (through the
/// API, before the service knew) leaves its tombstone as it is, the time
/// of the first deletion included, and passes nothing on: the first
/// deletion is on its way out already. Stripe's paths still write its last
/// snapshot to the row, a change of its own: the version (the ETag) moves
/// with it, once, on both paths alike.
#[test]
fn a_deletion_reported_for_a_customer_deleted_here_leaves_the_tombstone_alone() {
    for (name, path, writes_snapshot) in [
        ("per event", per_event as fn(&mut PgConnection), true),
        ("batch", batch, true),
        ("salesforce", salesforce, false),
    ] {
        let db = TestDb::migrated();
        let mut conn = db.conn();
        setup(&mut conn);
        customers::delete(&mut conn, LOCAL.parse().unwrap(), None).unwrap();
        let tombstone = || {
            diesel::sql_query(format!(
                "SELECT deleted_at::text AS deleted_at, version, \
                        json_build_array(email, name, phone, description, metadata, \
                                         stripe_object, updated_at)::text AS content \
                   FROM customers WHERE id = '{LOCAL}'"
            ))
            .get_result::<Tombstone>(&mut db.conn())
            .unwrap()
        };
        let before = tombstone();
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            path(conn);
            Ok(())
        })
        .unwrap();
        let after = tombstone();
        assert_eq!(after.deleted_at, before.deleted_at, "{name}");
        if writes_snapshot {
            assert_ne!(
                after.content, before.content,
                "{name}: the snapshot is written"
            );
            assert_eq!(
                after.version,
                before.version + 1,
                "{name}: the row changed, its version must move too"
            );
        } else {
            assert_eq!(after, before, "{name}");
        }
        assert_eq!(outbox(&mut conn), [passed("delete", "local")], "{name}");
    }
}
