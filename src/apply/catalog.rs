//! Events of every registered type but customers → `stripe.<relation>`,
//! driven by the [`registry`]: one code path for products, invoices,
//! checkout sessions and the rest.
//!
//! Each object's ordering state (the [`Watermark`]) is kept on its own row
//! (`remote_version`, `deleted`), not in `id_map`: a mirrored object has no
//! local entity to link to, and keeping the state on the row makes the
//! order check and the write one row, one statement per relation.
//!
//! A batch is first [`plan`]ned: each object's events are folded in memory
//! through [`order::decide`], ties and incomplete child lists read through
//! the [`RemoteReader`]; then [`write`] stores the outcome with a few
//! set-based statements per relation. Inside the apply transaction the
//! reader only replays answers read before it opened ([`lists_to_read`],
//! or a read-only plan of the batch when a tie needs a re-read; see
//! `super::prefetch_lists` and `super::prefetch`), so no HTTP call ever
//! runs while the transaction holds its locks.

mod named;

pub(super) use named::{to_read as named_to_read, worth_retrying as named_worth_retrying};

use std::borrow::Cow;
use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Jsonb, Nullable, Text};
use serde_json::Value;

use super::order::{self, Facts, Step, Watermark};
use super::{Applied, ApplyError, Refusal, RemoteReader};
use crate::registry::{Child, Deletes, Identity, Reread, Resource};
use crate::stripe::{AccountId, RemoteObject, StripeEvent};

/// An event routed to a registered type.
#[derive(Clone, Copy)]
pub(super) struct Routed<'e> {
    pub pos: usize,
    pub event: &'e StripeEvent,
    pub resource: &'static Resource,
}

/// Whether a plan reads the stored state with row locks (inside the apply
/// transaction) or without (the read-only pass before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Locking {
    ForUpdate,
    None,
}

/// The id of the object an event carries, refused when it has none:
/// without it there is nothing to key the row by.
pub(super) fn object_id(event: &StripeEvent) -> Result<&str, ApplyError> {
    match event.object_key() {
        Some(id) if !id.is_empty() => Ok(id),
        _ => Err(ApplyError::Permanent(Refusal::Malformed(format!(
            "{} carries a {} without an id",
            event.kind,
            event.object_type().unwrap_or("object")
        )))),
    }
}

/// The account a row of `resource` is kept under: the event's, except for
/// a connected account, kept under its platform
/// ([`Identity::ConnectedAccount`]).
fn row_account<'e>(resource: &Resource, event: &'e StripeEvent) -> &'e AccountId {
    match resource.identity {
        Identity::ConnectedAccount => &event.platform,
        Identity::Id | Identity::Customer => &event.account,
    }
}

/// What an event's payload is to the row it is routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// The object's state (or Stripe's `{"deleted": true}` for it).
    State,
    /// `account.application.authorized`: the payload is our application,
    /// not the account, so the account is read as the platform.
    Authorized,
    /// `account.application.deauthorized`: the platform can no longer see
    /// the account. Its row stays, with the last state it had, marked
    /// deleted ([`gone`]); a newer sign of access undoes that.
    Deauthorized,
}

impl Payload {
    fn of(event: &StripeEvent) -> Self {
        match event
            .kind
            .strip_prefix(crate::stripe::event::ACCOUNT_APPLICATION_PREFIX)
        {
            Some("authorized") => Self::Authorized,
            Some("deauthorized") => Self::Deauthorized,
            _ => Self::State,
        }
    }
}

/// What an event is to the ordering rules, by its type's delete semantics.
/// A connected account's deletion is a state (the platform cannot see it
/// now: [`gone`]), ordered by time like any other, never a final delete.
fn facts(resource: &Resource, event: &StripeEvent) -> Facts {
    let snapshot = event.kind.strip_suffix(".snapshot") == Some(resource.object);
    if resource.identity == Identity::ConnectedAccount {
        return Facts {
            delete: false,
            snapshot,
            revives: true,
        };
    }
    let deletes_it =
        resource.deletes == Deletes::Tombstone && !snapshot && event.kind.ends_with(".deleted");
    Facts {
        delete: deletes_it || order::marked_deleted(&event.object),
        snapshot,
        revives: false,
    }
}

/// Whether `event` says the platform can no longer see the connected
/// account of a row of `resource`: its deauthorization, or a read (diff's
/// repair) that found it gone.
fn gone(resource: &Resource, event: &StripeEvent) -> bool {
    resource.identity == Identity::ConnectedAccount
        && (Payload::of(event) == Payload::Deauthorized || order::marked_deleted(&event.object))
}

/// What is stored for an account the mirror first hears of as gone (a
/// deauthorization, or an authorization whose read finds nothing): its
/// id, marked deleted, as Stripe answers for a deleted object.
fn gone_account(id: &str) -> Value {
    serde_json::json!({"id": id, "object": "account", "deleted": true})
}

/// The state one object ends the batch in, when the batch changes it.
pub(super) struct Row<'e> {
    /// The newest object to store; None keeps the stored one (a stale
    /// delete tombstones without rolling the columns back).
    data: Option<Cow<'e, Value>>,
    deleted: bool,
    mark: Watermark,
    event_id: &'e str,
    /// Each child list's complete items, when the row's children change.
    children: Vec<(&'static Child, Vec<Value>)>,
}

/// One object's events of the batch and what they add up to.
pub(super) struct ObjectPlan<'e> {
    resource: &'static Resource,
    account: &'e AccountId,
    id: &'e str,
    events: Vec<(usize, &'e StripeEvent)>,
    stored: Option<Watermark>,
    /// The stored object's `status` (see [`Reread::WhenStatusChanges`]).
    stored_status: Option<String>,
    row: Option<Row<'e>>,
    pub outcomes: Vec<(usize, Applied)>,
    /// Why the object's events cannot be applied (a read Stripe refused for
    /// good, a child item without an id).
    pub refused: Option<Refusal>,
    /// For an object with no events of its own read because this event's
    /// object names it ([`named`]).
    named_by: Option<&'e StripeEvent>,
}

/// Folds the events (none of them in the ledger yet) per object through the
/// ordering rules against the stored state, reading ties and child lists
/// through `remote`; then plans the objects those rows name ([`named`]),
/// after them, locked after them.
pub(super) fn plan<'e>(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    events: &[Routed<'e>],
    locking: Locking,
) -> Result<Vec<ObjectPlan<'e>>, ApplyError> {
    let mut plans: Vec<ObjectPlan<'e>> = Vec::new();
    let mut by_key: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for routed in events {
        let event = routed.event;
        let account = row_account(routed.resource, event);
        let key = (
            routed.resource.relation,
            account.as_str(),
            object_id(event)?,
        );
        let at = *by_key.entry(key).or_insert_with(|| {
            plans.push(ObjectPlan {
                resource: routed.resource,
                account,
                id: key.2,
                events: Vec::new(),
                stored: None,
                stored_status: None,
                row: None,
                outcomes: Vec::new(),
                refused: None,
                named_by: None,
            });
            plans.len() - 1
        });
        plans[at].events.push((routed.pos, event));
    }
    load_stored(conn, &mut plans, locking)?;
    for plan in &mut plans {
        // One object refused for good does not stop the others' planning:
        // the read-only pass must still read everything they need.
        match plan.fold(remote) {
            Ok(()) => {}
            Err(ApplyError::Permanent(reason)) => plan.refused = Some(reason),
            Err(transient) => return Err(transient),
        }
    }
    let named = named::plans(conn, remote, &plans, locking)?;
    plans.extend(named);
    Ok(plans)
}

/// Plans and writes `events` inside the apply transaction. Any object
/// refused fails the call as permanent, so the caller can isolate its
/// events one at a time.
pub(super) fn apply<'e>(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    events: &[Routed<'e>],
) -> Result<Vec<ObjectPlan<'e>>, ApplyError> {
    let plans = plan(conn, remote, events, Locking::ForUpdate)?;
    if let Some(reason) = plans.iter().find_map(|p| p.refused.clone()) {
        return Err(ApplyError::Permanent(reason));
    }
    write(conn, &plans)?;
    Ok(plans)
}

impl<'e> ObjectPlan<'e> {
    fn fold(&mut self, remote: &dyn RemoteReader) -> Result<(), ApplyError> {
        let mut state = self.stored;
        for &(pos, event) in &self.events {
            let (step, mut next) = order::decide(facts(self.resource, event), event.created, state);
            let payload = Payload::of(event);
            let gone = gone(self.resource, event);
            let data: Option<Cow<'e, Value>> = match step {
                // Kept with the state it had (none yet: its id), marked.
                Step::Create { .. } | Step::Write if gone => {
                    next.deleted = true;
                    state.is_none().then(|| Cow::Owned(gone_account(self.id)))
                }
                Step::Create { .. } | Step::Write | Step::ReRead
                    if payload == Payload::Authorized =>
                {
                    match self.read_current(remote, event, &mut next)? {
                        // New to the mirror and already gone from Stripe.
                        None if state.is_none() => Some(Cow::Owned(gone_account(self.id))),
                        read => read,
                    }
                }
                Step::Create { .. } | Step::Write | Step::Delete { columns: true } => {
                    Some(Cow::Borrowed(&event.object))
                }
                Step::Delete { columns: false } => None,
                Step::ReRead if self.resource.identity == Identity::Customer => {
                    // No endpoint of its own: its state is its lists, read
                    // in full below.
                    Some(Cow::Owned(with_lists_unread(&event.object, self.resource)))
                }
                Step::ReRead => self.read_current(remote, event, &mut next)?,
                Step::Stale | Step::AfterTombstone => None,
            };
            if step.changes() {
                let kept = self.row.take().and_then(|r| r.data);
                self.row = Some(Row {
                    data: data.or(kept),
                    deleted: next.deleted,
                    mark: next,
                    event_id: event.id.as_str(),
                    children: Vec::new(),
                });
                state = Some(next);
            }
            let applied = if gone && step.changes() {
                Applied::Deleted
            } else {
                step.applied()
            };
            self.outcomes.push((pos, applied));
        }
        self.read_children(remote)
    }

    /// The object's state as Stripe answers now (read where `event`'s
    /// object says it is kept); gone (`next` marked deleted, the stored
    /// columns kept) when Stripe no longer has it.
    fn read_current(
        &self,
        remote: &dyn RemoteReader,
        event: &StripeEvent,
        next: &mut Watermark,
    ) -> Result<Option<Cow<'e, Value>>, ApplyError> {
        // Routed only when the object names its parent (`super::route`).
        let path = self
            .resource
            .object_path(&event.object)
            .unwrap_or(Cow::Borrowed(self.resource.path));
        Ok(match remote.current(self.account, &path, self.id)? {
            RemoteObject::Live(current) => Some(Cow::Owned(current)),
            RemoteObject::Deleted => {
                next.deleted = true;
                None
            }
        })
    }

    /// The complete child lists of the state to be written: from the
    /// payload when it carries them whole, otherwise read from Stripe.
    fn read_children(&mut self, remote: &dyn RemoteReader) -> Result<(), ApplyError> {
        let Some(row) = &mut self.row else {
            return Ok(());
        };
        for child in self.resource.children {
            let items = if row.deleted {
                Vec::new()
            } else {
                let Some(data) = &row.data else { continue };
                if !child.exists_for(data) {
                    row.children.push((child, Vec::new()));
                    continue;
                }
                match complete_list(data, child) {
                    Some(items) => items.to_vec(),
                    // Stored with this status already: its items are too.
                    None if child.reread == Reread::WhenStatusChanges
                        && self.stored.is_some_and(|s| !s.deleted)
                        && self.stored_status.as_deref()
                            == data.get("status").and_then(Value::as_str) =>
                    {
                        continue
                    }
                    None => {
                        let items = remote.children(self.account, self.resource, child, self.id)?;
                        if self.resource.identity == Identity::Customer {
                            // The stored object holds the list as read.
                            if let Some(data) = &mut row.data {
                                data.to_mut()[child.field] = complete(&items);
                            }
                        }
                        items
                    }
                }
            };
            row.children.push((child, items));
        }
        Ok(())
    }
}

/// `object` with each child list marked as not carried, so that it is read
/// in full.
fn with_lists_unread(object: &Value, resource: &Resource) -> Value {
    let mut object = object.clone();
    for child in resource.children {
        object[child.field] = serde_json::json!({"object": "list", "data": [], "has_more": true});
    }
    object
}

/// A list object carrying `items` whole.
fn complete(items: &[Value]) -> Value {
    serde_json::json!({"object": "list", "data": items, "has_more": false})
}

/// Whether the payload carries `child`'s list in full.
pub(super) fn carries(parent: &Value, child: &Child) -> bool {
    complete_list(parent, child).is_some()
}

/// The items of an embedded child list the payload carries in full.
fn complete_list<'v>(parent: &'v Value, child: &Child) -> Option<&'v [Value]> {
    if !child.embedded {
        return None;
    }
    let list = parent.get(child.field)?;
    if list.get("has_more").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    list.get("data")?.as_array().map(Vec::as_slice)
}

#[derive(QueryableByName)]
struct StoredState {
    #[diesel(sql_type = Text)]
    account: String,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    remote_version: i64,
    #[diesel(sql_type = Bool)]
    deleted: bool,
    /// `data.status`: whether a child list read only when it changes
    /// ([`Reread::WhenStatusChanges`]) is read again.
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

/// The stored state of objects of one relation, keyed by (account, id);
/// locked in key order with [`Locking::ForUpdate`], so appliers cannot
/// deadlock.
fn fetch_stored(
    conn: &mut PgConnection,
    resource: &Resource,
    accounts: &[&str],
    ids: &[&str],
    locking: Locking,
) -> QueryResult<Vec<StoredState>> {
    let lock = match locking {
        Locking::ForUpdate => " FOR UPDATE OF r",
        Locking::None => "",
    };
    // One primary-key probe per key while the statistics are near the
    // table's size (see sync::idmap::many: the same lookup, locked the
    // same way).
    diesel::sql_query(format!(
        "SELECT r.account, r.id, r.remote_version, r.deleted, r.data->>'status' AS status \
         FROM unnest($1, $2) AS k(account, id) \
         CROSS JOIN LATERAL (SELECT account, id, remote_version, deleted, data FROM {} \
             WHERE account = k.account AND id = k.id) AS r \
         ORDER BY r.account, r.id{lock}",
        resource.table()
    ))
    .bind::<Array<Text>, _>(accounts)
    .bind::<Array<Text>, _>(ids)
    .load(conn)
}

/// The child lists to read before writing `events`' objects: those their
/// payloads leave out or truncate, less the lists that only change with
/// their parent's status when the stored status is the event's. Events of
/// an object after its first are its newer versions; one read serves them.
pub(super) fn lists_to_read(
    conn: &mut PgConnection,
    events: &[(&'static Resource, &StripeEvent)],
) -> QueryResult<Vec<(&'static Resource, &'static Child, AccountId, String)>> {
    let mut wanted = Vec::new();
    let mut settled: HashMap<&'static str, HashMap<(String, String), Option<String>>> =
        HashMap::new();
    for &(resource, _) in events {
        let keyed = resource
            .children
            .iter()
            .any(|c| c.reread == Reread::WhenStatusChanges);
        if keyed && !settled.contains_key(resource.relation) {
            let mine: Vec<&StripeEvent> = events
                .iter()
                .filter(|(r, _)| std::ptr::eq(*r, resource))
                .map(|(_, e)| *e)
                .collect();
            let accounts: Vec<&str> = mine
                .iter()
                .map(|e| row_account(resource, e).as_str())
                .collect();
            let ids: Vec<&str> = mine.iter().map(|e| e.object_id()).collect();
            let stored = fetch_stored(conn, resource, &accounts, &ids, Locking::None)?
                .into_iter()
                .filter(|s| !s.deleted)
                .map(|s| ((s.account, s.id), s.status))
                .collect();
            settled.insert(resource.relation, stored);
        }
    }
    for &(resource, event) in events {
        if facts(resource, event).delete {
            continue; // a tombstone's items are all gone; nothing to read
        }
        let id = event.object_id();
        for child in resource.children {
            if carries(&event.object, child) || !child.exists_for(&event.object) {
                continue;
            }
            let stored_status = settled
                .get(resource.relation)
                .and_then(|s| s.get(&(row_account(resource, event).to_string(), id.to_owned())));
            if let Some(stored_status) = stored_status {
                if child.reread == Reread::WhenStatusChanges
                    && stored_status.as_deref()
                        == event.object.get("status").and_then(Value::as_str)
                {
                    continue;
                }
            }
            let seen = wanted
                .iter()
                .any(|(_, c, a, i): &(_, &Child, AccountId, String)| {
                    std::ptr::eq(*c, child) && a == row_account(resource, event) && i == id
                });
            if !seen {
                wanted.push((
                    resource,
                    child,
                    row_account(resource, event).clone(),
                    id.to_owned(),
                ));
            }
        }
    }
    Ok(wanted)
}

/// Reads (and with [`Locking::ForUpdate`] locks, in key order so appliers
/// cannot deadlock) the stored state of every planned object.
fn load_stored(
    conn: &mut PgConnection,
    plans: &mut [ObjectPlan<'_>],
    locking: Locking,
) -> Result<(), ApplyError> {
    let mut relations: HashMap<&'static str, (&'static Resource, Vec<usize>)> = HashMap::new();
    for (i, plan) in plans.iter().enumerate() {
        relations
            .entry(plan.resource.relation)
            .or_insert_with(|| (plan.resource, Vec::new()))
            .1
            .push(i);
    }
    // Relations in name order, rows in key order: two appliers of the same
    // objects (a rebalance) lock in the same order and cannot deadlock.
    let mut relations: Vec<_> = relations.into_values().collect();
    relations.sort_by_key(|(r, _)| r.relation);
    for (resource, members) in relations {
        let accounts: Vec<&str> = members.iter().map(|&i| plans[i].account.as_str()).collect();
        let ids: Vec<&str> = members.iter().map(|&i| plans[i].id).collect();
        let found = fetch_stored(conn, resource, &accounts, &ids, locking)?;
        let index: HashMap<(&str, &str), usize> = members
            .iter()
            .map(|&i| ((plans[i].account.as_str(), plans[i].id), i))
            .collect();
        let found: Vec<(usize, Watermark, Option<String>)> = found
            .into_iter()
            .filter_map(|s| {
                let i = *index.get(&(s.account.as_str(), s.id.as_str()))?;
                let mark = Watermark {
                    version: s.remote_version,
                    deleted: s.deleted,
                };
                Some((i, mark, s.status))
            })
            .collect();
        for (i, mark, status) in found {
            plans[i].stored = Some(mark);
            plans[i].stored_status = status;
        }
    }
    Ok(())
}

/// Stores what the plans decided: per relation one upsert of the rows with
/// a new object, one update of those only tombstoned, and per child
/// relation one upsert of the items and one update marking the items no
/// longer listed as deleted.
fn write(conn: &mut PgConnection, plans: &[ObjectPlan<'_>]) -> Result<(), ApplyError> {
    let mut relations: HashMap<&'static str, (&'static Resource, Vec<&ObjectPlan<'_>>)> =
        HashMap::new();
    for plan in plans.iter().filter(|p| p.row.is_some()) {
        relations
            .entry(plan.resource.relation)
            .or_insert_with(|| (plan.resource, Vec::new()))
            .1
            .push(plan);
    }
    let mut relations: Vec<_> = relations.into_values().collect();
    relations.sort_by_key(|(r, _)| r.relation);
    for (resource, plans) in relations {
        upsert_rows(conn, resource, &plans)?;
        tombstone_rows(conn, resource, &plans)?;
        for child in resource.children {
            write_children(conn, child, &plans)?;
        }
    }
    Ok(())
}

fn row<'p, 'e>(plan: &'p ObjectPlan<'e>) -> &'p Row<'e> {
    plan.row.as_ref().expect("only planned rows are written")
}

fn upsert_rows(
    conn: &mut PgConnection,
    resource: &Resource,
    plans: &[&ObjectPlan<'_>],
) -> QueryResult<()> {
    let with_data: Vec<&&ObjectPlan<'_>> = plans.iter().filter(|p| row(p).data.is_some()).collect();
    if with_data.is_empty() {
        return Ok(());
    }
    diesel::sql_query(format!(
        "INSERT INTO {} AS r (account, id, data, deleted, remote_version, remote_event_id) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (account, id) DO UPDATE SET data = excluded.data, deleted = excluded.deleted, \
           remote_version = excluded.remote_version, remote_event_id = excluded.remote_event_id, \
           synced_at = now()",
        resource.table()
    ))
    .bind::<Array<Text>, _>(with_data.iter().map(|p| p.account).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(with_data.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(
        with_data
            .iter()
            .map(|p| row(p).data.as_deref().expect("filtered on data"))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Bool>, _>(with_data.iter().map(|p| row(p).deleted).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(
        with_data
            .iter()
            .map(|p| row(p).mark.version)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        with_data
            .iter()
            .map(|p| row(p).event_id)
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .map(drop)
}

/// Rows tombstoned without a new object: only existing rows (a new object
/// always arrives with one), so a plain update.
fn tombstone_rows(
    conn: &mut PgConnection,
    resource: &Resource,
    plans: &[&ObjectPlan<'_>],
) -> QueryResult<()> {
    let bare: Vec<&&ObjectPlan<'_>> = plans.iter().filter(|p| row(p).data.is_none()).collect();
    if bare.is_empty() {
        return Ok(());
    }
    diesel::sql_query(format!(
        "UPDATE {} AS r SET deleted = v.deleted, remote_version = v.version, \
           remote_event_id = v.event_id, synced_at = now() \
         FROM unnest($1, $2, $3, $4, $5) AS v(account, id, deleted, version, event_id) \
         WHERE r.account = v.account AND r.id = v.id",
        resource.table()
    ))
    .bind::<Array<Text>, _>(bare.iter().map(|p| p.account).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(bare.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(bare.iter().map(|p| row(p).deleted).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(bare.iter().map(|p| row(p).mark.version).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(bare.iter().map(|p| row(p).event_id).collect::<Vec<_>>())
    .execute(conn)
    .map(drop)
}

/// Replaces each written parent's item set: items listed are upserted in
/// list order, items no longer listed are marked deleted.
fn write_children(
    conn: &mut PgConnection,
    child: &'static Child,
    plans: &[&ObjectPlan<'_>],
) -> Result<(), ApplyError> {
    let mut parents = (Vec::new(), Vec::new());
    let mut items = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for plan in plans {
        let Some((_, list)) = row(plan)
            .children
            .iter()
            .find(|(c, _)| std::ptr::eq(*c, child))
        else {
            continue;
        };
        parents.0.push(plan.account.as_str());
        parents.1.push(plan.id);
        // An id listed twice would make the upsert touch a row twice,
        // which Postgres refuses on every retry: the last listing wins.
        let mut listed: HashMap<&str, usize> = HashMap::new();
        for (position, item) in list.iter().enumerate() {
            let id = item.get("id").and_then(Value::as_str).ok_or_else(|| {
                ApplyError::Permanent(Refusal::Malformed(format!(
                    "an item of {} {}'s {} has no id",
                    plan.resource.object, plan.id, child.field
                )))
            })?;
            if let Some(&at) = listed.get(id) {
                items.3[at] = position as i32;
                items.4[at] = item;
                continue;
            }
            listed.insert(id, items.0.len());
            items.0.push(plan.account.as_str());
            items.1.push(plan.id);
            items.2.push(id);
            items.3.push(position as i32);
            items.4.push(item);
        }
    }
    if parents.0.is_empty() {
        return Ok(());
    }
    let (table, parent) = (child.table(), child.parent_column);
    if !items.0.is_empty() {
        diesel::sql_query(format!(
            "INSERT INTO {table} AS c (account, \"{parent}\", id, position, data) \
             SELECT * FROM unnest($1, $2, $3, $4, $5) \
             ON CONFLICT (account, \"{parent}\", id) DO UPDATE SET position = excluded.position, \
               data = excluded.data, deleted = false, synced_at = now()"
        ))
        .bind::<Array<Text>, _>(&items.0)
        .bind::<Array<Text>, _>(&items.1)
        .bind::<Array<Text>, _>(&items.2)
        .bind::<Array<Integer>, _>(&items.3)
        .bind::<Array<Jsonb>, _>(&items.4)
        .execute(conn)?;
    }
    diesel::sql_query(format!(
        "UPDATE {table} AS c SET deleted = true, synced_at = now() \
         FROM unnest($1, $2) AS p(account, parent) \
         WHERE c.account = p.account AND c.\"{parent}\" = p.parent AND NOT c.deleted \
           AND NOT EXISTS (SELECT 1 FROM unnest($3, $4, $5) AS k(account, parent, id) \
               WHERE k.account = c.account AND k.parent = c.\"{parent}\" AND k.id = c.id)"
    ))
    .bind::<Array<Text>, _>(&parents.0)
    .bind::<Array<Text>, _>(&parents.1)
    .bind::<Array<Text>, _>(&items.0)
    .bind::<Array<Text>, _>(&items.1)
    .bind::<Array<Text>, _>(&items.2)
    .execute(conn)?;
    Ok(())
}
