//! What an event does to the store. No HTTP and no Kafka in here: callers
//! hand in a connection inside their transaction and a [`RemoteReader`] for
//! the rare case an object must be re-read from its service.

mod catalog;
mod customer;
mod customer_batch;
pub mod event_log;
pub mod ledger;
pub mod order;
mod remote;

pub use crate::customers::settings::FanOut;
pub use customer::SNAPSHOT_TYPE;
pub use remote::{ListRequest, Prefetched, Recording, RemoteReader};

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;

use crate::registry::{self, Resource};
use crate::stripe::StripeEvent;
use crate::sync::service;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Worth retrying: the same input may succeed later.
    #[error("transient: {source:#}")]
    Transient {
        source: anyhow::Error,
        retry_after: Option<Duration>,
    },
    /// Will never succeed for this input; goes to the dead-letter topic.
    #[error("permanent: {0}")]
    Permanent(Refusal),
}

/// Why an input is refused for good. The text is what its dead letter
/// records; the kind says which of the few reasons it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The input lacks what applying it needs: an object without an id,
    /// an event about a customer that carries none, an unreadable version.
    #[error("{0}")]
    Malformed(String),
    /// Postgres refused the data itself (a NOT NULL, CHECK or foreign key).
    #[error("database rejected the data: {0}")]
    RejectedByDatabase(String),
    /// A value did not convert to or from its column.
    #[error("could not convert a value: {0}")]
    Unconvertible(String),
    /// The service refused, for good, the read of the object the input
    /// names.
    #[error("{0}")]
    ReadRefused(String),
    /// The input belongs to an org or account this worker does not sync.
    #[error("{0}")]
    NotOurs(String),
}

impl From<Refusal> for ApplyError {
    fn from(refusal: Refusal) -> Self {
        Self::Permanent(refusal)
    }
}

impl ApplyError {
    pub fn transient(source: impl Into<anyhow::Error>) -> Self {
        Self::Transient {
            source: source.into(),
            retry_after: None,
        }
    }
}

impl ApplyError {
    /// A failure that escaped an apply, as the consume loop's retry of the
    /// batch: a transient one keeps its wait. Events refused for good come
    /// back as their own results, so a permanent error escaping a batch is
    /// about the batch itself (its BEGIN or COMMIT): retried too, never
    /// skipped.
    pub fn into_retry(self) -> crate::kafka::consumer::Transient {
        match self {
            Self::Transient {
                source,
                retry_after,
            } => crate::kafka::consumer::Transient {
                error: source,
                retry_after,
            },
            Self::Permanent(refusal) => anyhow::Error::new(refusal).into(),
        }
    }
}

impl From<DieselError> for ApplyError {
    /// Postgres refusing the data itself is permanent; anything else (lost
    /// connection, serialisation failure, a racing unique insert) may pass
    /// on a retry, so it is transient.
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(
                DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::ExclusionViolation
                | DatabaseErrorKind::RestrictViolation,
                info,
            ) => Refusal::RejectedByDatabase(info.message().to_owned()).into(),
            DieselError::SerializationError(err) | DieselError::DeserializationError(err) => {
                Refusal::Unconvertible(err.to_string()).into()
            }
            _ => Self::transient(e),
        }
    }
}

/// What applying one event did; recorded in the ledger as `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event id is already in the ledger: nothing changed.
    Duplicate,
    /// A type no applier handles yet; ledgered so it is not reconsidered.
    Ignored,
    /// Older than the state already stored: skipped.
    Stale,
    /// The object is deleted; a late event cannot bring it back.
    AfterTombstone,
    /// The event's snapshot was written.
    Upserted,
    /// Same second as the stored state, or a customer's report that may be
    /// older than a write of ours acknowledged since: the object was
    /// re-read from Stripe and that state was written.
    TieResolved,
    /// The object was tombstoned.
    Deleted,
    /// The service reporting our own write back (Salesforce): its version
    /// is recorded, the row already holds what it says.
    Echo,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Stale => "stale",
            Self::AfterTombstone => "after_tombstone",
            Self::Upserted => "upserted",
            Self::TieResolved => "tie_resolved",
            Self::Deleted => "deleted",
            Self::Echo => "echo",
        }
    }
}

/// Where an event goes: by the type of the object it carries
/// (`data.object.object`), never by its event type's prefix
/// (`customer.subscription.updated` carries a subscription). The one
/// exception: a connected account's `account.application.*` carries our
/// application and is about the account, so it goes to `stripe.accounts`.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// The local-first `customers` table (two-way sync).
    Customer,
    /// `stripe.<relation>` through the registry.
    Mirror(&'static Resource),
    /// No registered type: acknowledged and ledgered as ignored.
    Ignored,
}

fn route(event: &StripeEvent) -> Route {
    let about_account = crate::stripe::event::application_account(
        &event.kind,
        event.account.as_str(),
        event.platform.as_str(),
    )
    .is_some();
    let object = if about_account {
        Some("account")
    } else {
        event.object_type()
    };
    match object.and_then(registry::by_object) {
        Some(r) if r.is_local_customer() => Route::Customer,
        // A card or bank account of a customer, not of a connected account
        // (`registry::Listing::Nested`), or one of another account than
        // the connected account reporting it.
        Some(r) if r.object_path(&event.object).is_none() || !of_its_account(r, event) => {
            Route::Ignored
        }
        Some(r) => Route::Mirror(r),
        None => Route::Ignored,
    }
}

/// Whether an object a connected account reports, of a type kept under
/// an account, is that account's own: the row is kept under the reporting
/// account and read there, so the two must agree. The platform's events
/// name its own `acct_…` id, which the engine does not know.
fn of_its_account(resource: &Resource, event: &StripeEvent) -> bool {
    match resource.listing {
        registry::Listing::Nested(registry::Parent::ACCOUNT, _) if !event.account.is_platform() => {
            event
                .object
                .get(registry::Parent::ACCOUNT.field)
                .and_then(|a| a.as_str())
                == Some(event.account.as_str())
        }
        _ => true,
    }
}

/// What became of one event of a batch: applied (or recognised as
/// harmless), or refused for good with the reason.
pub type EventResult = Result<Applied, Refusal>;

/// Applies a batch of Stripe events inside the caller's transaction, in
/// order per object, and returns one result per event.
///
/// `fan_out` says whether the customer changes Stripe reports are passed
/// on to the other services ([`crate::customers::fanout`]).
///
/// Set-based first: one read finds the events already in the ledger
/// (duplicates), customer events are folded and written with a statement
/// per table ([`customer_batch`]), and one insert ledgers every event
/// applied with its outcome. Events the fold cannot take go through
/// [`apply_one`], each in its own savepoint, so one that fails for good is
/// refused without undoing its neighbours. Should a set-based statement
/// itself be refused, the whole batch is applied event by event, which
/// isolates the offending event the same way.
pub fn apply_batch(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    events: &[&StripeEvent],
    fan_out: FanOut,
) -> Result<Vec<EventResult>, ApplyError> {
    let mut results: Vec<Option<EventResult>> = vec![None; events.len()];
    // The same event twice in one batch: the first occurrence is applied
    // and the repeats take its result (below).
    let (unique, repeats) = first_occurrences(events);
    let per_event = match conn.transaction(|conn| apply_set(conn, remote, events, &unique, fan_out))
    {
        Ok(folded) => {
            for (i, applied) in folded.applied {
                results[i] = Some(Ok(applied));
            }
            folded.per_event
        }
        Err(ApplyError::Permanent(reason)) => {
            tracing::warn!(%reason, events = unique.len(), "batch refused as a whole; applying its events one by one");
            unique
        }
        Err(transient) => return Err(transient),
    };
    one_by_one(conn, remote, events, &per_event, fan_out, &mut results)?;
    // A repeat of an applied event is a duplicate; a repeat of a refused one
    // is refused again, as it would be one event at a time.
    for (i, of) in repeats {
        results[i] = Some(match &results[of] {
            Some(Err(reason)) => Err(reason.clone()),
            _ => Ok(Applied::Duplicate),
        });
    }
    Ok(collect(results))
}

/// Applies a batch one event at a time, each in its own savepoint: the
/// reference semantics [`apply_batch`] must match, at several statements
/// per event.
pub fn apply_each(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    events: &[&StripeEvent],
    fan_out: FanOut,
) -> Result<Vec<EventResult>, ApplyError> {
    let mut results = vec![None; events.len()];
    let all: Vec<usize> = (0..events.len()).collect();
    one_by_one(conn, remote, events, &all, fan_out, &mut results)?;
    Ok(collect(results))
}

/// The positions of each event's first occurrence in the batch, and each
/// repeat with the position of its first occurrence.
fn first_occurrences(events: &[&StripeEvent]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut repeats = Vec::new();
    let mut unique = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        match first.entry((event.account.as_str(), event.id.as_str())) {
            Entry::Vacant(slot) => {
                slot.insert(i);
                unique.push(i);
            }
            Entry::Occupied(slot) => repeats.push((i, *slot.get())),
        }
    }
    (unique, repeats)
}

/// The reads a batch's apply will want that need no knowledge of the
/// stored state: the child lists its payloads leave incomplete (checkout
/// line items, truncated invoice lines), one read per object, and the
/// objects they name that the mirror lacks or holds unsettled (a charge's
/// balance transaction), for events not in the ledger yet; none at all
/// (not even a query) for a batch without such lists or names. What only the stored state can tell (a same-second
/// tie's re-read) is missing from it: an apply that needs one fails
/// ([`Prefetched::missed`]) and the batch goes through [`prefetch`].
pub fn prefetch_lists(
    conn: &mut PgConnection,
    live: &dyn RemoteReader,
    events: &[&StripeEvent],
) -> Result<Prefetched, ApplyError> {
    let wanting: Vec<&StripeEvent> = events
        .iter()
        .copied()
        .filter(|e| match route(e) {
            Route::Mirror(resource) => {
                catalog::object_id(e).is_ok()
                    && (resource
                        .children
                        .iter()
                        .any(|c| !catalog::carries(&e.object, c))
                        || resource.names().next().is_some())
            }
            _ => false,
        })
        .collect();
    if wanting.is_empty() {
        return Ok(Prefetched::default());
    }
    let applied_before = ledger::already_applied(conn, service::STRIPE, &wanting)?;
    let fresh: Vec<(&'static Resource, &StripeEvent)> = wanting
        .into_iter()
        .filter(|e| !applied_before.contains(&(e.account.to_string(), e.id.to_string())))
        .filter_map(|e| match route(e) {
            Route::Mirror(resource) => Some((resource, e)),
            _ => None,
        })
        .collect();
    let recording = Recording::new(live);
    for (parent, child, account, id) in catalog::lists_to_read(conn, &fresh)? {
        recording.children(&account, parent, child, &id)?;
    }
    for (account, resource, id) in catalog::named_to_read(conn, &fresh)? {
        // One that fails but for a passing reason is left to refresh, as
        // the apply leaves it.
        match recording.current(&account, resource.path, &id) {
            Err(e) if catalog::named_worth_retrying(&e) => return Err(e),
            _ => {}
        }
    }
    recording.into_record()
}

/// Reads from Stripe, before the batch's transaction opens, everything
/// applying `events` will read: the current state of objects with
/// same-second ties and the child lists a payload leaves incomplete, each
/// once. Planned against the stored state without locks; should the state
/// move before the locked apply needs a read not made here, that apply
/// fails as transient and the batch is prepared again.
pub fn prefetch(
    conn: &mut PgConnection,
    live: &dyn RemoteReader,
    events: &[&StripeEvent],
) -> Result<Prefetched, ApplyError> {
    let (unique, _) = first_occurrences(events);
    let batch: Vec<&StripeEvent> = unique.iter().map(|&i| events[i]).collect();
    let applied_before = ledger::already_applied(conn, service::STRIPE, &batch)?;
    let fresh = batch
        .iter()
        .enumerate()
        .filter(|(_, e)| !applied_before.contains(&(e.account.to_string(), e.id.to_string())));
    let mut customers = Vec::new();
    let mut mirrored = Vec::new();
    for (pos, event) in fresh {
        match route(event) {
            Route::Customer if customer::customer_id(event).is_ok() => customers.push(*event),
            Route::Mirror(resource) if catalog::object_id(event).is_ok() => {
                mirrored.push(catalog::Routed {
                    pos,
                    event,
                    resource,
                })
            }
            _ => {}
        }
    }
    let recording = Recording::new(live);
    customer::read_ties(conn, &recording, &customers)?;
    catalog::plan(conn, &recording, &mirrored, catalog::Locking::None)?;
    recording.into_record()
}

fn collect(results: Vec<Option<EventResult>>) -> Vec<EventResult> {
    results
        .into_iter()
        .map(|r| r.expect("every event has a result"))
        .collect()
}

/// Applies the events at `positions` through [`apply_one`], each in its own
/// savepoint, filling in their results.
fn one_by_one(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    events: &[&StripeEvent],
    positions: &[usize],
    fan_out: FanOut,
    results: &mut [Option<EventResult>],
) -> Result<(), ApplyError> {
    for &i in positions {
        let event = events[i];
        results[i] = Some(
            match conn.transaction(|conn| apply_one(conn, remote, event, fan_out)) {
                Ok(applied) => Ok(applied),
                Err(ApplyError::Permanent(reason)) => Err(reason),
                Err(transient) => return Err(transient),
            },
        );
    }
    Ok(())
}

/// The set-based part of [`apply_batch`] for the events at `unique`.
fn apply_set(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    events: &[&StripeEvent],
    unique: &[usize],
    fan_out: FanOut,
) -> Result<customer_batch::Folded, ApplyError> {
    let batch: Vec<&StripeEvent> = unique.iter().map(|&i| events[i]).collect();
    let applied_before = ledger::already_applied(conn, service::STRIPE, &batch)?;
    let mut done = Vec::new();
    let mut per_event = Vec::new();
    let mut customer_events = Vec::new();
    let mut mirrored = Vec::new();
    for (&i, event) in unique.iter().zip(&batch) {
        if applied_before.contains(&(event.account.to_string(), event.id.to_string())) {
            done.push((i, Applied::Duplicate));
            continue;
        }
        match route(event) {
            Route::Ignored => done.push((i, Applied::Ignored)),
            // Refused there, with the reason.
            Route::Customer if customer::customer_id(event).is_err() => per_event.push(i),
            Route::Mirror(_) if catalog::object_id(event).is_err() => per_event.push(i),
            Route::Customer => customer_events.push((i, *event)),
            Route::Mirror(resource) => mirrored.push(catalog::Routed {
                pos: i,
                event,
                resource,
            }),
        }
    }
    let mut folded = customer_batch::apply(conn, &customer_events, fan_out)?;
    for plan in catalog::apply(conn, remote, &mirrored)? {
        folded.applied.extend(plan.outcomes);
    }
    folded.applied.extend(done);
    let entries: Vec<(&StripeEvent, Applied)> = folded
        .applied
        .iter()
        .filter(|(_, applied)| *applied != Applied::Duplicate)
        .map(|&(i, applied)| (events[i], applied))
        .collect();
    let recorded = ledger::record_many(conn, service::STRIPE, &entries)?;
    if recorded < entries.len() {
        // Another applier ledgered some of these events after our read (a
        // rebalance can hand a partition over mid-batch): undo and retry,
        // and the retry sees them as duplicates.
        return Err(ApplyError::transient(anyhow::anyhow!(
            "{} events of the batch were applied concurrently",
            entries.len() - recorded
        )));
    }
    folded.per_event.extend(per_event);
    folded.per_event.sort_unstable();
    Ok(folded)
}

/// Applies one event in the caller's transaction (or savepoint): claims
/// its id in the ledger (a duplicate then costs one insert and changes
/// nothing), routes it by type, records the outcome.
fn apply_one(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    event: &StripeEvent,
    fan_out: FanOut,
) -> Result<Applied, ApplyError> {
    if !ledger::claim(conn, service::STRIPE, event)? {
        return Ok(Applied::Duplicate);
    }
    let applied = match route(event) {
        Route::Customer => customer::apply(conn, remote, event, fan_out)?,
        Route::Mirror(resource) => {
            let routed = [catalog::Routed {
                pos: 0,
                event,
                resource,
            }];
            catalog::apply(conn, remote, &routed)?[0].outcomes[0].1
        }
        Route::Ignored => Applied::Ignored,
    };
    ledger::record_outcome(conn, service::STRIPE, event, applied)?;
    Ok(applied)
}
