//! Property fuzzing of everything that takes input from outside: the
//! `Stripe-Signature` verifier, the event parsers, and the API's request
//! bodies. The suite runs a smoke of each target (`FUZZ_CASES`, default
//! 2,000 inputs); `scripts/fuzz` runs a campaign of a million each and
//! prints how many inputs each target tried. A panic anywhere fails the
//! target with the input that caused it (proptest shrinks it).
//!
//! The properties: nothing panics; the verifier accepts only a header that
//! holds the HMAC of the body under a configured secret at an in-tolerance
//! timestamp, computed here independently (anything else it accepts is a
//! forgery); a body that the API accepts is one its types accept.

use hmac::{Hmac, Mac};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use secrecy::SecretString;
use serde_json::Value;
use sha2::Sha256;
use stripe_sync::stripe::signature::{sign, WebhookVerifier};
use stripe_sync::stripe::{EventEnvelope, StripeEvent};

const NOW: i64 = 1_764_000_000;

pub(crate) fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

pub(crate) fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

pub(crate) fn report(target: &str, inputs: u32) {
    eprintln!("fuzz {target}: {inputs} inputs, 0 panics, 0 failures");
}

/// The HMAC a genuine Stripe header carries, computed without our code.
fn genuinely_signed(header: &str, body: &[u8], secret: &str) -> bool {
    let Some(t) = header
        .split(',')
        .find_map(|item| item.strip_prefix("t="))
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return false;
    };
    if (NOW - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    header
        .split(',')
        .filter_map(|item| item.strip_prefix("v1="))
        .any(|sig| sig == expected)
}

/// A header that is forged in one of several ways, or junk.
fn header_and_body() -> impl Strategy<Value = (String, Vec<u8>)> {
    let body = proptest::collection::vec(any::<u8>(), 0..256);
    (
        body,
        -1000i64..1000,
        0u8..6,
        any::<usize>(),
        any::<u8>(),
        "\\PC{0,120}",
    )
        .prop_map(|(body, skew, mode, at, byte, junk)| {
            let t = NOW + skew;
            let genuine = sign("whsec_fuzz_secret", t, &body);
            match mode {
                // Junk, of any shape.
                0 => (junk, body),
                // A genuine header with one byte changed.
                1 => {
                    let mut h = genuine.into_bytes();
                    let i = at % h.len();
                    h[i] = byte;
                    (String::from_utf8_lossy(&h).into_owned(), body)
                }
                // A genuine header over another body.
                2 => {
                    let mut other = body.clone();
                    other.push(byte);
                    (genuine, other)
                }
                // Signed with another secret.
                3 => (sign("whsec_someone_else", t, &body), body),
                // Genuine (accepted when the timestamp is in tolerance).
                4 => (genuine, body),
                // A genuine signature with junk around it.
                _ => (format!("{junk},{genuine},v1={junk}"), body),
            }
        })
}

#[test]
fn fuzz_the_signature_verifier_accepts_nothing_forged() {
    let verifier = WebhookVerifier::new(vec![SecretString::from("whsec_fuzz_secret")], 300);
    runner()
        .run(&header_and_body(), |(header, body)| {
            let accepted = verifier.verify(Some(&header), &body, NOW).is_ok();
            prop_assert!(
                !accepted || genuinely_signed(&header, &body, "whsec_fuzz_secret"),
                "forgery accepted: {header:?}"
            );
            Ok(())
        })
        .unwrap();
    report("signature", cases());
}

/// A Stripe event from the fixtures, mutated.
fn mutated_event() -> impl Strategy<Value = Vec<u8>> {
    let seed = serde_json::to_vec(&crate::support::fixtures::customer_event(
        "evt_fuzz",
        "customer.updated",
        NOW,
        "cus_fuzz",
        serde_json::json!({"name": "Fuzz", "metadata": {"k": "v"}}),
    ))
    .unwrap();
    (
        0u8..7,
        any::<usize>(),
        any::<u8>(),
        0usize..2000,
        "\\PC{0,40}",
    )
        .prop_map(move |(mode, at, byte, depth, text)| {
            let mut b = seed.clone();
            let i = at % b.len();
            match mode {
                0 => b[i] = byte,
                1 => b.truncate(i),
                2 => b.insert(i, byte),
                // Deep nesting, in and around the event.
                3 => {
                    let mut deep = "[".repeat(depth).into_bytes();
                    deep.extend("]".repeat(depth).bytes());
                    b.splice(i..i, deep);
                }
                // Numbers no f64 holds, where a number goes.
                4 => {
                    let s = String::from_utf8_lossy(&b)
                        .replace(&NOW.to_string(), "1e99999999")
                        .into_bytes();
                    b = s;
                }
                // Invalid UTF-8.
                5 => {
                    b.splice(i..i, [0xff, 0xfe, byte]);
                }
                // Text where JSON was.
                _ => {
                    b.splice(i..i, text.into_bytes());
                }
            }
            b
        })
}

#[test]
fn fuzz_the_event_parsers_never_panic() {
    runner()
        .run(&mutated_event(), |body| {
            // Either may refuse: ingest refuses what is not JSON (invalid
            // UTF-8 anywhere included), and the worker dead-letters what
            // ingest let through but it cannot read. Neither may panic.
            let _ = EventEnvelope::parse(&body);
            let _ = StripeEvent::parse(&body);
            Ok(())
        })
        .unwrap();
    report("event parsers", cases());
}

/// JSON of any shape, objects keyed by the API's field names or not.
pub(crate) fn json_body() -> impl Strategy<Value = Value> {
    const FIELDS: &[&str] = &[
        "email",
        "name",
        "phone",
        "description",
        "metadata",
        "amount",
        "currency",
        "customer_id",
        "payment_method",
        "confirm",
        "payment_intent",
        "reason",
        "request_id",
        "line_items",
        "mode",
        "success_url",
        "cancel_url",
        "price",
        "quantity",
        "price_data",
        "id",
        "credits",
        "active",
        "package_id",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,30}".prop_map(Value::from),
        Just(Value::from("usd")),
        Just(Value::from("pi_123")),
        Just(Value::from("https://shop.example/x")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        proptest::sample::select(FIELDS).prop_map(str::to_owned),
                        "\\PC{0,8}"
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

#[test]
fn fuzz_the_api_bodies_refuse_without_panicking() {
    use stripe_sync::apps::credits::packages;
    use stripe_sync::apps::payments::input as payments;
    use stripe_sync::customers::input as customers;
    fn check<T: serde::de::DeserializeOwned, U, E>(v: &Value, checked: impl Fn(T) -> Result<U, E>) {
        if let Ok(body) = T::deserialize(v) {
            let _ = checked(body);
        }
    }
    runner()
        .run(&json_body(), |v| {
            check(&v, customers::NewCustomer::parse);
            check(&v, customers::CustomerPatch::parse);
            check(&v, payments::IntentBody::checked);
            check(&v, payments::RefundBody::checked);
            check(&v, payments::RefundRequestBody::checked);
            check(&v, payments::CheckoutBody::checked);
            check(&v, packages::CreateBody::checked);
            check(&v, packages::PatchBody::checked);
            Ok(())
        })
        .unwrap();
    report("API bodies", cases());
}
