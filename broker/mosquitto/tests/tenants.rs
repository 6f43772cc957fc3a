//! Two tenants on one broker stay apart: on a shared listener (tenant from the client id,
//! each with its own topic space) and on listeners bound to one tenant each. And tenants whose
//! policies are written in Python and JavaScript.

use mqtt_policy_testkit as support;
use support::proofs;

use std::time::Duration;

use support::client::{Mqtt, Opts, Proto};
use support::{Broker, Setup, field};

const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");
const SHORT: Duration = Duration::from_millis(500);

fn org_rules(org: &str) -> Vec<u8> {
    let rules = IBM.replace("org = \"acme\"", &format!("org = \"{org}\""));
    assert_ne!(rules == IBM, org != "acme");
    support::hub_policy(&rules, &[])
}

const EVENTS: &str = "iot-2/type/+/id/+/evt/+/fmt/+";

#[test]
fn shared_listener_keeps_tenants_apart() {
    let setup = Setup {
        options: vec![
            ("tenant_from".into(), "client-id:*:{tenant}:*".into()),
            ("tenant_prefix".into(), "{tenant}/".into()),
        ],
        policies: vec![("acme".into(), org_rules("acme")), ("globex".into(), org_rules("globex"))],
        tls: None,
        ..Default::default()
    };
    let b = Broker::start("tenants", setup).unwrap();
    let mut acme_app = Mqtt::connected(&proofs::ibm(b.port, Proto::V5, "a:acme:dash"));
    let mut globex_app = Mqtt::connected(&proofs::ibm(b.port, Proto::V311, "a:globex:dash"));
    assert_eq!(acme_app.subscribe(&format!("acme/{EVENTS}"), 1), 1);
    assert_eq!(globex_app.subscribe(&format!("globex/{EVENTS}"), 1), 1);
    // Nobody reaches into another tenant's space, or above its own.
    assert_eq!(acme_app.subscribe(&format!("globex/{EVENTS}"), 0), 0x87);
    assert_eq!(acme_app.subscribe("#", 0), 0x87);
    assert_eq!(acme_app.subscribe(&format!("+/{EVENTS}"), 0), 0x87);
    b.wait_event("outside", |e| {
        field(e, "tenant") == "acme" && field(e, "message").contains("outside the tenant's topic space acme/")
    });

    let mut g = Mqtt::connected(&proofs::ibm(b.port, Proto::V5, "d:globex:sensor:s1"));
    assert_eq!(g.publish("globex/iot-2/type/sensor/id/s1/evt/t/fmt/json", 1, false, b"g"), Some(0));
    // A globex device cannot publish into acme's space, even with acme's topic shape.
    assert_eq!(g.publish("acme/iot-2/type/sensor/id/s1/evt/t/fmt/json", 1, false, b"x"), Some(0x87));
    assert_eq!(globex_app.drain(SHORT).len(), 1);
    assert!(acme_app.drain(SHORT).is_empty(), "acme sees nothing of globex");

    // Counters are per tenant: globex's device uses up its daily quota (3) ...
    assert_eq!(g.publish("globex/iot-2/type/sensor/id/s1/evt/t/fmt/json", 1, false, b"2"), Some(0));
    assert_eq!(g.publish("globex/iot-2/type/sensor/id/s1/evt/t/fmt/json", 1, false, b"3"), Some(0));
    assert_eq!(g.publish("globex/iot-2/type/sensor/id/s1/evt/t/fmt/json", 1, false, b"4"), Some(0x87));
    // ... while the same device id in acme still has all of its own.
    let mut a = Mqtt::connected(&proofs::ibm(b.port, Proto::V5, "d:acme:sensor:s1"));
    assert_eq!(a.publish("acme/iot-2/type/sensor/id/s1/evt/t/fmt/json", 1, false, b"a"), Some(0));
    assert_eq!(acme_app.drain(SHORT).len(), 1);
    let quota = b.wait_event("quota", |e| e["reason_code"] == 0x97);
    assert_eq!(field(&quota, "tenant"), "globex");
}

#[test]
fn listener_bound_tenants_cannot_be_chosen_by_the_client() {
    let policies = [("acme", org_rules("acme")), ("globex", org_rules("globex"))];
    let b = Broker::start_per_listener("listeners", &policies, "").unwrap();
    let globex_port = b.ports[1];
    // A globex client id on acme's listener is judged by acme's policy, which refuses it.
    let (_c, code) = Mqtt::connect(&proofs::ibm(b.port, Proto::V5, "d:globex:sensor:s2"));
    assert_eq!(code, 0x87);
    let e =
        b.wait_event("wrong org", |e| field(e, "outcome") == "reject" && field(e, "client_id") == "d:globex:sensor:s2");
    assert_eq!(field(&e, "tenant"), "acme");
    // The same client on its own listener is welcome.
    let mut g = Mqtt::connected(&proofs::ibm(globex_port, Proto::V5, "d:globex:sensor:s2"));
    let a = Mqtt::connected(&proofs::ibm(b.port, Proto::V311, "d:acme:sensor:s2"));
    assert_eq!(g.publish("iot-2/type/sensor/id/s2/evt/t/fmt/json", 1, false, b"1"), Some(0x10));
    let accepted: Vec<String> =
        b.events().iter().filter(|e| field(e, "outcome") == "accept").map(|e| field(e, "tenant").to_owned()).collect();
    assert_eq!(accepted, vec!["globex".to_owned(), "acme".to_owned()]);
    a.disconnect();
}

/// A tenant running the hello policy written in another language, beside one whose publish
/// check raises or throws: an allowed publish (delivered to the device's own subscription), a
/// denied one with its event, and the raising check denied fail-closed with a trap event.
fn hello_in_another_language(tag: &str, hello: &str, throwing: &str) {
    let policies = [("hello", std::fs::read(hello).unwrap()), ("throwing", std::fs::read(throwing).unwrap())];
    let b = Broker::start_per_listener(tag, &policies, "").unwrap();
    let mut d = Mqtt::connected(&Opts::new(b.ports[0], Proto::V5, "sensor-1"));
    assert_eq!(d.subscribe("devices/sensor-1/commands/#", 1), 1);
    assert_eq!(d.publish("devices/sensor-1/commands/reboot", 1, false, b"now"), Some(0));
    let got = d.drain(SHORT);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "devices/sensor-1/commands/reboot");
    assert_eq!(d.publish("devices/sensor-2/temperature", 1, false, b"21"), Some(0x87));
    let e = b.wait_event("denied", |e| field(e, "outcome") == "deny" && field(e, "client_id") == "sensor-1");
    assert_eq!(field(&e, "tenant"), "hello");
    assert_eq!(field(&e, "message"), "unauthorized topic devices/sensor-2/temperature");
    assert_eq!(e["reason_code"], 0x87);

    let mut t = Mqtt::connected(&Opts::new(b.ports[1], Proto::V5, "t1"));
    assert_eq!(t.publish("devices/t1/temperature", 1, false, b"21"), Some(0x87));
    let e = b.wait_event("trap", |e| field(e, "outcome") == "trap");
    assert_eq!(field(&e, "tenant"), "throwing");
    assert_eq!(field(&e, "client_id"), "t1");
    assert_eq!(e["reason_code"], 0x83, "{e}");
    assert!(t.is_alive(), "a faulting check denies the message, not the connection");
}

#[test]
fn python_policy_as_a_tenant() {
    hello_in_another_language(
        "python",
        guest_artifacts::lang(guest_artifacts::HELLO_PY),
        guest_artifacts::lang(guest_artifacts::THROWING_PY),
    );
}

#[test]
fn javascript_policy_as_a_tenant() {
    hello_in_another_language(
        "javascript",
        guest_artifacts::lang(guest_artifacts::HELLO_JS),
        guest_artifacts::lang(guest_artifacts::THROWING_JS),
    );
}
