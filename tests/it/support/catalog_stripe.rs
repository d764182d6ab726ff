//! A fixture-backed Stripe fake for the catalog: neither localstripe nor
//! stripe-stateful-mock has checkout sessions, payment links, invoice
//! payments, entitlements or most other registered types, nor nested list
//! endpoints, so this stands in for Stripe's read API where they fall short
//! (and says so in each test that uses it).
//!
//! It serves what a test seeds, per account (`Stripe-Account`): retrieve
//! `GET /v1/{path}/{id}`, lists `GET /v1/{path}` newest first with `limit`,
//! `starting_after`, `created` bounds (refused, as Stripe does, on a list that
//! does not take them) and equality filters (`customer=…`, `subscription=…`),
//! nested lists `GET /v1/{path}/{id}/{sub}`, and the types kept under a
//! parent at `GET /v1/{parent}/{parent id}/{path}` (seeded at that path).
//! A missing object of a
//! known collection is 404 `resource_missing`, as Stripe answers (a
//! connected account the platform cannot see is 403, as Stripe answers
//! that); an unknown path is 404 without a code. Faults can be queued per object.
//! It also creates checkout sessions (`POST /v1/checkout/sessions`, from
//! Stripe's example session), recording the form and `Idempotency-Key`.
//!
//! Several platforms: each key registered with [`CatalogStripe::platform_key`]
//! reads its own platform's objects (seeded under the platform's `acct_…`
//! id), and a connected account registered with [`CatalogStripe::connect`]
//! only with its own platform's key: another's is answered 403, as Stripe
//! answers a key that has no access to the account.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use diesel::prelude::*;
use serde_json::{json, Value};
use warp::http::{HeaderMap, Response};
use warp::Filter;

use stripe_sync::stripe::PLATFORM_ACCOUNT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally (to put a fault on a later request).
    Pass,
    /// 404 without `resource_missing`: what a wrong base URL or a proxy
    /// answers. Must never read as a delete.
    PlainNotFound,
    /// 403, as Stripe answers a connected account's request once the
    /// platform lost access to it.
    Forbidden,
    /// 403 for a key without the permission (a restricted key): says
    /// nothing about the object.
    MissingPermission,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub account: String,
    /// The platform whose key made the call (`platform` for a key not
    /// registered with [`CatalogStripe::platform_key`]).
    pub platform: String,
    pub path: String,
    /// A POST's form fields.
    pub form: Vec<(String, String)>,
    /// A GET's query string, as sent.
    pub query: String,
    pub idempotency_key: Option<String>,
}

/// Watches a database while Stripe is being called: a call made while one
/// of the engine's connections sits inside a transaction is counted.
struct TransactionWatch {
    conn: diesel::PgConnection,
    database: String,
}

#[derive(QueryableByName)]
struct Open {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(Default)]
struct State {
    watch: Option<TransactionWatch>,
    /// Calls answered while a transaction of the watched database was open.
    calls_in_transaction: usize,
    /// (account, collection path) -> id -> object
    objects: HashMap<(String, String), HashMap<String, Value>>,
    /// (account, "{path}/{id}/{sub}") -> items, in list order
    nested: HashMap<(String, String), Vec<Value>>,
    /// path (as requested) -> faults to answer first
    faults: HashMap<String, VecDeque<Fault>>,
    calls: Vec<Call>,
    /// Connected accounts that revoked our access.
    revoked: Vec<String>,
    /// API key -> the platform account it belongs to.
    platform_keys: HashMap<String, String>,
    /// Connected account -> the platform it is connected to (the default
    /// one when absent).
    connected_to: HashMap<String, String>,
}

impl State {
    /// Whose key made a request, and which account it reads: the header's,
    /// or the key's platform's own.
    fn caller(&self, headers: &HeaderMap) -> (String, String) {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let key = text("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_default();
        let platform = self
            .platform_keys
            .get(key)
            .cloned()
            .unwrap_or_else(|| PLATFORM_ACCOUNT.to_owned());
        let account = text("stripe-account").map_or_else(|| platform.clone(), str::to_owned);
        (platform, account)
    }

    /// Whether the calling platform may act for `account`.
    fn reaches(&self, platform: &str, account: &str) -> bool {
        account == platform
            || self
                .connected_to
                .get(account)
                .map_or(platform == PLATFORM_ACCOUNT, |p| p == platform)
    }
}

#[derive(Clone)]
pub struct CatalogStripe {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl CatalogStripe {
    pub fn start() -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let route = warp::get()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .map(
                move |path: warp::path::FullPath, query: String, headers: HeaderMap| {
                    let (platform, account) = shared.lock().unwrap().caller(&headers);
                    let (status, body) =
                        answer(&shared, &platform, &account, path.as_str(), &query);
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .unwrap()
                },
            );
        let shared = state.clone();
        let create = warp::post()
            .and(warp::path!("v1" / "checkout" / "sessions"))
            .and(warp::header::headers_cloned())
            .and(warp::body::form::<Vec<(String, String)>>())
            .map(move |headers: HeaderMap, form: Vec<(String, String)>| {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (platform, account) = shared.lock().unwrap().caller(&headers);
                let session = create_session(
                    &shared,
                    &platform,
                    &account,
                    form,
                    header("idempotency-key"),
                );
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(session.to_string())
                    .unwrap()
            });
        let route = route.or(create).unify();
        let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
        tokio::spawn(server);
        Self { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests made with `key` are the platform `account`'s: its own
    /// objects are those seeded under `account`.
    pub fn platform_key(&self, key: &str, account: &str) {
        self.state
            .lock()
            .unwrap()
            .platform_keys
            .insert(key.to_owned(), account.to_owned());
    }

    /// `connected` is connected to `platform`: only that platform's key
    /// reaches it.
    pub fn connect(&self, connected: &str, platform: &str) {
        self.state
            .lock()
            .unwrap()
            .connected_to
            .insert(connected.to_owned(), platform.to_owned());
    }

    /// Stores (or replaces) an object under `path` on `account`.
    pub fn put(&self, account: &str, path: &str, object: Value) {
        let id = object["id"]
            .as_str()
            .expect("an object with an id")
            .to_owned();
        self.state
            .lock()
            .unwrap()
            .objects
            .entry((account.to_owned(), path.to_owned()))
            .or_default()
            .insert(id, object);
    }

    /// Deletes object `id` under `path` on `account`, as Stripe does: it
    /// is no longer listed and reading it is `resource_missing`.
    pub fn remove(&self, account: &str, path: &str, id: &str) {
        if let Some(objects) = self
            .state
            .lock()
            .unwrap()
            .objects
            .get_mut(&(account.to_owned(), path.to_owned()))
        {
            objects.remove(id);
        }
    }

    /// The connected account revokes our access, as deauthorizing does:
    /// the platform can no longer read it, and every request made on its
    /// behalf (`Stripe-Account`) is answered 403, as Stripe answers them.
    pub fn deauthorize(&self, account: &str) {
        self.remove(PLATFORM_ACCOUNT, "accounts", account);
        self.state.lock().unwrap().revoked.push(account.to_owned());
    }

    /// The connected account grants access again (`account` is its object).
    pub fn reauthorize(&self, account: &str, object: Value) {
        self.state.lock().unwrap().revoked.retain(|r| r != account);
        self.put(PLATFORM_ACCOUNT, "accounts", object);
    }

    /// Serves `items` at `/v1/{path}/{id}/{sub}` on `account`.
    pub fn put_nested(&self, account: &str, path: &str, id: &str, sub: &str, items: Vec<Value>) {
        self.state
            .lock()
            .unwrap()
            .nested
            .insert((account.to_owned(), format!("{path}/{id}/{sub}")), items);
    }

    /// Serves `items` as `child` of parent `id` (at `path`) on `account`,
    /// where Stripe lists them: nested under the parent, or in a collection
    /// filtered by the parent (each item then names it, as Stripe's do).
    pub fn put_children(
        &self,
        account: &str,
        path: &str,
        id: &str,
        child: &stripe_sync::registry::Child,
        items: Vec<Value>,
    ) {
        match child.source {
            stripe_sync::registry::ChildSource::Nested(sub) => {
                self.put_nested(account, path, id, sub, items)
            }
            stripe_sync::registry::ChildSource::Filtered {
                path: collection,
                param,
            } => {
                for mut item in items {
                    item[param] = json!(id);
                    self.put(account, collection, item);
                }
            }
        }
    }

    /// Answers the next request for `/v1/{path}` with `fault` first.
    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(format!("/v1/{path}"))
            .or_default()
            .push_back(fault);
    }

    /// From now on, counts the calls made while a connection to
    /// `database` (at `url`) is inside a transaction.
    pub fn watch_transactions(&self, url: &str, database: &str) {
        self.state.lock().unwrap().watch = Some(TransactionWatch {
            conn: diesel::PgConnection::establish(url).unwrap(),
            database: database.to_owned(),
        });
    }

    pub fn calls_in_transaction(&self) -> usize {
        self.state.lock().unwrap().calls_in_transaction
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }
}

fn missing(what: &str) -> (u16, Value) {
    (
        404,
        json!({"error": {"code": "resource_missing", "type": "invalid_request_error",
                         "message": format!("No such object: '{what}'")}}),
    )
}

fn answer(
    state: &Mutex<State>,
    platform: &str,
    account: &str,
    path: &str,
    query: &str,
) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    s.calls.push(Call {
        account: account.to_owned(),
        platform: platform.to_owned(),
        path: path.to_owned(),
        form: Vec::new(),
        query: query.to_owned(),
        idempotency_key: None,
    });
    if let Some(watch) = &mut s.watch {
        let open: Open = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = $1 AND state LIKE 'idle in transaction%'",
        )
        .bind::<diesel::sql_types::Text, _>(&watch.database)
        .get_result(&mut watch.conn)
        .unwrap();
        if open.n > 0 {
            s.calls_in_transaction += 1;
        }
    }
    let revoked = s.revoked.iter().any(|r| r == account) || !s.reaches(platform, account);
    let fault = if revoked {
        Some(Fault::Forbidden)
    } else {
        s.faults.get_mut(path).and_then(VecDeque::pop_front)
    };
    if let Some(fault) = fault {
        match fault {
            Fault::Pass => {}
            Fault::PlainNotFound => {
                return (
                    404,
                    json!({"error": {"type": "invalid_request_error",
                                     "message": format!("Unrecognized request URL (GET: {path})")}}),
                )
            }
            Fault::MissingPermission => {
                return (
                    403,
                    json!({"error": {"type": "invalid_request_error",
                        "message": "The provided key 'rk_test_***' does not have the required \
                            permissions for this endpoint on account 'platform'."}}),
                )
            }
            Fault::Forbidden => {
                return (
                    403,
                    json!({"error": {"type": "invalid_request_error",
                        "message": format!("The provided key 'sk_test_***' does not have access \
                            to account '{account}' (or that account does not exist).")}}),
                )
            }
        }
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return (404, json!({"error": {"message": "unknown route"}}));
    };
    let params: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap_or_default();
    let key = (account.to_owned(), rest.to_owned());
    if let Some(items) = s.nested.get(&key) {
        return page(items.clone(), &params, false);
    }
    let known = |p: &str| {
        // The Events API (reconcile) besides the registered collections.
        p == "events"
            || stripe_sync::registry::RESOURCES.iter().any(|r| {
                r.path == p
                    || r.children.iter().any(|c| child_path(r.path, c) == p)
                    || is_under_parent(r, p)
            })
    };
    // A collection: list it.
    if known(rest) {
        let mut objects: Vec<Value> = s
            .objects
            .get(&key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        // Stripe refuses a filter the list does not take.
        let takes_created = rest == "events"
            || stripe_sync::registry::RESOURCES
                .iter()
                .any(|r| r.path == rest && r.listed_by_created());
        if let Some(k) = params
            .keys()
            .find(|k| k.starts_with("created") && !takes_created)
        {
            return (
                400,
                json!({"error": {"type": "invalid_request_error",
                    "message": format!("Received unknown parameter: {k}"), "param": k}}),
            );
        }
        objects.retain(|o| {
            params.iter().all(|(k, v)| match k.as_str() {
                "limit" | "starting_after" | "status" => true,
                k if k.starts_with("created") => created_within(o, k, v),
                _ => {
                    let field = &o[k];
                    field.as_str() == Some(v) || field["id"].as_str() == Some(v)
                }
            })
        });
        return page(objects, &params, true);
    }
    // An object of a collection.
    if let Some((collection, id)) = rest.rsplit_once('/') {
        if known(collection) {
            let account_key = (account.to_owned(), collection.to_owned());
            return match s.objects.get(&account_key).and_then(|m| m.get(id)) {
                Some(object) => (200, object.clone()),
                // Stripe never says a connected account is missing: the
                // platform's key has no access to it.
                None if collection == "accounts" => (
                    403,
                    json!({"error": {"type": "invalid_request_error",
                        "message": format!("The provided key 'sk_test_***' does not have access \
                            to account '{id}' (or that account does not exist). Application \
                            access may have been revoked.")}}),
                ),
                None => missing(id),
            };
        }
        // A nested list of an object that is not there.
        if let Some((parent, _sub)) = collection.rsplit_once('/') {
            if known(parent) {
                return missing(collection);
            }
        }
    }
    (
        404,
        json!({"error": {"type": "invalid_request_error",
                         "message": format!("Unrecognized request URL (GET: {path})")}}),
    )
}

/// A new open session made from Stripe's example, with what the form set.
fn create_session(
    state: &Mutex<State>,
    platform: &str,
    account: &str,
    form: Vec<(String, String)>,
    idempotency_key: Option<String>,
) -> Value {
    let mut s = state.lock().unwrap();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let n = s.calls.len();
    let id = format!("cs_test_fake{n}");
    let now = stripe_sync::ingest::unix_now();
    let mut session = crate::support::fixtures::resource("checkout.session");
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((key.to_owned(), Value::String(v.clone())))
        })
        .collect();
    for (k, v) in [
        ("id", json!(id)),
        ("created", json!(now)),
        ("expires_at", json!(now + 86_400)),
        ("status", json!("open")),
        ("payment_status", json!("unpaid")),
        ("mode", json!(field("mode"))),
        ("success_url", json!(field("success_url"))),
        ("cancel_url", json!(field("cancel_url"))),
        ("customer", json!(field("customer"))),
        ("metadata", Value::Object(metadata)),
        (
            "url",
            json!(format!("https://checkout.stripe.com/c/pay/{id}")),
        ),
    ] {
        session[k] = v;
    }
    s.calls.push(Call {
        account: account.to_owned(),
        platform: platform.to_owned(),
        path: "/v1/checkout/sessions".into(),
        form,
        query: String::new(),
        idempotency_key,
    });
    s.objects
        .entry((account.to_owned(), "checkout/sessions".to_owned()))
        .or_default()
        .insert(id, session.clone());
    session
}

/// Whether `path` is `{parent}/{parent id}/{r.path}` for a type Stripe
/// keeps under a parent (a connected account's persons).
fn is_under_parent(r: &stripe_sync::registry::Resource, path: &str) -> bool {
    let stripe_sync::registry::Listing::Nested(parent, _) = r.listing else {
        return false;
    };
    path.strip_prefix(parent.collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(id, sub)| !id.is_empty() && sub == r.path)
}

fn child_path(parent: &str, child: &stripe_sync::registry::Child) -> String {
    match child.source {
        stripe_sync::registry::ChildSource::Filtered { path, .. } => path.to_owned(),
        stripe_sync::registry::ChildSource::Nested(sub) => format!("{parent}/*/{sub}"),
    }
}

/// One page: newest first for collections (nested lists keep their order),
/// after `starting_after`, at most `limit` (≤ 100).
/// Whether `object` passes one `created` bound (`created[gte]=…`).
fn created_within(object: &Value, bound: &str, value: &str) -> bool {
    let (Some(created), Ok(value)) = (object["created"].as_i64(), value.parse::<i64>()) else {
        return true;
    };
    match bound {
        "created[gte]" => created >= value,
        "created[gt]" => created > value,
        "created[lte]" => created <= value,
        "created[lt]" => created < value,
        "created" => created == value,
        _ => true,
    }
}

fn page(
    mut items: Vec<Value>,
    params: &HashMap<String, String>,
    newest_first: bool,
) -> (u16, Value) {
    if newest_first {
        items.sort_by(|a, b| {
            (b["created"].as_i64(), b["id"].as_str())
                .cmp(&(a["created"].as_i64(), a["id"].as_str()))
        });
    }
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .min(100);
    let start = match params.get("starting_after") {
        Some(after) => match items.iter().position(|o| o["id"].as_str() == Some(after)) {
            Some(at) => at + 1,
            None => return missing(after),
        },
        None => 0,
    };
    let rest = &items[start.min(items.len())..];
    let data: Vec<Value> = rest.iter().take(limit).cloned().collect();
    (
        200,
        json!({"object": "list", "data": data, "has_more": rest.len() > limit, "url": "/v1/…"}),
    )
}
