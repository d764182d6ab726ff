//! A customer's sync state per external service, derived from `id_map`
//! (the link) and the outbox (changes not yet acknowledged, and the last
//! outcome).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid as SqlUuid};
use serde::Serialize;

use crate::customers::CustomerId;
use crate::db::schema::id_map;
use crate::sync::{entity, service};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A local change has not been acknowledged by the service yet.
    Pending,
    /// The service holds the latest local change (or the row came from it).
    Synced,
    /// The last change was refused by the service; `error` says why.
    Failed,
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "synced" => Ok(Self::Synced),
            "failed" => Ok(Self::Failed),
            other => Err(format!("{other:?} is not one of pending, synced, failed")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncState {
    /// The service's id for the customer, once it has one.
    pub id: Option<String>,
    pub status: Status,
    pub synced_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(QueryableByName)]
struct OutboxSummary {
    #[diesel(sql_type = SqlUuid)]
    local_id: CustomerId,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = Nullable<Text>)]
    last_status: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

/// The services a customer can be synced to, with `id_map.entity` of its
/// counterpart there. Stripe is always shown; another service once it has
/// handled a change of the customer (a link or a delivery), since serve
/// does not know which adapters run.
const SERVICES: [(&str, &str, bool); 2] = [
    (service::STRIPE, entity::CUSTOMER, true),
    (service::SALESFORCE, entity::CONTACT, false),
];

/// Sync state of each customer in `ids`, per service.
pub fn for_customers(
    conn: &mut PgConnection,
    ids: &[CustomerId],
) -> QueryResult<HashMap<CustomerId, BTreeMap<&'static str, SyncState>>> {
    let mut states: HashMap<CustomerId, BTreeMap<&'static str, SyncState>> =
        ids.iter().map(|id| (*id, BTreeMap::new())).collect();
    for (service, linked_entity, always) in SERVICES {
        for (id, (state, known)) in of_service(conn, ids, service, linked_entity)? {
            if always || known {
                states.entry(id).or_default().insert(service, state);
            }
        }
    }
    Ok(states)
}

/// Each customer's state at one service, and whether the service has
/// handled any of its changes.
fn of_service(
    conn: &mut PgConnection,
    ids: &[CustomerId],
    service: &'static str,
    linked_entity: &'static str,
) -> QueryResult<Vec<(CustomerId, (SyncState, bool))>> {
    // A change the service itself reported is not waiting for it.
    // Outbox first, links second: each outbound worker commits a create's
    // delivery and its link together, so a commit landing between the two
    // reads shows as still pending, never as synced without an id.
    let summaries: HashMap<CustomerId, OutboxSummary> = diesel::sql_query(
        "SELECT o.local_id,
                count(*) FILTER (WHERE d.outbox_id IS NULL) AS pending,
                (array_agg(d.status ORDER BY o.id DESC) FILTER (WHERE d.outbox_id IS NOT NULL))[1] AS last_status,
                (array_agg(d.error ORDER BY o.id DESC) FILTER (WHERE d.outbox_id IS NOT NULL))[1] AS last_error
           FROM outbox o
           LEFT JOIN outbox_deliveries d ON d.outbox_id = o.id AND d.service = $2
          WHERE o.entity = $3 AND o.local_id = ANY($1) AND o.origin <> $2
          GROUP BY o.local_id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Text, _>(service)
    .bind::<Text, _>(entity::CUSTOMER)
    .load::<OutboxSummary>(conn)?
    .into_iter()
    .map(|s| (s.local_id, s))
    .collect();
    let links: HashMap<CustomerId, (String, DateTime<Utc>)> = id_map::table
        .filter(id_map::service.eq(service))
        .filter(id_map::entity.eq(linked_entity))
        .filter(id_map::local_id.eq_any(ids))
        .select((id_map::local_id, id_map::external_id, id_map::synced_at))
        .load::<(CustomerId, String, DateTime<Utc>)>(conn)?
        .into_iter()
        .map(|(l, e, s)| (l, (e, s)))
        .collect();

    Ok(ids
        .iter()
        .map(|id| {
            let link = links.get(id);
            let summary = summaries.get(id);
            let status = match summary {
                Some(s) if s.pending > 0 => Status::Pending,
                Some(s) if s.last_status.as_deref() == Some("failed") => Status::Failed,
                _ if link.is_some() => Status::Synced,
                Some(s) if s.last_status.is_some() => Status::Synced,
                _ => Status::Pending,
            };
            let state = SyncState {
                id: link.map(|(e, _)| e.clone()),
                status,
                synced_at: link.map(|(_, s)| *s),
                error: summary
                    .filter(|_| status == Status::Failed)
                    .and_then(|s| s.last_error.clone()),
            };
            let known = link.is_some() || summary.is_some_and(|s| s.last_status.is_some());
            (*id, (state, known))
        })
        .collect())
}

/// A customer whose change a service has not taken: pending or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeedsAttention {
    pub customer_id: CustomerId,
    pub email: Option<String>,
    pub service: &'static str,
    #[serde(flatten)]
    pub state: SyncState,
    /// The change that failed, for a retry (`outbox` row id).
    #[serde(skip)]
    pub failed_change: Option<i64>,
}

/// Customers pending or failed at `service` (`stripe` or `salesforce`),
/// most recently changed first, at most `limit`; `only` narrows to one
/// status.
pub fn needing_attention(
    conn: &mut PgConnection,
    service: &'static str,
    only: Option<Status>,
    limit: i64,
) -> QueryResult<Vec<NeedsAttention>> {
    #[derive(QueryableByName)]
    struct Candidate {
        #[diesel(sql_type = SqlUuid)]
        local_id: CustomerId,
        #[diesel(sql_type = Nullable<BigInt>)]
        failed_change: Option<i64>,
    }
    // The same reading as `of_service`: a change not delivered is
    // pending; else the newest delivered one decides failed. The status
    // is chosen here, before the limit, so many pending customers cannot
    // hide a failed one.
    let candidates: Vec<Candidate> = diesel::sql_query(
        "SELECT o.local_id,
                (array_agg(o.id ORDER BY o.id DESC) FILTER (WHERE d.outbox_id IS NOT NULL))[1] AS failed_change
           FROM outbox o
           LEFT JOIN outbox_deliveries d ON d.outbox_id = o.id AND d.service = $1
          WHERE o.entity = $2 AND o.origin <> $1
          GROUP BY o.local_id
         HAVING CASE $4
                  WHEN 'pending' THEN count(*) FILTER (WHERE d.outbox_id IS NULL) > 0
                  WHEN 'failed' THEN count(*) FILTER (WHERE d.outbox_id IS NULL) = 0
                    AND (array_agg(d.status ORDER BY o.id DESC) FILTER (WHERE d.outbox_id IS NOT NULL))[1] = 'failed'
                  ELSE count(*) FILTER (WHERE d.outbox_id IS NULL) > 0
                    OR (array_agg(d.status ORDER BY o.id DESC) FILTER (WHERE d.outbox_id IS NOT NULL))[1] = 'failed'
                END
          ORDER BY max(o.id) DESC
          LIMIT $3",
    )
    .bind::<Text, _>(service)
    .bind::<Text, _>(entity::CUSTOMER)
    .bind::<BigInt, _>(limit)
    .bind::<Text, _>(match only {
        Some(Status::Pending) => "pending",
        Some(Status::Failed) => "failed",
        // Synced customers are not listed here: "either".
        Some(Status::Synced) | None => "either",
    })
    .load(conn)?;
    let ids: Vec<CustomerId> = candidates.iter().map(|c| c.local_id).collect();
    let linked_entity = SERVICES
        .iter()
        .find(|(s, _, _)| *s == service)
        .map_or(entity::CUSTOMER, |(_, e, _)| *e);
    let states: HashMap<CustomerId, SyncState> = of_service(conn, &ids, service, linked_entity)?
        .into_iter()
        .map(|(id, (state, _))| (id, state))
        .collect();
    let emails: HashMap<CustomerId, Option<String>> = crate::db::schema::customers::table
        .filter(crate::db::schema::customers::id.eq_any(&ids))
        .select((
            crate::db::schema::customers::id,
            crate::db::schema::customers::email,
        ))
        .load::<(CustomerId, Option<String>)>(conn)?
        .into_iter()
        .collect();
    Ok(candidates
        .into_iter()
        .filter_map(|c| {
            let state = states.get(&c.local_id)?.clone();
            let wanted = match only {
                Some(status) => state.status == status,
                None => state.status != Status::Synced,
            };
            wanted.then(|| NeedsAttention {
                customer_id: c.local_id,
                email: emails.get(&c.local_id).cloned().flatten(),
                service,
                failed_change: (state.status == Status::Failed)
                    .then_some(c.failed_change)
                    .flatten(),
                state,
            })
        })
        .collect())
}

/// `service` as the registry of services names it, if it is one.
pub fn service_named(name: &str) -> Option<&'static str> {
    SERVICES.iter().map(|(s, _, _)| *s).find(|s| *s == name)
}
