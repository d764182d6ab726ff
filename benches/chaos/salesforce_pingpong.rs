//! The ping-pong part of the Salesforce check (`salesforce_check`): no
//! change goes round between the services. Counted per customer (each
//! has one Contact), so a write or a change passed on again and again is
//! seen even where the totals hide it among others' lighter traffic.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::check::Verdict;
use crate::fake_salesforce::EXTERNAL_ID_FIELD;
use crate::salesforce_check::{text, Inputs, Passed};

const CONTACT_PATH: &str = "/services/data/v61.0/sobjects/Contact/";

#[derive(QueryableByName)]
struct PerCustomer {
    #[diesel(sql_type = Text)]
    local_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The customer a Contact write was for: an upsert names it by the
/// external id, the other writes name the Contact. A Contact the fake
/// does not hold keeps its own id (no delivery explains its writes).
pub(crate) fn written_customer(path: &str, customer_of: &HashMap<&str, &str>) -> String {
    let rest = path.strip_prefix(CONTACT_PATH).unwrap_or(path);
    let rest = rest.split('?').next().unwrap_or(rest);
    match rest.split_once('/') {
        Some((field, local_id)) if field == EXTERNAL_ID_FIELD => local_id.to_owned(),
        _ => customer_of
            .get(rest)
            .map_or_else(|| format!("Contact {rest}"), |id| (*id).to_owned()),
    }
}

pub fn check(conn: &mut PgConnection, inputs: &Inputs<'_>, v: &mut Verdict) -> anyhow::Result<()> {
    let mut notes = Vec::new();
    check_writes(conn, inputs, v, &mut notes)?;
    check_passed_on(conn, inputs, v, &mut notes)?;
    for n in notes {
        v.note(n);
    }
    Ok(())
}

/// Salesforce's writes against the changes delivered to it, per customer:
/// each kill of salesforce-outbound or Postgres crash may repeat one batch
/// whose record it lost, so one more write of each Contact per such fault
/// (and no more than one Composite batch per fault in all).
fn check_writes(
    conn: &mut PgConnection,
    inputs: &Inputs<'_>,
    v: &mut Verdict,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let sf = &mut v.salesforce;
    let customer_of: HashMap<&str, &str> = inputs
        .salesforce
        .contacts
        .iter()
        .filter_map(|c| Some((c["Id"].as_str()?, c[EXTERNAL_ID_FIELD].as_str()?)))
        .collect();
    let mut writes: HashMap<String, usize> = HashMap::new();
    for c in &inputs.salesforce.calls {
        if c.method != "GET" && c.path.starts_with(CONTACT_PATH) && c.status < 300 {
            *writes
                .entry(written_customer(&c.path, &customer_of))
                .or_default() += 1;
        }
    }
    let deliveries: HashMap<String, usize> = diesel::sql_query(
        "SELECT o.local_id::text AS local_id, count(*) AS n
         FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id
         WHERE d.service = 'salesforce' AND d.status = 'synced' GROUP BY o.local_id",
    )
    .load::<PerCustomer>(conn)?
    .into_iter()
    .map(|r| (r.local_id, r.n as usize))
    .collect();
    sf.salesforce_writes = writes.values().sum();
    sf.salesforce_deliveries = deliveries.values().sum();
    let mut per_customer = 0;
    let mut customers: Vec<_> = writes.into_iter().collect();
    customers.sort_unstable();
    for (customer, n) in customers {
        let delivered = deliveries.get(&customer).copied().unwrap_or(0);
        let beyond = n.saturating_sub(delivered + inputs.repeating_faults);
        if beyond > 0 {
            per_customer += beyond;
            notes.push(format!(
                "Salesforce saw {n} writes of customer {customer}'s Contact for {delivered} delivered changes ({} repeats allowed)",
                inputs.repeating_faults
            ));
            sf.suspects.push(customer);
        }
    }
    let batches = inputs.repeating_faults * stripe_sync::salesforce::client::COMPOSITE_LIMIT;
    let in_all = sf
        .salesforce_writes
        .saturating_sub(sf.salesforce_deliveries + batches);
    if in_all > 0 {
        notes.push(format!(
            "Salesforce saw {} writes for {} delivered changes ({batches} repeats allowed)",
            sf.salesforce_writes, sf.salesforce_deliveries
        ));
    }
    sf.salesforce_writes_unexplained = per_customer.max(in_all);
    Ok(())
}

/// The changes passed on to Salesforce from Stripe (for the API's
/// customers, all Stripe reports are echoes of our writes) and from
/// Salesforce to Stripe: each must carry values a person set, and a
/// customer's count is bounded by its people's edits, each of which can
/// reach the engine once by the poller and once more by the relay. So
/// one person's value passed on again and again is counted.
fn check_passed_on(
    conn: &mut PgConnection,
    inputs: &Inputs<'_>,
    v: &mut Verdict,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let sf = &mut v.salesforce;
    // What people set, per customer: each value of each field, and whole
    // names (a rename is two field edits made together); and how many
    // times their edits may arrive (a rename's `LastName` comes with its
    // `FirstName`, in one edit).
    let mut set_by_people: HashMap<&str, HashSet<(&str, String)>> = HashMap::new();
    let mut arrivals: HashMap<&str, usize> = HashMap::new();
    for (i, e) in inputs.edits.iter().enumerate() {
        if e.field != "LastName" {
            *arrivals.entry(&e.local_id).or_default() += 1 + usize::from(e.relayed);
        }
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
                AND m.service = 'stripe' AND m.external_id LIKE 'cus_chaosapi%'))
         ORDER BY o.id",
    )
    .load::<Passed>(conn)?;
    let mut from_salesforce: HashMap<&str, usize> = HashMap::new();
    for row in &passed {
        if row.origin == "salesforce" {
            sf.salesforce_rows += 1;
            *from_salesforce.entry(&row.local_id).or_default() += 1;
        }
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
    let mut customers: Vec<_> = from_salesforce.into_iter().collect();
    customers.sort_unstable();
    for (customer, n) in customers {
        let bound = arrivals.get(customer).copied().unwrap_or(0);
        if n > bound {
            sf.salesforce_rows_unexplained += n - bound;
            sf.suspects.push(customer.to_owned());
            notes.push(format!(
                "customer {customer}: {n} changes passed on from Salesforce, its people's edits explain {bound}"
            ));
        }
    }
    Ok(())
}
