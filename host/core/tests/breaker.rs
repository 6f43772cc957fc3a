//! A policy that keeps failing costs the calling thread a bounded share of its time: the
//! circuit breaker that stops calling a policy after repeated timeouts, and the backoff between
//! failed instantiations, against the misbehave guest. Sleeps wait out the configured periods;
//! nothing asserts how long a call took.

use std::sync::Arc;
use std::time::Duration;

use mqtt_policy_host::events::{Event, MemorySink};
use mqtt_policy_host::*;

fn tenant() -> (Tenant, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new());
    (Tenant::with_events("acme", sink.clone()), sink)
}

fn accept(policy: &mut Policy, client_id: &str) -> SessionId {
    match policy.authenticate(&Connect::new("acme", client_id)) {
        ConnectDecision::Accept(id, _) => id,
        other => panic!("expected accept, got {other:?}"),
    }
}

fn publish(topic: &str) -> Publish<'_> {
    Publish { topic, qos: 1, retain: false, payload_size: 1 }
}

fn message(d: &PublishDecision) -> &str {
    match d {
        PublishDecision::Deny(d) => {
            assert_eq!(d.reason, ReasonCode::ImplementationSpecificError, "{d:?}");
            &d.message
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn outcomes<'a>(events: &'a [Event], outcome: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.outcome == outcome).collect()
}

#[test]
fn repeated_timeouts_open_the_circuit_until_a_trial_check_is_answered() {
    let limits = Limits {
        deadline: Duration::from_millis(20),
        breaker_timeouts: 3,
        breaker_window: Duration::from_secs(60),
        breaker_open: Duration::from_millis(300),
        ..Limits::default()
    };
    let module = Engine::new(limits).unwrap().load_file(guest_artifacts::MISBEHAVE.as_ref(), None).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant);
    let s = accept(&mut policy, "d1");

    for _ in 0..3 {
        assert!(message(&policy.authorize_publish(s, &publish("boom/loop"))).contains("deadline"));
    }
    let seen = events.take();
    assert_eq!(outcomes(&seen, "timeout").len(), 3);
    let open = outcomes(&seen, "circuit-open");
    assert_eq!(open.len(), 1, "{seen:?}");
    assert_eq!(
        open[0].message,
        "the policy timed out 3 times within 60000 ms: circuit open, its checks are denied without calling it for 300 ms, then one check tries it again"
    );
    assert_eq!(open[0].client_id.as_deref(), Some("d1"));
    assert_eq!(open[0].reason_code, Some(0x83));

    // Open: denied without calling the policy, even a topic it allows; a connect is refused.
    let d = policy.authorize_publish(s, &publish("fine"));
    assert!(message(&d).contains("suspended after repeated timeouts (circuit open)"), "{d:?}");
    match policy.authenticate(&Connect::new("acme", "d2")) {
        ConnectDecision::Reject(d) => assert!(d.message.contains("circuit open"), "{d:?}"),
        other => panic!("a connect while open: {other:?}"),
    }
    let seen = events.take();
    assert!(seen.is_empty(), "not called, and counted rather than reported one by one: {seen:?}");

    // The trial: a check the policy answers closes the circuit.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(policy.authorize_publish(s, &publish("fine")), PublishDecision::Allow);
    let seen = events.take();
    let closed = outcomes(&seen, "circuit-closed");
    assert_eq!(closed.len(), 1, "{seen:?}");
    assert_eq!(
        closed[0].message,
        "the trial check ended within its deadline: circuit closed, checks call the policy again \
         (2 checks denied while it was open)"
    );
    assert_eq!(policy.authorize_publish(s, &publish("fine")), PublishDecision::Allow);

    // Opening again soon after closing doubles the open period; so does a trial that times out.
    for _ in 0..3 {
        policy.authorize_publish(s, &publish("boom/loop"));
    }
    let open = outcomes(&events.take(), "circuit-open").into_iter().map(|e| e.message.clone()).collect::<Vec<_>>();
    assert_eq!(open.len(), 1);
    assert!(open[0].contains("for 600 ms"), "{open:?}");
    std::thread::sleep(Duration::from_millis(650));
    assert!(message(&policy.authorize_publish(s, &publish("boom/loop"))).contains("deadline"), "the trial");
    let seen = events.take();
    let open = outcomes(&seen, "circuit-open");
    assert_eq!(open.len(), 1, "{seen:?}");
    assert_eq!(open[0].message, "the trial check timed out too: circuit open again, checks are denied for 1200 ms");
    assert!(message(&policy.authorize_publish(s, &publish("fine"))).contains("circuit open"));

    // A new policy starts with a closed circuit.
    policy.replace(module.clone());
    let seen = events.take();
    let closed = outcomes(&seen, "circuit-closed");
    assert_eq!(closed.len(), 1, "{seen:?}");
    assert!(closed[0].message.starts_with("a new policy was loaded"), "{seen:?}");
    assert!(closed[0].message.ends_with("(1 check denied while it was open)"), "{seen:?}");
    assert_eq!(policy.authorize_publish(s, &publish("fine")), PublishDecision::Allow);
}

#[test]
fn a_failing_instantiation_is_retried_only_after_a_doubling_wait() {
    let limits = Limits { instantiate_backoff: Duration::from_millis(200), ..Limits::default() };
    let engine = Engine::new(limits).unwrap();
    // Every instance of the tenant after its first refuses its settings.
    let module = engine.load_file(guest_artifacts::MISBEHAVE.as_ref(), Some("fail-again")).unwrap();
    let (tenant, events) = tenant();
    let mut policy = module.instantiate(tenant.clone());
    let s = accept(&mut policy, "d1");
    let attempts = || tenant.counter_add("instances", 0, 0, 0).unwrap();
    assert_eq!(attempts(), 1);

    // A panic discards the instance; the next check needs a new one, which fails.
    assert!(message(&policy.authorize_publish(s, &publish("boom/panic"))).contains("panicked on purpose"));
    let d = policy.authorize_publish(s, &publish("fine"));
    assert!(message(&d).contains("refuses to be instantiated again; next attempt in 200 ms"), "{d:?}");
    assert_eq!(attempts(), 2);
    let failed = outcomes(&events.take(), "instantiate-failed").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].message.ends_with("next attempt in 200 ms"), "{failed:?}");

    // Until then, checks are denied without trying, and without another failure event.
    for _ in 0..20 {
        let d = policy.authorize_publish(s, &publish("fine"));
        assert!(message(&d).contains("not retried for another"), "{d:?}");
    }
    assert_eq!(attempts(), 2, "no attempt while backing off");
    assert!(outcomes(&events.take(), "instantiate-failed").is_empty());

    // The next attempt fails too, and the wait doubles.
    std::thread::sleep(Duration::from_millis(250));
    assert!(message(&policy.authorize_publish(s, &publish("fine"))).contains("next attempt in 400 ms"));
    assert_eq!(attempts(), 3);

    // A new policy is tried at once.
    policy.replace(module.clone());
    assert!(message(&policy.authorize_publish(s, &publish("fine"))).contains("next attempt in 200 ms"));
    assert_eq!(attempts(), 4);
}
