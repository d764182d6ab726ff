//! A type's list cut into `created` slices, each read page by page from
//! its own cursor, so several requests of one large type can be in flight
//! at once. The pending slices are the type's checkpoint.
//!
//! A slice is `[gte, lt)` of `created` with a `starting_after` cursor.
//! Stripe lists newest first, so once a page of `[gte, lt)` ended at an
//! object created at `c`, everything created before `c` is still unread:
//! the slice can be split at any `mid` in `(gte, c]` into `[mid, lt)`,
//! which keeps the cursor (its object lies in it), and `[gte, mid)`, read
//! from its start. Nothing is read twice and nothing is skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stripe's first objects were made in 2011: the floor of a slice with no
/// lower bound, when it is split.
pub const STRIPE_EPOCH: i64 = 1_293_840_000;

/// One slice: `created[gte]`, `created[lt]` (none: unbounded) and the
/// last object read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Slice {
    /// The list call's parameters for this slice's next page; the created
    /// bounds only for a type whose list takes them.
    pub fn params(&self, page_size: u32, by_created: bool) -> Vec<(String, String)> {
        let mut params = vec![("limit".to_owned(), page_size.to_string())];
        if by_created {
            if let Some(gte) = self.gte {
                params.push(("created[gte]".into(), gte.to_string()));
            }
            if let Some(lt) = self.lt {
                params.push(("created[lt]".into(), lt.to_string()));
            }
        }
        if let Some(after) = &self.after {
            params.push(("starting_after".into(), after.clone()));
        }
        params
    }

    /// After a page that ended at an object created at `last_created`:
    /// the older part of the slice, now its own, if there is room for one
    /// (this slice keeps the newer part and its cursor). The point is
    /// halfway between `last_created` and the slice's lower bound, or
    /// `floor` (nothing was created before it) when that is higher: the
    /// older part still starts at the slice's own bound, so a floor can
    /// only move the point, never leave an object out.
    pub fn split(&mut self, last_created: i64, floor: Option<i64>) -> Option<Slice> {
        let bottom = self.gte.unwrap_or(STRIPE_EPOCH);
        let floor = floor.map_or(bottom, |floor| floor.max(bottom));
        if last_created - floor < 2 {
            return None;
        }
        let mid = floor + (last_created - floor) / 2;
        let older = Slice {
            gte: self.gte,
            lt: Some(mid),
            after: None,
        };
        self.gte = Some(mid);
        Some(older)
    }
}

/// The slices of a type not yet read to their end, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slices {
    pub pending: BTreeMap<u64, Slice>,
    pub next_id: u64,
    /// Nothing of the run's range was created before this: the run's
    /// lower bound, raised by each empty slice found at the bottom. Splits
    /// start from it, so an account that began years after Stripe did
    /// does not pay an empty page for each year in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<i64>,
}

impl Slices {
    /// A new run: one slice of everything created since `since`.
    pub fn whole(since: Option<i64>) -> Self {
        let mut slices = Self {
            floor: since,
            ..Self::default()
        };
        slices.add(Slice {
            gte: since,
            lt: None,
            after: None,
        });
        slices
    }

    pub fn add(&mut self, slice: Slice) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, slice);
        id
    }

    /// A slice `[gte, lt)` whose first page was empty holds nothing: when
    /// it starts at or below the floor, nothing lies below `lt` either.
    pub fn learn_empty(&mut self, gte: Option<i64>, lt: Option<i64>) {
        if let Some(lt) = lt {
            if gte <= self.floor && self.floor < Some(lt) {
                self.floor = Some(lt);
            }
        }
    }

    /// The checkpoint's text.
    pub fn to_position(&self) -> String {
        serde_json::to_string(self).expect("slices serialise")
    }

    /// A saved position: this form, or the plain `starting_after` id an
    /// earlier version saved (one slice, resumed after that id).
    pub fn from_position(position: &str, since: Option<i64>) -> Self {
        serde_json::from_str(position).unwrap_or_else(|_| {
            let mut slices = Self {
                floor: since,
                ..Self::default()
            };
            slices.add(Slice {
                gte: since,
                lt: None,
                after: Some(position.to_owned()),
            });
            slices
        })
    }
}

/// `created` of the last object of a page, for splitting.
pub fn last_created(page: &[Value]) -> Option<i64> {
    page.last()?.get("created")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_keeps_the_cursor_above_and_leaves_no_gap() {
        let mut slice = Slice {
            gte: Some(1_000),
            lt: Some(2_000),
            after: Some("prod_9".into()),
        };
        let older = slice.split(1_500, None).unwrap();
        assert_eq!(
            slice.gte,
            Some(1_250),
            "the cursor's object (1500) stays in"
        );
        assert_eq!(older.lt, Some(1_250));
        assert_eq!(older.gte, Some(1_000));
        assert_eq!(older.after, None);
        assert_eq!(slice.after.as_deref(), Some("prod_9"));
        // No room: the page ended within a second of the floor.
        let mut narrow = Slice {
            gte: Some(10),
            lt: None,
            after: Some("x".into()),
        };
        assert_eq!(narrow.split(11, None), None);
        // Unbounded below: split from Stripe's first year.
        let mut open = Slice {
            gte: None,
            lt: None,
            after: Some("x".into()),
        };
        let older = open.split(STRIPE_EPOCH + 100, None).unwrap();
        assert_eq!(older.gte, None, "the oldest part stays unbounded");
        assert_eq!(open.gte, Some(STRIPE_EPOCH + 50));
    }

    #[test]
    fn an_empty_bottom_slice_raises_the_floor_and_splits_start_from_it() {
        const E: i64 = STRIPE_EPOCH;
        let mut slices = Slices::whole(None);
        // Not at the bottom: it says nothing about what lies below it.
        slices.learn_empty(Some(E + 5_000), Some(E + 6_000));
        assert_eq!(slices.floor, None);
        slices.learn_empty(None, Some(E + 4_000));
        assert_eq!(slices.floor, Some(E + 4_000));
        // Now at the bottom: the floor climbs on.
        slices.learn_empty(Some(E + 4_000), Some(E + 4_500));
        assert_eq!(slices.floor, Some(E + 4_500));
        // An empty slice below the floor never lowers it.
        slices.learn_empty(None, Some(E + 1_000));
        assert_eq!(slices.floor, Some(E + 4_500));
        // A split point between the floor and the page's end, and the
        // older part still reaches down to the slice's own bound.
        let mut open = Slice {
            gte: None,
            lt: None,
            after: Some("x".into()),
        };
        let older = open.split(E + 5_500, slices.floor).unwrap();
        assert_eq!(open.gte, Some(E + 5_000));
        assert_eq!((older.gte, older.lt), (None, Some(E + 5_000)));
        // The floor survives the checkpoint.
        assert_eq!(Slices::from_position(&slices.to_position(), None), slices);
        // A checkpoint saved before floors existed resumes without one:
        // splits start from the slices' own bounds, as they did.
        let before_floors = r#"{"pending":{"3":{"gte":1500000000,"after":"cus_9"}},"next_id":4}"#;
        let resumed = Slices::from_position(before_floors, Some(1_400_000_000));
        assert_eq!(resumed.floor, None);
        assert_eq!(resumed.next_id, 4);
        assert_eq!(resumed.pending[&3].after.as_deref(), Some("cus_9"));
    }

    #[test]
    fn positions_round_trip_and_an_old_cursor_resumes() {
        let mut slices = Slices::whole(Some(5));
        let id = slices.add(Slice {
            gte: Some(5),
            lt: Some(9),
            after: None,
        });
        assert_eq!(Slices::from_position(&slices.to_position(), None), slices);
        assert_eq!(id, 1);
        let old = Slices::from_position("prod_42", Some(7));
        assert_eq!(
            old.pending.values().next().unwrap(),
            &Slice {
                gte: Some(7),
                lt: None,
                after: Some("prod_42".into())
            }
        );
    }

    #[test]
    fn only_a_type_listed_by_created_is_sent_the_bounds() {
        let slice = Slice {
            gte: Some(1),
            lt: Some(2),
            after: Some("a".into()),
        };
        let keys =
            |by| -> Vec<String> { slice.params(100, by).into_iter().map(|(k, _)| k).collect() };
        assert_eq!(
            keys(true),
            ["limit", "created[gte]", "created[lt]", "starting_after"]
        );
        assert_eq!(keys(false), ["limit", "starting_after"]);
    }
}
