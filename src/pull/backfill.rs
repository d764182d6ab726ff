//! `stripe-sync backfill [TYPE…|all]`: lists every object of a type through
//! Stripe's list API and publishes each as a snapshot event. Resumable per
//! (account, type): the cursor is checkpointed in Postgres after every page
//! (after every customer, for types Stripe lists per customer).

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{snapshot_event, Progress, PullContext};
use crate::ingest::unix_now;
use crate::kafka::envelope::SOURCE_BACKFILL;
use crate::registry::{Listing, Resource};
use crate::stripe::AccountId;
use crate::sync::cursor::{self, StreamKey};
use crate::sync::service;

/// Stripe's largest page.
pub const MAX_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub resource: &'static Resource,
    pub account: AccountId,
    /// Start from the first page even if an unfinished run was checkpointed.
    pub restart: bool,
    /// Only objects created at or after this unix time.
    pub created_since: Option<i64>,
    pub page_size: u32,
}

impl BackfillOptions {
    pub fn new(resource: &'static Resource) -> Self {
        Self {
            resource,
            account: AccountId::PLATFORM,
            restart: false,
            created_since: None,
            page_size: MAX_PAGE_SIZE,
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

pub async fn run(
    ctx: &PullContext,
    opts: &BackfillOptions,
    shutdown: &CancellationToken,
) -> anyhow::Result<BackfillReport> {
    let extra: &[(&str, &str)] = match opts.resource.listing {
        Listing::PerCustomer | Listing::Nested(..) => return per_parent(ctx, opts, shutdown).await,
        Listing::None => return Ok(BackfillReport::default()),
        whole => whole.whole().unwrap_or_default(),
    };
    let checkpoint = Checkpoint::of(opts);
    let mut starting_after = checkpoint.resume_point(ctx, opts.restart).await?;
    let mut report = BackfillReport {
        listable: true,
        resumed: starting_after.is_some(),
        ..BackfillReport::default()
    };
    tracing::info!(
        objects = opts.resource.relation,
        account = %opts.account,
        resume_after = starting_after.as_deref().unwrap_or("-"),
        "backfill starting"
    );
    let mut progress = Progress::new("backfill");

    loop {
        if shutdown.is_cancelled() {
            tracing::info!("backfill interrupted; run it again to continue from the last page");
            break;
        }
        let mut params = vec![(
            "limit".to_owned(),
            opts.page_size.min(MAX_PAGE_SIZE).to_string(),
        )];
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        if let Some(after) = &starting_after {
            params.push(("starting_after".into(), after.clone()));
        }
        if let Some(since) = opts.created_since {
            params.push(("created[gte]".into(), since.to_string()));
        }
        let page = ctx
            .list_page(&opts.account, opts.resource.path, &params)
            .await?;
        let read_at = unix_now();
        report.objects += publish_page(ctx, opts, &page.data, read_at).await?;
        report.pages += 1;

        // Stripe pages continue after the last object of this page, in
        // whatever order the API returned them.
        let next = page
            .data
            .last()
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let complete = !page.has_more || next.is_none();
        checkpoint.save(ctx, next.clone(), complete).await?;
        progress.update(report.objects, report.pages);
        if complete {
            report.complete = true;
            break;
        }
        starting_after = next;
    }
    progress.finish();
    tracing::info!(
        objects = report.objects,
        pages = report.pages,
        complete = report.complete,
        "backfill finished"
    );
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
        async move { ctx.publish(&event, SOURCE_BACKFILL).await }
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
    let mut progress = Progress::new("backfill");
    let total = parents.len();
    for (done, parent) in parents.into_iter().enumerate() {
        if shutdown.is_cancelled() {
            tracing::info!("backfill interrupted; run it again to continue from the last parent");
            progress.finish();
            return Ok(report);
        }
        let (path, filter) = super::list_under(opts.resource, &parent)?;
        let (objects, calls) = ctx.list_all(&opts.account, &path, &filter).await?;
        report.objects += publish_page(ctx, opts, &objects, unix_now()).await?;
        report.pages += calls;
        let complete = done + 1 == total;
        checkpoint.save(ctx, Some(parent), complete).await?;
        progress.update(report.objects, report.pages);
    }
    progress.finish();
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
