//! `stripe-sync diff [TYPE…] [--repair]`: compares the local mirror with
//! Stripe — counts, then a content hash per object of the fields we keep —
//! and with `--repair` publishes fresh snapshots for the objects that
//! differ. Customers compare the local-first table's fields; every other
//! type compares its typed columns and metadata, streaming: only ids and
//! hashes are held, never the objects of a whole type.

use std::collections::{BTreeMap, BTreeSet};

use diesel::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{resync, snapshot_event, PullContext};
use crate::db::schema::{customers, id_map};
use crate::ingest::unix_now;
use crate::kafka::envelope::SOURCE_REPAIR;
use crate::outbox;
use crate::registry::{Listing, Parent, Resource};
use crate::stripe::AccountId;
use crate::sync::{entity, service};

/// The customer fields the mirror keeps, in a fixed order.
const KEPT_FIELDS: [&str; 5] = ["email", "name", "phone", "description", "metadata"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    pub kind: &'static str,
    pub in_stripe: usize,
    pub in_mirror: usize,
    /// In Stripe, but absent (or tombstoned) locally.
    pub missing_locally: Vec<String>,
    /// Live locally, but not in Stripe's list.
    pub missing_in_stripe: Vec<String>,
    /// In both, with different content: id and the differing fields.
    pub different: Vec<(String, Vec<&'static str>)>,
    /// Not compared: a local change is still on its way to Stripe.
    pub pending_local: usize,
    pub repaired: usize,
    pub api_calls: u64,
}

impl DiffReport {
    pub fn is_clean(&self) -> bool {
        self.missing_locally.is_empty()
            && self.missing_in_stripe.is_empty()
            && self.different.is_empty()
    }
}

impl std::fmt::Display for DiffReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |ids: &mut dyn Iterator<Item = String>| {
            let ids: Vec<String> = ids.collect();
            let shown = ids.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
            if ids.len() > 10 {
                format!("{shown}, … ({} more)", ids.len() - 10)
            } else {
                shown
            }
        };
        writeln!(f, "{:<18} {:>8} {:>8}", self.kind, "stripe", "mirror")?;
        writeln!(
            f,
            "{:<18} {:>8} {:>8}",
            "objects", self.in_stripe, self.in_mirror
        )?;
        writeln!(
            f,
            "{:<18} {:>8}  {}",
            "missing locally",
            self.missing_locally.len(),
            list(&mut self.missing_locally.iter().cloned())
        )?;
        writeln!(
            f,
            "{:<18} {:>8}  {}",
            "missing in Stripe",
            self.missing_in_stripe.len(),
            list(&mut self.missing_in_stripe.iter().cloned())
        )?;
        writeln!(
            f,
            "{:<18} {:>8}  {}",
            "different",
            self.different.len(),
            list(&mut self.different.iter().map(|(id, fields)| {
                if fields.is_empty() {
                    id.clone()
                } else {
                    format!("{id} ({})", fields.join(","))
                }
            }))
        )?;
        writeln!(
            f,
            "{:<18} {:>8}  (local changes still on their way; not compared)",
            "pending", self.pending_local
        )?;
        if self.repaired > 0 {
            writeln!(
                f,
                "{:<18} {:>8}  snapshots published",
                "repaired", self.repaired
            )?;
        }
        write!(f, "{:<18} {:>8}", "Stripe API calls", self.api_calls)
    }
}

/// The kept fields of a customer, as Stripe or the mirror has them.
fn kept(object: &Value) -> BTreeMap<&'static str, Value> {
    KEPT_FIELDS
        .iter()
        .map(|f| {
            let v = object.get(*f).cloned().unwrap_or(Value::Null);
            let v = if *f == "metadata" && v.is_null() {
                json!({})
            } else {
                v
            };
            (*f, v)
        })
        .collect()
}

pub fn content_hash(object: &Value) -> String {
    let canonical = serde_json::to_vec(&kept(object)).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}

struct MirrorRow {
    external_id: String,
    fields: Value,
    pending: bool,
}

/// Diffs one type on one account.
pub async fn run(
    ctx: &PullContext,
    resource: &'static Resource,
    account: &AccountId,
    repair: bool,
) -> anyhow::Result<DiffReport> {
    if resource.is_local_customer() {
        customers(ctx, resource, account, repair).await
    } else {
        mirrored(ctx, resource, account, repair).await
    }
}

async fn customers(
    ctx: &PullContext,
    resource: &'static Resource,
    account: &AccountId,
    repair: bool,
) -> anyhow::Result<DiffReport> {
    let mut report = DiffReport {
        kind: resource.relation,
        ..DiffReport::default()
    };
    // Stripe's side: every live object, whatever order pages come in.
    let (objects, calls) = ctx.list_all(account, resource.path, &[]).await?;
    report.api_calls += calls;
    let remote: BTreeMap<String, Value> = objects
        .into_iter()
        .filter_map(|o| Some((o.get("id")?.as_str()?.to_owned(), o)))
        .collect();
    let read_at = unix_now();

    let mirror: Vec<MirrorRow> = ctx
        .db({
            let account = account.to_owned();
            move |conn| {
                let rows = id_map::table
                    .inner_join(customers::table.on(customers::id.eq(id_map::local_id)))
                    .filter(id_map::service.eq(service::STRIPE))
                    .filter(id_map::account.eq(account))
                    .filter(id_map::entity.eq(entity::CUSTOMER))
                    .filter(id_map::remote_deleted.eq(false))
                    .filter(customers::deleted_at.is_null())
                    .select((
                        id_map::external_id,
                        customers::id,
                        customers::email,
                        customers::name,
                        customers::phone,
                        customers::description,
                        customers::metadata,
                    ))
                    .load::<(String, crate::customers::CustomerId, Option<String>, Option<String>, Option<String>, Option<String>, Value)>(conn)?;
                rows.into_iter()
                    .map(|(external_id, local_id, email, name, phone, description, metadata)| {
                        let pending = !outbox::undelivered(conn, local_id, service::STRIPE)?.is_empty();
                        Ok(MirrorRow {
                            external_id,
                            fields: json!({"email": email, "name": name, "phone": phone, "description": description, "metadata": metadata}),
                            pending,
                        })
                    })
                    .collect::<QueryResult<Vec<_>>>()
            }
        })
        .await?;
    report.in_stripe = remote.len();
    report.in_mirror = mirror.len();

    let mut seen = BTreeSet::new();
    for row in &mirror {
        seen.insert(row.external_id.clone());
        if row.pending {
            report.pending_local += 1;
            continue;
        }
        match remote.get(&row.external_id) {
            None => report.missing_in_stripe.push(row.external_id.clone()),
            Some(object) if content_hash(object) != content_hash(&row.fields) => {
                let (a, b) = (kept(object), kept(&row.fields));
                let fields = KEPT_FIELDS
                    .iter()
                    .copied()
                    .filter(|f| a.get(f) != b.get(f))
                    .collect();
                report.different.push((row.external_id.clone(), fields));
            }
            Some(_) => {}
        }
    }
    report.missing_locally = remote
        .keys()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();

    if repair {
        for id in report
            .missing_locally
            .iter()
            .chain(report.different.iter().map(|(id, _)| id))
        {
            ctx.publish(
                &snapshot_event(resource, account, &remote[id], read_at),
                SOURCE_REPAIR,
                account,
            )
            .await?;
            report.repaired += 1;
        }
        // Not in the list: re-read each to learn whether it is gone.
        for id in &report.missing_in_stripe {
            report.api_calls += 1;
            repair_absent(ctx, resource, None, account, id).await?;
            report.repaired += 1;
            report.api_calls += 1;
        }
    }
    Ok(report)
}

/// An object the mirror has but Stripe's list does not: re-read it (under
/// `parent`, for a type kept under one), and publish what Stripe has (a
/// deleted snapshot if it is gone, naming its parent as the object would).
async fn repair_absent(
    ctx: &PullContext,
    resource: &'static Resource,
    parent: Option<&str>,
    account: &AccountId,
    id: &str,
) -> anyhow::Result<()> {
    let target = resync::Target {
        resource,
        id: id.to_owned(),
        account: account.clone(),
        parent: parent.map(str::to_owned),
    };
    let (object, _gone) = resync::read_current(&ctx.stripe, &target).await?;
    ctx.publish(
        &snapshot_event(resource, account, &object, unix_now()),
        SOURCE_REPAIR,
        account,
    )
    .await
}

/// What a mirrored object is compared by: its typed columns and metadata,
/// as the registry reads them (the same paths Postgres computes the
/// columns from), so API-version noise in other fields does not count.
pub fn mirrored_hash(resource: &Resource, object: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for col in resource.columns {
        hasher.update(col.name.as_bytes());
        hasher.update([0]);
        let value = col.value(object).unwrap_or(&Value::Null);
        // A reference compares by id, expanded or not.
        let value = value.get("id").unwrap_or(value);
        hasher.update(serde_json::to_vec(value).unwrap_or_default());
        hasher.update([0]);
    }
    let metadata = object.get("metadata").filter(|m| m.is_object());
    hasher.update(serde_json::to_vec(&metadata.unwrap_or(&json!({}))).unwrap_or_default());
    hasher.finalize().into()
}

/// The mirror's page size when streaming a relation.
const MIRROR_PAGE: i64 = 1_000;

#[derive(QueryableByName)]
struct MirrorObject {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    data: Value,
}

async fn mirrored(
    ctx: &PullContext,
    resource: &'static Resource,
    account: &AccountId,
    repair: bool,
) -> anyhow::Result<DiffReport> {
    let mut report = DiffReport {
        kind: resource.relation,
        ..DiffReport::default()
    };
    if resource.listed_per() == Some(Parent::ACCOUNT) && account.is_platform() {
        // Stripe lists these under the platform's own acct_… id, which the
        // engine does not know: nothing to compare them with.
        return Ok(report);
    }
    // The mirror's live objects, a page at a time, as id -> hash; and for
    // a type kept under a parent, each one's parent (repair_absent).
    let mut mirror: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    let mut parents: BTreeMap<String, String> = BTreeMap::new();
    let mut after = String::new();
    loop {
        let (table, acct, from) = (resource.table(), account.to_owned(), after.clone());
        let page: Vec<MirrorObject> = ctx
            .db(move |conn| {
                diesel::sql_query(format!(
                    "SELECT id, data FROM {table} WHERE account = $1 AND NOT deleted AND id > $2 \
                     ORDER BY id LIMIT {MIRROR_PAGE}"
                ))
                .bind::<diesel::sql_types::Text, _>(acct)
                .bind::<diesel::sql_types::Text, _>(from)
                .load(conn)
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        for row in &page {
            mirror.insert(row.id.clone(), mirrored_hash(resource, &row.data));
            if let Listing::Nested(parent, _) = resource.listing {
                if let Some(id) = row.data.get(parent.field).and_then(Value::as_str) {
                    parents.insert(row.id.clone(), id.to_owned());
                }
            }
        }
    }
    report.in_mirror = mirror.len();

    // Stripe's side, page by page; each object is compared (and repaired)
    // as it arrives.
    let read_at = unix_now();
    let mut pages = StripePages::new(ctx, resource, account).await?;
    while let Some(objects) = pages.next().await? {
        for object in objects {
            let Some(id) = object.get("id").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            report.in_stripe += 1;
            let stale = match mirror.remove(&id) {
                None => {
                    report.missing_locally.push(id);
                    true
                }
                Some(hash) if hash != mirrored_hash(resource, &object) => {
                    report.different.push((id, Vec::new()));
                    true
                }
                Some(_) => false,
            };
            if stale && repair {
                ctx.publish(
                    &snapshot_event(resource, account, &object, read_at),
                    SOURCE_REPAIR,
                    account,
                )
                .await?;
                report.repaired += 1;
            }
        }
    }
    report.api_calls += pages.calls;
    report.missing_in_stripe = mirror.into_keys().collect();
    if repair {
        for id in &report.missing_in_stripe {
            let parent = parents.get(id).map(String::as_str);
            repair_absent(ctx, resource, parent, account, id).await?;
            report.repaired += 1;
            report.api_calls += 1;
        }
    }
    Ok(report)
}

/// A list call: the collection and its filters (`customer=cus_…`,
/// `status=all`).
type ListCall = (String, Vec<(String, String)>);

/// Pages of a type's list on one account, however Stripe lists it.
struct StripePages<'c> {
    ctx: &'c PullContext,
    account: &'c AccountId,
    /// Pending list calls, each paged in full.
    queue: std::collections::VecDeque<ListCall>,
    /// The list being paged, and where its next page starts.
    current: Option<(ListCall, Option<String>)>,
    calls: u64,
}

impl<'c> StripePages<'c> {
    async fn new(
        ctx: &'c PullContext,
        resource: &'static Resource,
        account: &'c AccountId,
    ) -> anyhow::Result<Self> {
        let mut queue = std::collections::VecDeque::new();
        match resource.listing {
            Listing::PerCustomer | Listing::Nested(..) => {
                for parent in super::parents(ctx, resource, account).await? {
                    queue.push_back(super::list_under(resource, &parent)?);
                }
            }
            Listing::None => {}
            whole => queue.push_back((
                resource.path.to_owned(),
                whole
                    .whole()
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
        }
        Ok(Self {
            ctx,
            account,
            queue,
            current: None,
            calls: 0,
        })
    }

    async fn next(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        let (call, after) = match self.current.take() {
            Some(current) => current,
            None => match self.queue.pop_front() {
                Some(call) => (call, None),
                None => return Ok(None),
            },
        };
        let mut params = vec![("limit".to_owned(), "100".to_owned())];
        params.extend(call.1.iter().cloned());
        if let Some(after) = &after {
            params.push(("starting_after".into(), after.clone()));
        }
        let page = self.ctx.list_page(self.account, &call.0, &params).await?;
        self.calls += 1;
        let last = page
            .data
            .last()
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if page.has_more && last.is_some() {
            self.current = Some((call, last));
        }
        Ok(Some(page.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_kept_fields_only() {
        let stripe = json!({"id": "cus_1", "email": "a@b.co", "name": "A", "phone": null, "metadata": {}, "balance": 5});
        let mirror = json!({"email": "a@b.co", "name": "A", "phone": null, "description": null, "metadata": {}});
        assert_eq!(content_hash(&stripe), content_hash(&mirror));
        let renamed = json!({"email": "a@b.co", "name": "B", "phone": null, "description": null, "metadata": {}});
        assert_ne!(content_hash(&stripe), content_hash(&renamed));
    }
}
