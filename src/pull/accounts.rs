//! Which accounts the pull commands cover: those named (`platform`,
//! `acct_…`), and with `auto` the platform and every connected account the
//! mirror's `stripe.accounts` holds authorized, read again at each pass of
//! a long-running command so an account authorized mid-run is covered
//! (and backfilled, [`backfill_account`]) without a restart.

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use super::backfill::{self, BackfillOptions};
use super::PullContext;
use crate::config::ConfigError;
use crate::db::PgPool;
use crate::registry;
use crate::stripe::platforms::KeyRing;
use crate::stripe::{AccountId, StripeError};
use crate::sync::cursor::{self, StreamKey};
use crate::sync::service;

/// The word naming every account the mirror knows.
pub const AUTO: &str = "auto";

/// The stream of `sync_cursors` marking an account backfilled in full
/// by [`backfill_account`].
const BACKFILLED: &str = "backfill:auto";

/// One entry of `STRIPE_ACCOUNTS` or `--account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChoice {
    One(AccountId),
    Auto,
}

impl AccountChoice {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == AUTO {
            return Ok(Self::Auto);
        }
        AccountId::parse(raw)
            .map(Self::One)
            .map_err(|e| format!("{e}, nor `{AUTO}`"))
    }
}

/// The accounts a pull command covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    /// Named ones, in the order given.
    pub named: Vec<AccountId>,
    /// Also the platform and every connected account the mirror holds
    /// authorized (not marked deleted).
    pub auto: bool,
}

impl Accounts {
    pub fn of(choices: &[AccountChoice]) -> Self {
        let mut accounts = Self {
            named: Vec::new(),
            auto: false,
        };
        for choice in choices {
            match choice {
                AccountChoice::Auto => accounts.auto = true,
                AccountChoice::One(a) if !accounts.named.contains(a) => {
                    accounts.named.push(a.clone())
                }
                AccountChoice::One(_) => {}
            }
        }
        accounts
    }

    /// `platform,acct_123,…` or `auto` (or both): `STRIPE_ACCOUNTS`.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: "STRIPE_ACCOUNTS",
            reason,
        };
        let choices = raw
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(AccountChoice::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        if choices.is_empty() {
            return Err(invalid("names no account".into()));
        }
        Ok(Self::of(&choices))
    }

    /// The accounts as of now: the named ones, then (with `auto`) each
    /// platform this process holds a key for and the connected accounts
    /// it has authorized, in id order. Every connected account the mirror
    /// knows is noted under its platform first, so each is read with its
    /// platform's key ([`crate::stripe::platforms::KeyRing`]).
    pub async fn resolve(&self, ctx: &PullContext) -> anyhow::Result<Vec<AccountId>> {
        let keys = ctx.stripe.keys();
        let connected = note_known(&ctx.pool, keys).await?;
        let mut accounts = self.named.clone();
        if self.auto {
            let platforms = std::iter::once(AccountId::PLATFORM).chain(keys.others());
            let found = platforms.chain(
                connected
                    .into_iter()
                    .filter(|(_, platform)| keys.is_platform(platform))
                    .map(|(account, _)| account),
            );
            for account in found {
                if !accounts.contains(&account) {
                    accounts.push(account);
                }
            }
        }
        Ok(accounts)
    }
}

/// The connected accounts the mirror holds and has not marked deleted
/// (deauthorized), with the platform each is kept under (`stripe.accounts`
/// rows are kept under their platform), each noted in `keys` so it is read
/// with its platform's key.
pub async fn note_known(
    pool: &PgPool,
    keys: &KeyRing,
) -> anyhow::Result<BTreeSet<(AccountId, AccountId)>> {
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Text)]
        account: AccountId,
    }
    let rows: Vec<Row> = crate::db::blocking(pool, |conn| {
        // The mirror's relations are made from the registry at run time.
        diesel::sql_query("SELECT id, account FROM stripe.accounts WHERE NOT deleted")
            .load(conn)
            .map_err(anyhow::Error::from)
    })
    .await?;
    let connected: BTreeSet<(AccountId, AccountId)> = rows
        .into_iter()
        .filter_map(|Row { id, account }| match AccountId::parse(&id) {
            Ok(a) if !a.is_platform() && a != account => Some((a, account)),
            _ => {
                tracing::warn!(
                    id,
                    "stripe.accounts holds a row that is no connected account's id; skipped"
                );
                None
            }
        })
        .collect();
    for (account, platform) in &connected {
        if keys.note_connected(account, platform).is_err() {
            tracing::warn!(%account, %platform, "a connected account of a platform with no key here (STRIPE_PLATFORMS); left out");
        }
    }
    Ok(connected)
}

/// What [`backfill_account`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountBackfill {
    /// Done before (by this command, in this or an earlier run).
    AlreadyDone,
    /// Every listable type listed; `objects` published.
    Done { objects: u64 },
    /// Stopped by shutdown; the next run resumes per type.
    Interrupted,
}

/// Backfills every listable type of a connected account found by `auto`,
/// once: a mark in `sync_cursors` says it is done. A run cut short or
/// failed is taken up again: types finished are left, the others resume
/// from their own checkpoints. A type Stripe refuses to list on the
/// account for good (a 4xx) is left out with a warning.
pub async fn backfill_account(
    ctx: &PullContext,
    account: &AccountId,
    shutdown: &CancellationToken,
) -> anyhow::Result<AccountBackfill> {
    let owned = account.clone();
    let mark = ctx
        .db(move |conn| cursor::load(conn, backfilled(&owned)))
        .await?;
    if mark.is_some_and(|m| m.completed_at.is_some()) {
        return Ok(AccountBackfill::AlreadyDone);
    }
    tracing::info!(%account, "backfilling a connected account found in the mirror");
    let runs = registry::resolve(&["all".to_owned()])?
        .into_iter()
        .map(|resource| BackfillOptions {
            account: account.clone(),
            skip_complete: true,
            ..BackfillOptions::new(resource)
        })
        .collect::<Vec<_>>();
    let resources: Vec<_> = runs.iter().map(|r| r.resource).collect();
    let reports =
        backfill::run_all(ctx, runs, backfill::DEFAULT_CONCURRENCY as usize, shutdown).await;
    let mut objects = 0;
    for (resource, report) in resources.into_iter().zip(reports) {
        match report {
            Ok(report) if report.listable && !report.complete => {
                return Ok(AccountBackfill::Interrupted)
            }
            Ok(report) => objects += report.objects,
            // Stripe refuses the list for good on this account (a product
            // it has not enabled, a type a Standard account keeps to
            // itself): nothing to backfill there, and retrying cannot
            // change that.
            Err(e) if refused_for_good(&e) => tracing::warn!(
                %account,
                objects = resource.relation,
                error = format!("{e:#}"),
                "Stripe refuses this list on the account; left out of its backfill"
            ),
            Err(e) => return Err(e),
        }
    }
    let owned = account.clone();
    ctx.db(move |conn| cursor::save(conn, backfilled(&owned), None, "", true))
        .await?;
    tracing::info!(%account, objects, "connected account backfilled");
    Ok(AccountBackfill::Done { objects })
}

/// A 4xx refusal (not a 429) of the type on the account; not the platform
/// losing access to the account itself (deauthorized), which is no fact
/// about the type.
fn refused_for_good(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<StripeError>() {
            Some(StripeError::Api {
                status: 400..=499,
                message,
                ..
            }) => !message.contains(crate::stripe::client::NO_ACCESS_TO_ACCOUNT),
            _ => false,
        })
}

/// Forgets that an account was backfilled (its mark and every type's
/// checkpoint): it was deauthorized, so if it is authorized again
/// everything is listed again, what changed meanwhile with it.
pub async fn forget_backfill(ctx: &PullContext, account: &AccountId) -> anyhow::Result<()> {
    let owned = account.clone();
    ctx.db(move |conn| {
        cursor::delete_prefixed(conn, service::STRIPE, owned.as_str(), "backfill:").map(drop)
    })
    .await
}

fn backfilled(account: &AccountId) -> StreamKey<'_> {
    StreamKey {
        service: service::STRIPE,
        account: account.as_str(),
        stream: BACKFILLED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_parse_from_a_comma_separated_list() {
        let connected = AccountId::parse("acct_1Abc").unwrap();
        assert_eq!(
            Accounts::parse("platform, acct_1Abc,").unwrap(),
            Accounts {
                named: vec![AccountId::PLATFORM, connected.clone()],
                auto: false
            }
        );
        assert_eq!(
            Accounts::parse("auto,acct_1Abc,acct_1Abc").unwrap(),
            Accounts {
                named: vec![connected],
                auto: true
            }
        );
        for bad in [
            "",
            " , ",
            "acct_",
            "acct_1/../x",
            "cus_123",
            "platform,acct_a-b",
            "Auto",
        ] {
            assert!(Accounts::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
