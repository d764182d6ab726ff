//! The Stripe fake's payments endpoints (what the credits and payments
//! code and stripe-inbound's re-reads call), over `payments_stripe.rs`,
//! and the bank that settles pending refunds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::Filter;

use crate::load::Deliveries;
use crate::payments_stripe::{
    attach, confirm, create_intent, create_refund, field, no_such, settle_refunds,
};
use crate::stripe::{request_of, Book, FakeStripe};

/// A list page as Stripe answers it: `limit` items after `starting_after`.
fn page(items: Vec<Value>, query: &HashMap<String, String>, url: &str) -> Value {
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    let start = query
        .get("starting_after")
        .and_then(|after| items.iter().position(|i| i["id"] == after.as_str()))
        .map_or(0, |at| at + 1);
    let rest = &items[start.min(items.len())..];
    json!({"object": "list", "url": url, "has_more": rest.len() > limit,
           "data": rest.iter().take(limit).collect::<Vec<_>>()})
}

/// The fake's payments endpoints, and the bank that settles pending
/// refunds.
pub fn routes(
    fake: FakeStripe,
    fixtures: Arc<Value>,
    deliveries: Deliveries,
) -> BoxedFilter<(warp::reply::Response,)> {
    {
        let (fake, deliveries) = (fake.clone(), deliveries.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                fake.with_state(|s| settle_refunds(&mut s.money, &deliveries));
            }
        });
    }
    let with = warp::any().map(move || fake.clone());
    let key = warp::header::optional::<String>("idempotency-key");
    let form = warp::body::form::<Vec<(String, String)>>();
    let query = warp::query::<HashMap<String, String>>();
    let ctx = warp::any().map(move || (fixtures.clone(), deliveries.clone()));
    type Ctx = (Arc<Value>, Deliveries);

    let attach_route = warp::path!("v1" / "payment_methods" / String / "attach")
        .and(warp::post())
        .and(key)
        .and(form)
        .and(with.clone())
        .and(ctx.clone())
        .map(
            |pm: String, key, form: Vec<(String, String)>, fake: FakeStripe, (fx, d): Ctx| {
                let request = request_of(&format!("/v1/payment_methods/{pm}/attach"), &form);
                fake.perform(key, request, Book::Payments, &d, |s| {
                    attach(s, &fx, &pm, &form)
                })
            },
        );
    let list_cards = warp::path!("v1" / "payment_methods")
        .and(warp::get())
        .and(query)
        .and(with.clone())
        .map(|q: HashMap<String, String>, fake: FakeStripe| {
            fake.read(|s| {
                let customer = q.get("customer").cloned().unwrap_or_default();
                let mut cards: Vec<Value> = s
                    .money
                    .payment_methods
                    .values()
                    .filter(|pm| pm["customer"] == customer.as_str())
                    .cloned()
                    .collect();
                cards.sort_by_key(|pm| pm["id"].as_str().map(str::to_owned));
                (StatusCode::OK, page(cards, &q, "/v1/payment_methods"))
            })
        });
    let get_card = warp::path!("v1" / "payment_methods" / String)
        .and(warp::get())
        .and(with.clone())
        .map(|id: String, fake: FakeStripe| {
            fake.read(|s| match s.money.payment_methods.get(&id) {
                Some(pm) => (StatusCode::OK, pm.clone()),
                None => no_such("payment_method", &id),
            })
        });
    let create_pi = warp::path!("v1" / "payment_intents")
        .and(warp::post())
        .and(key)
        .and(form)
        .and(with.clone())
        .and(ctx.clone())
        .map(
            |key, form: Vec<(String, String)>, fake: FakeStripe, (fx, d): Ctx| {
                let request = request_of("/v1/payment_intents", &form);
                fake.perform(key, request, Book::Payments, &d, |s| {
                    create_intent(s, &fx, &form)
                })
            },
        );
    let confirm_pi = warp::path!("v1" / "payment_intents" / String / "confirm")
        .and(warp::post())
        .and(key)
        .and(form)
        .and(with.clone())
        .and(ctx.clone())
        .map(
            |id: String, key, form: Vec<(String, String)>, fake: FakeStripe, (fx, d): Ctx| {
                let request = request_of(&format!("/v1/payment_intents/{id}/confirm"), &form);
                fake.perform(key, request, Book::Payments, &d, |s| {
                    match s.money.intents.get(&id).cloned() {
                        Some(intent) => confirm(s, &fx, intent, field(&form, "payment_method")),
                        None => {
                            let (status, body) = no_such("payment_intent", &id);
                            (status, body, vec![])
                        }
                    }
                })
            },
        );
    let get_pi = warp::path!("v1" / "payment_intents" / String)
        .and(warp::get())
        .and(with.clone())
        .map(|id: String, fake: FakeStripe| {
            fake.read(|s| match s.money.intents.get(&id) {
                Some(pi) => (StatusCode::OK, pi.clone()),
                None => no_such("payment_intent", &id),
            })
        });
    let get_charge = warp::path!("v1" / "charges" / String)
        .and(warp::get())
        .and(with.clone())
        .map(|id: String, fake: FakeStripe| {
            fake.read(|s| match s.money.charges.get(&id) {
                Some(ch) => (StatusCode::OK, ch.clone()),
                None => no_such("charge", &id),
            })
        });
    let create_refund_route = warp::path!("v1" / "refunds")
        .and(warp::post())
        .and(key)
        .and(form)
        .and(with.clone())
        .and(ctx)
        .map(
            |key, form: Vec<(String, String)>, fake: FakeStripe, (fx, d): Ctx| {
                let request = request_of("/v1/refunds", &form);
                fake.perform(key, request, Book::Payments, &d, |s| {
                    create_refund(s, &fx, &form)
                })
            },
        );
    let get_refund = warp::path!("v1" / "refunds" / String)
        .and(warp::get())
        .and(with.clone())
        .map(|id: String, fake: FakeStripe| {
            fake.read(|s| match s.money.refunds.get(&id) {
                Some(r) => (StatusCode::OK, r.clone()),
                None => no_such("refund", &id),
            })
        });
    let list_refunds = warp::path!("v1" / "refunds")
        .and(warp::get())
        .and(query)
        .and(with)
        .map(|q: HashMap<String, String>, fake: FakeStripe| {
            fake.read(|s| {
                let refunds = match (q.get("payment_intent"), q.get("charge")) {
                    (Some(pi), _) if !s.money.intents.contains_key(pi) => {
                        return no_such("payment_intent", pi)
                    }
                    (Some(pi), _) => s.money.refunds_of("payment_intent", pi),
                    (None, Some(ch)) => s.money.refunds_of("charge", ch),
                    (None, None) => s.money.refunds_of("object", "refund"),
                };
                (StatusCode::OK, page(refunds, &q, "/v1/refunds"))
            })
        });
    attach_route
        .or(list_cards)
        .unify()
        .or(get_card)
        .unify()
        .or(confirm_pi)
        .unify()
        .or(create_pi)
        .unify()
        .or(get_pi)
        .unify()
        .or(get_charge)
        .unify()
        .or(create_refund_route)
        .unify()
        .or(get_refund)
        .unify()
        .or(list_refunds)
        .unify()
        .boxed()
}
