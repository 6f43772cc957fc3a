//! Device status the way the seeded hub (IBM Watson IoT Platform, seed 004) reports it, on a
//! real Mosquitto with real clients: the shipped IBM example hub with `plugin_opt_monitoring
//! ibm`. Every message is checked field by field against the seed's table, every closing code
//! against its table of codes and reason strings.

use mqtt_policy_testkit as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::client::{Mqtt, Opts, Proto};
use support::{Broker, Setup, deploy, field};

const API_KEY: &str = "a-acme-a84ps90Ajs";
const API_TOKEN: &str = "MP$08VKz!8rXwnR-Q*";
const DEVICES: &str = "iot-2/type/+/id/+/mon";
const APPS: &str = "iot-2/app/+/mon";

fn rules() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/examples/ibm-platform/rules.toml"))
        .unwrap()
}

fn start(tag: &str, setup: impl FnOnce(Setup) -> Setup) -> Broker {
    let setup = setup(Setup::tenant("acme", support::hub_policy(&rules(), &[])).option("monitoring", "ibm"));
    Broker::start(tag, setup).unwrap()
}

/// The example's token of a device.
fn token(id: &str) -> String {
    format!("{id}-7Qv!m2Xp9Lz4")
}

fn device(port: u16, proto: Proto, kind: &str, device_type: &str, id: &str) -> Opts {
    Opts::new(port, proto, &format!("{kind}:acme:{device_type}:{id}")).user("use-token-auth", &token(id))
}

/// An application watching devices (and, with `apps`, applications).
fn watcher(port: u16, app: &str, filters: &[&str]) -> Mqtt {
    let mut m = Mqtt::connected(&Opts::new(port, Proto::V5, &format!("a:acme:{app}")).user(API_KEY, API_TOKEN));
    for f in filters {
        assert_eq!(m.subscribe(f, 0), 0, "{f}");
    }
    m
}

/// The next monitoring message on `topic` within 15 s (others are skipped): JSON, retain flag.
fn next(m: &mut Mqtt, topic: &str) -> (Value, bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some((t, payload, retain)) = m.recv(deadline.saturating_duration_since(Instant::now())) {
        if t == topic {
            let v = serde_json::from_slice(&payload)
                .unwrap_or_else(|e| panic!("{topic}: {e}: {:?}", String::from_utf8_lossy(&payload)));
            return (v, retain);
        }
    }
    panic!("no monitoring message on {topic} within 15 s");
}

/// `2026-12-02T20:31:05.123Z`.
fn iso(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s[..4].parse::<u32>().is_ok_and(|y| y >= 2024)
    })
}

/// The seed's table, field by field: mandatory fields for every action, ConnectTime for an
/// accepted connection, CloseCode and Reason only when closing with a code other than 0, the
/// counters only in a Disconnect.
fn check(v: &Value, action: &str, client_id: &str, port: u16, protocol: &str, user: Option<&str>, code: Option<u64>) {
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(v["Action"], action, "{v}");
    assert!(iso(&v["Time"]), "Time: {v}");
    assert_eq!(v["ClientAddr"], "127.0.0.1", "{v}");
    assert_eq!(v["ClientID"], client_id, "{v}");
    assert_eq!(v["Port"], port, "{v}");
    assert_eq!(v["Secure"], false, "{v}");
    assert_eq!(v["Protocol"], protocol, "{v}");
    assert_eq!(v.get("User").and_then(Value::as_str), user, "{v}");
    assert!(v.get("Certname").is_none(), "no certificate: {v}");
    assert_eq!(action != "FailedConnect", iso(&v["ConnectTime"]), "ConnectTime: {v}");
    assert_eq!(v.get("CloseCode").and_then(Value::as_u64), code, "{v}");
    assert_eq!(v.get("Reason").is_some(), code.is_some(), "Reason with a code only: {v}");
    for counter in ["ReadBytes", "ReadMsg", "WriteBytes", "WriteMsg"] {
        assert_eq!(v.get(counter).is_some_and(Value::is_u64), action == "Disconnect", "{counter}: {v}");
    }
    for k in keys {
        assert!(
            [
                "Action",
                "Time",
                "ClientAddr",
                "ClientID",
                "Port",
                "Secure",
                "Protocol",
                "User",
                "Certname",
                "ConnectTime",
                "CloseCode",
                "Reason",
                "ReadBytes",
                "ReadMsg",
                "WriteBytes",
                "WriteMsg"
            ]
            .contains(&k),
            "{k} is not in the seed's table: {v}"
        );
    }
}

fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A raw MQTT 3.1.1 connection (user name and password, clean session), CONNACK read: the test
/// then drops the socket or goes silent, which a client library does not let it do.
fn raw(port: u16, client_id: &str, user: &str, password: &str, keep_alive: u16) -> TcpStream {
    let mut body = Vec::new();
    put_bytes(&mut body, b"MQTT");
    body.push(4);
    body.push(0xC2);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_bytes(&mut body, client_id.as_bytes());
    put_bytes(&mut body, user.as_bytes());
    put_bytes(&mut body, password.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "{client_id} accepted");
    s
}

#[test]
fn an_application_sees_connects_and_every_closing_code_field_by_field() {
    let mut b = start("mon-codes", |s| s);
    let port = b.port;
    let mut app = watcher(port, "watch", &[DEVICES, APPS]);
    let topic = |t: &str, id: &str| format!("iot-2/type/{t}/id/{id}/mon");

    // Connect, retained: a late subscriber gets it.
    let mut s1 = Mqtt::connected(&device(port, Proto::V311, "d", "sensor", "s1"));
    let (connect, retained) = next(&mut app, &topic("sensor", "s1"));
    check(&connect, "Connect", "d:acme:sensor:s1", port, "mqtt4", Some("use-token-auth"), None);
    assert!(!retained, "delivered live");
    let mut late = watcher(port, "late", &[]);
    assert_eq!(late.subscribe(&topic("sensor", "s1"), 0), 0);
    let (again, retained) = next(&mut late, &topic("sensor", "s1"));
    assert!(retained, "the Connect is the topic's retained message");
    assert_eq!(again, connect);

    // 0: a clean DISCONNECT, with what it published counted.
    assert_eq!(s1.publish("iot-2/type/sensor/id/s1/evt/t/fmt/json", 1, false, b"hello"), None);
    s1.disconnect();
    let (gone, _) = next(&mut app, &topic("sensor", "s1"));
    check(&gone, "Disconnect", "d:acme:sensor:s1", port, "mqtt4", Some("use-token-auth"), None);
    assert_eq!((gone["ReadMsg"].as_u64(), gone["ReadBytes"].as_u64()), (Some(1), Some(5)), "{gone}");
    assert_eq!((gone["WriteMsg"].as_u64(), gone["WriteBytes"].as_u64()), (Some(0), Some(0)), "{gone}");
    assert_eq!(gone["ConnectTime"], connect["ConnectTime"]);

    // 91: the socket is dropped without DISCONNECT.
    let socket = raw(port, "d:acme:sensor:s2", "use-token-auth", &token("s2"), 60);
    assert_eq!(next(&mut app, &topic("sensor", "s2")).0["Action"], "Connect");
    drop(socket);
    let (dropped, _) = next(&mut app, &topic("sensor", "s2"));
    check(&dropped, "Disconnect", "d:acme:sensor:s2", port, "mqtt4", Some("use-token-auth"), Some(91));
    assert_eq!(dropped["Reason"], "The connection was closed by the client");

    // 160: nothing sent for one and a half keep-alive periods (Mosquitto looks every 5 s).
    let silent = raw(port, "d:acme:sensor:s3", "use-token-auth", &token("s3"), 1);
    assert_eq!(next(&mut app, &topic("sensor", "s3")).0["Action"], "Connect");
    let (timed_out, _) = next(&mut app, &topic("sensor", "s3"));
    check(&timed_out, "Disconnect", "d:acme:sensor:s3", port, "mqtt4", Some("use-token-auth"), Some(160));
    assert_eq!(timed_out["Reason"], "The connection timed out");
    drop(silent);

    // 288: the same client id connects again; its Disconnect comes first, so the status that
    // stays retained is the new connection's Connect.
    let mut first = Mqtt::connected(&device(port, Proto::V5, "d", "sensor", "s4"));
    check(
        &next(&mut app, &topic("sensor", "s4")).0,
        "Connect",
        "d:acme:sensor:s4",
        port,
        "mqtt5",
        Some("use-token-auth"),
        None,
    );
    let _second = Mqtt::connected(&device(port, Proto::V5, "d", "sensor", "s4"));
    let (reused, _) = next(&mut app, &topic("sensor", "s4"));
    check(&reused, "Disconnect", "d:acme:sensor:s4", port, "mqtt5", Some("use-token-auth"), Some(288));
    assert_eq!(reused["Reason"], "The clientID was reused");
    check(
        &next(&mut app, &topic("sensor", "s4")).0,
        "Connect",
        "d:acme:sensor:s4",
        port,
        "mqtt5",
        Some("use-token-auth"),
        None,
    );
    assert!(first.closed(Duration::from_secs(5)).is_some());
    let mut late = watcher(port, "late2", &[]);
    assert_eq!(late.subscribe(&topic("sensor", "s4"), 0), 0);
    assert_eq!(next(&mut late, &topic("sensor", "s4")).0["Action"], "Connect", "the retained status");

    // FailedConnect: a wrong token, not retained, 180.
    let (_refused, code) =
        Mqtt::connect(&Opts::new(port, Proto::V5, "d:acme:sensor:s0").user("use-token-auth", "wrong"));
    assert_eq!(code, 0x87);
    let (failed, retained) = next(&mut app, &topic("sensor", "s0"));
    check(&failed, "FailedConnect", "d:acme:sensor:s0", port, "mqtt5", Some("use-token-auth"), Some(180));
    assert_eq!(failed["Reason"], "The operation is not authorized: bad user name or password");
    assert!(!retained);
    let mut late = watcher(port, "late3", &[]);
    assert_eq!(late.subscribe(&topic("sensor", "s0"), 0), 0);
    assert!(late.recv(Duration::from_millis(500)).is_none(), "a FailedConnect is not retained");

    // 180: the device is disabled while connected; its next publish is refused and it is closed.
    let mut r1 = Mqtt::connected(&device(port, Proto::V5, "d", "sensor", "r1"));
    next(&mut app, &topic("sensor", "r1"));
    let disabled =
        rules().replace("id = \"r1\"\ntype = \"sensor\"\n", "id = \"r1\"\ntype = \"sensor\"\nstate = \"disabled\"\n");
    assert_ne!(disabled, rules());
    deploy(&b.policy_dir, "acme", &support::hub_policy(&disabled, &[]));
    b.wait_loads(2);
    r1.publish("iot-2/type/sensor/id/r1/evt/t/fmt/json", 0, false, b"x");
    let (revoked, _) = next(&mut app, &topic("sensor", "r1"));
    check(&revoked, "Disconnect", "d:acme:sensor:r1", port, "mqtt5", Some("use-token-auth"), Some(180));
    assert!(revoked["Reason"].as_str().unwrap().starts_with("The operation is not authorized: "), "{revoked}");
    assert!(revoked["Reason"].as_str().unwrap().contains("device is not enabled"), "{revoked}");
    assert_eq!(revoked["ReadMsg"], 1, "{revoked}");

    // An application: Connect retained, Disconnect not, and its retained Connect cleared.
    let brief = Mqtt::connected(&Opts::new(port, Proto::V311, "a:acme:brief").user(API_KEY, API_TOKEN));
    let (hello, _) = next(&mut app, "iot-2/app/brief/mon");
    check(&hello, "Connect", "a:acme:brief", port, "mqtt4", Some(API_KEY), None);
    brief.disconnect();
    let (bye, retained) = next(&mut app, "iot-2/app/brief/mon");
    check(&bye, "Disconnect", "a:acme:brief", port, "mqtt4", Some(API_KEY), None);
    assert!(!retained);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (t, payload, _) = app.recv(deadline.saturating_duration_since(Instant::now())).expect("the clearing");
        if t == "iot-2/app/brief/mon" {
            assert!(payload.is_empty(), "the retained Connect is cleared by an empty retained message");
            break;
        }
    }
    let mut late = watcher(port, "late4", &[]);
    assert_eq!(late.subscribe("iot-2/app/brief/mon", 0), 0);
    assert!(late.recv(Duration::from_millis(500)).is_none(), "nothing retained for an application that left");

    // None of this made an event about the monitoring messages' own deliveries.
    let own: Vec<_> = b
        .events()
        .into_iter()
        .filter(|e| field(e, "action") == "delivery" && field(e, "topic").ends_with("/mon"))
        .collect();
    assert!(own.is_empty(), "{own:#?}");
    assert!(b.alive());
}

#[test]
fn after_a_restart_a_device_that_did_not_come_back_is_disconnected_with_93() {
    let state = std::env::temp_dir().join(format!("mqtt-policy-mon-state-{}", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let mut b = start("mon-restart", |s| s.persistent().option("monitoring_state", state.to_str().unwrap()));
    let port = b.port;
    let _s1 = Mqtt::connected(&device(port, Proto::V311, "d", "sensor", "s1"));
    let s2 = Mqtt::connected(&device(port, Proto::V311, "d", "sensor", "s2"));
    let mut app = watcher(port, "watch", &[DEVICES]);
    let seen: Vec<_> = app.drain(Duration::from_millis(500));
    assert_eq!(seen.len(), 2, "the two retained Connects: {seen:?}");
    s2.disconnect();
    assert_eq!(next(&mut app, "iot-2/type/sensor/id/s2/mon").0["Action"], "Disconnect");
    drop(app);

    // Mosquitto saves its retained messages (s1's Connect among them) as it stops; s1 is gone.
    assert!(b.terminate(Duration::from_secs(10)));
    b.restart().unwrap();
    let mut app = watcher(port, "after", &[DEVICES]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = std::collections::BTreeMap::new();
    while Instant::now() < deadline && status.len() < 2 {
        if let Some((t, payload, _)) = app.recv(Duration::from_millis(200)) {
            status.insert(t, serde_json::from_slice::<Value>(&payload).unwrap());
        }
    }
    let s1 = &status["iot-2/type/sensor/id/s1/mon"];
    check(s1, "Disconnect", "d:acme:sensor:s1", port, "mqtt4", Some("use-token-auth"), Some(93));
    assert!(s1["Reason"].as_str().unwrap().starts_with("The connection was closed because the server was shut down"));
    let s2 = &status["iot-2/type/sensor/id/s2/mon"];
    assert_eq!((s2["Action"].as_str(), s2.get("CloseCode")), (Some("Disconnect"), None), "s2 left cleanly: {s2}");

    // The Disconnect is what is stored now.
    let mut late = watcher(port, "late", &[]);
    assert_eq!(late.subscribe("iot-2/type/sensor/id/s1/mon", 0), 0);
    let (stored, retained) = next(&mut late, "iot-2/type/sensor/id/s1/mon");
    assert!(retained);
    assert_eq!(stored["CloseCode"], 93);
    let _ = std::fs::remove_file(&state);
}

#[test]
fn devices_can_neither_read_other_groups_status_nor_forge_it() {
    let b = start("mon-scope", |s| s);
    let port = b.port;
    let mut app = watcher(port, "watch", &[DEVICES]);
    // The gateway of group `hall` watches every device topic; the scope filters each message.
    let mut g1 = Mqtt::connected(&device(port, Proto::V5, "g", "gw", "g1"));
    assert_eq!(g1.subscribe(DEVICES, 0), 0);
    let _m1 = Mqtt::connected(&device(port, Proto::V5, "d", "meter", "m1"));
    let _s1 = Mqtt::connected(&device(port, Proto::V5, "d", "sensor", "s1"));
    let mut s2 = Mqtt::connected(&device(port, Proto::V5, "d", "sensor", "s2"));
    let topics: Vec<String> = g1.drain(Duration::from_secs(1)).into_iter().map(|m| m.0).collect();
    assert!(topics.contains(&"iot-2/type/sensor/id/s1/mon".to_owned()), "its group's device: {topics:?}");
    assert!(!topics.iter().any(|t| t.contains("/m1/")), "another group's device: {topics:?}");
    assert!(!topics.iter().any(|t| t.contains("/s2/")), "an ungrouped device: {topics:?}");

    // A device may not subscribe to another device's status, nor publish any.
    assert_eq!(s2.subscribe("iot-2/type/sensor/id/s1/mon", 0), 0x87);
    assert_eq!(s2.subscribe(DEVICES, 0), 0x87);
    assert_eq!(s2.publish("iot-2/type/x/id/y/mon", 1, true, b"{\"Action\":\"Connect\"}"), Some(0x87));
    assert_eq!(s2.publish("iot-2/type/sensor/id/s2/mon", 1, false, b"{}"), Some(0x87));
    let forged: Vec<_> = app
        .drain(Duration::from_secs(1))
        .into_iter()
        .filter(|m| m.0.contains("/x/") || m.2 && m.0.contains("s2"))
        .collect();
    assert!(forged.is_empty(), "{forged:?}");
    let mut late = watcher(port, "late", &[]);
    assert_eq!(late.subscribe("iot-2/type/x/id/y/mon", 0), 0);
    assert!(late.recv(Duration::from_millis(500)).is_none(), "nothing forged was retained");
    let e = b.wait_event("the forgery refused", |e| field(e, "topic") == "iot-2/type/x/id/y/mon");
    assert_eq!(field(&e, "outcome"), "deny");
    assert!(field(&e, "message").contains("monitoring messages are published by the broker only"), "{e}");
}

#[test]
fn reconnecting_never_multiplies_monitoring_messages() {
    let b = start("mon-bounded", |s| s);
    let port = b.port;
    let mut app = watcher(port, "watch", &[DEVICES]);
    const CYCLES: usize = 20;
    for _ in 0..CYCLES {
        Mqtt::connected(&device(port, Proto::V311, "d", "sensor", "s1")).disconnect();
        let (_r, code) = Mqtt::connect(&Opts::new(port, Proto::V311, "d:acme:sensor:s2").user("use-token-auth", "x"));
        assert_ne!(code, 0);
    }
    let got = app.drain(Duration::from_secs(2));
    let on = |id: &str| got.iter().filter(|m| m.0 == format!("iot-2/type/sensor/id/{id}/mon")).count();
    assert_eq!(on("s1"), 2 * CYCLES, "one Connect and one Disconnect per connection");
    assert_eq!(on("s2"), CYCLES, "one FailedConnect per refused attempt");
    assert_eq!(got.len(), 3 * CYCLES, "nothing else: {:?}", got.iter().map(|m| &m.0).collect::<Vec<_>>());
    assert!(b.events().iter().all(|e| !(field(e, "action") == "delivery" && field(e, "topic").ends_with("/mon"))));
}

#[test]
fn two_tenants_on_separate_listeners_cannot_share_unprefixed_monitoring_topics() {
    // The README's layout: one fixed tenant per listener. Without prefixes both tenants' status
    // messages would land on the same `iot-2/...` topics, so the second listener is refused.
    let policy = support::hub_policy(&rules(), &[]);
    let refused = Broker::start_per_listener(
        "mon-shared",
        &[("acme", policy.clone()), ("globex", policy.clone())],
        "plugin_opt_monitoring ibm\n",
    );
    let err = format!("{:#}", refused.err().expect("a shared monitoring topic space must be refused"));
    assert!(
        err.contains("tenant globex would publish its monitoring messages in the same topics as tenant acme"),
        "{err}"
    );
    // With a prefix each, both start; one tenant on two listeners shares its own topics.
    let prefixed = "plugin_opt_monitoring ibm\nplugin_opt_tenant_prefix {tenant}/\n";
    let b =
        Broker::start_per_listener("mon-prefixed", &[("acme", policy.clone()), ("globex", policy.clone())], prefixed);
    assert!(b.is_ok(), "{:#}", b.err().unwrap());
    let same = Broker::start_per_listener(
        "mon-same",
        &[("acme", policy.clone()), ("acme", policy)],
        "plugin_opt_monitoring ibm\n",
    );
    assert!(same.is_ok(), "{:#}", same.err().unwrap());
}
