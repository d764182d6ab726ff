//! The consume loop itself (`kafka::consumer::run`) against the real
//! broker, with a handler that records what it is given and checks, as it
//! is called, the two things the lanes must never break: a partition is
//! never in two lanes at once, and its offsets only go forward (invariant
//! 4). After shutdown the group's committed offsets are compared with what
//! was handled: never past it (invariant 3).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stripe_sync::config::ENVELOPE_ALLOWANCE_BYTES;
use stripe_sync::kafka::consumer::Transient;
use stripe_sync::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome};
use stripe_sync::kafka::EventProducer;
use tokio_util::sync::CancellationToken;

use crate::support::broker::{committed, shared_brokers};
use crate::support::{unique, wait_for};

const PARTITIONS: i32 = 6;
const LANES: usize = 3;
/// Smaller than the default, so the largest message test stays quick.
const FETCH_MAX_BYTES: usize = 256 * 1024;

/// Records every batch; fails transiently while `failing` says so.
#[derive(Default)]
struct Recorder {
    /// Partitions inside a `handle` call right now.
    in_flight: Mutex<BTreeSet<i32>>,
    /// Most `handle` calls seen running at once.
    most_at_once: AtomicUsize,
    running: AtomicUsize,
    /// Offsets handled, per partition, in the order they were handled.
    handled: Mutex<BTreeMap<i32, Vec<i64>>>,
    violations: Mutex<Vec<String>>,
    /// Partitions whose batches fail (transiently) for now.
    failing: Mutex<BTreeSet<i32>>,
    failed_attempts: AtomicUsize,
    /// The largest payload handled, in bytes.
    largest_payload: AtomicUsize,
}

impl Recorder {
    fn handled_count(&self) -> usize {
        self.handled.lock().unwrap().values().map(Vec::len).sum()
    }
}

impl BatchHandler for Recorder {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        let partitions: BTreeSet<i32> = batch.iter().map(|d| d.partition).collect();
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            for p in &partitions {
                if !in_flight.insert(*p) {
                    self.violations
                        .lock()
                        .unwrap()
                        .push(format!("partition {p} applied in two lanes at once"));
                }
            }
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        // Long enough that lanes overlap if they can.
        std::thread::sleep(Duration::from_millis(15));
        let fails = partitions
            .iter()
            .any(|p| self.failing.lock().unwrap().contains(p));
        if !fails {
            let mut handled = self.handled.lock().unwrap();
            for d in batch {
                let offsets = handled.entry(d.partition).or_default();
                if offsets.last().is_some_and(|&last| d.offset <= last) {
                    self.violations.lock().unwrap().push(format!(
                        "partition {} went back from offset {:?} to {}",
                        d.partition,
                        offsets.last(),
                        d.offset
                    ));
                }
                offsets.push(d.offset);
                let len = d.payload.as_ref().map_or(0, Vec::len);
                self.largest_payload.fetch_max(len, Ordering::SeqCst);
            }
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let mut in_flight = self.in_flight.lock().unwrap();
        for p in &partitions {
            in_flight.remove(p);
        }
        if fails {
            self.failed_attempts.fetch_add(1, Ordering::SeqCst);
            return Err(Transient::from(anyhow::anyhow!("told to fail")));
        }
        Ok(vec![Outcome::Done; batch.len()])
    }
}

struct Run {
    brokers: String,
    topic: String,
    group: String,
    recorder: Arc<Recorder>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Produces `n` messages over 30 keys (so over every partition), the i-th
/// with `payload(i)`, then starts the consume loop with `LANES` lanes and
/// small batches.
async fn start(n: usize, recorder: Recorder, payload: impl Fn(usize) -> Vec<u8>) -> Run {
    let brokers = shared_brokers();
    let topic = unique("consume");
    let dead_letter_topic = format!("{topic}.dlq");
    stripe_sync::kafka::admin::ensure_topics(
        &brokers,
        &[&topic, &dead_letter_topic],
        PARTITIONS,
        1,
    )
    .await
    .unwrap();
    let producer = EventProducer::new(&brokers, Duration::from_secs(10)).unwrap();
    for i in 0..n {
        producer
            .send(
                &topic,
                format!("key{}", i % 30).as_bytes(),
                &payload(i),
                &Vec::new(),
            )
            .await
            .unwrap();
    }
    let group = unique("consume-group");
    let settings = ConsumeSettings {
        brokers: brokers.clone(),
        group: group.clone(),
        topic: topic.clone(),
        dead_letter_topic,
        batch_size: 7,
        batch_wait: Duration::from_millis(5),
        lanes: LANES,
        fetch_wait: Duration::from_millis(20),
        fetch_max_bytes: FETCH_MAX_BYTES,
    };
    let recorder = Arc::new(recorder);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        settings,
        recorder.clone(),
        producer,
        shutdown.clone(),
    ));
    Run {
        brokers,
        topic,
        group,
        recorder,
        shutdown,
        task,
    }
}

impl Run {
    async fn stop(self) -> (Arc<Recorder>, BTreeMap<i32, i64>) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the consume loop stops")
            .unwrap()
            .unwrap();
        let committed = committed(&self.brokers, &self.group, &self.topic);
        (self.recorder, committed)
    }
}

#[tokio::test]
async fn lanes_apply_each_partition_in_order_and_commit_only_what_was_applied() {
    let n = 420;
    let run = start(n, Recorder::default(), empty_object).await;
    let recorder = run.recorder.clone();
    wait_handled(&recorder, n).await;
    let (recorder, committed) = run.stop().await;

    assert_eq!(*recorder.violations.lock().unwrap(), Vec::<String>::new());
    assert!(
        recorder.most_at_once.load(Ordering::SeqCst) >= 2,
        "the lanes never ran at once, so this test proved nothing about them"
    );
    assert_eq!(
        recorder.handled.lock().unwrap().len(),
        PARTITIONS as usize,
        "every partition had messages"
    );
    assert_applied_once_in_order_and_committed(&recorder, &committed);
}

#[tokio::test]
async fn a_failing_lane_retries_and_commits_nothing_it_did_not_apply() {
    // Partition 0's batches fail until told otherwise; the lane holding it
    // retries the same batch, never skips it, and goes on once it succeeds.
    let recorder = Recorder::default();
    recorder.failing.lock().unwrap().insert(0);
    let n = 120;
    let run = start(n, recorder, empty_object).await;
    let recorder = run.recorder.clone();
    wait_retried(&recorder).await;
    assert!(
        !recorder.handled.lock().unwrap().contains_key(&0),
        "a failing partition was recorded as handled"
    );
    // Recovery: the same batch is retried and goes through, in order.
    recorder.failing.lock().unwrap().clear();
    wait_handled(&recorder, n).await;
    let (recorder, committed) = run.stop().await;
    assert_eq!(*recorder.violations.lock().unwrap(), Vec::<String>::new());
    assert_applied_once_in_order_and_committed(&recorder, &committed);
}

#[tokio::test]
async fn shutdown_during_retries_commits_only_what_was_applied() {
    let recorder = Recorder::default();
    recorder.failing.lock().unwrap().insert(0);
    let run = start(120, recorder, empty_object).await;
    wait_retried(&run.recorder).await;
    let (recorder, committed) = run.stop().await;
    assert_eq!(*recorder.violations.lock().unwrap(), Vec::<String>::new());
    let handled = recorder.handled.lock().unwrap();
    assert_eq!(
        committed[&0], 0,
        "partition 0 never applied, never committed"
    );
    for partition in 1..PARTITIONS {
        let applied = handled.get(&partition).map_or(0, Vec::len) as i64;
        assert_eq!(
            committed[&partition], applied,
            "partition {partition}: committed exactly what was applied"
        );
    }
}

#[tokio::test]
async fn the_largest_message_a_fetch_allows_is_consumed_whole() {
    // Fetches are limited to FETCH_MAX_BYTES of batches as stored; the
    // largest message the engine lets in (`ServeConfig` keeps webhook
    // bodies within the fetch, less the envelope allowance) must still
    // come, in order with its neighbours. Random bytes, so that compression
    // cannot shrink it below the limit.
    let large = FETCH_MAX_BYTES - ENVELOPE_ALLOWANCE_BYTES as usize;
    let n = 60;
    let run = start(n, Recorder::default(), |i| {
        if i % 20 == 5 {
            incompressible(large, i as u64)
        } else {
            b"{}".to_vec()
        }
    })
    .await;
    let recorder = run.recorder.clone();
    wait_handled(&recorder, n).await;
    let (recorder, committed) = run.stop().await;
    assert_eq!(*recorder.violations.lock().unwrap(), Vec::<String>::new());
    assert_eq!(recorder.largest_payload.load(Ordering::SeqCst), large);
    assert_applied_once_in_order_and_committed(&recorder, &committed);
}

fn empty_object(_: usize) -> Vec<u8> {
    b"{}".to_vec()
}

/// `len` bytes lz4 cannot shrink (xorshift64 from `seed`).
fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Waits until a failing batch has been retried at least once.
async fn wait_retried(recorder: &Recorder) {
    wait_for(
        Duration::from_secs(60),
        "a failing batch to be retried",
        || {
            let retried = recorder.failed_attempts.load(Ordering::SeqCst) >= 2;
            async move { retried.then_some(()) }
        },
    )
    .await;
}

/// Waits until `n` messages have been handled.
async fn wait_handled(recorder: &Recorder, n: usize) {
    wait_for(Duration::from_secs(60), "every message handled", || {
        let done = recorder.handled_count() >= n;
        async move { done.then_some(()) }
    })
    .await;
}

/// Every partition's messages were applied exactly once each, in offset
/// order (a single member never re-reads), and its committed offset is the
/// next after the last applied.
fn assert_applied_once_in_order_and_committed(recorder: &Recorder, committed: &BTreeMap<i32, i64>) {
    for (partition, offsets) in recorder.handled.lock().unwrap().iter() {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &expected, "partition {partition}");
        assert_eq!(
            committed[partition],
            offsets.len() as i64,
            "partition {partition}: committed offset is the next after the last applied"
        );
    }
}
