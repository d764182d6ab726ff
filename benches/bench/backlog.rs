//! The broker's produce and consume ceilings, and the inbound worker's
//! apply rate from a backlog produced before it starts.

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::prelude::*;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use stripe_sync::kafka::EventProducer;

use crate::common::{env, free_port};
use crate::supervise::{applied_events, bench_events_topic, engine_processes, Processes};
use crate::{hot_spot_event, mix, vacuum, Scale};

/// A producer as the engine's, with its `KAFKA_COMPRESSION` when the bench
/// was given one (see `TUNING_PASSED_THROUGH`).
pub(crate) fn bench_producer(brokers: &str) -> anyhow::Result<EventProducer> {
    let compression = match std::env::var("KAFKA_COMPRESSION") {
        Ok(raw) if !raw.is_empty() => raw.parse().map_err(anyhow::Error::msg)?,
        _ => stripe_sync::config::DEFAULT_COMPRESSION,
    };
    EventProducer::new(brokers, Duration::from_secs(30), compression)
}

/// The broker's rate for what `serve` produces (the event body, with the
/// headers of a webhook's envelope: none) through the engine's producer,
/// 2,000 sends in flight;
/// returns msgs/s.
pub(crate) async fn raw_produce_rate(
    brokers: &str,
    topic: &str,
    body: &[u8],
    n: usize,
) -> anyhow::Result<f64> {
    let producer = bench_producer(brokers)?;
    stripe_sync::kafka::admin::ensure_topics(brokers, &[topic], 6, 1).await?;
    let event = stripe_sync::stripe::EventEnvelope::parse(body)?;
    let headers = stripe_sync::kafka::envelope::event_headers(
        &event,
        stripe_sync::kafka::envelope::SOURCE_WEBHOOK,
    );
    let start = Instant::now();
    let sends = (0..n).map(|i| {
        let (producer, headers) = (&producer, &headers);
        async move {
            producer
                .send(topic, format!("cus_{}", i % 1000).as_bytes(), body, headers)
                .await
        }
    });
    futures::stream::iter(sends)
        .buffer_unordered(2000)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Produces `n` customer events (numbered from `first`, over 5,000
/// customers, each updated a second after its previous event) to `topic`
/// with the envelope `serve` gives them.
/// A backlog's events: event number `n` of it, built from the fixtures.
pub(crate) type EventAt = fn(u64, &Value) -> Value;

/// The customers-only backlog: 5,000 customers updated in turn.
pub(crate) fn customer_backlog_event(n: u64, fixtures: &Value) -> Value {
    hot_spot_event("cus_backlog", n, fixtures)
}

pub(crate) async fn produce_backlog(
    brokers: &str,
    topic: &str,
    first: u64,
    n: usize,
    fixtures: &Value,
    event_at: EventAt,
) -> anyhow::Result<()> {
    let producer = bench_producer(brokers)?;
    let sends: Vec<_> = (0..n as u64)
        .map(|i| {
            // Numbered from `first`, so two backlogs of the same objects
            // never carry the same second (a tie the apply would settle by
            // re-reading each object from Stripe).
            let ev = event_at(first + i, fixtures);
            let producer = producer.clone();
            async move {
                let body = serde_json::to_vec(&ev).unwrap();
                let parsed = stripe_sync::stripe::EventEnvelope::parse(&body).unwrap();
                let headers = stripe_sync::kafka::envelope::event_headers(
                    &parsed,
                    stripe_sync::kafka::envelope::SOURCE_WEBHOOK,
                );
                producer
                    .send(topic, parsed.object_id.as_bytes(), &body, &headers)
                    .await
            }
        })
        .collect();
    futures::stream::iter(sends)
        .buffer_unordered(2000)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Starts a stripe-inbound (`name`, with `extra` settings) on a backlog of
/// `n` events it has not seen and returns its apply rate in events/s, from
/// its first applied event (so the group join is left out) to its last.
/// Progress is read from the worker's own applied-events counter, so the
/// measurement puts no load on Postgres.
pub(crate) async fn backlog_apply_rate(
    procs: &mut Processes,
    http: &reqwest::Client,
    name: &'static str,
    extra: &[(&str, String)],
    n: usize,
) -> anyhow::Result<f64> {
    let port = free_port()?;
    let mut settings = extra.to_vec();
    settings.push(("METRICS_ADDR", format!("127.0.0.1:{port}")));
    procs.spawn(name, "stripe-inbound", &[], &settings)?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let start = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let applied = applied_events(http, &metrics).await;
        if applied > 0 && first.is_none() {
            first = Some((Instant::now(), applied));
        }
        if applied >= n as u64 || start.elapsed() > Duration::from_secs(900) {
            let (since, at_first) = first.context("the worker applied nothing")?;
            return Ok((applied - at_first) as f64 / since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a backlog holds: its name (the topic's and the worker's suffix)
/// and its events.
#[derive(Clone, Copy)]
pub(crate) struct Backlog {
    pub(crate) name: &'static str,
    pub(crate) event_at: EventAt,
}

pub(crate) const CUSTOMERS_ONLY: Backlog = Backlog {
    name: "backlog",
    event_at: customer_backlog_event,
};

pub(crate) const TYPE_MIX: Backlog = Backlog {
    name: "mix",
    event_at: mix::mixed_event,
};

/// Has a stripe-inbound of its own (own topic and group, so it reads only
/// this backlog) apply a backlog of `n` events from the memory broker;
/// returns its apply rate in events/s and its peak RSS in MiB.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn memory_backlog(
    procs: &mut Processes,
    http: &reqwest::Client,
    conn: &mut PgConnection,
    memory_brokers: &str,
    events_topic: &str,
    suffix: &str,
    n: usize,
    fixtures: &Value,
    backlog: Backlog,
) -> anyhow::Result<(f64, Option<f64>)> {
    let topic = format!("{events_topic}.{}", backlog.name);
    produce_backlog(
        memory_brokers,
        &topic,
        60_000_000,
        n,
        fixtures,
        backlog.event_at,
    )
    .await?;
    vacuum(conn)?;
    let worker = "stripe-inbound-memory-broker";
    let rate = backlog_apply_rate(
        procs,
        http,
        worker,
        &[
            ("KAFKA_BROKERS", memory_brokers.to_owned()),
            ("STRIPE_EVENTS_TOPIC", topic),
            (
                "INBOUND_CONSUMER_GROUP",
                format!("bench.inbound.{suffix}.{}", backlog.name),
            ),
        ],
        n,
    )
    .await?;
    Ok((rate, procs.stop(worker)))
}

/// Reads `topic` from each partition's high watermark in `from` to its
/// end with a plain consumer configured as the workers are (no group, no
/// apply) and returns messages/s.
pub(crate) fn raw_consume_rate(
    brokers: &str,
    topic: &str,
    from: &[stripe_sync::ops::topics::PartitionInfo],
) -> anyhow::Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    // As the workers of this run fetch: the tuning handed on to them
    // (KAFKA_FETCH_WAIT_MS, KAFKA_FETCH_MAX_BYTES), read as they read it.
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let kafka = stripe_sync::config::KafkaConfig::load(
        &stripe_sync::config::Env::from_pairs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .with("KAFKA_BROKERS", brokers),
    )?;
    let consumer: BaseConsumer = stripe_sync::kafka::consumer::fetch_config(
        brokers,
        kafka.fetch_wait,
        kafka.fetch_max_bytes,
        1,
    )
    .set("group.id", "bench.raw-consume")
    .set("enable.auto.commit", "false")
    .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for start in from {
        let (_, high) =
            consumer.fetch_watermarks(topic, start.partition, Duration::from_secs(10))?;
        assignment.add_partition_offset(topic, start.partition, Offset::Offset(start.high))?;
        remaining += high - start.high;
    }
    consumer.assign(&assignment)?;
    let total = remaining;
    let start = Instant::now();
    while remaining > 0 && start.elapsed() < Duration::from_secs(600) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_secs(1)) {
            remaining -= 1;
        }
    }
    Ok((total - remaining) as f64 / start.elapsed().as_secs_f64())
}

/// `bench --backlog`: only the inbound worker's apply from the memory
/// broker's backlogs (customers, then the type mix) and its peak RSS.
pub(crate) async fn backlog_only(
    db_url: &str,
    suffix: &str,
    scale: &Scale,
    fixtures: &Value,
) -> anyhow::Result<()> {
    let memory_brokers = env("BENCH_KAFKA_MEMORY_BROKERS")?;
    let mut procs = engine_processes(db_url, &memory_brokers, suffix, free_port()?)?;
    let http = reqwest::Client::new();
    let mut conn = PgConnection::establish(db_url)?;
    for backlog in [CUSTOMERS_ONLY, TYPE_MIX] {
        let (rate, rss) = memory_backlog(
            &mut procs,
            &http,
            &mut conn,
            &memory_brokers,
            &bench_events_topic(suffix),
            suffix,
            scale.backlog_events,
            fixtures,
            backlog,
        )
        .await?;
        println!(
            "inbound apply from the memory broker's backlog of {} ({}): {rate:.0} events/s, \
             peak RSS {rss:.0?} MiB",
            scale.backlog_events, backlog.name
        );
    }
    Ok(())
}
