//! The paid sessions export over HTTP, for pollers (n8n, Zapier): each
//! answer is a batch with an id, offered again until it is acknowledged,
//! and held for one caller meanwhile. The answer is built before it is
//! sent, so a client that reads slowly holds no database connection.

use std::process::Child;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Text};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::export::{ids, out_dir, run_cli};
use super::{completed, post_all, session, stack_with, wait_mirrored, T};
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::stack::{Options, Stack, API_TOKEN};
use crate::support::{free_port, spawn_binary, wait_for};

const PATH: &str = "/api/exports/paid-sessions";

/// `n` paid sessions `{prefix}00001`… with `fields`, stored in the mirror
/// in one transaction (the trigger records them as for any apply).
fn insert_paid(stack: &Stack, prefix: &str, n: i64, fields: Value) {
    diesel::sql_query(
        "INSERT INTO stripe.checkout_sessions (account, id, data, remote_version, remote_event_id) \
         SELECT 'platform', id, jsonb_set($2, '{id}', to_jsonb(id)), 1, 'evt_x' \
         FROM (SELECT $1 || lpad(g::text, 5, '0') AS id FROM generate_series(1, $3) g) s",
    )
    .bind::<Text, _>(prefix)
    .bind::<Jsonb, _>(session("cs_template", T, "paid", fields))
    .bind::<BigInt, _>(n)
    .execute(&mut stack.db.conn())
    .unwrap();
}

fn session_ids(prefix: &str, n: i64) -> Vec<String> {
    (1..=n).map(|g| format!("{prefix}{g:05}")).collect()
}

/// `stripe-sync serve` as a process of its own on the stack's database
/// and topics, with `extra` settings; killed when dropped.
struct Serve {
    child: Child,
    addr: String,
    http: reqwest::Client,
}

impl Serve {
    async fn start(stack: &Stack, extra: &[(&str, &str)]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = stack.serve_env().with("LISTEN_ADDR", &addr);
        for (k, v) in extra {
            env = env.with(k, v);
        }
        let child = spawn_binary(env!("CARGO_BIN_EXE_stripe-sync"), &["serve"], &env);
        wait_for(Duration::from_secs(60), "serve ready", || async {
            let r = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        Self {
            child,
            addr,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .bearer_auth(API_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The export request, written by hand on a socket the test controls.
    fn raw_request(&self, body: &Value) -> Vec<u8> {
        let body = body.to_string();
        format!(
            "POST {PATH} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .into_bytes()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sessions' ids in an answer, sorted.
fn answer_ids(answer: &Value) -> Vec<String> {
    ids(answer["sessions"].as_array().map_or(&[][..], Vec::as_slice))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_tools_poll_the_export_over_http() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    post_all(
        &stack,
        &[
            completed("evt_1", "cs_1", "paid", json!({"payment_link": "plink_a"})),
            completed("evt_2", "cs_2", "paid", json!({"payment_link": "plink_a"})),
            completed("evt_3", "cs_3", "paid", json!({"payment_link": "plink_b"})),
        ],
    )
    .await;
    wait_mirrored(&stack, "paid", 3).await;
    let api = &stack;
    let post = |path: &'static str, body: Value| async move {
        let r = api
            .api(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let poll = |body: Value| post(PATH, body);
    let zapier = |extra: Value| {
        let mut body = json!({"name": "zapier", "payment_links": ["plink_a"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    let (status, first) = poll(zapier(json!({"limit": 1}))).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (
            first["status"].as_str(),
            first["count"].as_i64(),
            first["has_more"].as_bool(),
            first["redelivered"].as_bool()
        ),
        (Some("success"), Some(1), Some(true), Some(false)),
        "{first}"
    );
    let first_id = first["batch_id"].as_str().expect("a batch id").to_owned();
    assert!(uuid::Uuid::parse_str(&first_id).is_ok(), "{first_id}");
    // Not acknowledged, and held for the caller it went to.
    let (status, held) = poll(zapier(json!({"limit": 1}))).await;
    assert_eq!(
        (status, held["status"].as_str(), held["count"].as_i64()),
        (200, Some("batch_in_flight"), Some(0)),
        "{held}"
    );
    assert!(held["retry_after_seconds"].as_i64().unwrap() > 0, "{held}");
    // Other filters while it is pending would get another export's batch.
    let (status, error) = poll(json!({"name": "zapier", "payment_links": ["plink_b"]})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("filters_changed")),
        "{error}"
    );
    // The file export of that name does not run past it either.
    let (ok, said) = run_cli(
        &stack,
        &["--name", "zapier", "--out", out_dir().to_str().unwrap()],
    );
    assert!(!ok && said.contains("pending"), "{said}");

    // The next call acknowledges it and gets the next batch.
    let (status, second) = poll(zapier(json!({"ack": first_id, "limit": 1}))).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["count"], 1, "{second}");
    assert_ne!(first["sessions"][0]["id"], second["sessions"][0]["id"]);
    assert_eq!(second["sessions"][0]["payment_link"], "plink_a");
    let second_id = second["batch_id"].as_str().unwrap().to_owned();
    assert_ne!(first_id, second_id);
    // Or `POST …/ack`; acknowledging twice is harmless.
    let (status, acked) = post(
        "/api/exports/paid-sessions/ack",
        json!({"batch_id": second_id}),
    )
    .await;
    assert_eq!(
        (status, acked["status"].as_str(), acked["count"].as_i64()),
        (200, Some("acknowledged"), Some(1)),
        "{acked}"
    );
    let (status, again) = post(
        "/api/exports/paid-sessions/ack",
        json!({"batch_id": second_id, "name": "zapier"}),
    )
    .await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("already_acknowledged")),
        "{again}"
    );
    // A call that repeats an old acknowledgement (its answer was lost).
    let (status, none) = poll(zapier(json!({"ack": first_id}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        none,
        json!({"status": "no_new_data", "batch_id": null, "redelivered": false,
               "count": 0, "sessions": [], "has_more": false})
    );
    let delivered = stack
        .db
        .count("orders.exports WHERE name = 'zapier' AND delivered = 2");
    assert_eq!(delivered, 1, "the watermark counted each batch once");

    // An acknowledgement of no batch of this export changes nothing.
    let unknown = uuid::Uuid::new_v4().to_string();
    for (path, body) in [
        (PATH, zapier(json!({"ack": unknown}))),
        (
            "/api/exports/paid-sessions/ack",
            json!({"batch_id": unknown}),
        ),
        (
            "/api/exports/paid-sessions/ack",
            json!({"batch_id": second_id, "name": "n8n"}),
        ),
    ] {
        let (status, error) = post(path, body.clone()).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (409, Some("unknown_batch")),
            "{body}: {error}"
        );
    }
    for (body, field) in [
        (json!({"payment_links": ["price_1"]}), "payment_links"),
        (json!({"name": ""}), "name"),
        (json!({"limit": 0}), "limit"),
        (json!({"since": "yesterday"}), "since"),
        (json!({"ack": "batch-1"}), "ack"),
    ] {
        let (status, error) = poll(body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let (status, error) = post("/api/exports/paid-sessions/ack", json!({})).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (400, Some("batch_id")),
        "{error}"
    );
    let (status, error) = poll(json!({"nmae": "x"})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("unknown_field"))
    );
    stack.stop().await;
}

/// A poller reads part of the answer and the connection drops (a timeout,
/// a restart): that batch was never acknowledged, so once its hold runs
/// out it is offered again, the same batch with the same sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_that_reads_half_and_disconnects_gets_the_same_sessions_again() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    insert_paid(&stack, "cs_half_", 50, json!({}));
    let serve = Serve::start(&stack, &[("EXPORT_BATCH_LEASE_MS", "1000")]).await;
    let body = json!({"name": "n8n"});

    let mut socket = TcpStream::connect(&serve.addr).await.unwrap();
    socket.write_all(&serve.raw_request(&body)).await.unwrap();
    let mut half = vec![0; 2048];
    socket.read_exact(&mut half).await.unwrap();
    drop(socket);
    let half = String::from_utf8_lossy(&half).into_owned();
    assert!(half.contains("cs_half_00001"), "the answer began: {half}");
    let offered_id = half
        .split_once("\"batch_id\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(id, _)| id.to_owned());

    let again = wait_for(
        Duration::from_secs(30),
        "an answer to the next poll",
        || async {
            let (status, answer) = serve.post(PATH, &body).await;
            assert_eq!(status, 200, "{answer}");
            (answer["status"] != "batch_in_flight").then_some(answer)
        },
    )
    .await;
    assert_eq!(
        again["status"], "success",
        "the batch is offered again: {again}"
    );
    assert_eq!(again["batch_id"].as_str(), offered_id.as_deref(), "{again}");
    assert_eq!(again["redelivered"], true);
    assert_eq!(answer_ids(&again), session_ids("cs_half_", 50));

    let (_, next) = serve
        .post(PATH, &json!({"name": "n8n", "ack": again["batch_id"]}))
        .await;
    assert_eq!(next["status"], "no_new_data", "{next}");
    assert_eq!(
        stack
            .db
            .count("orders.exports WHERE name = 'n8n' AND delivered = 50"),
        1
    );
    drop(serve);
    stack.stop().await;
}

/// Two pollers of one name (two workers of one workflow): a batch goes to
/// one of them, the other hears it is in flight, and every session is
/// delivered to exactly one poller, in batches that each move the
/// watermark once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pollers_of_one_name_never_both_get_a_batch() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    insert_paid(&stack, "cs_shared_", 30, json!({}));
    let serve = Serve::start(&stack, &[]).await;
    let body = |ack: Option<&str>| {
        let mut body = json!({"name": "shared", "limit": 7});
        if let Some(ack) = ack {
            body["ack"] = json!(ack);
        }
        body
    };

    let (_, first) = serve.post(PATH, &body(None)).await;
    assert_eq!(first["count"], 7, "{first}");
    let (_, other) = serve.post(PATH, &body(None)).await;
    assert_eq!(
        (other["status"].as_str(), other["count"].as_i64()),
        (Some("batch_in_flight"), Some(0)),
        "the second poller does not get the first one's batch, nor the next: {other}"
    );

    // Four pollers race, each acknowledging its own batch in its next call.
    let serve = &serve;
    let pollers = (0..4).map(|n| {
        let mut last = (n == 0).then(|| first["batch_id"].as_str().unwrap().to_owned());
        let mut got: Vec<String> = if n == 0 {
            answer_ids(&first)
        } else {
            Vec::new()
        };
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "the pollers finish");
                let (status, answer) = serve.post(PATH, &body(last.as_deref())).await;
                assert_eq!(status, 200, "{answer}");
                match answer["status"].as_str() {
                    Some("success") => {
                        got.extend(answer_ids(&answer));
                        last = answer["batch_id"].as_str().map(str::to_owned);
                    }
                    Some("no_new_data") => return got,
                    _ => {
                        last = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    });
    let mut all: Vec<String> = futures::future::join_all(pollers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, all.len(), "a session went to two pollers");
    assert_eq!(all, session_ids("cs_shared_", 30));
    assert_eq!(
        stack
            .db
            .count("orders.exports WHERE name = 'shared' AND delivered = 30"),
        1
    );
    stack.stop().await;
}

/// Pollers that do not read their answers (slow links, stuck workers), as
/// many as serve has database connections: the other routes keep theirs,
/// since an answer is built and its batch recorded before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_hold_no_database_connection() {
    let stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    // Answers larger than the kernel buffers for a socket (up to 4 MiB
    // on Linux by default, tcp_wmem), so that an unread one cannot be
    // handed off whole: 10,000 sessions of ~600 bytes (a long name).
    let name = format!("Buyer {}", "with a very long name ".repeat(20));
    let details = json!({"customer_details": {"name": name, "email": "buyer@example.com"}});
    insert_paid(&stack, "cs_slow_", 10_000, details);
    let pool = 4;
    let serve = Serve::start(&stack, &[("DATABASE_POOL_SIZE", "4")]).await;
    let mut readers = Vec::new();
    for n in 0..pool {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(serve.addr.parse().unwrap()).await.unwrap();
        let body = json!({"name": format!("slow_{n}"), "limit": 10_000});
        stream.write_all(&serve.raw_request(&body)).await.unwrap();
        // The status line and headers: the answer has begun; no more is read.
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        readers.push(stream);
    }

    let started = Instant::now();
    let r = serve
        .http
        .get(format!("http://{}/api/customers", serve.addr))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, took) = (r.status().as_u16(), started.elapsed());
    let ready = reqwest::get(format!("http://{}/readyz", serve.addr))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(
        (status, ready),
        (200, 200),
        "database routes answer while {pool} answers wait for their readers"
    );
    // A route that had to wait for a connection would wait the pool's
    // whole checkout timeout, and fail.
    let bound = stripe_sync::db::POOL_CHECKOUT_TIMEOUT * 3 / 5;
    assert!(took < bound, "promptly (under {bound:?}): {took:?}");

    // The answers are whole once read.
    let mut rest = Vec::new();
    readers[0].read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.len() > 5 << 20,
        "larger than the socket buffers: {}",
        rest.len()
    );
    let answer: Value = serde_json::from_slice(&rest).expect("the rest of the answer is its JSON");
    assert_eq!(answer["count"], 10_000);
    drop(readers);
    drop(serve);
    stack.stop().await;
}
