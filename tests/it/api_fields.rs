//! The registry's typed columns against Stripe's current API version, as
//! the official `stripe` Python package declares it (an oracle we did not
//! write, carried offline): every column reads a field the current
//! version's class of its object declares, at the column's pinned path or
//! at one of the places a later version moved it to (`Column::moved`). A
//! field Stripe moves in a new version fails here until the registry says
//! where it went.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use stripe_sync::registry::{Column, RESOURCES};

use crate::support::required_env;

/// Runs `script` (under tests/py/) in the Python that has the `stripe`
/// package, with `input` on its stdin; its stdout, as JSON.
fn ask_stripe_package(script: &str, input: &[u8]) -> Value {
    let path = format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(required_env("STRIPE_SYNC_PYTHON"))
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asks the package which of `wanted`'s fields each object's class lacks.
fn oracle(wanted: &BTreeMap<&str, Vec<&str>>) -> Value {
    ask_stripe_package("stripe_fields.py", &serde_json::to_vec(wanted).unwrap())
}

/// Each column's candidate top-level fields, per object (a child list's
/// columns under its items' object).
fn columns_by_object() -> Vec<(&'static str, &'static Column)> {
    RESOURCES
        .iter()
        .flat_map(|r| {
            let own = r.columns.iter().map(move |c| (r.object, c));
            let children = r
                .children
                .iter()
                .flat_map(|child| child.columns.iter().map(move |c| (child.item_object, c)));
            own.chain(children)
        })
        .collect()
}

fn top(path: &str) -> &str {
    path.split('.').next().unwrap()
}

#[test]
fn every_typed_column_reads_a_field_of_stripe_s_current_api_version() {
    let columns = columns_by_object();
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (object, column) in &columns {
        wanted
            .entry(object)
            .or_default()
            .extend(column.paths().map(top));
    }
    // Holds the oracle to a field we know moved: the pinned invoice's
    // `subscription` is gone from the current version.
    wanted.entry("invoice").or_default().push("subscription");
    let answer = oracle(&wanted);
    let missing = |object: &str, field: &str| {
        answer["missing"][object]
            .as_array()
            .is_some_and(|fields| fields.iter().any(|f| f == field))
    };
    assert!(
        missing("invoice", "subscription"),
        "the oracle must see that {} moved the invoice's subscription: {answer}",
        answer["version"]
    );
    let unread: Vec<String> = columns
        .iter()
        .filter(|(object, column)| column.paths().all(|p| missing(object, top(p))))
        .map(|(object, column)| format!("{object}.{}", column.name))
        .collect();
    assert!(
        unread.is_empty(),
        "typed columns whose field Stripe {} no longer has anywhere the registry looks: {unread:?}",
        answer["version"]
    );
    assert_eq!(
        answer["classless"],
        serde_json::json!([]),
        "objects the package has no class for"
    );
}

/// The types backfill slices by `created` (and sends `--created-since`
/// to) are exactly those whose list Stripe's API lets filter by it: a
/// filter Stripe does not take is a 400 that stops the backfill.
#[test]
fn the_types_listed_by_created_are_those_stripe_filters_by_created() {
    let listed: Vec<&str> = RESOURCES
        .iter()
        .filter(|r| r.listing.whole().is_some())
        .map(|r| r.object)
        .collect();
    let answer: BTreeMap<String, Option<bool>> = serde_json::from_value(ask_stripe_package(
        "stripe_list_created.py",
        listed.join(" ").as_bytes(),
    ))
    .unwrap();
    let theirs: Vec<&str> = answer
        .iter()
        .filter(|(_, by_created)| **by_created == Some(true))
        .map(|(object, _)| object.as_str())
        .collect();
    let mut ours: Vec<&str> = stripe_sync::registry::LISTED_BY_CREATED.to_vec();
    ours.sort();
    assert_eq!(ours, theirs);
    assert!(ours.contains(&"customer") && !ours.contains(&"payment_link"));
}
