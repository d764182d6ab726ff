//! The binaries refuse to start wrongly configured, with a message that
//! says what to do.

use std::process::Command;

use crate::support::db::TestDb;

fn stripe_sync(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        // Away from the repo so no developer .env file is read.
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_missing_variable_is_named() {
    let (ok, out) = stripe_sync(
        &["serve"],
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1/x"),
            ("KAFKA_BROKERS", "127.0.0.1:1"),
            ("API_TOKEN", "0123456789abcdef"),
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("missing required environment variable STRIPE_WEBHOOK_SECRET"),
        "{out}"
    );
}

#[test]
fn serve_refuses_an_unmigrated_database_until_migrate_runs() {
    let db = TestDb::empty();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BROKERS", "127.0.0.1:1"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ("API_TOKEN", "0123456789abcdef"),
    ];
    let (ok, out) = stripe_sync(&["serve"], &env);
    assert!(!ok);
    assert!(
        out.contains("not migrated") && out.contains("stripe-sync migrate"),
        "{out}"
    );

    let (ok, out) = stripe_sync(&["migrate"], &env);
    assert!(ok, "{out}");
    assert!(out.contains("applied"), "{out}");
    let (ok, out) = stripe_sync(&["migrate"], &env);
    assert!(ok && out.contains("up to date"), "{out}");
}

#[test]
fn the_worker_refuses_an_unmigrated_database() {
    let db = TestDb::empty();
    let out = Command::new(env!("CARGO_BIN_EXE_stripe-inbound"))
        .env_clear()
        .envs([
            ("DATABASE_URL", db.url.as_str()),
            ("KAFKA_BROKERS", "127.0.0.1:1"),
            ("STRIPE_API_KEY", "sk_test_x"),
        ])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not migrated"), "{err}");
}
