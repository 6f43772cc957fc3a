//! Runs the load generator against a real Mosquitto broker on loopback.
//!
//! Each test starts its own broker on a free port with a generated config (the workspace's
//! harness, `mqtt-policy-testkit`), so tests can run in parallel and never touch a broker
//! someone else is running.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use mqtt_loadgen::{Options, Summary, run_blocking, storm};
use mqtt_policy_testkit::Broker;

/// A bare broker from the workspace harness. Mosquitto's default max_queued_messages (1000)
/// drops QoS 1 messages for a subscriber that falls behind; these tests check the load
/// generator's counting, not that limit.
fn start() -> Broker {
    start_with("max_queued_messages 0\n")
}

fn start_with(extra_config: &str) -> Broker {
    Broker::start_bare("loadgen", extra_config).unwrap_or_else(|e| panic!("{e:#}"))
}

fn run(broker: &Broker, args: &[&str]) -> Summary {
    let port = broker.port.to_string();
    let mut argv = vec!["mqtt-loadgen", "--port", &port];
    argv.extend_from_slice(args);
    let opts = Options::parse_from(argv);
    run_blocking(&opts).unwrap_or_else(|e| panic!("run {args:?} failed: {e:#}\nbroker log:\n{}", broker.log()))
}

#[test]
fn qos1_delivers_every_message_to_every_subscriber() {
    let broker = start();
    let s = run(&broker, &["--publishers", "2", "--subscribers", "2", "--messages", "500", "--qos", "1"]);
    assert_eq!(s.sent, 1000);
    assert_eq!(s.acked, 1000);
    assert_eq!(s.expected, 2000);
    assert_eq!(s.missing, 0, "{s}");
    // QoS 1 is at-least-once, but a healthy broker on loopback with clean sessions redelivers nothing.
    assert_eq!(s.delivered, 2000, "{s}");
    assert!(s.complete());
    assert_eq!(s.latency.samples, 2000);
    assert!(s.latency.p50_us > 0.0 && s.latency.p50_us <= s.latency.p99_us && s.latency.p99_us <= s.latency.max_us);
    assert!(s.sent_per_sec > 0.0 && s.delivered_per_sec > 0.0);
}

#[test]
fn qos0_small_run_loses_nothing_on_loopback() {
    let broker = start();
    let s = run(&broker, &["--publishers", "2", "--subscribers", "2", "--messages", "100", "--qos", "0"]);
    assert_eq!((s.sent, s.acked, s.expected), (200, 0, 400));
    assert_eq!((s.delivered, s.missing, s.duplicates), (400, 0, 0), "{s}");
    assert!(s.complete());
}

#[test]
fn expected_deliveries_follow_the_subscription_filter() {
    let broker = start();
    // 2 publishers over 4 devices: publisher 0 cycles dev-0, dev-1; only dev-0 matches, so
    // half of publisher 0's messages and none of publisher 1's are expected.
    let s = run(
        &broker,
        &[
            "--publishers",
            "2",
            "--devices",
            "4",
            "--subscribers",
            "1",
            "--messages",
            "50",
            "--qos",
            "1",
            "--subscribe-filter",
            "devices/dev-0/#",
            "--client-id-prefix",
            "filter-test-",
        ],
    );
    assert_eq!((s.sent, s.expected, s.delivered, s.missing), (100, 25, 25, 0), "{s}");
}

#[test]
fn duration_mode_with_rate_limit_stops_on_time() {
    let broker = start();
    let started = Instant::now();
    let s =
        run(&broker, &["--publishers", "2", "--subscribers", "1", "--duration", "1", "--rate", "200", "--qos", "0"]);
    // 2 publishers × 200 msg/s × 1 s, give or take the pacing at the edges.
    assert!((360..=410).contains(&s.sent), "{s}");
    assert_eq!(s.missing, 0, "{s}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn binary_prints_json_and_verifies() {
    let broker = start();
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-loadgen"))
        .args(["--port", &broker.port.to_string(), "--publishers", "2", "--subscribers", "1"])
        .args(["--messages", "100", "--qos", "1", "--json", "--verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["delivered"], 200);
    assert_eq!(v["missing"], 0);
    assert!(v["latency"]["p99_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn messages_the_broker_drops_are_reported_missing_and_fail_verify() {
    // A tiny per-client queue makes the broker drop QoS 1 messages for a subscriber that cannot
    // keep up with 2 publishers sending as fast as their windows allow.
    let broker = start_with("max_queued_messages 5\nmax_inflight_messages 5\n");
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-loadgen"))
        .args(["--port", &broker.port.to_string(), "--publishers", "2", "--subscribers", "1"])
        .args(["--messages", "5000", "--qos", "1", "--drain-ms", "300", "--json", "--verify"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stderr {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["sent"], 10000);
    let (expected, delivered, missing) =
        (v["expected"].as_u64().unwrap(), v["delivered"].as_u64().unwrap(), v["missing"].as_u64().unwrap());
    assert!(missing > 0, "the broker was expected to drop messages: {v}\n{}", broker.log());
    assert_eq!(delivered - v["duplicates"].as_u64().unwrap() + missing, expected, "{v}");
    assert_eq!(out.status.code(), Some(1), "--verify fails on missing messages");
}

#[test]
fn binary_refuses_non_loopback_hosts_before_connecting() {
    // 192.0.2.1 is a documentation address; it is refused before any socket is opened.
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-loadgen")).args(["--host", "192.0.2.1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn unreachable_broker_is_an_error_not_a_hang() {
    let port = mqtt_policy_testkit::free_port();
    let opts = Options::parse_from(["mqtt-loadgen", "--port", &port.to_string()]);
    let started = Instant::now();
    let err = run_blocking(&opts).unwrap_err();
    assert!(format!("{err:#}").contains("cannot connect"), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn connect_storm_counts_accepted_and_refused_connects() {
    // Mosquitto's own password file, hashed ($7$) by Debian's mosquitto_passwd.
    let dir = std::env::temp_dir().join(format!("loadgen-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwords");
    std::fs::write(&passwords, "dev-0:pw-0-7Qv!m2Xp\ndev-1:pw-1-7Qv!m2Xp\ndev-2:pw-2-7Qv!m2Xp\ndev-3:pw-3-7Qv!m2Xp\n")
        .unwrap();
    let (code, out) = mqtt_policy_testkit::run("mosquitto_passwd", &["-U", passwords.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read_to_string(&passwords).unwrap().contains("dev-0:$7$"));
    // Client 3 connects only as dev-3, with a wrong password: every one of its attempts is refused.
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        "dev-0\tdev-0\tpw-0-7Qv!m2Xp\ndev-1\tdev-1\tpw-1-7Qv!m2Xp\ndev-2\tdev-2\tpw-2-7Qv!m2Xp\ndev-3\tdev-3\twrong\n",
    )
    .unwrap();
    let broker = start_with(&format!("allow_anonymous false\npassword_file {}\n", passwords.display()));
    let port = broker.port.to_string();
    let opts = Options::parse_from([
        "mqtt-loadgen",
        "--port",
        &port,
        "--connect-storm",
        "--clients",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--credentials",
        credentials.to_str().unwrap(),
    ]);
    let started = Instant::now();
    let s = storm::run_blocking(&opts).unwrap_or_else(|e| panic!("{e:#}\n{}", broker.log()));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!((s.clients, s.identities, s.errors), (4, 4, 0), "{s}");
    assert!(s.accepted > 0 && s.refused > 0, "{s}");
    assert_eq!(s.attempts, s.accepted + s.refused);
    assert_eq!(s.refused_by_code.keys().collect::<Vec<_>>(), ["5"], "Mosquitto refuses a bad password with 5: {s}");
    assert_eq!((s.latency.samples, s.refused_latency.samples), (s.accepted, s.refused));
    assert!(s.latency.p50_us > 0.0 && s.latency.p50_us <= s.latency.p99_us);
    assert!(s.connects_per_sec > 0.0 && s.all_attempts >= s.attempts);
    assert!(!s.complete());
    assert!(broker.log().contains("dev-0"), "the broker saw the storm's clients");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn connect_storm_binary_prints_json_and_verifies() {
    let broker = start();
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-loadgen"))
        .args(["--port", &broker.port.to_string(), "--connect-storm", "--clients", "2", "--duration", "0.5"])
        .args(["--json", "--verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "connect-storm");
    assert!(v["accepted"].as_u64().unwrap() > 0, "{v}");
    assert_eq!((v["refused"].as_u64(), v["errors"].as_u64()), (Some(0), Some(0)), "{v}");
    // Nobody listens: each client gives up after a bounded number of failed attempts.
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-loadgen"))
        .args(["--port", &mqtt_policy_testkit::free_port().to_string(), "--connect-storm", "--duration", "30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed attempts in a row"));
}
