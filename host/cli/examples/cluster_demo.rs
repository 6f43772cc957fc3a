//! The cluster demo (`scripts/cluster-demo.sh`): three real RabbitMQ nodes clustered on this
//! machine, one `mqtt-policy serve` beside each with the ibm-platform example as tenant `acme`,
//! scripted MQTT 3.1.1 clients on all three nodes; every outcome is printed with the event
//! behind it, and the exit status is non-zero if any outcome differs from the expected one.
//!
//! ```sh
//! cargo build --workspace --all-targets --locked && target/debug/examples/cluster_demo
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mqtt_policy_testkit::client::{Mqtt, Opts, Proto};
use mqtt_policy_testkit::proofs::{API_KEY, API_TOKEN, device_token};
use mqtt_policy_testkit::rabbitmq::{Cluster, DecisionService};
use mqtt_policy_testkit::{TempDir, field, hub_policy};

const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");
const APP_FILTER: &str = "iot-2/type/+/id/+/evt/+/fmt/+";

/// The `mqtt-policy` binary cargo built beside this example.
fn cli() -> PathBuf {
    let exe = std::env::current_exe().expect("example path");
    let p = exe.parent().and_then(|d| d.parent()).expect("profile dir").join("mqtt-policy");
    assert!(p.exists(), "{} not found: cargo build --workspace --all-targets --locked", p.display());
    p
}

fn device(port: u16, id: &str) -> Opts {
    Opts::new(port, Proto::V311, &format!("d:acme:sensor:{id}")).user("use-token-auth", &device_token(id))
}

fn evt(id: &str, event: &str) -> String {
    format!("iot-2/type/sensor/id/{id}/evt/{event}/fmt/json")
}

struct Demo {
    services: Vec<DecisionService>,
    failures: usize,
    /// When the previous outcome was printed: later events belong to the next one.
    since_ms: u64,
}

impl Demo {
    /// Prints one outcome with the newest event of `client` on `node`'s service since the
    /// previous outcome, and counts a difference from `expected`.
    fn outcome(&mut self, node: usize, client: &str, what: &str, seen: &str, expected: &str) {
        std::thread::sleep(Duration::from_millis(100));
        let event = self.services[node]
            .events()
            .into_iter()
            .rev()
            .find(|e| field(e, "client_id") == client && e["time_ms"].as_u64().unwrap_or(0) >= self.since_ms)
            .map(|e| {
                let reason = e.get("reason").and_then(|r| r.as_str()).map(|r| format!(" ({r})")).unwrap_or_default();
                format!("{}{reason}: {}", field(&e, "outcome"), field(&e, "message"))
            })
            .unwrap_or_else(|| "none".into());
        self.since_ms = mqtt_policy_host::events::now_ms();
        let ok = seen == expected;
        if !ok {
            self.failures += 1;
        }
        println!(
            "{} node {} {client:<22} {what:<52} -> {seen:<9} {}| event: {event}",
            if ok { "ok  " } else { "FAIL" },
            node + 1,
            if ok { String::new() } else { format!("(expected {expected}) ") }
        );
    }
}

fn published(r: Result<Option<u8>, String>) -> &'static str {
    if r.is_ok() { "puback" } else { "closed" }
}

fn main() {
    // The example's rules without its per-check message quota (README, "Clusters (RabbitMQ)").
    let rules = format!("{}{}", &IBM[..IBM.find("[hub.rate]").unwrap()], &IBM[IBM.find("[identity]").unwrap()..]);
    let policy = hub_policy(&rules, &[]);
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("cluster-demo-serve-{i}"))).collect();
    let services: Vec<DecisionService> = dirs
        .iter()
        .map(|d| DecisionService::start(&cli(), d, &[("acme", policy.clone())], &[]).expect("mqtt-policy serve"))
        .collect();
    let urls: Vec<String> = services.iter().map(DecisionService::url).collect();
    println!("==> starting three clustered RabbitMQ nodes, each asking the decision service beside it");
    let started = Instant::now();
    let mut cluster = Cluster::start("cluster-demo", 3, &urls, "acme").expect("RabbitMQ cluster");
    let running = cluster.running_nodes(0).expect("cluster_status");
    println!("    {} nodes running in {:.0?}: {}", running.len(), started.elapsed(), running.join(", "));
    let port: Vec<u16> = cluster.nodes.iter().map(|n| n.mqtt_port).collect();
    let mut demo = Demo { services, failures: 0, since_ms: 0 };

    println!("\n==> an application on node 3 receives events published on nodes 1 and 2");
    let mut ops = Mqtt::connected(&Opts::new(port[2], Proto::V311, "a:acme:ops").user(API_KEY, API_TOKEN));
    let code = ops.subscribe(APP_FILTER, 1);
    demo.outcome(2, "a:acme:ops", &format!("subscribe {APP_FILTER}"), &format!("suback {code}"), "suback 1");
    for (node, id) in [(0, "s1"), (1, "s2")] {
        let mut d = Mqtt::connected(&device(port[node], id));
        let r = d.try_publish(&evt(id, "status"), 1, false, b"21.5");
        demo.outcome(
            node,
            &format!("d:acme:sensor:{id}"),
            &format!("publish {}", evt(id, "status")),
            published(r),
            "puback",
        );
        let got = ops.recv(Duration::from_secs(5)).map(|m| m.0).unwrap_or_default();
        demo.outcome(
            2,
            "a:acme:ops",
            "receives it",
            if got == evt(id, "status") { "delivered" } else { "missing" },
            "delivered",
        );
    }

    println!("\n==> every node refuses what the policy refuses");
    for (node, &p) in port.iter().enumerate() {
        let mut d = Mqtt::connected(&device(p, "s3"));
        let r = d.try_publish(&evt("s1", "forged"), 1, false, b"forged");
        demo.outcome(node, "d:acme:sensor:s3", &format!("publish {}", evt("s1", "forged")), published(r), "closed");
        let mut d = Mqtt::connected(&device(p, "s4"));
        let r = d.try_subscribe(APP_FILTER, 1);
        demo.outcome(
            node,
            "d:acme:sensor:s4",
            &format!("subscribe {APP_FILTER}"),
            if r.is_ok() { "suback" } else { "closed" },
            "closed",
        );
        let bad = Opts::new(p, Proto::V311, "d:acme:sensor:s0").user("use-token-auth", "wrong-token");
        let (_c, code) = Mqtt::connect(&bad);
        demo.outcome(node, "d:acme:sensor:s0", "connect with a wrong token", &format!("connack {code}"), "connack 4");
    }
    let leaked = ops.drain(Duration::from_millis(500)).len();
    demo.outcome(2, "a:acme:ops", "receives any refused publish", &format!("{leaked} msgs"), "0 msgs");

    println!("\n==> node 2 stops; its device reconnects to node 3 and is still enforced");
    let mut d = Mqtt::connected(&device(port[1], "s2"));
    cluster.stop_node(1);
    let closed = d.closed(Duration::from_secs(10)).is_some();
    demo.outcome(
        1,
        "d:acme:sensor:s2",
        "connection to the stopped node",
        if closed { "closed" } else { "open" },
        "closed",
    );
    let mut d = Mqtt::connected(&device(port[2], "s2"));
    let r = d.try_publish(&evt("s2", "moved"), 1, false, b"moved");
    demo.outcome(2, "d:acme:sensor:s2", &format!("publish {}", evt("s2", "moved")), published(r), "puback");
    let r = d.try_publish(&evt("s1", "forged"), 1, false, b"forged");
    demo.outcome(2, "d:acme:sensor:s2", &format!("publish {}", evt("s1", "forged")), published(r), "closed");

    println!("\n==> the service beside node 1 is killed, then restarted");
    demo.services[0].kill();
    let (_c, code) = Mqtt::connect(&device(port[0], "s4"));
    demo.outcome(
        0,
        "d:acme:sensor:s4",
        "connect while node 1's service is down",
        &format!("connack {code}"),
        "connack 4",
    );
    demo.services[0].restart().expect("restart");
    let (_c, code) = Mqtt::connect(&device(port[0], "s4"));
    demo.outcome(0, "d:acme:sensor:s4", "connect after its restart", &format!("connack {code}"), "connack 0");

    drop(cluster);
    drop(demo.services);
    // `exit` skips destructors: the directories go first.
    drop(dirs);
    println!();
    if demo.failures > 0 {
        println!("{} outcome(s) differed from the expected ones", demo.failures);
        std::process::exit(1);
    }
    println!("every outcome as expected; every node and service stopped");
}
