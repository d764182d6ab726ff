//! The Salesforce part of the check, against the people's edits the load
//! recorded and what the Salesforce fake holds and did:
//! - no Salesforce edit lost: each person's last edit of a Contact field
//!   that no later write of that field superseded (in the fake's own order
//!   of changes: whole-second stamps cannot order them) is what the local
//!   row and the Stripe customer hold;
//! - three systems converged: every customer the soak wrote or edited
//!   agrees on name, email and phone in the local row, at Stripe (for the
//!   API's customers, the only ones the Stripe fake holds) and in its
//!   Contact; and the API's newest name of each reached its Contact;
//! - no ping-pong: Salesforce saw no more writes than delivered changes
//!   explain (plus what a killed worker or a crashed Postgres may make it
//!   repeat), Stripe's echoes of our writes were not passed on to
//!   Salesforce, and every change passed on from Salesforce carries values
//!   people set.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use serde_json::Value;

use crate::check::Verdict;
use crate::fake_salesforce::{Call, INTEGRATION_USER, PERSON};
use crate::faults::{FaultKind, Injected};
use crate::load::Expected;
use crate::salesforce::{contact_name, PersonEdit, SalesforceRecord};
use crate::stripe::StripeRecord;

/// Kinds of defect [`self_test`] plants.
pub const PLANTED: usize = 4;

#[derive(Default, Debug, serde::Serialize)]
pub struct SalesforceVerdict {
    /// Load figures, for the table: edits racing our write of the same
    /// Contact, pairs of edits in one second, answers the faults gave.
    pub racing_edits: u64,
    pub same_second_pairs: u64,
    pub relayed: u64,
    pub relay_retries: u64,
    pub faulted_answers: usize,
    pub tokens_granted: usize,
    pub person_edits: usize,
    /// Edits no later write superseded: the ones checked.
    pub person_edits_final: usize,
    pub person_edits_lost: usize,
    pub customers_checked: usize,
    pub customers_divergent: usize,
    pub salesforce_writes: usize,
    pub salesforce_deliveries: usize,
    /// Writes beyond the deliveries and the repeats faults allow.
    pub salesforce_writes_unexplained: usize,
    /// Outbox rows passing an echo on: Stripe's echo of our write sent to
    /// Salesforce, or a change from Salesforce with values no person set.
    pub echoes_passed_on: usize,
    /// Customers named in findings, for `salesforce_story::explain`.
    #[serde(skip)]
    pub suspects: Vec<String>,
}

impl SalesforceVerdict {
    pub fn failures(&self) -> usize {
        self.person_edits_lost
            + self.customers_divergent
            + self.salesforce_writes_unexplained
            + self.echoes_passed_on
    }

    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "Salesforce: edits racing our write / two in one second".to_owned(),
                format!("{} / {}", self.racing_edits, self.same_second_pairs),
            ),
            (
                "Salesforce: edits also relayed to serve (retries)".to_owned(),
                format!("{} ({})", self.relayed, self.relay_retries),
            ),
            (
                "Salesforce answers faulted (503, 403 limit, 401 session)".to_owned(),
                self.faulted_answers.to_string(),
            ),
            (
                "Salesforce access tokens granted".to_owned(),
                self.tokens_granted.to_string(),
            ),
        ];
        rows.extend(
            [
                ("Salesforce: people's field edits", self.person_edits),
                (
                    "  of them last in their field (checked)",
                    self.person_edits_final,
                ),
                (
                    "LOST: a person's edit not in the local row or Stripe",
                    self.person_edits_lost,
                ),
                (
                    "customers checked in three systems (local, Stripe, Salesforce)",
                    self.customers_checked,
                ),
                (
                    "DIVERGENT: name, email or phone differ across systems",
                    self.customers_divergent,
                ),
                (
                    "Salesforce writes / changes delivered to it",
                    self.salesforce_writes,
                ),
                (
                    "Salesforce writes no delivered change explains (ping-pong)",
                    self.salesforce_writes_unexplained,
                ),
                (
                    "echoes passed on to the other service",
                    self.echoes_passed_on,
                ),
            ]
            .into_iter()
            .map(|(label, value)| {
                let value = if label.starts_with("Salesforce writes /") {
                    format!("{value} / {}", self.salesforce_deliveries)
                } else {
                    value.to_string()
                };
                (label.to_owned(), value)
            }),
        );
        rows
    }
}

#[derive(QueryableByName)]
struct Local {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    phone: Option<String>,
    #[diesel(sql_type = Bool)]
    deleted: bool,
    /// Its Stripe customer's id, if linked.
    #[diesel(sql_type = Nullable<Text>)]
    stripe_id: Option<String>,
}

#[derive(QueryableByName)]
struct Passed {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    local_id: String,
    #[diesel(sql_type = Text)]
    origin: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    fields: Value,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// What the Salesforce check reads besides the database.
pub struct Inputs<'a> {
    pub expected: &'a Expected,
    pub edits: &'a [PersonEdit],
    pub salesforce: &'a SalesforceRecord,
    pub stripe: &'a StripeRecord,
    /// The API's newest name of each customer whose Contact a person
    /// renamed last (`supersede_api_names`): it must have reached the
    /// Contact before that.
    pub api_names_superseded: &'a HashMap<String, String>,
    /// Writes Salesforce may see twice: a killed salesforce-outbound or a
    /// crashed Postgres can lose the record of a batch it delivered.
    pub repeats_allowed: usize,
    pub stats: &'a crate::salesforce::PeopleStats,
}

/// Writes Salesforce may see twice: a batch salesforce-outbound delivered
/// whose record a kill of it or a Postgres crash lost is delivered again
/// (a Composite request holds at most this many).
pub fn repeats_allowed(faults: &[Injected]) -> usize {
    faults
        .iter()
        .filter(|f| {
            f.kind == FaultKind::RestartPostgres
                || (f.kind == FaultKind::KillProcess
                    && f.target.as_deref() == Some("salesforce-outbound"))
        })
        .count()
        * stripe_sync::salesforce::client::COMPOSITE_LIMIT
}

fn text(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Splits a name as salesforce-outbound does: `FirstName` all but the
/// last word, `LastName` the last word.
fn name_part(name: Option<&str>, field: &str) -> Option<String> {
    let name = text(name)?;
    match (name.rsplit_once(' '), field) {
        (Some((first, _)), "FirstName") => text(Some(first)),
        (None, "FirstName") => None,
        (Some((_, last)), _) => Some(last.to_owned()),
        (None, _) => Some(name),
    }
}

/// A customer's name, email and phone, as one system holds them.
type Shared = (Option<String>, Option<String>, Option<String>);

fn local_of(l: &Local) -> Shared {
    (l.name.clone(), l.email.clone(), l.phone.clone())
}

/// The Stripe customer made for local customer `local_id`.
fn stripe_of(stripe: &StripeRecord, local_id: &str) -> Option<Shared> {
    stripe
        .created_for_local
        .get(local_id)
        .and_then(|ids| ids.first())
        .and_then(|id| stripe.customers.get(id))
        .map(|c| {
            (
                text(c["name"].as_str()),
                text(c["email"].as_str()),
                text(c["phone"].as_str()),
            )
        })
}

/// What a customer's shared fields hold for one Contact field.
fn field_of(row: &Shared, field: &str) -> Option<String> {
    match field {
        "FirstName" | "LastName" => name_part(row.0.as_deref(), field),
        "Email" => text(row.1.as_deref()),
        _ => text(row.2.as_deref()),
    }
}

pub fn verify(conn: &mut PgConnection, inputs: &Inputs<'_>, v: &mut Verdict) -> anyhow::Result<()> {
    let locals: HashMap<String, Local> = diesel::sql_query(
        "SELECT c.id::text AS id, c.name, c.email, c.phone, c.deleted_at IS NOT NULL AS deleted,
                (SELECT m.external_id FROM id_map m WHERE m.local_id = c.id AND m.service = 'stripe'
                     AND m.entity = 'customer' LIMIT 1) AS stripe_id
         FROM customers c",
    )
    .load::<Local>(conn)?
    .into_iter()
    .map(|l| (l.id.clone(), l))
    .collect();
    v.salesforce.racing_edits = inputs.stats.racing_edits.load(Ordering::Relaxed);
    v.salesforce.same_second_pairs = inputs.stats.same_second_pairs.load(Ordering::Relaxed);
    v.salesforce.relayed = inputs.stats.relayed.load(Ordering::Relaxed);
    v.salesforce.relay_retries = inputs.stats.relay_retries.load(Ordering::Relaxed);
    v.salesforce.faulted_answers = inputs.salesforce.faulted_answers();
    v.salesforce.tokens_granted = inputs.salesforce.grants;
    check_edits(inputs, &locals, v);
    check_converged(inputs, &locals, v);
    check_ping_pong(conn, inputs, v)
}

fn check_edits(inputs: &Inputs<'_>, locals: &HashMap<String, Local>, v: &mut Verdict) {
    let sf = &mut v.salesforce;
    sf.person_edits = inputs.edits.len();
    // The fake's changes of each (Contact, field), in order.
    let mut position: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for (at, w) in inputs.salesforce.history.iter().enumerate() {
        if let Some(value) = w.value.as_str() {
            position.insert((&w.contact_id, &w.field, value), at);
        }
        last.insert((&w.contact_id, &w.field), at);
    }
    let mut notes = Vec::new();
    let mut checked = HashSet::new();
    for edit in inputs.edits.iter().rev() {
        let key = (edit.contact_id.as_str(), edit.field);
        // Only the person's last edit of a field can still stand, and
        // only if nothing wrote that field after it.
        if !checked.insert(key) {
            continue;
        }
        let at = position.get(&(key.0, key.1, edit.value.as_str()));
        if at.is_none_or(|at| last.get(&key) != Some(at)) {
            continue;
        }
        sf.person_edits_final += 1;
        let local = locals.get(&edit.local_id).map(local_of);
        let stripe = stripe_of(inputs.stripe, &edit.local_id);
        let want = Some(edit.value.trim().to_owned());
        let here = local.as_ref().and_then(|l| field_of(l, edit.field));
        let there = stripe.as_ref().and_then(|s| field_of(s, edit.field));
        if here != want || there != want {
            sf.person_edits_lost += 1;
            sf.suspects.push(edit.local_id.clone());
            notes.push(format!(
                "a person set {} of Contact {} (customer {}) to {:?}, last; local holds {here:?}, Stripe {there:?}",
                edit.field, edit.contact_id, edit.local_id, edit.value
            ));
        }
    }
    for n in notes {
        v.note(n);
    }
}

fn check_converged(inputs: &Inputs<'_>, locals: &HashMap<String, Local>, v: &mut Verdict) {
    let mut in_scope: Vec<&str> = inputs
        .expected
        .api_customers
        .keys()
        .map(String::as_str)
        .chain(inputs.edits.iter().map(|e| e.local_id.as_str()))
        .collect();
    // The generated Stripe customers: only their local row and Contact
    // (the Stripe fake holds the API's customers alone).
    in_scope.extend(locals.values().filter_map(|l| {
        l.stripe_id
            .as_deref()
            .filter(|s| s.starts_with("cus_chaos") && !s.starts_with("cus_chaosapi"))
            .map(|_| l.id.as_str())
    }));
    in_scope.sort_unstable();
    in_scope.dedup();
    let mut notes = Vec::new();
    for local_id in in_scope {
        v.salesforce.customers_checked += 1;
        let Some(local) = locals.get(local_id) else {
            v.salesforce.customers_divergent += 1;
            notes.push(format!("customer {local_id} is not in the local table"));
            continue;
        };
        let contact = inputs.salesforce.contact_of(local_id);
        let contact_live = contact.filter(|c| c["IsDeleted"] == false);
        if local.deleted {
            if contact_live.is_some() {
                v.salesforce.customers_divergent += 1;
                notes.push(format!(
                    "customer {local_id} is deleted, its Contact is live"
                ));
            }
            continue;
        }
        let Some(contact) = contact_live else {
            v.salesforce.customers_divergent += 1;
            notes.push(format!("customer {local_id} has no live Contact"));
            continue;
        };
        let in_salesforce = (
            contact_name(contact),
            text(contact["Email"].as_str()),
            text(contact["Phone"].as_str()),
        );
        let here = local_of(local);
        let here = (
            text(here.0.as_deref()),
            text(here.1.as_deref()),
            text(here.2.as_deref()),
        );
        let at_stripe = if local
            .stripe_id
            .as_deref()
            .is_some_and(|s| s.starts_with("cus_chaosapi"))
            || inputs.expected.api_customers.contains_key(local_id)
        {
            stripe_of(inputs.stripe, local_id)
        } else {
            Some(here.clone())
        };
        if at_stripe.as_ref() != Some(&here) || in_salesforce != here {
            v.salesforce.customers_divergent += 1;
            v.salesforce.suspects.push(local_id.to_owned());
            notes.push(format!(
                "customer {local_id}: local {here:?}, Stripe {at_stripe:?}, Salesforce {in_salesforce:?}"
            ));
            continue;
        }
        if let Some(api_name) = inputs.api_names_superseded.get(local_id) {
            let first = name_part(Some(api_name), "FirstName");
            let contact_id = contact["Id"].as_str().unwrap_or_default();
            let reached = inputs.salesforce.history.iter().any(|w| {
                w.contact_id == contact_id
                    && w.field == "FirstName"
                    && w.user == INTEGRATION_USER
                    && text(w.value.as_str()) == first
            });
            if !reached {
                v.salesforce.customers_divergent += 1;
                notes.push(format!(
                    "customer {local_id}: the API's newest name {api_name:?} never reached its Contact"
                ));
            }
        }
    }
    for n in notes {
        v.note(n);
    }
}

fn check_ping_pong(
    conn: &mut PgConnection,
    inputs: &Inputs<'_>,
    v: &mut Verdict,
) -> anyhow::Result<()> {
    let sf = &mut v.salesforce;
    sf.salesforce_writes = inputs.salesforce.writes();
    sf.salesforce_deliveries = diesel::sql_query(
        "SELECT count(*) AS n FROM outbox_deliveries WHERE service = 'salesforce' AND status = 'synced'",
    )
    .get_result::<Count>(conn)?
    .n as usize;
    sf.salesforce_writes_unexplained = sf
        .salesforce_writes
        .saturating_sub(sf.salesforce_deliveries + inputs.repeats_allowed);
    let mut notes = Vec::new();
    if sf.salesforce_writes_unexplained > 0 {
        notes.push(format!(
            "Salesforce saw {} writes for {} delivered changes ({} repeats allowed)",
            sf.salesforce_writes, sf.salesforce_deliveries, inputs.repeats_allowed
        ));
    }
    // What people set, per customer: each value of each field, and whole
    // names (a rename is two field edits made together).
    let mut set_by_people: HashMap<&str, HashSet<(&str, String)>> = HashMap::new();
    for (i, e) in inputs.edits.iter().enumerate() {
        let values = set_by_people.entry(&e.local_id).or_default();
        match e.field {
            "Email" => values.insert(("email", e.value.clone())),
            "Phone" => values.insert(("phone", e.value.clone())),
            "FirstName" => match inputs.edits.get(i + 1) {
                Some(last) if last.field == "LastName" && last.at_ms == e.at_ms => {
                    values.insert(("name", format!("{} {}", e.value, last.value)))
                }
                _ => false,
            },
            _ => false,
        };
    }
    let passed = diesel::sql_query(
        "SELECT o.id::text AS id, o.local_id::text AS local_id, o.origin, o.fields
         FROM outbox o WHERE o.origin = 'salesforce'
            OR (o.origin = 'stripe' AND EXISTS (SELECT 1 FROM id_map m WHERE m.local_id = o.local_id
                AND m.service = 'stripe' AND m.external_id LIKE 'cus_chaosapi%'))",
    )
    .load::<Passed>(conn)?;
    for row in passed {
        let explained = row.origin == "salesforce"
            && row.fields.as_object().is_some_and(|fields| {
                let people = set_by_people.get(row.local_id.as_str());
                fields
                    .iter()
                    .filter(|(k, _)| {
                        matches!(k.as_str(), "name" | "email" | "phone" | "description")
                    })
                    .all(|(k, value)| {
                        people.is_some_and(|p| {
                            p.contains(&(k.as_str(), text(value.as_str()).unwrap_or_default()))
                        })
                    })
            });
        if !explained {
            sf.echoes_passed_on += 1;
            sf.suspects.push(row.local_id.clone());
            notes.push(format!(
                "outbox row {} (origin {}) of customer {} passes on {} that no one but us set",
                row.id, row.origin, row.local_id, row.fields
            ));
        }
    }
    for n in notes {
        v.note(n);
    }
    Ok(())
}

/// Plants one defect of each kind the Salesforce check looks for (a
/// Contact changed in a copy of the fake's state, a person's edit dropped
/// from the local row and an echo passed on, both in a transaction rolled
/// back, unexplained writes in a copy of the fake's calls) and returns
/// those it failed to catch.
pub fn self_test(
    conn: &mut PgConnection,
    inputs: &Inputs<'_>,
) -> anyhow::Result<Vec<&'static str>> {
    let baseline = {
        let mut v = Verdict::default();
        verify(conn, inputs, &mut v)?;
        v.salesforce
    };
    let mut salesforce = inputs.salesforce.clone();
    // A Contact of an API customer changed behind everyone's back.
    if let Some(contact) = inputs
        .expected
        .api_customers
        .keys()
        .find_map(|id| salesforce.contact_of(id))
        .and_then(|c| c["Id"].as_str().map(str::to_owned))
    {
        for c in &mut salesforce.contacts {
            if c["Id"] == contact.as_str() {
                c["Email"] = Value::from("planted@example.invalid");
            }
        }
    }
    // Writes no delivered change explains, beyond what faults allow.
    for _ in 0..=inputs.repeats_allowed {
        salesforce.calls.push(Call {
            method: "PATCH".into(),
            path: "/services/data/v61.0/sobjects/Contact/003000000000000AAA".into(),
            status: 204,
        });
    }
    // A person's edit that stands, for the local row to drop.
    let standing = standing_edit(inputs);
    const ROLLED_BACK: &str = "the planted Salesforce defects are rolled back";
    let mut missed = Vec::new();
    let planted = conn.transaction::<(), anyhow::Error, _>(|conn| {
        if let Some(edit) = &standing {
            let column = match edit.field {
                "Email" => "email",
                "Phone" => "phone",
                _ => "name",
            };
            diesel::sql_query(format!(
                "UPDATE customers SET {column} = 'planted' WHERE id = $1::uuid"
            ))
            .bind::<Text, _>(&edit.local_id)
            .execute(conn)?;
        }
        // Stripe's echo of our write passed on to Salesforce.
        conn.batch_execute(
            "INSERT INTO outbox (entity, local_id, operation, fields, origin)
             SELECT 'customer', m.local_id, 'update', '{\"name\": \"planted\"}', 'stripe'
             FROM id_map m WHERE m.service = 'stripe' AND m.external_id LIKE 'cus_chaosapi%' LIMIT 1",
        )?;
        let planted_inputs = Inputs {
            salesforce: &salesforce,
            ..*inputs
        };
        let mut v = Verdict::default();
        verify(conn, &planted_inputs, &mut v)?;
        let s = v.salesforce;
        for (caught, kind) in [
            (
                s.customers_divergent > baseline.customers_divergent,
                "a Contact diverging from the local row",
            ),
            (
                standing.is_some() && s.person_edits_lost > baseline.person_edits_lost,
                "a person's edit lost",
            ),
            (
                s.salesforce_writes_unexplained > baseline.salesforce_writes_unexplained,
                "an unexplained Salesforce write",
            ),
            (
                s.echoes_passed_on > baseline.echoes_passed_on,
                "an echo passed on",
            ),
        ] {
            if !caught {
                missed.push(kind);
            }
        }
        Err(anyhow::anyhow!(ROLLED_BACK))
    });
    match planted {
        Err(e) if e.to_string() == ROLLED_BACK => Ok(missed),
        Err(e) => Err(e),
        Ok(()) => unreachable!("the transaction always rolls back"),
    }
}

/// A person's edit no later write superseded, if the load made one.
fn standing_edit(inputs: &Inputs<'_>) -> Option<PersonEdit> {
    let mut last = HashMap::new();
    for w in &inputs.salesforce.history {
        last.insert((w.contact_id.as_str(), w.field.as_str()), w);
    }
    inputs
        .edits
        .iter()
        .rev()
        .find(|e| {
            last.get(&(e.contact_id.as_str(), e.field))
                .is_some_and(|w| w.user == PERSON && w.value.as_str() == Some(e.value.as_str()))
        })
        .cloned()
}
