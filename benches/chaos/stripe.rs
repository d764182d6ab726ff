//! The soak's Stripe: a stateful fake of the customers API with real
//! Idempotency-Key semantics (a retried key replays the saved answer), the
//! checkout line items the inbound worker reads, and faults on demand that
//! no real fake produces: outages, 429 storms and answers lost after the
//! write was done. Every write it performs sends its webhook back (an echo
//! carrying the request's key, as Stripe's would), through the same
//! delivery pool as the generated events.
//!
//! A fake, not Stripe: localstripe has no idempotency keys, so a lost
//! answer followed by a retry would create a second customer there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::load::Deliveries;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StripeFault {
    /// Every call answers 503.
    Down,
    /// Four calls in five answer 429 before doing anything.
    RateLimited,
    /// Half the writes are done and then answered 500: the caller cannot
    /// tell, and must retry with the same key.
    LosesAnswers,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) customers: HashMap<String, Value>,
    /// Idempotency key → the answer given when the write was done.
    answers: HashMap<String, (StatusCode, Value)>,
    /// Idempotency key → the request it was first used with (path and
    /// form): Stripe refuses the key for any other request.
    requests: HashMap<String, String>,
    /// Idempotency key → how many times the write was done (must be 1).
    performed: HashMap<String, u32>,
    /// `metadata[stripe_sync_id]` → the customers created for it (must be 1).
    created_for_local: HashMap<String, Vec<String>>,
    next_id: u64,
    fault: Option<StripeFault>,
    faulted_answers: u64,
    /// Payment methods, payment intents, charges and refunds.
    pub(crate) money: crate::payments_stripe::Money,
}

/// The fake's account of what it did, for the final check.
pub struct StripeRecord {
    pub customers: HashMap<String, Value>,
    pub performed: HashMap<String, u32>,
    pub created_for_local: HashMap<String, Vec<String>>,
    pub faulted_answers: u64,
    pub money: crate::payments_stripe::Money,
}

#[derive(Clone)]
pub struct FakeStripe {
    state: Arc<Mutex<State>>,
}

impl FakeStripe {
    /// Serves on an ephemeral port; returns the fake and its base URL.
    pub fn start(fixtures: Arc<Value>, deliveries: Deliveries) -> (Self, String) {
        let fake = Self {
            state: Arc::default(),
        };
        let this = fake.clone();
        let with = warp::any().map(move || this.clone());
        let key = warp::header::optional::<String>("idempotency-key");
        let form = warp::body::form::<Vec<(String, String)>>();
        let money =
            crate::payments_routes::routes(fake.clone(), fixtures.clone(), deliveries.clone());
        let (echo_create, echo_update) = (deliveries.clone(), deliveries);
        let create = warp::path!("v1" / "customers")
            .and(warp::post())
            .and(key)
            .and(form)
            .and(with.clone())
            .map(move |key, form: Vec<(String, String)>, fake: FakeStripe| {
                let request = request_of("/v1/customers", &form);
                fake.write(key, request, &echo_create, |s| s.create_customer(&form))
            });
        let update = warp::path!("v1" / "customers" / String)
            .and(warp::post())
            .and(key)
            .and(form)
            .and(with.clone())
            .map(
                move |id: String, key, form: Vec<(String, String)>, fake: FakeStripe| {
                    let request = request_of(&format!("/v1/customers/{id}"), &form);
                    fake.write(key, request, &echo_update, |s| {
                        s.update_customer(&id, &form)
                    })
                },
            );
        let retrieve = warp::path!("v1" / "customers" / String)
            .and(warp::get())
            .and(with.clone())
            .map(|id: String, fake: FakeStripe| {
                fake.read(|s| match s.customers.get(&id) {
                    Some(c) => (StatusCode::OK, c.clone()),
                    None => missing(&id),
                })
            });
        let (items_fixtures, txn_fixtures) = (fixtures.clone(), fixtures);
        let line_items = warp::path!("v1" / "checkout" / "sessions" / String / "line_items")
            .and(warp::get())
            .and(with.clone())
            .map(move |session: String, fake: FakeStripe| {
                fake.read(|_| {
                    (
                        StatusCode::OK,
                        crate::common::line_items(&session, &items_fixtures),
                    )
                })
            });
        let balance_transaction = warp::path!("v1" / "balance_transactions" / String)
            .and(warp::get())
            .and(with)
            .map(move |id: String, fake: FakeStripe| {
                fake.read(|_| {
                    (
                        StatusCode::OK,
                        crate::common::balance_transaction(&id, &txn_fixtures),
                    )
                })
            });
        let routes = create
            .or(update)
            .or(retrieve)
            .or(line_items)
            .or(balance_transaction)
            .or(money);
        let (addr, server) = warp::serve(routes).bind_ephemeral(([127, 0, 0, 1], 0));
        tokio::spawn(server);
        (fake, format!("http://{addr}"))
    }

    pub fn set_fault(&self, fault: Option<StripeFault>) {
        self.state.lock().unwrap().fault = fault;
    }

    pub fn record(&self) -> StripeRecord {
        let s = self.state.lock().unwrap();
        StripeRecord {
            customers: s.customers.clone(),
            performed: s.performed.clone(),
            created_for_local: s.created_for_local.clone(),
            faulted_answers: s.faulted_answers,
            money: s.money.clone(),
        }
    }

    /// Runs `op` on the state under its lock (the payments fake's timers).
    pub(crate) fn with_state<T>(&self, op: impl FnOnce(&mut State) -> T) -> T {
        op(&mut self.state.lock().unwrap())
    }

    /// A fault's answer before anything is done, if the fault gives one.
    fn refused(s: &mut State) -> Option<(StatusCode, Value)> {
        let refusal = match s.fault? {
            StripeFault::Down => (StatusCode::SERVICE_UNAVAILABLE, "api_error"),
            StripeFault::RateLimited if rand::thread_rng().gen_bool(0.8) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
            }
            _ => return None,
        };
        s.faulted_answers += 1;
        Some((
            refusal.0,
            json!({"error": {"type": refusal.1, "message": "injected by the chaos soak"}}),
        ))
    }

    pub(crate) fn read(
        &self,
        op: impl FnOnce(&State) -> (StatusCode, Value),
    ) -> warp::reply::Response {
        let mut s = self.state.lock().unwrap();
        let (status, body) = Self::refused(&mut s).unwrap_or_else(|| op(&s));
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    }

    /// Performs a write once per idempotency key, sends its echo, and
    /// answers (or, under `LosesAnswers`, sometimes loses the answer).
    /// Writes under the outbox's keys are stripe-outbound's (the customers'
    /// record); any other key is an API request's (the payments' record).
    fn write(
        &self,
        key: Option<String>,
        request: String,
        echoes: &Deliveries,
        op: impl FnOnce(&mut State) -> (StatusCode, Value, Option<&'static str>),
    ) -> warp::reply::Response {
        let book = match &key {
            Some(k) if stripe_sync::outbox::is_own_idempotency_key(k) => Book::Customers,
            _ => Book::Payments,
        };
        self.perform(key, request, book, echoes, |s| {
            let (status, body, event_type) = op(s);
            let events = event_type.map(|t| (t, body.clone())).into_iter().collect();
            (status, body, events)
        })
    }

    /// [`Self::write`] for a write that sends any number of events.
    pub(crate) fn perform(
        &self,
        key: Option<String>,
        request: String,
        book: Book,
        echoes: &Deliveries,
        op: impl FnOnce(&mut State) -> (StatusCode, Value, Vec<(&'static str, Value)>),
    ) -> warp::reply::Response {
        let mut s = self.state.lock().unwrap();
        let answer = if let Some(refusal) = Self::refused(&mut s) {
            refusal
        } else if key
            .as_ref()
            .and_then(|k| s.requests.get(k))
            .is_some_and(|first| *first != request)
        {
            (
                StatusCode::BAD_REQUEST,
                json!({"error": {"type": "idempotency_error", "message": format!(
                    "the key {:?} was first used for another request; a new request needs a new key",
                    key.as_deref().unwrap_or_default())}}),
            )
        } else if let Some(saved) = key.as_ref().and_then(|k| s.answers.get(k)) {
            saved.clone()
        } else {
            let (status, body, events) = op(&mut s);
            match (&key, book) {
                (Some(key), Book::Customers) => {
                    *s.performed.entry(key.clone()).or_default() += 1;
                }
                (key, Book::Payments) => s.money.count_write(key.as_deref(), &request, &body),
                (None, Book::Customers) => {}
            }
            if let Some(key) = &key {
                s.answers.insert(key.clone(), (status, body.clone()));
                s.requests.insert(key.clone(), request);
            }
            for (event_type, object) in &events {
                echoes.push_echo(event_type, object, key.as_deref());
            }
            if s.fault == Some(StripeFault::LosesAnswers) && rand::thread_rng().gen_bool(0.5) {
                s.faulted_answers += 1;
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"type": "api_error", "message": "answer lost by the chaos soak"}}),
                )
            } else {
                (status, body)
            }
        };
        warp::reply::with_status(warp::reply::json(&answer.1), answer.0).into_response()
    }
}

/// Which record a write is counted in.
#[derive(Clone, Copy)]
pub(crate) enum Book {
    Customers,
    Payments,
}

/// What Stripe compares a retried key's request by: the path and the form,
/// in any order.
pub(crate) fn request_of(path: &str, form: &[(String, String)]) -> String {
    let mut fields: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
    fields.sort();
    format!("{path}?{}", fields.join("&"))
}

impl State {
    fn create_customer(
        &mut self,
        form: &[(String, String)],
    ) -> (StatusCode, Value, Option<&'static str>) {
        self.next_id += 1;
        let id = format!("cus_chaosapi{}", self.next_id);
        let mut customer = json!({
            "id": id, "object": "customer", "created": stripe_sync::ingest::unix_now(),
            "name": null, "email": null, "phone": null, "description": null, "metadata": {},
            "invoice_settings": {"default_payment_method": null}, "livemode": false,
        });
        apply_form(&mut customer, form);
        if let Some(local) = customer["metadata"]["stripe_sync_id"].as_str() {
            self.created_for_local
                .entry(local.to_owned())
                .or_default()
                .push(id.clone());
        }
        self.customers.insert(id, customer.clone());
        (StatusCode::OK, customer, Some("customer.created"))
    }

    fn update_customer(
        &mut self,
        id: &str,
        form: &[(String, String)],
    ) -> (StatusCode, Value, Option<&'static str>) {
        let Some(customer) = self.customers.get_mut(id) else {
            let (status, body) = missing(id);
            return (status, body, None);
        };
        apply_form(customer, form);
        (StatusCode::OK, customer.clone(), Some("customer.updated"))
    }
}

/// Form fields as Stripe reads them: `metadata[k]` sets one key (an empty
/// value removes it), an empty field clears it.
fn apply_form(customer: &mut Value, form: &[(String, String)]) {
    for (name, value) in form {
        if let Some(key) = name
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            let metadata = customer["metadata"]
                .as_object_mut()
                .expect("metadata is an object");
            if value.is_empty() {
                metadata.remove(key);
            } else {
                metadata.insert(key.to_owned(), json!(value));
            }
        } else if let Some((outer, inner)) = name.strip_suffix(']').and_then(|n| n.split_once('['))
        {
            // `invoice_settings[default_payment_method]`: one level down.
            if !customer[outer].is_object() {
                customer[outer] = json!({});
            }
            customer[outer][inner] = if value.is_empty() {
                Value::Null
            } else {
                json!(value)
            };
        } else {
            customer[name.as_str()] = if value.is_empty() {
                Value::Null
            } else {
                json!(value)
            };
        }
    }
}

fn missing(id: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such customer: '{id}'")}}),
    )
}
