//! The same `.wasm` enforced on every node of a real three-node RabbitMQ 3.10 cluster on this one
//! machine (one Erlang cookie), each node asking its own `mqtt-policy serve` beside it, for MQTT
//! 3.1.1 clients (rumqttc) on different nodes: deliveries across nodes, refusals on every node,
//! a node stopped mid-run, and a service killed and restarted.
//!
//! One cluster for the whole file (three Erlang boots take ~30 s here), its scenarios run in
//! order by one test.

use std::time::{Duration, Instant};

use mqtt_policy_testkit::client::{Mqtt, Opts, Proto};
use mqtt_policy_testkit::rabbitmq::ibm::{APP_FILTER, app, device, evt, rules};
use mqtt_policy_testkit::rabbitmq::{Cluster, DecisionService};
use mqtt_policy_testkit::{TempDir, field, hub_policy};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-policy");

/// Whether any service wrote an event matching `pred` within 10 s.
fn wait_event(services: &[DecisionService], what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !services.iter().any(|s| s.events().iter().any(&pred)) {
        assert!(Instant::now() < deadline, "no event {what} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_three_node_rabbitmq_cluster_enforces_the_same_policy_on_every_node() {
    let policy = hub_policy(&rules(), &[]);
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("cluster-serve-{i}"))).collect();
    let mut services: Vec<DecisionService> = dirs
        .iter()
        .map(|dir| DecisionService::start(BIN.as_ref(), dir, &[("acme", policy.clone())], &[]).unwrap())
        .collect();
    let urls: Vec<String> = services.iter().map(DecisionService::url).collect();
    let started = Instant::now();
    let mut cluster = Cluster::start("rabbitmq-3", 3, &urls, "acme").unwrap();
    eprintln!("three clustered nodes up in {:?}", started.elapsed());
    let running = cluster.running_nodes(0).unwrap();
    assert_eq!(running.len(), 3, "one cluster of three running nodes: {running:?}");
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.mqtt_port).collect();
    let port = |i: usize| ports[i];

    // A device on node 1, applications on nodes 2 and 3: the event crosses the cluster.
    let mut ops2 = Mqtt::connected(&app(port(1), "ops-n2"));
    let mut ops3 = Mqtt::connected(&app(port(2), "ops-n3"));
    assert_eq!(ops2.subscribe(APP_FILTER, 1), 1);
    assert_eq!(ops3.subscribe(APP_FILTER, 1), 1);
    let mut s1 = Mqtt::connected(&device(port(0), "s1"));
    assert_eq!(s1.try_publish(&evt("s1", "status"), 1, false, b"from node 1"), Ok(None));
    for ops in [&mut ops2, &mut ops3] {
        assert_eq!(ops.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"from node 1".to_vec()));
    }

    // Every node refuses what the policy refuses, through its own service.
    for node in 0..3 {
        let mut s = Mqtt::connected(&device(port(node), "s4"));
        assert!(s.try_publish(&evt("s2", "forged"), 1, false, b"forged").is_err(), "node {} closes it", node + 1);
        let (_c, code) =
            Mqtt::connect(&Opts::new(port(node), Proto::V311, "d:acme:sensor:s4").user("use-token-auth", "bad"));
        assert_eq!(code, 4, "bad token refused on node {}", node + 1);
    }
    for (i, s) in services.iter().enumerate() {
        assert!(
            s.events().iter().any(|e| field(e, "outcome") == "deny" && field(e, "topic") == evt("s2", "forged")),
            "service {} decided its node's refusal",
            i + 1
        );
    }
    assert!(ops2.drain(Duration::from_millis(500)).is_empty() && ops3.drain(Duration::from_millis(10)).is_empty());

    // Node 2 stops mid-run: its clients reconnect to node 3 and are still enforced.
    let mut s2 = Mqtt::connected(&device(port(1), "s2"));
    assert_eq!(s2.try_publish(&evt("s2", "before"), 1, false, b"before"), Ok(None));
    assert_eq!(ops3.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"before".to_vec()));
    let _ = ops2; // connected to node 2, which stops
    cluster.stop_node(1);
    assert!(s2.closed(Duration::from_secs(10)).is_some(), "the stopped node's client loses its connection");
    let mut s2 = Mqtt::connected(&device(port(2), "s2"));
    assert_eq!(s2.try_publish(&evt("s2", "after"), 1, false, b"after"), Ok(None));
    let got: Vec<Vec<u8>> = ops3.drain(Duration::from_secs(2)).into_iter().map(|m| m.1).collect();
    assert_eq!(got, vec![b"after".to_vec()], "delivered once, on the surviving nodes");
    assert!(s2.try_publish(&evt("s1", "forged"), 1, false, b"forged").is_err(), "still enforced on node 3");
    wait_event(&services[2..], "node 3's refusal of the moved client", |e| {
        field(e, "client_id") == "d:acme:sensor:s2" && field(e, "topic") == evt("s1", "forged")
    });

    // The service beside node 1 is killed: node 1 admits nobody while it is down, node 3 still
    // does, and after its restart node 1 admits again.
    services[0].kill();
    let (_c, code) = Mqtt::connect(&device(port(0), "s3"));
    assert_ne!(code, 0, "node 1 grants nothing while its service is down");
    let mut s3 = Mqtt::connected(&device(port(2), "s3"));
    assert_eq!(s3.try_publish(&evt("s3", "status"), 1, false, b"via node 3"), Ok(None));
    assert_eq!(ops3.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"via node 3".to_vec()));
    services[0].restart().unwrap();
    let mut s3 = Mqtt::connected(&device(port(0), "s3"));
    assert_eq!(s3.try_publish(&evt("s3", "back"), 1, false, b"node 1 again"), Ok(None));
    assert_eq!(ops3.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"node 1 again".to_vec()));
    drop(cluster);
    drop(services);
}
