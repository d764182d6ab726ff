//! A stateful Salesforce fake (no Salesforce is reachable from here), built
//! from Salesforce's REST API documentation for the calls the adapter
//! makes: the OAuth 2.0 client-credentials token endpoint, and Contact
//! upsert by external id, update, delete and retrieve under
//! `/services/data/v61.0/`. Errors come as Salesforce sends them
//! (`[{"message","errorCode","fields"}]`); `REQUEST_LIMIT_EXCEEDED`, 503s
//! and expired sessions are injected on demand. It counts every call, so
//! tests can say how many writes reached it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Filter;

pub const CLIENT_ID: &str = "3MVG9-test-client";
pub const CLIENT_SECRET: &str = "test-client-secret-0123456789";
pub const ORG_ID: &str = "00D000000000001EAA";
pub const EXTERNAL_ID_FIELD: &str = "StripeSync_Id__c";
const API_PREFIX: &str = "/services/data/v61.0/sobjects/Contact/";

/// A fault the next data call (not the token endpoint) answers with.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 403 `REQUEST_LIMIT_EXCEEDED`, doing nothing.
    RequestLimit,
    /// 503 `SERVER_UNAVAILABLE`, doing nothing.
    Unavailable,
}

/// One call as the fake saw it, with the status it answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    /// Everything answers 503 while set.
    down: bool,
    /// Tokens that still open a session.
    valid_tokens: Vec<String>,
    grants: usize,
    contacts: HashMap<String, Value>,
    next_id: u64,
    calls: Vec<Call>,
    /// Milliseconds; every write stamps `SystemModstamp` one later.
    clock: i64,
    /// This fake's own URL, the token answer's `instance_url`.
    base: String,
}

pub struct FakeSalesforce {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

type Reply = (StatusCode, Option<Value>);

impl FakeSalesforce {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            clock: 1_764_000_000_000,
            ..State::default()
        }));
        let shared = state.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method: Method,
                      path: warp::path::FullPath,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let mut state = shared.lock().unwrap();
                    let path = path.as_str().to_owned();
                    let (status, reply) = handle(&mut state, &method, &path, &headers, &body);
                    state.calls.push(Call {
                        method: method.to_string(),
                        path,
                        status: status.as_u16(),
                    });
                    let body = reply.map(|v| v.to_string()).unwrap_or_default();
                    warp::http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json;charset=UTF-8")
                        .body(body)
                        .unwrap()
                },
            );
        let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
        tokio::spawn(server);
        state.lock().unwrap().base = format!("http://{addr}");
        Self { addr, state }
    }

    /// `SALESFORCE_INSTANCE_URL` for the adapter.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The engine's environment for this fake.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SALESFORCE_INSTANCE_URL", self.base()),
            ("SALESFORCE_CLIENT_ID", CLIENT_ID.into()),
            ("SALESFORCE_CLIENT_SECRET", CLIENT_SECRET.into()),
            ("SALESFORCE_API_VERSION", "61.0".into()),
            ("SALESFORCE_EXTERNAL_ID_FIELD", EXTERNAL_ID_FIELD.into()),
        ]
    }

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Ends every session, as an admin revoking tokens or a timeout would.
    pub fn expire_sessions(&self) {
        self.state.lock().unwrap().valid_tokens.clear();
    }

    pub fn grants(&self) -> usize {
        self.state.lock().unwrap().grants
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls that changed a Contact (2xx writes).
    pub fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method != "GET" && c.path.starts_with(API_PREFIX) && c.status < 300)
            .collect()
    }

    /// The Contact whose external id is `local_id`, deleted or not.
    pub fn contact_of(&self, local_id: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .contacts
            .values()
            .find(|c| c[EXTERNAL_ID_FIELD] == local_id)
            .cloned()
    }
}

fn error(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Reply {
    (
        status,
        Some(json!([{"message": message, "errorCode": code, "fields": fields}])),
    )
}

fn handle(
    state: &mut State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    if state.down {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "down for maintenance",
            &[],
        );
    }
    if path == "/services/oauth2/token" && method == Method::POST {
        return grant(state, body);
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| state.valid_tokens.iter().any(|v| v == t)) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
            &[],
        );
    }
    match state.faults.pop_front() {
        Some(Fault::RequestLimit) => {
            return error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
                &[],
            )
        }
        Some(Fault::Unavailable) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_UNAVAILABLE",
                "try again",
                &[],
            )
        }
        None => {}
    }
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return not_found();
    };
    let fields: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "JSON_PARSER_ERROR",
                    "malformed JSON",
                    &[],
                )
            }
        }
    };
    // Path segments arrive percent-encoded, as on any HTTP server.
    let decoded: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (method.clone(), segments.as_slice()) {
        (Method::PATCH, [field, value]) => upsert(state, field, value, fields),
        (Method::PATCH, [id]) => update(state, id, fields),
        (Method::DELETE, [id]) => delete(state, id),
        (Method::GET, [id]) => match state.contacts.get(*id) {
            Some(c) if c["IsDeleted"] == false => (StatusCode::OK, Some(c.clone())),
            _ => not_found(),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "not supported",
            &[],
        ),
    }
}

fn grant(state: &mut State, body: &[u8]) -> Reply {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("client_credentials")
        || get("client_id") != Some(CLIENT_ID)
        || get("client_secret") != Some(CLIENT_SECRET)
    {
        return (
            StatusCode::BAD_REQUEST,
            Some(
                json!({"error": "invalid_client", "error_description": "invalid client credentials"}),
            ),
        );
    }
    state.grants += 1;
    let token = format!("{ORG_ID}!session-{}", state.grants);
    state.valid_tokens.push(token.clone());
    (
        StatusCode::OK,
        Some(json!({
            "access_token": token,
            "signature": "not-checked",
            "scope": "api",
            "instance_url": state.base,
            "id": format!("https://login.salesforce.com/id/{ORG_ID}/005000000000001AAA"),
            "token_type": "Bearer",
            "issued_at": state.clock.to_string(),
        })),
    )
}

/// What Salesforce checks of the Contact fields the adapter writes.
fn validate(contact: &Map<String, Value>, creating: bool) -> Result<(), Reply> {
    if let Some(Value::String(email)) = contact.get("Email") {
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !local.starts_with('.')
                && domain.contains('.')
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        });
        if !valid {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_EMAIL_ADDRESS",
                &format!("Email: invalid email address: {email}"),
                &["Email"],
            ));
        }
    }
    let last_name = contact.get("LastName");
    if (creating && last_name.is_none())
        || last_name.is_some_and(|v| v.as_str().is_none_or(|s| s.is_empty()))
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [LastName]",
            &["LastName"],
        ));
    }
    Ok(())
}

fn upsert(state: &mut State, field: &str, value: &str, fields: Map<String, Value>) -> Reply {
    if field != EXTERNAL_ID_FIELD {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Provided external ID field does not exist or is not accessible",
            &[],
        );
    }
    // A deleted Contact (in the recycle bin) is not matched: a new one is made.
    let existing = state
        .contacts
        .values()
        .find(|c| c[EXTERNAL_ID_FIELD] == value && c["IsDeleted"] == false)
        .and_then(|c| c["Id"].as_str().map(str::to_owned));
    match existing {
        Some(id) => match update(state, &id, fields) {
            (StatusCode::NO_CONTENT, _) => (
                StatusCode::OK,
                Some(json!({"id": id, "success": true, "errors": [], "created": false})),
            ),
            refused => refused,
        },
        None => {
            if let Err(refused) = validate(&fields, true) {
                return refused;
            }
            state.next_id += 1;
            state.clock += 1;
            let id = format!("003{:012}AAA", state.next_id);
            let mut contact = fields;
            contact.insert("Id".into(), json!(id));
            contact.insert(EXTERNAL_ID_FIELD.into(), json!(value));
            contact.insert("IsDeleted".into(), json!(false));
            contact.insert("SystemModstamp".into(), json!(state.clock));
            contact.insert("attributes".into(), json!({"type": "Contact"}));
            state.contacts.insert(id.clone(), Value::Object(contact));
            (
                StatusCode::CREATED,
                Some(json!({"id": id, "success": true, "errors": [], "created": true})),
            )
        }
    }
}

fn update(state: &mut State, id: &str, fields: Map<String, Value>) -> Reply {
    if let Err(refused) = validate(&fields, false) {
        return refused;
    }
    state.clock += 1;
    let clock = state.clock;
    match state.contacts.get_mut(id) {
        Some(Value::Object(contact)) if contact["IsDeleted"] == false => {
            contact.extend(fields);
            contact.insert("SystemModstamp".into(), json!(clock));
            (StatusCode::NO_CONTENT, None)
        }
        gone => not_live(gone.is_some()),
    }
}

/// Salesforce's answer for a record that is not live: deleted (in the
/// recycle bin) or never there.
fn not_live(deleted: bool) -> Reply {
    if deleted {
        error(
            StatusCode::NOT_FOUND,
            "ENTITY_IS_DELETED",
            "entity is deleted",
            &[],
        )
    } else {
        not_found()
    }
}

fn not_found() -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
        &[],
    )
}

fn delete(state: &mut State, id: &str) -> Reply {
    state.clock += 1;
    let clock = state.clock;
    match state.contacts.get_mut(id) {
        Some(contact) if contact["IsDeleted"] == false => {
            contact["IsDeleted"] = json!(true);
            contact["SystemModstamp"] = json!(clock);
            (StatusCode::NO_CONTENT, None)
        }
        gone => not_live(gone.is_some()),
    }
}
