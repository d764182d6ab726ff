//! `stripe-sync backfill <objects>`: lists every object through Stripe's
//! list API and publishes each as a snapshot event. Resumable: the cursor
//! is checkpointed in Postgres after every page.

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{snapshot_event, ObjectKind, Progress, PullContext};
use crate::ingest::unix_now;
use crate::kafka::envelope::SOURCE_BACKFILL;
use crate::stripe::PLATFORM_ACCOUNT;
use crate::sync::cursor::{self, StreamKey};
use crate::sync::service;

/// Stripe's largest page.
pub const MAX_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub kind: ObjectKind,
    pub account: String,
    /// Start from the first page even if an unfinished run was checkpointed.
    pub restart: bool,
    /// Only objects created at or after this unix time.
    pub created_since: Option<i64>,
    pub page_size: u32,
}

impl BackfillOptions {
    pub fn new(kind: ObjectKind) -> Self {
        Self {
            kind,
            account: PLATFORM_ACCOUNT.to_owned(),
            restart: false,
            created_since: None,
            page_size: MAX_PAGE_SIZE,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
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
    let stream = format!("backfill:{}", opts.kind.collection());
    // A checkpoint is only valid for the same filter.
    let scope = opts
        .created_since
        .map(|t| format!("created_since={t}"))
        .unwrap_or_default();
    let checkpoint = {
        let (account, stream) = (opts.account.clone(), stream.clone());
        ctx.db(move |conn| cursor::load(conn, stream_key(&account, &stream)))
            .await?
    };
    let mut starting_after = match checkpoint {
        Some(c) if !opts.restart && c.completed_at.is_none() && c.scope == scope => c.position,
        _ => None,
    };
    let mut report = BackfillReport {
        resumed: starting_after.is_some(),
        ..BackfillReport::default()
    };
    tracing::info!(
        objects = opts.kind.collection(),
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
        if let Some(after) = &starting_after {
            params.push(("starting_after".into(), after.clone()));
        }
        if let Some(since) = opts.created_since {
            params.push(("created[gte]".into(), since.to_string()));
        }
        let page = ctx
            .list_page(&opts.account, opts.kind.collection(), &params)
            .await?;
        let read_at = unix_now();
        let wanted = page.data.iter().filter(|o| match opts.created_since {
            // Also filtered here: not every Stripe fake honours created[gte].
            Some(since) => o
                .get("created")
                .and_then(Value::as_i64)
                .is_none_or(|c| c >= since),
            None => true,
        });
        let sends = wanted.map(|object| {
            let event = snapshot_event(opts.kind, &opts.account, object, read_at);
            async move { ctx.publish(&event, SOURCE_BACKFILL).await }
        });
        let published = futures::future::try_join_all(sends).await?.len();
        report.objects += published as u64;
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
        {
            let (account, stream, scope, position) = (
                opts.account.clone(),
                stream.clone(),
                scope.clone(),
                next.clone(),
            );
            ctx.db(move |conn| {
                cursor::save(
                    conn,
                    stream_key(&account, &stream),
                    position.as_deref(),
                    &scope,
                    complete,
                )
            })
            .await?;
        }
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

fn stream_key<'a>(account: &'a str, stream: &'a str) -> StreamKey<'a> {
    StreamKey {
        service: service::STRIPE,
        account,
        stream,
    }
}
