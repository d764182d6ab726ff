//! Invariant 7: id_map is per external service and unique both ways. A
//! second service (Salesforce) links the same local customer through the
//! same table and queries, with no schema change.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use stripe_sync::customers::CustomerId;
use stripe_sync::db::models::NewIdMapEntry;
use stripe_sync::db::schema::customers;
use stripe_sync::sync::idmap::{self, ExternalKey};

use crate::support::db::TestDb;

fn link<'a>(
    service: &'a str,
    account: &'a str,
    external_id: &'a str,
    local_id: CustomerId,
) -> NewIdMapEntry<'a> {
    NewIdMapEntry {
        service,
        account,
        entity: "customer",
        external_id,
        local_id,
        remote_version: 1,
        remote_event_id: None,
        remote_deleted: false,
    }
}

fn is_unique_violation(r: QueryResult<()>) -> bool {
    matches!(
        r,
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
    )
}

#[test]
fn links_are_unique_both_ways_and_per_service() {
    let db = TestDb::migrated();
    let conn = &mut db.conn();
    let (a, b) = (CustomerId::random(), CustomerId::random());
    for id in [a, b] {
        diesel::insert_into(customers::table)
            .values(customers::id.eq(id))
            .execute(conn)
            .unwrap();
    }

    idmap::insert(conn, &link("stripe", "platform", "cus_1", a)).unwrap();
    // The same local customer in another service: allowed.
    idmap::insert(conn, &link("salesforce", "org_1", "0035e00000ABCDE", a)).unwrap();
    // One Stripe customer cannot map to two local ones...
    assert!(is_unique_violation(idmap::insert(
        conn,
        &link("stripe", "platform", "cus_1", b)
    )));
    // ...nor one local customer to two Stripe customers.
    assert!(is_unique_violation(idmap::insert(
        conn,
        &link("stripe", "platform", "cus_2", a)
    )));
    // The same external id in another Stripe account is another object.
    idmap::insert(conn, &link("stripe", "acct_9", "cus_1", b)).unwrap();
    // The local side is unique per account too (Connect): a local customer
    // may have a counterpart in each connected account, one per account.
    idmap::insert(conn, &link("stripe", "acct_7", "cus_7", a)).unwrap();
    assert!(is_unique_violation(idmap::insert(
        conn,
        &link("stripe", "acct_7", "cus_8", a)
    )));

    let stripe = idmap::find_by_local(conn, "stripe", "customer", a)
        .unwrap()
        .unwrap();
    assert_eq!(stripe.external_id, "cus_1");
    let salesforce = idmap::find_by_local(conn, "salesforce", "customer", a)
        .unwrap()
        .unwrap();
    assert_eq!(salesforce.external_id, "0035e00000ABCDE");
    let key = ExternalKey {
        service: "stripe",
        account: "acct_9",
        entity: "customer",
        external_id: "cus_1",
    };
    assert_eq!(
        idmap::find_for_update(conn, key).unwrap().unwrap().local_id,
        b
    );
}
