//! Salesforce in the soak: the test suite's Salesforce fake served
//! in-process (whole-second `SystemModstamp`, `LastModifiedById`,
//! `queryAll`, Composite, OAuth client credentials), the people who edit
//! Contacts in it while the engine writes them too, its faults (an outage,
//! `REQUEST_LIMIT_EXCEEDED`, expired sessions), and when the two
//! Salesforce workers have drained.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use crate::fake_salesforce::{self as fake, Call, FakeSalesforce, FieldWrite};
use crate::load::{Deliveries, Expected};

/// How often salesforce-inbound polls: short, so a person's edit and our
/// write of the same Contact often fall within one interval of each other.
pub const POLL_INTERVAL_MS: u64 = 500;

/// People's edits of Contacts a second, in the quick run and the full.
pub const PEOPLE_EDITS_PER_SEC: f64 = 2.0;

/// `SALESFORCE_WEBHOOK_SECRET`: serve's relay route is on.
const RELAY_SECRET: &str = "whsec_chaos_salesforce";

/// One edit a person made in Salesforce: the expected state the checks
/// hold the other two systems to.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PersonEdit {
    pub local_id: String,
    pub contact_id: String,
    /// The Contact field (`FirstName` and `LastName` for a rename: one
    /// edit each).
    pub field: &'static str,
    pub value: String,
    /// Wall clock, milliseconds.
    pub at_ms: i64,
    /// The `SystemModstamp` it got, milliseconds.
    pub stamp: i64,
    /// Also relayed to serve: it may reach the engine twice (relay and
    /// poll), which bounds the changes passed on from it.
    pub relayed: bool,
}

#[derive(Default, serde::Serialize)]
pub struct PeopleStats {
    pub edits: AtomicU64,
    /// Edits of a Contact within one poll interval after the API renamed
    /// its customer: they race our write of it.
    pub racing_edits: AtomicU64,
    /// Second edits of a Contact stamped the same second as the first.
    pub same_second_pairs: AtomicU64,
    /// Edits also relayed to `POST /webhooks/salesforce` (as a Change
    /// Data Capture subscriber would), besides the poller's reading.
    pub relayed: AtomicU64,
    pub relay_retries: AtomicU64,
    /// Relay posts not yet answered 200: settle waits for them.
    pub relay_pending: AtomicU64,
}

/// What the fake holds and did, read once the soak has drained.
#[derive(Clone)]
pub struct SalesforceRecord {
    pub contacts: Vec<Value>,
    pub history: Vec<FieldWrite>,
    pub calls: Vec<Call>,
    /// Access tokens granted: the first of each worker's, and one for
    /// each session that ended.
    pub grants: usize,
}

impl SalesforceRecord {
    /// Answers the faults gave: 503, 403 `REQUEST_LIMIT_EXCEEDED`, 401.
    pub fn faulted_answers(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c.status, 503 | 403 | 401))
            .count()
    }

    /// The Contact whose external id is `local_id`: the live one if any.
    pub fn contact_of(&self, local_id: &str) -> Option<&Value> {
        let mut found = self
            .contacts
            .iter()
            .filter(|c| c[fake::EXTERNAL_ID_FIELD] == local_id);
        let first = found.next()?;
        if first["IsDeleted"] == false {
            return Some(first);
        }
        found.find(|c| c["IsDeleted"] == false).or(Some(first))
    }
}

#[derive(Clone)]
pub struct Salesforce {
    pub fake: Arc<FakeSalesforce>,
    pub edits: Arc<Mutex<Vec<PersonEdit>>>,
    pub stats: Arc<PeopleStats>,
}

impl Salesforce {
    pub fn start() -> Self {
        Self {
            fake: Arc::new(FakeSalesforce::start()),
            edits: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The engine's environment: every process gets it (stripe-inbound
    /// passes Stripe's customer changes on only when it is set).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .fake
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push((
            "SALESFORCE_POLL_INTERVAL_MS".into(),
            POLL_INTERVAL_MS.to_string(),
        ));
        env.push(("SALESFORCE_WEBHOOK_SECRET".into(), RELAY_SECRET.into()));
        env
    }

    pub fn record(&self) -> SalesforceRecord {
        SalesforceRecord {
            contacts: self.fake.contacts(),
            history: self.fake.history(),
            calls: self.fake.calls(),
            grants: self.fake.grants(),
        }
    }

    pub fn edits(&self) -> Vec<PersonEdit> {
        self.edits.lock().unwrap().clone()
    }

    /// People editing the Contacts of the API's customers, `rate` edits a
    /// second until `load_on` goes false: Phone, Email and names; some
    /// right after the API renamed the customer (racing our write of the
    /// same Contact), some twice within one second.
    /// Half the edits are also relayed to serve (`relay_url`) at once.
    pub async fn people(
        self,
        deliveries: Deliveries,
        relay_url: String,
        rate: f64,
        load_on: Arc<AtomicBool>,
    ) {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut n = 0u64;
        while load_on.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
            let now: BTreeMap<String, String> = deliveries.expected().api_customers.clone();
            let renamed: Vec<String> = now
                .iter()
                .filter(|(id, name)| seen.get(*id).is_some_and(|old| old != *name))
                .map(|(id, _)| id.clone())
                .collect();
            seen = now;
            let live: HashSet<String> = self
                .fake
                .contacts()
                .into_iter()
                .filter(|c| c["IsDeleted"] == false)
                .filter_map(|c| c[fake::EXTERNAL_ID_FIELD].as_str().map(str::to_owned))
                .collect();
            let with_contact: Vec<&String> = seen.keys().filter(|id| live.contains(*id)).collect();
            let (racing, local_id, delay) = {
                let mut rng = rand::thread_rng();
                let racing = !renamed.is_empty() && rng.gen_bool(0.3);
                let local_id = if racing {
                    renamed.choose(&mut rng).cloned()
                } else {
                    with_contact.choose(&mut rng).map(|s| s.to_string())
                };
                // A racing edit lands within one poll interval of our
                // write, before or after it.
                (racing, local_id, rng.gen_range(0..POLL_INTERVAL_MS))
            };
            let Some(local_id) = local_id else { continue };
            if racing {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let Some(contact_id) = self.live_contact(&local_id) else {
                continue;
            };
            let twice = rand::thread_rng().gen_bool(0.15);
            let mut stamps = Vec::new();
            for _ in 0..(1 + usize::from(twice)) {
                n += 1;
                let field = if racing {
                    "Name"
                } else {
                    ["Name", "Email", "Phone"][rand::thread_rng().gen_range(0..3)]
                };
                let relay = rand::thread_rng().gen_bool(0.5);
                let (stamp, record) = self.edit(&local_id, &contact_id, field, n, relay);
                stamps.push(stamp);
                if relay {
                    tokio::spawn(self.clone().relay(relay_url.clone(), record));
                }
            }
            if racing {
                self.stats.racing_edits.fetch_add(1, Ordering::Relaxed);
            }
            if twice && stamps[0] == stamps[1] {
                self.stats.same_second_pairs.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn live_contact(&self, local_id: &str) -> Option<String> {
        self.fake
            .contact_of(local_id)
            .filter(|c| c["IsDeleted"] == false)
            .and_then(|c| c["Id"].as_str().map(str::to_owned))
    }

    /// One person's edit of `field`, recorded; its stamp. Values are new
    /// each time, so each tells which write it came from. Emails keep the
    /// API's `chaos-api-` prefix, by which the check finds its customers.
    fn edit(
        &self,
        local_id: &str,
        contact_id: &str,
        field: &str,
        n: u64,
        relayed: bool,
    ) -> (i64, Value) {
        let first = ["Grace", "Ada", "Barbara", "Edsger"][n as usize % 4];
        let fields = match field {
            "Name" => json!({"FirstName": first, "LastName": format!("Person{n}")}),
            "Email" => json!({"Email": format!("chaos-api-person{n}@example.org")}),
            _ => json!({"Phone": format!("+1 555 01{:04}", n % 10_000)}),
        };
        let record = self.fake.edit_as_person(contact_id, fields.clone());
        let stamp = record["SystemModstamp"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z").ok())
            .map_or(0, |t| t.timestamp_millis());
        let at_ms = chrono::Utc::now().timestamp_millis();
        let mut edits = self.edits.lock().unwrap();
        for (name, value) in fields.as_object().expect("an object") {
            let field = match name.as_str() {
                "FirstName" => "FirstName",
                "LastName" => "LastName",
                "Email" => "Email",
                _ => "Phone",
            };
            edits.push(PersonEdit {
                local_id: local_id.to_owned(),
                contact_id: contact_id.to_owned(),
                field,
                value: value.as_str().unwrap_or_default().to_owned(),
                at_ms,
                stamp,
                relayed,
            });
        }
        self.stats.edits.fetch_add(1, Ordering::Relaxed);
        (stamp, record)
    }

    /// Posts one Contact version to serve's relay route, signed, until it
    /// is answered 200 (serve may be killed meanwhile).
    async fn relay(self, url: String, mut record: Value) {
        self.stats.relay_pending.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = record.as_object_mut() {
            r.remove("attributes");
        }
        let body = serde_json::to_vec(&json!({"records": [record]})).expect("JSON");
        let http = reqwest::Client::new();
        for attempt in 0.. {
            let signature = stripe_sync::stripe::signature::sign(
                RELAY_SECRET,
                stripe_sync::ingest::unix_now(),
                &body,
            );
            let answer = http
                .post(&url)
                .header("StripeSync-Signature", signature)
                .header("Content-Type", "application/json")
                .timeout(Duration::from_secs(10))
                .body(body.clone())
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                break;
            }
            if attempt == 600 {
                eprintln!("chaos: a Salesforce relay post got no 200 in 5 minutes");
                break;
            }
            self.stats.relay_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.stats.relayed.fetch_add(1, Ordering::Relaxed);
        self.stats.relay_pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// Salesforce fails for `lasted`: down (503 to everything, the token
    /// endpoint too), or over its request limit (403
    /// `REQUEST_LIMIT_EXCEEDED`), or its sessions end again and again, so
    /// every worker must get a new token (401 `INVALID_SESSION_ID`).
    pub async fn fault(&self, fault: SalesforceFault, lasted: Duration) {
        match fault {
            SalesforceFault::Down => {
                self.fake.set_down(true);
                tokio::time::sleep(lasted).await;
                self.fake.set_down(false);
            }
            SalesforceFault::RequestLimit => {
                self.fake.set_request_limited(true);
                tokio::time::sleep(lasted).await;
                self.fake.set_request_limited(false);
            }
            SalesforceFault::SessionsExpire => {
                let started = Instant::now();
                while started.elapsed() < lasted {
                    self.fake.expire_sessions();
                    tokio::time::sleep(Duration::from_millis(700)).await;
                }
            }
        }
    }

    /// Whether the Salesforce side has drained: every outbox row delivered
    /// (or dead-lettered) to each service other than the one it came
    /// from, the poller's cursor past the newest Contact stamp, and
    /// salesforce-inbound's group caught up on the versions it published.
    pub async fn drained(&self, db_url: &str, brokers: &str) -> bool {
        if self.stats.relay_pending.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let newest = self
            .fake
            .contacts()
            .iter()
            .filter_map(|c| c["SystemModstamp"].as_str().and_then(parse_stamp))
            .max()
            .unwrap_or(0);
        let (url, brokers) = (db_url.to_owned(), brokers.to_owned());
        tokio::task::spawn_blocking(move || {
            drained_blocking(&url, &brokers, newest).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// Before the check: an API customer whose Contact was last renamed by
    /// a person, after every API rename reached Salesforce, holds that
    /// person's name. Returns the API names so replaced: the check still
    /// requires each to have reached its Contact (see `salesforce_check`).
    pub fn supersede_api_names(
        &self,
        expected: &mut Expected,
        record: &SalesforceRecord,
    ) -> HashMap<String, String> {
        let mut last_name_write: HashMap<&str, &FieldWrite> = HashMap::new();
        for w in &record.history {
            if w.field == "FirstName" || w.field == "LastName" {
                last_name_write.insert(&w.contact_id, w);
            }
        }
        let mut replaced = HashMap::new();
        for (local_id, name) in expected.api_customers.iter_mut() {
            let Some(contact) = record.contact_of(local_id) else {
                continue;
            };
            let id = contact["Id"].as_str().unwrap_or_default();
            if last_name_write
                .get(id)
                .is_some_and(|w| w.user == fake::PERSON)
            {
                if let Some(person_name) = contact_name(contact) {
                    replaced.insert(local_id.clone(), std::mem::replace(name, person_name));
                }
            }
        }
        replaced
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SalesforceFault {
    Down,
    RequestLimit,
    SessionsExpire,
}

/// A Contact's name as the local row holds it: `FirstName LastName`.
pub fn contact_name(contact: &Value) -> Option<String> {
    let part = |f: &str| {
        contact[f]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match (part("FirstName"), part("LastName")) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (one, other) => one.or(other),
    }
}

pub fn parse_stamp(stamp: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.3f%z")
        .ok()
        .map(|t| t.timestamp_millis())
}

fn drained_blocking(db_url: &str, brokers: &str, newest_stamp: i64) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        undelivered: i64,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        cursor: Option<String>,
    }
    let mut conn = PgConnection::establish(db_url)?;
    let row = diesel::sql_query(
        "SELECT (SELECT count(*) FROM outbox o CROSS JOIN (VALUES ('stripe'), ('salesforce')) s(service)
                 WHERE o.origin <> s.service
                   -- a queued refund is a command for Stripe alone
                   AND NOT (o.entity = 'refund_request' AND s.service = 'salesforce')
                   AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d
                     WHERE d.outbox_id = o.id AND d.service = s.service)) AS undelivered,
                (SELECT position FROM sync_cursors WHERE service = 'salesforce'
                     AND stream = 'poll:contact') AS cursor",
    )
    .get_result::<Row>(&mut conn)?;
    let polled = row
        .cursor
        .and_then(|c| c.split_once('/').and_then(|(ms, _)| ms.parse::<i64>().ok()))
        .unwrap_or(0);
    if row.undelivered > 0 || polled < newest_stamp {
        return Ok(false);
    }
    let groups = [(
        "stripe-sync.salesforce-inbound".to_owned(),
        "salesforce.events.v1".to_owned(),
    )];
    let lag = stripe_sync::ops::topics::lag(brokers, 1 << 20, &groups)?;
    Ok(lag.iter().all(|r| r.lag == 0))
}
