//! An in-process Stripe fake for faults localstripe cannot produce: 429
//! with Retry-After, 500, a response lost after the write was done, and
//! permanent refusals. Unlike localstripe it honours Idempotency-Key (a
//! repeated key replays the first result), so it can tell whether retries
//! reuse their key. Only the customer calls the engine makes are modelled.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer 429 with this Retry-After (seconds), doing nothing.
    RateLimited(u64),
    /// Answer 500, doing nothing.
    ServerError,
    /// Do the write, then hold the answer longer than the client waits.
    DropResponse(Duration),
    /// Refuse for good with 400 and this message.
    Refuse(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub idempotency_key: Option<String>,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    customers: HashMap<String, Value>,
    replies: HashMap<String, (u16, Value)>,
    requests: Vec<Request>,
    created: usize,
}

pub struct FakeStripe {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeStripe {
    pub fn start(faults: Vec<Fault>) -> Self {
        let state = Arc::new(Mutex::new(State {
            faults: faults.into(),
            ..State::default()
        }));
        let shared = state.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(
                warp::body::form::<Vec<(String, String)>>()
                    .or(warp::any().map(Vec::new))
                    .unify(),
            )
            .and_then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      form: Vec<(String, String)>| {
                    let state = shared.clone();
                    async move {
                        Ok::<_, warp::Rejection>(
                            handle(
                                state,
                                method,
                                path.as_str().to_owned(),
                                query,
                                headers,
                                form,
                            )
                            .await,
                        )
                    }
                },
            );
        let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
        tokio::spawn(server);
        Self { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Customers actually created (replays excluded).
    pub fn created(&self) -> usize {
        self.state.lock().unwrap().created
    }

    pub fn customer(&self, id: &str) -> Option<Value> {
        self.state.lock().unwrap().customers.get(id).cloned()
    }

    /// Seeds a customer directly (no request recorded).
    pub fn seed_customer(&self, created: i64, fields: Value) -> String {
        let mut s = self.state.lock().unwrap();
        s.created += 1;
        let id = format!("cus_fake{}", s.created);
        let mut c = json!({"id": id, "object": "customer", "created": created, "metadata": {}});
        for (k, v) in fields.as_object().unwrap() {
            c[k] = v.clone();
        }
        s.customers.insert(id.clone(), c);
        id
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    form: Vec<(String, String)>,
) -> Response<String> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body, hold) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Request {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            idempotency_key: key.clone(),
            at: std::time::Instant::now(),
        });
        if let Some((status, body)) = key.as_ref().and_then(|k| s.replies.get(k)).cloned() {
            (status, body, None) // an idempotent replay
        } else {
            match s.faults.pop_front() {
                Some(Fault::RateLimited(secs)) => {
                    return Response::builder()
                        .status(429)
                        .header("Retry-After", secs.to_string())
                        .body(json!({"error": {"message": "Too many requests"}}).to_string())
                        .unwrap()
                }
                Some(Fault::ServerError) => {
                    return Response::builder().status(500).body("{}".into()).unwrap()
                }
                Some(Fault::Refuse(message)) => {
                    let body =
                        json!({"error": {"type": "invalid_request_error", "message": message}});
                    if let Some(k) = &key {
                        s.replies.insert(k.clone(), (400, body.clone()));
                    }
                    (400, body, None)
                }
                Some(Fault::DropResponse(hold)) => {
                    let (status, body) = apply(&mut s, &method, &path, &form);
                    if let Some(k) = &key {
                        s.replies.insert(k.clone(), (status, body.clone()));
                    }
                    (status, body, Some(hold))
                }
                None if method == Method::GET && path == "/v1/customers" => {
                    let (status, body) = list(&s, &query);
                    (status, body, None)
                }
                None => {
                    let (status, body) = apply(&mut s, &method, &path, &form);
                    if let (Some(k), true) = (&key, method != Method::GET) {
                        s.replies.insert(k.clone(), (status, body.clone()));
                    }
                    (status, body, None)
                }
            }
        }
    };
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(body.to_string())
        .unwrap()
}

fn apply(s: &mut State, method: &Method, path: &str, form: &[(String, String)]) -> (u16, Value) {
    let id = path.strip_prefix("/v1/customers/").map(str::to_owned);
    match (method.as_str(), id) {
        ("POST", None) => {
            s.created += 1;
            let id = format!("cus_fake{}", s.created);
            let mut c =
                json!({"id": id, "object": "customer", "created": 1_700_000_000, "metadata": {}});
            merge(&mut c, form);
            s.customers.insert(id, c.clone());
            (200, c)
        }
        ("POST", Some(id)) => match s.customers.get_mut(&id) {
            Some(c) => {
                merge(c, form);
                (200, c.clone())
            }
            None => (
                404,
                json!({"error": {"code": "resource_missing", "message": format!("No such customer: '{id}'")}}),
            ),
        },
        ("DELETE", Some(id)) => match s.customers.remove(&id) {
            Some(_) => (
                200,
                json!({"id": id, "object": "customer", "deleted": true}),
            ),
            None => (
                404,
                json!({"error": {"code": "resource_missing", "message": format!("No such customer: '{id}'")}}),
            ),
        },
        ("GET", Some(id)) => match s.customers.get(&id) {
            Some(c) => (200, c.clone()),
            None => (
                404,
                json!({"error": {"code": "resource_missing", "message": format!("No such customer: '{id}'")}}),
            ),
        },
        _ => (404, json!({"error": {"message": "unknown route"}})),
    }
}

/// Newest first, like Stripe (localstripe is oldest first): clients must
/// not depend on either. Honours limit, starting_after and created[gte].
fn list(s: &State, query: &str) -> (u16, Value) {
    let params: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap_or_default();
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    let since: i64 = params
        .get("created[gte]")
        .and_then(|c| c.parse().ok())
        .unwrap_or(i64::MIN);
    let mut all: Vec<&Value> = s
        .customers
        .values()
        .filter(|c| c["created"].as_i64().unwrap_or(0) >= since)
        .collect();
    let seq = |c: &Value| {
        c["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("cus_fake")
            .parse::<u64>()
            .unwrap()
    };
    all.sort_by_key(|c| std::cmp::Reverse(seq(c)));
    let start = match params.get("starting_after") {
        Some(after) => match all.iter().position(|c| c["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => return (400, json!({"error": {"message": "No such object"}})),
        },
        None => 0,
    };
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|c| (*c).clone())
        .collect();
    let has_more = start + page.len() < all.len();
    (
        200,
        json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/customers"}),
    )
}

fn merge(customer: &mut Value, form: &[(String, String)]) {
    for (k, v) in form {
        if let Some(meta_key) = k
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            if v.is_empty() {
                customer["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove(meta_key);
            } else {
                customer["metadata"][meta_key] = json!(v);
            }
        } else {
            customer[k] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
}
