//! What a looping policy costs another tenant: a real Mosquitto with two tenant listeners,
//! `evil` (the misbehave guest) and `good` (the hello policy). `--loopers` clients of `evil`
//! publish QoS 1 to `boom/loop` (the policy spins until the deadline) back to back, while one
//! client of `good` publishes QoS 1 every `--pause-ms` and measures each PUBACK round trip.
//! Prints p50, p99 and max of those round trips, and what happened to the looping tenant
//! (timeouts, circuit openings, publishes answered). A measurement, not a test: figures are in
//! RELIABILITY.md.
//!
//! ```sh
//! cargo build --workspace --all-targets --locked
//! target/debug/examples/breaker_bench --seconds 60                       # breaker on (defaults)
//! target/debug/examples/breaker_bench --seconds 60 --breaker-timeouts 0  # breaker off
//! target/debug/examples/breaker_bench --seconds 60 --loopers 0           # no looping tenant
//! ```

use mqtt_policy_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::client::{Mqtt, Opts, Proto};
use support::{Broker, field};

struct Args {
    seconds: u64,
    loopers: usize,
    breaker_timeouts: Option<u32>,
    deadline_ms: u64,
    pause_ms: u64,
}

fn args() -> Args {
    let mut a = Args { seconds: 60, loopers: 4, breaker_timeouts: None, deadline_ms: 10, pause_ms: 5 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = || pair.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| usage(&pair[0]));
        match pair[0].as_str() {
            "--seconds" => a.seconds = value(),
            "--loopers" => a.loopers = value() as usize,
            "--breaker-timeouts" => a.breaker_timeouts = Some(value() as u32),
            "--deadline-ms" => a.deadline_ms = value(),
            "--pause-ms" => a.pause_ms = value(),
            other => usage(other),
        }
    }
    a
}

fn usage(arg: &str) -> ! {
    eprintln!(
        "breaker_bench: bad argument {arg}\nusage: breaker_bench [--seconds 60] [--loopers 4] \
         [--breaker-timeouts N (0: off; default: the plugin's)] [--deadline-ms 10] [--pause-ms 5]"
    );
    std::process::exit(2)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let a = args();
    let misbehave = std::fs::read(guest_artifacts::MISBEHAVE).expect("misbehave guest");
    let hello = std::fs::read(guest_artifacts::HELLO).expect("hello policy");
    let breaker = a.breaker_timeouts.map(|n| format!("plugin_opt_breaker_timeouts {n}\n")).unwrap_or_default();
    let policies = [("evil", misbehave), ("good", hello)];
    let mut broker = Broker::start_conf("breaker-bench", &policies, 2, |plugin, dir, events, ports| {
        let mut conf = String::from("per_listener_settings true\n");
        for (port, tenant) in [(ports[0], "evil"), (ports[1], "good")] {
            conf += &format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\nplugin {}\nplugin_opt_policy_dir {}\n\
                 plugin_opt_events {}\nplugin_opt_tenant {tenant}\nplugin_opt_deadline_ms {}\n{breaker}",
                plugin.display(),
                dir.display(),
                events.display(),
                a.deadline_ms,
            );
        }
        conf
    })
    .expect("starting mosquitto");
    let (evil_port, good_port) = (broker.ports[0], broker.ports[1]);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    // Every looper connects before any loops: once the circuit is open, connects are refused too.
    let clients: Vec<Mqtt> =
        (0..a.loopers).map(|i| Mqtt::connected(&Opts::new(evil_port, Proto::V5, &format!("looper-{i}")))).collect();
    let loopers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    c.publish("boom/loop", 1, false, b"x");
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut good = Mqtt::connected(&Opts::new(good_port, Proto::V5, "sensor-1"));
    let mut rtts = Vec::new();
    let mut refused = 0usize;
    let end = Instant::now() + Duration::from_secs(a.seconds);
    while Instant::now() < end {
        let t = Instant::now();
        let code = good.publish("devices/sensor-1/temp", 1, false, b"21.5");
        rtts.push(t.elapsed());
        if !matches!(code, Some(0 | 0x10)) {
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(a.pause_ms));
    }
    stop.store(true, Ordering::Relaxed);
    for l in loopers {
        let _ = l.join();
    }
    rtts.sort_unstable();

    let events = broker.events();
    let count = |tenant: &str, outcome: &str| {
        events.iter().filter(|e| field(e, "tenant") == tenant && field(e, "outcome") == outcome).count()
    };
    println!(
        "{} s, {} looping client(s) on tenant evil, deadline {} ms, breaker_timeouts {}",
        a.seconds,
        a.loopers,
        a.deadline_ms,
        a.breaker_timeouts.map(|n| n.to_string()).unwrap_or_else(|| "default".into())
    );
    println!(
        "good tenant: {} QoS 1 publishes ({} refused); PUBACK round trip p50 {}, p99 {}, max {}",
        rtts.len(),
        refused,
        ms(percentile(&rtts, 50.0)),
        ms(percentile(&rtts, 99.0)),
        ms(*rtts.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "evil tenant: {} publishes answered, {} timeouts, {} circuit-open, {} circuit-closed events \
         (events are capped at 1,000 a second per tenant; `suppressed` events: {})",
        answered.load(Ordering::Relaxed),
        count("evil", "timeout"),
        count("evil", "circuit-open"),
        count("evil", "circuit-closed"),
        count("evil", "suppressed")
    );
    assert!(broker.alive(), "the broker died:\n{}", broker.log());
}
