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
        account: event.account.as_str(),
        event_id: event.id.as_str(),
        event_type: &event.kind,
        object_id: event.object_id(),
        event_created: event.created,
        outcome,
        echo: event.is_own_echo(),
    }
}

/// Inserts the event id; false if it was already there (a duplicate).
pub fn claim(conn: &mut PgConnection, service: &str, event: &StripeEvent) -> QueryResult<bool> {
    claim_entry(conn, &entry(service, event, CLAIMED))
}

/// [`claim`] for an event of any service: `entry`'s outcome is replaced
/// by the claim's until [`set_outcome`].
pub fn claim_entry(conn: &mut PgConnection, entry: &NewLedgerEntry<'_>) -> QueryResult<bool> {
    let inserted = diesel::insert_into(event_ledger::table)
        .values(NewLedgerEntry {
            outcome: CLAIMED,
            ..*entry
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
    set_outcome(
        conn,
        service,
        event.account.as_str(),
        event.id.as_str(),
        applied,
    )
}

/// Records what a claimed event did.
pub fn set_outcome(
    conn: &mut PgConnection,
    service: &str,
    account: &str,
    event_id: &str,
    applied: Applied,
) -> QueryResult<()> {
    diesel::update(event_ledger::table.find((service, account, event_id)))
        .set(event_ledger::outcome.eq(applied.as_str()))
        .execute(conn)
        .map(drop)
}

/// Which of `events` are already in the ledger, as (account, event id).
pub fn already_applied(
    conn: &mut PgConnection,
    service: &str,
    events: &[&StripeEvent],
) -> QueryResult<HashSet<(String, String)>> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let accounts: Vec<&str> = events.iter().map(|e| e.account.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    // One primary-key probe per event, whatever the planner believes about
    // the ledger's size: a ledger growing fast (a backfill, a backlog, the
    // first burst on a new database) outruns its statistics, and a plan
    // made for a few rows reads every row of the service for each batch
    // (with `= ANY` lists, and with a plain LATERAL too, which the planner
    // flattens into a hash join). `LIMIT 1` keeps the subquery a subquery,
    // probed once per key; the key is unique, so it takes nothing away.
    let found: Vec<LedgerKey> = diesel::sql_query(
        "SELECT l.account, l.event_id FROM unnest($2, $3) AS k(account, event_id) \
         CROSS JOIN LATERAL (SELECT account, event_id FROM event_ledger \
             WHERE service = $1 AND account = k.account AND event_id = k.event_id LIMIT 1) AS l",
    )
    .bind::<Text, _>(service)
    .bind::<Array<Text>, _>(accounts)
    .bind::<Array<Text>, _>(ids)
    .load(conn)?;
    Ok(found.into_iter().map(|k| (k.account, k.event_id)).collect())
}

#[derive(QueryableByName)]
struct LedgerKey {
    #[diesel(sql_type = Text)]
    account: String,
    #[diesel(sql_type = Text)]
    event_id: String,
}

/// Ledgers events applied together, each with its outcome, in one
/// statement. Returns how many were new; fewer than given means another
/// applier recorded some of them meanwhile.
pub fn record_many(
    conn: &mut PgConnection,
    service: &str,
    entries: &[(&StripeEvent, Applied)],
) -> QueryResult<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    let rows: Vec<NewLedgerEntry<'_>> = entries
        .iter()
        .map(|(event, applied)| entry(service, event, applied.as_str()))
        .collect();
    diesel::insert_into(event_ledger::table)
        .values(&rows)
        .on_conflict_do_nothing()
        .execute(conn)
}
