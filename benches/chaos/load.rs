//! The soak's load and the expected state it implies. Events about objects
//! of many types, each delivered 1–3 times in shuffled order and retried
//! until acknowledged (as Stripe retries a webhook that got no 2xx); the
//! Stripe fake's echoes go through the same pool. API writes to local
//! customers go to serve, each retried until it gets an answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use stripe_sync::stripe::signature::sign;

/// The objects' resources, their id prefixes and their share of events
/// (many payments, fewer catalog objects), as an account sees them.
pub const RESOURCES: &[(&str, &str, u32)] = &[
    ("customer", "cus", 20),
    ("payment_intent", "pi", 20),
    ("charge", "ch", 15),
    ("invoice", "in", 15),
    ("checkout.session", "cs", 10),
    ("product", "prod", 10),
    ("price", "price", 10),
];

/// Resources whose objects the load deletes (their final event is
/// `<resource>.deleted`, and older updates delivered later must not bring
/// them back).
const DELETABLE: &[&str] = &["customer", "product"];

/// `created` of the first generated event; every event after it is a
/// second later, so no two versions of an object tie.
const FIRST_CREATED: i64 = 1_800_000_000;

/// The newest version of one generated object.
#[derive(Clone, Debug)]
pub struct ObjectState {
    pub resource: &'static str,
    pub version: u64,
    pub deleted: bool,
}

#[derive(Default)]
pub struct Expected {
    /// Generated objects by id.
    pub objects: HashMap<String, ObjectState>,
    /// Every event handed to the pool, and whether serve acknowledged it.
    pub acked: HashMap<String, bool>,
    /// Events built to fail for good (they must be dead-lettered, nothing else).
    pub poison: Vec<String>,
    /// Local customers whose creation was answered 201: id → the name of
    /// the newest accepted write.
    pub api_customers: BTreeMap<String, String>,
    /// Creations that got no answer (serve killed mid-request): their
    /// emails; each may or may not exist.
    pub unanswered_creates: Vec<String>,
    /// API writes sent, retries included: each may have made one outbox row.
    pub api_writes_sent: usize,
    /// The money load's requests and what they were told.
    pub payments: crate::payments::Expected,
}

#[derive(Default, serde::Serialize)]
pub struct LoadStats {
    pub events: AtomicU64,
    pub echoes: AtomicU64,
    pub posts: AtomicU64,
    pub posts_refused: AtomicU64,
    pub api_creates: AtomicU64,
    pub api_updates: AtomicU64,
    pub api_retries: AtomicU64,
    pub payments: crate::payments::Stats,
}

struct Pending {
    event_id: String,
    body: Arc<Vec<u8>>,
}

struct Inner {
    pool: Mutex<Vec<Pending>>,
    expected: Mutex<Expected>,
    stats: LoadStats,
    secret: String,
    next_echo: AtomicU64,
}

/// The pool of deliveries not yet acknowledged, and what they imply.
#[derive(Clone)]
pub struct Deliveries(Arc<Inner>);

impl Deliveries {
    pub fn new(secret: &str) -> Self {
        Self(Arc::new(Inner {
            pool: Mutex::default(),
            expected: Mutex::default(),
            stats: LoadStats::default(),
            secret: secret.to_owned(),
            next_echo: AtomicU64::new(0),
        }))
    }

    pub fn stats(&self) -> &LoadStats {
        &self.0.stats
    }

    pub fn expected(&self) -> std::sync::MutexGuard<'_, Expected> {
        self.0.expected.lock().unwrap()
    }

    pub fn pending(&self) -> usize {
        self.0.pool.lock().unwrap().len()
    }

    /// Acknowledged events, the poison left out (it is dead-lettered, not
    /// applied): what the ledger must hold once the pipeline has caught up.
    pub fn acked_appliable(&self) -> usize {
        let e = self.expected();
        e.acked.values().filter(|a| **a).count() - e.poison.iter().filter(|p| e.acked[*p]).count()
    }

    /// Queues `event` 1–3 times (Stripe delivers at least once).
    pub fn push(&self, event: &Value) {
        let id = event["id"].as_str().expect("an event id").to_owned();
        let body = Arc::new(serde_json::to_vec(event).expect("an event serialises"));
        self.expected().acked.insert(id.clone(), false);
        let copies = rand::thread_rng().gen_range(1..=3);
        let mut pool = self.0.pool.lock().unwrap();
        for _ in 0..copies {
            pool.push(Pending {
                event_id: id.clone(),
                body: body.clone(),
            });
        }
    }

    /// The webhook Stripe sends for a write of ours: it names the request's
    /// idempotency key, which is how the engine knows it for an echo.
    pub fn push_echo(&self, event_type: &str, object: &Value, key: Option<&str>) {
        let n = self.0.next_echo.fetch_add(1, Ordering::Relaxed);
        let event = json!({
            "id": format!("evt_chaosecho{n}"), "object": "event", "type": event_type,
            "api_version": "2024-06-20", "created": stripe_sync::ingest::unix_now(),
            "livemode": false, "pending_webhooks": 1,
            "data": {"object": object},
            "request": {"id": format!("req_chaos{n}"), "idempotency_key": key},
        });
        self.0.stats.echoes.fetch_add(1, Ordering::Relaxed);
        self.push(&event);
    }

    /// Sends deliveries from the pool, one at a time in random order, until
    /// `stop` and the pool is empty; a delivery that gets no 2xx goes back.
    pub async fn send(self, webhook_url: String, stop: Arc<std::sync::atomic::AtomicBool>) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        loop {
            let next = {
                let mut pool = self.0.pool.lock().unwrap();
                if pool.is_empty() {
                    None
                } else {
                    let at = rand::thread_rng().gen_range(0..pool.len());
                    Some(pool.swap_remove(at))
                }
            };
            let Some(delivery) = next else {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let signature = sign(
                &self.0.secret,
                stripe_sync::ingest::unix_now(),
                &delivery.body,
            );
            self.0.stats.posts.fetch_add(1, Ordering::Relaxed);
            let answer = http
                .post(&webhook_url)
                .header("Stripe-Signature", signature)
                .header("Content-Type", "application/json")
                .body(delivery.body.to_vec())
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                self.expected().acked.insert(delivery.event_id, true);
            } else {
                self.0.stats.posts_refused.fetch_add(1, Ordering::Relaxed);
                self.0.pool.lock().unwrap().push(delivery);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Builds the events: which object each is about, its version, deletes.
pub struct Generator {
    fixtures: Arc<Value>,
    /// Per resource, the ids of objects not deleted yet.
    live: HashMap<&'static str, Vec<String>>,
    next_object: u64,
    next_event: u64,
}

impl Generator {
    pub fn new(fixtures: Arc<Value>, objects_per_resource: usize) -> Self {
        let mut generator = Self {
            fixtures,
            live: HashMap::new(),
            next_object: 0,
            next_event: 0,
        };
        for (resource, prefix, _) in RESOURCES {
            let ids = (0..objects_per_resource)
                .map(|_| generator.new_id(prefix))
                .collect();
            generator.live.insert(resource, ids);
        }
        generator
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_object += 1;
        format!("{prefix}_chaos{}", self.next_object)
    }

    /// The next event, queued on `deliveries`.
    pub fn next(&mut self, deliveries: &Deliveries) {
        let mut rng = rand::thread_rng();
        let total: u32 = RESOURCES.iter().map(|r| r.2).sum();
        let mut pick = rng.gen_range(0..total);
        let &(resource, prefix, _) = RESOURCES
            .iter()
            .find(|r| {
                let hit = pick < r.2;
                pick = pick.saturating_sub(r.2);
                hit
            })
            .expect("the shares cover the range");
        let live = &self.live[resource];
        let at = rng.gen_range(0..live.len());
        let id = live[at].clone();
        let (version, deleted) = {
            let mut expected = deliveries.expected();
            let state = expected.objects.entry(id.clone()).or_insert(ObjectState {
                resource,
                version: 0,
                deleted: false,
            });
            state.version += 1;
            state.deleted =
                DELETABLE.contains(&resource) && state.version >= 2 && rng.gen_bool(0.05);
            (state.version, state.deleted)
        };
        if deleted {
            // Deleted for good: a new object takes its place in the load.
            let replacement = self.new_id(prefix);
            self.live.get_mut(resource).expect("a resource")[at] = replacement;
        }
        let event = self.event(resource, &id, version, deleted);
        deliveries.0.stats.events.fetch_add(1, Ordering::Relaxed);
        deliveries.push(&event);
    }

    fn event(&mut self, resource: &str, id: &str, version: u64, deleted: bool) -> Value {
        self.next_event += 1;
        let mut object = self.fixtures[resource].clone();
        object["id"] = json!(id);
        object["metadata"] = json!({"chaos_v": version.to_string()});
        if resource == "customer" {
            object["name"] = json!(format!("{id} v{version}"));
            object["email"] = json!(format!("{id}@example.com"));
            object["discount"] = Value::Null;
        }
        let verb = if deleted { "deleted" } else { "updated" };
        let mut event = self.fixtures["event"].clone();
        event["id"] = json!(format!("evt_chaos{}", self.next_event));
        event["type"] = json!(format!("{resource}.{verb}"));
        event["created"] = json!(FIRST_CREATED + self.next_event as i64);
        event["data"] = json!({"object": object});
        event["request"] = json!({"id": null, "idempotency_key": null});
        event
    }

    /// An event the worker can never apply: valid JSON, nested deeper than
    /// any Stripe object, so serve accepts it and the worker dead-letters it.
    pub fn poison(&mut self, deliveries: &Deliveries) {
        self.next_event += 1;
        let id = format!("evt_chaospoison{}", self.next_event);
        let mut event = self.fixtures["event"].clone();
        event["id"] = json!(id);
        event["type"] = json!("product.updated");
        event["created"] = json!(FIRST_CREATED + self.next_event as i64);
        event["data"] = json!({"object": {"id": format!("prod_poison{}", self.next_event), "object": "product", "deep": "@@deep@@"}});
        let text = serde_json::to_string(&event).unwrap().replace(
            "\"@@deep@@\"",
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        );
        // Kept as raw bytes: a serde_json Value could not hold this depth.
        let body = Arc::new(text.into_bytes());
        deliveries.expected().acked.insert(id.clone(), false);
        deliveries.expected().poison.push(id.clone());
        deliveries
            .0
            .pool
            .lock()
            .unwrap()
            .push(Pending { event_id: id, body });
    }
}

/// API writes through serve, one at a time: creations of local customers
/// and updates of their names, each retried until answered (an update is
/// idempotent in effect; a creation is not, so an unanswered one is only
/// noted).
pub struct ApiWriter {
    pub base: String,
    pub token: String,
    pub deliveries: Deliveries,
    next: u64,
    http: reqwest::Client,
}

impl ApiWriter {
    pub fn new(base: String, token: String, deliveries: Deliveries) -> Self {
        Self {
            base,
            token,
            deliveries,
            next: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        }
    }

    pub async fn write_one(&mut self) -> anyhow::Result<()> {
        self.next += 1;
        let n = self.next;
        let known: Vec<String> = self
            .deliveries
            .expected()
            .api_customers
            .keys()
            .cloned()
            .collect();
        let stats = &self.deliveries.0.stats;
        if known.is_empty() || rand::thread_rng().gen_bool(0.3) {
            let email = format!("chaos-api-{n}@example.com");
            let name = format!("api{n} v0");
            self.deliveries.expected().api_writes_sent += 1;
            let answer = self
                .http
                .post(format!("{}/api/customers", self.base))
                .bearer_auth(&self.token)
                .json(&json!({"name": name, "email": email}))
                .send()
                .await;
            stats.api_creates.fetch_add(1, Ordering::Relaxed);
            match answer {
                Ok(a) if a.status() == 201 => {
                    let created: Value = a.json().await.unwrap_or_default();
                    if let Some(id) = created["id"].as_str() {
                        self.deliveries
                            .expected()
                            .api_customers
                            .insert(id.to_owned(), name);
                    }
                }
                _ => self.deliveries.expected().unanswered_creates.push(email),
            }
            return Ok(());
        }
        let id = known
            .choose(&mut rand::thread_rng())
            .expect("a customer")
            .clone();
        let name = format!("api{n} v1");
        stats.api_updates.fetch_add(1, Ordering::Relaxed);
        for _ in 0..120 {
            self.deliveries.expected().api_writes_sent += 1;
            let answer = self
                .http
                .patch(format!("{}/api/customers/{id}", self.base))
                .bearer_auth(&self.token)
                .json(&json!({"name": name}))
                .send()
                .await;
            match answer {
                Ok(a) if a.status().is_success() => {
                    self.deliveries.expected().api_customers.insert(id, name);
                    return Ok(());
                }
                Ok(a) if a.status().is_client_error() => {
                    anyhow::bail!("serve refused a valid update of {id}: {}", a.status())
                }
                _ => {
                    stats.api_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        anyhow::bail!("the update of {id} got no answer in a minute")
    }
}
