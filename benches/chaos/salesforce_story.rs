//! The story behind a Salesforce finding: what happened to the customers
//! the findings name, in time order, to start looking from.

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::check::Verdict;
use crate::salesforce_check::Inputs;

#[derive(QueryableByName)]
struct Moment {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    at: i64,
    #[diesel(sql_type = Text)]
    what: String,
}

/// The story of the first customers the findings name, for whoever
/// looks into them: their outbox rows and deliveries, the Contact
/// versions applied, and the fake's changes and people's edits of the
/// Contact, in time order (milliseconds).
pub fn explain(
    conn: &mut PgConnection,
    inputs: &Inputs<'_>,
    v: &Verdict,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut suspects = v.salesforce.suspects.clone();
    suspects.dedup();
    for local_id in suspects.iter().take(5) {
        let contact_id = inputs
            .salesforce
            .contact_of(local_id)
            .and_then(|c| c["Id"].as_str())
            .unwrap_or_default()
            .to_owned();
        let mut moments = diesel::sql_query(
            "SELECT (extract(epoch FROM o.created_at) * 1000)::bigint AS at,
                    format('outbox %s %s origin %s %s', o.id, o.operation, o.origin, o.fields) AS what
             FROM outbox o WHERE o.local_id = $1::uuid
             UNION ALL
             SELECT (extract(epoch FROM d.delivered_at) * 1000)::bigint,
                    format('delivered %s to %s: %s %s', d.outbox_id, d.service, d.status, coalesce(d.error, ''))
             FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id WHERE o.local_id = $1::uuid
             UNION ALL
             SELECT (extract(epoch FROM l.processed_at) * 1000)::bigint,
                    format('applied %s: %s (echo %s)', l.event_id, l.outcome, l.echo)
             FROM event_ledger l WHERE l.service = 'salesforce' AND l.object_id = $2",
        )
        .bind::<Text, _>(local_id)
        .bind::<Text, _>(&contact_id)
        .load::<Moment>(conn)?;
        moments.extend(
            inputs
                .salesforce
                .history
                .iter()
                .filter(|w| w.contact_id == contact_id)
                .map(|w| Moment {
                    at: w.at,
                    what: format!(
                        "Salesforce {} = {} by {} (stamp {})",
                        w.field, w.value, w.user, w.stamp
                    ),
                }),
        );
        moments.extend(
            inputs
                .edits
                .iter()
                .filter(|e| &e.local_id == local_id)
                .map(|e| Moment {
                    at: e.at_ms,
                    what: format!("person's edit {} = {:?} recorded", e.field, e.value),
                }),
        );
        moments.sort_by_key(|m| m.at);
        out.push_str(&format!("customer {local_id}, Contact {contact_id}:\n"));
        for m in moments {
            out.push_str(&format!("  {} {}\n", m.at, m.what));
        }
    }
    Ok(out)
}
