//! Many types backfilled at once: a fixed number of workers take work
//! (a type listed per parent, or one slice of a type listed whole) from
//! one queue, and every call goes through the one Stripe client, whose
//! rate limiter is shared, so the account's whole request budget is used
//! and never exceeded. A worker that reads a page of a type Stripe filters
//! by `created` while another worker is idle and the budget is not used up
//! splits the rest of its slice ([`Slice::split`]), so one large type is
//! read by several workers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::slices::{last_created, Slice, Slices};
use super::{publish_page, BackfillOptions, BackfillReport, Checkpoint, MAX_PAGE_SIZE};
use crate::ingest::unix_now;
use crate::pull::{Progress, PullContext};
use crate::registry::Listing;
use crate::stripe::ListPage;

/// One type's run.
struct Job {
    opts: BackfillOptions,
    checkpoint: Checkpoint,
    /// False for a type Stripe has no list of: nothing to do.
    listable: bool,
    per_parent: bool,
    slices: Mutex<Slices>,
    /// Held while the checkpoint is written, so the saves of one type
    /// reach Postgres in the order their states were taken.
    saving: tokio::sync::Mutex<()>,
    objects: AtomicU64,
    pages: AtomicU64,
    resumed: AtomicBool,
    failed: Mutex<Option<anyhow::Error>>,
    /// Set once the last slice (or parent) is read.
    complete: AtomicBool,
    /// Whether the list answers `created` bounds: Stripe's lists of
    /// [`LISTED_BY_CREATED`](crate::registry::LISTED_BY_CREATED) do, some
    /// fakes do not (localstripe's customers). Asked once, with a one-item
    /// page, before the type's first split.
    splits: tokio::sync::OnceCell<bool>,
}

impl Job {
    fn has_failed(&self) -> bool {
        self.failed.lock().unwrap().is_some()
    }

    fn fail(&self, e: anyhow::Error) {
        self.failed.lock().unwrap().get_or_insert(e);
    }
}

#[derive(Clone, Copy)]
enum Work {
    Slice { job: usize, id: u64 },
    PerParent { job: usize },
}

struct Queue {
    work: Mutex<VecDeque<Work>>,
    /// Workers waiting for work.
    idle: AtomicUsize,
    /// Work taken and not finished yet (it may add work).
    busy: AtomicUsize,
    changed: Notify,
}

impl Queue {
    fn push(&self, work: Work) {
        self.work.lock().unwrap().push_back(work);
        self.changed.notify_waiters();
    }

    /// The next work, or None once the queue is empty and no work under
    /// way can add any.
    async fn next(&self) -> Option<Work> {
        loop {
            // Registered before looking, so a push in between wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut work = self.work.lock().unwrap();
                if let Some(w) = work.pop_front() {
                    self.busy.fetch_add(1, Ordering::AcqRel);
                    return Some(w);
                }
                if self.busy.load(Ordering::Acquire) == 0 {
                    return None;
                }
            }
            self.idle.fetch_add(1, Ordering::AcqRel);
            changed.await;
            self.idle.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn done(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Whether a worker waits with nothing to do.
    fn starving(&self) -> bool {
        self.idle.load(Ordering::Acquire) > 0 && self.work.lock().unwrap().is_empty()
    }
}

/// Backfills every type of `runs` with at most `workers` list calls in
/// flight; one type's failure is its own report's, the others go on.
pub async fn run_all(
    ctx: &PullContext,
    runs: Vec<BackfillOptions>,
    workers: usize,
    shutdown: &CancellationToken,
) -> Vec<anyhow::Result<BackfillReport>> {
    let queue = Queue {
        work: Mutex::new(VecDeque::new()),
        idle: AtomicUsize::new(0),
        busy: AtomicUsize::new(0),
        changed: Notify::new(),
    };
    let mut jobs: Vec<anyhow::Result<Job>> = Vec::with_capacity(runs.len());
    for (n, opts) in runs.into_iter().enumerate() {
        let job = prepare(ctx, opts).await;
        if let Ok(job) = &job {
            if !job.listable || job.complete.load(Ordering::Acquire) {
                // Nothing to read.
            } else if job.per_parent {
                queue.push(Work::PerParent { job: n });
            } else {
                let ids: Vec<u64> = job.slices.lock().unwrap().pending.keys().copied().collect();
                for id in ids {
                    queue.push(Work::Slice { job: n, id });
                }
            }
        }
        jobs.push(job);
    }
    let progress = Mutex::new(Progress::new("backfill"));
    let worker = || async {
        while let Some(work) = queue.next().await {
            match work {
                Work::Slice { job, id } => {
                    if let Ok(j) = &jobs[job] {
                        read_slice(ctx, j, job, id, &queue, shutdown).await;
                    }
                }
                Work::PerParent { job } => {
                    if let Ok(j) = &jobs[job] {
                        match super::per_parent(ctx, &j.opts, shutdown).await {
                            Ok(r) => {
                                j.objects.fetch_add(r.objects, Ordering::Relaxed);
                                j.pages.fetch_add(r.pages, Ordering::Relaxed);
                                j.resumed.store(r.resumed, Ordering::Relaxed);
                                j.complete.store(r.complete, Ordering::Release);
                            }
                            Err(e) => j.fail(e),
                        }
                    }
                }
            }
            let (objects, pages) = jobs.iter().flatten().fold((0, 0), |(o, p), j| {
                (
                    o + j.objects.load(Ordering::Relaxed),
                    p + j.pages.load(Ordering::Relaxed),
                )
            });
            progress.lock().unwrap().update(objects, pages);
            queue.done();
        }
    };
    futures::future::join_all((0..workers.max(1)).map(|_| worker())).await;
    progress.into_inner().unwrap().finish();
    jobs.into_iter()
        .map(|job| {
            let job = job?;
            if let Some(e) = job.failed.into_inner().unwrap() {
                return Err(e);
            }
            Ok(BackfillReport {
                listable: job.listable,
                objects: job.objects.into_inner(),
                pages: job.pages.into_inner(),
                resumed: job.resumed.into_inner(),
                complete: job.complete.into_inner(),
            })
        })
        .collect()
}

/// A type's run with its checkpoint read.
async fn prepare(ctx: &PullContext, opts: BackfillOptions) -> anyhow::Result<Job> {
    let checkpoint = Checkpoint::of(&opts);
    let per_parent = matches!(
        opts.resource.listing,
        Listing::PerCustomer | Listing::Nested(..)
    );
    let listable = opts.resource.listing != Listing::None;
    let done_before = opts.skip_complete && listable && checkpoint.finished(ctx).await?;
    // A type listed per parent keeps its own checkpoint (`per_parent`).
    let saved = if per_parent || !listable {
        None
    } else {
        checkpoint.resume_point(ctx, opts.restart).await?
    };
    let slices = match &saved {
        Some(position) => Slices::from_position(position, opts.created_since),
        None => Slices::whole(opts.created_since),
    };
    Ok(Job {
        resumed: AtomicBool::new(saved.is_some()),
        checkpoint,
        listable,
        per_parent,
        slices: Mutex::new(slices),
        saving: tokio::sync::Mutex::new(()),
        objects: AtomicU64::new(0),
        pages: AtomicU64::new(0),
        failed: Mutex::new(None),
        complete: AtomicBool::new(done_before),
        splits: tokio::sync::OnceCell::new(),
        opts,
    })
}

/// Reads one slice page by page to its end (or to shutdown, or to its
/// type's failure), checkpointing after each page, and hands the older
/// part of it to an idle worker when there is one.
///
/// A page is published while the next one is read: the slice's cursor is
/// known once a page arrives, so the wait on Stripe and the wait on Kafka
/// overlap instead of adding up. The shared state (what the checkpoint
/// saves, and what other workers see) moves past a page only once it is
/// published; a next page read ahead of a stop or a failure is dropped,
/// and read again on resume.
async fn read_slice(
    ctx: &PullContext,
    job: &Job,
    n: usize,
    id: u64,
    queue: &Queue,
    shutdown: &CancellationToken,
) {
    let opts = &job.opts;
    let by_created = opts.resource.listed_by_created();
    let extra = opts.resource.listing.whole().unwrap_or_default();
    let params = |slice: &Slice| {
        let mut params = slice.params(opts.page_size.min(MAX_PAGE_SIZE), by_created);
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        params
    };
    let list = |slice: &Slice| {
        let params = params(slice);
        async move {
            ctx.list_page(&opts.account, opts.resource.path, &params)
                .await
        }
    };
    let mut read_ahead: Option<ListPage> = None;
    loop {
        if shutdown.is_cancelled() || job.has_failed() {
            return;
        }
        let Some(slice) = job.slices.lock().unwrap().pending.get(&id).cloned() else {
            return;
        };
        let page = match read_ahead.take() {
            Some(page) => page,
            None => match list(&slice).await {
                Ok(page) => page,
                Err(e) => return job.fail(e),
            },
        };
        let last_id = page
            .data
            .last()
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let finished = !page.has_more || last_id.is_none();
        // A slice whose first page is empty holds nothing at all.
        let empty =
            (slice.after.is_none() && page.data.is_empty()).then_some((slice.gte, slice.lt));
        // A split costs a partial page more: worth it only while a worker
        // is idle and the request budget is not used up already.
        let may_split = !finished
            && by_created
            && queue.starving()
            && !ctx.stripe.saturated().await
            && splits(ctx, job).await;
        // The slice once this page is published: past the page, and (Stripe
        // lists newest first, so everything older than the page's last
        // object is unread) less the older part split off.
        let mut rest = slice;
        rest.after = last_id;
        let older = match last_created(&page.data) {
            Some(created) if may_split => {
                let floor = job.slices.lock().unwrap().floor;
                rest.split(created, floor)
            }
            _ => None,
        };
        let publish = publish_page(ctx, opts, &page.data, unix_now());
        let next_params = (!finished).then(|| rest.clone());
        let next = async {
            match &next_params {
                Some(rest) => Some(list(rest).await),
                None => None,
            }
        };
        tokio::pin!(publish, next);
        // Both at once, but the page's checkpoint and the older part's
        // hand-over wait only for the publish, never for the read-ahead.
        let mut read = None;
        let published = loop {
            tokio::select! {
                published = &mut publish => break published,
                page = &mut next, if read.is_none() => read = Some(page),
            }
        };
        let published = match published {
            Ok(n) => n,
            Err(e) => return job.fail(e),
        };
        job.objects.fetch_add(published, Ordering::Relaxed);
        job.pages.fetch_add(1, Ordering::Relaxed);
        let older = {
            let mut slices = job.slices.lock().unwrap();
            if finished {
                if let Some((gte, lt)) = empty {
                    slices.learn_empty(gte, lt);
                }
                slices.pending.remove(&id);
                None
            } else {
                slices.pending.insert(id, rest);
                older.map(|older| slices.add(older))
            }
        };
        if let Err(e) = save(ctx, job).await {
            return job.fail(e);
        }
        if let Some(older) = older {
            queue.push(Work::Slice { job: n, id: older });
        }
        let read = match read {
            Some(read) => read,
            None => tokio::select! {
                read = &mut next => read,
                // The page read ahead is dropped: the checkpoint is before it.
                _ = shutdown.cancelled() => return,
            },
        };
        match read {
            None => return,
            Some(Ok(page)) => read_ahead = Some(page),
            Some(Err(e)) => return job.fail(e),
        }
    }
}

/// Whether the type's list answers `created` bounds (asked once).
async fn splits(ctx: &PullContext, job: &Job) -> bool {
    *job.splits
        .get_or_init(|| async {
            let probe = [
                ("limit".to_owned(), "1".to_owned()),
                ("created[lt]".to_owned(), unix_now().to_string()),
            ];
            match ctx
                .list_page(&job.opts.account, job.opts.resource.path, &probe)
                .await
            {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(
                        objects = job.opts.resource.relation,
                        error = format!("{e:#}"),
                        "the list refuses created bounds; read in one slice"
                    );
                    false
                }
            }
        })
        .await
}

/// Writes the type's pending slices (complete when none is left).
async fn save(ctx: &PullContext, job: &Job) -> anyhow::Result<()> {
    let _order = job.saving.lock().await;
    let (position, complete) = {
        let slices = job.slices.lock().unwrap();
        (slices.to_position(), slices.pending.is_empty())
    };
    job.checkpoint
        .save(ctx, (!complete).then_some(position), complete)
        .await?;
    if complete {
        job.complete.store(true, Ordering::Release);
    }
    Ok(())
}
