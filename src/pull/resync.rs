//! `stripe-sync resync ID…` and `POST /api/admin/resync`: reads objects by
//! id, now, and publishes each as a snapshot onto the events topic, so it
//! reaches the mirror the one way everything does: through the ledger and
//! the per-object ordering, like any event. An object Stripe no longer has
//! is published deleted, as `diff --repair` does.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::snapshot_event;
use crate::db::PgPool;
use crate::ingest::unix_now;
use crate::kafka::envelope::SOURCE_RESYNC;
use crate::kafka::EventProducer;
use crate::registry::{self, IdTypeError, Identity, Listing, Parent, Resource};
use crate::retry::Backoff;
use crate::stripe::event::SNAPSHOT_ID_PREFIX;
use crate::stripe::{AccountId, ObjectId, RemoteObject, StripeClient, StripeError};

/// At most this many ids a call: each is one read of the account's rate.
pub const MAX_IDS: usize = 100;

/// Why a resync request is refused before anything is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("give between 1 and {MAX_IDS} ids")]
    Count,
    #[error("{0:?} is not a Stripe object id")]
    InvalidId(String),
    #[error(transparent)]
    Type(#[from] IdTypeError),
    #[error("{id:?} is not a {named}: its prefix names a {found}")]
    TypeMismatch {
        id: String,
        named: &'static str,
        found: String,
    },
    #[error("{id:?}: a {object} {reason}")]
    NotById {
        id: String,
        object: &'static str,
        reason: &'static str,
    },
}

/// One object to read: where, and as which account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static Resource,
    pub id: String,
    /// The account whose object it is (and whose key the snapshot carries).
    pub account: AccountId,
    /// The object it is kept under ([`Listing::Nested`]).
    pub parent: Option<String>,
}

/// Checks every id and finds its type (by prefix, or `type_name`), before
/// any is read: a request is refused whole or read whole.
pub fn plan(
    ids: &[String],
    type_name: Option<&str>,
    account: &AccountId,
) -> Result<Vec<Target>, Refused> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(Refused::Count);
    }
    ids.iter()
        .map(|id| {
            ObjectId::parse(id).map_err(|_| Refused::InvalidId(id.chars().take(64).collect()))?;
            let resource = registry::type_of_id(id, type_name)?;
            // --type names the type where the prefix does not; it never
            // overrides one the prefix does name.
            match registry::type_of_id(id, None) {
                Ok(by_prefix) if by_prefix != resource => {
                    return Err(Refused::TypeMismatch {
                        id: id.clone(),
                        named: resource.object,
                        found: by_prefix.object.to_owned(),
                    })
                }
                Err(IdTypeError::Shared { types, .. }) if !types.contains(&resource.object) => {
                    return Err(Refused::TypeMismatch {
                        id: id.clone(),
                        named: resource.object,
                        found: types.join(" or "),
                    })
                }
                _ => {}
            }
            let not_by_id = |reason| Refused::NotById {
                id: id.clone(),
                object: resource.object,
                reason,
            };
            let (account, parent) = match (resource.identity, resource.listing) {
                (Identity::Customer, _) => {
                    return Err(not_by_id(
                        "has no id of its own; resync its customer's events with reconcile",
                    ))
                }
                // Kept under its platform, read as its platform: the
                // default one here, a further one known from the mirror
                // once `run` has noted it (`on_its_platform`).
                (Identity::ConnectedAccount, _) => (AccountId::PLATFORM, None),
                (_, Listing::Nested(Parent::ACCOUNT, _)) if account.is_platform() => {
                    return Err(not_by_id(
                        "is read under its connected account: name it with --account acct_…",
                    ))
                }
                (_, Listing::Nested(Parent::ACCOUNT, _)) => {
                    (account.clone(), Some(account.to_string()))
                }
                (_, Listing::Nested(..)) => {
                    return Err(not_by_id(
                        "is served only under its customer: `refresh` lists them per customer",
                    ))
                }
                _ => (account.clone(), None),
            };
            Ok(Target {
                resource,
                id: id.clone(),
                account,
                parent,
            })
        })
        .collect()
}

/// What one read found and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resynced {
    pub id: String,
    pub object: &'static str,
    pub relation: &'static str,
    pub account: AccountId,
    /// `live`, or `deleted` when Stripe no longer has it.
    pub state: &'static str,
    pub event_id: String,
}

/// A read or publish that failed, for good or after retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failed {
    pub id: String,
    /// `not_found` (Stripe has no such object and the mirror holds it
    /// nowhere: nothing to resync), else `failed`.
    pub code: &'static str,
    pub error: String,
}

/// Stripe has no such object, and the mirror holds no live one either.
#[derive(Debug, thiserror::Error)]
#[error("Stripe has no {object} {id} on account {account}, and the mirror holds none: nothing to resync (a typo, or another account?)")]
pub struct NotFound {
    object: &'static str,
    id: String,
    account: AccountId,
}

/// Reads and publishes each target in turn (the client keeps to the
/// account's rate); a 429, 5xx or network error is retried a few times.
/// One object's failure does not stop the others.
pub async fn run(
    stripe: &StripeClient,
    producer: &EventProducer,
    topic: &str,
    pool: &PgPool,
    targets: &[Target],
) -> Vec<Result<Resynced, Failed>> {
    // Which platform each connected account is under; unknown, an account
    // object is not read at all rather than with another platform's key.
    let known = super::accounts::note_known(pool, stripe.keys())
        .await
        .map_err(|e| format!("{e:#}"));
    let mut results = Vec::with_capacity(targets.len());
    for target in targets {
        let target = &on_its_platform(stripe, target);
        let result = match &known {
            Err(e) if target.resource.identity == Identity::ConnectedAccount => Err(
                anyhow::anyhow!("could not read which platform the account is under: {e}"),
            ),
            _ => resync_one(stripe, producer, topic, pool, target).await,
        }
        .map_err(|e| Failed {
            id: target.id.clone(),
            code: if e.is::<NotFound>() {
                "not_found"
            } else {
                "failed"
            },
            error: format!("{e:#}"),
        });
        results.push(result);
    }
    results
}

/// A connected account is read (and kept) under the platform it was seen
/// under ([`crate::stripe::platforms::KeyRing::platform_of`]).
fn on_its_platform(stripe: &StripeClient, target: &Target) -> Target {
    let mut target = target.clone();
    if target.resource.identity == Identity::ConnectedAccount {
        if let Ok(connected) = AccountId::parse(&target.id) {
            target.account = stripe.keys().platform_of(&connected);
        }
    }
    target
}

async fn resync_one(
    stripe: &StripeClient,
    producer: &EventProducer,
    topic: &str,
    pool: &PgPool,
    target: &Target,
) -> anyhow::Result<Resynced> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let (object, deleted) = loop {
        match read_current(stripe, target).await {
            Err(e) if e.is_transient() && backoff.attempts() < 4 => {
                tokio::time::sleep(backoff.next_delay(e.retry_after())).await;
            }
            other => break other?,
        }
    };
    // Gone is news only for an object the mirror holds live: a tombstone
    // is final, so an id Stripe never had (a typo, the wrong account) must
    // not leave one.
    if deleted && !mirror_holds_live(pool, target).await? {
        return Err(NotFound {
            object: target.resource.object,
            id: target.id.clone(),
            account: target.account.clone(),
        }
        .into());
    }
    let mut event = snapshot_event(target.resource, &target.account, &object, unix_now());
    // A fresh id: a resync is asked for now, so even a state seen before
    // goes through the ledger and the ordering again.
    event["id"] = json!(format!(
        "{SNAPSHOT_ID_PREFIX}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..24]
    ));
    let platform = stripe.keys().platform_of(&target.account);
    super::publish(producer, topic, &event, SOURCE_RESYNC, &platform).await?;
    Ok(Resynced {
        id: target.id.clone(),
        object: target.resource.object,
        relation: target.resource.relation,
        account: target.account.clone(),
        state: if deleted { "deleted" } else { "live" },
        event_id: event["id"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Whether the mirror holds the target, not deleted.
async fn mirror_holds_live(pool: &PgPool, target: &Target) -> anyhow::Result<bool> {
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let (table, account, id) = (
        target.resource.table(),
        target.account.clone(),
        target.id.clone(),
    );
    let found: Found = crate::db::blocking(pool, move |conn| {
        // The mirror's relations are made from the registry at run time.
        Ok::<_, anyhow::Error>(
            diesel::sql_query(format!(
                "SELECT count(*) AS n FROM {table} WHERE account = $1 AND id = $2 AND NOT deleted"
            ))
            .bind::<Text, _>(account)
            .bind::<Text, _>(id)
            .get_result(conn)?,
        )
    })
    .await?;
    Ok(found.n > 0)
}

/// What Stripe holds for the target now: the object, or (when it is gone)
/// a deleted stand-in naming its parent as the object would. True when
/// gone.
pub async fn read_current(
    stripe: &StripeClient,
    target: &Target,
) -> Result<(Value, bool), StripeError> {
    let resource = target.resource;
    let mut gone = json!({"id": target.id, "object": resource.object, "deleted": true});
    let path = match (resource.listing, &target.parent) {
        (Listing::Nested(under, _), Some(parent_id)) => {
            gone[under.field] = json!(parent_id);
            let parent_id = ObjectId::parse(parent_id)
                .map_err(|_| StripeError::InvalidId(parent_id.clone()))?;
            resource.path_under(under, parent_id.as_str())
        }
        _ => resource.path.to_owned(),
    };
    let id = ObjectId::parse(&target.id).map_err(|_| StripeError::InvalidId(target.id.clone()))?;
    Ok(match stripe.retrieve(&target.account, &path, id).await? {
        RemoteObject::Live(object) => (object, false),
        RemoteObject::Deleted => (gone, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_request_is_refused_whole_before_anything_is_read() {
        let platform = AccountId::PLATFORM;
        let connected = AccountId::parse("acct_1X").unwrap();
        let planned = plan(
            &ids(&["prod_1", "acct_1Y", "sub_sched_1"]),
            None,
            &connected,
        )
        .unwrap();
        assert_eq!(planned[0].account, connected);
        assert_eq!(
            planned[1].account, platform,
            "accounts are read as the platform"
        );
        assert_eq!(planned[2].resource.object, "subscription_schedule");
        let person = plan(&ids(&["person_1"]), None, &connected).unwrap();
        assert_eq!(person[0].parent.as_deref(), Some("acct_1X"));

        for (raw, account) in [
            (vec!["prod_1", "prod_../x"], &platform),
            (vec!["prod_1", "SUMMER"], &platform),
            (vec!["cbtxn_1"], &platform),
            (vec!["person_1"], &platform),
            (vec![], &platform),
        ] {
            assert!(plan(&ids(&raw), None, account).is_err(), "{raw:?}");
        }
        let too_many: Vec<String> = (0..=MAX_IDS).map(|n| format!("prod_{n}")).collect();
        assert_eq!(plan(&too_many, None, &platform), Err(Refused::Count));
        assert!(matches!(
            plan(
                &ids(&["cbtxn_1"]),
                Some("customer_balance_transaction"),
                &platform
            ),
            Err(Refused::NotById { .. })
        ));
        assert!(plan(&ids(&["SUMMER"]), Some("coupon"), &platform).is_ok());
        assert!(
            matches!(
                plan(&ids(&["SUMMER", "prod_1"]), Some("coupon"), &platform),
                Err(Refused::TypeMismatch { .. })
            ),
            "--type never overrides a prefix"
        );
        assert!(matches!(
            plan(&ids(&["card_1"]), None, &connected),
            Err(Refused::Type(IdTypeError::Shared { .. }))
        ));
        assert!(plan(&ids(&["card_1"]), Some("card"), &connected).is_ok());
    }
}
