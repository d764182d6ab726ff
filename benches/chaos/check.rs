//! The final check, against the expected state the load kept, and the
//! applications log that makes "applied once" countable: a trigger records
//! every write of a mirror row, and every write of a customer's link that
//! moves its remote watermark (stripe-outbound also touches links, to mark
//! them synced), with the event it came from and the transaction that
//! wrote it. The ledger's primary key
//! alone would make "at most once per event" true by construction; the log
//! shows an event applied by two transactions.

use std::collections::{HashMap, HashSet};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

use crate::load::Expected;
use crate::stripe::StripeRecord;

/// Mirror tables of the generated resources.
const MIRROR_TABLES: &[(&str, &str)] = &[
    ("payment_intent", "payment_intents"),
    ("charge", "charges"),
    ("invoice", "invoices"),
    ("checkout.session", "checkout_sessions"),
    ("product", "products"),
    ("price", "prices"),
];

pub fn install_applications_log(conn: &mut PgConnection) -> anyhow::Result<()> {
    let mut sql = String::from(
        "CREATE SCHEMA chaos;
         CREATE TABLE chaos.applies (tbl text NOT NULL, object_id text NOT NULL, event_id text,
             xid bigint NOT NULL DEFAULT txid_current());
         CREATE FUNCTION chaos.log_apply() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO chaos.applies (tbl, object_id, event_id) VALUES (TG_TABLE_NAME,
                 coalesce(to_jsonb(NEW)->>'id', to_jsonb(NEW)->>'external_id'),
                 to_jsonb(NEW)->>'remote_event_id');
             RETURN NULL;
         END $$;
         CREATE TRIGGER chaos_apply AFTER INSERT ON public.id_map
             FOR EACH ROW EXECUTE FUNCTION chaos.log_apply();
         CREATE TRIGGER chaos_apply_update AFTER UPDATE ON public.id_map
             FOR EACH ROW WHEN (OLD.remote_event_id IS DISTINCT FROM NEW.remote_event_id
                 OR OLD.remote_version IS DISTINCT FROM NEW.remote_version)
             EXECUTE FUNCTION chaos.log_apply();",
    );
    for (_, table) in MIRROR_TABLES {
        sql.push_str(&format!(
            "CREATE TRIGGER chaos_apply AFTER INSERT OR UPDATE ON stripe.{table}
                 FOR EACH ROW EXECUTE FUNCTION chaos.log_apply();"
        ));
    }
    conn.batch_execute(&sql)?;
    Ok(())
}

/// What the check found; every count but the totals must be 0.
#[derive(Default, Debug, serde::Serialize)]
pub struct Verdict {
    pub events_acknowledged: usize,
    pub events_lost: usize,
    pub events_applied_twice: usize,
    pub objects_checked: usize,
    pub objects_divergent: usize,
    pub tombstones_broken: usize,
    pub api_customers_checked: usize,
    pub api_customers_divergent: usize,
    pub stripe_customers_duplicated: usize,
    pub outbox_rows: usize,
    pub outbox_rows_not_at_stripe: usize,
    pub stripe_writes_unexplained: usize,
    /// Outbox rows beyond the API writes made: a change that came back in
    /// (an echo sent out again) would add them.
    pub outbox_rows_unexplained: usize,
    pub poison_dead_lettered: usize,
    pub poison_missing_from_dlq: usize,
    pub unexpected_dead_letters: usize,
    /// The paid-orders path: notifier emails and the HTTP export.
    pub orders: crate::orders_check::OrdersVerdict,
    /// Salesforce's part (`salesforce_check`).
    pub salesforce: crate::salesforce_check::SalesforceVerdict,
    /// Credits, payments and refunds (`payments_check.rs`).
    pub payments: crate::payments_check::PaymentsVerdict,
    /// The first few findings, to start from.
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn failures(&self) -> usize {
        self.events_lost
            + self.events_applied_twice
            + self.objects_divergent
            + self.tombstones_broken
            + self.api_customers_divergent
            + self.stripe_customers_duplicated
            + self.outbox_rows_not_at_stripe
            + self.stripe_writes_unexplained
            + self.outbox_rows_unexplained
            + self.poison_missing_from_dlq
            + self.unexpected_dead_letters
            + self.orders.failures()
            + self.salesforce.failures()
            + self.payments.failures()
    }

    pub fn note(&mut self, finding: String) {
        if self.examples.len() < 20 {
            self.examples.push(finding);
        }
    }
}

#[derive(QueryableByName)]
struct Row3 {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = Nullable<Text>)]
    b: Option<String>,
    #[diesel(sql_type = Bool)]
    c: bool,
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub fn verify(
    conn: &mut PgConnection,
    expected: &Expected,
    stripe: &StripeRecord,
    dead_letter_event_ids: &[Option<String>],
) -> anyhow::Result<Verdict> {
    let mut v = Verdict::default();
    check_ledger(conn, expected, &mut v)?;
    check_mirror(conn, expected, &mut v)?;
    check_api_writes(conn, expected, stripe, &mut v)?;
    check_dead_letters(expected, dead_letter_event_ids, &mut v);
    v.payments = crate::payments_check::verify(conn, &expected.payments, &stripe.money)?;
    for finding in v.payments.examples.clone() {
        v.note(finding);
    }
    Ok(v)
}

/// Every acknowledged event is in the ledger, and none was applied twice.
fn check_ledger(
    conn: &mut PgConnection,
    expected: &Expected,
    v: &mut Verdict,
) -> anyhow::Result<()> {
    let ledger: HashSet<String> =
        diesel::sql_query("SELECT event_id AS a, NULL::text AS b, true AS c FROM event_ledger")
            .load::<Row3>(conn)?
            .into_iter()
            .map(|r| r.a)
            .collect();
    let poison: HashSet<&String> = expected.poison.iter().collect();
    for (event, acked) in &expected.acked {
        if !*acked || poison.contains(event) {
            continue;
        }
        v.events_acknowledged += 1;
        if !ledger.contains(event) {
            v.events_lost += 1;
            v.note(format!("acknowledged {event} is not in the ledger"));
        }
    }
    // One application may write a row twice (a link inserted, then its
    // watermark advanced); two transactions writing one event are two
    // applications.
    let twice = diesel::sql_query(
        "SELECT event_id AS a, count(DISTINCT xid) AS n FROM chaos.applies
         WHERE event_id IS NOT NULL GROUP BY tbl, object_id, event_id
         HAVING count(DISTINCT xid) > 1",
    )
    .load::<Counted>(conn)?;
    v.events_applied_twice = twice.len();
    for t in twice.iter().take(5) {
        v.note(format!("{} was applied by {} transactions", t.a, t.n));
    }
    Ok(())
}

/// The mirror holds the newest version of every generated object, and
/// every deleted object stays deleted.
fn check_mirror(
    conn: &mut PgConnection,
    expected: &Expected,
    v: &mut Verdict,
) -> anyhow::Result<()> {
    // (id) → (version seen, deleted)
    let mut seen: HashMap<String, (Option<String>, bool)> = HashMap::new();
    for (_, table) in MIRROR_TABLES {
        let rows = diesel::sql_query(format!(
            "SELECT id AS a, data->'metadata'->>'chaos_v' AS b, deleted AS c FROM stripe.{table}"
        ))
        .load::<Row3>(conn)?;
        seen.extend(rows.into_iter().map(|r| (r.a, (r.b, r.c))));
    }
    // A customer's version is in its name, "<id> v<version>".
    let customers = diesel::sql_query(
        "SELECT m.external_id AS a, c.name AS b, c.deleted_at IS NOT NULL AS c
         FROM id_map m JOIN customers c ON c.id = m.local_id
         WHERE m.service = 'stripe' AND m.entity = 'customer'",
    )
    .load::<Row3>(conn)?;
    seen.extend(customers.into_iter().map(|r| {
        let version =
            r.b.and_then(|name| name.rsplit_once(" v").map(|(_, v)| v.to_owned()));
        (r.a, (version, r.c))
    }));
    for (id, want) in &expected.objects {
        v.objects_checked += 1;
        match seen.get(id) {
            None => {
                v.objects_divergent += 1;
                v.note(format!("{} {id} is not in the mirror", want.resource));
            }
            Some((_, deleted)) if want.deleted => {
                if !deleted {
                    v.tombstones_broken += 1;
                    v.note(format!(
                        "{} {id} was deleted, yet the mirror holds it live",
                        want.resource
                    ));
                }
            }
            Some((version, deleted)) => {
                let newest = want.version.to_string();
                if *deleted || version.as_deref() != Some(newest.as_str()) {
                    v.objects_divergent += 1;
                    v.note(format!(
                        "{} {id}: the mirror holds version {version:?} (deleted: {deleted}), the newest is {newest}",
                        want.resource
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every local customer reached Stripe once, with its newest accepted
/// name; every outbox row's write was done at Stripe; Stripe did no write
/// that no outbox row explains (an echo sent back out would be one).
fn check_api_writes(
    conn: &mut PgConnection,
    expected: &Expected,
    stripe: &StripeRecord,
    v: &mut Verdict,
) -> anyhow::Result<()> {
    let local = diesel::sql_query(
        "SELECT c.id::text AS a, c.name AS b, c.email LIKE 'chaos-api-%' AS c
         FROM customers c WHERE c.email LIKE 'chaos-api-%'",
    )
    .load::<Row3>(conn)?;
    let local_names: HashMap<String, Option<String>> =
        local.into_iter().map(|r| (r.a, r.b)).collect();
    for local_id in local_names.keys() {
        let created = stripe.created_for_local.get(local_id).map_or(0, Vec::len);
        if created != 1 {
            v.stripe_customers_duplicated += usize::from(created > 1);
            v.api_customers_divergent += usize::from(created == 0);
            v.note(format!(
                "local customer {local_id} has {created} Stripe customers"
            ));
        }
    }
    for (local_id, name) in &expected.api_customers {
        v.api_customers_checked += 1;
        let at_stripe = stripe
            .created_for_local
            .get(local_id)
            .and_then(|ids| ids.first())
            .and_then(|id| stripe.customers.get(id))
            .and_then(|c| c["name"].as_str());
        let here = local_names.get(local_id).cloned().flatten();
        if here.as_deref() != Some(name.as_str()) || at_stripe != Some(name.as_str()) {
            v.api_customers_divergent += 1;
            v.note(format!(
                "customer {local_id}: accepted name {name:?}, local {here:?}, at Stripe {at_stripe:?}"
            ));
        }
    }
    // Queued refunds are outbox rows too, carried out by stripe-commands
    // under their own keys (the money check follows them).
    let outbox: Vec<(String, Option<String>, bool)> = diesel::sql_query(
        "SELECT id::text AS a, origin AS b, origin = 'local' AS c FROM outbox
         WHERE entity <> 'refund_request'",
    )
    .load::<Row3>(conn)?
    .into_iter()
    .map(|r| {
        let key = stripe_sync::outbox::idempotency_key(r.a.parse().unwrap_or_default(), None);
        (key, r.b, r.c)
    })
    .collect();
    // A change Stripe reported goes to Salesforce alone; the API's own
    // changes are the ones API writes explain (Salesforce's part counts
    // the others: `salesforce_check`).
    let local_rows = outbox.iter().filter(|(_, _, local)| *local).count();
    let outbox: Vec<String> = outbox
        .into_iter()
        .filter(|(_, origin, _)| origin.as_deref() != Some("stripe"))
        .map(|(key, _, _)| key)
        .collect();
    v.outbox_rows = outbox.len();
    v.outbox_rows_unexplained = local_rows.saturating_sub(expected.api_writes_sent);
    if v.outbox_rows_unexplained > 0 {
        v.note(format!(
            "{} outbox rows of the API for {} API writes sent",
            local_rows, expected.api_writes_sent
        ));
    }
    for key in &outbox {
        if stripe.performed.get(key).copied().unwrap_or(0) != 1 {
            v.outbox_rows_not_at_stripe += 1;
            v.note(format!(
                "{key} was done {:?} times at Stripe",
                stripe.performed.get(key)
            ));
        }
    }
    let explained: HashSet<&String> = outbox.iter().collect();
    for key in stripe.performed.keys() {
        if !explained.contains(key) {
            v.stripe_writes_unexplained += 1;
            v.note(format!("Stripe did a write no outbox row explains: {key}"));
        }
    }
    Ok(())
}

/// Dead letters hold the injected poison, and nothing else.
fn check_dead_letters(expected: &Expected, dead: &[Option<String>], v: &mut Verdict) {
    let poison: HashSet<&String> = expected.poison.iter().collect();
    let mut found = HashSet::new();
    for event in dead {
        match event {
            Some(id) if poison.contains(id) => {
                found.insert(id.clone());
            }
            other => {
                v.unexpected_dead_letters += 1;
                v.note(format!("unexpected dead letter: {other:?}"));
            }
        }
    }
    v.poison_dead_lettered = found.len();
    v.poison_missing_from_dlq = poison.len() - found.len();
}

/// The check's own test: plants one defect of each kind it looks for (in a
/// transaction rolled back afterwards, and in copies of the fake's record
/// and the dead letters) and returns the kinds it failed to catch. A check
/// that cannot fail proves nothing.
pub fn self_test(
    conn: &mut PgConnection,
    expected: &Expected,
    stripe: &StripeRecord,
    dead_letter_event_ids: &[Option<String>],
) -> anyhow::Result<Vec<&'static str>> {
    let mut stripe = StripeRecord {
        customers: stripe.customers.clone(),
        performed: stripe.performed.clone(),
        created_for_local: stripe.created_for_local.clone(),
        faulted_answers: stripe.faulted_answers,
        money: stripe.money.clone(),
    };
    stripe
        .performed
        .insert("stripe-sync-outbox-999999999".into(), 1);
    let mut dead = dead_letter_event_ids.to_vec();
    dead.push(Some("evt_not_poison".into()));
    const ROLLED_BACK: &str = "the planted defects are rolled back";
    let mut missed = Vec::new();
    let planted = conn.transaction::<(), anyhow::Error, _>(|conn| {
        conn.batch_execute(
            "DELETE FROM event_ledger WHERE event_id = (SELECT max(event_id) FROM event_ledger WHERE event_id LIKE 'evt_chaos%');
             UPDATE stripe.payment_intents SET data = jsonb_set(data, '{metadata,chaos_v}', '\"0\"')
                 WHERE id = (SELECT min(id) FROM stripe.payment_intents);
             INSERT INTO chaos.applies SELECT tbl, object_id, event_id, xid + 1 FROM chaos.applies
                 WHERE event_id IS NOT NULL LIMIT 1;
             UPDATE customers SET deleted_at = NULL
                 WHERE id = (SELECT min(id::text)::uuid FROM customers WHERE deleted_at IS NOT NULL);",
        )?;
        let v = verify(conn, expected, &stripe, &dead)?;
        let any_deleted_customer = expected
            .objects
            .values()
            .any(|o| o.deleted && o.resource == "customer");
        for (caught, kind) in [
            (v.events_lost > 0, "a lost event"),
            (v.objects_divergent > 0, "a stale mirror row"),
            (v.events_applied_twice > 0, "an event applied twice"),
            (v.tombstones_broken > 0 || !any_deleted_customer, "a broken tombstone"),
            (v.stripe_writes_unexplained > 0, "an unexplained Stripe write"),
            (v.unexpected_dead_letters > 0, "an unexpected dead letter"),
        ] {
            if !caught {
                missed.push(kind);
            }
        }
        Err(anyhow::anyhow!(ROLLED_BACK))
    });
    match planted {
        Err(e) if e.to_string() == ROLLED_BACK => {
            missed.extend(crate::payments_selftest::self_test(
                conn,
                &expected.payments,
                &stripe.money,
            )?);
            Ok(missed)
        }
        Err(e) => Err(e),
        Ok(()) => unreachable!("the transaction always rolls back"),
    }
}
