//! The hub rules, natively: compile errors and every decision.

use std::cell::RefCell;
use std::collections::HashMap;

use mqtt_policy_guest::{
    Certificate, Connect, Delivery, DeliveryDecision, Protocol, Publish, PublishDecision, ReasonCode, Subscribe,
    SubscribeDecision,
};

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
    let e = Hub::compile("[[device]]\nid = \"a\"\n[[device]]\nid = \"a\"\n").unwrap_err();
    assert!(e.starts_with("line 4, column 6: device[1].id: duplicate device `a`"), "{e}");
    let e = Hub::compile("[identity]\nfrom = \"certificate\"\n").unwrap_err();
    assert!(e.contains("needs at least one [[ca]]"), "{e}");
    let e = Hub::compile("[[identity.client-id-format]]\npattern = \"d:{org}:{id}\"\n").unwrap_err();
    assert!(e.contains("hub.org must be set"), "{e}");
}

#[test]
fn hub_state_refuses_connects_and_later_actions() {
    for (state, reason, message) in [
        ("not-ready", ReasonCode::ServerUnavailable, "hub is not ready"),
        ("locked", ReasonCode::NotAuthorized, "hub is locked"),
        ("deleted", ReasonCode::NotAuthorized, "hub is deleted"),
    ] {
        let hub = Hub::compile(&format!("[hub]\nstate = \"{state}\"\n{DEVICES}")).unwrap();
        assert_eq!(reject(&hub, &connect("d1")), (reason, message.to_owned()));
    }
    let ready = Hub::compile(DEVICES).unwrap();
    let s = accept(&ready, &connect("d1"));
    let locked = Hub::compile(&format!("[hub]\nstate = \"locked\"\n{DEVICES}")).unwrap();
    match locked.authorize_publish(&s, &publish("devices/d1/x"), &FakeHost::default()) {
        PublishDecision::Deny(d) => assert!(d.disconnect && d.message == "hub is locked"),
        other => panic!("{}", describe(&other)),
    }
}

#[test]
fn topic_rules_with_placeholders_and_deny_precedence() {
    let hub = Hub::compile(DEVICES).unwrap();
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
    let hub = Hub::compile(&format!("[hub]\nservice-level = \"shared\"\nmax-payload = 100\n{DEVICES}")).unwrap();
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
        Hub::compile(&format!("[hub]\nservice-level = \"shared\"\nshared-subscribe = \"downgrade\"\n{DEVICES}"))
            .unwrap();
    let s = accept(&downgrade, &connect("d1"));
    assert!(matches!(
        downgrade.authorize_subscribe(&s, &Subscribe { filter: "devices/d1/c".into(), qos: 2 }),
        SubscribeDecision::Grant(0)
    ));
}

#[test]
fn retained_override_and_deny() {
    let hub = Hub::compile(&format!("[hub]\nretained = \"override\"\n{DEVICES}")).unwrap();
    let s = accept(&hub, &connect("d1"));
    let mut p = publish("devices/d1/t");
    p.retain = true;
    match hub.authorize_publish(&s, &p, &FakeHost::default()) {
        PublishDecision::Rewrite(r) => assert!(!r.retain && r.qos == 1),
        other => panic!("{}", describe(&other)),
    }
    let hub = Hub::compile(&format!("[hub]\nretained = \"deny\"\n{DEVICES}")).unwrap();
    assert_eq!(denied(hub.authorize_publish(&s, &p, &FakeHost::default())).0, ReasonCode::RetainNotSupported);
}

#[test]
fn client_id_formats_and_org() {
    let hub = Hub::compile(&format!(
        "[hub]\norg = \"acme\"\n[[identity.client-id-format]]\npattern = \"d:{{org}}:{{type}}:{{id}}\"\ngroups = [\"devices\"]\n\
         [[identity.client-id-format]]\npattern = \"A:{{org}}:{{app}}:{{instance}}\"\ngroups = [\"apps\"]\n{DEVICES}"
    ))
    .unwrap();
    let s = accept(&hub, &connect("d:acme:sensor:s1"));
    assert_eq!(crate::hub::tests_support::device(&s), ("s1", "sensor"));
    assert_eq!(crate::hub::tests_support::groups(&s), ["devices"]);
    let s = accept(&hub, &connect("A:acme:billing:3"));
    assert_eq!(crate::hub::tests_support::device(&s).0, "billing");
    assert_eq!(crate::hub::tests_support::groups(&s), ["apps"], "groups come from the shape, not from a field");
    assert_eq!(reject(&hub, &connect("d:other:sensor:s1")).0, ReasonCode::ClientIdentifierNotValid);
    assert_eq!(reject(&hub, &connect("sensor-1")).0, ReasonCode::ClientIdentifierNotValid);
}

#[test]
fn certificates_registry_and_auto_provisioning() {
    let rules = "[hub]\nrequire-mtls = true\n[identity]\nfrom = \"certificate\"\n[[ca]]\nname = \"acme-ca\"\npem = \"-\"\n\
                 [[device]]\nid = \"ok\"\n[[device]]\nid = \"off\"\nstate = \"disabled\"\n[[device]]\nid = \"gone\"\nstate = \"deleted\"\n";
    let hub = Hub::compile(rules).unwrap();
    let with = |cn: Option<&str>, ca: Option<&str>| {
        let mut c = connect("x");
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
        Hub::compile(&format!("[hub]\nmax-connections = 2\n[hub.rate]\nmessages = 3\nwindow-ms = 60000\n{DEVICES}"))
            .unwrap();
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
    let hub = Hub::compile(
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
    let hub = Hub::compile(&format!("[identity]\nfrom = \"username\"\n{DEVICES}")).unwrap();
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
    let hub = Hub::compile(rules).unwrap();
    assert_eq!(reject(&hub, &connect("$SYS")).0, ReasonCode::ClientIdentifierNotValid);
    let s = accept(&hub, &connect("plain"));
    assert!(matches!(
        hub.authorize_subscribe(&s, &Subscribe { filter: "plain/x".into(), qos: 0 }),
        SubscribeDecision::Grant(0)
    ));
    let e = Hub::compile("[[device]]\nid = \"$x\"\n").unwrap_err();
    assert!(e.contains("not start with '$'"), "{e}");
}

#[test]
fn publish_decisions_are_cacheable_only_when_they_read_no_counter_and_fit_the_limit() {
    let limited = Hub::compile(&format!("[hub]\nmax-payload = 100\n{DEVICES}")).unwrap();
    let small = Publish { payload_size: 100, ..publish("devices/d1/t") };
    let big = Publish { payload_size: 101, ..publish("devices/d1/t") };
    assert_eq!(limited.publish_cache_bound(&small, false), Some(100));
    assert_eq!(limited.publish_cache_bound(&big, false), None, "a size denial depends on the size");
    assert_eq!(limited.publish_cache_bound(&small, true), None, "a counter was read");
    let open = Hub::compile(&format!("[hub]\n{DEVICES}")).unwrap();
    assert_eq!(open.publish_cache_bound(&big, false), Some(u32::MAX));

    // The rate rule reads a counter on allowed publishes only; a denial before it does not.
    let rated = Hub::compile(&format!("[hub]\n[hub.rate]\nmessages = 3\nwindow-ms = 60000\n{DEVICES}")).unwrap();
    let s = accept(&rated, &connect("d1"));
    let host = FakeHost::default();
    let _ = rated.authorize_publish(&s, &publish("devices/d1/t"), &host);
    assert_eq!(host.counters.borrow().len(), 1, "allowed publish counted");
    let _ = rated.authorize_publish(&s, &publish("devices/d2/t"), &host);
    assert_eq!(host.counters.borrow().values().sum::<i64>(), 1, "denied publish read no counter");
}
