//! The Salesforce check's self-test: it plants one defect of each kind
//! the check looks for and reports those it failed to catch.

use std::collections::HashMap;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use serde_json::Value;

use crate::check::Verdict;
use crate::fake_salesforce::{Call, FieldWrite, INTEGRATION_USER, PERSON};
use crate::salesforce::PersonEdit;
use crate::salesforce_check::{verify, Inputs, SalesforceVerdict};
use crate::salesforce_pingpong::written_customer;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Plants one defect of each kind the Salesforce check looks for (a
/// Contact changed in a copy of the fake's state, a person's edit dropped
/// from the local row, an echo passed on and a person's change passed on
/// too often, in a transaction rolled back, unexplained writes of one
/// Contact in a copy of the fake's calls; and, on its own, a stale write
/// of ours over a standing edit in a copy of the fake's changes) and
/// returns those it failed to catch.
pub fn self_test(
    conn: &mut PgConnection,
    inputs: &Inputs<'_>,
) -> anyhow::Result<Vec<&'static str>> {
    let baseline = run(conn, inputs)?;
    let mut salesforce = inputs.salesforce.clone();
    // A Contact of an API customer changed behind everyone's back.
    let api_contact = inputs.expected.api_customers.keys().find_map(|id| {
        let contact = salesforce.contact_of(id)?;
        Some((id.clone(), contact["Id"].as_str()?.to_owned()))
    });
    if let Some((_, contact)) = &api_contact {
        for c in &mut salesforce.contacts {
            if c["Id"] == contact.as_str() {
                c["Email"] = Value::from("planted@example.invalid");
            }
        }
    }
    // Writes of that Contact beyond its delivered changes and the repeats
    // faults allow: fewer than the old bound in all allowed.
    if let Some((local_id, contact)) = &api_contact {
        let customer_of = HashMap::from([(contact.as_str(), local_id.as_str())]);
        let written = salesforce
            .calls
            .iter()
            .filter(|c| {
                c.method != "GET"
                    && c.status < 300
                    && written_customer(&c.path, &customer_of) == *local_id
            })
            .count();
        let delivered = diesel::sql_query(
            "SELECT count(*) AS n FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE d.service = 'salesforce' AND d.status = 'synced' AND o.local_id = $1::uuid",
        )
        .bind::<Text, _>(local_id)
        .get_result::<Count>(conn)?
        .n as usize;
        // At least one, should the Contact be beyond its bound already.
        let extra = (delivered + inputs.repeating_faults + 1)
            .saturating_sub(written)
            .max(1);
        for _ in 0..extra {
            salesforce.calls.push(Call {
                method: "PATCH".into(),
                path: format!("/services/data/v61.0/sobjects/Contact/{contact}"),
                status: 204,
            });
        }
    }
    // A person's edit that stands, for the local row to drop.
    let standing = standing_edit(inputs);
    // A person's value, for a change passed on from Salesforce more often
    // than that customer's edits can arrive.
    let repeated = inputs
        .edits
        .iter()
        .find(|e| matches!(e.field, "Email" | "Phone"));
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
        if let Some(edit) = repeated {
            // Twice per edit of the customer, plus one: beyond its bound.
            let times = inputs
                .edits
                .iter()
                .filter(|e| e.local_id == edit.local_id)
                .count()
                * 2
                + 1;
            diesel::sql_query(
                "INSERT INTO outbox (entity, local_id, operation, fields, origin)
                 SELECT 'customer', $1::uuid, 'update', jsonb_build_object($2, $3), 'salesforce'
                 FROM generate_series(1, $4)",
            )
            .bind::<Text, _>(&edit.local_id)
            .bind::<Text, _>(edit.field.to_lowercase())
            .bind::<Text, _>(&edit.value)
            .bind::<Integer, _>(times as i32)
            .execute(conn)?;
        }
        let s = run(
            conn,
            &Inputs {
                salesforce: &salesforce,
                ..*inputs
            },
        )?;
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
                api_contact.is_some()
                    && s.salesforce_writes_unexplained > baseline.salesforce_writes_unexplained,
                "unexplained writes of one Contact",
            ),
            (
                s.echoes_passed_on > baseline.echoes_passed_on,
                "an echo passed on",
            ),
            (
                repeated.is_some()
                    && s.salesforce_rows_unexplained > baseline.salesforce_rows_unexplained,
                "a person's change passed on beyond their edits",
            ),
        ] {
            if !caught {
                missed.push(kind);
            }
        }
        Err(anyhow::anyhow!(ROLLED_BACK))
    });
    match planted {
        Err(e) if e.to_string() == ROLLED_BACK => {}
        Err(e) => return Err(e),
        Ok(()) => unreachable!("the transaction always rolls back"),
    }
    // On its own, as its loss would also be seen by the local row planted
    // above: a write of ours after a standing edit, of a value the field
    // held before it (no change newer than the edit carries it). All three
    // systems may then agree; the edit is still lost.
    if let Some(edit) = &standing {
        let mut salesforce = inputs.salesforce.clone();
        let earlier = salesforce
            .history
            .iter()
            .filter(|w| w.contact_id == edit.contact_id && w.field == edit.field)
            .take_while(|w| w.value.as_str() != Some(edit.value.as_str()))
            .filter(|w| !w.value.is_null())
            .last()
            .map_or_else(|| Value::from("planted-older"), |w| w.value.clone());
        let made = salesforce
            .history
            .iter()
            .rev()
            .find(|w| w.contact_id == edit.contact_id && w.field == edit.field)
            .map_or(0, |w| w.at);
        salesforce.history.push(FieldWrite {
            contact_id: edit.contact_id.clone(),
            field: edit.field.to_owned(),
            value: earlier,
            user: INTEGRATION_USER.to_owned(),
            stamp: edit.stamp,
            at: made + 1,
        });
        let s = run(
            conn,
            &Inputs {
                salesforce: &salesforce,
                ..*inputs
            },
        )?;
        if s.person_edits_overwritten <= baseline.person_edits_overwritten {
            missed.push("a stale write of ours over a person's edit");
        }
    }
    Ok(missed)
}

fn run(conn: &mut PgConnection, inputs: &Inputs<'_>) -> anyhow::Result<SalesforceVerdict> {
    let mut v = Verdict::default();
    verify(conn, inputs, &mut v)?;
    Ok(v.salesforce)
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
