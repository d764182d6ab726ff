//! The Stripe fake's payments endpoints (what the credits and payments
//! code and stripe-inbound's re-reads call), over `payments_stripe.rs`,
//! and the bank that settles pending refunds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use warp::filters::path::FullPath;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::Filter;

use crate::load::Deliveries;
use crate::payments_stripe::{
    attach, confirm, create_intent, create_refund, field, no_such, settle_refunds, Done, Money,
};
use crate::stripe::{request_of, Book, FakeStripe, State};

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

/// What a write endpoint does: with the fake's state, the fixtures, the
/// id its path names (empty for a create) and the request's form.
type Write = fn(&mut State, &Value, &str, &[(String, String)]) -> Done;

/// A write endpoint under Stripe's idempotency rules: `route` matches the
/// path (of a POST) and extracts the id it names.
fn write<R>(
    route: R,
    fake: FakeStripe,
    fixtures: Arc<Value>,
    deliveries: Deliveries,
    op: Write,
) -> BoxedFilter<(warp::reply::Response,)>
where
    R: Filter<Extract = (String,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    route
        .and(warp::post())
        .and(warp::path::full())
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::body::form::<Vec<(String, String)>>())
        .map(
            move |id: String, path: FullPath, key, form: Vec<(String, String)>| {
                let request = request_of(path.as_str(), &form);
                fake.perform(key, request, Book::Payments, &deliveries, |s| {
                    op(s, &fixtures, &id, &form)
                })
            },
        )
        .boxed()
}

/// `GET /v1/{collection}/{id}`, answered from one of the fake's tables.
fn get_one(
    fake: FakeStripe,
    collection: &'static str,
    kind: &'static str,
    table: fn(&Money) -> &HashMap<String, Value>,
) -> BoxedFilter<(warp::reply::Response,)> {
    warp::path("v1")
        .and(warp::path(collection))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .map(move |id: String| {
            fake.read(|s| match table(&s.money).get(&id) {
                Some(found) => (StatusCode::OK, found.clone()),
                None => no_such(kind, &id),
            })
        })
        .boxed()
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
    let writes = |route, op| {
        write(
            route,
            fake.clone(),
            fixtures.clone(),
            deliveries.clone(),
            op,
        )
    };
    let no_id = String::new;
    let attach_route = writes(
        warp::path!("v1" / "payment_methods" / String / "attach").boxed(),
        attach,
    );
    let create_pi = writes(
        warp::path!("v1" / "payment_intents").map(no_id).boxed(),
        |s, fx, _, form| create_intent(s, fx, form),
    );
    let confirm_pi = writes(
        warp::path!("v1" / "payment_intents" / String / "confirm").boxed(),
        |s, fx, id, form| match s.money.intents.get(id).cloned() {
            Some(intent) => confirm(s, fx, intent, field(form, "payment_method")),
            None => {
                let (status, body) = no_such("payment_intent", id);
                (status, body, vec![])
            }
        },
    );
    let create_refund_route = writes(
        warp::path!("v1" / "refunds").map(no_id).boxed(),
        |s, fx, _, form| create_refund(s, fx, form),
    );
    let query = warp::query::<HashMap<String, String>>();
    let list_cards = {
        let fake = fake.clone();
        warp::path!("v1" / "payment_methods")
            .and(warp::get())
            .and(query)
            .map(move |q: HashMap<String, String>| {
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
            })
    };
    let list_refunds = {
        let fake = fake.clone();
        warp::path!("v1" / "refunds")
            .and(warp::get())
            .and(query)
            .map(move |q: HashMap<String, String>| {
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
            })
    };
    let get_card = get_one(fake.clone(), "payment_methods", "payment_method", |m| {
        &m.payment_methods
    });
    let get_pi = get_one(fake.clone(), "payment_intents", "payment_intent", |m| {
        &m.intents
    });
    let get_charge = get_one(fake.clone(), "charges", "charge", |m| &m.charges);
    let get_refund = get_one(fake, "refunds", "refund", |m| &m.refunds);
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
