//! The authoring kit from nothing to a loaded policy: `mqtt-policy new fleet` in a temporary
//! directory outside the repository, built with the command its README documents, its native
//! tests and its cases (through the `.wasm`) passing, its settings embedded for tenant `acme`,
//! and the result loaded in a real Mosquitto, where an allowed and a denied publish behave as
//! the cases say.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mqtt_policy_testkit as support;
use support::client::{Mqtt, Opts, Proto};
use support::{Broker, Setup, TempDir, field};

fn mqtt_policy(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mqtt-policy")).current_dir(dir).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "mqtt-policy {args:?}: {text}");
    text
}

/// Cargo as a user outside this repository runs it: none of the outer build's settings.
fn cargo(dir: &Path, args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let o = Command::new(cargo)
        .current_dir(dir)
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "cargo {args:?} in {}: {text}", dir.display());
    if args[0] == "test" {
        assert!(text.contains("cases_pass_natively ... ok"), "{text}");
        assert!(text.contains("the_rate_resets_with_the_clock_and_ops_logins_are_logged ... ok"), "{text}");
    }
}

#[test]
fn a_new_policy_builds_outside_the_repository_passes_its_cases_and_enforces_them_in_mosquitto() {
    let tmp = TempDir::new("kit-new");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    assert!(!tmp.starts_with(&repo), "{} is inside the repository", tmp.display());

    mqtt_policy(&tmp, &["new", "fleet"]);
    let crate_dir = tmp.join("fleet");
    // The commands of the generated README, as written there.
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    assert!(readme.contains("cargo build --offline --target wasm32-wasip2 --profile wasm"), "{readme}");
    cargo(&crate_dir, &["build", "--offline", "--target", "wasm32-wasip2", "--profile", "wasm"]);
    cargo(&crate_dir, &["test", "--offline"]);
    let wasm = "target/wasm32-wasip2/wasm/fleet.wasm";
    let report = mqtt_policy(&crate_dir, &["test", wasm, "cases.toml", "--settings", "settings.toml"]);
    assert!(report.contains("13 passed, 0 failed"), "{report}");
    mqtt_policy(&crate_dir, &["build", "settings.toml", "--policy", wasm, "-o", "acme.wasm"]);
    let checked = mqtt_policy(&crate_dir, &["check", "acme.wasm"]);
    assert!(!checked.contains("s3cret"), "a password printed: {checked}");

    let policy = std::fs::read(crate_dir.join("acme.wasm")).unwrap();
    let b = Broker::start("kit-new", Setup::tenant("acme", policy)).unwrap();
    let mut ops = Mqtt::connected(&Opts::new(b.port, Proto::V5, "ops-console").user("ops", "ops-s3cret"));
    assert_eq!(ops.subscribe("fleet/#", 1), 1, "case \"ops watches the whole fleet\"");
    let mut device = Mqtt::connected(&Opts::new(b.port, Proto::V5, "paris-0001").user("paris-0001", "paris-s3cret"));
    // Case "telemetry under its own topic": allowed, delivered.
    assert_eq!(device.publish("fleet/paris/0001/telemetry", 1, false, b"21.5"), Some(0));
    let got = ops.recv(Duration::from_secs(5)).expect("the allowed publish is delivered");
    assert_eq!((got.0.as_str(), got.1.as_slice()), ("fleet/paris/0001/telemetry", &b"21.5"[..]));
    // Case "another device's topic": refused (PUBACK 0x87), never delivered.
    assert_eq!(device.publish("fleet/paris/0002/telemetry", 1, false, b"forged"), Some(0x87));
    assert!(ops.drain(Duration::from_millis(500)).is_empty(), "the refused publish was delivered");
    let denied = b.wait_event("deny", |e| field(e, "outcome") == "deny");
    assert_eq!(field(&denied, "message"), "unauthorized topic fleet/paris/0002/telemetry");
    // The session's attributes are in its accept event.
    let accepted = b.wait_event("accept", |e| field(e, "outcome") == "accept" && field(e, "client_id") == "paris-0001");
    assert_eq!(accepted["attributes"], serde_json::json!({"role": "device", "site": "paris"}));
    // A wrong site password: refused at connect.
    let (_, code) = Mqtt::connect(&Opts::new(b.port, Proto::V5, "paris-0003").user("paris-0003", "lyon-s3cret"));
    assert_eq!(code, 0x87, "Mosquitto 2.0 sends CONNACK 0x87 for any refusal");
    b.stop().unwrap();
}
