//! `stripe-sync refresh`: keeps the types Stripe sends no events for
//! (webhook endpoints, tax codes, balance transactions, …) current by
//! pulling them, once or on a schedule, through the pull paths every other
//! type uses: what it finds is published as snapshots and applied like
//! webhooks, so the ledger, ordering and tombstones hold for it too.
//!
//! A type listed whole is diffed against the mirror and repaired (new and
//! changed objects published, objects gone from Stripe read and
//! tombstoned). A type listed by `created` ([`Listing::ByCreated`]) is too
//! large for that on a schedule: each pass lists the objects created since
//! its cursor, and since the oldest row the mirror still holds unsettled,
//! so a pending balance transaction is read again until it is available.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use tokio_util::sync::CancellationToken;

use super::backfill::{self, BackfillOptions};
use super::{diff, Accounts, PullContext};
use crate::ingest::unix_now;
use crate::registry::{Listing, Parent, Resource};
use crate::stripe::AccountId;
use crate::sync::cursor::{self, StreamKey};
use crate::sync::service;

/// Objects can appear in a list a little after their `created`, and our
/// clock is not Stripe's: each pass starts this far before the last one
/// began (a snapshot seen twice has the same id, so the ledger skips it).
pub const OVERLAP_SECS: i64 = 300;

/// What one pass over one type did, for the command's output.
#[derive(Debug)]
pub enum RefreshReport {
    Diffed(diff::DiffReport),
    Listed {
        since: Option<i64>,
        report: backfill::BackfillReport,
    },
    /// Stripe has no list of the type.
    NotListable,
}

impl std::fmt::Display for RefreshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Diffed(report) => write!(f, "{report}"),
            Self::Listed {
                since: Some(since),
                report,
            } => write!(f, "created since {since}: {report}"),
            Self::Listed {
                since: None,
                report,
            } => write!(f, "first pass, whole list: {report}"),
            Self::NotListable => f.write_str("not listable: webhooks and reconcile bring these"),
        }
    }
}

/// The types a refresh covers by default: those Stripe sends no events
/// for, except the ones listed per customer (a call per customer each
/// pass: customer balance transactions; active entitlements, which their
/// summaries' events keep current in `customer_active_entitlements`),
/// which can be named.
pub fn default_types() -> Vec<&'static Resource> {
    crate::registry::RESOURCES
        .iter()
        .filter(|r| !r.events && r.listed_per() != Some(Parent::CUSTOMER))
        .collect()
}

/// One pass over one type on one account.
pub async fn run_once(
    ctx: &PullContext,
    resource: &'static Resource,
    account: &AccountId,
    shutdown: &CancellationToken,
) -> anyhow::Result<RefreshReport> {
    match resource.listing {
        Listing::None => Ok(RefreshReport::NotListable),
        Listing::ByCreated { unsettled } => {
            by_created(ctx, resource, account, unsettled, shutdown).await
        }
        Listing::All(_) | Listing::PerCustomer | Listing::Nested(..) => Ok(RefreshReport::Diffed(
            diff::run(ctx, resource, account, true).await?,
        )),
    }
}

/// Passes over every type and account every `every` until shutdown. A
/// failed pass is logged and tried again at the next tick; the others go
/// on. The accounts are resolved again at each tick (`auto` follows the
/// connected accounts authorized and deauthorized since).
pub async fn run_every(
    ctx: &PullContext,
    resources: &[&'static Resource],
    accounts: &Accounts,
    every: Duration,
    shutdown: &CancellationToken,
) {
    loop {
        let resolved = accounts.resolve(ctx).await.unwrap_or_else(|e| {
            tracing::error!(error = format!("{e:#}"), "could not read the accounts");
            Vec::new()
        });
        for account in &resolved {
            for &resource in resources {
                if shutdown.is_cancelled() {
                    return;
                }
                match run_once(ctx, resource, account, shutdown).await {
                    Ok(report) => tracing::info!(
                        %account,
                        objects = resource.relation,
                        report = %report.to_string().replace('\n', " "),
                        "refresh pass done"
                    ),
                    Err(e) => tracing::error!(
                        %account,
                        objects = resource.relation,
                        error = format!("{e:#}"),
                        "refresh pass failed; trying again at the next tick"
                    ),
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn by_created(
    ctx: &PullContext,
    resource: &'static Resource,
    account: &AccountId,
    unsettled: Option<(&'static str, &'static str)>,
    shutdown: &CancellationToken,
) -> anyhow::Result<RefreshReport> {
    let stream = format!("refresh:{}", resource.relation);
    let saved: Option<i64> = {
        let (account, stream) = (account.clone(), stream.clone());
        ctx.db(move |conn| cursor::load(conn, key(&account, &stream)))
            .await?
            .and_then(|c| c.position)
            .and_then(|p| p.parse().ok())
    };
    let floor = match unsettled {
        Some((column, value)) => oldest_unsettled(ctx, resource, account, column, value).await?,
        None => None,
    };
    // No cursor yet: the first pass lists the whole type (a backfill).
    let since = saved.map(|s| floor.map_or(s, |f| s.min(f)));
    let started = unix_now();
    // Always from the newest page: a pass resumed from an interrupted
    // one's checkpoint would skip what was created since that one began.
    let opts = BackfillOptions {
        account: account.clone(),
        created_since: since,
        restart: true,
        ..BackfillOptions::new(resource)
    };
    let report = backfill::run(ctx, &opts, shutdown).await?;
    if report.complete {
        let position = (started - OVERLAP_SECS).to_string();
        let account = account.clone();
        ctx.db(move |conn| cursor::save(conn, key(&account, &stream), Some(&position), "", false))
            .await?;
    }
    Ok(RefreshReport::Listed { since, report })
}

/// `created` (unix seconds) of the oldest live row whose `column` is
/// still `value`: the pass must reach back to it.
async fn oldest_unsettled(
    ctx: &PullContext,
    resource: &'static Resource,
    account: &AccountId,
    column: &'static str,
    value: &'static str,
) -> anyhow::Result<Option<i64>> {
    #[derive(QueryableByName)]
    struct Oldest {
        #[diesel(sql_type = Nullable<BigInt>)]
        created: Option<i64>,
    }
    let (table, account) = (resource.table(), account.clone());
    let oldest: Oldest = ctx
        .db(move |conn| {
            // The mirror's relations are made from the registry at run
            // time: a dynamic statement over names the registry holds.
            diesel::sql_query(format!(
                "SELECT extract(epoch FROM min(\"created\"))::bigint AS created FROM {table} \
                 WHERE account = $1 AND NOT deleted AND \"{column}\" = $2"
            ))
            .bind::<Text, _>(account)
            .bind::<Text, _>(value)
            .get_result(conn)
        })
        .await?;
    Ok(oldest.created)
}

fn key<'a>(account: &'a AccountId, stream: &'a str) -> StreamKey<'a> {
    StreamKey {
        service: service::STRIPE,
        account: account.as_str(),
        stream,
    }
}
