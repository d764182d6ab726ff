//! A stateful Salesforce fake (no Salesforce is reachable from here), built
//! from Salesforce's REST API documentation for the calls the adapter
//! makes: the OAuth 2.0 client-credentials token endpoint; Contact upsert
//! by external id, update, delete and retrieve under
//! `/services/data/v61.0/`, alone or as the subrequests of a Composite
//! request; and SOQL `query`/`queryAll` over the Contacts
//! (the subset of SOQL the poller sends: a field list, `AND`/`OR`/parens
//! over comparisons of `SystemModstamp`, `Id` and `IsDeleted`, `ORDER BY`,
//! `LIMIT`). Every write stamps `SystemModstamp` and `LastModifiedById`
//! (the integration user's for API calls, a person's for the edits tests
//! make "in Salesforce"). As in real orgs, the stamp has whole-second
//! precision (the API returns `.000` milliseconds): two writes in one
//! second carry the same stamp. Errors come
//! as Salesforce sends them (`[{"message","errorCode","fields"}]`);
//! `REQUEST_LIMIT_EXCEEDED`, 503s and expired sessions are injected on
//! demand. It counts every call, so tests can say how many writes and
//! queries reached it, and keeps every change of a field in the order it
//! was made, so the chaos soak can tell which write of a field was last.

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
/// The user the token endpoint's identity URL names: the adapter's writes.
pub const INTEGRATION_USER: &str = "005000000000001AAA";
/// Whoever edits Contacts in Salesforce's UI in the tests.
pub const PERSON: &str = "005000000000002AAA";
const API_PREFIX: &str = "/services/data/v61.0/sobjects/Contact/";
const DATA_PREFIX: &str = "/services/data/v61.0/";

/// A fault the next data call (not the token endpoint) answers with.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 403 `REQUEST_LIMIT_EXCEEDED`, doing nothing.
    RequestLimit,
    /// 503 `SERVER_UNAVAILABLE`, doing nothing.
    Unavailable,
}

/// One change of a Contact field, in the order the fake made them: what a
/// later write superseded cannot be told from whole-second stamps. Read
/// by the chaos soak (`benches/chaos/salesforce.rs`), not by the tests.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct FieldWrite {
    pub contact_id: String,
    pub field: String,
    pub value: Value,
    /// `LastModifiedById` of the write: [`INTEGRATION_USER`] or a person.
    pub user: String,
    /// Its `SystemModstamp`, in milliseconds.
    pub stamp: i64,
    /// When it was made, to the millisecond.
    pub at: i64,
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
    /// Every data call answers 403 `REQUEST_LIMIT_EXCEEDED` while set, as
    /// an org past its daily API allowance does.
    limited: bool,
    #[allow(dead_code)]
    history: Vec<FieldWrite>,
    /// Queries still answered before they answer 503, when set.
    query_budget: Option<usize>,
    /// Composite requests answered.
    composites: usize,
    /// Tokens that still open a session.
    valid_tokens: Vec<String>,
    grants: usize,
    contacts: HashMap<String, Value>,
    next_id: u64,
    calls: Vec<Call>,
    /// The last `SystemModstamp` given, in milliseconds (a whole second).
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
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let mut state = shared.lock().unwrap();
                    let path = path.as_str().to_owned();
                    let (status, reply) =
                        handle(&mut state, &method, &path, &query, &headers, &body);
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

    /// 403 `REQUEST_LIMIT_EXCEEDED` to every data call while set.
    #[allow(dead_code)]
    pub fn set_request_limited(&self, limited: bool) {
        self.state.lock().unwrap().limited = limited;
    }

    /// Every change of a Contact field so far, oldest first.
    #[allow(dead_code)]
    pub fn history(&self) -> Vec<FieldWrite> {
        self.state.lock().unwrap().history.clone()
    }

    /// Every Contact, deleted ones too.
    #[allow(dead_code)]
    pub fn contacts(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .contacts
            .values()
            .cloned()
            .collect()
    }

    /// Composite requests answered (their subrequests are in [`Self::calls`]).
    pub fn composites(&self) -> usize {
        self.state.lock().unwrap().composites
    }

    /// Answers `n` more queries, then 503 to every one (`None`: no limit).
    pub fn limit_queries(&self, n: Option<usize>) {
        self.state.lock().unwrap().query_budget = n;
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

    /// Calls answered with `status`.
    pub fn answered(&self, status: u16) -> usize {
        self.calls().iter().filter(|c| c.status == status).count()
    }

    /// Calls that changed a Contact (2xx writes).
    pub fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method != "GET" && c.path.starts_with(API_PREFIX) && c.status < 300)
            .collect()
    }

    /// A person creates a Contact in Salesforce; its id.
    pub fn create_as_person(&self, fields: Value) -> String {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("003{:012}AAA", state.next_id);
        let mut contact = fields.as_object().cloned().unwrap();
        contact.insert("Id".into(), json!(id));
        contact.insert("IsDeleted".into(), json!(false));
        contact.insert("attributes".into(), json!({"type": "Contact"}));
        stamp(&mut state, &mut contact, PERSON);
        state.contacts.insert(id.clone(), Value::Object(contact));
        id
    }

    /// A person edits a Contact in Salesforce; the record as it is after.
    pub fn edit_as_person(&self, id: &str, fields: Value) -> Value {
        let mut state = self.state.lock().unwrap();
        let mut contact = state.contacts[id].as_object().cloned().unwrap();
        assert_eq!(contact["IsDeleted"], false, "{id} is deleted");
        contact.extend(fields.as_object().cloned().unwrap());
        stamp(&mut state, &mut contact, PERSON);
        let record = Value::Object(contact);
        state.contacts.insert(id.to_owned(), record.clone());
        record
    }

    /// A person deletes a Contact (it goes to the recycle bin).
    pub fn delete_as_person(&self, id: &str) {
        self.edit_as_person(id, json!({}));
        let mut state = self.state.lock().unwrap();
        state.contacts.get_mut(id).unwrap()["IsDeleted"] = json!(true);
    }

    /// The Contact with record id `id`.
    pub fn contact(&self, id: &str) -> Option<Value> {
        self.state.lock().unwrap().contacts.get(id).cloned()
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

/// Stamps a write: `SystemModstamp` (the current whole second, as
/// Salesforce's own; never behind an earlier stamp) and who made it.
fn stamp(state: &mut State, contact: &mut Map<String, Value>, user: &str) {
    // A record holds every field, `null` when empty, as the REST API
    // returns it.
    for field in [
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "Description",
        EXTERNAL_ID_FIELD,
    ] {
        contact.entry(field).or_insert(Value::Null);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    state.clock = (now - now % 1000).max(state.clock);
    let at = chrono::DateTime::from_timestamp_millis(state.clock).unwrap();
    contact.insert(
        "SystemModstamp".into(),
        json!(at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()),
    );
    contact.insert("LastModifiedById".into(), json!(user));
    let id = contact["Id"].as_str().unwrap_or_default().to_owned();
    let before = state.contacts.get(&id).and_then(Value::as_object);
    let mut changed = Vec::new();
    for field in [
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "Description",
        "IsDeleted",
    ] {
        let value = contact.get(field).cloned().unwrap_or(Value::Null);
        let old = before.and_then(|b| b.get(field)).unwrap_or(&Value::Null);
        if &value != old {
            changed.push(FieldWrite {
                contact_id: id.clone(),
                field: field.to_owned(),
                value,
                user: user.to_owned(),
                stamp: state.clock,
                at: now,
            });
        }
    }
    state.history.extend(changed);
}

fn handle(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &str,
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
    if state.limited {
        return error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
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
    if method == Method::GET && path.starts_with("/services/data/v61.0/query") {
        match &mut state.query_budget {
            Some(0) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVER_UNAVAILABLE",
                    "try again",
                    &[],
                )
            }
            Some(n) => *n -= 1,
            None => {}
        }
    }
    if method == Method::GET {
        match path.strip_prefix(DATA_PREFIX) {
            Some("queryAll") => return soql::answer(state, query, true),
            Some("query") => return soql::answer(state, query, false),
            _ => {}
        }
    }
    if method == Method::POST && path == "/services/data/v61.0/composite" {
        return composite(state, body);
    }
    sobject_call(state, method, path, body)
}

/// A Contact call: upsert by external id, update, delete, retrieve.
fn sobject_call(state: &mut State, method: &Method, path: &str, body: &[u8]) -> Reply {
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

/// The Composite API (`allOrNone: false` only): each subrequest is made in
/// order as if called alone, and logged as a call of its own.
fn composite(state: &mut State, body: &[u8]) -> Reply {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(subrequests) = request["compositeRequest"].as_array() else {
        return error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "no compositeRequest",
            &[],
        );
    };
    if subrequests.len() > 25 || request["allOrNone"] != false {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "at most 25 subrequests, allOrNone false in this fake",
            &[],
        );
    }
    state.composites += 1;
    let mut responses = Vec::new();
    for sub in subrequests {
        let method = sub["method"]
            .as_str()
            .and_then(|m| m.parse::<Method>().ok())
            .unwrap_or(Method::GET);
        let url = sub["url"].as_str().unwrap_or_default().to_owned();
        let body = match sub.get("body") {
            Some(b) => serde_json::to_vec(b).unwrap(),
            None => Vec::new(),
        };
        let (status, reply) = sobject_call(state, &method, &url, &body);
        state.calls.push(Call {
            method: method.to_string(),
            path: url,
            status: status.as_u16(),
        });
        responses.push(json!({
            "body": reply,
            "httpHeaders": {},
            "httpStatusCode": status.as_u16(),
            "referenceId": sub["referenceId"],
        }));
    }
    (
        StatusCode::OK,
        Some(json!({"compositeResponse": responses})),
    )
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
            "id": format!("https://login.salesforce.com/id/{ORG_ID}/{INTEGRATION_USER}"),
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
            let id = format!("003{:012}AAA", state.next_id);
            let mut contact = fields;
            contact.insert("Id".into(), json!(id));
            contact.insert(EXTERNAL_ID_FIELD.into(), json!(value));
            contact.insert("IsDeleted".into(), json!(false));
            contact.insert("attributes".into(), json!({"type": "Contact"}));
            stamp(state, &mut contact, INTEGRATION_USER);
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
    match state.contacts.get(id).and_then(Value::as_object).cloned() {
        Some(mut contact) if contact["IsDeleted"] == false => {
            contact.extend(fields);
            stamp(state, &mut contact, INTEGRATION_USER);
            state.contacts.insert(id.to_owned(), Value::Object(contact));
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
    match state.contacts.get(id).and_then(Value::as_object).cloned() {
        Some(mut contact) if contact["IsDeleted"] == false => {
            contact.insert("IsDeleted".into(), json!(true));
            stamp(state, &mut contact, INTEGRATION_USER);
            state.contacts.insert(id.to_owned(), Value::Object(contact));
            (StatusCode::NO_CONTENT, None)
        }
        gone => not_live(gone.is_some()),
    }
}

mod soql;
