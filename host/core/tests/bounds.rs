//! What a policy can make the host keep or write is bounded (`Limits`' constants): counter
//! names and bytes are refused past their bound with a `limit-exceeded` deny, log lines are cut
//! per call and per second with a `suppressed` summary, and stdout/stderr never fill.

use std::sync::Arc;
use std::time::Duration;

use mqtt_policy_host::events::{Event, MemorySink};
use mqtt_policy_host::*;

/// The misbehaving guest on an engine with a long deadline, so that only the bound under test
/// can stop a call (on a busy machine the default 10 ms could fire first).
fn misbehave() -> (Policy, Tenant, Arc<MemorySink>, SessionId) {
    let engine = Engine::new(Limits { deadline: Duration::from_secs(10), ..Limits::default() }).unwrap();
    let module = engine.load_file(guest_artifacts::MISBEHAVE.as_ref(), None).unwrap();
    let sink = Arc::new(MemorySink::new());
    let tenant = Tenant::with_events("acme", sink.clone());
    let mut policy = module.instantiate(tenant.clone());
    let ConnectDecision::Accept(session, _) = policy.authenticate(&Connect::new("acme", "d1")) else {
        panic!("the misbehaving guest accepts d1")
    };
    (policy, tenant, sink, session)
}

fn publish(topic: &str) -> Publish<'_> {
    Publish { topic, qos: 1, retain: false, payload_size: 0 }
}

fn denial(d: &PublishDecision) -> &Denial {
    d.denial().unwrap_or_else(|| panic!("expected a denial, got {d:?}"))
}

fn with_outcome<'e>(events: &'e [Event], outcome: &str) -> Vec<&'e Event> {
    events.iter().filter(|e| e.outcome == outcome).collect()
}

#[test]
fn a_256_kib_counter_name_is_refused_with_a_limit_event_and_nothing_kept() {
    let (mut policy, tenant, sink, s) = misbehave();
    for _ in 0..3 {
        let d = policy.authorize_publish(s, &publish("boom/counter-name"));
        assert_eq!(denial(&d).reason, ReasonCode::ImplementationSpecificError);
        assert!(denial(&d).message.starts_with("policy exceeded a host limit: counter name of 262157 bytes"), "{d:?}");
    }
    let events = sink.take();
    let limits = with_outcome(&events, "limit-exceeded");
    assert_eq!(limits.len(), 3, "{events:?}");
    assert_eq!(limits[0].client_id.as_deref(), Some("d1"), "the event names the client");
    assert!(limits[0].message.contains("longer than the limit of 1024 bytes"), "{:?}", limits[0]);
    assert_eq!(tenant.counter_usage(), (0, 0), "a refused name is not stored");
    assert_eq!(policy.authorize_publish(s, &publish("fine")), PublishDecision::Allow, "a fresh instance answers");
}

#[test]
fn a_tenants_counter_bytes_stop_at_their_bound() {
    let (mut policy, tenant, sink, s) = misbehave();
    // The guest adds 1 KiB names until the host refuses one.
    let d = policy.authorize_publish(s, &publish("boom/counters"));
    assert!(denial(&d).message.contains("a new one would pass the limit of 100000 counters or 4194304 bytes"), "{d:?}");
    assert_eq!(tenant.counter_usage(), (Limits::MAX_COUNTER_BYTES / 1024, Limits::MAX_COUNTER_BYTES));
    let d = policy.authorize_publish(s, &publish("boom/counters"));
    assert!(denial(&d).message.contains("policy exceeded a host limit"), "again: {d:?}");
    assert_eq!(tenant.counter_usage().1, Limits::MAX_COUNTER_BYTES, "and never more");
    assert_eq!(with_outcome(&sink.take(), "limit-exceeded").len(), 2);
}

#[test]
fn a_log_flood_is_cut_per_call_and_per_second_with_a_summary() {
    let (mut policy, _tenant, sink, s) = misbehave();
    // Each call logs 1,000 lines of 4 KiB: 8 are written, and at most 100 a second in all.
    let mut calls = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) || calls < 30 {
        assert_eq!(policy.authorize_publish(s, &publish("boom/log")), PublishDecision::Allow, "logging is no fault");
        calls += 1;
    }
    let events = sink.take();
    let lines = with_outcome(&events, "log");
    assert!(lines.iter().all(|e| e.message.len() == Limits::MAX_LOG_LINE), "lines are cut to 1 KiB");
    let seconds = started.elapsed().as_secs() + 2;
    assert!(
        lines.len() as u64 <= seconds * u64::from(Limits::MAX_LOGS_PER_SECOND),
        "{} lines in under {seconds} s",
        lines.len()
    );
    let summaries = with_outcome(&events, "suppressed");
    assert!(!summaries.is_empty(), "the dropped lines are reported");
    assert!(
        summaries[0].message.contains("policy log lines suppressed: more than 8 in one call or 100 a second"),
        "{:?}",
        summaries[0]
    );
    // Lines dropped in the last second are reported with the next line written; the exact
    // count is `Tenant`'s unit test.
    let reported: u64 = summaries.iter().map(|e| e.message.split(' ').next().unwrap().parse::<u64>().unwrap()).sum();
    assert!(reported >= 1000 - 8 && reported + lines.len() as u64 <= calls * 1000, "{reported} reported");
}

#[test]
fn stdout_and_stderr_never_fill_and_a_later_panic_is_still_named() {
    let (mut policy, _tenant, sink, s) = misbehave();
    // 64 KiB to each stream per call: a 16 KiB pipe used to trap the first call, and then
    // `eprintln!` panicked.
    for _ in 0..10 {
        assert_eq!(policy.authorize_publish(s, &publish("boom/log")), PublishDecision::Allow);
    }
    let d = policy.authorize_publish(s, &publish("boom/panic"));
    assert!(denial(&d).message.contains("policy panicked on purpose for boom/panic"), "{d:?}");
    assert_eq!(with_outcome(&sink.take(), "trap").len(), 1);
}
