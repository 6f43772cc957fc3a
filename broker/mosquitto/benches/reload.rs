//! Reload time in a real Mosquitto: from the moment a new `TENANT.wasm` lands in the policy
//! directory (the rename of a fully written file) until a client's publish is answered by the
//! new rules. Alternates between two versions, so every iteration is a real change.
//!
//! `cargo bench -p mqtt-policy-mosquitto --bench reload`
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use mqtt_policy_testkit as support;

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use support::client::{Mqtt, Opts, Proto};
use support::{Broker, Setup};

fn rules(with_b: bool) -> String {
    let mut r = String::from(
        "[hub]\nservice-level = \"dedicated\"\n[identity]\nauthentication = \"none\"\n\n[[device]]\nid = \"d0\"\n\n",
    );
    r += "[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${device.id}/a/#\"]\n\n";
    if with_b {
        r += "[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${device.id}/b/#\"]\n";
    }
    r
}

fn bench(c: &mut Criterion) {
    let versions = [support::hub_policy(&rules(false), &[]), support::hub_policy(&rules(true), &[])];
    let poll = std::env::var("RELOAD_POLL_MS").unwrap_or_else(|_| "100".into());
    let b = Broker::start("bench-reload", Setup::tenant("hub", versions[0].clone()).option("reload_poll_ms", &poll))
        .expect("broker");
    let mut client = Mqtt::connected(&Opts::new(b.port, Proto::V5, "d0"));
    let tmp = b.policy_dir.join(".hub.wasm.tmp");
    let target = b.policy_dir.join("hub.wasm");
    let mut current = 0usize;

    let mut group = c.benchmark_group("reload");
    group.sampling_mode(SamplingMode::Flat).sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function(format!("file lands -> new rules answer (poll {poll} ms)"), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                current = 1 - current;
                std::fs::write(&tmp, &versions[current]).unwrap();
                let started = Instant::now();
                std::fs::rename(&tmp, &target).unwrap();
                // v2 (current == 1) admits b/; v1 refuses it.
                loop {
                    let code = client.publish("devices/d0/b/x", 1, false, b"1");
                    if matches!(code, Some(0 | 0x10)) == (current == 1) {
                        break;
                    }
                    assert!(started.elapsed() < Duration::from_secs(10), "reload not seen within 10 s");
                }
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    assert!(client.is_alive(), "the client stayed connected through every reload");
}

criterion_group!(benches, bench);
criterion_main!(benches);
