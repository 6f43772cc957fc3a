//! With a compiler (`plugin_opt_compiler`) and broker-wide settings the plugin runs no thread in
//! Mosquitto's process: the policy directory is watched from Mosquitto's TICK, compiles run in
//! child processes polled from there, and deadlines tick by a timer signal to the broker's
//! thread. This checks, on a real Mosquitto 2.0.11, that the process keeps one thread through
//! loading, checks, a looping policy, a hot reload and SIGHUP; that the looping policy is
//! still stopped at its deadline (also after the clock parked); and that a reload swaps the
//! decisions without dropping a connected client.

use std::time::Duration;

use mqtt_policy_testkit as support;

use support::client::{Mqtt, Opts, Proto};
use support::{Broker, Setup, deploy, field};

/// The broker's threads, by name.
fn threads(b: &Broker) -> Vec<String> {
    let dir = format!("/proc/{}/task", b.pid());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap().trim().to_owned())
        .collect();
    names.sort();
    names
}

fn timeouts(b: &Broker) -> usize {
    b.events().iter().filter(|e| field(e, "outcome") == "timeout").count()
}

#[test]
fn with_a_compiler_the_broker_keeps_one_thread_through_checks_loops_reloads_and_sighup() {
    let misbehave = std::fs::read(guest_artifacts::MISBEHAVE).unwrap();
    let compiler = support::compiler_path();
    let setup =
        Setup::tenant("acme", misbehave).option("compiler", compiler.to_str().unwrap()).option("deadline_ms", "200");
    let mut b = Broker::start("threadless", setup).unwrap();
    b.wait_loads(1);
    assert_eq!(threads(&b), ["mosquitto"], "{}", b.log());

    // The looping check is stopped by the signal-ticked deadline, the broker answers on; again
    // once the clock has parked for lack of calls (20 ms idle).
    let mut c = Mqtt::connected(&Opts::new(b.port, Proto::V5, "sensor-9"));
    for round in 1..=2 {
        assert_eq!(c.publish("boom/loop", 1, false, b"x"), Some(0x87), "round {round}");
        assert!(matches!(c.publish("ok/topic", 1, false, b"x"), Some(0 | 0x10)), "round {round}");
        assert_eq!(timeouts(&b), round, "round {round}: {:#?}", b.events());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(threads(&b), ["mosquitto"]);

    // A hot reload: hello's rules replace misbehave's for new checks; the connected client stays.
    deploy(&b.policy_dir, "acme", &std::fs::read(guest_artifacts::HELLO).unwrap());
    b.wait_loads(2);
    let mut sensor = Mqtt::connected(&Opts::new(b.port, Proto::V5, "sensor-1"));
    assert!(matches!(sensor.publish("devices/sensor-1/temp", 1, false, b"21"), Some(0 | 0x10)));
    assert_eq!(sensor.publish("devices/sensor-2/temp", 1, false, b"21"), Some(0x87), "hello's rule, not misbehave's");
    assert!(c.is_alive(), "the client connected before the reload stays connected");

    // SIGHUP reads every file again: one more load, still no thread.
    b.sighup();
    b.wait_loads(3);
    assert!(matches!(sensor.publish("devices/sensor-1/temp", 1, false, b"22"), Some(0 | 0x10)));
    assert_eq!(threads(&b), ["mosquitto"], "{}", b.log());
    assert!(b.alive(), "{}", b.log());
    let loaded = b.events().into_iter().filter(|e| field(e, "outcome") == "loaded").count();
    assert_eq!(loaded, 3, "{:#?}", b.events());
}

#[test]
fn without_a_compiler_policies_compile_on_a_watcher_thread_as_the_log_says() {
    let hello = std::fs::read(guest_artifacts::HELLO).unwrap();
    let mut b = Broker::start("threaded", Setup::tenant("acme", hello)).unwrap();
    b.wait_loads(1);
    let names = threads(&b);
    assert!(names.iter().any(|n| n.starts_with("mqtt-policy-wat")), "{names:?}");
    assert!(b.log().contains("no plugin_opt_compiler: policies compile on a watcher thread"), "{}", b.log());
    assert!(b.alive());
}
