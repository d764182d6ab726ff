//! The Salesforce part of the check, against the people's edits the load
//! recorded and what the Salesforce fake holds and did:
//! - no Salesforce edit lost: each person's last edit of a Contact field
//!   is superseded, or what the local row and the Stripe customer hold. A
//!   later write (in the fake's own order of changes: whole-second stamps
//!   cannot order them) supersedes it if a person made it, or if it is
//!   ours and delivers a change the engine took after the edit or still
//!   had on its way to Salesforce then (the conflict policy lets that
//!   one win). Any other write of ours after it overwrote it with a stale
//!   value: the edit is lost, even though all three systems then agree;
//! - three systems converged: every customer the soak wrote or edited
//!   agrees on name, email and phone in the local row, at Stripe (for the
//!   API's customers, the only ones the Stripe fake holds) and in its
//!   Contact; and the API's newest name of each reached its Contact;
//! - no ping-pong (`salesforce_pingpong`): each Contact saw no more
//!   writes than changes delivered to it (plus one per killed worker or
//!   crashed Postgres), Stripe's echoes of our writes were not passed on
//!   to Salesforce, and the changes passed on from Salesforce carry values
//!   people set, no more of them per customer than its people's edits
//!   could bring (each once polled, and once more if relayed).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use serde_json::Value;

use crate::check::Verdict;
use crate::fake_salesforce::{FieldWrite, INTEGRATION_USER, PERSON};
use crate::faults::{FaultKind, Injected};
use crate::load::Expected;
use crate::salesforce::{contact_name, PersonEdit, SalesforceRecord};
use crate::stripe::StripeRecord;

/// Kinds of defect [`self_test`] plants.
pub const PLANTED: usize = 6;

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
    /// Of them, overwritten by a write of ours delivering no change
    /// newer than the edit (also counted in `person_edits_lost`).
    pub person_edits_overwritten: usize,
    pub person_edits_lost: usize,
    pub customers_checked: usize,
    pub customers_divergent: usize,
    pub salesforce_writes: usize,
    pub salesforce_deliveries: usize,
    /// Writes beyond the deliveries and the repeats faults allow, per
    /// Contact.
    pub salesforce_writes_unexplained: usize,
    /// Outbox rows of origin `salesforce`, and those beyond what their
    /// customer's people's edits explain.
    pub salesforce_rows: usize,
    pub salesforce_rows_unexplained: usize,
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
            + self.salesforce_rows_unexplained
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
                    "  of them not superseded (checked)",
                    self.person_edits_final,
                ),
                (
                    "LOST: a person's edit not in the local row or Stripe",
                    self.person_edits_lost,
                ),
                (
                    "  of them overwritten by a stale write of ours",
                    self.person_edits_overwritten,
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
                    "changes passed on from Salesforce / beyond people's edits",
                    self.salesforce_rows,
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
                } else if label.starts_with("changes passed on from Salesforce") {
                    format!("{value} / {}", self.salesforce_rows_unexplained)
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

/// A change salesforce-outbound delivered to Salesforce, with when the
/// engine took it and when the delivery was recorded (the database's
/// clock, the host's, as is the fake's).
#[derive(QueryableByName)]
pub(crate) struct Delivered {
    #[diesel(sql_type = Text)]
    local_id: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    fields: Value,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    created_ms: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    delivered_ms: i64,
}

#[derive(QueryableByName)]
pub(crate) struct Passed {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub local_id: String,
    #[diesel(sql_type = Text)]
    pub origin: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub fields: Value,
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
    /// Kills of salesforce-outbound and Postgres crashes: each can lose
    /// the record of a batch delivered, which is then sent again.
    pub repeating_faults: usize,
    pub stats: &'a crate::salesforce::PeopleStats,
}

/// Faults that may make Salesforce see writes twice: a batch
/// salesforce-outbound delivered whose record a kill of it or a Postgres
/// crash lost is delivered again.
pub fn repeating_faults(faults: &[Injected]) -> usize {
    faults
        .iter()
        .filter(|f| {
            f.kind == FaultKind::RestartPostgres
                || (f.kind == FaultKind::KillProcess
                    && f.target.as_deref() == Some("salesforce-outbound"))
        })
        .count()
}

pub(crate) fn text(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Splits a name as salesforce-outbound does: `FirstName` all but the
/// last word, `LastName` the last word.
pub(crate) fn name_part(name: Option<&str>, field: &str) -> Option<String> {
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
    let delivered = diesel::sql_query(
        "SELECT o.local_id::text AS local_id, o.fields,
                (extract(epoch FROM o.created_at) * 1000)::bigint AS created_ms,
                (extract(epoch FROM d.delivered_at) * 1000)::bigint AS delivered_ms
         FROM outbox o JOIN outbox_deliveries d ON d.outbox_id = o.id
         WHERE d.service = 'salesforce' AND d.status = 'synced' AND o.entity = 'customer'",
    )
    .load::<Delivered>(conn)?;
    check_edits(inputs, &locals, &delivered, v);
    check_converged(inputs, &locals, v);
    crate::salesforce_pingpong::check(conn, inputs, v)
}

/// Per customer and Contact field, the values delivered changes set it
/// to, each with its change.
type Sent<'a> = HashMap<(&'a str, &'a str), Vec<(Option<String>, &'a Delivered)>>;

/// What a delivered change set a Contact field to, if it set it.
fn sent_value(fields: &Value, field: &str) -> Option<Option<String>> {
    let key = match field {
        "FirstName" | "LastName" => "name",
        "Email" => "email",
        "Phone" => "phone",
        _ => return None,
    };
    let value = fields.get(key)?.as_str();
    Some(match key {
        "name" => name_part(value, field),
        _ => text(value),
    })
}

fn check_edits(
    inputs: &Inputs<'_>,
    locals: &HashMap<String, Local>,
    delivered: &[Delivered],
    v: &mut Verdict,
) {
    let sf = &mut v.salesforce;
    sf.person_edits = inputs.edits.len();
    // The fake's changes of each (Contact, field), in order.
    let mut changes: HashMap<(&str, &str), Vec<&FieldWrite>> = HashMap::new();
    for w in &inputs.salesforce.history {
        changes
            .entry((w.contact_id.as_str(), w.field.as_str()))
            .or_default()
            .push(w);
    }
    // What each customer's delivered changes set each field to: our
    // updates send only the fields a change sets, so each write of ours
    // carries one of these values.
    let mut sent: Sent<'_> = HashMap::new();
    for d in delivered {
        for field in ["FirstName", "LastName", "Email", "Phone"] {
            if let Some(value) = sent_value(&d.fields, field) {
                sent.entry((d.local_id.as_str(), field))
                    .or_default()
                    .push((value, d));
            }
        }
    }
    let mut notes = Vec::new();
    let mut checked = HashSet::new();
    for edit in inputs.edits.iter().rev() {
        let key = (edit.contact_id.as_str(), edit.field);
        // Only the person's last edit of a field can still stand.
        if !checked.insert(key) {
            continue;
        }
        let Some(list) = changes.get(&key) else {
            continue;
        };
        let Some(at) = list
            .iter()
            .rposition(|w| w.user == PERSON && w.value.as_str() == Some(edit.value.as_str()))
        else {
            continue;
        };
        let made = list[at].at;
        let sent_here = sent
            .get(&(edit.local_id.as_str(), edit.field))
            .map_or(&[][..], Vec::as_slice);
        // The next write of the field decides: a person's supersedes it;
        // ours supersedes it only with a change newer than the edit.
        let stale = match list.get(at + 1) {
            None => None,
            Some(w) if w.user != INTEGRATION_USER => continue,
            Some(w) => {
                let value = text(w.value.as_str());
                let newer = sent_here.iter().any(|(sent, d)| {
                    *sent == value
                        && (d.created_ms > made || pending_at(d, &value, &list[..at], made))
                });
                if newer {
                    continue;
                }
                Some(w)
            }
        };
        sf.person_edits_final += 1;
        if let Some(w) = stale {
            sf.person_edits_overwritten += 1;
            sf.person_edits_lost += 1;
            sf.suspects.push(edit.local_id.clone());
            notes.push(format!(
                "a person set {} of Contact {} (customer {}) to {:?}; our next write of it, {}, \
                 delivered no change newer than the edit",
                edit.field, edit.contact_id, edit.local_id, edit.value, w.value
            ));
            continue;
        }
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

/// Whether change `d`, setting `value`, was still on its way to
/// Salesforce when a person edited the field at `made`: taken before it,
/// its delivery recorded after it, and not already written by then (our
/// writes of the field before the edit, `before`). The conflict policy
/// lets such a change win over the edit; one already written is stale.
fn pending_at(d: &Delivered, value: &Option<String>, before: &[&FieldWrite], made: i64) -> bool {
    d.delivered_ms > made
        && !before.iter().any(|w| {
            w.user == INTEGRATION_USER && w.at >= d.created_ms && text(w.value.as_str()) == *value
        })
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
