//! What a paid order is, which key makes it one, and its line items.

use std::collections::HashSet;

use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Nullable, Text};
use serde_json::Value;

use crate::apply::{ApplyError, RemoteReader};
use crate::registry;
use crate::stripe::{AccountId, StripeEvent};

const COMPLETED: &str = "checkout.session.completed";
const ASYNC_PAYMENT_SUCCEEDED: &str = "checkout.session.async_payment_succeeded";

/// A checkout session that an event says is paid.
#[derive(Debug, Clone, PartialEq)]
pub struct PaidOrder {
    pub account: AccountId,
    pub session_id: String,
    /// One order, one notification: `checkout_session:cs_…`, or for a
    /// subscription `subscription:sub_…`, which its renewals (and any
    /// later session for the same subscription) share.
    pub key: String,
    pub session: Value,
}

/// The paid order an event announces, if any: `checkout.session.completed`
/// with `payment_status = "paid"`, or
/// `checkout.session.async_payment_succeeded`. An unpaid completion waits
/// for its async success; expiries and async failures are not orders;
/// invoices (a subscription's renewals) never are.
pub fn paid_order(event: &StripeEvent) -> Option<PaidOrder> {
    if event.object_type() != Some("checkout.session") {
        return None;
    }
    let session = &event.object;
    let paid = match event.kind.as_str() {
        COMPLETED => session["payment_status"] == "paid",
        ASYNC_PAYMENT_SUCCEEDED => true,
        _ => false,
    };
    let session_id = session["id"].as_str()?;
    if !paid {
        return None;
    }
    let key = match (session["mode"].as_str(), id_of(&session["subscription"])) {
        (Some("subscription"), Some(subscription)) => format!("subscription:{subscription}"),
        _ => format!("checkout_session:{session_id}"),
    };
    Some(PaidOrder {
        account: event.account.clone(),
        session_id: session_id.to_owned(),
        key,
        session: session.clone(),
    })
}

/// A reference as Stripe sends it: an id, or the expanded object.
fn id_of(reference: &Value) -> Option<&str> {
    reference
        .as_str()
        .or_else(|| reference.get("id").and_then(Value::as_str))
}

/// Whether any line item's price belongs to one of `products`.
pub fn has_product(items: &[Value], products: &HashSet<String>) -> bool {
    items
        .iter()
        .filter_map(|item| id_of(&item["price"]["product"]))
        .any(|product| products.contains(product))
}

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

#[derive(QueryableByName)]
struct Item {
    #[diesel(sql_type = Jsonb)]
    data: Value,
}

/// A session's complete line items: from the mirror when it holds the
/// session completed (its items are read in full when the status changes
/// and are final from then on), else from Stripe, paged.
pub fn line_items(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    account: &AccountId,
    session_id: &str,
) -> Result<Vec<Value>, ApplyError> {
    let stored: Option<Stored> = diesel::sql_query(
        "SELECT status FROM stripe.checkout_sessions WHERE account = $1 AND id = $2 AND NOT deleted",
    )
    .bind::<Text, _>(account)
    .bind::<Text, _>(session_id)
    .get_result(conn)
    .optional()
    .map_err(ApplyError::transient)?;
    if stored.and_then(|s| s.status).as_deref() == Some("complete") {
        let items: Vec<Item> = diesel::sql_query(
            "SELECT data FROM stripe.checkout_session_line_items \
             WHERE account = $1 AND checkout_session = $2 AND NOT deleted ORDER BY position",
        )
        .bind::<Text, _>(account)
        .bind::<Text, _>(session_id)
        .load(conn)
        .map_err(ApplyError::transient)?;
        return Ok(items.into_iter().map(|i| i.data).collect());
    }
    let (parent, child) = registry::child_by_relation("checkout_session_line_items")
        .expect("the registry mirrors checkout line items");
    remote.children(account, parent, child, session_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, session: Value) -> StripeEvent {
        let body = json!({"id": "evt_1", "type": kind, "created": 1, "data": {"object": session}});
        StripeEvent::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    fn session(payment_status: &str, mode: &str, subscription: Value) -> Value {
        json!({"id": "cs_1", "object": "checkout.session", "payment_status": payment_status,
               "mode": mode, "subscription": subscription})
    }

    #[test]
    fn which_events_are_paid_orders() {
        let cases = [
            (COMPLETED, "paid", true),
            (COMPLETED, "unpaid", false),
            (COMPLETED, "no_payment_required", false),
            (ASYNC_PAYMENT_SUCCEEDED, "paid", true),
            ("checkout.session.async_payment_failed", "unpaid", false),
            ("checkout.session.expired", "unpaid", false),
        ];
        for (kind, status, is_order) in cases {
            let order = paid_order(&event(kind, session(status, "payment", Value::Null)));
            assert_eq!(order.is_some(), is_order, "{kind} with {status}");
        }
        let invoice =
            json!({"id": "in_1", "object": "invoice", "billing_reason": "subscription_cycle"});
        assert_eq!(paid_order(&event("invoice.paid", invoice)), None);
    }

    #[test]
    fn a_subscription_is_one_order_whatever_session_carries_it() {
        for subscription in [
            json!("sub_9"),
            json!({"id": "sub_9", "object": "subscription"}),
        ] {
            let order = paid_order(&event(
                COMPLETED,
                session("paid", "subscription", subscription),
            ));
            assert_eq!(order.unwrap().key, "subscription:sub_9");
        }
        let one_off = paid_order(&event(COMPLETED, session("paid", "payment", Value::Null)));
        assert_eq!(one_off.unwrap().key, "checkout_session:cs_1");
    }

    #[test]
    fn the_product_filter_reads_each_items_price() {
        let items = [
            json!({"price": {"id": "price_1", "product": "prod_a"}}),
            json!({"price": {"id": "price_2", "product": {"id": "prod_b", "object": "product"}}}),
        ];
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert!(has_product(&items, &set(&["prod_a"])));
        assert!(has_product(&items, &set(&["prod_x", "prod_b"])));
        assert!(!has_product(&items, &set(&["prod_x"])));
        assert!(!has_product(&[], &set(&["prod_a"])));
    }
}
