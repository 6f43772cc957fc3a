//! Memory per loaded tenant: 1,000 tenants, each with its own hub-rules policy (the shared-hub
//! example with the tenant's own device ids), a live instance and one connected device. Prints
//! the process's resident memory before and after, and the load time per tenant.
//!
//! `cargo bench -p mqtt-policy-host --bench tenants` (`-- N` for another tenant count)

use std::time::Instant;

use mqtt_policy_host::*;

const SHARED: &str = include_str!("../../../policies/examples/shared-hub/rules.toml");

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and then a short run
    // checks that the bench still works. A bare number is the tenant count.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default = if args.iter().any(|a| a == "--bench") { 1_000 } else { 20 };
    let tenants: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(default);
    let engine = Engine::new(Limits::default()).expect("engine");
    let wasm = std::fs::read(guest_artifacts::HUB_RULES).expect("hub-rules wasm");

    // Compile once first, so the figure is what each further tenant adds (code is shared).
    let warm = engine.load_bytes("warm-up", &wasm, Some(SHARED)).expect("load");
    drop(warm);
    let before = rss_kib();
    let mut live = Vec::with_capacity(tenants);
    let mut load_times = Vec::with_capacity(tenants);
    for i in 0..tenants {
        // Without the SAS keys, and saying so: this measures tenants, not proofs.
        let rules: String = SHARED
            .replace("thermo-", &format!("t{i}-thermo-"))
            .lines()
            .filter(|l| !l.starts_with("sas-key"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + "[identity]\nauthentication = \"none\"\n";
        let started = Instant::now();
        let module = engine.load_bytes(&format!("tenant-{i}"), &wasm, Some(&rules)).expect("load");
        let mut policy = module.instantiate(Tenant::new(&format!("tenant-{i}")));
        let device = format!("t{i}-thermo-1");
        let ConnectDecision::Accept(session, _) = policy.authenticate(&Connect::new(&format!("tenant-{i}"), &device))
        else {
            panic!("{device} is registered")
        };
        let topic = format!("devices/{device}/telemetry/temp");
        let publish = Publish { topic: &topic, qos: 1, retain: false, payload_size: 64 };
        assert_eq!(policy.authorize_publish(session, &publish), PublishDecision::Allow);
        load_times.push(started.elapsed());
        live.push(policy);
    }
    let after = rss_kib();
    load_times.sort();
    let per = (after.saturating_sub(before)) as f64 / tenants as f64;
    println!("tenants: {tenants} live hub-rules policies (shared-hub example), one session each");
    println!("resident: {:.1} MiB before, {:.1} MiB after", before as f64 / 1024.0, after as f64 / 1024.0);
    println!("per tenant: {:.0} KiB ({:.2} MiB)", per, per / 1024.0);
    println!(
        "load + instantiate + first checks per tenant: median {:?}, p99 {:?}",
        load_times[tenants / 2],
        load_times[tenants * 99 / 100]
    );
    drop(live);
}
