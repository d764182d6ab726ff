//! `Idempotency-Key` for the API's POSTs that move money or credits, with
//! Stripe's rules: the same key with the same request replays the first
//! final answer; the same key with another request, on another route or
//! for another customer (the route names the customer) is refused (422); a
//! key whose first request is still running is refused too (409), unless
//! that request was abandoned (its process died), in which case a retry
//! takes it over.
//!
//! A key is bound to its first request for good (Stripe forgets its keys
//! after a day; a client that reuses one here after years still must not
//! be answered with another customer's purchase). Only final answers are
//! saved: an answer that means "retry later" (not synced yet, in progress,
//! Stripe unreachable, a payment still processing) reopens the key, so the
//! retry does the work; the Stripe call then carries the same derived key
//! ([`stripe_key`]), so Stripe performs it once.

use std::time::Duration;

use diesel::dsl::{now, IntervalDsl};
use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::db::schema::payments::idempotency_keys as keys;

/// A first request still unfinished after this is taken to be abandoned.
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(60);
/// Stripe's own limit on key length.
pub const MAX_KEY_LEN: usize = 255;

/// What a request with a key may do.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First use (or an abandoned one): do the work, then [`complete`].
    Proceed,
    /// Answer this, as the first request was answered.
    Replay { status: u16, body: Value },
    /// The first request is still running.
    InProgress,
    /// The key was first used for another request.
    Mismatch,
}

/// Fingerprint of a request: its route and its body as parsed JSON (so
/// whitespace and key order do not matter).
pub fn request_hash(route: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(body.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The `Idempotency-Key` sent to Stripe for a client's key: stable, so a
/// retry of ours or of the client's is the same write at Stripe.
pub fn stripe_key(key: &str) -> String {
    format!(
        "stripe-sync-api-{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..40]
    )
}

/// The id of a queued refund the client did not name: derived from its
/// key, so a retry of the request (its answer lost, its key reopened or
/// taken over) finds the same request instead of queuing a second refund.
pub fn derived_request_id(key: &str) -> String {
    format!(
        "rr_{}",
        &hex::encode(Sha256::digest(
            [b"refund-request\0", key.as_bytes()].concat()
        ))[..32]
    )
}

/// A first request unfinished since before `now() - TAKEOVER_AFTER`, by
/// the database's clock (reopened keys start at `-infinity`).
fn takeover_secs() -> f64 {
    TAKEOVER_AFTER.as_secs_f64()
}

/// Claims `key` for a request on `route` with fingerprint `hash`.
pub fn claim(conn: &mut PgConnection, key: &str, route: &str, hash: &str) -> QueryResult<Claim> {
    conn.transaction(|conn| {
        let inserted = diesel::insert_into(keys::table)
            .values((
                keys::key.eq(key),
                keys::route.eq(route),
                keys::request_hash.eq(hash),
            ))
            .on_conflict(keys::key)
            .do_nothing()
            .execute(conn)?;
        if inserted == 1 {
            return Ok(Claim::Proceed);
        }
        let (stored_route, stored_hash, status, response, abandoned): (
            String,
            String,
            Option<i32>,
            Option<Value>,
            bool,
        ) = keys::table
            .find(key)
            .select((
                keys::route,
                keys::request_hash,
                keys::status,
                keys::response,
                (keys::started_at + takeover_secs().seconds()).lt(now),
            ))
            .for_update()
            .first(conn)?;
        if stored_route != route || stored_hash != hash {
            return Ok(Claim::Mismatch);
        }
        match (status, response) {
            (Some(status), Some(body)) => Ok(Claim::Replay {
                status: status as u16,
                body,
            }),
            _ if abandoned => {
                diesel::update(keys::table.find(key))
                    .set(keys::started_at.eq(now))
                    .execute(conn)?;
                Ok(Claim::Proceed)
            }
            _ => Ok(Claim::InProgress),
        }
    })
}

/// Saves the answer that retries with `key` replay.
pub fn complete(conn: &mut PgConnection, key: &str, status: u16, body: &Value) -> QueryResult<()> {
    // The first final answer stands: a slow first request finishing after a
    // retry took it over does not rewrite what retries are told.
    diesel::update(keys::table.find(key).filter(keys::status.is_null()))
        .set((keys::status.eq(i32::from(status)), keys::response.eq(body)))
        .execute(conn)
        .map(drop)
}

/// Drops this request's claim on `key`: the key turned out to be another
/// request's (found on a purchase or a spend of its own).
pub fn release(conn: &mut PgConnection, key: &str) -> QueryResult<()> {
    diesel::delete(keys::table.find(key).filter(keys::status.is_null()))
        .execute(conn)
        .map(drop)
}

/// Reopens `key` after an answer that is not final (retry later): the
/// next request with it does the work, as if the first were abandoned.
/// The key stays bound to its route and request.
pub fn reopen(conn: &mut PgConnection, key: &str) -> QueryResult<()> {
    // `-infinity`: before any takeover deadline, whatever the clock says.
    diesel::update(keys::table.find(key).filter(keys::status.is_null()))
        .set(
            keys::started_at.eq(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
                "'-infinity'",
            )),
        )
        .execute(conn)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fingerprint_ignores_layout_but_not_content() {
        let a: Value = serde_json::from_str(r#"{"amount": 500, "currency": "usd"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "currency":"usd","amount":500 }"#).unwrap();
        assert_eq!(request_hash("refunds", &a), request_hash("refunds", &b));
        assert_ne!(
            request_hash("refunds", &a),
            request_hash("payment-intents", &a)
        );
        let c = json!({"amount": 501, "currency": "usd"});
        assert_ne!(request_hash("refunds", &a), request_hash("refunds", &c));
    }

    #[test]
    fn stripe_keys_are_stable_short_and_distinct() {
        let k = stripe_key("order-42");
        assert_eq!(k, stripe_key("order-42"));
        assert_ne!(k, stripe_key("order-43"));
        assert!(k.len() <= MAX_KEY_LEN);
        assert!(
            !k.contains("order-42"),
            "the client's key is not passed through"
        );
    }
}
