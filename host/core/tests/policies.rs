//! The host against real wasm policies built from this repository's sources.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mqtt_policy_host::events::{Action, MemorySink};
use mqtt_policy_host::*;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(Limits::default()).expect("engine"))
}

fn load(path: &str, settings: Option<&str>) -> Result<PolicyModule> {
    engine().load_file(path.as_ref(), settings)
}

fn tenant() -> (Tenant, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new());
    (Tenant::with_events("acme", sink.clone()), sink)
}

fn accept(policy: &mut Policy, client_id: &str) -> SessionId {
    match policy.authenticate(&Connect::new("acme", client_id)) {
        ConnectDecision::Accept(id, info) => {
            assert_eq!(info.device_id, client_id);
            id
        }
        other => panic!("expected accept, got {other:?}"),
    }
}

fn publish(topic: &str, payload_size: u32) -> Publish<'_> {
    Publish { topic, qos: 1, retain: false, payload_size }
}

fn denial<D: Verdict + std::fmt::Debug>(d: &D) -> &Denial {
    d.denial().unwrap_or_else(|| panic!("expected a denial, got {d:?}"))
}

#[test]
fn hello_policy_decides_over_the_host_api() {
    let module = load(guest_artifacts::HELLO, Some("max-payload = 100")).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant);
    let s = accept(&mut policy, "sensor-1");

    assert_eq!(policy.authorize_publish(s, &publish("devices/sensor-1/temp", 100)), PublishDecision::Allow);
    assert!(events.take().is_empty(), "allowing emits nothing");

    let d = policy.authorize_publish(s, &publish("devices/sensor-2/temp", 1));
    assert_eq!(denial(&d).reason, ReasonCode::NotAuthorized);
    assert_eq!(denial(&d).message, "unauthorized topic devices/sensor-2/temp");
    let d = policy.authorize_publish(s, &publish("devices/sensor-1/temp", 101));
    assert_eq!(denial(&d).reason, ReasonCode::PacketTooLarge);

    let sub = |filter| Subscribe { filter, qos: 2 };
    assert_eq!(policy.authorize_subscribe(s, &sub("devices/sensor-1/commands/#")), SubscribeDecision::Grant(1));
    assert_eq!(denial(&policy.authorize_subscribe(s, &sub("#"))).reason, ReasonCode::NotAuthorized);
    let delivery = Delivery { topic: "devices/sensor-1/commands/reboot", qos: 0, retain: false, payload_size: 0 };
    assert_eq!(policy.authorize_delivery(s, &delivery), DeliveryDecision::Allow);

    let events = events.take();
    assert_eq!(events.len(), 3, "one event per denial: {events:?}");
    assert_eq!(events[0].action, Action::Publish);
    assert_eq!(events[0].reason_code, Some(0x87));
    assert_eq!(events[0].client_id.as_deref(), Some("sensor-1"));
    assert_eq!(events[0].topic.as_deref(), Some("devices/sensor-2/temp"));
    assert_eq!(events[0].policy.as_deref(), Some(module.short_digest()));

    match policy.authenticate(&Connect::new("acme", "a/b")) {
        ConnectDecision::Reject(d) => assert_eq!(d.reason, ReasonCode::ClientIdentifierNotValid),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sessions_are_per_client_and_end() {
    let module = load(guest_artifacts::HELLO, None).unwrap();
    let (tenant, _) = tenant();
    let mut policy = module.instantiate(tenant.clone());
    let a = accept(&mut policy, "a");
    let b = accept(&mut policy, "b");
    assert_ne!(a, b);
    assert_eq!(tenant.connection_count(), 2);
    assert_eq!(policy.authorize_publish(b, &publish("devices/b/x", 1)), PublishDecision::Allow);
    assert_eq!(denial(&policy.authorize_publish(a, &publish("devices/b/x", 1))).reason, ReasonCode::NotAuthorized);
    policy.end_session(a);
    assert_eq!(tenant.connection_count(), 1);
    let d = policy.authorize_publish(a, &publish("devices/a/x", 1));
    assert!(denial(&d).message.contains("unknown session"), "{d:?}");
}

#[test]
fn bad_settings_are_refused_with_the_policys_message() {
    let err = load(guest_artifacts::HELLO, Some("max-payload = lots")).unwrap_err();
    assert!(matches!(err, Error::InvalidSettings { .. }), "{err:?}");
    assert!(err.to_string().contains("line 1: max-payload must be a whole number"), "{err}");
    let err = load(guest_artifacts::MISBEHAVE, Some("reject")).unwrap_err();
    assert!(err.to_string().contains("field `mode`"), "{err}");
}

#[test]
fn a_policy_panicking_in_validate_settings_is_refused() {
    let err = load(guest_artifacts::MISBEHAVE, Some("panic")).unwrap_err();
    assert!(matches!(err, Error::InvalidSettings { .. }), "{err:?}");
    assert!(err.to_string().contains("settings made me panic"), "the guest's panic message is reported: {err}");
}

#[test]
fn infinite_loop_is_denied_within_the_deadline_and_the_next_call_works() {
    let module = load(guest_artifacts::MISBEHAVE, None).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant);
    let s = accept(&mut policy, "d1");

    let started = Instant::now();
    let d = policy.authorize_publish(s, &publish("boom/loop", 0));
    let took = started.elapsed();
    assert_eq!(denial(&d).reason, ReasonCode::ImplementationSpecificError);
    assert!(denial(&d).message.contains("deadline"), "{d:?}");
    // Generous bound: the point is that it returned at all, on a loaded CI machine too.
    assert!(took < Duration::from_secs(2), "returned after {took:?}");

    assert_eq!(
        policy.authorize_publish(s, &publish("fine", 0)),
        PublishDecision::Allow,
        "fresh instance, session resumed"
    );
    let events = events.take();
    assert!(events.iter().any(|e| e.outcome == "timeout" && e.reason_code == Some(0x83)), "{events:?}");
    let timeout = events.iter().find(|e| e.outcome == "timeout").unwrap();
    assert_eq!(timeout.client_id.as_deref(), Some("d1"), "the fault event names the client");
}

#[test]
fn memory_bomb_is_capped_and_denied() {
    // A long deadline, so that only the memory cap can stop the bomb (on a busy machine the
    // default 10 ms deadline could fire first and the test would be measuring the wrong limit).
    let engine =
        Engine::new(Limits { memory: 16 << 20, deadline: Duration::from_secs(10), ..Limits::default() }).unwrap();
    let module = engine.load_file(guest_artifacts::MISBEHAVE.as_ref(), None).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant);
    let s = accept(&mut policy, "d1");
    let d = policy.authorize_publish(s, &publish("boom/alloc", 0));
    assert_eq!(denial(&d).reason, ReasonCode::ImplementationSpecificError);
    assert!(denial(&d).message.contains("memory limit of 16777216 bytes"), "{d:?}");
    assert!(events.take().iter().any(|e| e.outcome == "out-of-memory"));
    assert_eq!(policy.authorize_publish(s, &publish("fine", 0)), PublishDecision::Allow);
}

#[test]
fn panic_is_a_deny_with_the_panic_message() {
    let module = load(guest_artifacts::MISBEHAVE, None).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant);
    let s = accept(&mut policy, "d1");
    let d = policy.authorize_publish(s, &publish("boom/panic", 0));
    assert_eq!(denial(&d).reason, ReasonCode::ImplementationSpecificError);
    assert!(denial(&d).message.contains("policy panicked on purpose for boom/panic"), "{d:?}");
    assert!(events.take().iter().any(|e| e.outcome == "trap"));
    assert_eq!(policy.authorize_publish(s, &publish("fine", 0)), PublishDecision::Allow);
}

#[test]
fn a_session_the_next_instance_refuses_loses_its_reusable_decisions() {
    let module = load(guest_artifacts::MISBEHAVE, None).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant);
    let s = accept(&mut policy, "once");
    assert_eq!(policy.authorize_publish(s, &publish("cached/allow", 0)), PublishDecision::Allow);
    assert_eq!(policy.cached_decisions(), 1);
    assert!(policy.reuses_publish_allow(s, b"cached/allow", 1, false, 0), "reused before the fault");
    // The trap discards the instance; the next call's instance re-establishes the session and
    // refuses it: the decision the old one let the host reuse goes with it.
    denial(&policy.authorize_publish(s, &publish("boom/panic", 0)));
    assert_eq!(denial(&policy.authorize_publish(s, &publish("fine", 0))).message, "once only");
    assert!(events.take().iter().any(|e| e.outcome == "revoke"));
    assert!(!policy.reuses_publish_allow(s, b"cached/allow", 1, false, 0));
    assert_eq!(denial(&policy.authorize_publish(s, &publish("cached/allow", 0))).message, "once only");
}

#[test]
fn decisions_the_check_does_not_admit_are_denied_with_an_event() {
    let module = load(guest_artifacts::MISBEHAVE, None).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant);
    let s = accept(&mut policy, "d1");

    let d = policy.authorize_publish(s, &publish("boom/qos7", 0));
    assert_eq!(denial(&d).reason, ReasonCode::ImplementationSpecificError);
    assert_eq!(denial(&d).message, "policy returned an invalid decision: rewrite to QoS 7 (QoS is 0, 1 or 2)");
    let retained = Publish { topic: "boom/retain", qos: 0, retain: false, payload_size: 0 };
    let d = policy.authorize_publish(s, &retained);
    assert_eq!(denial(&d).message, "policy returned an invalid decision: rewrite adds the retain flag");
    // A retained publish rewritten to retained is no change of flags and stands.
    let already = Publish { retain: true, ..retained };
    assert!(matches!(policy.authorize_publish(s, &already), PublishDecision::Rewrite(_)));

    let d = policy.authorize_subscribe(s, &Subscribe { filter: "boom/#", qos: 1 });
    assert_eq!(denial(&d).message, "policy returned an invalid decision: grant of QoS 3 (QoS is 0, 1 or 2)");
    let events = events.take();
    let invalid: Vec<_> = events.iter().filter(|e| e.outcome == "invalid-decision").collect();
    assert_eq!(invalid.len(), 3, "{events:?}");
    assert!(invalid.iter().all(|e| e.reason_code == Some(0x83)), "{invalid:?}");
    assert!(invalid.iter().all(|e| e.device_id.as_deref() == Some("d1")), "{invalid:?}");
    assert_eq!(policy.authorize_subscribe(s, &Subscribe { filter: "fine/#", qos: 1 }), SubscribeDecision::Grant(1));
}

#[test]
fn a_looping_connect_is_rejected() {
    let module = load(guest_artifacts::MISBEHAVE, None).unwrap();
    let (tenant, _) = tenant();
    let mut policy = module.instantiate(tenant.clone());
    match policy.authenticate(&Connect::new("acme", "loop")) {
        ConnectDecision::Reject(d) => {
            assert_eq!(d.reason, ReasonCode::ImplementationSpecificError);
            // Stopped by the connect deadline, not the (shorter) per-check one.
            let connect = Limits::default().connect_deadline;
            assert!(d.message.contains(&format!("deadline of {connect:?}")), "{}", d.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tenant.connection_count(), 0);
    accept(&mut policy, "after");
}

#[test]
fn a_guest_for_another_wit_version_is_refused_at_load() {
    let err = load(guest_artifacts::OTHER_VERSION, None).unwrap_err();
    assert!(matches!(err, Error::WorldVersion { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("mqtt-policy:policy@0.2.0") && text.contains("mqtt-policy:policy@0.1.0"), "{text}");
}

#[test]
fn a_guest_importing_the_filesystem_is_refused_at_load() {
    let err = load(guest_artifacts::FS_READER, None).unwrap_err();
    assert!(matches!(err, Error::Link { .. }), "{err:?}");
    assert!(err.to_string().contains("wasi:filesystem"), "{err}");
}

#[test]
fn files_that_are_not_components_are_refused() {
    let dir = std::env::temp_dir().join(format!("mqtt-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let err = engine().load_file(&text, None).unwrap_err();
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");

    let good = std::fs::read(guest_artifacts::HELLO).unwrap();
    let truncated = dir.join("truncated.wasm");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    assert!(matches!(engine().load_file(&truncated, None).unwrap_err(), Error::Compile { .. }));

    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    assert!(engine().load_file(&core, None).unwrap_err().to_string().contains("core WebAssembly module"));

    let missing = engine().load_file(&dir.join("missing.wasm"), None).unwrap_err();
    assert!(matches!(missing, Error::Read { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn embedded_settings_are_used_and_explicit_settings_win() {
    let bytes = std::fs::read(guest_artifacts::HELLO).unwrap();
    let with = embedded::embed(&bytes, "max-payload = 5").unwrap();
    let module = engine().load_bytes("hello+settings", &with, None).unwrap();
    assert_eq!(module.settings(), "max-payload = 5");
    let mut policy = module.instantiate(Tenant::new("t"));
    let s = accept(&mut policy, "d");
    assert_eq!(denial(&policy.authorize_publish(s, &publish("devices/d/x", 6))).reason, ReasonCode::PacketTooLarge);

    let module = engine().load_bytes("hello+override", &with, Some("max-payload = 6")).unwrap();
    let mut policy = module.instantiate(Tenant::new("t"));
    let s = accept(&mut policy, "d");
    assert_eq!(policy.authorize_publish(s, &publish("devices/d/x", 6)), PublishDecision::Allow);
}

#[test]
fn replacing_the_module_keeps_sessions_and_applies_new_rules() {
    let strict = load(guest_artifacts::HELLO, Some("max-payload = 10")).unwrap();
    let loose = load(guest_artifacts::HELLO, Some("max-payload = 1000")).unwrap();
    let (tenant, _) = tenant();
    let mut policy = strict.instantiate(tenant.clone());
    let s = accept(&mut policy, "d");
    assert!(policy.authorize_publish(s, &publish("devices/d/x", 500)).denial().is_some());
    policy.replace(loose);
    assert_eq!(policy.authorize_publish(s, &publish("devices/d/x", 500)), PublishDecision::Allow);
    assert_eq!(tenant.connection_count(), 1, "resuming does not count a new connection");
    assert_eq!(policy.session_info(s).unwrap().device_id, "d");
}

#[test]
fn the_same_bytes_compile_once() {
    let a = load(guest_artifacts::HELLO, Some("max-payload = 1")).unwrap();
    let b = load(guest_artifacts::HELLO, Some("max-payload = 2")).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest().len(), 64);
}

#[test]
fn loads_and_load_failures_are_events_of_the_tenant() {
    let (tenant, events) = tenant();
    let hello = guest_artifacts::HELLO.as_ref();
    let module = engine().load_for_tenant(&tenant, hello, None, |_| Ok(())).unwrap();
    let err = engine().load_for_tenant(&tenant, hello, Some("max-payload = x"), |_| Ok(())).unwrap_err();
    // Compiled and valid, but the host says no: the same event, with the host's reason.
    let refused = engine().load_for_tenant(&tenant, hello, None, |_| Err("not today".into())).unwrap_err();
    assert!(refused.to_string().ends_with("refused: not today"), "{refused}");
    let events = events.take();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2].outcome, "load-failed");
    assert_eq!(events[2].message, refused.to_string());
    assert_eq!((events[0].action, events[0].outcome), (Action::Load, "loaded"));
    assert!(events[0].message.contains(module.digest()));
    assert_eq!(events[1].outcome, "load-failed");
    assert_eq!(events[1].message, err.to_string());
}

#[test]
fn hub_rules_quota_state_survives_a_reload() {
    let rules = "[identity]\nauthentication = \"none\"\n[hub.rate]\nmessages = 2\nwindow-ms = 86400000\nexceeded = \"quota\"\n\
                 [[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${device.id}/#\"]\n";
    let first = load(guest_artifacts::HUB_RULES, Some(rules)).unwrap();
    // The same rules with a comment: another digest, so a genuinely different module.
    let second = load(guest_artifacts::HUB_RULES, Some(&format!("# v2\n{rules}"))).unwrap();
    let (tenant, _) = tenant();
    let mut policy = first.instantiate(tenant.clone());
    let s = accept(&mut policy, "d1");
    assert_eq!(policy.authorize_publish(s, &publish("devices/d1/x", 1)), PublishDecision::Allow);
    assert_eq!(policy.authorize_publish(s, &publish("devices/d1/x", 1)), PublishDecision::Allow);
    policy.replace(second);
    let d = policy.authorize_publish(s, &publish("devices/d1/x", 1));
    assert_eq!(denial(&d).reason, ReasonCode::QuotaExceeded, "the third message of the day, counted across the reload");
    // A fresh instance of the same tenant sees the same counters.
    let mut other = first.instantiate(tenant);
    let s2 = accept(&mut other, "d1");
    assert_eq!(denial(&other.authorize_publish(s2, &publish("devices/d1/x", 1))).reason, ReasonCode::QuotaExceeded);
}

const CACHE_RULES: &str = r#"
[hub]
max-payload = 100

[identity]
authentication = "none"

[[device]]
id = "d1"

[[rule]]
effect = "allow"
actions = ["publish", "subscribe"]
topics = ["devices/${device.id}/#"]
"#;

fn hub(rules: &str) -> PolicyModule {
    let bytes = embedded::embed(guest_artifacts::HUB_RULES_WASM, rules).unwrap();
    engine().load_bytes("cache-rules", &bytes, None).unwrap()
}

#[test]
fn decisions_the_policy_marks_cacheable_are_reused_until_replace_and_still_emit_events() {
    let (t, sink) = tenant();
    let mut p = hub(CACHE_RULES).instantiate(t);
    let s = match p.authenticate(&Connect::new("acme", "d1")) {
        ConnectDecision::Accept(id, _) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(p.cached_decisions(), 0, "authenticate is never cached");
    assert_eq!(p.authorize_publish(s, &publish("devices/d1/t", 10)), PublishDecision::Allow);
    assert_eq!(p.cached_decisions(), 1);
    assert_eq!(p.authorize_publish(s, &publish("devices/d1/t", 100)), PublishDecision::Allow, "within the bound");
    assert_eq!(p.cached_decisions(), 1, "served from the cache");
    // Over the payload bound the cached decision does not apply: the policy decides again.
    assert_eq!(denial(&p.authorize_publish(s, &publish("devices/d1/t", 101))).reason, ReasonCode::PacketTooLarge);
    // A cached denial still produces an event each time.
    sink.take();
    for _ in 0..2 {
        assert_eq!(denial(&p.authorize_publish(s, &publish("devices/d2/t", 10))).reason, ReasonCode::NotAuthorized);
    }
    assert_eq!(p.cached_decisions(), 2);
    assert_eq!(sink.take().iter().filter(|e| e.outcome == "deny").count(), 2);
    let sub = Subscribe { filter: "devices/d1/#", qos: 1 };
    assert_eq!(p.authorize_subscribe(s, &sub), SubscribeDecision::Grant(1));
    assert_eq!(p.authorize_subscribe(s, &sub), SubscribeDecision::Grant(1));
    assert_eq!(p.cached_decisions(), 3);

    // New rules: the cache is emptied and the new policy decides.
    p.replace(hub(&CACHE_RULES.replace("devices/${device.id}/#", "other/${device.id}/#")));
    assert_eq!(p.cached_decisions(), 0);
    assert_eq!(denial(&p.authorize_publish(s, &publish("devices/d1/t", 10))).reason, ReasonCode::NotAuthorized);
    p.end_session(s);
    assert_eq!(p.cached_decisions(), 0);
}

#[test]
fn decisions_that_read_counters_or_of_policies_that_do_not_ask_are_not_cached() {
    let rated = CACHE_RULES.replace("[hub]\n", "[hub]\n[hub.rate]\nmessages = 2\nwindow-ms = 60000\n");
    let rated = rated.replace(
        "[hub.rate]\nmessages = 2\nwindow-ms = 60000\nmax-payload = 100\n",
        "max-payload = 100\n[hub.rate]\nmessages = 2\nwindow-ms = 60000\n",
    );
    let (t, _) = tenant();
    let mut p = hub(&rated).instantiate(t);
    let s = match p.authenticate(&Connect::new("acme", "d1")) {
        ConnectDecision::Accept(id, _) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(p.authorize_publish(s, &publish("devices/d1/t", 10)), PublishDecision::Allow);
    assert_eq!(p.authorize_publish(s, &publish("devices/d1/t", 10)), PublishDecision::Allow);
    assert_eq!(denial(&p.authorize_publish(s, &publish("devices/d1/t", 10))).reason, ReasonCode::MessageRateTooHigh);
    assert_eq!(p.cached_decisions(), 0, "every allowed publish read the rate counter");

    // The misbehaving guest allows an ordinary publish without asking for it to be cached.
    let (t, _) = tenant();
    let mut quiet = load(guest_artifacts::MISBEHAVE, None).unwrap().instantiate(t);
    let s = accept(&mut quiet, "sensor-1");
    assert_eq!(quiet.authorize_publish(s, &publish("devices/sensor-1/temp", 10)), PublishDecision::Allow);
    assert_eq!(quiet.authorize_publish(s, &publish("devices/sensor-1/temp", 10)), PublishDecision::Allow);
    assert_eq!(quiet.cached_decisions(), 0);
}

#[test]
fn a_policy_names_how_a_connection_is_monitored_during_authenticate_only() {
    let rules = "[monitoring]\n[identity]\nauthentication = \"none\"\n\
                 [[device]]\nid = \"s1\"\ntype = \"sensor\"\n\
                 [[device]]\nid = \"s2\"\nstate = \"disabled\"\n";
    let (t, _) = tenant();
    let mut policy = load(guest_artifacts::HUB_RULES, Some(rules)).unwrap().instantiate(t);
    let s1 = accept(&mut policy, "s1");
    assert_eq!(policy.take_monitor(), MonitorSubject::device("sensor", "s1"));
    assert_eq!(policy.take_monitor(), None, "taken once");
    policy.authorize_publish(s1, &publish("a/b", 1));
    assert_eq!(policy.take_monitor(), None, "checks name nothing");
    assert!(matches!(policy.authenticate(&Connect::new("acme", "s2")), ConnectDecision::Reject(_)));
    assert_eq!(policy.take_monitor(), MonitorSubject::device("device", "s2"), "a refused connection too");
    // A policy that never calls monitor-* (built without those imports) loads and names nothing.
    let (t, _) = tenant();
    let mut hello = load(guest_artifacts::HELLO, None).unwrap().instantiate(t);
    accept(&mut hello, "sensor-1");
    assert_eq!(hello.take_monitor(), None);
}

/// The hello policy in Python and in JavaScript loads under the default limits and answers
/// over the same host API (its allow asks the host to cache it); the misbehaving variant's
/// uncaught exception is a trap, denied fail-closed with an event like a Rust panic, and the
/// next check runs on a fresh instance.
#[test]
fn python_and_javascript_policies_decide_and_an_uncaught_exception_is_a_deny() {
    let languages = [
        (
            "Python",
            guest_artifacts::lang(guest_artifacts::HELLO_PY),
            guest_artifacts::lang(guest_artifacts::THROWING_PY),
        ),
        (
            "JavaScript",
            guest_artifacts::lang(guest_artifacts::HELLO_JS),
            guest_artifacts::lang(guest_artifacts::THROWING_JS),
        ),
    ];
    for (language, hello, throwing) in languages {
        let (t, _) = tenant();
        let mut p = load(hello, Some("max-payload = 100")).unwrap().instantiate(t);
        let s = accept(&mut p, "sensor-1");
        for _ in 0..2 {
            assert_eq!(
                p.authorize_publish(s, &publish("devices/sensor-1/t", 10)),
                PublishDecision::Allow,
                "{language}"
            );
        }
        assert_eq!(p.cached_decisions(), 1, "{language}: the allow asked to be cached through host.cache-decision");
        let d = p.authorize_publish(s, &publish("devices/sensor-2/t", 10));
        assert_eq!(denial(&d).reason, ReasonCode::NotAuthorized, "{language}");
        assert_eq!(denial(&d).message, "unauthorized topic devices/sensor-2/t", "{language}");
        assert_eq!(
            denial(&p.authorize_publish(s, &publish("devices/sensor-1/t", 101))).reason,
            ReasonCode::PacketTooLarge
        );
        let e = load(hello, Some("max-payload = lots")).unwrap_err().to_string();
        assert!(e.contains("line 1: max-payload must be a whole number of bytes"), "{language}: {e}");

        let (t, events) = tenant();
        let mut p = load(throwing, None).unwrap().instantiate(t);
        let s = accept(&mut p, "d1");
        let d = p.authorize_publish(s, &publish("devices/d1/t", 0));
        assert_eq!(denial(&d).reason, ReasonCode::ImplementationSpecificError, "{language}: {d:?}");
        assert!(denial(&d).message.starts_with("policy trapped"), "{language}: {d:?}");
        let events = events.take();
        assert!(events.iter().any(|e| e.outcome == "trap"), "{language}: {events:?}");
        assert!(events.iter().any(|e| e.outcome == "deny" && e.topic.as_deref() == Some("devices/d1/t")), "{language}");
        let sub = Subscribe { filter: "devices/d1/commands/#", qos: 1 };
        assert_eq!(p.authorize_subscribe(s, &sub), SubscribeDecision::Grant(1), "{language}: a fresh instance answers");
    }
}
