//! A fixed number of uncached checks through the component and the same checks on the native
//! hub-rules `Hub`, plus the misbehave fixture's publish check for an ordinary topic (the
//! SDK's session lookup, one string match, `allow`: the floor of a component call with a topic
//! argument). Made to be counted, not timed: under valgrind's
//! callgrind the instructions per check are the same from run to run, where timings on this
//! VM move by 10 % (`scripts/count-checks.sh` runs it and prints instructions per check).
//!
//! `cargo run --release -p mqtt-policy-host --example check_counts -- N`
use std::hint::black_box;

use hub_document::rules;
use mqtt_policy_host::*;
use native_hub::{NoHost, guest_connect};

#[path = "../benches/support/hub_document.rs"]
mod hub_document;
#[path = "../benches/support/native_hub.rs"]
mod native_hub;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let engine = Engine::new(Limits::default())?;

    // The hub_rules bench's document for 10 devices; dev-5 is its middle one, as there.
    let rules = rules(10);
    let module = engine.load_bytes("hub-rules", &std::fs::read(guest_artifacts::HUB_RULES)?, Some(&rules))?;
    let mut policy = module.instantiate(Tenant::new("count"));
    policy.set_caching(false);
    let ConnectDecision::Accept(session, _) = policy.authenticate(&Connect::new("count", "dev-5")) else {
        anyhow::bail!("dev-5 is registered")
    };
    let publish = Publish { topic: "devices/dev-5/telemetry/temp", qos: 1, retain: false, payload_size: 64 };
    let delivery = Delivery { topic: "devices/dev-5/commands/reboot", qos: 1, retain: false, payload_size: 64 };
    anyhow::ensure!(component_publish(&mut policy, session, &publish, n) == n, "a publish was refused");
    anyhow::ensure!(component_delivery(&mut policy, session, &delivery, n) == n, "a delivery was refused");

    let hub = hub_rules::hub::Hub::compile(&rules).map_err(anyhow::Error::msg)?;
    let (_, native) =
        hub.authenticate(&guest_connect("count", "dev-5"), &NoHost).map_err(|d| anyhow::anyhow!("{d:?}"))?;
    let p = mqtt_policy_guest::Publish { topic: publish.topic.into(), qos: 1, retain: false, payload_size: 64 };
    let d = mqtt_policy_guest::Delivery { topic: delivery.topic.into(), qos: 1, retain: false, payload_size: 64 };
    anyhow::ensure!(native_publish(&hub, &native, &p, n) == n, "a native publish was refused");
    anyhow::ensure!(native_delivery(&hub, &native, &d, n) == n, "a native delivery was refused");

    let floor = engine.load_bytes("floor", &std::fs::read(guest_artifacts::MISBEHAVE)?, None)?;
    let mut floor = floor.instantiate(Tenant::new("count"));
    floor.set_caching(false);
    let ConnectDecision::Accept(s, _) = floor.authenticate(&Connect::new("count", "dev-5")) else {
        anyhow::bail!("the misbehave fixture accepts every client")
    };
    anyhow::ensure!(floor_publish(&mut floor, s, &publish, n) == n, "the floor refused a publish");
    println!("{n} checks of each kind, all allowed");
    Ok(())
}

// One function per kind, never inlined, so callgrind counts each by name.
#[inline(never)]
fn component_publish(policy: &mut Policy, s: SessionId, p: &Publish<'_>, n: usize) -> usize {
    (0..n).filter(|_| policy.authorize_publish(s, black_box(p)) == PublishDecision::Allow).count()
}

#[inline(never)]
fn component_delivery(policy: &mut Policy, s: SessionId, d: &Delivery<'_>, n: usize) -> usize {
    (0..n).filter(|_| policy.authorize_delivery(s, black_box(d)) == DeliveryDecision::Allow).count()
}

#[inline(never)]
fn floor_publish(policy: &mut Policy, s: SessionId, p: &Publish<'_>, n: usize) -> usize {
    // Not the same body as `component_publish`, which the compiler would merge it with.
    (0..n).filter(|_| policy.authorize_publish(s, black_box(p)) != PublishDecision::Defer).count()
}

#[inline(never)]
fn native_publish(
    hub: &hub_rules::hub::Hub,
    s: &hub_rules::hub::Session,
    p: &mqtt_policy_guest::Publish,
    n: usize,
) -> usize {
    (0..n)
        .filter(|_| {
            matches!(hub.authorize_publish(s, black_box(p), &NoHost), mqtt_policy_guest::PublishDecision::Allow)
        })
        .count()
}

#[inline(never)]
fn native_delivery(
    hub: &hub_rules::hub::Hub,
    s: &hub_rules::hub::Session,
    d: &mqtt_policy_guest::Delivery,
    n: usize,
) -> usize {
    (0..n)
        .filter(|_| matches!(hub.authorize_delivery(s, black_box(d)), mqtt_policy_guest::DeliveryDecision::Allow))
        .count()
}
