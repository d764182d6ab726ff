//! HTTP-level fuzzing of a live `serve`: a real process on a real database
//! and broker, sent random methods, every documented route (from
//! `docs/openapi.json`) with random ids and query strings (the mirror's
//! routes over every relation of the registry, with the API token, so they
//! get past auth to the filters: bracketed ranges with huge, negative and
//! non-numeric values, and NUL and bytes that are not UTF-8, percent-encoded,
//! in any parameter's name or value and in ids), random headers
//! (API and admin tokens valid and not, content types, signatures valid for
//! the body and not, idempotency keys), bodies shaped by the API's field
//! names or random bytes, and broken framing (chunked garbage, a
//! Content-Length shorter than the body).
//!
//! The properties: every request is answered, and never with a 5xx other
//! than the 503 `stripe_unavailable` of routes that need Stripe (which is
//! unreachable here, on purpose); the process never dies; its memory stays
//! under the 64 MiB in docs/src/performance.md per process; and 200 slow clients holding
//! half-sent requests do not stop it answering others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use proptest::prelude::*;
use stripe_sync::registry::RESOURCES;
use stripe_sync::stripe::signature::sign;

use crate::fuzz::{cases, json_body, report, runner};
use crate::support::stack::{Options, Stack, ADMIN_TOKEN, API_TOKEN, SECRET};
use crate::support::{free_port, spawn_binary};

/// What a process of ours may use at most (the target in docs/src/performance.md).
const RSS_LIMIT_MIB: f64 = 64.0;

#[derive(Debug, Clone)]
enum Framing {
    Exact,
    /// `Transfer-Encoding: chunked`, with a body that is not chunks.
    ChunkedGarbage,
    /// A Content-Length shorter than the body: the rest reads as the next
    /// request.
    ShortLength,
    /// A Content-Length longer than the body: it ends early.
    Truncated,
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
}

impl Request {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n",
            self.method, self.path
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let length = match self.framing {
            Framing::Exact => Some(self.body.len()),
            Framing::ShortLength => Some(self.body.len() / 2),
            Framing::Truncated => Some(self.body.len() + 10),
            Framing::ChunkedGarbage => None,
        };
        match length {
            Some(n) => out.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes()),
            None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n"),
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// Every documented route as (method, path), `{…}` left to fill, and the
/// routes outside `/api`.
fn routes() -> Vec<(String, String)> {
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    let mut routes = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes.push(("POST".into(), "/webhooks/stripe".into()));
    for path in ["/healthz", "/readyz", "/metrics"] {
        routes.push(("GET".into(), path.into()));
    }
    routes
}

/// Every relation of the mirror (each type's and each child list's) with
/// the names of its filters: its typed columns and a child list's parent.
fn relations() -> Vec<(String, Vec<String>)> {
    let names = |columns: &[stripe_sync::registry::Column]| -> Vec<String> {
        columns.iter().map(|c| c.name.to_owned()).collect()
    };
    let mut relations = Vec::new();
    for r in RESOURCES {
        relations.push((r.relation.to_owned(), names(r.columns)));
        for child in r.children {
            let mut filters = names(child.columns);
            filters.push(child.parent_column.to_owned());
            relations.push((child.relation.to_owned(), filters));
        }
    }
    relations
}

/// `base`, one time in `1 + clean` with NUL, a byte that is never UTF-8, or
/// random bytes (percent-encoded) spliced in at any place.
fn hostile(base: BoxedStrategy<String>, clean: u8) -> impl Strategy<Value = String> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..5).prop_map(|bytes| {
        bytes
            .iter()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    });
    let splice = prop_oneof![
        Just("%00".to_owned()),
        Just("%FF".to_owned()),
        Just("%C3%28".to_owned()),
        bytes,
    ];
    (base, 0..=clean, splice, any::<proptest::sample::Index>()).prop_map(
        move |(base, mode, splice, at)| {
            // The bases are ASCII: every index is a character boundary.
            let at = at.index(base.len() + 1);
            if mode < clean {
                base
            } else {
                format!("{}{splice}{}", &base[..at], &base[at..])
            }
        },
    )
}

/// A parameter's value: numbers around every limit (i64's, Postgres's
/// timestamps', ours), times in RFC 3339 or nearly, words, cursors that
/// decode to anything (NUL included), sometimes made hostile.
fn parameter_value() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-300_000_000_000i64..300_000_000_000).prop_map(|n| n.to_string()),
        proptest::sample::select(vec![
            "10000000000000",
            "-99999999999999",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "99999999999999999999",
            "253402300799",
            "253402300800",
            "-62167219200",
            "-62167219201",
            "9224318016000",
            "-210866803200",
            "1764000000000",
            "0",
            "-0",
            "%2B1",
            "1e3",
            "0x10",
            "1.5",
            "NaN",
        ])
        .prop_map(str::to_owned),
    ];
    let time = "[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
        .prop_map(|t| t.replace('+', "%2B"));
    let word = prop_oneof![
        proptest::sample::select(vec![
            "true", "false", "platform", "acct_1", "acct_", "paid", "open", "usd",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z0-9_.-]{0,20}",
    ];
    let cursor = proptest::collection::vec("(\\PC|\\x00){0,8}", 0..4)
        .prop_map(|key| hex::encode(serde_json::to_vec(&key).unwrap()));
    hostile(prop_oneof![number, time, word, cursor].boxed(), 3)
}

/// A parameter's name from `names`, or another, maybe with a bracketed
/// range (or something like one), sometimes made hostile.
fn parameter_name(names: Vec<String>) -> impl Strategy<Value = String> {
    let base = prop_oneof![
        8 => proptest::sample::select(names),
        1 => "[a-z_]{1,12}",
    ];
    let range = prop_oneof![
        3 => Just(String::new()),
        3 => proptest::sample::select(vec!["[gt]", "[gte]", "[lt]", "[lte]"]).prop_map(str::to_owned),
        1 => proptest::sample::select(vec!["%5Bgt%5D", "[between]", "[", "[gte", "[]", "[lt][gt]"])
            .prop_map(str::to_owned),
    ];
    let name = (base, range).prop_map(|(base, range)| format!("{base}{range}"));
    hostile(name.boxed(), 7)
}

/// One to three `name=value` pairs, names from `names`.
fn parameters(names: Vec<String>) -> impl Strategy<Value = String> {
    let pair = (parameter_name(names), parameter_value())
        .prop_map(|(name, value)| format!("{name}={value}"));
    proptest::collection::vec(pair, 1..4).prop_map(|pairs| pairs.join("&"))
}

/// A request to the mirror, query included: any relation of the registry,
/// its own filters and the mirror's parameters mostly, so that most
/// requests get past the unknown-name check to the values.
fn mirror_path() -> impl Strategy<Value = String> {
    proptest::sample::select(relations()).prop_flat_map(|(relation, mut names)| {
        names.extend(["limit", "cursor", "account", "include_deleted"].map(str::to_owned));
        let id = hostile("(price|prod|in|cs|cus|il|si)_[A-Za-z0-9]{0,12}".boxed(), 2);
        prop_oneof![
            3 => parameters(names).prop_map({
                let relation = relation.clone();
                move |q| format!("/api/stripe/{relation}?{q}")
            }),
            1 => (id, proptest::option::of(parameter_value())).prop_map(move |(id, account)| {
                match account {
                    Some(account) => format!("/api/stripe/{relation}/{id}?account={account}"),
                    None => format!("/api/stripe/{relation}/{id}"),
                }
            }),
        ]
    })
}

/// Parameter names of every route, for the query strings of any.
fn every_parameter_name() -> Vec<String> {
    let mut names: Vec<String> = [
        "limit",
        "cursor",
        "account",
        "include_deleted",
        "email",
        "updated_since",
        "last",
    ]
    .map(str::to_owned)
    .into();
    names.extend(relations().into_iter().flat_map(|(_, names)| names));
    names.sort();
    names.dedup();
    names
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop_oneof![
        6 => proptest::sample::select(vec!["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]).prop_map(str::to_owned),
        1 => "[A-Za-z]{1,12}",
    ];
    // Mostly a documented route with its own method, so that requests get
    // past routing to the handlers; sometimes anything.
    let route = prop_oneof![
        8 => proptest::sample::select(routes()).prop_map(|r| (r, false)),
        2 => (method, proptest::sample::select(routes()).prop_map(|r| r.1)).prop_map(|r| (r, false)),
        1 => (Just("GET".to_owned()), "/[a-z0-9/_%.-]{0,40}").prop_map(|r| (r, false)),
        // The mirror's routes, authorised, with queries of their own: their
        // filters are what Postgres sees.
        4 => mirror_path().prop_map(|path| (("GET".to_owned(), path), true)),
    ];
    let id = prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "(cus|pi|re|cs|prod|in)_[A-Za-z0-9]{1,24}",
        "[A-Za-z0-9%._~-]{0,60}",
        hostile("(cus|pi|re|cs|prod|in|price)_[A-Za-z0-9]{0,12}".boxed(), 0),
    ];
    let relation = prop_oneof![
        4 => proptest::sample::select(relations()).prop_map(|(relation, _)| relation),
        1 => "[a-z_]{0,20}",
    ];
    let query = prop_oneof![
        1 => Just(String::new()),
        1 => "(limit=[0-9-]{1,5}|cursor=[A-Za-z0-9=_-]{0,30}|status=[a-z]{0,10}|last=[0-9]{1,6}|email=[a-z@.]{0,20})(&[a-z_]{1,10}=[A-Za-z0-9%]{0,10}){0,3}"
            .prop_map(|q| q.replace([' ', '#'], "%20")),
        1 => "[ -~]{0,40}".prop_map(|q| q.replace([' ', '#'], "%20")),
        4 => parameters(every_parameter_name()),
    ];
    let auth = prop_oneof![
        Just(None),
        Just(Some(API_TOKEN.to_owned())),
        Just(Some(ADMIN_TOKEN.to_owned())),
        "[ -~]{0,40}".prop_map(Some),
    ];
    let content_type = prop_oneof![
        Just(Some("application/json".to_owned())),
        Just(None),
        "[ -~]{0,30}".prop_map(Some),
    ];
    let body = prop_oneof![
        3 => json_body().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..2048),
        1 => Just(Vec::new()),
    ];
    let signature = prop_oneof![Just(0u8), Just(1), Just(2)];
    let idempotency_key = proptest::option::of("[A-Za-z0-9-]{1,300}");
    let framing = prop_oneof![
        8 => Just(Framing::Exact),
        1 => Just(Framing::ChunkedGarbage),
        1 => Just(Framing::ShortLength),
        1 => Just(Framing::Truncated),
    ];
    (
        (route, id, relation, query),
        (
            auth,
            content_type,
            body,
            signature,
            idempotency_key,
            framing,
        ),
    )
        .prop_map(
            |(
                (((method, path), authorised), id, relation, query),
                (auth, content_type, body, signature, key, framing),
            )| {
                let mut path = path.replace("{id}", &id).replace("{relation}", &relation);
                // The mirror's paths come with a query of their own.
                if !query.is_empty() && !path.contains('?') {
                    path = format!("{path}?{query}");
                }
                let auth = if authorised {
                    Some(API_TOKEN.to_owned())
                } else {
                    auth
                };
                let mut headers = Vec::new();
                if let Some(token) = auth {
                    headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
                }
                if let Some(ct) = content_type {
                    headers.push(("Content-Type".to_owned(), ct));
                }
                match signature {
                    1 => headers.push((
                        "Stripe-Signature".to_owned(),
                        sign(SECRET, stripe_sync::ingest::unix_now(), &body),
                    )),
                    2 => headers.push((
                        "Stripe-Signature".to_owned(),
                        format!("t={},v1=00", stripe_sync::ingest::unix_now()),
                    )),
                    _ => {}
                }
                if let Some(key) = key {
                    headers.push(("Idempotency-Key".to_owned(), key));
                }
                Request {
                    method,
                    path,
                    headers,
                    body,
                    framing,
                }
            },
        )
}

/// What became of one request.
enum Answer {
    Status(u16, String),
    /// serve closed the connection without answering.
    Closed,
    /// Neither an answer nor a close within 10 s of the request's end.
    Hung,
}

/// Sends `request` on a connection of its own, then shuts the sending side
/// when its framing is broken (so serve sees where the input ends).
fn send(port: u16, request: &Request) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("serve accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // serve may answer and close before reading a body it refuses.
    let _ = stream.write_all(&request.bytes());
    if !matches!(request.framing, Framing::Exact) {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if answer.is_empty() {
                    return Answer::Hung;
                }
                break;
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
    {
        Some(status) => Answer::Status(status, text),
        None => Answer::Closed,
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[test]
fn fuzz_a_live_serve_never_answers_5xx_nor_dies() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stack = runtime.block_on(Stack::start(Options {
        start_worker: false,
        ..Options::default()
    }));
    let port = free_port();
    let env = stack
        .serve_env()
        .with("LISTEN_ADDR", &format!("127.0.0.1:{port}"));
    let serve = spawn_binary(env!("CARGO_BIN_EXE_stripe-sync"), &["serve"], &env);
    runtime.block_on(crate::support::wait_for(
        Duration::from_secs(60),
        "serve ready",
        || async {
            let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    ));

    // Slow clients: half-sent requests held open through the campaign.
    let slow: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let partial = if i % 2 == 0 {
                "POST /webhooks/stripe HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"
            } else {
                "GET /api/cus"
            };
            s.write_all(partial.as_bytes()).unwrap();
            s
        })
        .collect();

    let answered = AtomicU32::new(0);
    let serve = Mutex::new(serve);
    runner()
        .run(&request(), |request| {
            match send(port, &request) {
                Answer::Status(status, text) => {
                    let stripe_away = status == 503 && text.contains("\"stripe_unavailable\"");
                    prop_assert!(
                        status < 500 || stripe_away,
                        "{status} for {request:?}:\n{text}"
                    );
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Answer::Closed => prop_assert!(
                    !matches!(request.framing, Framing::Exact),
                    "no answer to a well-framed request: {request:?}"
                ),
                Answer::Hung => prop_assert!(false, "serve hung on {request:?}"),
            }
            prop_assert!(
                serve.lock().unwrap().try_wait().unwrap().is_none(),
                "serve died on {request:?}"
            );
            Ok(())
        })
        .unwrap();
    let mut serve = serve.into_inner().unwrap();
    let rss = rss_mib(serve.id());
    let health = send(
        port,
        &Request {
            method: "GET".into(),
            path: "/healthz".into(),
            headers: vec![],
            body: vec![],
            framing: Framing::Exact,
        },
    );
    drop(slow);
    let _ = serve.kill();
    let _ = serve.wait();
    runtime.block_on(stack.stop());
    assert!(
        matches!(health, Answer::Status(200, _)),
        "serve still answers with 200 slow clients open"
    );
    assert!(
        rss <= RSS_LIMIT_MIB,
        "serve holds {rss:.1} MiB after the campaign"
    );
    let answered = answered.into_inner();
    assert!(
        answered > cases() / 2,
        "most requests were answered ({answered})"
    );
    report("live serve over HTTP", cases());
}
