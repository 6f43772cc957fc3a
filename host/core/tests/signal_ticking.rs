//! Deadlines ticked by a timer signal instead of a thread ([`Ticking::Signal`], what the
//! Mosquitto plugin uses so that the broker's process runs no thread of ours): a looping policy
//! is stopped at its deadline, again after the clock parked for lack of calls, an engine made on
//! another thread than the timer's ticks with a thread instead, and an engine
//! loading with a compiler child finishes its load through `Loading::poll`. One test in its own
//! binary: the timer signals the thread that created it, which here is this test's thread.

use std::time::{Duration, Instant};

use mqtt_policy_host::events::MemorySink;
use mqtt_policy_host::*;

fn publish(topic: &str) -> Publish<'_> {
    Publish { topic, qos: 1, retain: false, payload_size: 1 }
}

#[test]
fn a_signal_ticked_engine_stops_loops_after_parking_and_loads_without_waiting() {
    let limits = Limits { deadline: Duration::from_millis(50), breaker_timeouts: 0, ..Limits::default() };
    let compiler = std::path::Path::new(env!("CARGO_BIN_EXE_mqtt-policy-compile"));
    let engine = Engine::configured(limits, Some(compiler), Ticking::Signal).unwrap();
    assert_eq!(engine.ticking(), Ticking::Signal, "a free real-time signal and a timer on Linux");
    // The timer signals this thread: an engine made on another thread ticks with a thread.
    let elsewhere =
        std::thread::spawn(|| Engine::configured(Limits::default(), None, Ticking::Signal).unwrap().ticking());
    assert_eq!(elsewhere.join().unwrap(), Ticking::Thread);

    // Loading without waiting: the compile runs in the child while poll says `None`.
    let sink = std::sync::Arc::new(MemorySink::new());
    let tenant = Tenant::with_events("acme", sink.clone());
    let mut loading =
        PolicyModule::start_loading_for_tenant(&engine, &tenant, guest_artifacts::MISBEHAVE.as_ref(), None, |_| Ok(()));
    assert!(loading.poll().is_none(), "a compiler child just started has not finished");
    let started = Instant::now();
    let module = loop {
        if let Some(done) = loading.poll() {
            break done.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the compile never ended");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(loading.poll().is_none(), "the outcome is given once");
    let loaded: Vec<_> = sink.take().into_iter().filter(|e| e.outcome == "loaded").collect();
    assert_eq!(loaded.len(), 1, "one loaded event, from the poll that finished the load");

    let mut policy = module.instantiate(Tenant::new("acme"));
    let ConnectDecision::Accept(s, _) = policy.authenticate(&Connect::new("acme", "d1")) else { panic!("connect") };
    for round in 0..3 {
        match policy.authorize_publish(s, &publish("boom/loop")) {
            PublishDecision::Deny(d) => assert!(d.message.contains("deadline of 50ms"), "round {round}: {d:?}"),
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(policy.authorize_publish(s, &publish("ok/topic")), PublishDecision::Allow, "round {round}");
        // Long enough for the clock to park (20 idle ticks of 1 ms): the next call re-arms it.
        std::thread::sleep(Duration::from_millis(100));
    }
}
