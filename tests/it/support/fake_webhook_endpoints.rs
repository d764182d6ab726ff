//! Stripe's webhook endpoint API, faked from its reference: neither
//! localstripe nor stripe-stateful-mock serves `/v1/webhook_endpoints`.
//! It enforces what Stripe does: `url` and `enabled_events[]` required,
//! every event type one Stripe knows (or `*`), unknown parameters refused
//! (an update cannot change `api_version` or `connect`), at most 16
//! endpoints, a signing secret shown only in the create's answer, lists
//! newest first, and idempotency keys replayed (the same request) or
//! refused (another request under a used key). It can lose the answer to
//! a create that it carried out (a 503 after the work), which a real
//! Stripe cannot be made to do on purpose.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use warp::http::{HeaderMap, Response};
use warp::Filter;

use stripe_sync::stripe::event_types;

/// Stripe's limit of endpoints per account and mode.
const MAX_ENDPOINTS: usize = 16;

#[derive(Default)]
struct State {
    /// In creation order.
    endpoints: Vec<Value>,
    /// key -> (the request, the answer)
    keys: HashMap<String, (String, u16, Value)>,
    lose_next_create_answer: bool,
    posts: usize,
    next: u64,
}

#[derive(Clone)]
pub struct FakeEndpoints {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeEndpoints {
    pub fn start() -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let list = warp::get()
            .and(warp::path!("v1" / "webhook_endpoints"))
            .and(warp::query::<HashMap<String, String>>())
            .map(move |q: HashMap<String, String>| reply(list(&shared, &q)));
        let shared = state.clone();
        let post = warp::post()
            .and(warp::path("v1"))
            .and(warp::path("webhook_endpoints"))
            .and(warp::path::tail())
            .and(warp::header::headers_cloned())
            .and(warp::body::form::<Vec<(String, String)>>())
            .map(
                move |tail: warp::path::Tail, headers: HeaderMap, form: Vec<(String, String)>| {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    reply(post(&shared, tail.as_str(), key, form))
                },
            );
        let (addr, server) = warp::serve(list.or(post).unify()).bind_ephemeral(([127, 0, 0, 1], 0));
        tokio::spawn(server);
        Self { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every endpoint as Stripe would list it.
    pub fn endpoints(&self) -> Vec<Value> {
        self.state.lock().unwrap().endpoints.clone()
    }

    /// POSTs answered (whatever the answer).
    pub fn posts(&self) -> usize {
        self.state.lock().unwrap().posts
    }

    /// A person changes an endpoint in the dashboard.
    pub fn edit(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        let endpoint = s.endpoints.iter_mut().find(|e| e["id"] == id).unwrap();
        change(endpoint);
    }

    /// An endpoint made elsewhere (the dashboard), returning its id.
    pub fn add(&self, url: &str, events: &[&str], api_version: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let id = new_id(&mut s, "we_");
        s.endpoints.push(json!({
            "id": id, "object": "webhook_endpoint", "api_version": api_version,
            "application": null, "created": 1_760_000_000, "description": null,
            "enabled_events": events, "livemode": false, "metadata": {},
            "status": "enabled", "url": url,
        }));
        id
    }

    /// The next create is carried out, but answered 503.
    pub fn lose_next_create_answer(&self) {
        self.state.lock().unwrap().lose_next_create_answer = true;
    }
}

fn reply((status, body): (u16, Value)) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap()
}

fn new_id(s: &mut State, prefix: &str) -> String {
    s.next += 1;
    format!("{prefix}{:016}", s.next)
}

fn invalid(message: impl Into<String>, param: &str) -> (u16, Value) {
    (
        400,
        json!({"error": {"type": "invalid_request_error", "message": message.into(), "param": param}}),
    )
}

fn list(state: &Mutex<State>, q: &HashMap<String, String>) -> (u16, Value) {
    let s = state.lock().unwrap();
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let newest_first: Vec<&Value> = s.endpoints.iter().rev().collect();
    let start = match q.get("starting_after") {
        Some(after) => match newest_first.iter().position(|e| e["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => return invalid("No such webhook endpoint", "starting_after"),
        },
        None => 0,
    };
    let page: Vec<Value> = newest_first
        .iter()
        .skip(start)
        .take(limit)
        .map(|e| (*e).clone())
        .collect();
    let has_more = start + page.len() < newest_first.len();
    (
        200,
        json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/webhook_endpoints"}),
    )
}

fn post(
    state: &Mutex<State>,
    tail: &str,
    key: Option<String>,
    form: Vec<(String, String)>,
) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    s.posts += 1;
    let request = format!("{tail}?{}", serde_urlencoded::to_string(&form).unwrap());
    if let Some(key) = &key {
        if let Some((asked, status, body)) = s.keys.get(key) {
            if *asked == request {
                return (*status, body.clone());
            }
            return (
                400,
                json!({"error": {"type": "idempotency_error",
                    "message": format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request.")}}),
            );
        }
    }
    let (status, body) = if tail.is_empty() {
        create(&mut s, &form)
    } else {
        update(&mut s, tail, &form)
    };
    if let Some(key) = key {
        if status < 500 {
            s.keys.insert(key, (request, status, body.clone()));
        }
    }
    if tail.is_empty() && status == 200 && std::mem::take(&mut s.lose_next_create_answer) {
        return (
            503,
            json!({"error": {"type": "api_error", "message": "lost"}}),
        );
    }
    (status, body)
}

/// The event types, checked; `Err` is Stripe's answer.
fn events(form: &[(String, String)]) -> Result<Option<Vec<String>>, (u16, Value)> {
    let events: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "enabled_events[]")
        .map(|(_, v)| v.clone())
        .collect();
    if events.is_empty() {
        return Ok(None);
    }
    for (n, e) in events.iter().enumerate() {
        if e != "*" && !event_types::ALL.contains(&e.as_str()) {
            return Err(invalid(
                format!("Invalid enabled_events[{n}]: must be one of …, got {e:?}"),
                &format!("enabled_events[{n}]"),
            ));
        }
    }
    Ok(Some(events))
}

fn unknown(form: &[(String, String)], allowed: &[&str]) -> Option<(u16, Value)> {
    form.iter()
        .map(|(k, _)| k)
        .find(|k| !k.starts_with("metadata[") && !allowed.contains(&k.as_str()))
        .map(|k| invalid(format!("Received unknown parameter: {k}"), k))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn metadata(form: &[(String, String)]) -> serde_json::Map<String, Value> {
    form.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), json!(v)))
        })
        .collect()
}

fn create(s: &mut State, form: &[(String, String)]) -> (u16, Value) {
    let allowed = [
        "url",
        "enabled_events[]",
        "api_version",
        "connect",
        "description",
    ];
    if let Some(refused) = unknown(form, &allowed) {
        return refused;
    }
    let Some(url) = field(form, "url") else {
        return invalid("Missing required param: url.", "url");
    };
    let events = match events(form) {
        Ok(Some(events)) => events,
        Ok(None) => return invalid("Missing required param: enabled_events.", "enabled_events"),
        Err(refused) => return refused,
    };
    if s.endpoints.len() >= MAX_ENDPOINTS {
        return invalid(
            format!("You have reached the maximum of {MAX_ENDPOINTS} test webhook endpoints."),
            "url",
        );
    }
    let id = new_id(s, "we_");
    let endpoint = json!({
        "id": id, "object": "webhook_endpoint",
        "api_version": field(form, "api_version"),
        "application": (field(form, "connect") == Some("true")).then_some("ca_fake"),
        "created": 1_760_000_000, "description": field(form, "description"),
        "enabled_events": events, "livemode": false, "metadata": metadata(form),
        "status": "enabled", "url": url,
    });
    s.endpoints.push(endpoint.clone());
    let mut answer = endpoint;
    answer["secret"] = json!(format!("whsec_{}", uuid::Uuid::new_v4().simple()));
    (200, answer)
}

fn update(s: &mut State, id: &str, form: &[(String, String)]) -> (u16, Value) {
    let allowed = ["url", "enabled_events[]", "description", "disabled"];
    if let Some(refused) = unknown(form, &allowed) {
        return refused;
    }
    let events = match events(form) {
        Ok(events) => events,
        Err(refused) => return refused,
    };
    let Some(endpoint) = s.endpoints.iter_mut().find(|e| e["id"] == id) else {
        return (
            404,
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
                "message": format!("No such webhook endpoint: '{id}'")}}),
        );
    };
    if let Some(events) = events {
        endpoint["enabled_events"] = json!(events);
    }
    if let Some(url) = field(form, "url") {
        endpoint["url"] = json!(url);
    }
    match field(form, "disabled") {
        Some("true") => endpoint["status"] = json!("disabled"),
        Some("false") => endpoint["status"] = json!("enabled"),
        _ => {}
    }
    for (k, v) in metadata(form) {
        endpoint["metadata"][k] = v;
    }
    (200, endpoint.clone())
}
