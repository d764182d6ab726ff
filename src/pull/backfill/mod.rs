//! `stripe-sync backfill [TYPE…|all]`: lists every object of a type through
//! Stripe's list API and publishes each as a snapshot event. Types are read
//! at once, and a large type Stripe filters by `created` in slices read at
//! once (`pool`), all under the client's one rate limit. Resumable per
//! (account, type): the pending slices, each with its cursor, are
//! checkpointed in Postgres after every page (the last parent done, for
//! types Stripe lists per parent).

mod pool;
mod slices;

pub use pool::run_all;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{snapshot_event, PullContext};
use crate::ingest::unix_now;
use crate::kafka::envelope::SOURCE_BACKFILL;
use crate::registry::Resource;
use crate::stripe::AccountId;
use crate::sync::cursor::{self, StreamKey};
use crate::sync::service;

/// Stripe's largest page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// List calls a backfill keeps in flight by default: enough to use a
/// live account's 100 requests a second at Stripe's usual page latency;
/// the client's rate limiter keeps them within `STRIPE_RATE_LIMIT`.
pub const DEFAULT_CONCURRENCY: u32 = 16;

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub resource: &'static Resource,
    pub account: AccountId,
    /// Start from the first page even if an unfinished run was checkpointed.
    pub restart: bool,
    /// Only objects created at or after this unix time.
    pub created_since: Option<i64>,
    pub page_size: u32,
    /// Leave a type whose last run of the same filter finished (an
    /// account's backfill resumed after a failure lists only what is
    /// left).
    pub skip_complete: bool,
}

impl BackfillOptions {
    pub fn new(resource: &'static Resource) -> Self {
        Self {
            resource,
            account: AccountId::PLATFORM,
            restart: false,
            created_since: None,
            page_size: MAX_PAGE_SIZE,
            skip_complete: false,
        }
    }
}

impl std::fmt::Display for BackfillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.listable {
            return write!(f, "not listable: webhooks and reconcile bring these");
        }
        write!(
            f,
            "{} {} objects ({} API calls){}",
            if self.complete {
                "backfilled"
            } else {
                "interrupted after"
            },
            self.objects,
            self.pages,
            if self.resumed {
                ", resumed from the last checkpoint"
            } else {
                ""
            }
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// False for a type Stripe has no list endpoint for.
    pub listable: bool,
    pub objects: u64,
    pub pages: u64,
    pub resumed: bool,
    pub complete: bool,
}

/// Backfills one type (see [`run_all`]).
pub async fn run(
    ctx: &PullContext,
    opts: &BackfillOptions,
    shutdown: &CancellationToken,
) -> anyhow::Result<BackfillReport> {
    tracing::info!(
        objects = opts.resource.relation,
        account = %opts.account,
        "backfill starting"
    );
    let report = run_all(ctx, vec![opts.clone()], 1, shutdown)
        .await
        .pop()
        .expect("one report per type")?;
    if !report.complete {
        tracing::info!("backfill interrupted; run it again to continue from the last page");
    }
    Ok(report)
}

/// Publishes a page's objects (those created since `--created-since`) as
/// snapshots; returns how many.
async fn publish_page(
    ctx: &PullContext,
    opts: &BackfillOptions,
    objects: &[Value],
    read_at: i64,
) -> anyhow::Result<u64> {
    let wanted = objects.iter().filter(|o| match opts.created_since {
        // Also filtered here: not every Stripe fake honours created[gte].
        Some(since) => o
            .get("created")
            .and_then(Value::as_i64)
            .is_none_or(|c| c >= since),
        None => true,
    });
    let sends = wanted.map(|object| {
        let event = snapshot_event(opts.resource, &opts.account, object, read_at);
        async move { ctx.publish(&event, SOURCE_BACKFILL, &opts.account).await }
    });
    Ok(futures::future::try_join_all(sends).await?.len() as u64)
}

/// Types Stripe lists per parent only (payment methods and active
/// entitlements per customer, a customer's balance transactions under it,
/// a connected account's persons under it): every parent
/// ([`super::parents`]), in id order, each listed in full; the checkpoint
/// is the last parent done.
async fn per_parent(
    ctx: &PullContext,
    opts: &BackfillOptions,
    shutdown: &CancellationToken,
) -> anyhow::Result<BackfillReport> {
    let checkpoint = Checkpoint::of(opts);
    let after = checkpoint.resume_point(ctx, opts.restart).await?;
    let mut report = BackfillReport {
        listable: true,
        resumed: after.is_some(),
        ..BackfillReport::default()
    };
    let mut parents = super::parents(ctx, opts.resource, &opts.account).await?;
    if let Some(after) = &after {
        parents.retain(|c| c > after);
    }
    let total = parents.len();
    for (done, parent) in parents.into_iter().enumerate() {
        if shutdown.is_cancelled() {
            tracing::info!("backfill interrupted; run it again to continue from the last parent");
            return Ok(report);
        }
        let (path, filter) = super::list_under(opts.resource, &parent)?;
        let (objects, calls) = ctx.list_all(&opts.account, &path, &filter).await?;
        report.objects += publish_page(ctx, opts, &objects, unix_now()).await?;
        report.pages += calls;
        let complete = done + 1 == total;
        checkpoint.save(ctx, Some(parent), complete).await?;
    }
    report.complete = true;
    Ok(report)
}

/// Where a backfill of one (account, type) resumes: a row of
/// `sync_cursors` (stream `backfill:<relation>`), valid only for the same
/// `--created-since` filter.
#[derive(Clone)]
struct Checkpoint {
    account: String,
    stream: String,
    scope: String,
}

impl Checkpoint {
    fn of(opts: &BackfillOptions) -> Self {
        Self {
            account: opts.account.to_string(),
            stream: format!("backfill:{}", opts.resource.relation),
            scope: opts
                .created_since
                .map(|t| format!("created_since={t}"))
                .unwrap_or_default(),
        }
    }

    fn key(&self) -> StreamKey<'_> {
        StreamKey {
            service: service::STRIPE,
            account: &self.account,
            stream: &self.stream,
        }
    }

    /// The position an unfinished run of the same filter stopped at, unless
    /// `restart`.
    async fn resume_point(
        &self,
        ctx: &PullContext,
        restart: bool,
    ) -> anyhow::Result<Option<String>> {
        let this = self.clone();
        let saved = ctx.db(move |conn| cursor::load(conn, this.key())).await?;
        Ok(match saved {
            Some(c) if !restart && c.completed_at.is_none() && c.scope == self.scope => c.position,
            _ => None,
        })
    }

    /// Whether the last run of the same filter finished.
    async fn finished(&self, ctx: &PullContext) -> anyhow::Result<bool> {
        let this = self.clone();
        let saved = ctx.db(move |conn| cursor::load(conn, this.key())).await?;
        Ok(saved.is_some_and(|c| c.completed_at.is_some() && c.scope == self.scope))
    }

    async fn save(
        &self,
        ctx: &PullContext,
        position: Option<String>,
        complete: bool,
    ) -> anyhow::Result<()> {
        let this = self.clone();
        ctx.db(move |conn| {
            cursor::save(conn, this.key(), position.as_deref(), &this.scope, complete)
        })
        .await
    }
}
