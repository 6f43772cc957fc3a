//! Cost of a policy, stage by stage: compile, instantiate, and one check through the
//! component, beside the same rule in native Rust (the floor).
//!
//! `cargo bench -p mqtt-policy-host --bench call`
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hello_policy::rules::Rules;
use mqtt_policy_host::*;

const SETTINGS: &str = "max-payload = 4096";

fn bench(c: &mut Criterion) {
    let bytes = std::fs::read(guest_artifacts::HELLO).expect("hello policy built");

    c.bench_function("compile: load hello.wasm (compile, link, validate settings)", |b| {
        b.iter_batched(
            || Engine::new(Limits::default()).unwrap(),
            |engine| engine.load_bytes("hello", &bytes, Some(SETTINGS)).unwrap(),
            BatchSize::PerIteration,
        )
    });

    let engine = Engine::new(Limits::default()).unwrap();
    let module = engine.load_bytes("hello", &bytes, Some(SETTINGS)).unwrap();
    c.bench_function("instantiate: new store + instance + validate-settings", |b| {
        b.iter(|| {
            let mut p = module.instantiate(Tenant::new("t"));
            p.prepare().unwrap();
            p
        })
    });

    let mut policy = module.instantiate(Tenant::new("t"));
    // hello lets the host cache its allows; these figures are of the call into the component.
    policy.set_caching(false);
    let ConnectDecision::Accept(session, _) = policy.authenticate(&Connect::new("t", "sensor-1")) else {
        panic!("hello accepts sensor-1")
    };
    let publish = Publish { topic: "devices/sensor-1/temperature", qos: 1, retain: false, payload_size: 64 };
    let delivery = Delivery { topic: "devices/sensor-1/commands/reboot", qos: 1, retain: false, payload_size: 64 };
    assert_eq!(policy.authorize_publish(session, &publish), PublishDecision::Allow);

    let mut calls = c.benchmark_group("call");
    calls.bench_function("authorize_publish (wasm component, allow)", |b| {
        b.iter(|| policy.authorize_publish(session, black_box(&publish)))
    });
    calls.bench_function("authorize_delivery (wasm component, allow)", |b| {
        b.iter(|| policy.authorize_delivery(session, black_box(&delivery)))
    });
    let rules = Rules::parse(SETTINGS).unwrap();
    calls.bench_function("check_publish (native Rust, same rule)", |b| {
        b.iter(|| rules.check_publish(black_box("sensor-1"), black_box(publish.topic), black_box(64)))
    });
    calls.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
