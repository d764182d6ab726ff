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
use crate::stripe::{ListPage, StripeError};

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
    /// fakes do not (localstripe's customers and charges). Known from the
    /// first page ([`list_slice`]); until then nothing is split.
    splits: std::sync::OnceLock<bool>,
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
    /// How many workers take work.
    workers: usize,
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
    let workers = workers.max(1);
    let queue = Queue {
        work: Mutex::new(VecDeque::new()),
        workers,
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
    futures::future::join_all((0..workers).map(|_| worker())).await;
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
        splits: std::sync::OnceLock::new(),
        opts,
    })
}

/// Reads one slice page by page to its end (or to shutdown, or to its
/// type's failure), checkpointing after each page, and hands the older
/// part of it to an idle worker when there is one.
///
/// A page is published while the next one is read: the slice's cursor is
/// known once a page arrives, so the wait on Stripe and the wait on Kafka
/// overlap instead of adding up. The slice's cursor in the shared state
/// (what the checkpoint saves) moves past a page only once it is
/// published; a next page read ahead of a stop or a failure is dropped,
/// and read again on resume. Its bounds move earlier: a split is decided
/// as soon as a page arrives ([`split_off`]), not after the page before
/// it is published, since a slow publish (a producer's first, a busy
/// broker) must not hold back the other workers' share.
async fn read_slice(
    ctx: &PullContext,
    job: &Job,
    n: usize,
    id: u64,
    queue: &Queue,
    shutdown: &CancellationToken,
) {
    let opts = &job.opts;
    // Only a pool of several workers ever splits, so only it asks.
    let ask = queue.workers > 1;
    let mut read_ahead: Option<ListPage> = None;
    loop {
        if shutdown.is_cancelled() || job.has_failed() {
            return;
        }
        let page = match read_ahead.take() {
            Some(page) => page,
            None => {
                let Some(slice) = job.slices.lock().unwrap().pending.get(&id).cloned() else {
                    return;
                };
                match list_slice(ctx, job, &slice, ask).await {
                    Ok(page) => {
                        split_off(ctx, job, n, id, queue, &page).await;
                        page
                    }
                    Err(e) => return job.fail(e),
                }
            }
        };
        // Taken after the split (if any): the slice as it stands.
        let Some(slice) = job.slices.lock().unwrap().pending.get(&id).cloned() else {
            return;
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
        let publish = publish_page(ctx, opts, &page.data, unix_now());
        // The next page: from past this one, within the slice as it stands.
        let next_params = (!finished).then(|| Slice {
            after: last_id.clone(),
            ..slice
        });
        let next = async {
            match &next_params {
                Some(rest) => Some(list_slice(ctx, job, rest, ask).await),
                None => None,
            }
        };
        tokio::pin!(publish, next);
        // Both at once, but the page's checkpoint waits only for the
        // publish, never for the read-ahead.
        let mut read = None;
        let published = loop {
            tokio::select! {
                published = &mut publish => break published,
                page = &mut next, if read.is_none() => {
                    if let Some(Ok(page)) = &page {
                        split_off(ctx, job, n, id, queue, page).await;
                    }
                    read = Some(page);
                }
            }
        };
        let published = match published {
            Ok(n) => n,
            Err(e) => return job.fail(e),
        };
        job.objects.fetch_add(published, Ordering::Relaxed);
        job.pages.fetch_add(1, Ordering::Relaxed);
        {
            let mut slices = job.slices.lock().unwrap();
            if finished {
                if let Some((gte, lt)) = empty {
                    slices.learn_empty(gte, lt);
                }
                slices.pending.remove(&id);
            } else if let Some(current) = slices.pending.get_mut(&id) {
                // Only the cursor: the bounds are the split's, which may
                // have narrowed them since.
                current.after = last_id;
            }
        }
        if let Err(e) = save(ctx, job).await {
            return job.fail(e);
        }
        let read = match read {
            Some(read) => read,
            None => tokio::select! {
                read = &mut next => {
                    if let Some(Ok(page)) = &read {
                        split_off(ctx, job, n, id, queue, page).await;
                    }
                    read
                }
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

/// On a page of slice `id` just read: when a worker is idle and the
/// request budget is not used up, narrows the slice to what lies above a
/// point below the page ([`Slice::split`]) and hands what lies below to the
/// queue at once. A split costs a partial page more, so only then. The
/// page's objects all lie above the point, and the slice's cursor moves
/// past the page only once it is published, so a checkpoint taken
/// meanwhile reads the page again on resume and leaves nothing out.
async fn split_off(
    ctx: &PullContext,
    job: &Job,
    n: usize,
    id: u64,
    queue: &Queue,
    page: &ListPage,
) {
    let more = page.has_more && !page.data.is_empty();
    let may_split = more
        && job.opts.resource.listed_by_created()
        && job.splits.get() == Some(&true)
        && queue.starving()
        && !ctx.stripe.saturated().await;
    let Some(created) = last_created(&page.data).filter(|_| may_split) else {
        return;
    };
    let older = {
        let mut slices = job.slices.lock().unwrap();
        let floor = slices.floor;
        let Some(older) = slices
            .pending
            .get_mut(&id)
            .and_then(|current| current.split(created, floor))
        else {
            return;
        };
        slices.add(older)
    };
    queue.push(Work::Slice { job: n, id: older });
}

/// The next page of `slice`. Until the type's list is known to take
/// `created` bounds, a slice with none of its own asks with
/// `created[gte]=0`, which leaves nothing out: the page that answers is
/// the answer, at no call of its own when the list takes the bound.
/// Stripe takes it on every list that is split; a fake may refuse it
/// (localstripe answers 400, or 500 on lists with no room for a parameter
/// they do not name). On any failure other than the
/// rate limit or the network, the page is asked again without the bound,
/// with the usual retries; if that passes, the answer is "no" and the type
/// is read in one slice. A wrong "no" costs only this run's splitting of
/// the type.
async fn list_slice(
    ctx: &PullContext,
    job: &Job,
    slice: &Slice,
    ask: bool,
) -> anyhow::Result<ListPage> {
    let opts = &job.opts;
    let (account, path) = (&opts.account, opts.resource.path);
    let by_created = opts.resource.listed_by_created();
    let extra = opts.resource.listing.whole().unwrap_or_default();
    let mut params = slice.params(opts.page_size.min(MAX_PAGE_SIZE), by_created);
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let bounded = by_created && (slice.gte.is_some() || slice.lt.is_some());
    let mut refusal = None;
    if by_created && !bounded && ask && job.splits.get().is_none() {
        let mut asking = params.clone();
        asking.push(("created[gte]".into(), "0".into()));
        match ctx.list_page_retrying(account, path, &asking, passes).await {
            Ok(page) => {
                let _ = job.splits.set(true);
                return Ok(page);
            }
            Err(e) => refusal = Some(e),
        }
    }
    let page = ctx.list_page(account, path, &params).await?;
    if bounded {
        let _ = job.splits.set(true);
    }
    // Only a page that passes without the bound makes its refusal an
    // answer; a page that fails either way (a product the account has not
    // enabled) leaves the question open.
    if let Some(e) = refusal {
        tracing::warn!(
            objects = opts.resource.relation,
            error = format!("{e:#}"),
            "the list did not take a created bound; read in one slice"
        );
        let _ = job.splits.set(false);
    }
    Ok(page)
}

/// Errors the asking page waits out, its answer not being about the
/// bound: the rate limit and the network, and a server error twice (a
/// fake that cannot parse the bound answers 500 every time; Stripe's own
/// 5xx seldom twice in a row).
fn passes(e: &StripeError, attempts: u32) -> bool {
    match e {
        StripeError::RateLimited { .. } | StripeError::Network(_) => true,
        StripeError::Server { .. } => attempts < 2,
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asking_page_waits_out_the_rate_limit_the_network_and_a_passing_5xx() {
        assert!(passes(&StripeError::RateLimited { retry_after: None }, 7));
        assert!(passes(&StripeError::Network("reset".into()), 7));
        let server = StripeError::Server { status: 503 };
        assert!(passes(&server, 0) && passes(&server, 1));
        assert!(
            !passes(&server, 2),
            "a 5xx every time: asked without the bound"
        );
        // A refusal of the request: asked without the bound at once.
        assert!(!passes(
            &StripeError::Api {
                status: 400,
                code: Some("parameter_unknown".into()),
                message: "Received unknown parameter: created[gte]".into(),
                decline_code: None,
                payment_intent: None,
            },
            0
        ));
    }
}
