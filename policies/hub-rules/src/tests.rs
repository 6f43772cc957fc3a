//! The hub rules, natively: compile errors and every decision.

use std::cell::RefCell;
use std::collections::HashMap;

use mqtt_policy_guest::{
    Certificate, Connect, Delivery, DeliveryDecision, Protocol, Publish, PublishDecision, ReasonCode, Subscribe,
    SubscribeDecision,
};

use crate::config::Action;
use crate::hub::{HostApi, Hub, Session};

#[derive(Default)]
struct FakeHost {
    counters: RefCell<HashMap<String, i64>>,
    connections: u32,
    infos: RefCell<Vec<String>>,
}

impl HostApi for FakeHost {
    fn counter_add(&self, name: &str, delta: i64, _window_ms: u64) -> i64 {
        let mut c = self.counters.borrow_mut();
        let v = c.entry(name.to_owned()).or_default();
        *v += delta;
        *v
    }
    fn connection_count(&self) -> u32 {
        self.connections
    }
    fn info(&self, message: &str) {
        self.infos.borrow_mut().push(message.to_owned());
    }
    fn now_millis(&self) -> u64 {
        NOW_SECS as u64 * 1000
    }
}

/// The fake host's clock, in seconds (2026-12-01).
const NOW_SECS: i64 = 1_796_083_200;

fn connect(client_id: &str) -> Connect {
    Connect {
        tenant: "t".into(),
        client_id: client_id.into(),
        username: None,
        password: None,
        clean_start: true,
        keep_alive: 60,
        protocol: Protocol::Mqtt5,
        tls: false,
        certificate: None,
        peer: "127.0.0.1:5000".into(),
        resumed: false,
    }
}

fn cert(cn: Option<&str>, ca: Option<&str>) -> Certificate {
    Certificate {
        subject_cn: cn.map(str::to_owned),
        subject: String::new(),
        issuer: String::new(),
        serial: "01".into(),
        sha256: String::new(),
        not_before: 0,
        not_after: i64::MAX,
        dns_names: vec![],
        uris: vec![],
        authority_key_id: None,
        subject_key_id: None,
        chain_verified_by: ca.map(str::to_owned),
    }
}

fn publish(topic: &str) -> Publish {
    Publish { topic: topic.into(), qos: 1, retain: false, payload_size: 10 }
}

/// Compiles `rules` with `authentication = "none"` added (appended, so line numbers stay).
fn open(rules: &str) -> Result<Hub, String> {
    let text = if rules.contains("[identity]\n") {
        rules.replacen("[identity]\n", "[identity]\nauthentication = \"none\"\n", 1)
    } else {
        format!("{rules}\n[identity]\nauthentication = \"none\"\n")
    };
    Hub::compile(&text)
}

fn reject(hub: &Hub, c: &Connect) -> (ReasonCode, String) {
    match hub.authenticate(c, &FakeHost::default()) {
        Err(d) => (d.reason, d.message),
        Ok((info, _)) => panic!("expected a rejection, accepted as {}", info.device_id),
    }
}

fn accept(hub: &Hub, c: &Connect) -> Session {
    hub.authenticate(c, &FakeHost::default()).map(|(_, s)| s).unwrap_or_else(|d| panic!("{}", d.message))
}

fn denied(d: PublishDecision) -> (ReasonCode, String) {
    match d {
        PublishDecision::Deny(d) => (d.reason, d.message),
        _ => panic!("expected deny, got {}", describe(&d)),
    }
}

fn describe(d: &PublishDecision) -> &'static str {
    match d {
        PublishDecision::Allow => "allow",
        PublishDecision::Rewrite(_) => "rewrite",
        PublishDecision::Deny(_) => "deny",
        PublishDecision::Defer => "defer",
    }
}

const DEVICES: &str = r#"
[[rule]]
effect = "allow"
actions = ["publish", "subscribe"]
topics = ["devices/${device.id}/#"]

[[rule]]
effect = "deny"
actions = ["publish", "subscribe"]
topics = ["devices/${device.id}/secret/#"]
"#;

#[test]
fn compile_errors_name_line_and_field() {
    let e = Hub::compile("[hub]\nstate = \"sleepy\"\n").unwrap_err();
    assert!(e.starts_with("line 2, column 9:") && e.contains("sleepy"), "{e}");
    let e = Hub::compile("[hub]\nmax-paylod = 3\n").unwrap_err();
    assert!(e.starts_with("line 2, column 1:") && e.contains("max-paylod"), "{e}");
    let e = Hub::compile("[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"a/#/b\"]\n").unwrap_err();
    assert!(e.contains("line 4, column 11: rule[0].topics[0] `a/#/b`: '#' must be the last level"), "{e}");
    let e = Hub::compile("[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"d/${device.name}\"]\n")
        .unwrap_err();
    assert!(e.contains("rule[0].topics[0]") && e.contains("unknown placeholder `${device.name}`"), "{e}");
    let e = open("[[device]]\nid = \"a\"\n[[device]]\nid = \"a\"\n").unwrap_err();
    assert!(e.starts_with("line 4, column 6: device[1].id: duplicate device `a`"), "{e}");
    let e = open("[identity]\nfrom = \"certificate\"\n").unwrap_err();
    assert!(e.contains("needs at least one [[ca]]"), "{e}");
    let e = open("[[identity.client-id-format]]\npattern = \"d:{org}:{id}\"\n").unwrap_err();
    assert!(e.contains("hub.org must be set"), "{e}");
}

#[test]
fn hub_state_refuses_connects_and_later_actions() {
    for (state, reason, message) in [
        ("not-ready", ReasonCode::ServerUnavailable, "hub is not ready"),
        ("locked", ReasonCode::NotAuthorized, "hub is locked"),
        ("deleted", ReasonCode::NotAuthorized, "hub is deleted"),
    ] {
        let hub = open(&format!("[hub]\nstate = \"{state}\"\n{DEVICES}")).unwrap();
        assert_eq!(reject(&hub, &connect("d1")), (reason, message.to_owned()));
    }
    let ready = open(DEVICES).unwrap();
    let s = accept(&ready, &connect("d1"));
    let locked = open(&format!("[hub]\nstate = \"locked\"\n{DEVICES}")).unwrap();
    match locked.authorize_publish(&s, &publish("devices/d1/x"), &FakeHost::default()) {
        PublishDecision::Deny(d) => assert!(d.disconnect && d.message == "hub is locked"),
        other => panic!("{}", describe(&other)),
    }
}

#[test]
fn topic_rules_with_placeholders_and_deny_precedence() {
    let hub = open(DEVICES).unwrap();
    let s = accept(&hub, &connect("d1"));
    let host = FakeHost::default();
    assert!(matches!(hub.authorize_publish(&s, &publish("devices/d1/temp"), &host), PublishDecision::Allow));
    assert_eq!(
        denied(hub.authorize_publish(&s, &publish("devices/d2/temp"), &host)).1,
        "unauthorized topic devices/d2/temp"
    );
    assert_eq!(denied(hub.authorize_publish(&s, &publish("devices/d1/secret/k"), &host)).0, ReasonCode::NotAuthorized);
    assert_eq!(denied(hub.authorize_publish(&s, &publish("$SYS/x"), &host)).0, ReasonCode::NotAuthorized);
    assert_eq!(denied(hub.authorize_publish(&s, &publish(""), &host)).1, "empty topics are not authorized");
    assert_eq!(denied(hub.authorize_publish(&s, &publish("devices/d1/+"), &host)).0, ReasonCode::TopicNameInvalid);
    let mut bad_qos = publish("devices/d1/t");
    bad_qos.qos = 3;
    assert_eq!(denied(hub.authorize_publish(&s, &bad_qos, &host)).1, "invalid MQTT QoS value: 3");

    let sub = |f: &str| hub.authorize_subscribe(&s, &Subscribe { filter: f.into(), qos: 1 });
    assert!(matches!(sub("devices/d1/commands/#"), SubscribeDecision::Grant(1)));
    assert!(matches!(sub("devices/d1/#"), SubscribeDecision::Deny(_)), "overlaps the denied secret tree");
    assert!(matches!(sub("devices/+/x"), SubscribeDecision::Deny(_)));
    assert!(matches!(sub(""), SubscribeDecision::Deny(d) if d.message == "empty topics are not authorized"));
    // A delivery is allowed only while the receiver may subscribe to its topic.
    let deliver =
        |t: &str| hub.authorize_delivery(&s, &Delivery { topic: t.into(), qos: 1, retain: false, payload_size: 0 });
    assert!(matches!(deliver("devices/d1/commands/reboot"), DeliveryDecision::Allow));
    match deliver("x") {
        DeliveryDecision::Deny(d) => assert_eq!(d.message, "subscription no longer authorized for topic x"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(deliver("devices/d1/secret/k"), DeliveryDecision::Deny(_)), "a deny rule wins");
}

#[test]
fn shared_service_level() {
    let hub = open(&format!("[hub]\nservice-level = \"shared\"\nmax-payload = 100\n{DEVICES}")).unwrap();
    let mut c = connect("d1");
    c.clean_start = false;
    assert!(reject(&hub, &c).1.contains("\"clean session\" flag is mandatory"));
    let s = accept(&hub, &connect("d1"));
    let host = FakeHost::default();
    let mut p = publish("devices/d1/t");
    p.qos = 2;
    assert_eq!(denied(hub.authorize_publish(&s, &p, &host)).0, ReasonCode::QosNotSupported);
    let mut p = publish("devices/d1/t");
    p.retain = true;
    assert_eq!(denied(hub.authorize_publish(&s, &p, &host)).0, ReasonCode::RetainNotSupported);
    let mut p = publish("devices/d1/t");
    p.payload_size = 101;
    assert_eq!(
        denied(hub.authorize_publish(&s, &p, &host)),
        (ReasonCode::PacketTooLarge, "service level: message payload is too large".into())
    );
    let sub = hub.authorize_subscribe(&s, &Subscribe { filter: "devices/d1/c".into(), qos: 1 });
    assert!(matches!(sub, SubscribeDecision::Deny(d) if d.reason == ReasonCode::QosNotSupported));
    let downgrade =
        open(&format!("[hub]\nservice-level = \"shared\"\nshared-subscribe = \"downgrade\"\n{DEVICES}")).unwrap();
    let s = accept(&downgrade, &connect("d1"));
    assert!(matches!(
        downgrade.authorize_subscribe(&s, &Subscribe { filter: "devices/d1/c".into(), qos: 2 }),
        SubscribeDecision::Grant(0)
    ));
}

#[test]
fn retained_override_and_deny() {
    let hub = open(&format!("[hub]\nretained = \"override\"\n{DEVICES}")).unwrap();
    let s = accept(&hub, &connect("d1"));
    let mut p = publish("devices/d1/t");
    p.retain = true;
    match hub.authorize_publish(&s, &p, &FakeHost::default()) {
        PublishDecision::Rewrite(r) => assert!(!r.retain && r.qos == 1),
        other => panic!("{}", describe(&other)),
    }
    let hub = open(&format!("[hub]\nretained = \"deny\"\n{DEVICES}")).unwrap();
    assert_eq!(denied(hub.authorize_publish(&s, &p, &FakeHost::default())).0, ReasonCode::RetainNotSupported);
}

#[test]
fn client_id_formats_and_org() {
    let hub = open(&format!(
        "[hub]\norg = \"acme\"\n[[identity.client-id-format]]\npattern = \"d:{{org}}:{{type}}:{{id}}\"\n\
         [[identity.client-id-format]]\npattern = \"g:{{org}}:{{type}}:{{id}}\"\nkind = \"gateway\"\n{DEVICES}"
    ))
    .unwrap();
    let s = accept(&hub, &connect("d:acme:sensor:s1"));
    assert_eq!(crate::hub::tests_support::device(&s), ("s1", "sensor"));
    assert!(crate::hub::tests_support::groups(&s).is_empty(), "a client-id shape grants no group");
    assert_eq!(reject(&hub, &connect("d:other:sensor:s1")).0, ReasonCode::ClientIdentifierNotValid);
    assert_eq!(reject(&hub, &connect("sensor-1")).0, ReasonCode::ClientIdentifierNotValid);
}

#[test]
fn certificates_registry_and_auto_provisioning() {
    let rules = "[hub]\nrequire-mtls = true\n[identity]\nfrom = \"certificate\"\n[[ca]]\nname = \"acme-ca\"\npem = \"-\"\n\
                 [[device]]\nid = \"ok\"\n[[device]]\nid = \"off\"\nstate = \"disabled\"\n[[device]]\nid = \"gone\"\nstate = \"deleted\"\n";
    let hub = Hub::compile(rules).unwrap();
    let with = |cn: Option<&str>, ca: Option<&str>| {
        let mut c = connect(cn.unwrap_or("x"));
        c.tls = true;
        c.certificate = Some(cert(cn, ca));
        c
    };
    assert_eq!(reject(&hub, &connect("ok")).1, "mutual TLS authentication is required");
    assert_eq!(reject(&hub, &with(Some("ok"), Some("other-ca"))).1, "invalid device certificate");
    assert_eq!(reject(&hub, &with(Some(""), Some("acme-ca"))).1, "certificate common name cannot be empty");
    assert_eq!(reject(&hub, &with(None, Some("acme-ca"))).1, "certificate common name cannot be empty");
    assert_eq!(reject(&hub, &with(Some("new"), Some("acme-ca"))).1, "could not identify device");
    assert_eq!(reject(&hub, &with(Some("off"), Some("acme-ca"))).1, "device is not enabled");
    assert_eq!(reject(&hub, &with(Some("gone"), Some("acme-ca"))).1, "device is deleted");
    accept(&hub, &with(Some("ok"), Some("acme-ca")));
    // The validity window counts, to the second and inclusively.
    let mut expired = with(Some("ok"), Some("acme-ca"));
    expired.certificate.as_mut().unwrap().not_after = NOW_SECS - 1;
    assert_eq!(reject(&hub, &expired).1, "device certificate has expired");
    expired.certificate.as_mut().unwrap().not_after = NOW_SECS;
    accept(&hub, &expired);
    let mut early = with(Some("ok"), Some("acme-ca"));
    early.certificate.as_mut().unwrap().not_before = NOW_SECS + 1;
    assert_eq!(reject(&hub, &early).1, "device certificate is not yet valid");

    let auto = Hub::compile(&rules.replace("[identity]\n", "[identity]\nauto-provision = true\n")).unwrap();
    let host = FakeHost::default();
    let (info, _) = auto.authenticate(&with(Some("new"), Some("acme-ca")), &host).unwrap();
    assert_eq!(info.device_id, "new");
    assert_eq!(
        host.infos.borrow().as_slice(),
        ["device was auto-provisioned: object-name=new source-address=127.0.0.1:5000"]
    );
}

#[test]
fn quotas_connections_and_message_rate() {
    let hub =
        open(&format!("[hub]\nmax-connections = 2\n[hub.rate]\nmessages = 3\nwindow-ms = 60000\n{DEVICES}")).unwrap();
    let full = FakeHost { connections: 2, ..FakeHost::default() };
    assert_eq!(hub.authenticate(&connect("d1"), &full).unwrap_err().reason, ReasonCode::QuotaExceeded);
    let mut resumed = connect("d1");
    resumed.resumed = true;
    assert!(hub.authenticate(&resumed, &full).is_ok(), "a resumed session is not a new connection");

    let host = FakeHost::default();
    let s = accept(&hub, &connect("d1"));
    for _ in 0..3 {
        assert!(matches!(hub.authorize_publish(&s, &publish("devices/d1/t"), &host), PublishDecision::Allow));
    }
    assert_eq!(denied(hub.authorize_publish(&s, &publish("devices/d1/t"), &host)).0, ReasonCode::MessageRateTooHigh);
    let other = accept(&hub, &connect("d2"));
    assert!(
        matches!(hub.authorize_publish(&other, &publish("devices/d2/t"), &host), PublishDecision::Allow),
        "per device"
    );
}

#[test]
fn delivery_rules_and_types() {
    let hub = open(
        r#"
[[device]]
id = "cam"
type = "camera"
[[device]]
id = "lamp"
type = "light"
groups = ["hall"]
[[rule]]
effect = "allow"
actions = ["subscribe"]
topics = ["broadcast/#", "hall/#"]
[[rule]]
effect = "allow"
actions = ["delivery"]
topics = ["broadcast/#"]
types = ["camera"]
[[rule]]
effect = "allow"
actions = ["delivery"]
topics = ["hall/#"]
groups = ["hall"]
"#,
    )
    .unwrap();
    let d = |t: &str| Delivery { topic: t.into(), qos: 0, retain: false, payload_size: 0 };
    let cam = accept(&hub, &connect("cam"));
    let lamp = accept(&hub, &connect("lamp"));
    assert!(matches!(hub.authorize_delivery(&cam, &d("broadcast/x")), DeliveryDecision::Allow));
    assert!(matches!(hub.authorize_delivery(&lamp, &d("broadcast/x")), DeliveryDecision::Deny(_)));
    assert!(matches!(hub.authorize_delivery(&lamp, &d("hall/x")), DeliveryDecision::Allow));
    assert!(matches!(hub.authorize_delivery(&cam, &d("hall/x")), DeliveryDecision::Deny(_)));
    assert_eq!(reject(&hub, &connect("stranger")).1, "could not identify device");
}

#[test]
fn identity_from_username() {
    let hub = open(&format!("[identity]\nfrom = \"username\"\n{DEVICES}")).unwrap();
    let mut c = connect("any-client-id");
    assert_eq!(reject(&hub, &c).0, ReasonCode::BadUserNameOrPassword, "no user name");
    c.username = Some("a/b".into());
    assert_eq!(reject(&hub, &c).0, ReasonCode::BadUserNameOrPassword, "not usable as a topic level");
    c.username = Some("d7".into());
    let s = accept(&hub, &c);
    assert_eq!(crate::hub::tests_support::device(&s).0, "d7");
    assert!(matches!(
        hub.authorize_publish(&s, &publish("devices/d7/x"), &FakeHost::default()),
        PublishDecision::Allow
    ));
}

#[test]
fn identities_starting_with_dollar_are_refused() {
    // With `${client.id}/#`, a client named `$SYS` would otherwise be granted `$SYS/#`.
    let rules = "[[rule]]\neffect = \"allow\"\nactions = [\"publish\", \"subscribe\"]\ntopics = [\"${client.id}/#\"]\n";
    let hub = open(rules).unwrap();
    assert_eq!(reject(&hub, &connect("$SYS")).0, ReasonCode::ClientIdentifierNotValid);
    let s = accept(&hub, &connect("plain"));
    assert!(matches!(
        hub.authorize_subscribe(&s, &Subscribe { filter: "plain/x".into(), qos: 0 }),
        SubscribeDecision::Grant(0)
    ));
    let e = open("[[device]]\nid = \"$x\"\n").unwrap_err();
    assert!(e.contains("not start with '$'"), "{e}");
}

#[test]
fn publish_decisions_are_cacheable_only_when_they_read_no_counter_and_fit_the_limit() {
    let limited = open(&format!("[hub]\nmax-payload = 100\n{DEVICES}")).unwrap();
    let small = Publish { payload_size: 100, ..publish("devices/d1/t") };
    let big = Publish { payload_size: 101, ..publish("devices/d1/t") };
    assert_eq!(limited.publish_cache_bound(&small, false), Some(100));
    assert_eq!(limited.publish_cache_bound(&big, false), None, "a size denial depends on the size");
    assert_eq!(limited.publish_cache_bound(&small, true), None, "a counter was read");
    let unlimited = open(&format!("[hub]\n{DEVICES}")).unwrap();
    assert_eq!(unlimited.publish_cache_bound(&big, false), Some(u32::MAX));

    // The rate rule reads a counter on allowed publishes only; a denial before it does not.
    let rated = open(&format!("[hub]\n[hub.rate]\nmessages = 3\nwindow-ms = 60000\n{DEVICES}")).unwrap();
    let s = accept(&rated, &connect("d1"));
    let host = FakeHost::default();
    let _ = rated.authorize_publish(&s, &publish("devices/d1/t"), &host);
    assert_eq!(host.counters.borrow().len(), 1, "allowed publish counted");
    let _ = rated.authorize_publish(&s, &publish("devices/d2/t"), &host);
    assert_eq!(host.counters.borrow().values().sum::<i64>(), 1, "denied publish read no counter");
}

// ---- proofs of identity ----

/// `MP$08VKz!8rXwnR-Q*` (IBM's example token), `mqtt-policy hash` style, salt of 16 x 7.
fn token_hash(secret: &str) -> String {
    crate::credentials::hash_secret(secret.as_bytes(), &[7; 16], crate::credentials::DEFAULT_ITERATIONS).unwrap()
}

fn ibm() -> Hub {
    Hub::compile(&format!(
        r#"
[hub]
org = "acme"
[[identity.client-id-format]]
pattern = "d:{{org}}:{{type}}:{{id}}"
[[identity.client-id-format]]
pattern = "g:{{org}}:{{type}}:{{id}}"
kind = "gateway"
[[identity.client-id-format]]
pattern = "a:{{org}}:{{app}}"
kind = "application"
[[device]]
id = "s1"
type = "sensor"
token-hash = "{s1}"
[[device]]
id = "m-009"
type = "meter"
token-hash = "{s1}"
[[device]]
id = "gw-1"
type = "hub"
kind = "gateway"
token-hash = "{s1}"
[[application]]
api-key = "a-acme-a84ps90Ajs"
token-hash = "{app}"
groups = ["ops"]
[[rule]]
effect = "allow"
actions = ["subscribe"]
topics = ["iot-2/type/+/id/+/evt/+/fmt/+"]
kinds = ["application"]
[[rule]]
effect = "allow"
actions = ["subscribe"]
topics = ["iot-2/type/${{device.type}}/id/${{device.id}}/cmd/+/fmt/+"]
kinds = ["device", "gateway"]
"#,
        s1 = token_hash("s1-token"),
        app = token_hash("MP$08VKz!8rXwnR-Q*"),
    ))
    .unwrap()
}

fn with_user(client_id: &str, user: &str, password: &str) -> Connect {
    Connect { username: Some(user.into()), password: Some(password.as_bytes().to_vec()), ..connect(client_id) }
}

fn sub(hub: &Hub, s: &Session, filter: &str) -> bool {
    matches!(hub.authorize_subscribe(s, &Subscribe { filter: filter.into(), qos: 0 }), SubscribeDecision::Grant(_))
}

#[test]
fn applications_need_a_registered_api_key_and_its_token() {
    let hub = ibm();
    let anonymous = reject(&hub, &connect("a:acme:whoever"));
    assert_eq!(anonymous.0, ReasonCode::BadUserNameOrPassword);
    assert!(anonymous.1.contains("API key"), "{}", anonymous.1);
    let wrong = reject(&hub, &with_user("a:acme:dash", "a-acme-a84ps90Ajs", "MP$08VKz!8rXwnR-Q"));
    assert_eq!(wrong, (ReasonCode::BadUserNameOrPassword, "bad API key or authentication token".into()));
    let unknown = reject(&hub, &with_user("a:acme:dash", "a-acme-nope", "MP$08VKz!8rXwnR-Q*"));
    assert_eq!(unknown.1, "bad API key or authentication token", "unknown keys look like wrong tokens");
    let s = accept(&hub, &with_user("a:acme:dash", "a-acme-a84ps90Ajs", "MP$08VKz!8rXwnR-Q*"));
    assert_eq!(crate::hub::tests_support::groups(&s), ["ops"], "groups come from the registry");
    assert!(sub(&hub, &s, "iot-2/type/+/id/+/evt/+/fmt/+"));
    // A device's token is no API key, and a device id is no application id.
    assert_eq!(
        reject(&hub, &with_user("a:acme:dash", "use-token-auth", "s1-token")).0,
        ReasonCode::BadUserNameOrPassword
    );
    let taken = reject(&hub, &with_user("a:acme:m-009", "a-acme-a84ps90Ajs", "MP$08VKz!8rXwnR-Q*"));
    assert_eq!(taken.0, ReasonCode::ClientIdentifierNotValid);
    assert!(taken.1.contains("names device `m-009`"), "{}", taken.1);
}

#[test]
fn devices_need_their_token_and_the_registry_decides_kind_and_type() {
    let hub = ibm();
    let s = accept(&hub, &with_user("d:acme:sensor:s1", "use-token-auth", "s1-token"));
    assert_eq!(crate::hub::tests_support::device(&s), ("s1", "sensor"));
    assert!(sub(&hub, &s, "iot-2/type/sensor/id/s1/cmd/reboot/fmt/json"));
    assert!(!sub(&hub, &s, "iot-2/type/+/id/+/evt/+/fmt/+"), "a device never gets application rules");
    let missing = reject(&hub, &connect("d:acme:sensor:s1"));
    assert_eq!(missing.0, ReasonCode::BadUserNameOrPassword);
    assert!(missing.1.contains("`use-token-auth`"), "{}", missing.1);
    let wrong = reject(&hub, &with_user("d:acme:sensor:s1", "use-token-auth", "s1-tokeN"));
    assert_eq!(wrong, (ReasonCode::BadUserNameOrPassword, "bad user name or password".into()));
    assert_eq!(reject(&hub, &with_user("d:acme:sensor:s1", "s1", "s1-token")).1, "bad user name or password");
    let other_type = reject(&hub, &with_user("d:acme:gauge:m-009", "use-token-auth", "s1-token"));
    assert_eq!(other_type.0, ReasonCode::ClientIdentifierNotValid);
    assert!(other_type.1.contains("registered as type `meter`"), "{}", other_type.1);
    let as_gateway = reject(&hub, &with_user("g:acme:sensor:s1", "use-token-auth", "s1-token"));
    assert!(as_gateway.1.contains("claims a gateway, but `s1` is registered as a device"), "{}", as_gateway.1);
    accept(&hub, &with_user("g:acme:hub:gw-1", "use-token-auth", "s1-token"));
    assert_eq!(
        reject(&hub, &with_user("d:acme:sensor:s9", "use-token-auth", "s1-token")).1,
        "could not identify device"
    );
}

#[test]
fn plain_user_names_and_mosquitto_password_hashes() {
    // `mosquitto_passwd -c -b pw alice 'wonder land'`, Debian's mosquitto 2.0.11.
    let alice = "$7$101$RH34QZdrSqGjBOgl$J87JFu3ovEPnBj17Vv1DQUGchSwLktPYvHWj9kxNyU2BKNaPdCQJYaid3tqP99c2u/pwuW3ZGA2UqKDSEPavkg==";
    let hub = Hub::compile(&format!(
        "[identity]\nfrom = \"username\"\n[[device]]\nid = \"alice\"\npassword-hash = \"{alice}\"\n{DEVICES}"
    ))
    .unwrap();
    let s = accept(&hub, &with_user("c1", "alice", "wonder land"));
    assert_eq!(crate::hub::tests_support::device(&s).0, "alice");
    assert_eq!(reject(&hub, &with_user("c1", "alice", "wonderland")).1, "bad user name or password");
    let (_, info) =
        hub.authenticate(&with_user("c1", "alice", "wonder land"), &FakeHost::default()).map(|(i, s)| (s, i)).unwrap();
    assert!(info.attributes.contains(&("auth".into(), "password".into())));
    let shown = format!("{hub:?}");
    assert!(shown.contains("SecretHash(mosquitto $7$ pbkdf2-sha512 (101 iterations))"), "{shown}");
    assert!(!shown.contains("RH34QZdrSqGjBOgl"), "the compiled hub never shows a hash");
}

#[test]
fn documents_that_admit_clients_without_proof_must_say_so() {
    let e = Hub::compile(DEVICES).unwrap_err();
    assert!(e.contains("identity.authentication = \"none\""), "{e}");
    let e = Hub::compile("[[device]]\nid = \"a\"\n").unwrap_err();
    assert!(e.starts_with("line 2, column 6: device[0] `a` has no credential"), "{e}");
    Hub::compile("[identity]\nauthentication = \"none\"\n[[device]]\nid = \"a\"\n").unwrap();
    let e = Hub::compile("[hub]\nrequire-mtls = true\n[identity]\nauthentication = \"none\"\n").unwrap_err();
    assert!(e.starts_with("line 2, column 16: hub.require-mtls needs at least one [[ca]]"), "{e}");
    let e = Hub::compile("[[device]]\nid = \"a\"\ntoken-hash = \"plain-text\"\n").unwrap_err();
    assert!(
        e.starts_with("line 3, column 14: device[0].token-hash: unknown hash scheme") && !e.contains("plain-text"),
        "{e}"
    );
    let e = Hub::compile("[[device]]\nkind = \"application\"\nid = \"a\"\n").unwrap_err();
    assert!(e.contains("registered as [[application]]"), "{e}");
}

#[test]
fn certificates_must_name_the_client_ids_identity() {
    let rules = "[hub]\nrequire-mtls = true\n[identity]\nfrom = \"certificate\"\n[[ca]]\nname = \"acme-ca\"\npem = \"-\"\n\
                 [[device]]\nid = \"press-1\"\n[[device]]\nid = \"press-9\"\n";
    let hub = Hub::compile(rules).unwrap();
    let mut c = connect("press-1");
    c.tls = true;
    c.certificate = Some(cert(Some("press-9"), Some("acme-ca")));
    let (reason, message) = reject(&hub, &c);
    assert_eq!(reason, ReasonCode::NotAuthorized);
    assert_eq!(message, "certificate common name `press-9` is not the identity `press-1` the client identifier names");
    c.client_id = "press-9".into();
    accept(&hub, &c);
}

#[test]
fn no_client_chosen_value_expands_into_a_rule_unsafely() {
    let rules =
        "[[rule]]\neffect = \"allow\"\nactions = [\"subscribe\"]\ntopics = [\"${username}/#\", \"c/${cert.cn}/#\"]\n";
    let hub = open(rules).unwrap();
    for user in ["$SYS", "a/b", "+", "#", "x\0y"] {
        let mut c = connect("c1");
        c.username = Some(user.into());
        let (reason, message) = reject(&hub, &c);
        assert_eq!(reason, ReasonCode::BadUserNameOrPassword, "{user:?}");
        assert!(message.contains("cannot be used in this hub's topic rules"), "{message}");
    }
    let mut c = connect("c1");
    c.certificate = Some(cert(Some("$x"), None));
    assert_eq!(reject(&hub, &c).0, ReasonCode::NotAuthorized);
    c.certificate = None;
    c.username = Some("bob".into());
    let s = accept(&hub, &c);
    assert!(sub(&hub, &s, "bob/x") && !sub(&hub, &s, "$SYS/#"));
    // A value no rule expands is not checked: the Azure-style user names have slashes.
    let plain = open(DEVICES).unwrap();
    accept(&plain, &with_user("d1", "hub.example/d1/?api-version=2021-04-12", "x"));
}

// ---- shared access signatures ----

const HOST: &str = "shared.example-hub.net";

fn sas_hub() -> Hub {
    let key = base64ct::Base64::encode_string(b"device key of thermo-1, 32 bytes");
    let policy = base64ct::Base64::encode_string(b"hub policy key,  also 32 bytes..");
    Hub::compile(&format!(
        "[sas]\nhostname = \"{HOST}\"\n[[sas.policy]]\nname = \"device\"\nkey = \"{policy}\"\n\
         [[device]]\nid = \"thermo-1\"\nsas-key = \"{key}\"\n[[device]]\nid = \"thermo-2\"\n[[device]]\nid = \"Thermo-2\"\n{DEVICES}"
    ))
    .unwrap()
}

fn sas_connect(device: &str, token: String) -> Connect {
    Connect {
        username: Some(format!("{HOST}/{device}/?api-version=2021-04-12")),
        password: Some(token.into_bytes()),
        ..connect(device)
    }
}

fn device_token(device: &str, key: &[u8], expiry: i64) -> String {
    crate::sas::sign(&format!("{HOST}%2Fdevices%2F{device}"), key, expiry as u64, None)
}

use base64ct::Encoding;

#[test]
fn sas_tokens_signed_by_the_device_or_a_hub_policy() {
    let hub = sas_hub();
    let key = b"device key of thermo-1, 32 bytes";
    let (info, _) = hub
        .authenticate(&sas_connect("thermo-1", device_token("thermo-1", key, NOW_SECS + 3600)), &FakeHost::default())
        .unwrap();
    assert_eq!(info.expires_at_ms, Some((NOW_SECS as u64 + 3600) * 1000), "the session ends with the token");
    assert!(info.attributes.contains(&("auth".into(), "sas".into())));

    let expired = reject(&hub, &sas_connect("thermo-1", device_token("thermo-1", key, NOW_SECS - 10)));
    assert_eq!(expired.0, ReasonCode::BadUserNameOrPassword);
    assert!(expired.1.starts_with("shared access signature expired at se="), "{}", expired.1);
    assert!(expired.1.contains("renew the token and reconnect"), "{}", expired.1);
    let forged = reject(
        &hub,
        &sas_connect("thermo-1", device_token("thermo-1", b"a guessed key, also 32 bytes....", NOW_SECS + 60)),
    );
    assert_eq!(forged.1, "shared access signature is not valid: the signature does not match");
    let elsewhere = reject(&hub, &sas_connect("thermo-1", device_token("thermo-2", key, NOW_SECS + 60)));
    assert!(
        elsewhere.1.contains("does not grant access to `shared.example-hub.net/devices/thermo-1`"),
        "{}",
        elsewhere.1
    );
    let mut wrong_user = sas_connect("thermo-1", device_token("thermo-1", key, NOW_SECS + 60));
    wrong_user.username = Some(format!("{HOST}/thermo-2/?api-version=2021-04-12"));
    assert!(reject(&hub, &wrong_user).1.contains("uses user name `shared.example-hub.net/thermo-1/?api-version=...`"));
    assert!(reject(&hub, &sas_connect("thermo-1", "SharedAccessSignature sr=x".into())).1.starts_with("malformed"));
    let plain = reject(&hub, &with_user("thermo-1", "x", "password"));
    assert!(plain.1.contains("must authenticate with a shared access signature"), "{}", plain.1);

    // thermo-2 has no key of its own: the hub's `device` policy signs for it.
    let policy = b"hub policy key,  also 32 bytes..";
    let t = crate::sas::sign(&format!("{HOST}%2Fdevices%2Fthermo-2"), policy, (NOW_SECS + 60) as u64, Some("device"));
    let (info, _) = hub.authenticate(&sas_connect("thermo-2", t), &FakeHost::default()).unwrap();
    assert!(info.attributes.contains(&("auth".into(), "sas-policy".into())));
    // Device ids are case-sensitive: thermo-2's token does not admit the registered Thermo-2;
    // the host name is not.
    let t = crate::sas::sign(&format!("{HOST}%2Fdevices%2Fthermo-2"), policy, (NOW_SECS + 60) as u64, Some("device"));
    assert!(reject(&hub, &sas_connect("Thermo-2", t)).1.contains("does not grant access"));
    let t = crate::sas::sign(&format!("{HOST}%2Fdevices%2FThermo-2"), policy, (NOW_SECS + 60) as u64, Some("device"));
    let mut upper = sas_connect("Thermo-2", t);
    upper.username = Some(format!("{}/Thermo-2/?api-version=2021-04-12", HOST.to_uppercase()));
    hub.authenticate(&upper, &FakeHost::default()).unwrap();
    let t = crate::sas::sign(&format!("{HOST}%2Fdevices%2FThermo-2"), policy, (NOW_SECS + 60) as u64, Some("device"));
    let mut wrong_case = sas_connect("Thermo-2", t);
    wrong_case.username = Some(format!("{HOST}/thermo-2/?api-version=2021-04-12"));
    assert!(reject(&hub, &wrong_case).1.contains("uses user name"));
    let t = crate::sas::sign(&format!("{HOST}%2Fdevices%2Fthermo-2"), policy, (NOW_SECS + 60) as u64, Some("service"));
    assert_eq!(reject(&hub, &sas_connect("thermo-2", t)).1, "shared access policy `service` does not exist");
    let no_key = reject(&hub, &sas_connect("thermo-2", device_token("thermo-2", key, NOW_SECS + 60)));
    assert!(no_key.1.contains("has no symmetric key"), "{}", no_key.1);
    let shown = format!("{hub:?}");
    assert!(!shown.contains(&format!("{:?}", policy.as_slice())) && shown.contains("<redacted>"), "{shown}");
}

// ---- sessions the broker restored from its persistence ----

/// What the host passes to re-establish a session the broker restored after a restart: the
/// client id and the user name the host set to the device id, nothing proven.
fn restored(client_id: &str, username: &str) -> Connect {
    Connect {
        username: Some(username.into()),
        clean_start: false,
        peer: String::new(),
        resumed: true,
        ..connect(client_id)
    }
}

#[test]
fn a_restored_session_is_admitted_as_the_registered_identity_for_deliveries_only() {
    let hub = ibm();
    let s = accept(&hub, &restored("d:acme:sensor:s1", "s1"));
    assert_eq!(crate::hub::tests_support::device(&s), ("s1", "sensor"), "kind and type from the registry");
    let (info, _) = hub.authenticate(&restored("d:acme:sensor:s1", "s1"), &FakeHost::default()).unwrap();
    assert!(info.attributes.contains(&("auth".into(), "restored".into())), "{:?}", info.attributes);
    let delivery = |topic: &str| Delivery { topic: topic.into(), qos: 1, retain: false, payload_size: 3 };
    assert!(matches!(
        hub.authorize_delivery(&s, &delivery("iot-2/type/sensor/id/s1/cmd/reboot/fmt/json")),
        DeliveryDecision::Allow
    ));
    assert!(
        matches!(
            hub.authorize_delivery(&s, &delivery("iot-2/type/sensor/id/s2/cmd/x/fmt/json")),
            DeliveryDecision::Deny(_)
        ),
        "the restored identity's rules still apply"
    );
    // Nobody is connected on it: it neither publishes nor subscribes.
    let (code, message) =
        denied(hub.authorize_publish(&s, &publish("iot-2/type/sensor/id/s1/evt/t/fmt/json"), &FakeHost::default()));
    assert_eq!(code, ReasonCode::NotAuthorized);
    assert!(message.contains("no client is connected"), "{message}");
    assert!(!sub(&hub, &s, "iot-2/type/sensor/id/s1/cmd/reboot/fmt/json"));

    // The registry still decides: unknown, disabled and mistyped identities are refused.
    assert_eq!(reject(&hub, &restored("d:acme:sensor:s9", "s9")).1, "could not identify device");
    assert_eq!(reject(&hub, &restored("d:acme:gauge:m-009", "m-009")).0, ReasonCode::ClientIdentifierNotValid);
    // Applications are known by their API key, which the broker does not keep.
    assert!(reject(&hub, &restored("a:acme:dash", "dash")).1.contains("keeps its id, not its API key"));
}

#[test]
fn only_a_restore_skips_the_proof() {
    let hub = ibm();
    // A client cannot look restored: `resumed` is the host's, and a connection has a peer.
    let mut fresh = restored("d:acme:sensor:s1", "s1");
    fresh.resumed = false;
    assert_eq!(reject(&hub, &fresh).0, ReasonCode::BadUserNameOrPassword);
    // After a reload, a connected client is resumed with what it presented: the proof is checked.
    let mut connected = restored("d:acme:sensor:s1", "use-token-auth");
    connected.peer = "127.0.0.1:5000".into();
    assert_eq!(reject(&hub, &connected).0, ReasonCode::BadUserNameOrPassword);
    let mut wrong = with_user("d:acme:sensor:s1", "use-token-auth", "s1-tokeN");
    wrong.resumed = true;
    wrong.peer = String::new();
    assert_eq!(reject(&hub, &wrong).1, "bad user name or password", "a presented proof is always checked");

    // Identity from a certificate, which the broker does not keep: refused, with the reason.
    let certs = Hub::compile(&format!(
        "[identity]\nfrom = \"certificate\"\n[[ca]]\nname = \"acme-ca\"\npem = \"-\"\n[[device]]\nid = \"d1\"\n{DEVICES}"
    ))
    .unwrap();
    assert!(reject(&certs, &restored("d1", "d1")).1.contains("certificate, which the broker does not keep"));
    // A locked hub and a shared hub (clean sessions only) refuse restores as they refuse connects.
    let locked = open(&format!("[hub]\nstate = \"locked\"\n{DEVICES}")).unwrap();
    assert_eq!(reject(&locked, &restored("d1", "d1")).1, "hub is locked");
    let shared = open(&format!("[hub]\nservice-level = \"shared\"\n{DEVICES}")).unwrap();
    assert!(reject(&shared, &restored("d1", "d1")).1.contains("clean session"));
}

#[test]
fn rate_counters_of_long_device_ids_stay_short_and_distinct() {
    assert_eq!(crate::hub::rate_counter_name("d1"), "rate:d1");
    let long = |c: char| c.to_string().repeat(60_000);
    let (a, b) = (crate::hub::rate_counter_name(&long('a')), crate::hub::rate_counter_name(&long('b')));
    assert!(a.len() < 64 && a.starts_with("rate#"), "{a}");
    assert_ne!(a, b);
    assert!(!a.contains(':'), "cannot collide with a short id's name");
}

const MONITORED: &str = r#"
[hub]
org = "acme"

[monitoring]
device-scope = "group"

[identity]
from = "client-id"

[[identity.client-id-format]]
pattern = "d:{org}:{type}:{id}"
kind = "device"

[[identity.client-id-format]]
pattern = "g:{org}:{type}:{id}"
kind = "gateway"

[[identity.client-id-format]]
pattern = "a:{org}:{app}"
kind = "application"

[[device]]
id = "s1"
type = "sensor"
groups = ["hall"]

[[device]]
id = "s2"
type = "sensor"
state = "disabled"

[[device]]
id = "g1"
type = "gw"
kind = "gateway"
groups = ["hall"]

[[rule]]
effect = "allow"
actions = ["subscribe"]
topics = ["iot-2/type/+/id/+/mon"]
"#;

#[test]
fn monitoring_names_admitted_and_refused_connections_by_type_and_id() {
    use crate::hub::Monitored;
    let hub = open(MONITORED).unwrap();
    let c = connect("d:acme:sensor:s1");
    let s = accept(&hub, &c);
    let dev = |t: &str, id: &str| Some(Monitored::Device { device_type: t.into(), id: id.into() });
    assert_eq!(hub.monitored(&c, Some(&s)), dev("sensor", "s1"));
    // Refused (disabled): still reported on its own topic, as a FailedConnect.
    let c = connect("d:acme:sensor:s2");
    reject(&hub, &c);
    assert_eq!(hub.monitored(&c, None), dev("sensor", "s2"));
    assert_eq!(hub.monitored(&connect("d:globex:sensor:s1"), None), None, "another organization");
    assert_eq!(hub.monitored(&connect("nonsense"), None), None, "no known shape");
    assert_eq!(hub.monitored(&connect("a:acme:dash"), None), Some(Monitored::Application { app: "dash".into() }));
    let restored = Connect { resumed: true, peer: String::new(), ..connect("d:acme:sensor:s1") };
    assert_eq!(hub.monitored(&restored, None), None, "a restored session is no connection");
    let plain = open(DEVICES).unwrap();
    assert_eq!(plain.monitored(&connect("d1"), None), None, "no [monitoring]: nothing is reported");
}

#[test]
fn monitoring_scope_and_forgeries() {
    let hub = open(MONITORED).unwrap();
    let g1 = accept(&hub, &connect("g:acme:gw:g1"));
    let s1 = accept(&hub, &connect("d:acme:sensor:s1"));
    let d = |topic: &str| Delivery { topic: topic.into(), qos: 0, retain: true, payload_size: 100 };
    assert!(matches!(hub.authorize_delivery(&g1, &d("iot-2/type/sensor/id/s1/mon")), DeliveryDecision::Allow));
    match hub.authorize_delivery(&g1, &d("iot-2/type/sensor/id/s9/mon")) {
        DeliveryDecision::Deny(d) => {
            assert_eq!(d.message, "monitoring messages of device s9 are outside this gateway's groups")
        }
        _ => panic!("an ungrouped device is outside the gateway's groups"),
    }
    assert!(matches!(hub.authorize_delivery(&s1, &d("iot-2/app/x/mon")), DeliveryDecision::Deny(_)));
    let (code, message) = denied(hub.authorize_publish(&s1, &publish("iot-2/type/x/id/y/mon"), &FakeHost::default()));
    assert_eq!(code, ReasonCode::NotAuthorized);
    assert!(message.ends_with("monitoring messages are published by the hub only"), "{message}");
}

#[test]
fn monitoring_section_errors_name_line_and_field() {
    let e = open("[monitoring]\ndevise-scope = \"group\"\n").unwrap_err();
    assert!(e.starts_with("line 2, column 1: unknown field `devise-scope`"), "{e}");
    let e = open("[monitoring]\ndevice-scope = \"everyone\"\n").unwrap_err();
    assert!(e.starts_with("line 2, column 16: unknown variant `everyone`"), "{e}");
    let e = open("[hub]\n\n[monitoring]\ndevices = false\napplications = false\n").unwrap_err();
    assert!(e.starts_with("line 3, column 1: monitoring: devices and applications are both false"), "{e}");
}

/// What `eval --explain` and `test --coverage` name: each rule's `[[rule]]` line, and which
/// rules a check matches, read as the check reads them.
#[test]
fn matching_rules_name_the_rules_a_check_reads_by_document_line() {
    let rules = "\
[[rule]]
effect = \"allow\"
actions = [\"publish\", \"subscribe\"]
topics = [\"devices/${device.id}/#\"]

# a comment between rules
[[ rule ]]   # spaced headers are TOML too
effect = \"deny\"
actions = [\"publish\"]
topics = [
  \"devices/+/secret\",
]

[[ \"rule\" ]]
effect = \"allow\"
actions = [\"subscribe\"]
topics = [\"fleet/+\"]
types = [\"meter\"]
";
    let hub = open(rules).unwrap();
    let infos: Vec<_> = hub.rules().cloned().collect();
    assert_eq!(infos.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 7, 14]);
    assert_eq!(infos[1].to_string(), "line 7: deny publish devices/+/secret");
    let s = accept(&hub, &connect("d1"));
    assert_eq!(s.describe(), "device d1 of type device");
    let m = |action, topic| -> Vec<(Action, Vec<usize>)> {
        hub.matching_rules(&s, action, topic).into_iter().map(|r| (r.of, r.matched)).collect()
    };
    assert_eq!(m(Action::Publish, "devices/d1/x"), vec![(Action::Publish, vec![0])]);
    assert_eq!(m(Action::Publish, "devices/d1/secret"), vec![(Action::Publish, vec![0, 1])], "the deny is listed too");
    assert_eq!(m(Action::Publish, "devices/d2/x"), vec![(Action::Publish, vec![])]);
    // Subscriptions: within an allow rule's filter; rule 2 applies to meters only.
    assert_eq!(m(Action::Subscribe, "devices/d1/+"), vec![(Action::Subscribe, vec![0])]);
    assert_eq!(m(Action::Subscribe, "devices/#"), vec![(Action::Subscribe, vec![])]);
    assert_eq!(m(Action::Subscribe, "fleet/a"), vec![(Action::Subscribe, vec![])]);
    // A delivery is read against the subscribe rules (no delivery rules here).
    assert_eq!(m(Action::Delivery, "devices/d1/y"), vec![(Action::Subscribe, vec![0])]);
    // The explanation agrees with the decisions.
    assert!(matches!(
        hub.authorize_publish(&s, &publish("devices/d1/x"), &FakeHost::default()),
        PublishDecision::Allow
    ));
    assert!(matches!(
        hub.authorize_publish(&s, &publish("devices/d1/secret"), &FakeHost::default()),
        PublishDecision::Deny(_)
    ));
}

/// With delivery rules, a delivery must meet both: still subscribable, and allowed by a
/// delivery rule. The two are listed apart, so neither can stand for the other.
#[test]
fn a_delivery_needs_its_subscribe_and_its_delivery_rules_listed_apart() {
    let rules = "\
[[rule]]
effect = \"allow\"
actions = [\"subscribe\"]
topics = [\"a/#\"]

[[rule]]
effect = \"allow\"
actions = [\"delivery\"]
topics = [\"b/#\"]
";
    let hub = open(rules).unwrap();
    let s = accept(&hub, &connect("d1"));
    let m: Vec<_> = hub.matching_rules(&s, Action::Delivery, "a/x").into_iter().map(|r| (r.of, r.matched)).collect();
    assert_eq!(m, vec![(Action::Subscribe, vec![0]), (Action::Delivery, vec![])]);
    let d = Delivery { topic: "a/x".into(), qos: 0, retain: false, payload_size: 1 };
    assert!(matches!(hub.authorize_delivery(&s, &d), DeliveryDecision::Deny(_)), "the delivery rules refuse it");
}
