//! The catalog's backlog: a realistic mix of Stripe object types, as an
//! account with payments sees them, for the inbound apply's type-mix
//! figure beside the customers-only one.

use serde_json::{json, Value};

/// The mix, in events per 100: many payment intents, charges, invoices and
/// checkout sessions; fewer customers, products and prices.
const MIX: &[(&str, u64)] = &[
    ("payment_intent", 30),
    ("charge", 25),
    ("invoice", 15),
    ("checkout.session", 15),
    ("customer", 5),
    ("product", 5),
    ("price", 5),
];

/// Objects of each type, updated in turn (each a second after its previous
/// event, so no two events of an object tie).
const OBJECTS_PER_TYPE: u64 = 1_000;

/// Event number `n` of the mix: Stripe's example object of the type (sizes
/// as in the fixtures), numbered so backlogs started at different `n` never
/// share a second for an object.
pub fn mixed_event(n: u64, fixtures: &Value) -> Value {
    let (slot, round) = (n % 100, n / 100);
    let mut at = 0;
    let (object, share) = MIX
        .iter()
        .copied()
        .find(|(_, share)| {
            at += share;
            slot < at
        })
        .expect("the mix sums to 100");
    // This event's number among its type's events.
    let k = round * share + (slot - (at - share));
    let id = format!("{}_mix{}", prefix(object), k % OBJECTS_PER_TYPE);
    let mut o = fixtures[object].clone();
    o["id"] = json!(id);
    o["metadata"] = json!({ "n": n.to_string() });
    if object == "customer" {
        o["discount"] = Value::Null;
    }
    let mut e = fixtures["event"].clone();
    e["id"] = json!(format!("evt_mix_{n}"));
    e["type"] = json!(format!("{object}.updated"));
    e["created"] = json!(1_800_000_000 + (k / OBJECTS_PER_TYPE) as i64);
    e["data"] = json!({ "object": o });
    e["request"] = json!({"id": null, "idempotency_key": null});
    e
}

fn prefix(object: &str) -> &'static str {
    match object {
        "payment_intent" => "pi",
        "charge" => "ch",
        "invoice" => "in",
        "checkout.session" => "cs",
        "customer" => "cus",
        "product" => "prod",
        _ => "price",
    }
}

/// The type mix's own ceiling: the writes its apply makes (each object
/// upserted into its `stripe.<relation>`, generated columns and indexes
/// included), 500 events per transaction, with none of the apply's logic
/// (no ledger, no order check, no locks, no child lists); events/s. The
/// customers in the mix go to `stripe.customers`' table, `customers`.
pub fn upsert_ceiling(
    conn: &mut diesel::PgConnection,
    fixtures: &Value,
    n: usize,
) -> anyhow::Result<f64> {
    use diesel::prelude::*;
    use diesel::sql_types::{Array, BigInt, Jsonb, Text};
    let start = std::time::Instant::now();
    let events: Vec<Value> = (0..n as u64).map(|i| mixed_event(i, fixtures)).collect();
    for batch in events.chunks(500) {
        conn.transaction(|conn| -> anyhow::Result<()> {
            let mut by_relation: std::collections::BTreeMap<&str, Vec<&Value>> =
                std::collections::BTreeMap::new();
            for e in batch {
                let object = &e["data"]["object"];
                let r = stripe_sync::registry::by_object(object["object"].as_str().unwrap())
                    .expect("a registered type");
                by_relation.entry(r.relation).or_default().push(object);
            }
            for (relation, objects) in by_relation {
                // Only the newest version of each object in the batch, as
                // the apply's fold writes it.
                let mut newest: std::collections::HashMap<&str, &Value> =
                    std::collections::HashMap::new();
                for o in objects {
                    newest.insert(o["id"].as_str().unwrap(), o);
                }
                if relation == "customers" {
                    let values: Vec<(&str, &Value)> = newest.into_iter().collect();
                    diesel::sql_query(
                        "INSERT INTO customers (id, stripe_object) \
                         SELECT md5(k)::uuid, o FROM unnest($1, $2) AS v(k, o) \
                         ON CONFLICT (id) DO UPDATE SET stripe_object = excluded.stripe_object, \
                           updated_at = now(), version = customers.version + 1",
                    )
                    .bind::<Array<Text>, _>(values.iter().map(|v| v.0).collect::<Vec<_>>())
                    .bind::<Array<Jsonb>, _>(values.iter().map(|v| v.1).collect::<Vec<_>>())
                    .execute(conn)?;
                    continue;
                }
                let values: Vec<(&str, &Value)> = newest.into_iter().collect();
                diesel::sql_query(format!(
                    "INSERT INTO stripe.\"{relation}\" (account, id, data, remote_version, remote_event_id) \
                     SELECT 'platform', k, o, $3, 'evt' FROM unnest($1, $2) AS v(k, o) \
                     ON CONFLICT (account, id) DO UPDATE SET data = excluded.data, \
                       remote_version = excluded.remote_version, synced_at = now()"
                ))
                .bind::<Array<Text>, _>(values.iter().map(|v| v.0).collect::<Vec<_>>())
                .bind::<Array<Jsonb>, _>(values.iter().map(|v| v.1).collect::<Vec<_>>())
                .bind::<BigInt, _>(1_i64)
                .execute(conn)?;
            }
            Ok(())
        })?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    for r in stripe_sync::registry::RESOURCES {
        let table = if r.is_local_customer() {
            "customers CASCADE".to_owned()
        } else {
            r.table()
        };
        diesel::sql_query(format!("TRUNCATE {table}")).execute(conn)?;
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_keeps_its_shares_and_never_ties_an_object() {
        let fixtures = crate::common::fixtures();
        let mut seen = std::collections::HashMap::new();
        let mut per_type = std::collections::HashMap::new();
        for n in 0..10_000 {
            let e = mixed_event(n, &fixtures);
            let object = e["data"]["object"]["object"].as_str().unwrap().to_owned();
            *per_type.entry(object).or_insert(0) += 1;
            let id = e["data"]["object"]["id"].as_str().unwrap().to_owned();
            let created = e["created"].as_i64().unwrap();
            assert!(seen.insert((id, created), n).is_none(), "event {n} ties");
        }
        assert_eq!(per_type["payment_intent"], 3_000);
        assert_eq!(per_type["price"], 500);
    }
}
