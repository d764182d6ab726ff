//! The event ledger: each (service, account, event id) is applied once.

use std::collections::HashSet;

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};

use super::Applied;
use crate::db::models::NewLedgerEntry;
use crate::db::schema::event_ledger;
use crate::stripe::StripeEvent;

/// The outcome a claimed event carries until its apply records the real one.
const CLAIMED: &str = "claimed";

fn entry<'a>(service: &'a str, event: &'a StripeEvent, outcome: &'a str) -> NewLedgerEntry<'a> {
    NewLedgerEntry {
        service,
        account: &event.account,
        event_id: event.id.as_str(),
        event_type: &event.kind,
        object_id: event.object_id(),
        event_created: event.created,
        outcome,
        echo: event
            .idempotency_key
            .as_deref()
            .is_some_and(crate::outbox::is_own_idempotency_key),
    }
}

/// Inserts the event id; false if it was already there (a duplicate).
pub fn claim(conn: &mut PgConnection, service: &str, event: &StripeEvent) -> QueryResult<bool> {
    let inserted = diesel::insert_into(event_ledger::table)
        .values(entry(service, event, CLAIMED))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(inserted == 1)
}

/// Claims many events with one statement, each with its provisional
/// outcome (`None`: "claimed", to be recorded later). Returns the
/// (account, event id) pairs that were new; the rest are duplicates.
pub fn claim_many(
    conn: &mut PgConnection,
    service: &str,
    events: &[(&StripeEvent, Option<Applied>)],
) -> QueryResult<HashSet<(String, String)>> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<NewLedgerEntry<'_>> = events
        .iter()
        .map(|(event, outcome)| entry(service, event, outcome.map_or(CLAIMED, Applied::as_str)))
        .collect();
    let claimed: Vec<(String, String)> = diesel::insert_into(event_ledger::table)
        .values(&rows)
        .on_conflict_do_nothing()
        .returning((event_ledger::account, event_ledger::event_id))
        .get_results(conn)?;
    Ok(claimed.into_iter().collect())
}

/// Forgets a claim whose apply failed for good, so that replaying the event
/// from the dead-letter topic applies it instead of calling it a duplicate.
pub fn release(conn: &mut PgConnection, service: &str, event: &StripeEvent) -> QueryResult<()> {
    diesel::delete(event_ledger::table.find((service, &event.account, event.id.as_str())))
        .execute(conn)
        .map(drop)
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

/// [`record_outcome`] for many events, in one statement.
pub fn record_outcomes(
    conn: &mut PgConnection,
    service: &str,
    outcomes: &[(&StripeEvent, Applied)],
) -> QueryResult<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let accounts: Vec<&str> = outcomes.iter().map(|(e, _)| e.account.as_str()).collect();
    let ids: Vec<&str> = outcomes.iter().map(|(e, _)| e.id.as_str()).collect();
    let applied: Vec<&str> = outcomes.iter().map(|(_, a)| a.as_str()).collect();
    // The `= ANY` conditions repeat the join's, so that the rows are found
    // through the primary key whatever the planner believes about the
    // table's size (a ledger grows fast during a backfill).
    diesel::sql_query(
        "UPDATE event_ledger AS l SET outcome = v.outcome \
         FROM unnest($2, $3, $4) AS v(account, event_id, outcome) \
         WHERE l.service = $1 AND l.account = ANY($2) AND l.event_id = ANY($3) \
           AND l.account = v.account AND l.event_id = v.event_id",
    )
    .bind::<Text, _>(service)
    .bind::<Array<Text>, _>(accounts)
    .bind::<Array<Text>, _>(ids)
    .bind::<Array<Text>, _>(applied)
    .execute(conn)
    .map(drop)
}
