//! `stripe-sync reconcile`: recovers webhooks missed during an outage by
//! polling the Events API from a persisted cursor and publishing every
//! event the ledger has not seen, in the webhook envelope.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use diesel::prelude::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{accounts, Accounts, PullContext};
use crate::db::schema::event_ledger;
use crate::ingest::unix_now;
use crate::kafka::envelope::SOURCE_RECONCILE;
use crate::stripe::AccountId;
use crate::sync::cursor::{self, StreamKey};
use crate::sync::service;

const STREAM: &str = "events";
/// Stripe keeps events for 30 days; warn well before the cursor falls off.
pub const STALE_CURSOR_WARNING_DAYS: i64 = 25;
/// Without a cursor, look back as far as Stripe retries webhooks.
pub const DEFAULT_LOOKBACK_SECS: i64 = 3 * 24 * 3600;
/// Events can become visible in the list a little after their `created`;
/// each poll re-reads this much before the newest event seen (the ledger
/// makes the overlap free of side effects).
pub const OVERLAP_SECS: i64 = 60;

#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    pub account: AccountId,
    /// Start here (unix seconds) instead of the saved cursor.
    pub since: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub from: i64,
    pub seen: u64,
    pub published: u64,
    pub pages: u64,
    pub cursor: i64,
}

pub async fn run_once(
    ctx: &PullContext,
    opts: &ReconcileOptions,
) -> anyhow::Result<ReconcileReport> {
    let account = opts.account.clone();
    let saved = ctx
        .db({
            let account = account.clone();
            move |conn| cursor::load(conn, key(&account))
        })
        .await?
        .and_then(|c| c.position)
        .and_then(|p| p.parse::<i64>().ok());
    let now = unix_now();
    let from = opts.since.or(saved).unwrap_or(now - DEFAULT_LOOKBACK_SECS);
    if now - from > STALE_CURSOR_WARNING_DAYS * 24 * 3600 {
        tracing::warn!(
            cursor_age_days = (now - from) / 86_400,
            "the reconcile cursor is older than {STALE_CURSOR_WARNING_DAYS} days; Stripe keeps events for 30, \
             so run a backfill if it falls further behind"
        );
    }

    let (mut events, pages) = ctx
        .list_all(
            &account,
            "events",
            &[("created[gte]".to_owned(), from.to_string())],
        )
        .await?;
    let mut report = ReconcileReport {
        from,
        pages,
        ..ReconcileReport::default()
    };
    report.seen = events.len() as u64;
    // Oldest first, whatever order the API used, so each object's events
    // enter Kafka in the order they happened.
    events.sort_by_key(|e| {
        (
            e.get("created").and_then(Value::as_i64).unwrap_or(0),
            e.get("id").and_then(Value::as_str).map(str::to_owned),
        )
    });

    let ids: Vec<String> = events
        .iter()
        .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let known: std::collections::HashSet<String> = ctx
        .db({
            let account = account.clone();
            move |conn| {
                event_ledger::table
                    .filter(event_ledger::service.eq(service::STRIPE))
                    .filter(event_ledger::account.eq(account))
                    .filter(event_ledger::event_id.eq_any(ids))
                    .select(event_ledger::event_id)
                    .load::<String>(conn)
            }
        })
        .await?
        .into_iter()
        .collect();
    for event in &events {
        let id = event.get("id").and_then(Value::as_str).unwrap_or_default();
        if known.contains(id) {
            continue;
        }
        // Objects such as balances have no id; events stay events.
        ctx.publish(event, SOURCE_RECONCILE, &account).await?;
        report.published += 1;
    }

    let newest = events
        .iter()
        .filter_map(|e| e.get("created").and_then(Value::as_i64))
        .max();
    report.cursor = newest.map_or(from, |n| (n - OVERLAP_SECS).max(from));
    let position = report.cursor.to_string();
    ctx.db(move |conn| cursor::save(conn, key(&account), Some(&position), "", false))
        .await?;
    tracing::info!(
        seen = report.seen,
        published = report.published,
        cursor = report.cursor,
        "reconcile pass done"
    );
    Ok(report)
}

/// Runs a pass over every account every `every` until shutdown; a failed
/// pass is logged and retried at the next tick. The accounts are resolved
/// again at each tick: with `auto`, a connected account authorized since
/// is reconciled from then on and backfilled in full once, beside the
/// passes ([`accounts::backfill_account`]); a deauthorized one is left.
pub async fn run_every(
    ctx: &PullContext,
    accounts: &Accounts,
    since: Option<i64>,
    every: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut since = since;
    let mut backfills = FuturesUnordered::new();
    // Connected accounts found (and backfilled, or being) by this run.
    let mut found: HashSet<AccountId> = HashSet::new();
    loop {
        let resolved = match accounts.resolve(ctx).await {
            Ok(resolved) => resolved,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "could not read the accounts");
                Vec::new()
            }
        };
        if accounts.auto {
            let connected: HashSet<AccountId> = resolved
                .iter()
                .filter(|a| !ctx.stripe.keys().is_platform(a))
                .cloned()
                .collect();
            // Deauthorized since: forget its backfill, so that an
            // authorization again lists what changed meanwhile.
            for gone in found.difference(&connected).cloned().collect::<Vec<_>>() {
                match accounts::forget_backfill(ctx, &gone).await {
                    Ok(()) => {
                        found.remove(&gone);
                    }
                    Err(e) => {
                        tracing::error!(account = %gone, error = format!("{e:#}"), "could not forget a deauthorized account's backfill")
                    }
                }
            }
            for account in connected {
                if found.insert(account.clone()) {
                    backfills.push(async move {
                        let done = accounts::backfill_account(ctx, &account, shutdown).await;
                        (account, done)
                    });
                }
            }
        }
        let passes = futures::future::join_all(resolved.into_iter().map(|account| async move {
            let opts = ReconcileOptions { account, since };
            if let Err(e) = run_once(ctx, &opts).await {
                tracing::error!(account = %opts.account, error = format!("{e:#}"), "reconcile pass failed");
            }
        }));
        // --since applies to the first pass only; then the cursor leads.
        since = None;
        // The backfills go on while the passes run and while waiting for
        // the next tick.
        let tick = async {
            passes.await;
            tokio::time::sleep(every).await;
        };
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = &mut tick => break,
                Some((account, done)) = backfills.next() => match done {
                    Ok(done) => tracing::info!(%account, ?done, "account backfill"),
                    Err(e) => {
                        tracing::error!(%account, error = format!("{e:#}"), "account backfill failed; trying again at the next tick");
                        found.remove(&account);
                    }
                },
            }
        }
    }
}

fn key(account: &AccountId) -> StreamKey<'_> {
    StreamKey {
        service: service::STRIPE,
        account: account.as_str(),
        stream: STREAM,
    }
}
