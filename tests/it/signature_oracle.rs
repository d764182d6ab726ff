//! Differential test: our verifier against the official `stripe` Python
//! package, an implementation we did not write. On the same inputs ours must
//! accept exactly what it accepts, with one documented difference: the
//! official library only rejects timestamps too far in the past, while ours
//! also refuses timestamps more than 300 s in the future.

use std::io::Write;
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde_json::json;
use stripe_sync::stripe::signature::{sign, WebhookVerifier, DEFAULT_TOLERANCE_SECS};

use crate::support::fixtures::customer_event;
use crate::support::required_env;

struct Case {
    payload: String,
    header: String,
    secret: String,
    timestamp_offset: i64,
}

fn generate(rng: &mut rand::rngs::StdRng, now: i64) -> Vec<Case> {
    let mut cases = Vec::new();
    for i in 0..400 {
        let payload = serde_json::to_string(&customer_event(
            &format!("evt_o{i}"),
            "customer.updated",
            now,
            &format!("cus_o{i}"),
            json!({"name": format!("ünïcode {i} \"quoted\""), "metadata": {"n": i.to_string()}}),
        ))
        .unwrap();
        let secret = format!("whsec_{}", rng.gen::<u64>());
        // Offsets avoid the few seconds around ±300 so the oracle's own
        // clock reading (a moment later) cannot flip a verdict.
        let offset = match rng.gen_range(0..6) {
            0 => rng.gen_range(-290..290),
            1 => rng.gen_range(-5000..-310),
            2 => rng.gen_range(310..5000),
            _ => rng.gen_range(-60..60),
        };
        let t = now + offset;
        let valid = sign(&secret, t, payload.as_bytes());
        let valid_sig = valid.split_once(",v1=").unwrap().1.to_owned();
        let other_sig = sign("whsec_other", t, payload.as_bytes())
            .split_once(",v1=")
            .unwrap()
            .1
            .to_owned();
        let (header, payload) = match i % 10 {
            0 => (valid, payload),
            1 => (format!("t={t},v1={other_sig},v1={valid_sig}"), payload),
            2 => (sign("whsec_wrong", t, payload.as_bytes()), payload),
            3 => (valid, payload.replacen("cus_", "cus_X", 1)),
            4 => (format!("t={t},v0={valid_sig}"), payload),
            5 => (format!("v1={valid_sig}"), payload),
            6 => ("garbage".to_owned(), payload),
            7 => (format!("t={t},v1={valid_sig},scheme=x"), payload),
            8 => (format!("t={},v1={valid_sig}", t + 1), payload),
            _ => (format!("t={t},v1={}", &valid_sig[..32]), payload),
        };
        cases.push(Case {
            payload,
            header,
            secret,
            timestamp_offset: offset,
        });
    }
    cases
}

#[test]
fn our_verifier_agrees_with_the_official_stripe_library() {
    let now = stripe_sync::ingest::unix_now();
    let seed: u64 = rand::random();
    let cases = generate(&mut rand::rngs::StdRng::seed_from_u64(seed), now);
    let input = serde_json::to_vec(
        &cases
            .iter()
            .map(|c| json!({"payload": c.payload, "header": c.header, "secret": c.secret}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/stripe_oracle.py");
    let mut child = Command::new(required_env("STRIPE_SYNC_PYTHON"))
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the stripe oracle");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "oracle failed");
    let official: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(official.len(), cases.len());

    let (mut accepted, mut future_only) = (0, 0);
    for (case, official) in cases.iter().zip(official) {
        let ours = WebhookVerifier::new(
            vec![SecretString::from(case.secret.clone())],
            DEFAULT_TOLERANCE_SECS,
        )
        .verify(Some(&case.header), case.payload.as_bytes(), now)
        .is_ok();
        let too_far_ahead = case.timestamp_offset > DEFAULT_TOLERANCE_SECS;
        if official && too_far_ahead {
            // The documented difference: only ours refuses the future.
            assert!(
                !ours,
                "seed {seed}: accepted a timestamp {} s ahead",
                case.timestamp_offset
            );
            future_only += 1;
        } else {
            assert_eq!(
                ours, official,
                "seed {seed}: header {:?} offset {}",
                case.header, case.timestamp_offset
            );
        }
        accepted += ours as usize;
    }
    // The generated mix must exercise both verdicts and the difference.
    assert!(
        accepted > 40 && future_only > 5,
        "seed {seed}: accepted {accepted}, future-only {future_only}"
    );
}
