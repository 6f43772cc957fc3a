//! The dedicated-CA example behind a real mTLS listener: certificates made by the test, read by
//! the plugin from the TLS session (`mosquitto_client_certificate`), verified against the CA
//! embedded in the tenant's policy.

mod support;

use std::time::Duration;

use support::client::{Mqtt, Opts, Proto};
use support::pki::Ca;
use support::{Broker, Setup, deploy, field};

const RULES: &str = include_str!("../../../policies/examples/dedicated-ca/rules.toml");
const SHORT: Duration = Duration::from_millis(500);

struct Pki {
    server_ca: Ca,
    factory: Ca,
    other: Ca,
}

fn start(pki: &Pki, rules: &str) -> Broker {
    let server = pki.server_ca.server();
    // The listener accepts certificates from both CAs: which tenant a CA belongs to is the policy's business.
    let bundle = format!("{}{}", pki.factory.pem, pki.other.pem);
    let setup = Setup {
        options: vec![("tenant".into(), "acme".into())],
        policies: vec![("acme".into(), support::hub_policy(rules, &[("factory-ca", &pki.factory.pem)]))],
        tls: Some((bundle, server.cert, server.key)),
    };
    Broker::start("mtls", setup).unwrap()
}

fn pki() -> Pki {
    Pki { server_ca: Ca::new("test server CA"), factory: Ca::new("factory CA"), other: Ca::new("another tenant's CA") }
}

fn opts(b: &Broker, pki: &Pki, ca: &Ca, cn: Option<&str>, proto: Proto) -> Opts {
    let c = ca.client(cn);
    Opts::new(0, proto, cn.unwrap_or("no-cn")).tls(b.tls_port.unwrap(), &pki.server_ca.pem, &c.cert, &c.key)
}

#[test]
fn certificates_decide_who_connects() {
    let pki = pki();
    let b = start(&pki, RULES);
    for proto in [Proto::V5, Proto::V311] {
        let refused = if proto == Proto::V5 { 0x87 } else { 5 };
        let mut press = Mqtt::connected(&opts(&b, &pki, &pki.factory, Some("press-1"), proto));
        assert!(matches!(press.publish("factory/press-1/temp", 1, false, b"80"), None | Some(0 | 0x10)));
        for (ca, cn, message) in [
            (&pki.factory, None, "certificate common name cannot be empty"),
            (&pki.other, Some("press-1"), "invalid device certificate"),
            (&pki.factory, Some("press-2"), "device is not enabled"),
            (&pki.factory, Some("press-3"), "device is deleted"),
        ] {
            let (_c, code) = Mqtt::connect(&opts(&b, &pki, ca, cn, proto));
            assert_eq!(code, refused, "{cn:?}");
            b.wait_event(message, |e| field(e, "outcome") == "reject" && field(e, "message") == message);
        }
        press.disconnect();
    }
    // Plain TCP: no certificate at all.
    let (_c, code) = Mqtt::connect(&Opts::new(b.port, Proto::V5, "press-1"));
    assert_eq!(code, 0x87);
    b.wait_event("mtls", |e| field(e, "message") == "mutual TLS authentication is required");
    // The device id became the broker's user name: the accept event names it.
    b.wait_event("accept", |e| field(e, "outcome") == "accept" && field(e, "device_id") == "press-1");
}

#[test]
fn auto_provisioning_on_then_off_by_hot_reload() {
    let pki = pki();
    let b = start(&pki, RULES);
    let mut robot = Mqtt::connected(&opts(&b, &pki, &pki.factory, Some("robot-9"), Proto::V5));
    b.wait_event("provisioned", |e| {
        field(e, "message").starts_with("device was auto-provisioned: object-name=robot-9")
    });
    // An auto-provisioned machine gets its own traffic but never maintenance messages.
    assert_eq!(robot.subscribe("factory/robot-9/#", 1), 1);
    assert_eq!(robot.publish("factory/robot-9/status", 1, false, b"up"), Some(0));
    assert_eq!(robot.publish("factory/robot-9/maintenance/plan", 1, false, b"oil"), Some(0));
    let got: Vec<String> = robot.drain(SHORT).into_iter().map(|m| m.0).collect();
    assert_eq!(got, vec!["factory/robot-9/status".to_owned()]);

    let off = RULES.replace("auto-provision = true", "auto-provision = false");
    assert_ne!(off, RULES);
    deploy(&b.policy_dir, "acme", &support::hub_policy(&off, &[("factory-ca", &pki.factory.pem)]));
    b.wait_loads(2);
    let (_c, code) = Mqtt::connect(&opts(&b, &pki, &pki.factory, Some("robot-10"), Proto::V5));
    assert_eq!(code, 0x87);
    b.wait_event("unknown", |e| {
        field(e, "message") == "could not identify device" && field(e, "client_id") == "robot-10"
    });
    // The connected robot is re-checked under the new rules on its next action and revoked.
    robot.publish("factory/robot-9/status", 0, false, b"still here");
    // Mosquitto sends DISCONNECT 0x80 (see shared_hub.rs, checked with mosquitto_pub); rumqttc
    // reports the closed socket before it.
    assert!(robot.closed(Duration::from_secs(5)).is_some(), "the revoked client is disconnected");
    b.wait_event("revoke", |e| field(e, "outcome") == "revoke" && field(e, "message") == "could not identify device");
}

#[test]
fn locking_the_hub_refuses_new_clients_and_ends_connected_ones() {
    let pki = pki();
    let b = start(&pki, RULES);
    let mut press = Mqtt::connected(&opts(&b, &pki, &pki.factory, Some("press-1"), Proto::V5));
    let locked = RULES.replace("service-level = \"dedicated\"", "service-level = \"dedicated\"\nstate = \"locked\"");
    deploy(&b.policy_dir, "acme", &support::hub_policy(&locked, &[("factory-ca", &pki.factory.pem)]));
    b.wait_loads(2);
    let (_c, code) = Mqtt::connect(&opts(&b, &pki, &pki.factory, Some("press-1"), Proto::V311));
    assert_eq!(code, 5);
    press.publish("factory/press-1/temp", 0, false, b"1");
    assert!(press.closed(Duration::from_secs(5)).is_some(), "the connected device is disconnected");
    b.wait_event("locked", |e| field(e, "message") == "hub is locked" && field(e, "outcome") == "revoke");
}
