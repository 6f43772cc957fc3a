//! Hostile and broken policies inside a real Mosquitto: a loop, a memory bomb, a panic and
//! inadmissible decisions are denied (fail closed) with an event while another tenant's clients
//! keep publishing; counters and logs that would grow the broker are refused and cut; a policy
//! that keeps looping trips its tenant's circuit breaker; bad files on reload leave the last good
//! policy answering.

use mqtt_policy_testkit as support;
use support::proofs;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::client::{Mqtt, Opts, Proto};
use support::{Broker, deploy, field};

/// PUBACK of an accepted publish: 0, or 0x10 when nobody is subscribed.
fn accepted(code: Option<u8>) -> bool {
    matches!(code, Some(0 | 0x10))
}

const SHARED: &str = include_str!("../../../policies/examples/shared-hub/rules.toml");

fn misbehave() -> Vec<u8> {
    std::fs::read(guest_artifacts::MISBEHAVE).unwrap()
}

/// Two listeners, each bound to one tenant: `evil` (the misbehaving guest, 200 ms deadline,
/// 16 MiB memory) and `good` (the shared-hub example); `extra` lines end each plugin's options.
fn two_tenants(tag: &str, extra: &str) -> Broker {
    let policies = [("evil", misbehave()), ("good", support::hub_policy(SHARED, &[]))];
    Broker::start_per_listener(
        tag,
        &policies,
        &format!("plugin_opt_deadline_ms 200\nplugin_opt_memory_mib 16\n{extra}"),
    )
    .unwrap()
}

/// A `good` device publishing QoS 1 every few milliseconds until stopped, counting accepted
/// publishes in `done`; returns every PUBACK code and the slowest round trip.
fn steady_publisher(
    port: u16,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<(Vec<Option<u8>>, Duration)> {
    std::thread::spawn(move || {
        let mut c = Mqtt::connected(&proofs::sas(port, Proto::V5, "thermo-1"));
        let (mut codes, mut slowest) = (Vec::new(), Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let code = c.publish("devices/thermo-1/telemetry/t", 1, false, b"21.5");
            slowest = slowest.max(t.elapsed());
            if accepted(code) {
                done.fetch_add(1, Ordering::Relaxed);
            }
            codes.push(code);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(c.is_alive(), "the good device stays connected");
        (codes, slowest)
    })
}

#[test]
fn hostile_policy_is_fenced_while_another_tenant_keeps_flowing() {
    let mut b = two_tenants("hostile", "");
    let (evil_port, good_port) = (b.ports[0], b.ports[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let good = steady_publisher(good_port, stop.clone(), done.clone());
    // The other tenant's device gets publishes through after every attack.
    let flows_on = |after: &str| {
        let seen = done.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::Relaxed) < seen + 2 {
            assert!(Instant::now() < deadline, "the good tenant stalled after {after}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    let mut e = Mqtt::connected(&Opts::new(evil_port, Proto::V5, "e1"));
    assert!(accepted(e.publish("fine", 1, false, b"ok")), "the misbehaving guest allows ordinary topics");
    // Each attack: denied (PUBACK 0x87), an event naming the fault, and the next call answered
    // by a fresh instance with the session resumed.
    for (topic, outcome, text) in [
        ("boom/loop", "timeout", "policy exceeded its deadline of 200ms"),
        ("boom/alloc", "out-of-memory", "policy exceeded its memory limit of 16777216 bytes"),
        ("boom/panic", "trap", "policy panicked on purpose for boom/panic"),
        ("boom/qos7", "invalid-decision", "policy returned an invalid decision: rewrite to QoS 7"),
    ] {
        assert_eq!(e.publish(topic, 1, false, b"x"), Some(0x87), "{topic}");
        let ev = b.wait_event(outcome, |ev| field(ev, "outcome") == outcome);
        assert_eq!(field(&ev, "tenant"), "evil");
        assert_eq!(field(&ev, "client_id"), "e1", "the fault event names the client: {ev}");
        assert!(field(&ev, "message").contains(text), "{ev}");
        assert_eq!(ev["reason_code"], 0x83, "{ev}");
        assert!(accepted(e.publish("fine", 1, false, b"ok")), "after {topic}");
        flows_on(topic);
    }
    assert_eq!(e.subscribe("boom/#", 1), 0x87, "a grant of QoS 3 is not passed on");
    b.wait_event("invalid grant", |ev| field(ev, "message").contains("grant of QoS 3"));
    // A connect that loops is refused, and the listener still admits the next client.
    let (_c, code) = Mqtt::connect(&Opts::new(evil_port, Proto::V5, "loop"));
    assert_eq!(code, 0x87);
    b.wait_event("looping connect", |ev| {
        field(ev, "client_id") == "loop"
            && field(ev, "outcome") == "reject"
            && field(ev, "message").contains("deadline")
    });
    Mqtt::connected(&Opts::new(evil_port, Proto::V311, "e2")).disconnect();
    flows_on("the looping connect");

    stop.store(true, Ordering::Relaxed);
    let (codes, slowest) = good.join().unwrap();
    assert!(codes.iter().all(|c| accepted(*c)), "every good publish accepted: {codes:?}");
    // No assertion on time (loaded CI machines); the figure is for the reader of the test log.
    eprintln!("good tenant: {} publishes accepted during the attacks, slowest PUBACK {slowest:?}", codes.len());
    assert!(e.is_alive(), "the attacker's own connection survives its policy's faults");
    assert!(b.alive(), "the broker survived:\n{}", b.log());
    let faults =
        b.events().iter().filter(|ev| field(ev, "tenant") == "good" && field(ev, "severity") == "error").count();
    assert_eq!(faults, 0, "no fault is attributed to the good tenant");
}

#[test]
fn a_looping_policy_trips_its_tenants_breaker_while_the_other_tenant_keeps_flowing() {
    // The defaults but for a shorter open period, so the trial comes soon.
    let mut b = two_tenants("breaker", "plugin_opt_breaker_open_ms 500\n");
    let (evil_port, good_port) = (b.ports[0], b.ports[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let good = steady_publisher(good_port, stop.clone(), done.clone());

    let mut e = Mqtt::connected(&Opts::new(evil_port, Proto::V5, "e1"));
    // Three timeouts within the window (the default) open the circuit.
    for _ in 0..3 {
        assert_eq!(e.publish("boom/loop", 1, false, b"x"), Some(0x87));
    }
    let open = b.wait_event("circuit-open", |ev| field(ev, "outcome") == "circuit-open");
    assert_eq!(field(&open, "tenant"), "evil");
    assert_eq!(field(&open, "client_id"), "e1", "{open}");
    assert!(field(&open, "message").contains("timed out 3 times"), "{open}");
    assert_eq!(open["reason_code"], 0x83, "{open}");
    let timeouts = |b: &Broker| b.events().iter().filter(|ev| field(ev, "outcome") == "timeout").count();
    assert_eq!(timeouts(&b), 3);

    // Open: every check of the tenant is denied without calling the policy, even one it allows,
    // and a new client of the tenant is refused; nothing times out any more. The denials are
    // counted in the next circuit event rather than reported one by one.
    for _ in 0..20 {
        assert_eq!(e.publish("boom/loop", 1, false, b"x"), Some(0x87));
    }
    assert_eq!(e.publish("fine", 1, false, b"ok"), Some(0x87), "denied while open, never allowed");
    let (_c, code) = Mqtt::connect(&Opts::new(evil_port, Proto::V5, "e2"));
    assert_eq!(code, 0x87, "a connect while open is refused");
    assert_eq!(timeouts(&b), 3, "no check reached the looping policy while the circuit was open");
    let seen = done.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < seen + 2 {
        assert!(Instant::now() < deadline, "the good tenant stalled while the other's circuit was open");
        std::thread::sleep(Duration::from_millis(5));
    }

    // After the open period one check tries the policy: it answers, and the circuit closes.
    std::thread::sleep(Duration::from_millis(600));
    assert!(accepted(e.publish("fine", 1, false, b"ok")), "the trial check reaches the policy");
    let closed = b.wait_event("circuit-closed", |ev| field(ev, "outcome") == "circuit-closed");
    assert_eq!(field(&closed, "tenant"), "evil");
    let message = field(&closed, "message");
    let denied: usize = message
        .rsplit_once(" (")
        .and_then(|(_, n)| n.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of denials in {closed}"));
    assert!(denied >= 22, "21 publishes and a connect were denied while open: {closed}");
    assert!(accepted(e.publish("fine", 1, false, b"ok")));

    stop.store(true, Ordering::Relaxed);
    let (codes, slowest) = good.join().unwrap();
    assert!(codes.iter().all(|c| accepted(*c)), "every good publish accepted: {codes:?}");
    eprintln!("good tenant: {} publishes accepted, slowest PUBACK {slowest:?}", codes.len());
    assert!(e.is_alive(), "a denial by the breaker does not disconnect");
    assert!(b.alive(), "the broker survived:\n{}", b.log());
    let good_faults =
        b.events().iter().filter(|ev| field(ev, "tenant") == "good" && field(ev, "severity") == "error").count();
    assert_eq!(good_faults, 0, "nothing is attributed to the good tenant");
}

/// A hostile policy grows what the host keeps and writes: a new 256 KiB counter name per
/// publish, 1 KiB counter names until its tenant's bound, and 1,000 log lines of 4 KiB plus
/// 64 KiB of stdout and stderr per publish. Its counter checks are denied with
/// `limit-exceeded` events, its log lines are cut with a `suppressed` summary, and the
/// broker's resident memory stays within a few MiB of where it started.
#[test]
fn a_policy_growing_counters_and_flooding_logs_leaves_the_broker_small() {
    let mut b = two_tenants("bounds", "");
    let mut e = Mqtt::connected(&Opts::new(b.ports[0], Proto::V5, "e1"));
    assert!(accepted(e.publish("fine", 1, false, b"ok")));
    let start = b.rss_kib();
    let started = Instant::now();
    let mut warm = 0;
    let rounds = 100;
    for round in 0..rounds {
        assert_eq!(e.publish("boom/counter-name", 1, false, b"x"), Some(0x87), "round {round}");
        assert_eq!(e.publish("boom/counters", 1, false, b"x"), Some(0x87), "round {round}");
        assert!(accepted(e.publish("boom/log", 1, false, b"x")), "logging is no fault, round {round}");
        if round == 9 {
            warm = b.rss_kib();
        }
    }
    let took = started.elapsed();
    let end = b.rss_kib();
    // A log line in a later second brings the summary of the lines dropped before it.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(accepted(e.publish("boom/log", 1, false, b"x")));
    let summary = b.wait_event("log summary", |ev| {
        field(ev, "outcome") == "suppressed" && field(ev, "message").contains("policy log lines suppressed")
    });
    assert_eq!(field(&summary, "tenant"), "evil");

    let name = b.wait_event("long counter name", |ev| {
        field(ev, "outcome") == "limit-exceeded" && field(ev, "message").contains("counter name of 262157 bytes")
    });
    assert_eq!(field(&name, "client_id"), "e1", "{name}");
    assert_eq!(name["reason_code"], 0x83, "{name}");
    assert!(field(&name, "message").contains("longer than the limit of 1024 bytes"), "{name}");
    b.wait_event("counter bytes", |ev| {
        field(ev, "outcome") == "limit-exceeded" && field(ev, "message").contains("or 4194304 bytes")
    });
    let events = b.events();
    let of = |outcome: &str| {
        events.iter().filter(|ev| field(ev, "tenant") == "evil" && field(ev, "outcome") == outcome).count()
    };
    let long_names = events
        .iter()
        .filter(|ev| {
            field(ev, "outcome") == "limit-exceeded" && field(ev, "message").contains("counter name of 262157")
        })
        .count();
    assert_eq!(long_names, rounds, "one event per refused check");
    // Filling the tenant's 4 MiB of counters takes the first `boom/counters` calls thousands of
    // host calls, which may run past the deadline (denied too, as `timeout`).
    assert_eq!(of("limit-exceeded") + of("timeout"), 2 * rounds, "one event per refused check");
    let seconds = took.as_secs() + 4;
    assert!(of("log") as u64 <= seconds * 100, "{} log lines in under {seconds} s", of("log"));
    assert_eq!(of("trap"), 0, "stdout and stderr never fill: no panic in the guest");

    let growth = end.saturating_sub(start);
    // The figure is for SECURITY.md and the reader of the test log; the bound is generous.
    eprintln!(
        "broker VmRSS: {start} KiB at start, {warm} KiB after 30 publishes, {end} KiB after {} publishes \
         in {took:?} (+{growth} KiB); {} limit-exceeded, {} timeout, {} log events",
        3 * rounds,
        of("limit-exceeded"),
        of("timeout"),
        of("log")
    );
    assert!(growth < 16 << 10, "the broker grew by {growth} KiB");
    assert!(e.is_alive(), "the attacker's connection survives");
    assert!(b.alive(), "the broker survived:\n{}", b.log());
}

/// Replaces `good.wasm` with `bytes` and waits for the `load-failed` event that names the
/// file and contains `cause`; returns how many load-failed events the file caused.
fn bad_file(b: &Broker, bytes: &[u8], cause: &str) -> usize {
    let before = load_failures(b);
    deploy(&b.policy_dir, "good", bytes);
    let ev = b.wait_event(cause, |ev| field(ev, "outcome") == "load-failed" && field(ev, "message").contains(cause));
    assert_eq!(field(&ev, "tenant"), "good");
    assert!(field(&ev, "message").contains("good.wasm"), "the event names the file: {ev}");
    // Several polls pass: a bad file is reported once, not on every scan.
    std::thread::sleep(Duration::from_millis(400));
    load_failures(b) - before
}

fn load_failures(b: &Broker) -> usize {
    b.events().iter().filter(|ev| field(ev, "outcome") == "load-failed").count()
}

#[test]
fn bad_files_leave_the_last_good_policy_answering() {
    let mut b = two_tenants("badfiles", "");
    let good_port = b.ports[1];
    let mut d = Mqtt::connected(&proofs::sas(good_port, Proto::V5, "thermo-1"));
    let mut v311 = Mqtt::connected(&proofs::sas(good_port, Proto::V311, "thermo-2"));
    let answers_as_before = |d: &mut Mqtt| {
        assert!(accepted(d.publish("devices/thermo-1/telemetry/t", 1, false, b"1")));
        assert_eq!(d.publish("devices/thermo-2/telemetry/t", 1, false, b"1"), Some(0x87));
    };
    answers_as_before(&mut d);

    let valid = support::hub_policy(SHARED, &[]);
    let invalid_settings =
        mqtt_policy_host::embedded::embed(guest_artifacts::HUB_RULES_WASM, "[hub]\nstate = \"sleepy\"\n")
            .expect("embedding");
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("not wasm", b"#!/bin/sh\necho hello\n".to_vec(), "not a WebAssembly file"),
        ("half-written", valid[..valid.len() / 2].to_vec(), "not a valid policy component"),
        ("wrong WIT version", std::fs::read(guest_artifacts::OTHER_VERSION).unwrap(), "mqtt-policy:policy@0.2.0"),
        ("imports the filesystem", std::fs::read(guest_artifacts::FS_READER).unwrap(), "wasi:filesystem"),
        ("settings that fail validation", invalid_settings, "invalid settings"),
    ];
    for (what, bytes, cause) in cases {
        assert_eq!(bad_file(&b, &bytes, cause), 1, "{what}: one event");
        answers_as_before(&mut d);
    }

    // Deleted: a warning, and the loaded policy stays.
    std::fs::remove_file(b.policy_dir.join("good.wasm")).unwrap();
    b.wait_event("file removed", |ev| field(ev, "outcome") == "file-removed" && field(ev, "tenant") == "good");
    answers_as_before(&mut d);

    // The directory goes away (an unmounted volume): one event per tenant, policies stay.
    let moved = b.policy_dir.with_extension("away");
    std::fs::rename(&b.policy_dir, &moved).unwrap();
    b.wait_event("directory unreadable", |ev| field(ev, "message").contains("cannot read policy directory"));
    std::thread::sleep(Duration::from_millis(400));
    let dir_events =
        b.events().iter().filter(|ev| field(ev, "message").contains("cannot read policy directory")).count();
    assert_eq!(dir_events, 2, "one event per loaded tenant, not one per scan");
    answers_as_before(&mut d);
    std::fs::rename(&moved, &b.policy_dir).unwrap();

    // A burst of changes: the last one wins.
    let loads = b.events().iter().filter(|ev| field(ev, "outcome") == "loaded").count();
    let permissive =
        support::hub_policy(&SHARED.replace("devices/${device.id}/telemetry/#", "devices/+/telemetry/#"), &[]);
    for i in 0..20 {
        let bytes = if i % 3 == 1 {
            &valid[..100]
        } else if i % 2 == 0 {
            &valid[..]
        } else {
            &permissive[..]
        };
        deploy(&b.policy_dir, "good", bytes);
        std::thread::sleep(Duration::from_millis(7));
    }
    deploy(&b.policy_dir, "good", &permissive);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if accepted(d.publish("devices/thermo-2/telemetry/t", 1, false, b"1")) {
            break;
        }
        assert!(Instant::now() < deadline, "the last file of the burst never took over:\n{:#?}", b.events());
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = b.events().iter().filter(|ev| field(ev, "outcome") == "loaded").count();
    assert!(after > loads, "the burst was loaded at least once");

    assert!(d.is_alive() && v311.is_alive(), "nobody was disconnected by any of it");
    assert!(b.alive());
    let disconnects = b.events().iter().filter(|ev| field(ev, "outcome") == "disconnect").count();
    assert_eq!(disconnects, 0, "{:#?}", b.events());
}
