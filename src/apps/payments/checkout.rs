//! Hosted checkout sessions: creating one at Stripe for a local customer
//! (or none), and reading one from the mirror, or from Stripe (and into
//! the mirror) when the mirror does not have it yet.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Text};
use serde_json::{json, Value};

use crate::customers::CustomerId;
use crate::stripe::form::flatten;

/// One line of a new session: a price, or a price made on the fly.
#[derive(Debug, Clone, PartialEq)]
pub enum LinePrice {
    Price(String),
    PriceData(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewLine {
    pub price: LinePrice,
    pub quantity: i64,
}

/// A checkout session to create, checked at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCheckout {
    pub lines: Vec<NewLine>,
    /// `payment` or `subscription`.
    pub mode: String,
    pub success_url: String,
    pub cancel_url: String,
    pub customer: Option<CustomerId>,
    pub metadata: BTreeMap<String, String>,
}

/// Stripe's form fields for the session (`customer`: the local customer's
/// `cus_…`).
pub fn form(checkout: &NewCheckout, customer: Option<&str>) -> Vec<(String, String)> {
    let mut form = vec![
        ("mode".to_owned(), checkout.mode.clone()),
        ("success_url".to_owned(), checkout.success_url.clone()),
        ("cancel_url".to_owned(), checkout.cancel_url.clone()),
    ];
    for (i, line) in checkout.lines.iter().enumerate() {
        match &line.price {
            LinePrice::Price(price) => {
                form.push((format!("line_items[{i}][price]"), price.clone()))
            }
            LinePrice::PriceData(data) => {
                flatten(&format!("line_items[{i}][price_data]"), data, &mut form)
            }
        }
        form.push((
            format!("line_items[{i}][quantity]"),
            line.quantity.to_string(),
        ));
    }
    if let Some(customer) = customer {
        form.push(("customer".into(), customer.to_owned()));
    }
    for (k, v) in &checkout.metadata {
        form.push((format!("metadata[{k}]"), v.clone()));
    }
    form
}

/// What the API answers for a created session.
pub fn created_view(session: &Value) -> Value {
    json!({"id": session["id"], "url": session["url"], "status": session["status"],
           "expires_at": session["expires_at"]})
}

/// What the API shows of a session.
pub fn view(session: &Value) -> Value {
    let email = session["customer_email"]
        .as_str()
        .filter(|e| !e.is_empty())
        .map(Value::from)
        .unwrap_or_else(|| session["customer_details"]["email"].clone());
    json!({
        "id": session["id"], "payment_intent": session["payment_intent"],
        "amount_total": session["amount_total"], "currency": session["currency"],
        "customer_email": email, "payment_status": session["payment_status"],
        "status": session["status"], "metadata": session["metadata"],
    })
}

#[derive(QueryableByName)]
struct Mirrored {
    #[diesel(sql_type = Jsonb)]
    data: Value,
}

/// The session as the mirror holds it (platform account), if it does.
pub fn mirrored(conn: &mut PgConnection, id: &str) -> QueryResult<Option<Value>> {
    diesel::sql_query(
        "SELECT data FROM stripe.checkout_sessions WHERE account = 'platform' AND id = $1",
    )
    .bind::<Text, _>(id)
    .get_result::<Mirrored>(conn)
    .optional()
    .map(|m| m.map(|m| m.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_carries_prices_quantities_customer_and_metadata() {
        let checkout = NewCheckout {
            lines: vec![
                NewLine {
                    price: LinePrice::Price("price_1".into()),
                    quantity: 2,
                },
                NewLine {
                    price: LinePrice::PriceData(json!({"currency": "usd", "unit_amount": 900,
                                                       "product_data": {"name": "Mug"}})),
                    quantity: 1,
                },
            ],
            mode: "payment".into(),
            success_url: "https://shop.example/ok".into(),
            cancel_url: "https://shop.example/cancel".into(),
            customer: None,
            metadata: BTreeMap::from([("cart".to_owned(), "c9".to_owned())]),
        };
        let form = form(&checkout, Some("cus_1"));
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("line_items[0][price]"), Some("price_1"));
        assert_eq!(get("line_items[0][quantity]"), Some("2"));
        assert_eq!(
            get("line_items[1][price_data][product_data][name]"),
            Some("Mug")
        );
        assert_eq!(get("line_items[1][quantity]"), Some("1"));
        assert_eq!(get("customer"), Some("cus_1"));
        assert_eq!(get("metadata[cart]"), Some("c9"));
        assert_eq!(get("mode"), Some("payment"));
    }
}
