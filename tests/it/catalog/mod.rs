//! The catalog end to end: signed webhooks of every registered type
//! through serve, the broker and stripe-inbound into `stripe.<relation>`,
//! with Postgres and the broker real. Stripe's read API (re-reads, nested
//! lists, backfill, diff, the Events API) is the fixture-backed fake in
//! `support::catalog_stripe`: neither localstripe nor stripe-stateful-mock
//! has most of these types or their nested lists.
//!
//! `pull` holds the backfill, diff and reconcile tests, `accounts` those
//! of the accounts they cover, `resync` reads by id, `http` the mirror's
//! read API; the helpers here build events from the fixtures and read the
//! relations.

mod accounts;
mod backfill;
mod http;
mod platforms;
mod pull;
mod resync;

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Jsonb, Nullable, Text};
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use stripe_sync::registry::{self, Child, Deletes, Identity, Resource, RESOURCES};
use stripe_sync::stripe::PLATFORM_ACCOUNT;

use crate::support::catalog_stripe::{CatalogStripe, Fault};
use crate::support::fixtures;
use crate::support::stack::{Options, Stack};

pub(super) const CONNECTED: &str = "acct_1CatalogTest";
/// What an object of a type kept under a parent names when Stripe's
/// example names none.
const PARENT_OF_NESTED: &str = "acct_1CatalogParent";
pub(super) const T: i64 = 1_760_000_000;
/// Items of each list the payload leaves out: more than one page.
const LISTED_ITEMS: usize = 120;

pub(super) fn mirrored() -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().filter(|r| !r.is_local_customer())
}

pub(super) fn child_item(child: &Child, parent_id: &str, n: usize) -> Value {
    let mut item = fixtures::resource(child.item_object);
    item["id"] = json!(format!("{}_{parent_id}_{n}", &child.relation[..4]));
    item
}

/// Stripe's example of the type as version `v` of object `id`, created at
/// `created`, with embedded child lists carried whole.
pub(super) fn object(r: &Resource, id: &str, created: i64, v: &str, items: usize) -> Value {
    let mut o = fixtures::resource(r.object);
    match r.identity {
        Identity::Id | Identity::ConnectedAccount => o["id"] = json!(id),
        // No id of its own: its customer is its key.
        Identity::Customer => o["customer"] = json!(id),
    }
    if o.get("created").is_some() {
        o["created"] = json!(created);
    }
    // Stripe's example card and bank account are a customer's; a
    // connected account's name it, as every object kept under a parent
    // names its parent.
    if let registry::Listing::Nested(parent, _) = r.listing {
        if !o[parent.field].is_string() {
            o[parent.field] = json!(PARENT_OF_NESTED);
        }
    }
    o["metadata"] = json!({ "v": v });
    for child in r.children.iter().filter(|c| c.embedded) {
        let data: Vec<Value> = (0..items).map(|n| child_item(child, id, n)).collect();
        o[child.field] = json!({"object": "list", "data": data, "has_more": false, "url": "/v1/x"});
    }
    o
}

/// A signed-to-be event of `account`; an object of a type kept under a
/// connected account names the account reporting it, as Stripe's do.
pub(super) fn event(account: &str, id: &str, kind: &str, created: i64, mut object: Value) -> Value {
    let under_account = object["object"]
        .as_str()
        .and_then(registry::by_object)
        .is_some_and(|r| r.listed_per() == Some(registry::Parent::ACCOUNT));
    if account != PLATFORM_ACCOUNT && under_account {
        object["account"] = json!(account);
    }
    let mut e = fixtures::event(id, kind, created, object);
    if account != PLATFORM_ACCOUNT {
        e["account"] = json!(account);
    }
    e
}

fn event_id(account: &str, r: &Resource, n: usize) -> String {
    let acct = if account == PLATFORM_ACCOUNT {
        "p"
    } else {
        "c"
    };
    format!("evt_{acct}_{}_{n}", r.relation)
}

#[derive(QueryableByName, Debug)]
pub(super) struct Mirrored {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Jsonb)]
    data: Value,
    #[diesel(sql_type = Bool)]
    deleted: bool,
    #[diesel(sql_type = BigInt)]
    remote_version: i64,
}

pub(super) fn rows(stack: &Stack, r: &Resource, account: &str) -> Vec<Mirrored> {
    diesel::sql_query(format!(
        "SELECT id, data, deleted, remote_version FROM {} WHERE account = $1 ORDER BY id",
        r.table()
    ))
    .bind::<Text, _>(account)
    .load(&mut stack.db.conn())
    .unwrap()
}

fn live_children(stack: &Stack, child: &Child, account: &str, parent: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Text)]
        id: String,
    }
    diesel::sql_query(format!(
        "SELECT id FROM {} WHERE account = $1 AND \"{}\" = $2 AND NOT deleted ORDER BY position",
        child.table(),
        child.parent_column
    ))
    .bind::<Text, _>(account)
    .bind::<Text, _>(parent)
    .load::<Id>(&mut stack.db.conn())
    .unwrap()
    .into_iter()
    .map(|i| i.id)
    .collect()
}

pub(super) async fn post_all(stack: &Stack, events: &[Value]) {
    for chunk in events.chunks(16) {
        let posts = chunk.iter().map(|e| stack.post_event(e));
        for status in futures::future::join_all(posts).await {
            assert!(status.is_success(), "webhook answered {status}");
        }
    }
}

pub(super) async fn catalog_stack(fake: &CatalogStripe) -> Stack {
    Stack::start(Options {
        stripe_base: fake.base(),
        ..Options::default()
    })
    .await
}

/// Every registered type, on the platform and on a connected account with
/// the same ids: create, two updates and (for deletable types) a delete,
/// each sent twice, all shuffled. Each relation ends with one row per
/// (account, id) holding the newest state, tombstones final, child lists
/// complete (checkout line items read past one page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_type_converges_under_duplicates_and_shuffling() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let mut events = Vec::new();
    for account in [PLATFORM_ACCOUNT, CONNECTED] {
        for r in mirrored() {
            let id = format!("t_{}", r.relation);
            for child in r.children.iter().filter(|c| !c.embedded) {
                let items = (0..LISTED_ITEMS)
                    .map(|n| child_item(child, &id, n))
                    .collect();
                fake.put_children(account, r.path, &id, child, items);
            }
            for (n, v) in ["1", "2", "3"].into_iter().enumerate() {
                let kind = if n == 0 { "created" } else { "updated" };
                let o = object(r, &id, T + n as i64, v, 2);
                events.push(event(
                    account,
                    &event_id(account, r, n),
                    &format!("{}.{kind}", r.object),
                    T + n as i64,
                    o,
                ));
            }
            if r.identity == Identity::ConnectedAccount {
                // Both endpoints report the one account, kept under the
                // platform: same-second events of the two are a tie, read
                // back from Stripe as the platform.
                fake.put(PLATFORM_ACCOUNT, r.path, object(r, &id, T + 2, "3", 2));
            }
            if r.deletes == Deletes::Tombstone {
                let o = object(r, &id, T + 3, "3", 0);
                let kind = format!("{}.deleted", r.object);
                events.push(event(account, &event_id(account, r, 3), &kind, T + 3, o));
            }
        }
    }
    let distinct = events.len() as i64;
    let mut sent: Vec<Value> = events.iter().chain(events.iter()).cloned().collect();
    sent.shuffle(&mut rand::thread_rng());
    post_all(&stack, &sent).await;
    stack.wait_ledger(distinct, Duration::from_secs(120)).await;

    for account in [PLATFORM_ACCOUNT, CONNECTED] {
        for r in mirrored() {
            let id = format!("t_{}", r.relation);
            let got = rows(&stack, r, account);
            if r.identity == Identity::ConnectedAccount && account != PLATFORM_ACCOUNT {
                assert!(
                    got.is_empty(),
                    "a connected account is the platform's row: {got:?}"
                );
                continue;
            }
            assert_eq!(got.len(), 1, "{account} {}: {got:?}", r.relation);
            let row = &got[0];
            assert_eq!(row.id, id);
            match r.deletes {
                Deletes::Tombstone => {
                    assert!(row.deleted, "{account} {} not tombstoned", r.relation);
                    assert_eq!(row.remote_version, T + 3, "{}", r.relation);
                }
                Deletes::Never => {
                    assert!(!row.deleted, "{account} {} deleted", r.relation);
                    assert_eq!(row.data["metadata"]["v"], "3", "{account} {}", r.relation);
                    assert_eq!(row.remote_version, T + 2, "{}", r.relation);
                }
            }
            for child in r.children {
                let live = live_children(&stack, child, account, &id);
                let want = match (r.deletes, child.embedded) {
                    (Deletes::Tombstone, _) => 0,
                    (_, false) => LISTED_ITEMS,
                    (_, true) => 2,
                };
                assert_eq!(live.len(), want, "{account} {}", child.relation);
            }
        }
    }
    // Typed columns are computed from the newest object.
    let (amount, currency): (Option<i64>, Option<String>) = {
        #[derive(QueryableByName)]
        struct Pi {
            #[diesel(sql_type = Nullable<BigInt>)]
            amount: Option<i64>,
            #[diesel(sql_type = Nullable<Text>)]
            currency: Option<String>,
        }
        let pi: Pi = diesel::sql_query(
            "SELECT amount, currency FROM stripe.payment_intents WHERE account = 'platform'",
        )
        .get_result(&mut stack.db.conn())
        .unwrap();
        (pi.amount, pi.currency)
    };
    let example = fixtures::resource("payment_intent");
    assert_eq!(amount, example["amount"].as_i64());
    assert_eq!(currency.as_deref(), example["currency"].as_str());
    assert_eq!(
        stack.db.count("event_ledger WHERE outcome = 'ignored'"),
        0,
        "every type here is registered"
    );
    stack.stop().await;
}

/// Events are routed by the object they carry, not their type's prefix;
/// `customer.subscription.deleted` is a cancel (a state), not a delete; a
/// type nobody registered is acknowledged and ledgered as ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_route_by_their_object_not_their_name() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let by = |o: &str| registry::by_object(o).unwrap();
    let sub = by("subscription");
    let mut canceled = object(sub, "sub_route", T + 1, "canceled", 1);
    canceled["status"] = json!("canceled");
    let events = [
        event(
            PLATFORM_ACCOUNT,
            "evt_r1",
            "customer.subscription.created",
            T,
            object(sub, "sub_route", T, "1", 1),
        ),
        event(
            PLATFORM_ACCOUNT,
            "evt_r2",
            "customer.subscription.deleted",
            T + 1,
            canceled,
        ),
        event(
            PLATFORM_ACCOUNT,
            "evt_r3",
            "charge.dispute.created",
            T,
            object(by("dispute"), "dp_route", T, "1", 0),
        ),
        event(
            PLATFORM_ACCOUNT,
            "evt_r4",
            "charge.refund.updated",
            T,
            object(by("refund"), "re_route", T, "1", 0),
        ),
        event(
            PLATFORM_ACCOUNT,
            "evt_r5",
            "customer.tax_id.created",
            T,
            object(by("tax_id"), "txi_route", T, "1", 0),
        ),
        event(
            PLATFORM_ACCOUNT,
            "evt_r6",
            "balance.available",
            T,
            json!({"object": "balance", "available": []}),
        ),
        // A customer's card (a source) is not a connected account's
        // external account, though both are `card` objects.
        event(PLATFORM_ACCOUNT, "evt_r7", "customer.source.created", T, {
            let mut card = fixtures::resource("card");
            card["customer"] = json!("cus_route");
            card
        }),
        event(
            CONNECTED,
            "evt_r8",
            "account.external_account.created",
            T,
            object(by("card"), "card_route", T, "1", 0),
        ),
        // A person of another account than the one reporting it: kept
        // under the reporter and read under the other, so not taken.
        {
            let mut e = event(
                CONNECTED,
                "evt_r9",
                "person.updated",
                T,
                object(by("person"), "person_route", T, "1", 0),
            );
            e["data"]["object"]["account"] = json!("acct_1SomeoneElse");
            e
        },
    ];
    post_all(&stack, &events).await;
    stack
        .wait_ledger(events.len() as i64, Duration::from_secs(60))
        .await;
    let s = &rows(&stack, sub, PLATFORM_ACCOUNT)[0];
    assert!(!s.deleted, "a canceled subscription is a state");
    assert_eq!(s.data["status"], "canceled");
    assert_eq!(
        rows(&stack, by("dispute"), PLATFORM_ACCOUNT)[0].id,
        "dp_route"
    );
    assert_eq!(
        rows(&stack, by("refund"), PLATFORM_ACCOUNT)[0].id,
        "re_route"
    );
    assert_eq!(
        rows(&stack, by("tax_id"), PLATFORM_ACCOUNT)[0].id,
        "txi_route"
    );
    for ignored in ["evt_r6", "evt_r7", "evt_r9"] {
        assert_eq!(
            stack.db.count(&format!(
                "event_ledger WHERE event_id = '{ignored}' AND outcome = 'ignored'"
            )),
            1,
            "{ignored}"
        );
    }
    assert_eq!(rows(&stack, by("card"), PLATFORM_ACCOUNT).len(), 0);
    assert_eq!(rows(&stack, by("card"), CONNECTED)[0].id, "card_route");
    stack.stop().await;
}

/// Same-second ties are re-read from Stripe with `Stripe-Account` for a
/// connected account's object; a 404 that is not `resource_missing` is
/// retried, never a tombstone; `resource_missing` is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_are_re_read_and_only_resource_missing_deletes() {
    let fake = CatalogStripe::start();
    // One lane: the watch sees every connection of the database, so with a
    // second lane its transaction would be counted against the lane that is
    // calling Stripe (CI saw exactly that), and the count would mean nothing.
    let stack = Stack::start(Options {
        stripe_base: fake.base(),
        apply_lanes: 1,
        ..Options::default()
    })
    .await;
    let product = registry::by_object("product").unwrap();
    let invoice = registry::by_object("invoice").unwrap();
    for account in [PLATFORM_ACCOUNT, CONNECTED] {
        // Stripe's current state, newer than either tied event.
        fake.put(
            account,
            "products",
            object(product, "prod_tie", T, "reread", 0),
        );
        fake.put(
            account,
            "invoices",
            object(invoice, "in_tie", T, "reread", 2),
        );
    }
    // The first re-read of prod_tie meets a 404 without resource_missing.
    fake.fault("products/prod_tie", Fault::PlainNotFound);
    // Every call to Stripe is made with no transaction of the engine open.
    fake.watch_transactions(&stack.db.url, &stack.db.name);
    let mut first = Vec::new();
    let mut tied = Vec::new();
    for account in [PLATFORM_ACCOUNT, CONNECTED] {
        for (r, id) in [
            (product, "prod_tie"),
            (invoice, "in_tie"),
            (product, "prod_gone"),
        ] {
            let e = |n: usize, v: &str| {
                let eid = format!("{}_{id}_{n}", event_id(account, r, n));
                event(
                    account,
                    &eid,
                    &format!("{}.updated", r.object),
                    T,
                    object(r, id, T, v, 2),
                )
            };
            first.push(e(0, "first"));
            tied.push(e(1, "tied"));
        }
    }
    post_all(&stack, &first).await;
    stack
        .wait_ledger(first.len() as i64, Duration::from_secs(60))
        .await;
    post_all(&stack, &tied).await;
    stack
        .wait_ledger((first.len() + tied.len()) as i64, Duration::from_secs(60))
        .await;
    for account in [PLATFORM_ACCOUNT, CONNECTED] {
        let p = rows(&stack, product, account);
        let (gone, tie) = (&p[0], &p[1]);
        assert_eq!(
            (gone.id.as_str(), tie.id.as_str()),
            ("prod_gone", "prod_tie")
        );
        assert!(
            gone.deleted,
            "{account}: resource_missing on the re-read is a delete"
        );
        assert!(!tie.deleted, "{account}: a plain 404 must not tombstone");
        assert_eq!(tie.data["metadata"]["v"], "reread", "{account}");
        let inv = &rows(&stack, invoice, account)[0];
        assert_eq!(inv.data["metadata"]["v"], "reread", "{account}");
    }
    let calls = fake.calls();
    let reads = |account: &str, path: &str| {
        calls
            .iter()
            .filter(|c| c.account == account && c.path == path)
            .count()
    };
    assert!(reads(CONNECTED, "/v1/products/prod_tie") >= 1, "{calls:?}");
    assert!(
        reads(PLATFORM_ACCOUNT, "/v1/products/prod_tie")
            + reads(CONNECTED, "/v1/products/prod_tie")
            >= 3,
        "the plain 404 was retried: {calls:?}"
    );
    assert_eq!(
        stack
            .db
            .count("event_ledger WHERE outcome = 'tie_resolved'"),
        tied.len() as i64
    );
    assert_eq!(
        fake.calls_in_transaction(),
        0,
        "Stripe was called while an apply transaction held its locks"
    );
    stack.stop().await;
}

/// Child lists follow their parent: a truncated list (`has_more`) is read
/// in full past 100 items, and a newer subscription without an item marks
/// that item deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_lists_are_complete_and_follow_their_parent() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let invoice = registry::by_object("invoice").unwrap();
    let sub = registry::by_object("subscription").unwrap();
    let lines = &invoice.children[0];
    let all: Vec<Value> = (0..150).map(|n| child_item(lines, "in_long", n)).collect();
    fake.put_nested(
        PLATFORM_ACCOUNT,
        "invoices",
        "in_long",
        "lines",
        all.clone(),
    );
    let mut long = object(invoice, "in_long", T, "1", 0);
    long["lines"] = json!({"object": "list", "data": all[..10], "has_more": true, "url": "/v1/invoices/in_long/lines"});

    // A list naming an item twice (the last listing wins) is applied, not
    // retried for ever.
    let credit_note = registry::by_object("credit_note").unwrap();
    let mut twice = object(credit_note, "cn_twice", T, "1", 2);
    let first_line = twice["lines"]["data"][0].clone();
    twice["lines"]["data"]
        .as_array_mut()
        .unwrap()
        .push(first_line);

    let v1 = object(sub, "sub_items", T, "1", 3);
    let mut v2 = object(sub, "sub_items", T + 1, "2", 3);
    v2["items"]["data"].as_array_mut().unwrap().remove(1);
    // v2 only after v1 is applied: within one batch only the newest state
    // is written, and the dropped item would never have been stored.
    let first = [
        event(PLATFORM_ACCOUNT, "evt_long", "invoice.updated", T, long),
        event(
            PLATFORM_ACCOUNT,
            "evt_twice",
            "credit_note.created",
            T,
            twice,
        ),
        event(
            PLATFORM_ACCOUNT,
            "evt_sub1",
            "customer.subscription.created",
            T,
            v1,
        ),
    ];
    post_all(&stack, &first).await;
    stack.wait_ledger(3, Duration::from_secs(60)).await;
    let cn_lines = &credit_note.children[0];
    assert_eq!(
        live_children(&stack, cn_lines, PLATFORM_ACCOUNT, "cn_twice").len(),
        2
    );
    let items = &sub.children[0];
    assert_eq!(
        live_children(&stack, items, PLATFORM_ACCOUNT, "sub_items").len(),
        3
    );
    let second = [event(
        PLATFORM_ACCOUNT,
        "evt_sub2",
        "customer.subscription.updated",
        T + 1,
        v2,
    )];
    post_all(&stack, &second).await;
    stack.wait_ledger(4, Duration::from_secs(60)).await;
    let got = live_children(&stack, lines, PLATFORM_ACCOUNT, "in_long");
    assert_eq!(got.len(), 150);
    assert_eq!(got[149], all[149]["id"].as_str().unwrap(), "in list order");
    let live = live_children(&stack, items, PLATFORM_ACCOUNT, "sub_items");
    let removed = child_item(items, "sub_items", 1)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(live.len(), 2);
    assert!(!live.contains(&removed));
    assert_eq!(
        stack.db.count(&format!(
            "stripe.subscription_items WHERE id = '{removed}' AND deleted"
        )),
        1,
        "the dropped item is kept, marked deleted"
    );
    stack.stop().await;
}

/// A checkout session's line items (which the payload leaves out) are read
/// when the session is new and whenever its status changes, and not on
/// every event: they cannot change otherwise, and each read is an API call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_line_items_are_read_when_the_status_changes() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let session = registry::by_object("checkout.session").unwrap();
    let items = &session.children[0];
    let serve = |n: usize| {
        let list = (0..n).map(|i| child_item(items, "cs_st", i)).collect();
        fake.put_nested(PLATFORM_ACCOUNT, session.path, "cs_st", "line_items", list);
    };
    let version = |n: i64, status: &str| {
        let mut o = object(session, "cs_st", T, &n.to_string(), 0);
        o["status"] = json!(status);
        event(
            PLATFORM_ACCOUNT,
            &format!("evt_st{n}"),
            "checkout.session.updated",
            T + n,
            o,
        )
    };
    let live = || live_children(&stack, items, PLATFORM_ACCOUNT, "cs_st").len();
    let reads = || {
        fake.calls()
            .iter()
            .filter(|c| c.path.ends_with("/cs_st/line_items"))
            .count()
    };
    // (event, status, items Stripe lists now, items expected, reads so far)
    let steps = [
        (0, "open", 1, 1, 1),     // new: read
        (1, "open", 2, 1, 1),     // same status: not read again
        (2, "complete", 3, 3, 2), // status changed: read
        (3, "complete", 4, 3, 2), // same status: not read
    ];
    for (n, status, listed, want, want_reads) in steps {
        serve(listed);
        post_all(&stack, &[version(n, status)]).await;
        stack.wait_ledger(n + 1, Duration::from_secs(60)).await;
        assert_eq!(live(), want, "after event {n}");
        assert_eq!(reads(), want_reads, "after event {n}");
    }
    stack.stop().await;
}

/// The migrated schema is the registry's: every relation and typed column
/// exists with the type the registry gives it.
#[test]
fn the_schema_matches_the_registry() {
    let db = crate::support::db::TestDb::migrated();
    for r in RESOURCES {
        let mut expect: Vec<(&str, &str, Vec<registry::Column>)> =
            vec![(r.relation, "", r.columns.to_vec())];
        for c in r.children {
            expect.push((c.relation, c.parent_column, c.columns.to_vec()));
        }
        for (relation, parent, columns) in expect {
            for base in ["account", "id", "data", "deleted", "synced_at"] {
                assert_eq!(
                    column_count(&db, relation, base, None),
                    1,
                    "{relation}.{base}"
                );
            }
            if !parent.is_empty() {
                assert_eq!(column_count(&db, relation, parent, Some("text")), 1);
            }
            for col in columns {
                let sql_type = match col.kind.sql_type() {
                    "timestamptz" => "timestamp with time zone",
                    other => other,
                };
                assert_eq!(
                    column_count(&db, relation, col.name, Some(sql_type)),
                    1,
                    "stripe.{relation}.{} ({sql_type})",
                    col.name
                );
            }
        }
    }
}

fn column_count(
    db: &crate::support::db::TestDb,
    relation: &str,
    column: &str,
    sql_type: Option<&str>,
) -> i64 {
    let type_check = sql_type
        .map(|t| format!(" AND data_type = '{t}'"))
        .unwrap_or_default();
    db.count(&format!(
        "information_schema.columns WHERE table_schema = 'stripe' AND table_name = '{relation}' \
         AND column_name = '{column}'{type_check}"
    ))
}

/// A webhook rendered in another API version than `STRIPE_API_VERSION`
/// fills the same typed columns: an invoice of 2024-06-20 and one of
/// 2025-03-31.basil, which moved the subscription under `parent` and a
/// line's price under `pricing`, both have them. The newer one is counted
/// as a version mismatch (the pinned one is not, by `VersionCheck`'s unit
/// test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_columns_are_right_for_objects_of_either_api_version() {
    use stripe_sync::metrics::API_VERSION_MISMATCHES;
    const BASIL: &str = "2025-03-31.basil";
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let invoice = registry::by_object("invoice").unwrap();
    let lines = &invoice.children[0];
    let without = |mut o: Value, fields: &[&str]| {
        for f in fields {
            o.as_object_mut().unwrap().remove(*f);
        }
        o
    };
    let listed =
        |item: Value| json!({"object": "list", "data": [item], "has_more": false, "url": "/v1/x"});

    let mut pinned = without(object(invoice, "in_pinned", T, "1", 0), &["parent"]);
    pinned["subscription"] = json!("sub_pinned");
    let mut line = without(child_item(lines, "in_pinned", 0), &["parent", "pricing"]);
    line["subscription"] = json!("sub_pinned");
    line["price"] = json!({"id": "price_pinned", "object": "price"});
    pinned["lines"] = listed(line);

    let mut basil = without(object(invoice, "in_basil", T, "1", 0), &["subscription"]);
    basil["parent"] = json!({"type": "subscription_details",
        "subscription_details": {"subscription": "sub_basil", "metadata": null}});
    let mut line = without(child_item(lines, "in_basil", 0), &["subscription", "price"]);
    line["parent"] = json!({"type": "subscription_item_details",
        "subscription_item_details": {"subscription": "sub_basil", "subscription_item": "si_1"}});
    line["pricing"] = json!({"type": "price_details",
        "price_details": {"price": "price_basil", "product": "prod_basil"}});
    basil["lines"] = listed(line);

    // A label no other test uses: the counter is the process's.
    let mismatches = || API_VERSION_MISMATCHES.with_label_values(&[BASIL]).get();
    let before = mismatches();
    let mut newer = event(PLATFORM_ACCOUNT, "evt_basil", "invoice.finalized", T, basil);
    newer["api_version"] = json!(BASIL);
    let older = event(
        PLATFORM_ACCOUNT,
        "evt_pinned",
        "invoice.finalized",
        T,
        pinned,
    );
    post_all(&stack, &[older, newer]).await;
    stack.wait_ledger(2, Duration::from_secs(60)).await;

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Typed {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Nullable<Text>)]
        subscription: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        price: Option<String>,
    }
    let typed =
        |sql: &str| -> Vec<Typed> { diesel::sql_query(sql).load(&mut stack.db.conn()).unwrap() };
    let invoices =
        typed("SELECT id, subscription, NULL::text AS price FROM stripe.invoices ORDER BY id");
    let want = |id: &str, sub: &str, price: Option<&str>| Typed {
        id: id.into(),
        subscription: Some(sub.into()),
        price: price.map(Into::into),
    };
    assert_eq!(
        invoices,
        [
            want("in_basil", "sub_basil", None),
            want("in_pinned", "sub_pinned", None)
        ]
    );
    let items = typed(
        "SELECT invoice AS id, subscription, price FROM stripe.invoice_line_items \
         WHERE NOT deleted ORDER BY invoice",
    );
    assert_eq!(
        items,
        [
            want("in_basil", "sub_basil", Some("price_basil")),
            want("in_pinned", "sub_pinned", Some("price_pinned"))
        ]
    );
    assert_eq!(
        mismatches() - before,
        1,
        "the basil webhook is reported, once"
    );
    stack.stop().await;
}

/// `entitlements.active_entitlement_summary.updated` replaces a customer's
/// active entitlements in `stripe.customer_active_entitlements`: one gone
/// from a newer summary is marked deleted, an older summary changes
/// nothing, a truncated one is read in full, and two in one second are
/// settled by reading the customer's entitlements from Stripe. Summaries
/// have no id: they are keyed, and ordered, by their customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entitlement_summary_replaces_the_customer_s_active_entitlements() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let summary = registry::by_object("entitlements.active_entitlement_summary").unwrap();
    let list = &summary.children[0];
    let entitlement = |id: &str| {
        let mut e = fixtures::resource("entitlements.active_entitlement");
        e["id"] = json!(id);
        e["lookup_key"] = json!(format!("key_{id}"));
        e
    };
    let of = |ids: &[&str], has_more: bool| {
        let mut s = fixtures::resource(summary.object);
        s["customer"] = json!("cus_ent");
        s["entitlements"] = json!({"object": "list", "has_more": has_more, "url": "/v1/x",
            "data": ids.iter().map(|id| entitlement(id)).collect::<Vec<_>>()});
        s
    };
    let updated = |id: &str, created: i64, object: Value| {
        event(
            PLATFORM_ACCOUNT,
            id,
            "entitlements.active_entitlement_summary.updated",
            created,
            object,
        )
    };
    let live = || live_children(&stack, list, PLATFORM_ACCOUNT, "cus_ent");

    // Keyed by the customer, like an object by its id.
    let first = updated("evt_ent_1", T, of(&["ent_a", "ent_b"], false));
    let body = serde_json::to_vec(&first).unwrap();
    let envelope = stripe_sync::stripe::EventEnvelope::parse(&body).unwrap();
    assert_eq!(envelope.object_id, "cus_ent");

    post_all(&stack, &[first]).await;
    stack.wait_ledger(1, Duration::from_secs(60)).await;
    assert_eq!(live(), ["ent_a", "ent_b"]);

    // A newer summary without ent_b, then an older one that still had it.
    let newer = updated("evt_ent_2", T + 10, of(&["ent_a"], false));
    let older = updated("evt_ent_3", T + 5, of(&["ent_a", "ent_b", "ent_c"], false));
    post_all(&stack, &[newer, older]).await;
    stack.wait_ledger(3, Duration::from_secs(60)).await;
    assert_eq!(
        live(),
        ["ent_a"],
        "gone from the newest summary, marked deleted"
    );
    assert_eq!(
        stack
            .db
            .count("stripe.customer_active_entitlements WHERE id = 'ent_b' AND deleted"),
        1
    );

    // Stripe lists the customer's entitlements for a truncated summary and
    // for two summaries of the same second.
    for id in ["ent_d", "ent_e"] {
        let mut e = entitlement(id);
        e["customer"] = json!("cus_ent");
        fake.put(PLATFORM_ACCOUNT, "entitlements/active_entitlements", e);
    }
    let truncated = updated("evt_ent_4", T + 20, of(&["ent_d"], true));
    post_all(&stack, &[truncated]).await;
    stack.wait_ledger(4, Duration::from_secs(60)).await;
    assert_eq!(
        live().len(),
        2,
        "read past the truncated list: {:?}",
        live()
    );
    let tie_a = updated("evt_ent_5", T + 30, of(&["ent_a"], false));
    let tie_b = updated("evt_ent_6", T + 30, of(&["ent_a", "ent_c"], false));
    post_all(&stack, &[tie_a, tie_b]).await;
    stack.wait_ledger(6, Duration::from_secs(60)).await;
    let mut now = live();
    now.sort();
    assert_eq!(now, ["ent_d", "ent_e"], "a tie is settled by Stripe's list");
    let stored: Vec<Mirrored> = rows(&stack, summary, PLATFORM_ACCOUNT);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, "cus_ent");
    assert_eq!(
        stored[0].data["entitlements"]["data"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "the stored summary holds the list as read: {}",
        stored[0].data
    );
    stack.stop().await;
}

/// A connected account authorizing and deauthorizing our Connect
/// application (`account.application.*`, which carry the application and
/// are keyed by the account): an authorization reads the account as the
/// platform; a deauthorization keeps its row, with the state it had,
/// marked deleted, and an older update arriving after it changes nothing; a
/// newer authorization brings it back as Stripe has it, and an older
/// deauthorization arriving after that changes nothing; one of the same
/// second is settled by reading the account, and a 403 that is not about
/// the account (a key without the permission) is waited out, never taken
/// for the account gone; an authorization
/// whose read finds no access (deauthorized again meanwhile) marks it
/// deleted instead of waiting forever; the platform's own authorization of
/// someone else's application is not about a connected account. Stripe's
/// read API is the fixture-backed fake (neither localstripe nor
/// stripe-stateful-mock has Connect applications), answering a connected
/// account the platform cannot see with 403, as Stripe does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_accounts_follow_their_authorization_of_our_application() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    let accounts = registry::by_object("account").unwrap();
    let acct = "acct_1Authorized";
    let account = |email: &str| {
        let mut a = fixtures::resource("account");
        a["id"] = json!(acct);
        a["email"] = json!(email);
        a
    };
    let application = json!({"id": "ca_ours", "object": "application", "name": "stripe-sync"});
    let app_event = |account: &str, id: &str, kind: &str, created: i64| {
        event(account, id, kind, created, application.clone())
    };
    let stored = || {
        let rows = rows(&stack, accounts, PLATFORM_ACCOUNT);
        let row = rows
            .into_iter()
            .find(|r| r.id == acct)
            .expect("the account's row");
        (
            row.data["email"].as_str().map(str::to_owned),
            row.deleted,
            row.remote_version,
        )
    };
    const AUTHORIZED: &str = "account.application.authorized";
    const DEAUTHORIZED: &str = "account.application.deauthorized";
    let wait = Duration::from_secs(60);

    let body = serde_json::to_vec(&app_event(acct, "evt_k", AUTHORIZED, T)).unwrap();
    let envelope = stripe_sync::stripe::EventEnvelope::parse(&body).unwrap();
    assert_eq!(envelope.object_id, acct, "keyed by the account");

    fake.put(PLATFORM_ACCOUNT, "accounts", account("first@example.com"));
    post_all(&stack, &[app_event(acct, "evt_auth_1", AUTHORIZED, T)]).await;
    stack.wait_ledger(1, wait).await;
    assert_eq!(stored(), (Some("first@example.com".into()), false, T));

    fake.remove(PLATFORM_ACCOUNT, "accounts", acct);
    post_all(
        &stack,
        &[app_event(acct, "evt_deauth", DEAUTHORIZED, T + 10)],
    )
    .await;
    stack.wait_ledger(2, wait).await;
    let late = event(
        acct,
        "evt_late",
        "account.updated",
        T + 5,
        account("late@example.com"),
    );
    post_all(&stack, &[late]).await;
    stack.wait_ledger(3, wait).await;
    assert_eq!(
        stored(),
        (Some("first@example.com".into()), true, T + 10),
        "deauthorized: kept as it was, marked deleted; the older update changed nothing"
    );

    fake.put(PLATFORM_ACCOUNT, "accounts", account("again@example.com"));
    post_all(&stack, &[app_event(acct, "evt_auth_2", AUTHORIZED, T + 20)]).await;
    stack.wait_ledger(4, wait).await;
    assert_eq!(
        stored(),
        (Some("again@example.com".into()), false, T + 20),
        "a newer authorization brings it back as Stripe has it"
    );
    post_all(
        &stack,
        &[app_event(acct, "evt_deauth_late", DEAUTHORIZED, T + 15)],
    )
    .await;
    stack.wait_ledger(5, wait).await;
    assert_eq!(
        stored(),
        (Some("again@example.com".into()), false, T + 20),
        "a deauthorization older than the authorization changes nothing"
    );

    fake.remove(PLATFORM_ACCOUNT, "accounts", acct);
    post_all(&stack, &[app_event(acct, "evt_auth_3", AUTHORIZED, T + 30)]).await;
    stack.wait_ledger(6, wait).await;
    assert_eq!(
        stored(),
        (Some("again@example.com".into()), true, T + 30),
        "no access when read: gone, its last state kept"
    );

    // A deauthorization and an authorization of the same second: Stripe
    // is asked, and it can read the account.
    fake.put(PLATFORM_ACCOUNT, "accounts", account("third@example.com"));
    post_all(
        &stack,
        &[app_event(acct, "evt_deauth_tie", DEAUTHORIZED, T + 40)],
    )
    .await;
    stack.wait_ledger(7, wait).await;
    assert_eq!(stored(), (Some("again@example.com".into()), true, T + 40));
    post_all(
        &stack,
        &[app_event(acct, "evt_auth_tie", AUTHORIZED, T + 40)],
    )
    .await;
    stack.wait_ledger(8, wait).await;
    assert_eq!(
        stored(),
        (Some("third@example.com".into()), false, T + 40),
        "a same-second tie settled by reading the account"
    );

    // A 403 that is not about the account (a key without the permission)
    // is an error to wait out, never the account gone.
    for _ in 0..3 {
        fake.fault(&format!("accounts/{acct}"), Fault::MissingPermission);
    }
    fake.put(PLATFORM_ACCOUNT, "accounts", account("fourth@example.com"));
    post_all(
        &stack,
        &[
            event(
                acct,
                "evt_upd_a",
                "account.updated",
                T + 50,
                account("a@example.com"),
            ),
            event(
                acct,
                "evt_upd_b",
                "account.updated",
                T + 50,
                account("b@example.com"),
            ),
        ],
    )
    .await;
    stack.wait_ledger(10, wait).await;
    assert_eq!(
        stored(),
        (Some("fourth@example.com".into()), false, T + 50),
        "read again once the key could"
    );

    post_all(
        &stack,
        &[
            app_event("acct_1NeverSeen", "evt_deauth_new", DEAUTHORIZED, T),
            app_event(PLATFORM_ACCOUNT, "evt_platform_app", DEAUTHORIZED, T),
        ],
    )
    .await;
    stack.wait_ledger(12, wait).await;
    let never_seen = rows(&stack, accounts, PLATFORM_ACCOUNT)
        .into_iter()
        .find(|r| r.id == "acct_1NeverSeen")
        .expect("a row for an account first heard of as gone");
    assert!(never_seen.deleted);
    assert_eq!(
        stack
            .db
            .count("event_ledger WHERE event_id = 'evt_platform_app' AND outcome = 'ignored'"),
        1
    );
    assert_eq!(rows(&stack, accounts, PLATFORM_ACCOUNT).len(), 2);
    stack.stop().await;
}

/// A charge's balance transaction, a type Stripe sends no events for, is
/// in the mirror with the charge's event: read when the mirror lacks it or
/// holds it pending, not read again once available, kept under the
/// charge's account, never read inside the apply transaction; one Stripe
/// does not have, or refuses to read for good (403), is not written, and
/// the charge is applied all the same, at once.
/// Stripe's read API is the fixture-backed fake (localstripe has
/// no balance transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_brings_its_balance_transaction_until_it_is_settled() {
    let fake = CatalogStripe::start();
    let stack = catalog_stack(&fake).await;
    fake.watch_transactions(&stack.db.url, &stack.db.name);
    let transactions = registry::by_object("balance_transaction").unwrap();
    let bt = |id: &str, status: &str| {
        let mut b = fixtures::resource("balance_transaction");
        b["id"] = json!(id);
        b["status"] = json!(status);
        b["source"] = json!("ch_named");
        b
    };
    let charge = |account: &str, id: &str, created: i64, txn: &str| {
        let mut c = fixtures::resource("charge");
        c["id"] = json!("ch_named");
        c["balance_transaction"] = json!(txn);
        event(account, id, "charge.updated", created, c)
    };
    let status = |account: &str, id: &str| {
        rows(&stack, transactions, account)
            .into_iter()
            .find(|r| r.id == id)
            .map(|r| r.data["status"].as_str().unwrap().to_owned())
    };
    let reads = |id: &str| {
        fake.calls()
            .iter()
            .filter(|c| c.path == format!("/v1/balance_transactions/{id}"))
            .count()
    };
    let wait = Duration::from_secs(60);

    fake.put(
        PLATFORM_ACCOUNT,
        "balance_transactions",
        bt("txn_named", "pending"),
    );
    post_all(
        &stack,
        &[charge(PLATFORM_ACCOUNT, "evt_ch_1", T, "txn_named")],
    )
    .await;
    stack.wait_ledger(1, wait).await;
    assert_eq!(
        status(PLATFORM_ACCOUNT, "txn_named").as_deref(),
        Some("pending")
    );

    fake.put(
        PLATFORM_ACCOUNT,
        "balance_transactions",
        bt("txn_named", "available"),
    );
    post_all(
        &stack,
        &[charge(PLATFORM_ACCOUNT, "evt_ch_2", T + 10, "txn_named")],
    )
    .await;
    stack.wait_ledger(2, wait).await;
    assert_eq!(
        status(PLATFORM_ACCOUNT, "txn_named").as_deref(),
        Some("available"),
        "pending in the mirror: read again"
    );
    let settled_reads = reads("txn_named");
    post_all(
        &stack,
        &[charge(PLATFORM_ACCOUNT, "evt_ch_3", T + 20, "txn_named")],
    )
    .await;
    stack.wait_ledger(3, wait).await;
    assert_eq!(
        reads("txn_named"),
        settled_reads,
        "available: not read again"
    );

    fake.put(
        CONNECTED,
        "balance_transactions",
        bt("txn_connected", "available"),
    );
    // However often it is asked, Stripe refuses this one: the account's
    // access is gone. Not worth holding the partition for.
    for _ in 0..1_000 {
        fake.fault("balance_transactions/txn_forbidden", Fault::Forbidden);
    }
    post_all(
        &stack,
        &[
            charge(CONNECTED, "evt_ch_4", T, "txn_connected"),
            // Stripe does not have it: the charge is applied all the same.
            charge(PLATFORM_ACCOUNT, "evt_ch_5", T + 30, "txn_unknown"),
            charge(CONNECTED, "evt_ch_6", T + 40, "txn_forbidden"),
        ],
    )
    .await;
    stack.wait_ledger(6, wait).await;
    assert_eq!(status(CONNECTED, "txn_forbidden"), None);
    assert_eq!(
        status(CONNECTED, "txn_connected").as_deref(),
        Some("available")
    );
    assert_eq!(status(PLATFORM_ACCOUNT, "txn_connected"), None);
    assert_eq!(status(PLATFORM_ACCOUNT, "txn_unknown"), None);
    assert_eq!(
        stack.db.count(
            "stripe.charges WHERE id = 'ch_named' AND data->>'balance_transaction' = 'txn_unknown'"
        ),
        1
    );
    assert_eq!(
        fake.calls_in_transaction(),
        0,
        "no read inside the transaction"
    );
    stack.stop().await;
}
