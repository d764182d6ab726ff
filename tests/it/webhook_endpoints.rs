//! `stripe-sync webhooks install|status` against a fake of Stripe's
//! webhook endpoint API (`support::fake_webhook_endpoints`: neither
//! localstripe nor stripe-stateful-mock serves it), and the event types
//! held to the official `stripe` Python package.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use serde_json::Value;
use stripe_sync::registry::handled_event_types;
use stripe_sync::stripe::client::DEFAULT_API_VERSION;
use stripe_sync::stripe::event_types;

use crate::support::fake_webhook_endpoints::FakeEndpoints;
use crate::support::{required_env, unique};

const URL: &str = "https://sync.example.com/webhooks/stripe";

/// The list the endpoint is made from is the package's: a type Stripe
/// adds fails here until `src/stripe/event_types.rs` has it.
#[test]
fn event_types_are_those_of_the_stripe_package() {
    let out = Command::new(required_env("STRIPE_SYNC_PYTHON"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/stripe_event_types.py"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(theirs.len() > 200, "{} event types", theirs.len());
    assert_eq!(event_types::ALL, theirs);
}

fn webhooks(fake: &FakeEndpoints, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .arg("webhooks")
        .args(args)
        .env_clear()
        .env("STRIPE_API_KEY", "sk_test_endpoints")
        .env("STRIPE_API_BASE", fake.base())
        .env("RUST_LOG", "error")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn events_of(endpoint: &Value) -> Vec<String> {
    let mut events: Vec<String> = endpoint["enabled_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    events.sort();
    events
}

/// Install creates one endpoint with exactly the handled event types even
/// when the create's answer is lost (the retry under the same key is
/// answered from Stripe's record), writes the secret into `.env` first in
/// the list (keeping the old one), and never prints it; run again it
/// changes nothing. A person's edits (events removed and added, the
/// endpoint disabled) show in `status` and are undone by install, without
/// a new secret. A Connect endpoint is another endpoint. Bad input is
/// refused, and an unwritable secret file stops install before Stripe
/// makes a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_makes_exactly_the_handled_events_and_is_idempotent() {
    let fake = FakeEndpoints::start();
    let dir = std::env::temp_dir().join(unique("webhooks-install"));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join(".env");
    std::fs::write(&env_file, "A=1\nSTRIPE_WEBHOOK_SECRET=whsec_old\n").unwrap();
    let secret_arg = env_file.to_str().unwrap();
    let mut wanted: Vec<String> = handled_event_types()
        .iter()
        .map(|e| e.to_string())
        .collect();
    wanted.sort();

    let out = stdout(&webhooks(&fake, &["status", "--url", URL]));
    assert!(out.contains("no endpoint"), "{out}");
    assert!(!webhooks(&fake, &["status", "--url", URL, "--exit-code"])
        .status
        .success());

    fake.lose_next_create_answer();
    let out = stdout(&webhooks(
        &fake,
        &["install", "--url", URL, "--secret-file", secret_arg],
    ));
    assert!(out.contains("created we_"), "{out}");
    let endpoints = fake.endpoints();
    assert_eq!(endpoints.len(), 1, "a lost answer made one endpoint");
    let endpoint = &endpoints[0];
    assert_eq!(events_of(endpoint), wanted);
    assert_eq!(endpoint["api_version"], DEFAULT_API_VERSION);
    assert_eq!(endpoint["url"], URL);
    let env = std::fs::read_to_string(&env_file).unwrap();
    let line = env
        .lines()
        .find_map(|l| l.strip_prefix("STRIPE_WEBHOOK_SECRET="))
        .unwrap();
    let secrets: Vec<&str> = line.split(',').collect();
    assert_eq!(secrets.len(), 2, "{line}");
    assert!(secrets[0].starts_with("whsec_") && secrets[1] == "whsec_old");
    assert!(env.starts_with("A=1\n"));
    assert!(!out.contains(secrets[0]), "the secret is never printed");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");

    let posts = fake.posts();
    let out = stdout(&webhooks(
        &fake,
        &["install", "--url", URL, "--secret-file", secret_arg],
    ));
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(fake.posts(), posts, "nothing sent when nothing differs");
    stdout(&webhooks(&fake, &["status", "--url", URL, "--exit-code"]));

    // Someone edits it in the dashboard.
    let id = endpoint["id"].as_str().unwrap().to_owned();
    fake.edit(&id, |e| {
        let mut events = events_of(e);
        events.retain(|k| k != "invoice.paid" && k != "customer.updated");
        events.push("balance.available".into());
        e["enabled_events"] = serde_json::json!(events);
        e["status"] = serde_json::json!("disabled");
    });
    let status = webhooks(&fake, &["status", "--url", URL, "--exit-code"]);
    assert!(!status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("missing: customer.updated, invoice.paid"),
        "{text}"
    );
    assert!(
        text.contains("extra (ignored by the engine): balance.available"),
        "{text}"
    );
    assert!(text.contains("disabled"), "{text}");
    let json: Value = serde_json::from_str(&stdout(&webhooks(
        &fake,
        &["status", "--url", URL, "--json"],
    )))
    .unwrap();
    assert_eq!(json[0]["missing"].as_array().unwrap().len(), 2);
    let out = stdout(&webhooks(
        &fake,
        &["install", "--url", URL, "--secret-file", secret_arg],
    ));
    assert!(
        out.contains(&format!(
            "updated {id}: 2 event types added, 1 removed, enabled again"
        )),
        "{out}"
    );
    let endpoints = fake.endpoints();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(events_of(&endpoints[0]), wanted);
    assert_eq!(endpoints[0]["status"], "enabled");
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        env,
        "no new secret"
    );

    // Another endpoint of the URL, every event, another version: warned.
    fake.add(URL, &["*"], "2020-08-27");
    let out = stdout(&webhooks(&fake, &["status", "--url", URL]));
    assert!(out.contains("also sends events to this URL"), "{out}");
    assert!(!webhooks(&fake, &["status", "--url", URL, "--exit-code"])
        .status
        .success());

    // A Connect endpoint is its own; a plain file holds the secret alone.
    let plain = dir.join("connect-secret");
    let out = stdout(&webhooks(
        &fake,
        &[
            "install",
            "--url",
            URL,
            "--connect",
            "--secret-file",
            plain.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("created we_"), "{out}");
    let connect = fake.endpoints().into_iter().last().unwrap();
    assert!(connect["application"].is_string(), "{connect}");
    let secret = std::fs::read_to_string(&plain).unwrap();
    assert!(secret.starts_with("whsec_") && secret.trim().lines().count() == 1);

    // Refused: not a URL; a secret file that cannot be written (nothing
    // created at Stripe).
    let bad = webhooks(&fake, &["install", "--url", "sync.example.com"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an http(s) URL"));
    let before = fake.endpoints().len();
    // Under a file, not a directory: no one can write there, root neither.
    let not_a_dir = dir.join("not-a-dir");
    std::fs::write(&not_a_dir, "").unwrap();
    let other = "https://other.example.com/webhooks/stripe";
    let denied = webhooks(
        &fake,
        &[
            "install",
            "--url",
            other,
            "--secret-file",
            not_a_dir.join(".env").to_str().unwrap(),
        ],
    );
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("cannot write the secret"));
    assert_eq!(
        fake.endpoints().len(),
        before,
        "no endpoint whose secret is lost"
    );
}
