//! The ordering rules (invariant 4), the same for every object type. The
//! stored state of an object is a [`Watermark`]: the `created` second of the
//! newest remote state applied, and whether the object is deleted.
//!
//! - a deleted object is final: any later event is ignored, except where
//!   deleted is a state ([`Facts::revives`]: a connected account the
//!   platform cannot see now), ordered by time like any other;
//! - a delete always wins, whatever its timestamp;
//! - an older event is stale and skipped;
//! - a newer event's snapshot is written;
//! - an event from the same second cannot be ordered by its timestamp, so
//!   the object is re-read from Stripe and Stripe's current state written.
//!
//! Snapshots (`<object>.snapshot`, from backfill and diff --repair) carry
//! the time *we* read the object, not a Stripe timestamp, so host clock
//! skew matters: a snapshot is newer only when it is more than
//! [`SNAPSHOT_SKEW_SECS`] ahead of the stored state, older when more than
//! that behind, and anything in between is treated as a tie (re-read). The
//! watermark a snapshot leaves is lowered by the same margin, so a real
//! event that happened just after the read is never taken for stale.

use std::cmp::Ordering;

use serde_json::Value;

use super::Applied;

/// How far the host clock may be from Stripe's for snapshot ordering.
pub const SNAPSHOT_SKEW_SECS: i64 = 60;

/// An object's ordering state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub version: i64,
    pub deleted: bool,
}

/// What the ordering rules make of one event, given the stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing stored yet: the object is new to us (possibly already deleted).
    Create { deleted: bool },
    /// The object is deleted; nothing changes.
    AfterTombstone,
    /// Tombstone the row; `columns` says whether the event's snapshot may
    /// also be written (not for a stale delete, nor a deleted snapshot).
    Delete { columns: bool },
    /// Older than the stored state: nothing changes.
    Stale,
    /// Newer: write the event's snapshot.
    Write,
    /// Same second: re-read the object from Stripe and write that.
    ReRead,
}

impl Step {
    /// The outcome the step records, for steps that need nothing more.
    pub fn applied(self) -> Applied {
        match self {
            Self::Create { deleted: true } | Self::Delete { .. } => Applied::Deleted,
            Self::Create { deleted: false } | Self::Write => Applied::Upserted,
            Self::AfterTombstone => Applied::AfterTombstone,
            Self::Stale => Applied::Stale,
            Self::ReRead => Applied::TieResolved,
        }
    }

    /// Whether the step changes the stored state (and so its watermark).
    pub fn changes(self) -> bool {
        matches!(
            self,
            Self::Create { .. } | Self::Delete { .. } | Self::Write | Self::ReRead
        )
    }
}

/// What the rules need to know of an event besides its `created`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The event deletes the object.
    pub delete: bool,
    /// A state we read through the API, stamped with the host's clock.
    pub snapshot: bool,
    /// A deletion of the object is not for good, but a state ordered like
    /// any other: an event newer than it undoes it (a connected account the
    /// platform could not see, authorized again).
    pub revives: bool,
}

/// `{"deleted": true}`: how Stripe answers for a deleted object, and how a
/// snapshot of one looks.
pub fn marked_deleted(object: &Value) -> bool {
    object.get("deleted").and_then(Value::as_bool) == Some(true)
}

/// Applies the rules: what an event with `facts` created at `created` does
/// to an object whose stored state is `stored` (None: nothing stored), and
/// the watermark it leaves.
pub fn decide(facts: Facts, created: i64, stored: Option<Watermark>) -> (Step, Watermark) {
    // The watermark this event may leave behind.
    let version = if facts.snapshot {
        created - SNAPSHOT_SKEW_SECS
    } else {
        created
    };
    let Some(stored) = stored else {
        let mark = Watermark {
            version,
            deleted: facts.delete,
        };
        return (
            Step::Create {
                deleted: facts.delete,
            },
            mark,
        );
    };
    // A deletion that is not for good is ordered like any state below: an
    // older event is stale, a newer one written, one of the same second
    // settled by a re-read.
    let deletion_is_final = facts.delete || !facts.revives;
    if stored.deleted && deletion_is_final {
        return (Step::AfterTombstone, stored);
    }
    let newer = Watermark {
        version: version.max(stored.version),
        deleted: facts.delete,
    };
    if facts.delete {
        // A stale delete still deletes, but must not roll columns back; a
        // deleted snapshot has no columns to offer.
        let columns = !facts.snapshot && version >= stored.version;
        return (Step::Delete { columns }, newer);
    }
    let order = if facts.snapshot {
        snapshot_order(created, stored.version)
    } else {
        created.cmp(&stored.version)
    };
    match order {
        Ordering::Less => (Step::Stale, stored),
        Ordering::Greater => (Step::Write, newer),
        Ordering::Equal => (Step::ReRead, newer),
    }
}

/// Orders a snapshot read at `read_at` (host clock) against a stored
/// watermark (Stripe clock), with the skew margin on both sides.
fn snapshot_order(read_at: i64, watermark: i64) -> Ordering {
    if read_at - SNAPSHOT_SKEW_SECS > watermark {
        Ordering::Greater
    } else if read_at + SNAPSHOT_SKEW_SECS < watermark {
        Ordering::Less
    } else {
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: Facts = Facts {
        delete: false,
        snapshot: false,
        revives: false,
    };
    const DELETE: Facts = Facts {
        delete: true,
        snapshot: false,
        revives: false,
    };
    const REVIVE: Facts = Facts {
        delete: false,
        snapshot: false,
        revives: true,
    };

    fn at(version: i64) -> Option<Watermark> {
        Some(Watermark {
            version,
            deleted: false,
        })
    }

    #[test]
    fn snapshots_are_ordered_with_a_skew_margin() {
        let w = 1_000;
        assert_eq!(
            snapshot_order(w + SNAPSHOT_SKEW_SECS + 1, w),
            Ordering::Greater
        );
        assert_eq!(snapshot_order(w + SNAPSHOT_SKEW_SECS, w), Ordering::Equal);
        assert_eq!(snapshot_order(w, w), Ordering::Equal);
        assert_eq!(snapshot_order(w - SNAPSHOT_SKEW_SECS, w), Ordering::Equal);
        assert_eq!(
            snapshot_order(w - SNAPSHOT_SKEW_SECS - 1, w),
            Ordering::Less
        );
    }

    #[test]
    fn the_rules_table() {
        let tomb = Some(Watermark {
            version: 10,
            deleted: true,
        });
        let cases = [
            (EVENT, 10, None, Step::Create { deleted: false }),
            (DELETE, 10, None, Step::Create { deleted: true }),
            (EVENT, 9, at(10), Step::Stale),
            (EVENT, 11, at(10), Step::Write),
            (EVENT, 10, at(10), Step::ReRead),
            (DELETE, 9, at(10), Step::Delete { columns: false }),
            (DELETE, 10, at(10), Step::Delete { columns: true }),
            (EVENT, 99, tomb, Step::AfterTombstone),
            (DELETE, 99, tomb, Step::AfterTombstone),
            (REVIVE, 11, tomb, Step::Write),
            (REVIVE, 10, tomb, Step::ReRead),
            (REVIVE, 9, tomb, Step::Stale),
            (REVIVE, 11, at(10), Step::Write),
            (REVIVE, 10, None, Step::Create { deleted: false }),
        ];
        for (facts, created, stored, want) in cases {
            assert_eq!(
                decide(facts, created, stored).0,
                want,
                "{facts:?} at {created} on {stored:?}"
            );
        }
    }

    #[test]
    fn a_revival_leaves_a_live_watermark_at_its_own_time() {
        let tomb = Some(Watermark {
            version: 10,
            deleted: true,
        });
        assert_eq!(
            decide(REVIVE, 12, tomb).1,
            Watermark {
                version: 12,
                deleted: false
            }
        );
    }

    #[test]
    fn a_stale_event_leaves_the_watermark_alone() {
        assert_eq!(decide(EVENT, 5, at(10)).1, at(10).unwrap());
        let (_, mark) = decide(DELETE, 5, at(10));
        assert_eq!(
            mark,
            Watermark {
                version: 10,
                deleted: true
            }
        );
    }
}
