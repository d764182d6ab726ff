//! The consume loop itself (`kafka::consumer::run`) against the real
//! broker, with a handler that records what it is given and checks, as it
//! is called, the two things the lanes must never break: a partition is
//! never in two lanes at once, and its offsets only go forward (invariant
//! 4; across a rebalance, only the redelivery from the committed offset
//! goes back). After shutdown the group's committed offsets are compared
//! with what was handled: never past it (invariant 3). Each lane reads its
//! own queue, so one lane that retries never holds up another, and the
//! routing of partitions to those queues survives rebalances.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stripe_sync::config::ENVELOPE_ALLOWANCE_BYTES;
use stripe_sync::health::Health;
use stripe_sync::kafka::consumer::Transient;
use stripe_sync::kafka::consumer::{self, BatchHandler, ConsumeSettings, Delivery, Outcome};
use stripe_sync::kafka::EventProducer;
use tokio_util::sync::CancellationToken;

use crate::support::broker::{committed, read_all, shared_brokers};
use crate::support::db::TestDb;
use crate::support::{unique, wait_for};

const PARTITIONS: i32 = 6;
const LANES: usize = 3;
const BATCH_SIZE: usize = 7;
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
    /// A partition in two lanes at once: never allowed.
    violations: Mutex<Vec<String>>,
    /// A partition's offsets going back: allowed only as the redelivery
    /// that follows a rebalance.
    went_back: Mutex<Vec<String>>,
    /// Partitions whose batches fail (transiently) for now.
    failing: Mutex<BTreeSet<i32>>,
    failed_attempts: AtomicUsize,
    /// The largest payload handled, in bytes.
    largest_payload: AtomicUsize,
    /// The most messages, and the most payload bytes, one batch held.
    longest_batch: AtomicUsize,
    heaviest_batch: AtomicUsize,
    /// A payload the handler panics on (a bug some message triggers).
    panics_on: Option<Vec<u8>>,
    panics: AtomicUsize,
    /// A payload on which the handler breaks its contract (one outcome per
    /// message), which kills its lane.
    miscounts_on: Option<Vec<u8>>,
}

impl Recorder {
    fn handled_count(&self) -> usize {
        self.handled.lock().unwrap().values().map(Vec::len).sum()
    }
}

impl BatchHandler for Recorder {
    fn handle(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, Transient> {
        let partitions: BTreeSet<i32> = batch.iter().map(|d| d.partition).collect();
        self.longest_batch.fetch_max(batch.len(), Ordering::SeqCst);
        let bytes = batch
            .iter()
            .map(|d| d.payload.as_ref().map_or(0, Vec::len))
            .sum();
        self.heaviest_batch.fetch_max(bytes, Ordering::SeqCst);
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
        if let Some(poison) = &self.panics_on {
            if let Some(d) = batch.iter().find(|d| d.payload.as_ref() == Some(poison)) {
                self.in_flight
                    .lock()
                    .unwrap()
                    .retain(|p| !partitions.contains(p));
                self.panics.fetch_add(1, Ordering::SeqCst);
                panic!("poison pill at {}/{}", d.partition, d.offset);
            }
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        // Long enough that lanes overlap if they can.
        std::thread::sleep(Duration::from_millis(15));
        let fails = partitions
            .iter()
            .any(|p| self.failing.lock().unwrap().contains(p));
        let miscounts = self
            .miscounts_on
            .as_ref()
            .is_some_and(|bad| batch.iter().any(|d| d.payload.as_ref() == Some(bad)));
        if !fails && !miscounts {
            let mut handled = self.handled.lock().unwrap();
            for d in batch {
                let offsets = handled.entry(d.partition).or_default();
                if offsets.last().is_some_and(|&last| d.offset <= last) {
                    self.went_back.lock().unwrap().push(format!(
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
        if miscounts {
            return Ok(Vec::new());
        }
        Ok(vec![Outcome::Done; batch.len()])
    }
}

struct Run {
    brokers: String,
    topic: String,
    group: String,
    recorder: Arc<Recorder>,
    /// What the loop reports, as a worker's `/readyz` reads it.
    health: Health,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A topic of `PARTITIONS` partitions and what was produced to it.
struct Topic {
    brokers: String,
    name: String,
    /// Messages produced, per partition.
    produced: BTreeMap<i32, usize>,
}

impl Topic {
    /// A new topic holding `n` messages over 30 keys (so over every
    /// partition), the i-th with `payload(i)`.
    async fn with(n: usize, payload: impl Fn(usize) -> Vec<u8>) -> Self {
        let brokers = shared_brokers();
        let name = unique("consume");
        stripe_sync::kafka::admin::ensure_topics(
            &brokers,
            &[&name, &format!("{name}.dlq")],
            PARTITIONS,
            1,
        )
        .await
        .unwrap();
        let mut topic = Self {
            brokers,
            name,
            produced: BTreeMap::new(),
        };
        topic.produce(0..n, payload).await;
        topic
    }

    async fn produce(&mut self, range: Range<usize>, payload: impl Fn(usize) -> Vec<u8>) {
        let producer = EventProducer::new(
            &self.brokers,
            Duration::from_secs(10),
            stripe_sync::config::DEFAULT_COMPRESSION,
        )
        .unwrap();
        for i in range {
            let key = format!("key{}", i % 30);
            let delivered = producer
                .send(&self.name, key.as_bytes(), &payload(i), &Vec::new())
                .await
                .unwrap();
            *self.produced.entry(delivered.partition).or_default() += 1;
        }
    }

    /// Starts the consume loop as a member of `group`, with `LANES` lanes
    /// and small batches.
    fn consume(&self, group: &str, recorder: Recorder) -> Run {
        self.consume_batches_of(group, recorder, BATCH_SIZE, usize::MAX)
    }

    /// [`Topic::consume`] with batches of at most `batch_size` messages and
    /// `batch_bytes` of payload.
    fn consume_batches_of(
        &self,
        group: &str,
        recorder: Recorder,
        batch_size: usize,
        batch_bytes: usize,
    ) -> Run {
        let settings = ConsumeSettings {
            brokers: self.brokers.clone(),
            group: group.to_owned(),
            topic: self.name.clone(),
            dead_letter_topic: format!("{}.dlq", self.name),
            batch_size,
            batch_bytes,
            batch_wait: Duration::from_millis(5),
            lanes: LANES,
            fetch_wait: stripe_sync::config::DEFAULT_FETCH_WAIT,
            fetch_max_bytes: FETCH_MAX_BYTES,
            health: Health::default(),
        };
        let health = settings.health.clone();
        let dead_letters = EventProducer::new(
            &self.brokers,
            Duration::from_secs(10),
            stripe_sync::config::DEFAULT_COMPRESSION,
        )
        .unwrap();
        let recorder = Arc::new(recorder);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer::run(
            settings,
            recorder.clone(),
            dead_letters,
            shutdown.clone(),
        ));
        Run {
            brokers: self.brokers.clone(),
            topic: self.name.clone(),
            group: group.to_owned(),
            recorder,
            health,
            shutdown,
            task,
        }
    }
}

/// Produces `n` messages to a new topic and consumes it in a new group.
async fn start(n: usize, recorder: Recorder, payload: impl Fn(usize) -> Vec<u8>) -> Run {
    Topic::with(n, payload)
        .await
        .consume(&unique("consume-group"), recorder)
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

    assert_clean(&recorder);
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
    assert_clean(&recorder);
    assert_applied_once_in_order_and_committed(&recorder, &committed);
}

#[tokio::test]
async fn a_stuck_partition_shows_its_lag_in_seconds_until_it_is_applied() {
    // Partition 0 fails from its first batch on (Postgres down since the
    // worker started): its lag in seconds must grow from that batch's
    // first message, and fall to zero once the partition is applied; the
    // partitions of the other lanes stay at zero throughout.
    // Events of 100 KiB, larger than a small peek would fetch: nisshi
    // never returns a message larger than the fetch, so the age must be
    // read with the workers' fetch size.
    let recorder = Recorder::default();
    recorder.failing.lock().unwrap().insert(0);
    let n = 120;
    let produced_before = std::time::Instant::now();
    let run = start(n, recorder, |i| incompressible(100 * 1024, i as u64)).await;
    let lag_seconds = |partition: i32| {
        stripe_sync::metrics::CONSUMER_LAG_SECONDS
            .with_label_values(&[&run.group, &run.topic, &partition.to_string()])
            .get()
    };
    wait_for(
        Duration::from_secs(60),
        "partition 0 reported 4 s behind",
        || {
            let age = lag_seconds(0);
            async move { (age >= 4.0).then_some(()) }
        },
    )
    .await;
    // Never older than the messages themselves.
    let age = lag_seconds(0);
    assert!(
        age <= produced_before.elapsed().as_secs_f64() + 0.1,
        "partition 0 reported {age} s behind, older than its messages"
    );
    // The stuck lane's batches hold its other partitions too; every other
    // lane applies.
    let stuck_lane = consumer::lane_of(0, LANES);
    for partition in (1..PARTITIONS).filter(|&p| consumer::lane_of(p, LANES) != stuck_lane) {
        assert_eq!(lag_seconds(partition), 0.0, "partition {partition} applies");
    }

    run.recorder.failing.lock().unwrap().clear();
    wait_handled(&run.recorder, n).await;
    wait_for(Duration::from_secs(30), "partition 0 caught up", || {
        let age = lag_seconds(0);
        async move { (age == 0.0).then_some(()) }
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn shutdown_during_retries_commits_only_what_was_applied() {
    let recorder = Recorder::default();
    recorder.failing.lock().unwrap().insert(0);
    let run = start(120, recorder, empty_object).await;
    wait_retried(&run.recorder).await;
    let (recorder, committed) = run.stop().await;
    assert_clean(&recorder);
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

/// A message the handler panics on, every time, is a bug it triggers: after
/// `PANICS_BEFORE_DEAD_LETTER` panics its batch is applied one message at a
/// time, the message is dead-lettered with the panic's text, and its
/// partition moves on (invariant 8). Before, it was retried forever.
#[tokio::test]
async fn a_message_the_handler_panics_on_is_dead_lettered_and_its_partition_moves_on() {
    const POISON: &[u8] = br#"{"poison":true}"#;
    let recorder = Recorder {
        panics_on: Some(POISON.to_vec()),
        ..Recorder::default()
    };
    let n = 60;
    let topic = Topic::with(n, |i| {
        if i == 17 {
            POISON.to_vec()
        } else {
            empty_object(i)
        }
    })
    .await;
    let dlq = format!("{}.dlq", topic.name);
    let run = topic.consume(&unique("consume-group"), recorder);
    let recorder = run.recorder.clone();
    wait_handled(&recorder, n - 1).await;
    wait_for(
        Duration::from_secs(60),
        "the poison pill dead-lettered",
        || {
            let found = read_all(&topic.brokers, &dlq).len();
            async move { (found == 1).then_some(()) }
        },
    )
    .await;
    let (recorder, committed) = run.stop().await;
    assert!(recorder.violations.lock().unwrap().is_empty());
    assert!(
        recorder.panics.load(Ordering::SeqCst) >= consumer::PANICS_BEFORE_DEAD_LETTER as usize,
        "the handler panicked on the batch, then on the message alone"
    );
    let dead = read_all(&topic.brokers, &dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, POISON);
    let error = dead[0].header("dlq-error").unwrap();
    assert!(
        error.contains("panicked") && error.contains("poison pill"),
        "{error}"
    );
    assert_eq!(
        recorder.handled_count(),
        n - 1,
        "every other message applied once"
    );
    assert_eq!(
        committed,
        topic
            .produced
            .iter()
            .map(|(p, n)| (*p, *n as i64))
            .collect(),
        "every partition committed to its end, the poison pill's included"
    );
}

/// A lane that dies (here: its handler breaks the one-outcome-per-message
/// contract, which the lane asserts) would leave its partitions stalled
/// while the rest looks healthy. Instead the loop stops by itself, the
/// other lanes' work committed and never past what was applied, and
/// returns the error, so the process exits and is restarted; until it has,
/// its `/readyz` answers 503 and says which lane died.
#[tokio::test]
async fn a_lane_that_dies_stops_the_loop_with_an_error() {
    const BROKEN: &[u8] = br#"{"broken":true}"#;
    let recorder = Recorder {
        miscounts_on: Some(BROKEN.to_vec()),
        ..Recorder::default()
    };
    let topic = Topic::with(90, |i| {
        if i == 45 {
            BROKEN.to_vec()
        } else {
            empty_object(i)
        }
    })
    .await;
    let run = topic.consume(&unique("consume-group"), recorder);
    // The worker's ops server, as worker::start serves it.
    let db = TestDb::migrated();
    let ops = stripe_sync::http::ops::spawn(
        "consume-test",
        "127.0.0.1:0".parse().unwrap(),
        db.pool.clone(),
        EventProducer::new(
            &topic.brokers,
            Duration::from_secs(10),
            stripe_sync::config::DEFAULT_COMPRESSION,
        )
        .unwrap(),
        run.health.clone(),
        run.shutdown.clone(),
    )
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), run.task)
        .await
        .expect("the loop stopped by itself")
        .unwrap();
    let error = format!("{:#}", ended.unwrap_err());
    assert!(error.contains("lane"), "{error}");
    let readyz = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    assert_eq!(
        readyz.status(),
        503,
        "a dead lane makes the process unready"
    );
    let body: serde_json::Value = readyz.json().await.unwrap();
    let failure = body["failures"][0].as_str().unwrap_or_default();
    assert!(
        failure.contains("lane") && failure.contains(&topic.name),
        "{body}"
    );
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    let committed = committed(&run.brokers, &run.group, &run.topic);
    let handled = run.recorder.handled.lock().unwrap().clone();
    for (partition, offset) in committed {
        let applied = handled.get(&partition).map_or(0, Vec::len) as i64;
        assert!(
            offset <= applied,
            "partition {partition}: committed {offset} past the {applied} applied"
        );
    }
}

#[tokio::test]
async fn a_lane_that_keeps_failing_holds_up_only_its_own_partitions() {
    // Partition 0's batches fail for good. Its lane retries, its queue
    // fills, and librdkafka stops fetching that lane's partitions; every
    // other lane must still apply all of its own messages. 16 KiB each, so
    // that the failing lane's partitions hold more than its share of the
    // prefetch (a single poller handing messages to lanes stalled them
    // all here, once the failing lane's hand-over queue was full).
    let recorder = Recorder::default();
    recorder.failing.lock().unwrap().insert(0);
    let topic = Topic::with(600, |i| incompressible(16 * 1024, i as u64)).await;
    let stuck_lane = consumer::lane_of(0, LANES);
    let held_up: usize = topic
        .produced
        .iter()
        .filter(|(p, _)| consumer::lane_of(**p, LANES) == stuck_lane)
        .map(|(_, n)| n)
        .sum();
    assert!(
        held_up * 16 > consumer::PREFETCH_KIB / LANES,
        "the failing lane's messages ({held_up}) fit its prefetch, so this test proved nothing"
    );
    let run = topic.consume(&unique("consume-group"), recorder);
    let recorder = run.recorder.clone();
    wait_for(
        Duration::from_secs(60),
        "the other lanes to apply all of theirs",
        || {
            let handled = recorder.handled.lock().unwrap();
            let done = topic
                .produced
                .iter()
                .filter(|(p, _)| consumer::lane_of(**p, LANES) != stuck_lane)
                .all(|(p, n)| handled.get(p).map_or(0, Vec::len) == *n);
            async move { done.then_some(()) }
        },
    )
    .await;
    assert!(recorder.failed_attempts.load(Ordering::SeqCst) >= 1);
    let (recorder, committed) = run.stop().await;
    assert_clean(&recorder);
    assert!(!recorder.handled.lock().unwrap().contains_key(&0));
    assert_eq!(
        committed[&0], 0,
        "partition 0 never applied, never committed"
    );
}

#[tokio::test]
async fn partitions_come_back_to_their_lanes_after_a_rebalance() {
    // Every rebalance revokes and reassigns partitions, which undoes the
    // routing of a partition to its lane's queue; it must be redone each
    // time, or a partition stalls (or is fetched outside its lane, which
    // stops the member with an error).
    let mut topic = Topic::with(120, empty_object).await;
    let group = unique("consume-group");
    let first = topic.consume(&group, Recorder::default());
    wait_handled(&first.recorder, 120).await;

    // A second member takes some of the partitions ...
    let second = topic.consume(&group, Recorder::default());
    topic.produce(120..240, empty_object).await;
    wait_for(
        Duration::from_secs(60),
        "both members to apply the second round",
        || {
            let done = every_offset_handled(&topic, &[&first.recorder, &second.recorder])
                && second.recorder.handled_count() > 0;
            async move { done.then_some(()) }
        },
    )
    .await;

    // ... and gives them back when it leaves.
    let (second, _) = second.stop().await;
    let before = first.recorder.handled_count();
    topic.produce(240..360, empty_object).await;
    wait_for(
        Duration::from_secs(60),
        "the first member to apply the third round",
        || {
            let done = every_offset_handled(&topic, &[&first.recorder, &second]);
            async move { done.then_some(()) }
        },
    )
    .await;
    let (first, committed) = first.stop().await;

    assert_eq!(*first.violations.lock().unwrap(), Vec::<String>::new());
    assert_eq!(*second.violations.lock().unwrap(), Vec::<String>::new());
    // A partition revoked mid-batch is redelivered from its committed
    // offset, to the same member or the other; each member still applies
    // it in order from wherever it (re)starts.
    assert_in_order_with_redelivery(&first, &second);
    assert_in_order_with_redelivery(&second, &first);
    assert!(
        first.handled_count() >= before + 120,
        "the third round went to the first member"
    );
    for (partition, produced) in &topic.produced {
        assert_eq!(
            committed[partition], *produced as i64,
            "partition {partition}: everything committed"
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
    assert_clean(&recorder);
    assert_eq!(recorder.largest_payload.load(Ordering::SeqCst), large);
    assert_applied_once_in_order_and_committed(&recorder, &committed);
}

#[tokio::test]
async fn a_batch_ends_at_the_message_that_reaches_its_bytes() {
    // 100-byte messages, batches of at most 50 messages or 1,000 bytes: the
    // bytes end each batch at 10 messages. The lanes start on a backlog, so
    // batches fill up to the bound rather than end at the wait.
    let n = 600;
    let topic = Topic::with(n, |i| format!("{:0>100}", i).into_bytes()).await;
    let run = topic.consume_batches_of(&unique("consume-group"), Recorder::default(), 50, 1000);
    let recorder = run.recorder.clone();
    wait_handled(&recorder, n).await;
    let (recorder, committed) = run.stop().await;
    assert_clean(&recorder);
    assert_applied_once_in_order_and_committed(&recorder, &committed);
    assert_eq!(recorder.longest_batch.load(Ordering::SeqCst), 10);
    assert_eq!(recorder.heaviest_batch.load(Ordering::SeqCst), 1000);
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

/// No partition was in two lanes at once, and none went back.
fn assert_clean(recorder: &Recorder) {
    assert_eq!(*recorder.violations.lock().unwrap(), Vec::<String>::new());
    assert_eq!(*recorder.went_back.lock().unwrap(), Vec::<String>::new());
}

/// Each partition's offsets, as `member` handled them, go one by one, go
/// back (a redelivery from the committed offset), or skip only offsets
/// `other` handled (the partition was the other member's meanwhile): never
/// past a message nobody applied.
fn assert_in_order_with_redelivery(member: &Recorder, other: &Recorder) {
    let others = other.handled.lock().unwrap();
    for (partition, offsets) in member.handled.lock().unwrap().iter() {
        let by_other: BTreeSet<i64> = others
            .get(partition)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let mut last = -1;
        for &offset in offsets {
            assert!(
                offset <= last + 1 || (last + 1..offset).all(|o| by_other.contains(&o)),
                "partition {partition}: went from {last} to {offset}, past offsets nobody applied"
            );
            last = offset;
        }
    }
}

/// Whether every message of `topic` was handled by one of `recorders`.
fn every_offset_handled(topic: &Topic, recorders: &[&Recorder]) -> bool {
    topic.produced.iter().all(|(partition, produced)| {
        let mut offsets = BTreeSet::new();
        for recorder in recorders {
            if let Some(handled) = recorder.handled.lock().unwrap().get(partition) {
                offsets.extend(handled.iter().copied());
            }
        }
        offsets.len() == *produced
    })
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
