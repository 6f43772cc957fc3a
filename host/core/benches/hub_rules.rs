//! The hub-rules policy with 10, 1,000 and 100,000 devices in its registry: a publish and a
//! delivery check through the component (cached and uncached), the same checks on the native `Hub` (the floor),
//! and the time to load a 100,000-device rules document.
//!
//! `cargo bench -p mqtt-policy-host --bench hub_rules`
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hub_document::rules;
use mqtt_policy_host::*;
use native_hub::{NoHost, guest_connect};

#[path = "support/hub_document.rs"]
mod hub_document;
#[path = "support/native_hub.rs"]
mod native_hub;

/// Limits for large registries: parsing 100,000 devices needs more than the default memory.
fn limits() -> Limits {
    Limits { memory: 512 << 20, setup_deadline: Duration::from_secs(60), ..Limits::default() }
}

fn bench(c: &mut Criterion) {
    let engine = Engine::new(limits()).unwrap();
    let wasm = std::fs::read(guest_artifacts::HUB_RULES).unwrap();

    let mut group = c.benchmark_group("hub_rules");
    for devices in [10usize, 1_000, 100_000] {
        let text = rules(devices);
        let module = engine.load_bytes("hub-rules", &wasm, Some(&text)).unwrap();
        let mut policy = module.instantiate(Tenant::new("bench"));
        let id = format!("dev-{}", devices / 2);
        let ConnectDecision::Accept(session, _) = policy.authenticate(&Connect::new("bench", &id)) else {
            panic!("{id} is registered")
        };
        let topic = format!("devices/{id}/telemetry/temp");
        let command = format!("devices/{id}/commands/reboot");
        let publish = Publish { topic: &topic, qos: 1, retain: false, payload_size: 64 };
        let delivery = Delivery { topic: &command, qos: 1, retain: false, payload_size: 64 };
        assert_eq!(policy.authorize_publish(session, &publish), PublishDecision::Allow);
        assert_eq!(policy.authorize_delivery(session, &delivery), DeliveryDecision::Allow);
        // Cached: the policy marks these decisions reusable, so repeats skip the component call.
        group.bench_function(BenchmarkId::new("authorize_publish (component, cached)", devices), |b| {
            b.iter(|| policy.authorize_publish(session, black_box(&publish)))
        });
        group.bench_function(BenchmarkId::new("authorize_delivery (component, cached)", devices), |b| {
            b.iter(|| policy.authorize_delivery(session, black_box(&delivery)))
        });
        policy.set_caching(false);
        group.bench_function(BenchmarkId::new("authorize_publish (component, uncached)", devices), |b| {
            b.iter(|| policy.authorize_publish(session, black_box(&publish)))
        });
        group.bench_function(BenchmarkId::new("authorize_delivery (component, uncached)", devices), |b| {
            b.iter(|| policy.authorize_delivery(session, black_box(&delivery)))
        });

        // The same checks on the native Hub, with the guest types the policy uses.
        let hub = hub_rules::hub::Hub::compile(&text).unwrap();
        let (_, native_session) = hub.authenticate(&guest_connect("bench", &id), &NoHost).unwrap();
        let native_publish =
            mqtt_policy_guest::Publish { topic: topic.clone(), qos: 1, retain: false, payload_size: 64 };
        let native_delivery =
            mqtt_policy_guest::Delivery { topic: command.clone(), qos: 1, retain: false, payload_size: 64 };
        group.bench_function(BenchmarkId::new("authorize_publish (native)", devices), |b| {
            b.iter(|| hub.authorize_publish(&native_session, black_box(&native_publish), &NoHost))
        });
        group.bench_function(BenchmarkId::new("authorize_delivery (native)", devices), |b| {
            b.iter(|| hub.authorize_delivery(&native_session, black_box(&native_delivery)))
        });
    }
    group.finish();

    let text = rules(100_000);
    let mut load = c.benchmark_group("hub_rules_load");
    load.sample_size(10);
    load.bench_function("load 100,000-device rules (validate-settings; component cached)", |b| {
        b.iter(|| engine.load_bytes("hub-rules", &wasm, Some(&text)).unwrap())
    });
    load.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
