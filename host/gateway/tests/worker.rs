//! The gateway without a broker: real hub-rules policies in a real policy directory, driven
//! through workers as a broker adapter would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_policy_gateway::{
    Access, Adjusted, Check, CheckOutcome, ClientFacts, ClientIds, Config, ConnectOutcome, FailMode, Gateway, Hello,
    Monitor, Restored, TenantSource, Worker,
};
use mqtt_policy_host::embedded::{EmbeddedCa, embed_all};
use mqtt_policy_host::events::{Event, MemorySink};
use mqtt_policy_host::{Protocol, ReasonCode};

/// Devices publish, subscribe and receive under their own id; retained publishes are
/// rewritten without the flag.
const RULES: &str = r#"
[identity]
authentication = "none"

[hub]
retained = "override"

[[rule]]
effect = "allow"
actions = ["publish", "subscribe", "delivery"]
topics = ["devices/${device.id}/#"]
"#;

fn hub_policy(rules: &str, cas: &[EmbeddedCa]) -> Vec<u8> {
    embed_all(guest_artifacts::HUB_RULES_WASM, rules, cas).expect("embedding rules")
}

/// A fresh policy directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("mqtt-policy-gateway-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `tenant.wasm` through a rename, as an operator's deploy would.
    fn deploy(&self, tenant: &str, bytes: &[u8]) {
        let tmp = self.0.join(format!(".{tenant}.wasm.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.0.join(format!("{tenant}.wasm"))).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &Path, tenant: TenantSource, edit: impl FnOnce(&mut Config)) -> (Arc<Gateway>, Arc<MemorySink>) {
    let mut config = Config::new(dir, tenant);
    edit(&mut config);
    let events = Arc::new(MemorySink::new());
    (Gateway::with_sink(config, Some(events.clone())).expect("gateway"), events)
}

fn accepted(outcome: ConnectOutcome) -> Option<String> {
    match outcome {
        ConnectOutcome::Accept { username } => username,
        other => panic!("expected accept, got {other:?}"),
    }
}

fn denied(outcome: CheckOutcome) -> ReasonCode {
    match outcome {
        CheckOutcome::Deny(d) => d.reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn outcomes(events: &MemorySink) -> Vec<(String, &'static str)> {
    events.take().into_iter().map(|e: Event| (e.tenant, e.outcome)).collect()
}

fn check(access: Access, topic: &str, qos: u8) -> Check<'_> {
    Check::new(access, topic, qos)
}

#[test]
fn connect_publish_subscribe_and_delivery_through_hub_rules() {
    let dir = Dir::new("checks");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    let (gateway, events) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    assert_eq!(gateway.loaded_tenants(), ["acme"]);
    let mut w: Worker<u32> = Worker::new(gateway.clone());

    // An MQTT 3.1.1 clean session, which the broker ends with its connection.
    let hello = Hello { protocol: Protocol::Mqtt311, ..Hello::new("d1") };
    assert_eq!(accepted(w.connect(1, &hello)).as_deref(), Some("d1"));
    assert_eq!(w.session_count(), 1);
    assert_eq!(w.check(&1, &check(Access::Publish, "devices/d1/temp", 1)), CheckOutcome::Allow);
    assert_eq!(denied(w.check(&1, &check(Access::Publish, "devices/d2/temp", 1))), ReasonCode::NotAuthorized);
    assert_eq!(w.check(&1, &check(Access::Subscribe, "devices/d1/#", 1)), CheckOutcome::Allow);
    assert_eq!(denied(w.check(&1, &check(Access::Subscribe, "devices/#", 1))), ReasonCode::NotAuthorized);
    assert_eq!(w.check(&1, &check(Access::Unsubscribe, "anything/#", 0)), CheckOutcome::Allow);
    assert_eq!(w.check(&1, &check(Access::Delivery, "devices/d1/cmd", 0)), CheckOutcome::Allow);
    assert_eq!(denied(w.check(&1, &check(Access::Delivery, "devices/d2/cmd", 0))), ReasonCode::NotAuthorized);

    // hub-rules' `retained = "override"`: stored and delivered without the flag.
    let retained = Check { retain: true, ..check(Access::Publish, "devices/d1/state", 1) };
    assert_eq!(w.check(&1, &retained), CheckOutcome::AllowRetainCleared);
    // A broker that can apply rewrites (VerneMQ's modifiers) gets the rewrite itself; one without
    // a downgrade to apply is answered as by `check`.
    assert_eq!(w.check_lowering(&1, &retained), Adjusted::Lowered { qos: 1, retain: false });
    let plain = check(Access::Publish, "devices/d1/state", 1);
    assert_eq!(w.check_lowering(&1, &plain), Adjusted::As(CheckOutcome::Allow));
    let who = w.admitted_as(&1).expect("admitted");
    assert_eq!((who.tenant, who.device_id, who.expires_at_ms), ("acme", "d1", None));
    assert!(w.admitted_as(&2).is_none());

    let not_utf8 = Check { topic: b"devices/d1/\xff", ..check(Access::Publish, "", 1) };
    assert_eq!(denied(w.check(&1, &not_utf8)), ReasonCode::TopicNameInvalid);

    // A key the gateway never authenticated is refused.
    assert_eq!(denied(w.check(&2, &check(Access::Publish, "devices/d1/temp", 0))), ReasonCode::NotAuthorized);

    w.disconnect(&1);
    // The broker checks the Last Will after the disconnect: the clean session ends at the next tick.
    assert_eq!(w.check(&1, &check(Access::Publish, "devices/d1/will", 1)), CheckOutcome::Allow);
    w.tick(Instant::now());
    assert_eq!(w.session_count(), 0);
    assert_eq!(denied(w.check(&1, &check(Access::Publish, "devices/d1/temp", 0))), ReasonCode::NotAuthorized);

    let seen = outcomes(&events);
    let first = |o: &str| seen.iter().position(|(_, x)| *x == o).unwrap_or_else(|| panic!("no {o} in {seen:?}"));
    assert!(first("loaded") < first("accept") && first("accept") < first("disconnect"), "{seen:?}");
    assert!(seen.iter().filter(|(_, o)| *o == "deny").count() >= 3, "denials are events: {seen:?}");
    assert!(seen.iter().all(|(t, _)| t == "acme"), "{seen:?}");
}

#[test]
fn a_policy_rejection_is_the_outcome_with_its_denial() {
    let dir = Dir::new("reject");
    dir.deploy("acme", &hub_policy("[identity]\nauthentication = \"none\"\n[hub]\nstate = \"not-ready\"\n", &[]));
    let (gateway, _) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    match w.connect(1, &Hello::new("d1")) {
        ConnectOutcome::Reject(d) => {
            assert_eq!(d.reason, ReasonCode::ServerUnavailable);
            assert_eq!(d.message, "hub is not ready");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.session_count(), 0);
}

#[test]
fn a_tenant_without_policy_fails_closed_or_defers_when_open() {
    let dir = Dir::new("failmode");
    let (closed, events) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(closed.clone());
    match w.connect(1, &Hello::new("d1")) {
        ConnectOutcome::Reject(d) => {
            assert_eq!(d.reason, ReasonCode::ServerUnavailable);
            assert_eq!(d.message, "no policy is loaded for tenant acme");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcomes(&events), [("acme".to_owned(), "reject")]);

    let (open, events) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |c| c.fail_mode = FailMode::Open);
    let mut w: Worker<u32> = Worker::new(open.clone());
    assert_eq!(w.connect(1, &Hello::new("d1")), ConnectOutcome::Defer);
    // The broker's own rules decide every check of that client.
    assert_eq!(w.check(&1, &check(Access::Publish, "any/topic", 1)), CheckOutcome::Defer);
    assert_eq!(w.check(&1, &check(Access::Subscribe, "#", 1)), CheckOutcome::Defer);
    assert_eq!(outcomes(&events), [("acme".to_owned(), "defer")]);
}

#[test]
fn the_tenant_prefix_is_required_and_removed_before_the_policy_sees_the_topic() {
    let dir = Dir::new("prefix");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    let (gateway, events) =
        start(&dir.0, TenantSource::fixed("acme").unwrap(), |c| c.tenant_prefix = Some("tenants/{tenant}/".into()));
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    accepted(w.connect(1, &Hello::new("d1")));
    events.take();
    assert_eq!(w.check(&1, &check(Access::Publish, "tenants/acme/devices/d1/t", 0)), CheckOutcome::Allow);
    assert_eq!(w.check(&1, &check(Access::Subscribe, "tenants/acme/devices/d1/#", 0)), CheckOutcome::Allow);
    // Without the prefix the policy's own rule would allow it: the prefix is what refuses.
    assert_eq!(denied(w.check(&1, &check(Access::Publish, "devices/d1/t", 0))), ReasonCode::NotAuthorized);
    assert_eq!(denied(w.check(&1, &check(Access::Subscribe, "tenants/globex/#", 0))), ReasonCode::NotAuthorized);
    let seen = events.take();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].message.contains("outside the tenant's topic space tenants/acme/"), "{}", seen[0].message);
    // Another tenant's traffic is skipped quietly.
    assert_eq!(
        denied(w.check(&1, &check(Access::Delivery, "tenants/globex/devices/d1/t", 0))),
        ReasonCode::NotAuthorized
    );
    assert!(events.take().is_empty());
}

#[test]
fn tenants_come_from_client_id_or_user_name_patterns_or_from_the_broker() {
    let dir = Dir::new("patterns");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    dir.deploy("globex", &hub_policy(RULES, &[]));
    let (gateway, events) = start(&dir.0, TenantSource::parse("client-id:{tenant}-*").unwrap(), |_| {});
    assert_eq!(gateway.loaded_tenants(), ["acme", "globex"]);
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    accepted(w.connect(1, &Hello::new("acme-d1")));
    accepted(w.connect(2, &Hello::new("globex-d1")));
    events.take();
    // Same device topic, two tenants: each session answers with its own tenant.
    assert_eq!(w.check(&1, &check(Access::Publish, "devices/acme-d1/t", 0)), CheckOutcome::Allow);
    w.check(&2, &check(Access::Publish, "devices/acme-d1/t", 0));
    assert_eq!(outcomes(&events), [("globex".to_owned(), "deny")]);

    match w.connect(3, &Hello::new("nodash")) {
        ConnectOutcome::Reject(d) => assert_eq!(d.message, "client id does not match the tenant pattern {tenant}-*"),
        other => panic!("{other:?}"),
    }
    assert_eq!(outcomes(&events), [("*".to_owned(), "reject")]);
    match w.connect(3, &Hello::new("initech-d1")) {
        ConnectOutcome::Reject(d) => assert_eq!(d.reason, ReasonCode::ServerUnavailable),
        other => panic!("{other:?}"),
    }
    assert_eq!(outcomes(&events), [("initech".to_owned(), "reject")]);

    // What the broker knows wins over the pattern, and is checked as a name.
    accepted(w.connect(4, &Hello { tenant: Some("globex"), ..Hello::new("acme-d2") }));
    w.check(&4, &check(Access::Publish, "devices/acme-d2/t", 0));
    assert!(outcomes(&events).iter().all(|(t, _)| t == "globex"));
    assert!(matches!(w.connect(5, &Hello { tenant: Some("../x"), ..Hello::new("d") }), ConnectOutcome::Reject(_)));

    let (gateway, _) = start(&dir.0, TenantSource::parse("username:{tenant}/*").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    accepted(w.connect(1, &Hello { username: Some("globex/x"), ..Hello::new("globex-d1") }));
    assert!(matches!(w.connect(2, &Hello::new("globex-d1")), ConnectOutcome::Reject(_)), "no user name");
}

struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn client_der(&self, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        params.signed_by(&key, &issuer).unwrap().der().to_vec()
    }
}

#[test]
fn a_certificate_belongs_to_the_tenant_whose_ca_issued_it() {
    let dir = Dir::new("certs");
    let (acme_ca, globex_ca, stranger) = (Ca::new("acme CA"), Ca::new("globex CA"), Ca::new("stranger"));
    // Each tenant's policy embeds its own CA; the rules name it (`file` is read by `mqtt-policy build`).
    let policy = |name: &str, ca: &Ca| {
        let rules = format!(
            "{}\n[[ca]]\nname = \"{name}\"\nfile = \"{name}.pem\"\n",
            RULES.replace("authentication = \"none\"", "from = \"certificate\"")
        );
        hub_policy(&rules, &[EmbeddedCa { name: name.into(), pem: ca.pem.clone() }])
    };
    dir.deploy("acme", &policy("acme-ca", &acme_ca));
    dir.deploy("globex", &policy("globex-ca", &globex_ca));
    // Without the operator's CA map, a policy would decide which devices are its tenant's.
    let refused = Gateway::with_sink(Config::new(&dir.0, TenantSource::Certificate), None).err().expect("refused");
    assert!(refused.to_string().contains("operator's map of tenant CAs"), "{refused}");
    let (gateway, events) = start(&dir.0, TenantSource::Certificate, |c| {
        c.tenant_cas.add_pem("acme", &acme_ca.pem, Path::new("acme.pem")).unwrap();
        c.tenant_cas.add_pem("globex", &globex_ca.pem, Path::new("globex.pem")).unwrap();
    });
    assert_eq!(gateway.loaded_tenants(), ["acme", "globex"], "{:#?}", events.take());
    events.take();
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    // The client id names the device the certificate is for (hub-rules binds the two).
    let hello = |der: Vec<u8>| Hello { certificate: Some(der), ..Hello::new("sensor-9") };

    assert_eq!(accepted(w.connect(1, &hello(globex_ca.client_der("sensor-9")))).as_deref(), Some("sensor-9"));
    assert_eq!(outcomes(&events), [("globex".to_owned(), "accept")]);
    match w.connect(2, &hello(stranger.client_der("sensor-9"))) {
        ConnectOutcome::Reject(d) => assert_eq!(d.message, "client certificate was not issued by any tenant's CA"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(w.connect(3, &Hello::new("no-cert")), ConnectOutcome::Reject(_)));
}

#[test]
fn a_policy_cannot_capture_another_tenants_devices_by_embedding_its_ca() {
    let dir = Dir::new("capture");
    let (acme_ca, evil_ca) = (Ca::new("acme CA"), Ca::new("evil CA"));
    let policy = |cas: &[(&str, &Ca)]| {
        let mut rules = RULES.replace("authentication = \"none\"", "from = \"certificate\"");
        for (name, _) in cas {
            rules.push_str(&format!("\n[[ca]]\nname = \"{name}\"\nfile = \"{name}.pem\"\n"));
        }
        let embedded: Vec<EmbeddedCa> =
            cas.iter().map(|(name, ca)| EmbeddedCa { name: (*name).into(), pem: ca.pem.clone() }).collect();
        hub_policy(&rules, &embedded)
    };
    dir.deploy("acme", &policy(&[("acme-ca", &acme_ca)]));
    // The evil tenant's policy also trusts acme's (public) CA certificate, and sorts first.
    dir.deploy("aaa-evil", &policy(&[("evil-ca", &evil_ca), ("stolen", &acme_ca)]));
    let (gateway, events) = start(&dir.0, TenantSource::Certificate, |c| {
        c.tenant_cas.add_pem("acme", &acme_ca.pem, Path::new("acme.pem")).unwrap();
        c.tenant_cas.add_pem("aaa-evil", &evil_ca.pem, Path::new("evil.pem")).unwrap();
    });
    assert_eq!(gateway.loaded_tenants(), ["acme"], "the capturing policy is not loaded");
    let refusal = events.take().into_iter().find(|e| e.tenant == "aaa-evil").expect("an event for the refused policy");
    assert_eq!(refusal.outcome, "load-failed");
    assert!(refusal.message.contains("embeds CA `stolen`"), "{}", refusal.message);
    assert!(refusal.message.contains("assigned to tenant acme"), "{}", refusal.message);

    let mut w: Worker<u32> = Worker::new(gateway.clone());
    let hello = |der: Vec<u8>| Hello { certificate: Some(der), ..Hello::new("sensor-1") };
    assert_eq!(accepted(w.connect(1, &hello(acme_ca.client_der("sensor-1")))).as_deref(), Some("sensor-1"));
    assert_eq!(outcomes(&events), [("acme".to_owned(), "accept")], "acme's device stays acme's");
    // The evil tenant's own devices find their tenant, which has no policy: refused, fail closed.
    assert!(matches!(w.connect(2, &hello(evil_ca.client_der("sensor-1"))), ConnectOutcome::Reject(_)));
}

#[test]
fn a_reload_reaches_every_worker_on_its_own_thread() {
    let dir = Dir::new("reload");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    let (gateway, _) =
        start(&dir.0, TenantSource::fixed("acme").unwrap(), |c| c.reload_poll = Duration::from_millis(20));
    let b = "devices/d1/b";
    let ready = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (gateway, ready) = (&gateway, &ready);
                s.spawn(move || {
                    let mut w: Worker<u32> = Worker::new(gateway.clone());
                    accepted(w.connect(i, &Hello::new("d1")));
                    assert_eq!(denied(w.check(&i, &check(Access::Subscribe, "other/#", 0))), ReasonCode::NotAuthorized);
                    ready.wait();
                    // The new version admits other/#; each worker swaps it in by itself.
                    let started = Instant::now();
                    while w.check(&i, &check(Access::Subscribe, "other/#", 0)) != CheckOutcome::Allow {
                        assert!(started.elapsed() < Duration::from_secs(5), "worker {i} never saw the reload");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    // The connected session stayed and is answered by the new rules.
                    assert_eq!(w.check(&i, &check(Access::Publish, b, 0)), CheckOutcome::Allow);
                    assert_eq!(w.session_count(), 1);
                })
            })
            .collect();
        ready.wait();
        let wider =
            format!("{RULES}\n[[rule]]\neffect = \"allow\"\nactions = [\"subscribe\"]\ntopics = [\"other/#\"]\n");
        dir.deploy("acme", &hub_policy(&wider, &[]));
        for t in threads {
            t.join().unwrap();
        }
    });
    // A worker made after the reload starts with the new version.
    let mut late: Worker<u32> = Worker::new(gateway.clone());
    accepted(late.connect(9, &Hello::new("d1")));
    assert_eq!(late.check(&9, &check(Access::Subscribe, "other/#", 0)), CheckOutcome::Allow);
}

#[test]
fn a_broken_file_keeps_the_last_good_policy_with_one_event() {
    let dir = Dir::new("broken");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    let (gateway, events) =
        start(&dir.0, TenantSource::fixed("acme").unwrap(), |c| c.reload_poll = Duration::from_millis(20));
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    accepted(w.connect(1, &Hello::new("d1")));
    events.take();
    dir.deploy("acme", b"not wasm");
    let started = Instant::now();
    while !outcomes(&events).iter().any(|(_, o)| *o == "load-failed") {
        assert!(started.elapsed() < Duration::from_secs(5), "no load-failed event");
        std::thread::sleep(Duration::from_millis(10));
    }
    w.tick(Instant::now());
    assert_eq!(w.check(&1, &check(Access::Publish, "devices/d1/t", 0)), CheckOutcome::Allow);
}

#[test]
fn events_reach_the_monitor_topic_of_the_tenants_that_asked() {
    let dir = Dir::new("monitor");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    dir.deploy("globex", &hub_policy(RULES, &[]));
    let (gateway, _) = start(&dir.0, TenantSource::parse("client-id:{tenant}-*").unwrap(), |c| {
        c.monitor = Some(Monitor::new("mon/{tenant}", vec!["acme".into()]).unwrap())
    });
    gateway.drain_monitor();
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    accepted(w.connect(1, &Hello::new("acme-d1")));
    accepted(w.connect(2, &Hello::new("globex-d1")));
    let queued = gateway.drain_monitor();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].topic, "mon/acme");
    assert!(queued[0].payload.contains("\"accept\""), "{}", queued[0].payload);
    assert!(gateway.drain_monitor().is_empty());
}

/// Devices and one application, identity from the user name (so a client id can be presented
/// by anyone, and only the gateway stands between it and another identity's session).
const BY_USERNAME: &str = r#"
[identity]
from = "username"
authentication = "none"

[[device]]
id = "s1"
[[device]]
id = "s2"

[[rule]]
effect = "allow"
actions = ["publish", "subscribe"]
topics = ["devices/${device.id}/#"]
"#;

fn persistent<'a>(client_id: &'a str, user: &'a str) -> Hello<'a> {
    Hello { username: Some(user), clean_start: false, ..Hello::new(client_id) }
}

#[test]
fn a_persistent_session_stays_offline_for_its_queue_and_only_its_identity_takes_it_over() {
    let dir = Dir::new("sessions");
    dir.deploy("acme", &hub_policy(BY_USERNAME, &[]));
    let (gateway, events) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    accepted(w.connect(1, &persistent("station-1", "s1")));
    assert_eq!(gateway.tenant("acme").connection_count(), 1);
    w.disconnect(&1);
    w.tick(Instant::now());
    assert_eq!((w.session_count(), w.offline_count()), (1, 1), "kept offline");
    assert_eq!(gateway.tenant("acme").connection_count(), 0, "an offline session is not a connection");
    // A message queued for the offline session is checked against it.
    assert_eq!(w.check(&1, &check(Access::Delivery, "devices/s1/cmd", 1)), CheckOutcome::Allow);
    assert_eq!(denied(w.check(&1, &check(Access::Delivery, "devices/s2/cmd", 1))), ReasonCode::NotAuthorized);

    // Another identity presenting the client id is refused before the broker hands it the session.
    match w.connect(2, &persistent("station-1", "s2")) {
        ConnectOutcome::Reject(d) => {
            assert_eq!(d.reason, ReasonCode::ClientIdentifierNotValid);
            assert!(d.message.contains("another device (s1)"), "{}", d.message);
        }
        other => panic!("takeover admitted: {other:?}"),
    }
    assert_eq!(w.session_count(), 1);
    // The owner comes back on a new connection; the old session ends once the broker moved it.
    accepted(w.connect(3, &persistent("station-1", "s1")));
    assert_eq!(w.check(&3, &check(Access::Delivery, "devices/s1/cmd", 1)), CheckOutcome::Allow);
    w.tick(Instant::now());
    assert_eq!((w.session_count(), w.offline_count()), (1, 0));
    assert_eq!(gateway.tenant("acme").connection_count(), 1);

    // Connected, then taken over by itself from a new connection: a `takeover` event.
    accepted(w.connect(4, &persistent("station-1", "s1")));
    let seen = outcomes(&events);
    assert!(seen.iter().any(|(_, o)| *o == "takeover"), "{seen:?}");
    assert!(seen.iter().any(|(_, o)| *o == "reject"), "{seen:?}");
}

/// What Mosquitto kept of a session it restored from its persistence file after a restart.
fn restored<'a>(client_id: &'a str, user: &'a str) -> Restored<'a> {
    Restored { client_id, username: Some(user), protocol: Protocol::Mqtt311, tenant: None }
}

#[test]
fn a_session_the_broker_restored_is_re_established_offline_and_owns_its_client_id() {
    let dir = Dir::new("restore");
    dir.deploy("acme", &hub_policy(BY_USERNAME, &[]));
    let (gateway, events) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    // The broker restarted: it holds the session of `station-1` (user name s1, set at its
    // connect before the restart); the worker has never seen it.
    assert!(!w.knows(&1));
    assert!(w.restore(1, &restored("station-1", "s1")));
    assert!(w.knows(&1));
    assert_eq!((w.session_count(), w.offline_count()), (1, 1));
    assert_eq!(gateway.tenant("acme").connection_count(), 0, "a restored session is not a connection");
    assert_eq!(w.check(&1, &check(Access::Delivery, "devices/s1/cmd", 1)), CheckOutcome::Allow);
    assert_eq!(denied(w.check(&1, &check(Access::Delivery, "devices/s2/cmd", 1))), ReasonCode::NotAuthorized);
    // Nobody is connected on it.
    assert_eq!(denied(w.check(&1, &check(Access::Publish, "devices/s1/t", 1))), ReasonCode::NotAuthorized);
    let restore = events.take().into_iter().find(|e| e.outcome == "restore").expect("a restore event");
    assert_eq!((restore.client_id.as_deref(), restore.device_id.as_deref()), (Some("station-1"), Some("s1")));

    // A known key is never restored over, whatever the adapter says.
    assert!(w.restore(1, &restored("station-1", "s2")));
    assert_eq!(w.check(&1, &check(Access::Delivery, "devices/s1/cmd", 1)), CheckOutcome::Allow);
    // A connected client let in without authentication stays unknown and denied.
    assert_eq!(denied(w.check(&9, &check(Access::Delivery, "devices/s1/cmd", 1))), ReasonCode::NotAuthorized);

    // Another identity presenting the client id is refused; the owner proves itself and takes it over.
    match w.connect(2, &persistent("station-1", "s2")) {
        ConnectOutcome::Reject(d) => assert_eq!(d.reason, ReasonCode::ClientIdentifierNotValid),
        other => panic!("takeover of a restored session admitted: {other:?}"),
    }
    accepted(w.connect(3, &persistent("station-1", "s1")));
    assert_eq!(gateway.tenant("acme").connection_count(), 1);
    w.disconnect(&1); // Mosquitto drops the restored object once it moved its queue.
    w.tick(Instant::now());
    assert_eq!((w.session_count(), w.offline_count()), (1, 0));
    assert_eq!(w.check(&3, &check(Access::Publish, "devices/s1/t", 1)), CheckOutcome::Allow, "connected again");
}

#[test]
fn a_restore_the_rules_or_the_tenancy_refuse_denies_its_checks_with_one_event() {
    let dir = Dir::new("restore-refused");
    dir.deploy("acme", &hub_policy(BY_USERNAME, &[]));
    let (gateway, events) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    // Not in the registry (any more): refused by the policy.
    assert!(!w.restore(1, &restored("station-9", "s9")));
    assert!(w.knows(&1), "the refusal is remembered, not retried on every message");
    for _ in 0..3 {
        assert_eq!(denied(w.check(&1, &check(Access::Delivery, "devices/s9/cmd", 1))), ReasonCode::NotAuthorized);
    }
    let refused: Vec<Event> = events.take().into_iter().filter(|e| e.outcome == "restore-refused").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    // The broker reuses the object for a new connection: that one is authenticated as usual.
    accepted(w.connect(1, &persistent("station-2", "s2")));
    assert_eq!(w.check(&1, &check(Access::Delivery, "devices/s2/cmd", 1)), CheckOutcome::Allow);

    // A certificate is not kept by the broker: certificate tenancy cannot place a restored session.
    let ca = Ca::new("acme CA");
    let (gateway, events) = start(&dir.0, TenantSource::parse("certificate").unwrap(), |c| {
        c.tenant_cas.add_pem("acme", &ca.pem, Path::new("acme.pem")).unwrap();
    });
    let mut w: Worker<u32> = Worker::new(gateway);
    assert!(!w.restore(1, &restored("station-1", "s1")));
    let e = events.take().into_iter().find(|e| e.outcome == "restore-refused").expect("restore-refused");
    assert!(e.message.contains("session restored from the broker's persistence not re-established"), "{}", e.message);
    assert!(e.message.contains("certificate"), "{}", e.message);
}

/// Two listeners of one broker process, each with its gateway and tenant (Mosquitto's
/// `per_listener_settings true`), sharing the process's client ids.
fn two_listeners(name: &str) -> (Dir, Worker<u32>, Worker<u32>, ClientIds) {
    let dir = Dir::new(name);
    dir.deploy("open", &hub_policy(RULES, &[]));
    dir.deploy("victim", &hub_policy(RULES, &[]));
    let (open, _) = start(&dir.0, TenantSource::fixed("open").unwrap(), |_| {});
    let (victim, _) = start(&dir.0, TenantSource::fixed("victim").unwrap(), |_| {});
    let ids = ClientIds::new();
    (dir, Worker::sharing(open, ids.clone()), Worker::sharing(victim, ids.clone()), ids)
}

#[test]
fn a_client_id_held_on_one_listener_cannot_be_taken_over_from_another() {
    let (_dir, mut open, mut victim, ids) = two_listeners("listeners");
    let persistent = Hello { clean_start: false, ..Hello::new("thermo-1") };
    accepted(victim.connect(1, &persistent));
    victim.disconnect(&1);
    // Offline: its queue is checked against it, and its client id is still its own.
    match open.connect(7, &persistent) {
        ConnectOutcome::Reject(d) => {
            assert_eq!(d.reason, ReasonCode::ClientIdentifierNotValid, "{d:?}");
            assert!(d.message.contains("another tenant"), "names no other tenant's device: {d:?}");
        }
        other => panic!("another tenant's client took over the session: {other:?}"),
    }
    assert_eq!(victim.check(&1, &check(Access::Delivery, "devices/thermo-1/cmd", 1)), CheckOutcome::Allow);
    // Back on its own listener, the device takes its session over; once it ends, the id is free.
    accepted(victim.connect(2, &persistent));
    assert_eq!(ids.len(), 1);
    let clean = Hello { protocol: Protocol::Mqtt311, ..Hello::new("thermo-1") };
    accepted(victim.connect(3, &clean));
    victim.disconnect(&3);
    victim.tick(Instant::now());
    accepted(open.connect(8, &clean));
    // Workers made alone do not share: each has its own registry.
    let (_d2, mut a, _, _) = two_listeners("alone");
    let mut b: Worker<u32> = Worker::new(a.gateway().clone());
    accepted(a.connect(1, &persistent));
    accepted(b.connect(1, &Hello { clean_start: false, ..Hello::new("thermo-1") }));
}

#[test]
fn a_check_from_another_client_on_a_sessions_key_is_not_that_sessions() {
    let dir = Dir::new("stale");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    let (gateway, _) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway);
    accepted(w.connect(1, &Hello { clean_start: false, ..Hello::new("ctl") }));
    let publish = |client_id: &'static str, username: Option<&'static str>| Check {
        client: Some(ClientFacts { client_id: client_id.as_bytes(), username: username.map(str::as_bytes) }),
        ..check(Access::Publish, "devices/ctl/cmd", 1)
    };
    assert_eq!(w.check(&1, &publish("ctl", Some("ctl"))), CheckOutcome::Allow, "the session's own client");
    w.disconnect(&1);
    // The broker freed the object and let a client in on it without asking the gateway.
    assert_eq!(denied(w.check(&1, &publish("nobody", Some("nobody")))), ReasonCode::NotAuthorized);
    assert_eq!(w.session_count(), 0, "the session that held the key is over");

    accepted(w.connect(2, &Hello { clean_start: false, ..Hello::new("ctl") }));
    w.disconnect(&2);
    // Same client id, but the broker holds another user name (a certificate's): not the session.
    assert_eq!(denied(w.check(&2, &publish("ctl", Some("CN=ctl")))), ReasonCode::NotAuthorized);
    accepted(w.connect(3, &Hello { clean_start: false, ..Hello::new("ctl") }));
    w.disconnect(&3);
    // An away session subscribes to nothing: a connected client took its key.
    let subscribe = Check {
        client: Some(ClientFacts { client_id: b"ctl", username: Some(b"ctl") }),
        ..check(Access::Subscribe, "devices/ctl/#", 1)
    };
    assert_eq!(denied(w.check(&3, &subscribe)), ReasonCode::NotAuthorized);
    assert_eq!(w.session_count(), 0);
    // Compared as bytes: what is not UTF-8 is no session's client id or user name.
    for (n, (client_id, username)) in
        [(&b"ctl\xff"[..], Some(&b"ctl"[..])), (&b"ctl"[..], Some(&b"ctl\xff"[..]))].into_iter().enumerate()
    {
        let key = 4 + n as u32;
        accepted(w.connect(key, &Hello { clean_start: false, ..Hello::new("ctl") }));
        let raw =
            Check { client: Some(ClientFacts { client_id, username }), ..check(Access::Publish, "devices/ctl/cmd", 1) };
        assert_eq!(denied(w.check(&key, &raw)), ReasonCode::NotAuthorized);
        assert_eq!(w.session_count(), 0, "the session that held key {key} is over");
    }
    // The same after the session's own allow was cached (the hot path answers from the cache
    // only for the session's own client): every way of differing, lengths around the 4-, 8-
    // and 16-byte compares included.
    let others: [(&[u8], Option<&[u8]>); 8] = [
        (b"ctm", Some(b"ctl")),
        (b"ctl", Some(b"ctm")),
        (b"ctl", None),
        (b"ctl", Some(b"")),
        (b"ctl ", Some(b"ctl")),
        (b"ct", Some(b"ctl")),
        (b"ctl", Some(b"ctl-0123456789abcdef")),
        (b"", Some(b"ctl")),
    ];
    for (n, (client_id, username)) in others.into_iter().enumerate() {
        let key = 10 + n as u32;
        accepted(w.connect(key, &Hello { clean_start: false, ..Hello::new("ctl") }));
        assert_eq!(w.check(&key, &publish("ctl", Some("ctl"))), CheckOutcome::Allow);
        assert_eq!(w.check(&key, &publish("ctl", Some("ctl"))), CheckOutcome::Allow, "reused");
        let other =
            Check { client: Some(ClientFacts { client_id, username }), ..check(Access::Publish, "devices/ctl/cmd", 1) };
        assert_eq!(denied(w.check(&key, &other)), ReasonCode::NotAuthorized, "{client_id:?} {username:?}");
        assert_eq!(w.session_count(), 0, "the session that held key {key} is over");
    }
}

#[test]
fn an_mqtt5_session_outlives_its_connection_whatever_its_clean_start() {
    let dir = Dir::new("v5");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    let (gateway, _) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway);
    // Clean start 1 with a session expiry interval: the broker keeps the session, which
    // plugins cannot see, so the gateway keeps it too.
    accepted(w.connect(1, &Hello::new("d1")));
    w.disconnect(&1);
    w.tick(Instant::now());
    assert_eq!(w.offline_count(), 1);
    assert_eq!(w.check(&1, &check(Access::Delivery, "devices/d1/cmd", 1)), CheckOutcome::Allow, "queued for it");
    assert_eq!(w.check(&1, &check(Access::Publish, "devices/d1/will", 1)), CheckOutcome::Allow, "its delayed will");
    // MQTT 3.1.1 clean session: over with the connection.
    accepted(w.connect(2, &Hello { protocol: Protocol::Mqtt311, ..Hello::new("d2") }));
    w.disconnect(&2);
    w.tick(Instant::now());
    assert_eq!(denied(w.check(&2, &check(Access::Delivery, "devices/d2/cmd", 1))), ReasonCode::NotAuthorized);
}

#[test]
fn a_retained_last_will_is_refused_where_the_rules_override_retained() {
    let dir = Dir::new("will");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    let (gateway, events) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |_| {});
    let mut w: Worker<u32> = Worker::new(gateway);
    accepted(w.connect(1, &Hello::new("d1")));
    let retained_will = Check { retain: true, ..check(Access::Publish, "devices/d1/status", 1) };
    assert_eq!(w.check(&1, &retained_will), CheckOutcome::AllowRetainCleared, "connected: the flag is cleared");
    w.disconnect(&1);
    // The broker sends a will without the message hook that would clear the flag.
    assert_eq!(denied(w.check(&1, &retained_will)), ReasonCode::RetainNotSupported);
    assert_eq!(w.check(&1, &check(Access::Publish, "devices/d1/status", 1)), CheckOutcome::Allow, "a plain will");
    assert!(events.take().iter().any(|e| e.outcome == "deny" && e.message.contains("retained Last Will refused")));
}

/// Devices `s1` (type sensor) and `s2`, an application `dash`, under a tenant prefix; IBM-style
/// monitoring on.
const MONITORED: &str = r#"
[monitoring]

[identity]
authentication = "none"

[[device]]
id = "s1"
type = "sensor"

[[device]]
id = "s2"
type = "sensor"
state = "disabled"

[[rule]]
effect = "allow"
actions = ["publish"]
topics = ["devices/${device.id}/#"]
"#;

fn parse(m: &mqtt_policy_gateway::events::MonitorMessage) -> serde_json::Value {
    serde_json::from_str(&m.payload).unwrap()
}

#[test]
fn monitoring_messages_name_the_closing_the_gateway_knows_best() {
    use mqtt_policy_gateway::BrokerClose;
    let dir = Dir::new("monitoring");
    dir.deploy("acme", &hub_policy(MONITORED, &[]));
    let (gateway, _) = start(&dir.0, TenantSource::fixed("acme").unwrap(), |c| {
        c.monitoring = true;
        c.tenant_prefix = Some("t/{tenant}/".into());
    });
    let mut w: Worker<u32> = Worker::new(gateway.clone());
    let hello = |port| Hello { peer: "10.0.0.7", port, username: Some("u"), ..Hello::new("s1") };
    accepted(w.connect(1, &hello(Some(1883))));
    let q = gateway.drain_monitor();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].topic.as_str(), q[0].retain), ("t/acme/iot-2/type/sensor/id/s1/mon", true));
    let c = parse(&q[0]);
    assert_eq!(
        (c["ClientAddr"].as_str(), c["Port"].as_u64(), c["User"].as_str()),
        (Some("10.0.0.7"), Some(1883), Some("u"))
    );
    assert_eq!(c["Protocol"], "mqtt5");

    // A client's own monitoring message is refused before the policy is asked.
    let forged = Check::new(Access::Publish, "t/acme/iot-2/type/sensor/id/s9/mon", 0);
    assert_eq!(denied(w.check(&1, &forged)), ReasonCode::NotAuthorized);
    let mut p = Check::new(Access::Publish, "t/acme/devices/s1/t", 0);
    p.payload_size = 7;
    assert_eq!(w.check(&1, &p), CheckOutcome::Allow);
    let mut d = Check::new(Access::Delivery, "t/acme/devices/s1/t", 0);
    d.payload_size = 3;
    w.check(&1, &d);
    // The broker says the socket closed; counted: two publishes (one refused), no delivery
    // allowed (no delivery rule).
    w.closed(&1, BrokerClose::ClientClosed);
    let q = gateway.drain_monitor();
    let gone = parse(&q[0]);
    assert_eq!((gone["Action"].as_str(), gone["CloseCode"].as_u64()), (Some("Disconnect"), Some(91)));
    assert_eq!((gone["ReadMsg"].as_u64(), gone["ReadBytes"].as_u64()), (Some(2), Some(7)));
    w.tick(Instant::now());

    // A takeover: the old Disconnect (288) before the new Connect; the broker's later report of
    // the old connection adds nothing.
    accepted(w.connect(2, &hello(None)));
    accepted(w.connect(3, &hello(None)));
    let q = gateway.drain_monitor();
    let actions: Vec<_> = q.iter().map(|m| parse(m)["Action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, ["Connect", "Disconnect", "Connect"]);
    assert_eq!(parse(&q[1])["CloseCode"], 288);
    assert_eq!(parse(&q[2])["Port"], 0, "the broker did not say");
    w.closed(&2, BrokerClose::Takeover);
    assert!(gateway.drain_monitor().is_empty());

    // A refused device: FailedConnect, not retained.
    assert!(matches!(w.connect(4, &Hello::new("s2")), ConnectOutcome::Reject(_)));
    let q = gateway.drain_monitor();
    assert!(!q[0].retain);
    let f = parse(&q[0]);
    assert_eq!((f["Action"].as_str(), f["CloseCode"].as_u64()), (Some("FailedConnect"), Some(180)));
    assert_eq!(f["Reason"], "The operation is not authorized: device is not enabled");
}

#[test]
fn a_candidate_policy_is_never_a_tenant_a_client_can_name() {
    // `acme.next.wasm` is acme's candidate (monitor mode): a client id naming `acme.next` as
    // its tenant is refused like any tenant without a policy, never answered by the candidate.
    let dir = Dir::new("candidate-tenant");
    dir.deploy("acme", &hub_policy(RULES, &[]));
    dir.deploy("acme.next", &hub_policy(RULES, &[]));
    let (gateway, events) = start(&dir.0, TenantSource::parse("client-id:{tenant}-*").unwrap(), |_| {});
    assert_eq!(gateway.loaded_tenants(), ["acme"], "the candidate is no tenant of its own");
    let mut w: Worker<u32> = Worker::new(gateway);
    assert!(matches!(w.connect(1, &Hello::new("acme.next-d1")), ConnectOutcome::Reject(_)));
    accepted(w.connect(2, &Hello::new("acme-d1")));
    // Both policies agree here: nothing is told.
    let _ = w.check(&2, &check(Access::Publish, "devices/d1/t", 0));
    assert!(!events.take().iter().any(|e| e.outcome.starts_with("would-")));
}
