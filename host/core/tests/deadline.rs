//! The per-check deadline charges a policy for the time it runs, not for time its thread was
//! not running: a stall of the calling thread (here, a host call that sleeps, as a thread the
//! machine does not schedule would) does not turn a cheap check into a timeout, while a policy
//! that loops is still stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mqtt_policy_host::events::{Event, EventSink, MemorySink};
use mqtt_policy_host::*;

/// Records events; on the first policy log line it holds the calling thread for `stall`.
struct StallingSink {
    stall: Duration,
    stalled: AtomicBool,
    events: MemorySink,
}

impl EventSink for StallingSink {
    fn emit(&self, event: Event) {
        if event.outcome == "log" && !self.stalled.swap(true, Ordering::SeqCst) {
            std::thread::sleep(self.stall);
        }
        self.events.emit(event);
    }
}

fn setup(stall: Duration) -> (Policy, Arc<StallingSink>) {
    let limits = Limits { deadline: Duration::from_millis(50), breaker_timeouts: 0, ..Limits::default() };
    let module = Engine::new(limits).unwrap().load_file(guest_artifacts::MISBEHAVE.as_ref(), None).unwrap();
    let sink = Arc::new(StallingSink { stall, stalled: AtomicBool::new(false), events: MemorySink::new() });
    let policy = module.instantiate(Tenant::with_events("acme", sink.clone()));
    (policy, sink)
}

fn publish(topic: &str) -> Publish<'_> {
    Publish { topic, qos: 1, retain: false, payload_size: 1 }
}

#[test]
fn a_check_whose_thread_stalls_past_the_deadline_is_answered() {
    let (mut policy, sink) = setup(Duration::from_millis(300));
    let ConnectDecision::Accept(s, _) = policy.authenticate(&Connect::new("acme", "d1")) else { panic!("connect") };
    // `boom/log` writes log lines (well under a millisecond of work, a few on a loaded debug
    // build); the first one stalls the thread for six times the deadline. A wall-clock deadline
    // would deny it as a timeout.
    assert_eq!(policy.authorize_publish(s, &publish("boom/log")), PublishDecision::Allow);
    let events = sink.events.take();
    assert!(sink.stalled.load(Ordering::SeqCst), "the stall happened");
    assert!(events.iter().all(|e| e.outcome != "timeout"), "{events:?}");
}

#[test]
fn a_looping_policy_is_still_stopped_after_a_stall() {
    let (mut policy, sink) = setup(Duration::from_millis(300));
    let ConnectDecision::Accept(s, _) = policy.authenticate(&Connect::new("acme", "d1")) else { panic!("connect") };
    assert_eq!(policy.authorize_publish(s, &publish("boom/log")), PublishDecision::Allow);
    match policy.authorize_publish(s, &publish("boom/loop")) {
        PublishDecision::Deny(d) => assert!(d.message.contains("deadline of 50ms"), "{d:?}"),
        other => panic!("a loop must time out, got {other:?}"),
    }
    assert!(sink.events.take().iter().any(|e| e.outcome == "timeout"));
    // The instance was replaced; the next check is answered.
    assert_eq!(policy.authorize_publish(s, &publish("fine")), PublishDecision::Allow);
}

#[test]
fn a_looping_policy_is_stopped_after_the_engine_was_idle() {
    // The epoch ticker parks when no call has run for a while (most checks in a broker are
    // answered from the decision cache); the next call must wake it, or a loop would run on.
    let (mut policy, sink) = setup(Duration::ZERO);
    let ConnectDecision::Accept(s, _) = policy.authenticate(&Connect::new("acme", "d1")) else { panic!("connect") };
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    match policy.authorize_publish(s, &publish("boom/loop")) {
        PublishDecision::Deny(d) => assert!(d.message.contains("deadline of 50ms"), "{d:?}"),
        other => panic!("a loop must time out, got {other:?}"),
    }
    // A generous bound (100 times the deadline) that a parked ticker would still miss: it
    // sleeps 10 s when nobody wakes it.
    assert!(started.elapsed() < Duration::from_secs(5), "stopped only after {:?}", started.elapsed());
    assert!(sink.events.take().iter().any(|e| e.outcome == "timeout"));
}
