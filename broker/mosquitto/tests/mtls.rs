//! The dedicated-CA example behind a real mTLS listener: certificates made by the test, read by
//! the plugin from the TLS session (`mosquitto_client_certificate`), verified against the CA
//! embedded in the tenant's policy.

use mqtt_policy_testkit as support;

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
        ..Default::default()
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

#[test]
fn expired_and_not_yet_valid_certificates_fail_the_tls_handshake() {
    let pki = pki();
    let mut b = start(&pki, RULES);
    let dir = std::env::temp_dir().join(format!("mqtt-policy-validity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("server-ca.pem");
    std::fs::write(&ca, &pki.server_ca.pem).unwrap();
    let port = b.tls_port.unwrap().to_string();
    let publish_with = |name: &str, issued: &support::pki::Issued| {
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, &issued.cert).unwrap();
        std::fs::write(&key, &issued.key).unwrap();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "5",
            "-i",
            "press-1",
            "-q",
            "1",
            "-t",
            "factory/press-1/temp",
            "-m",
            "80",
            "--cafile",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        support::run("mosquitto_pub", &args)
    };
    let valid = pki.factory.client_valid("press-1", (2020, 1, 1), (2090, 1, 1));
    let (code, out) = publish_with("valid", &valid);
    assert_eq!(code, 0, "a certificate inside its validity window works: {out}");
    for (name, from, until) in [("expired", (2001, 1, 1), (2002, 1, 1)), ("early", (2090, 1, 1), (2091, 1, 1))] {
        let issued = pki.factory.client_valid("press-1", from, until);
        let (code, out) = publish_with(name, &issued);
        assert_ne!(code, 0, "{name}: refused: {out}");
    }
    // The broker's TLS layer refused them before any policy ran: one accept (the valid one) in all.
    std::thread::sleep(Duration::from_millis(300));
    let accepts = b.events().iter().filter(|e| field(e, "outcome") == "accept").count();
    assert_eq!(accepts, 1, "{:#?}", b.events());
    let refusals = b.log().matches("certificate verify failed").count();
    assert_eq!(refusals, 2, "Mosquitto logs each TLS refusal:\n{}", b.log());
    assert!(b.alive());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tenant_from certificate`: the operator's CA map decides a certificate's tenant. A tenant
/// whose policy embeds another tenant's (public) CA certificate does not get that tenant's
/// devices: its policy is refused at load, with an event.
#[test]
fn a_policy_embedding_another_tenants_ca_cannot_capture_its_devices() {
    let pki = pki();
    let cas = std::env::temp_dir().join(format!("mqtt-policy-mtls-cas-{}", std::process::id()));
    std::fs::create_dir_all(&cas).unwrap();
    let (acme_pem, evil_pem) = (cas.join("acme.pem"), cas.join("evil.pem"));
    std::fs::write(&acme_pem, &pki.factory.pem).unwrap();
    std::fs::write(&evil_pem, &pki.other.pem).unwrap();
    let server = pki.server_ca.server();
    let acme_policy = support::hub_policy(RULES, &[("factory-ca", &pki.factory.pem)]);
    let setup = Setup {
        options: vec![
            ("tenant_from".into(), "certificate".into()),
            ("tenant_ca_acme".into(), acme_pem.display().to_string()),
            ("tenant_ca_aaa-evil".into(), evil_pem.display().to_string()),
        ],
        // The capturing policy is acme's own, CA included, and its tenant sorts first.
        policies: vec![("acme".into(), acme_policy.clone()), ("aaa-evil".into(), acme_policy)],
        tls: Some((format!("{}{}", pki.factory.pem, pki.other.pem), server.cert, server.key)),
        ..Default::default()
    };
    let b = Broker::start("mtls-capture", setup).unwrap();
    let refused =
        b.wait_event("load refused", |e| field(e, "tenant") == "aaa-evil" && field(e, "outcome") == "load-failed");
    assert!(field(&refused, "message").contains("which the operator assigned to tenant acme"), "{refused}");

    let mut press = Mqtt::connected(&opts(&b, &pki, &pki.factory, Some("press-1"), Proto::V5));
    assert!(matches!(press.publish("factory/press-1/temp", 1, false, b"80"), None | Some(0 | 0x10)));
    let accept = b.wait_event("accept", |e| field(e, "outcome") == "accept" && field(e, "device_id") == "press-1");
    assert_eq!(field(&accept, "tenant"), "acme", "acme's device stays acme's");
    // The other tenant's own devices are its own, and it has no policy in force: refused.
    let (_c, code) = Mqtt::connect(&opts(&b, &pki, &pki.other, Some("press-1"), Proto::V5));
    assert_eq!(code, 0x87, "no policy loaded for aaa-evil");
    b.wait_event("no policy", |e| {
        field(e, "tenant") == "aaa-evil" && field(e, "message") == "no policy is loaded for tenant aaa-evil"
    });
    assert!(
        !b.events().iter().any(|e| field(e, "tenant") == "aaa-evil" && field(e, "outcome") == "accept"),
        "nothing was admitted as aaa-evil"
    );
    press.disconnect();
    let _ = std::fs::remove_dir_all(&cas);
}
