//! Events published by the broker to a monitoring topic, IBM style, read with mosquitto_sub.

use mqtt_policy_testkit as support;
use support::proofs;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::client::{Mqtt, Proto};
use support::{Broker, Setup};

const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");

#[test]
fn events_reach_subscribers_of_the_monitoring_topic() {
    let setup = Setup::tenant("acme", support::hub_policy(IBM, &[]))
        .option("monitor_topic", "iot-2/type/platform/id/{tenant}/mon");
    let b = Broker::start("monitor", setup).unwrap();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &b.port.to_string(), "-V", "311", "-i", "a:acme:ops"])
        .args(["-u", proofs::API_KEY, "-P", proofs::API_TOKEN])
        .args(["-t", "iot-2/type/+/id/+/mon", "-C", "3", "-W", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // mosquitto_sub's own accept event may or may not reach itself; wait until it is subscribed.
    std::thread::sleep(Duration::from_millis(700));
    let (_c, code) = Mqtt::connect(&proofs::ibm(b.port, Proto::V5, "d:other-org:sensor:1"));
    assert_eq!(code, 0x87);
    let mut d = Mqtt::connected(&proofs::ibm(b.port, Proto::V5, "d:acme:meter:m1"));
    assert_eq!(d.publish("iot-2/type/meter/id/m1/mon", 1, false, b"forged"), Some(0x87));
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON event")).collect();
    assert_eq!(events.len(), 3, "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let outcomes: Vec<&str> = events.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["reject", "accept", "deny"], "{text}");
    assert_eq!(events[2]["topic"], "iot-2/type/meter/id/m1/mon");
    assert_eq!(events[2]["reason_code"], 0x87);
}
