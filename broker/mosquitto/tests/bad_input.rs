//! Bad input from clients, as raw MQTT packets on a socket: odd client ids, wildcards and empty
//! or invalid topics in PUBLISH, QoS 3, over-long topics, `$SYS`. Each is refused (by Mosquitto's
//! parser or by the policy, with the right code and event) and the broker keeps serving.

use mqtt_policy_testkit as support;
use support::proofs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::client::{Mqtt, Proto};
use support::{Broker, Setup, field};

const SHARED: &str = include_str!("../../../policies/examples/shared-hub/rules.toml");

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    put_len(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

/// CONNECT (v3.1.1 or v5) with a clean session: a registered shared-hub device (`thermo-N`)
/// signs in with its SAS token, any other client id is sent as user name, without password.
fn connect(v5: bool, client_id: &[u8]) -> Vec<u8> {
    let device = std::str::from_utf8(client_id).ok().filter(|id| id.len() == 8 && id.starts_with("thermo-"));
    let mut b = Vec::new();
    put_bytes(&mut b, b"MQTT");
    b.push(if v5 { 5 } else { 4 });
    b.push(if device.is_some() { 0xC2 } else { 0x82 }); // user name (and password), clean session
    b.extend_from_slice(&30u16.to_be_bytes());
    if v5 {
        b.push(0); // no properties
    }
    put_bytes(&mut b, client_id);
    match device {
        Some(id) => {
            put_bytes(&mut b, proofs::sas_user(id).as_bytes());
            put_bytes(&mut b, proofs::sas_token(id, proofs::now_s() + 3600).as_bytes());
        }
        None => put_bytes(&mut b, client_id),
    }
    packet(0x10, &b)
}

/// PUBLISH with raw topic bytes and a QoS that may be invalid (3).
fn publish(v5: bool, topic: &[u8], qos: u8) -> Vec<u8> {
    let mut b = Vec::new();
    put_bytes(&mut b, topic);
    if qos > 0 {
        b.extend_from_slice(&1u16.to_be_bytes());
    }
    if v5 {
        b.push(0);
    }
    b.extend_from_slice(b"payload");
    packet(0x30 | (qos << 1), &b)
}

/// A raw connection: sends `packets`, then reads until the broker closes or goes quiet.
/// Returns the bytes received and whether the connection was closed.
fn exchange(port: u16, packets: &[Vec<u8>]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    for p in packets {
        if s.write_all(p).is_err() {
            return (Vec::new(), true);
        }
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (got, false);
            }
            Err(_) => return (got, true),
        }
    }
}

/// The CONNACK code in `bytes` (v3.1.1: return code; v5: reason code).
fn connack(bytes: &[u8]) -> Option<u8> {
    (bytes.first() == Some(&0x20)).then(|| bytes[3])
}

/// The PUBACK reason code of a v5 PUBACK after a CONNACK, if any (none when the code is
/// omitted, which means success).
fn puback(bytes: &[u8]) -> Option<u8> {
    let rest = &bytes[2 + bytes[1] as usize..];
    match rest {
        [0x40, 2, ..] => Some(0),
        [0x40, _, _, _, code, ..] => Some(*code),
        _ => None,
    }
}

#[test]
fn malformed_and_hostile_client_input_is_refused_and_the_broker_keeps_serving() {
    let mut b = Broker::start("bad-input", Setup::tenant("shared", support::hub_policy(SHARED, &[]))).unwrap();
    let port = b.port;

    // Client ids the policy judges: a '/' cannot be a topic level (0x85 in the event; Mosquitto
    // sends 0x87), a 65,535-byte id is simply unknown.
    let (got, _) = exchange(port, &[connect(true, b"thermo/1")]);
    assert_eq!(connack(&got), Some(0x87));
    let e = b.wait_event("slash id", |e| field(e, "client_id") == "thermo/1");
    assert_eq!(e["reason_code"], 0x85, "{e}");
    let huge = vec![b'x'; 65_535];
    let (got, _) = exchange(port, &[connect(false, &huge)]);
    assert_eq!(connack(&got), Some(5), "v3.1.1: not authorized");
    b.wait_event("huge id", |e| field(e, "client_id").len() == 65_535 && field(e, "outcome") == "reject");

    // Input Mosquitto's parser refuses before any policy runs: the connection is closed.
    let bad_utf8_id = connect(true, b"thermo-\xff");
    let (got, closed) = exchange(port, &[bad_utf8_id]);
    assert!(closed && connack(&got).is_none(), "invalid UTF-8 client id: {got:?}");
    for (what, v5, topic, qos) in [
        ("wildcard + in a publish topic", true, &b"devices/thermo-1/telemetry/+"[..], 1),
        ("wildcard # in a publish topic", false, b"devices/thermo-1/#", 0),
        ("empty topic", false, b"", 1),
        ("invalid UTF-8 topic", true, b"devices/thermo-1/telemetry/\xc3\x28", 1),
        ("QoS 3", true, b"devices/thermo-1/telemetry/t", 3),
    ] {
        let (got, closed) = exchange(port, &[connect(v5, b"thermo-1"), publish(v5, topic, qos)]);
        assert_eq!(connack(&got), Some(0), "{what}: connected first");
        assert!(closed, "{what}: the broker closes the connection");
        assert_eq!(puback(&got), None, "{what}: never acknowledged");
    }

    // Valid but outside the device's rules: a 60,000-byte topic and $SYS.
    let long = format!("devices/thermo-2/{}", "a".repeat(60_000));
    for topic in [long.as_str(), "$SYS/broker/fake"] {
        let (got, closed) = exchange(port, &[connect(true, b"thermo-1"), publish(true, topic.as_bytes(), 1)]);
        assert_eq!(puback(&got), Some(0x87), "{}: refused", &topic[..20.min(topic.len())]);
        assert!(!closed, "a refused publish does not cost the connection");
    }
    b.wait_event("long topic", |e| field(e, "outcome") == "deny" && field(e, "topic").len() > 60_000);
    let mut d = Mqtt::connected(&proofs::sas(port, Proto::V5, "thermo-3"));
    assert_eq!(d.subscribe("$SYS/#", 0), 0x87, "no device may read the broker's $SYS tree");

    // After all of it the broker still serves, and the policy still answers.
    assert!(b.alive(), "{}", b.log());
    assert!(matches!(d.publish("devices/thermo-3/telemetry/t", 1, false, b"1"), Some(0 | 0x10)));
    let refused_by_parser = b.events().iter().filter(|e| field(e, "topic").contains('+')).count();
    assert_eq!(refused_by_parser, 0, "the parser's refusals never reach the policy");
}
