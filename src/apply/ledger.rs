//! The event ledger: each (service, account, event id) is applied once.

use diesel::prelude::*;

use super::Applied;
use crate::db::models::NewLedgerEntry;
use crate::db::schema::event_ledger;
use crate::stripe::StripeEvent;

/// Inserts the event id; false if it was already there (a duplicate).
pub fn claim(conn: &mut PgConnection, service: &str, event: &StripeEvent) -> QueryResult<bool> {
    let inserted = diesel::insert_into(event_ledger::table)
        .values(NewLedgerEntry {
            service,
            account: &event.account,
            event_id: event.id.as_str(),
            event_type: &event.kind,
            object_id: event.object_id(),
            event_created: event.created,
            outcome: "claimed",
            echo: event
                .idempotency_key
                .as_deref()
                .is_some_and(crate::outbox::is_own_idempotency_key),
        })
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(inserted == 1)
}

pub fn record_outcome(
    conn: &mut PgConnection,
    service: &str,
    event: &StripeEvent,
    applied: Applied,
) -> QueryResult<()> {
    diesel::update(event_ledger::table.find((service, &event.account, event.id.as_str())))
        .set(event_ledger::outcome.eq(applied.as_str()))
        .execute(conn)
        .map(drop)
}
