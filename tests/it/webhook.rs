//! `POST /webhooks/stripe`, `/healthz`, `/readyz` over real HTTP, with the
//! events topic read back from the real broker.

use std::time::Duration;

use serde_json::json;
use stripe_sync::kafka::envelope;
use stripe_sync::stripe::signature::sign;

use crate::support::broker::{read_all, PrivateBroker};
use crate::support::fixtures::{customer_event, event};
use crate::support::stack::{Options, Stack, SECRET};
use crate::support::wait_for;

fn now() -> i64 {
    stripe_sync::ingest::unix_now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_webhooks_get_a_json_400_naming_the_reason_and_produce_nothing() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let body = serde_json::to_vec(&customer_event(
        "evt_r1",
        "customer.created",
        now(),
        "cus_r1",
        json!({}),
    ))
    .unwrap();
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("cus_r1", "cus_r2")
        .into_bytes();
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        ("missing header", body.clone(), None, "signature_missing"),
        (
            "garbage header",
            body.clone(),
            Some("garbage".into()),
            "signature_malformed",
        ),
        (
            "wrong secret",
            body.clone(),
            Some(sign("whsec_wrong", now(), &body)),
            "signature_mismatch",
        ),
        (
            "tampered body",
            tampered,
            Some(sign(SECRET, now(), &body)),
            "signature_mismatch",
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(sign(SECRET, now() - 301, &body)),
            "signature_timestamp_too_old",
        ),
        (
            "future timestamp",
            body.clone(),
            Some(sign(SECRET, now() + 400, &body)),
            "signature_timestamp_in_future",
        ),
        // Verify before parse (invariant 1): a body that is not even JSON
        // is judged by its signature first.
        (
            "unsigned, not JSON",
            b"\xff\xfe{{{ not json".to_vec(),
            None,
            "signature_missing",
        ),
        (
            "wrongly signed, not JSON",
            b"\xff\xfe{{{ not json".to_vec(),
            Some(sign("whsec_wrong", now(), b"\xff\xfe{{{ not json")),
            "signature_mismatch",
        ),
        (
            "signed but not an event",
            b"{\"hello\":1}".to_vec(),
            Some(sign(SECRET, now(), b"{\"hello\":1}")),
            "invalid_event",
        ),
    ];
    for (name, body, header, code) in cases {
        let (status, json) = stack.post_raw(body, header.as_deref()).await;
        assert_eq!(status, 400, "{name}: {json}");
        assert_eq!(json["error"]["code"], code, "{name}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {json}"
        );
    }

    // Over the body limit: 413, also before any parsing.
    // The server answers without reading the body and closes the
    // connection, so this request must not share a pooled connection.
    let huge = vec![b' '; 1024 * 1024 + 1];
    let header = sign(SECRET, now(), &huge);
    let r = reqwest::Client::new()
        .post(stack.webhook_url())
        .header("Stripe-Signature", header)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "payload_too_large");

    // A body without a Content-Length (chunked) is refused before it is
    // read: 411, as JSON.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(stack.addr).await.unwrap();
        let request = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Stripe-Signature: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             2\r\n{{}}\r\n0\r\n\r\n",
            stack.addr,
            sign(SECRET, now(), b"{}")
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
        assert!(answer.contains("\"length_required\""), "{answer}");
    }

    // A body that ends before its Content-Length (the client half-closed)
    // is the client's fault: 400, not an internal error. Found by
    // tests/it/fuzz_http.rs; the API's JSON bodies are read the same way.
    for path in ["/webhooks/stripe", "/api/customers"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(stack.addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {}\r\nStripe-Signature: {}\r\nContent-Length: 100\r\n\
             Connection: close\r\n\r\n{{}}",
            stack.addr,
            crate::support::stack::API_TOKEN,
            sign(SECRET, now(), b"{}")
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("\"body_unreadable\""), "{path}: {answer}");
    }

    // Unknown routes and methods answer JSON too.
    let r = stack.http.get(stack.webhook_url()).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );
    let r = stack
        .http
        .get(format!("http://{}/nope", stack.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "not_found"
    );

    assert!(
        read_all(&stack.brokers, &stack.topic).is_empty(),
        "a refused webhook reached Kafka"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verified_events_of_any_type_are_acknowledged_and_published_keyed_by_object() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let customer = customer_event(
        "evt_k1",
        "customer.updated",
        now(),
        "cus_k1",
        json!({"email": "k@example.com"}),
    );
    // A type no worker handles yet is still acknowledged (never 4xx).
    let product = event(
        "evt_k2",
        "product.created",
        now(),
        json!({"id": "prod_k2", "object": "product"}),
    );
    let sent_at = now();
    assert_eq!(stack.post_event(&customer).await, 200);
    assert_eq!(stack.post_event(&product).await, 200);
    // The second configured secret is accepted too (rotation).
    let body = serde_json::to_vec(&customer_event(
        "evt_k3",
        "customer.updated",
        now(),
        "cus_k1",
        json!({}),
    ))
    .unwrap();
    let header = sign("whsec_test_rotated_out", now(), &body);
    let (status, _) = stack.post_raw(body.clone(), Some(&header)).await;
    assert_eq!(status, 200);

    let messages = read_all(&stack.brokers, &stack.topic);
    assert_eq!(messages.len(), 3, "{messages:?}");
    let by_id = |id: &str| {
        messages
            .iter()
            .find(|m| envelope::event_id_in(&m.payload).as_deref() == Some(id))
            .unwrap()
            .clone()
    };
    let m1 = by_id("evt_k1");
    assert_eq!(m1.key.as_deref(), Some(&b"cus_k1"[..]));
    // A webhook's event carries no headers: its id, type and account are in
    // the body, and when serve took it in is the message's timestamp.
    for m in &messages {
        assert!(m.headers.is_empty(), "{:?}", m.headers);
        let taken_in = m.timestamp.expect("a timestamp") / 1000;
        assert!(
            (sent_at..=now()).contains(&taken_in),
            "timestamp {taken_in} outside {sent_at}..={}",
            now()
        );
    }
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&m1.payload).unwrap(),
        customer
    );
    assert_eq!(by_id("evt_k2").key.as_deref(), Some(&b"prod_k2"[..]));
    // The raw body is published byte for byte.
    assert_eq!(by_id("evt_k3").payload, body);
    // One object's events share a partition.
    assert_eq!(by_id("evt_k3").partition, m1.partition);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_readiness() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let r = stack
        .http
        .get(format!("http://{}/healthz", stack.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = stack
        .http
        .get(format!("http://{}/readyz", stack.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"], json!({"postgres": "ok", "kafka": "ok"}));
    stack.stop().await;
}

/// With `METRICS_ADDR` set, serve's `/metrics`, `/healthz` and `/readyz`
/// are on that listener only: the public port carries the webhook and the
/// API, and answers 404 for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_with_a_metrics_addr_keeps_ops_off_the_public_port() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let env = stack.env.with("METRICS_ADDR", "127.0.0.1:0");
    let server = stripe_sync::serve::Server::build(
        &stripe_sync::config::ServeConfig::load(&env).unwrap(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let (public, ops) = (server.addr, server.ops_addr.expect("an ops listener"));
    let running = tokio::spawn(server.run());
    for path in ["metrics", "healthz", "readyz"] {
        for (addr, want, on) in [(ops, 200, "METRICS_ADDR"), (public, 404, "the public port")] {
            let r = stack
                .http
                .get(format!("http://{addr}/{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), want, "/{path} on {on}");
        }
    }
    let metrics = stack
        .http
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(metrics.text().await.unwrap().contains("stripe_sync_"));
    // The webhook and the API are still on the public port.
    let webhook = stack
        .http
        .post(format!("http://{public}/webhooks/stripe"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        webhook.status(),
        400,
        "an unsigned webhook is refused, not 404"
    );
    let api = stack
        .http
        .get(format!("http://{public}/api/customers"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    shutdown.cancel();
    running.await.unwrap();
    stack.stop().await;
}

/// Invariant 2: 2xx only once Kafka has the event. With the broker down the
/// webhook answers 503 (Stripe retries); when it is back the retries land
/// and every event is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_answers_503_and_stripe_retries_lose_nothing() {
    let mut broker = PrivateBroker::start();
    let mut stack = Stack::start(Options {
        brokers: broker.brokers(),
        start_worker: false,
        produce_timeout_ms: 2000,
        ..Options::default()
    })
    .await;
    let events: Vec<_> = (0..6)
        .map(|i| {
            customer_event(
                &format!("evt_down{i}"),
                "customer.created",
                now(),
                &format!("cus_down{i}"),
                json!({"name": format!("n{i}")}),
            )
        })
        .collect();
    assert_eq!(stack.post_event(&events[0]).await, 200);

    broker.stop();
    let mut refused = Vec::new();
    for e in &events[1..4] {
        let status = stack.post_event(e).await;
        assert_eq!(
            status, 503,
            "an event was acknowledged while the broker was down"
        );
        refused.push(e.clone());
    }
    let r = stack
        .http
        .get(format!("http://{}/readyz", stack.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["checks"]["kafka"],
        "unreachable"
    );

    broker.resume();
    // Stripe retries each refused event until it gets a 2xx.
    for e in refused.iter().chain(&events[4..]) {
        wait_for(
            Duration::from_secs(60),
            "the webhook to accept again",
            || async { (stack.post_event(e).await == 200).then_some(()) },
        )
        .await;
    }
    stack.start_worker();
    stack.wait_ledger(6, Duration::from_secs(60)).await;
    for i in 0..6 {
        let (c, _) = stack
            .customer(&format!("cus_down{i}"))
            .expect("customer applied");
        assert_eq!(c.name.as_deref(), Some(format!("n{i}").as_str()));
    }
    assert_eq!(stack.ledger_count(), 6);
    stack.stop().await;
}
