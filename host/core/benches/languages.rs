//! The hello policy in Rust, Python (componentize-py) and JavaScript (componentize-js), measured
//! in one run: `.wasm` size, compile time, instantiate time, resident memory per instance, and
//! `authorize_publish` uncached (a call into the component) and cached (the host's decision
//! cache, which hello's allow asks for). A plain timing loop, not criterion: compiling the Python
//! component takes seconds, so each figure is the median of a few repetitions.
//!
//! `scripts/build-lang-policies.sh install && cargo bench --workspace --locked --bench languages`
//! (the fixtures build the components; figures in BENCHMARKS.md, "One policy in three languages").

use std::hint::black_box;
use std::time::{Duration, Instant};

use mqtt_policy_host::*;

const SETTINGS: &str = "max-payload = 4096";
const COMPILES: usize = 3;
const INSTANTIATES: usize = 20;
const RESIDENT: usize = 10;
const CALLS: u32 = 20_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time of the calling thread (compiling runs on it: `parallel_compilation` is off).
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Resident memory of this process, from `/proc/self/statm`, in bytes.
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

fn per_call(policy: &mut Policy, session: SessionId, publish: &Publish<'_>) -> Duration {
    let runs = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                black_box(policy.authorize_publish(session, black_box(publish)));
            }
            start.elapsed() / CALLS
        })
        .collect();
    median(runs)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter.
    let languages = [
        ("Rust", guest_artifacts::HELLO),
        ("Python", guest_artifacts::lang(guest_artifacts::HELLO_PY)),
        ("JavaScript", guest_artifacts::lang(guest_artifacts::HELLO_JS)),
    ];
    println!(
        "| language | .wasm | compile (load: compile, link, validate), CPU / wall | instantiate (+ validate-settings) | \
         resident per instance | authorize_publish uncached | cached |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (language, path) in languages {
        let bytes = std::fs::read(path).unwrap();
        let (walls, cpus): (Vec<Duration>, Vec<Duration>) = (0..COMPILES)
            .map(|_| {
                let engine = Engine::new(Limits::default()).unwrap();
                let (start, cpu) = (Instant::now(), thread_cpu());
                black_box(engine.load_bytes(language, &bytes, Some(SETTINGS)).unwrap());
                (start.elapsed(), thread_cpu() - cpu)
            })
            .unzip();
        let (compile, compile_cpu) = (median(walls), median(cpus));

        let engine = Engine::new(Limits::default()).unwrap();
        let module = engine.load_bytes(language, &bytes, Some(SETTINGS)).unwrap();
        let instantiates = (0..INSTANTIATES)
            .map(|_| {
                let start = Instant::now();
                let mut p = module.instantiate(Tenant::new("t"));
                p.prepare().unwrap();
                let took = start.elapsed();
                drop(p);
                took
            })
            .collect();
        let instantiate = median(instantiates);

        // Live instances, each after a connect and a publish: what a broker holds per tenant.
        let before = resident();
        let held: Vec<Policy> = (0..RESIDENT)
            .map(|_| {
                let mut p = module.instantiate(Tenant::new("t"));
                let ConnectDecision::Accept(s, _) = p.authenticate(&Connect::new("t", "sensor-1")) else {
                    panic!("{language}: hello accepts sensor-1")
                };
                let publish = Publish { topic: "devices/sensor-1/t", qos: 1, retain: false, payload_size: 64 };
                assert_eq!(p.authorize_publish(s, &publish), PublishDecision::Allow);
                p
            })
            .collect();
        let per_instance = resident().saturating_sub(before) / RESIDENT;
        drop(held);

        let mut policy = module.instantiate(Tenant::new("t"));
        let ConnectDecision::Accept(session, _) = policy.authenticate(&Connect::new("t", "sensor-1")) else {
            panic!("{language}: hello accepts sensor-1")
        };
        let publish = Publish { topic: "devices/sensor-1/temperature", qos: 1, retain: false, payload_size: 64 };
        assert_eq!(policy.authorize_publish(session, &publish), PublishDecision::Allow);
        assert_eq!(policy.cached_decisions(), 1, "{language}: hello's allow is cached");
        let cached = per_call(&mut policy, session, &publish);
        policy.set_caching(false);
        let uncached = per_call(&mut policy, session, &publish);
        assert_eq!(policy.cached_decisions(), 0);

        println!(
            "| {language} | {:.2} MB | {:.1} s / {:.1} s | {:.0} µs | {} KiB | {:.2} µs | {:.0} ns |",
            bytes.len() as f64 / 1e6,
            compile_cpu.as_secs_f64(),
            compile.as_secs_f64(),
            instantiate.as_secs_f64() * 1e6,
            per_instance >> 10,
            uncached.as_secs_f64() * 1e6,
            cached.as_secs_f64() * 1e9,
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average at the end (1, 5, 15 min): {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}
