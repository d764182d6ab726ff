//! The shared broker, plus private brokers for tests that stop one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use stripe_sync::kafka::envelope::{self, HeaderList};

pub fn shared_brokers() -> String {
    super::required_env("TEST_KAFKA_BROKERS")
}

/// A nisshi broker owned by one test, with sqlite storage so it keeps its
/// data across a stop and start on the same port.
pub struct PrivateBroker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(super::unique("ssync-broker"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = Self {
            port: super::free_port(),
            dir,
            child: None,
        };
        b.resume();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = std::fs::File::create(self.dir.join("broker.log")).unwrap();
        let child = Command::new(super::required_env("NISSHI_BIN"))
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--storage-engine",
                "sqlite://broker.db",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nisshi");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private broker did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A message as read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadMessage {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HeaderList,
    /// The message's timestamp, in milliseconds since the epoch.
    pub timestamp: Option<i64>,
}

impl ReadMessage {
    pub fn header(&self, key: &str) -> Option<&str> {
        envelope::header(&self.headers, key)
    }
}

/// Reads every message of `topic` from the beginning (all partitions), up to
/// the high watermarks at call time, without joining any consumer group.
pub fn read_all(brokers: &str, topic: &str) -> Vec<ReadMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(5))
            .unwrap();
        remaining += high - low;
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (out.len() as i64) < remaining && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(ReadMessage {
                partition: m.partition(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: envelope::from_headers(m.headers()),
                timestamp: m.timestamp().to_millis(),
            });
        }
    }
    out
}

/// The offsets `group` has committed on each partition of `topic` (0 where
/// it has none), read by a consumer that never joins the group.
pub fn committed(brokers: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let reader = group_reader(brokers, group);
    partitions(&reader, topic)
        .into_iter()
        .map(|p| (p, committed_offset(&reader, topic, p)))
        .collect()
}

/// Waits until `group` has committed offsets up to the high watermark of
/// every partition of `topic`: everything produced so far is processed.
pub async fn wait_consumed(brokers: &str, group: &str, topic: &str, timeout: Duration) {
    let reader = group_reader(brokers, group);
    let partitions = partitions(&reader, topic);
    super::wait_for(
        timeout,
        &format!("group {group} to consume {topic}"),
        || {
            let lagging = partitions.iter().any(|&p| {
                let (_, high) = reader
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .unwrap();
                committed_offset(&reader, topic, p) < high
            });
            async move { (!lagging).then_some(()) }
        },
    )
    .await;
}

fn group_reader(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn partitions(reader: &BaseConsumer, topic: &str) -> Vec<i32> {
    let md = reader
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

fn committed_offset(reader: &BaseConsumer, topic: &str, partition: i32) -> i64 {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = reader
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()
        .and_then(|c| c.find_partition(topic, partition).map(|e| e.offset()));
    match committed {
        Some(Offset::Offset(o)) => o,
        _ => 0,
    }
}
