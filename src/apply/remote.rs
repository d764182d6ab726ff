//! Reading objects back from their service, and keeping those reads out of
//! the apply transaction.
//!
//! The apply path asks a [`RemoteReader`] for an object's current state
//! (same-second ties) and for child lists the payload truncates. The
//! inbound worker first plans a batch through a [`Recording`] of the live
//! reader, outside any transaction, then applies it inside the transaction
//! against the [`Prefetched`] answers: one read per object per batch, and
//! no HTTP call while row locks are held. Child lists are gathered during
//! that plan and read together ([`RemoteReader::children_many`]), so a
//! batch of checkout sessions costs one round of concurrent reads, not one
//! read after another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::Value;

use super::{ApplyError, Refusal};
use crate::registry::{Child, Resource};
use crate::stripe::{AccountId, RemoteObject};

/// Reads the current state of objects from their service.
pub trait RemoteReader: Send + Sync {
    /// `GET /v1/{path}/{id}` on `account`, e.g. `("customers", "cus_123")`.
    /// Only the service saying the object does not exist is
    /// [`RemoteObject::Deleted`]; any other failure is an error.
    fn current(
        &self,
        account: &AccountId,
        path: &str,
        id: &str,
    ) -> Result<RemoteObject, ApplyError>;

    /// Makes reads of `account` go with `platform`'s key (an event's
    /// [`crate::stripe::StripeEvent::platform`]). An error when this reader
    /// holds no key for `platform`: the event waits for an operator rather
    /// than being read with another platform's key, whose "no such object"
    /// would read as a deletion. A reader with one key has nothing to note.
    fn note_platform(&self, _account: &AccountId, _platform: &AccountId) -> Result<(), ApplyError> {
        Ok(())
    }

    /// [`Self::current`] for a read the apply can do without: None when a
    /// reader that replays answers read earlier has none for it (without
    /// counting that as a miss), so the caller goes on without it.
    fn current_if_read(
        &self,
        account: &AccountId,
        path: &str,
        id: &str,
    ) -> Option<Result<RemoteObject, ApplyError>> {
        Some(self.current(account, path, id))
    }

    /// For an answer of [`Self::current`] read earlier than asked (before
    /// the caller's transaction): the outbox row through which our own
    /// changes to the object were acknowledged just before that read (see
    /// `outbox::acknowledged_through`). The read may not reflect the rows
    /// after it, even those acknowledged by the time the apply runs. `None`
    /// for a reader that reads when asked, or when nothing was noted.
    fn acknowledged_before_read(
        &self,
        _account: &AccountId,
        _path: &str,
        _id: &str,
    ) -> Option<i64> {
        None
    }

    /// Every item of a parent's child list (invoice lines, subscription
    /// items, checkout line items), paged in full.
    fn children(
        &self,
        account: &AccountId,
        parent: &'static Resource,
        child: &'static Child,
        parent_id: &str,
    ) -> Result<Vec<Value>, ApplyError>;

    /// [`Self::children`] for many lists; a reader that can read them
    /// concurrently overrides this. One answer per request, in order.
    fn children_many(&self, requests: &[ListRequest]) -> Vec<Result<Vec<Value>, ApplyError>> {
        requests
            .iter()
            .map(|r| self.children(&r.account, r.parent, r.child, &r.parent_id))
            .collect()
    }
}

/// One child list to read: `child` of `parent_id` on `account`.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub account: AccountId,
    pub parent: &'static Resource,
    pub child: &'static Child,
    pub parent_id: String,
}

type Key = (AccountId, String, String);

fn key(account: &AccountId, path: &str, id: &str) -> Key {
    (account.clone(), path.to_owned(), id.to_owned())
}

/// Answers recorded before the transaction.
#[derive(Debug, Default)]
pub struct Prefetched {
    /// A permanent refusal is recorded too (as its reason), so the apply
    /// refuses the same way; transient failures are not recorded.
    objects: HashMap<Key, Result<RemoteObject, Refusal>>,
    lists: HashMap<Key, Result<Vec<Value>, Refusal>>,
    /// Per object read, what [`RemoteReader::acknowledged_before_read`]
    /// answers.
    acknowledged: HashMap<Key, i64>,
    /// Set when the apply asked for a read that was not made.
    missed: AtomicBool,
}

/// Records a read's answer, unless it may differ on a retry.
fn keep<T: Clone>(answer: &Result<T, ApplyError>) -> Option<Result<T, Refusal>> {
    match answer {
        Ok(value) => Some(Ok(value.clone())),
        Err(ApplyError::Permanent(reason)) => Some(Err(reason.clone())),
        Err(ApplyError::Transient { .. }) => None,
    }
}

fn replay<T: Clone>(
    recorded: Option<&Result<T, Refusal>>,
    what: impl FnOnce() -> String,
) -> Result<T, ApplyError> {
    match recorded {
        Some(Ok(value)) => Ok(value.clone()),
        Some(Err(reason)) => Err(ApplyError::Permanent(reason.clone())),
        None => Err(not_prefetched(&what())),
    }
}

impl Prefetched {
    /// Whether an apply against these answers needed a read not made
    /// (its failure then says: prepare the batch with [`super::prefetch`]).
    pub fn missed(&self) -> bool {
        self.missed.load(Ordering::Relaxed)
    }

    fn note_miss(&self, missing: bool) {
        if missing {
            self.missed.store(true, Ordering::Relaxed);
        }
    }

    /// How many reads were recorded (objects and lists).
    pub fn len(&self) -> usize {
        self.objects.len() + self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn not_prefetched(what: &str) -> ApplyError {
    // A read only the stored state could foresee (a tie), or the state
    // moved since the plan that made the reads: the batch is prepared
    // again with a plan against the stored state.
    ApplyError::transient(anyhow::anyhow!(
        "{what} was not read before the transaction; the batch will be prepared again"
    ))
}

impl RemoteReader for Prefetched {
    fn current(
        &self,
        account: &AccountId,
        path: &str,
        id: &str,
    ) -> Result<RemoteObject, ApplyError> {
        let found = self.objects.get(&key(account, path, id));
        self.note_miss(found.is_none());
        replay(found, || format!("{path}/{id}"))
    }

    fn current_if_read(
        &self,
        account: &AccountId,
        path: &str,
        id: &str,
    ) -> Option<Result<RemoteObject, ApplyError>> {
        let found = self.objects.get(&key(account, path, id))?;
        Some(replay(Some(found), String::new))
    }

    fn acknowledged_before_read(&self, account: &AccountId, path: &str, id: &str) -> Option<i64> {
        self.acknowledged.get(&key(account, path, id)).copied()
    }

    fn children(
        &self,
        account: &AccountId,
        _parent: &'static Resource,
        child: &'static Child,
        parent_id: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        let found = self.lists.get(&key(account, child.relation, parent_id));
        self.note_miss(found.is_none());
        replay(found, || format!("{} of {parent_id}", child.field))
    }
}

/// Passes reads through to a live reader and records the answers; a read
/// repeated within the batch is answered from the record. Child lists are
/// only noted while planning (answered empty: the read-only plan is thrown
/// away) and read together by [`Recording::into_record`].
pub struct Recording<'a> {
    live: &'a dyn RemoteReader,
    record: Mutex<Prefetched>,
    lists_wanted: Mutex<Vec<ListRequest>>,
}

impl<'a> Recording<'a> {
    pub fn new(live: &'a dyn RemoteReader) -> Self {
        Self {
            live,
            record: Mutex::default(),
            lists_wanted: Mutex::default(),
        }
    }

    /// Reads the child lists noted while planning, concurrently where the
    /// live reader can, and returns every answer recorded. A transient
    /// failure of any read fails the whole preparation (it is retried).
    pub fn into_record(self) -> Result<Prefetched, ApplyError> {
        let wanted = self
            .lists_wanted
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let mut record = self.record.into_inner().unwrap_or_else(|p| p.into_inner());
        let answers = self.live.children_many(&wanted);
        for (request, answer) in wanted.iter().zip(answers) {
            let k = key(&request.account, request.child.relation, &request.parent_id);
            let kept = match answer {
                Ok(items) => Ok(items),
                Err(ApplyError::Permanent(reason)) => Err(reason),
                Err(transient) => return Err(transient),
            };
            record.lists.insert(k, kept);
        }
        Ok(record)
    }

    /// Notes, before the first read of an object, through which outbox
    /// row our changes to it were acknowledged (answered by the record's
    /// [`RemoteReader::acknowledged_before_read`]). Only the first note
    /// counts: a repeated read is answered from the first one.
    pub fn note_acknowledged(&self, account: &AccountId, path: &str, id: &str, through: i64) {
        self.record()
            .acknowledged
            .entry(key(account, path, id))
            .or_insert(through);
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Prefetched> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RemoteReader for Recording<'_> {
    fn current(
        &self,
        account: &AccountId,
        path: &str,
        id: &str,
    ) -> Result<RemoteObject, ApplyError> {
        let k = key(account, path, id);
        if let Some(known) = self.record().objects.get(&k) {
            return replay(Some(known), String::new);
        }
        let answer = self.live.current(account, path, id);
        if let Some(kept) = keep(&answer) {
            self.record().objects.insert(k, kept);
        }
        answer
    }

    fn children(
        &self,
        account: &AccountId,
        parent: &'static Resource,
        child: &'static Child,
        parent_id: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        let mut wanted = self.lists_wanted.lock().unwrap_or_else(|p| p.into_inner());
        let noted = wanted.iter().any(|r| {
            &r.account == account && std::ptr::eq(r.child, child) && r.parent_id == parent_id
        });
        if !noted {
            wanted.push(ListRequest {
                account: account.clone(),
                parent,
                child,
                parent_id: parent_id.to_owned(),
            });
        }
        Ok(Vec::new())
    }
}
