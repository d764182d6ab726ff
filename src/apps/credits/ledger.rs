//! The credit ledger: append-only entries, each unique by its source, and
//! the balance that moves in the same transaction (`credits.post_entry` in
//! the migration). Purchases are credited by `credits.credit_purchase`,
//! from the API's answer or from the mirror's trigger, whichever is first;
//! refunds are debited by the mirror's triggers. This module spends and
//! reads.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use serde::Serialize;
use uuid::Uuid;

use crate::customers::list::Cursor;
use crate::customers::CustomerId;
use crate::db::schema::credits::{balances, ledger};

/// The most credits one spend may take.
pub const MAX_SPEND: i64 = super::packages::MAX_CREDITS;
/// A spend's reason, at most this many characters.
pub const MAX_REASON: usize = 500;

#[derive(QueryableByName)]
struct Balance {
    #[diesel(sql_type = BigInt)]
    balance: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = ledger)]
struct Posting {
    id: Uuid,
    credits: i64,
    reason: Option<String>,
}

/// The customer's balance (0 before anything was bought).
pub fn balance(conn: &mut PgConnection, customer: CustomerId) -> QueryResult<i64> {
    let found: Option<i64> = balances::table
        .find(customer)
        .select(balances::balance)
        .first(conn)
        .optional()?;
    Ok(found.unwrap_or(0))
}

/// What a spend or an adjustment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// Posted now, or earlier under the same key (then `balance` is today's).
    Done { entry_id: Uuid, balance: i64 },
    /// The balance is short: nothing was taken.
    Insufficient { balance: i64 },
    /// The key's entry was posted for another amount or reason: the key
    /// was reused for another request (at any age of the entry).
    KeyReused,
}

/// Takes `credits` from the customer's balance, once per `key`. The
/// balance row is locked first, so concurrent spends and credits queue on
/// it and none can take the balance below zero.
pub fn spend(
    conn: &mut PgConnection,
    customer: CustomerId,
    credits: i64,
    reason: &str,
    key: &str,
) -> QueryResult<Posted> {
    let source = format!("spend:{customer}:{key}");
    post_once(
        conn,
        customer,
        "spend",
        -credits,
        &source,
        reason,
        |balance| balance >= credits,
    )
}

/// An operator's correction, signed, once per `key`: it may take the
/// balance below zero (to claw back what a failed refund gave, say).
pub fn adjust(
    conn: &mut PgConnection,
    customer: CustomerId,
    credits: i64,
    reason: &str,
    key: &str,
) -> QueryResult<Posted> {
    let source = format!("adjustment:{customer}:{key}");
    post_once(
        conn,
        customer,
        "adjustment",
        credits,
        &source,
        reason,
        |_| true,
    )
}

/// Appends the entry for `source` unless it exists, under the customer's
/// balance lock, if `allowed` by the balance before it.
fn post_once(
    conn: &mut PgConnection,
    customer: CustomerId,
    kind: &str,
    credits: i64,
    source: &str,
    reason: &str,
    allowed: impl Fn(i64) -> bool,
) -> QueryResult<Posted> {
    conn.transaction(|conn| {
        diesel::insert_into(balances::table)
            .values(balances::customer_id.eq(customer))
            .on_conflict_do_nothing()
            .execute(conn)?;
        let balance: i64 = balances::table
            .find(customer)
            .select(balances::balance)
            .for_update()
            .first(conn)?;
        if let Some(posted) = entry_for(conn, source)? {
            let same = posted.credits == credits && posted.reason.as_deref() == Some(reason);
            return Ok(if same {
                Posted::Done {
                    entry_id: posted.id,
                    balance,
                }
            } else {
                Posted::KeyReused
            });
        }
        if !allowed(balance) {
            return Ok(Posted::Insufficient { balance });
        }
        // A call of the migration's function, which the mirror's triggers
        // share: the entry and the balance move in one place.
        let Balance { balance } =
            diesel::sql_query("SELECT credits.post_entry($1, $2, $3, $4, NULL, $5) AS balance")
                .bind::<SqlUuid, _>(customer)
                .bind::<Text, _>(kind)
                .bind::<BigInt, _>(credits)
                .bind::<Text, _>(source)
                .bind::<Text, _>(reason)
                .get_result(conn)?;
        let entry_id = entry_for(conn, source)?
            .expect("the entry was just appended")
            .id;
        Ok(Posted::Done { entry_id, balance })
    })
}

fn entry_for(conn: &mut PgConnection, source: &str) -> QueryResult<Option<Posting>> {
    ledger::table
        .filter(ledger::source.eq(source))
        .select(Posting::as_select())
        .first(conn)
        .optional()
}

/// One line of a customer's history: a purchase (whatever its status) or
/// a ledger entry of another kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
pub struct Transaction {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Signed: what the entry did (or, for a purchase not credited, would do).
    #[diesel(sql_type = BigInt)]
    pub credits: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub amount_paid: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub currency: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub package_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub payment_intent: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct History {
    pub customer_id: CustomerId,
    pub balance: i64,
    pub transactions: Vec<Transaction>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// The customer's balance and history, newest first, `limit` at a time.
pub fn history(
    conn: &mut PgConnection,
    customer: CustomerId,
    limit: i64,
    before: Option<&Cursor>,
) -> QueryResult<History> {
    let balance = balance(conn, customer)?;
    // Raw SQL: one page over two tables of different shapes (a UNION ALL
    // with literal columns) under a row-value cursor, which diesel's
    // builder does not express.
    let mut transactions: Vec<Transaction> = diesel::sql_query(
        "SELECT * FROM ( \
           SELECT p.id, 'purchase' AS kind, p.credits, p.price AS amount_paid, p.currency, \
                  p.package_id, p.payment_intent, p.status, p.error AS reason, p.created_at \
           FROM credits.purchases p WHERE p.customer_id = $1 \
           UNION ALL \
           SELECT l.id, l.kind, l.credits, NULL, p.currency, p.package_id, p.payment_intent, \
                  'succeeded', l.reason, l.created_at \
           FROM credits.ledger l LEFT JOIN credits.purchases p ON p.id = l.purchase_id \
           WHERE l.customer_id = $1 AND l.kind <> 'purchase' \
         ) t \
         WHERE $2::timestamptz IS NULL OR (t.created_at, t.id) < ($2, $3) \
         ORDER BY t.created_at DESC, t.id DESC LIMIT $4",
    )
    .bind::<SqlUuid, _>(customer)
    .bind::<Nullable<Timestamptz>, _>(before.map(Cursor::created_at))
    .bind::<SqlUuid, _>(before.map_or(Uuid::nil(), Cursor::id))
    .bind::<BigInt, _>(limit + 1)
    .load(conn)?;
    let has_more = transactions.len() as i64 > limit;
    transactions.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| transactions.last())
        .flatten()
        .map(|last| Cursor::after(last.created_at, last.id).encode());
    Ok(History {
        customer_id: customer,
        balance,
        transactions,
        has_more,
        next_cursor,
    })
}
