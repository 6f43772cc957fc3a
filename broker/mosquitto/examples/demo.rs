//! The main job, end to end: a real Mosquitto with the mqtt-policy plugin enforcing the three
//! example hubs, scripted devices against it, and each outcome printed with the reason code
//! the client saw and the event the plugin wrote. Run by `scripts/demo.sh`.

use mqtt_policy_testkit as support;
use support::proofs;

use std::time::Duration;

use support::client::{Mqtt, Opts, Proto};
use support::pki::Ca;
use support::{Broker, field};

const SHARED: &str = include_str!("../../../policies/examples/shared-hub/rules.toml");
const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");
const FACTORY: &str = include_str!("../../../policies/examples/dedicated-ca/rules.toml");

struct Demo {
    broker: Broker,
    seen: usize,
}

impl Demo {
    /// Prints one outcome and the events written since the previous step.
    fn show(&mut self, what: &str, outcome: String) {
        std::thread::sleep(Duration::from_millis(150));
        println!("{what:<62} -> {outcome}");
        let events = self.broker.events();
        for e in &events[self.seen.min(events.len())..] {
            let outcome = field(e, "outcome");
            if matches!(outcome, "accept" | "disconnect" | "loaded") {
                continue;
            }
            let code = e["reason_code"].as_u64().map(|c| format!(" 0x{c:02X}")).unwrap_or_default();
            println!("{:<62}    event [{}] {}{}: {}", "", field(e, "tenant"), outcome, code, field(e, "message"));
        }
        self.seen = events.len();
    }
}

fn connack(code: u8, proto: Proto) -> String {
    match (code, proto) {
        (0, _) => "CONNACK 0 accepted".into(),
        (c, Proto::V5) => format!("CONNACK 0x{c:02X} refused"),
        (c, Proto::V311) => format!("CONNACK {c} refused"),
    }
}

fn ack(code: Option<u8>) -> String {
    match code {
        Some(0) | Some(0x10) => format!("PUBACK 0x{:02X} accepted", code.unwrap()),
        Some(c) => format!("PUBACK 0x{c:02X} refused"),
        None => "sent (v3.1.1 PUBACK carries no code)".into(),
    }
}

fn suback(code: u8) -> String {
    if code <= 2 { format!("SUBACK granted QoS {code}") } else { format!("SUBACK 0x{code:02X} refused") }
}

fn main() {
    let server_ca = Ca::new("demo server CA");
    let factory_ca = Ca::new("factory CA");
    let stranger_ca = Ca::new("someone else's CA");
    let server = server_ca.server();
    let policies = [
        ("shared", support::hub_policy(SHARED, &[])),
        ("acme", support::hub_policy(IBM, &[])),
        ("factory", support::hub_policy(FACTORY, &[("factory-ca", &factory_ca.pem)])),
    ];
    let broker = Broker::start_conf("demo", &policies, 3, |plugin, dir, events, ports| {
        let base = dir.parent().unwrap();
        // The TLS listener accepts both CAs; which one a tenant trusts is in its policy.
        std::fs::write(base.join("clients-ca.pem"), format!("{}{}", factory_ca.pem, stranger_ca.pem)).unwrap();
        std::fs::write(base.join("server.pem"), &server.cert).unwrap();
        std::fs::write(base.join("server.key"), &server.key).unwrap();
        let plugin_lines = |tenancy: &str| {
            format!(
                "allow_anonymous false\nplugin {}\nplugin_opt_policy_dir {}\nplugin_opt_events {}\nplugin_opt_{tenancy}\n",
                plugin.display(),
                dir.display(),
                events.display()
            )
        };
        format!(
            "per_listener_settings true\nlistener {} 127.0.0.1\n{}listener {} 127.0.0.1\n{}listener {} 127.0.0.1\n\
             require_certificate true\ncafile {b}/clients-ca.pem\ncertfile {b}/server.pem\nkeyfile {b}/server.key\n{}",
            ports[0],
            plugin_lines("tenant shared"),
            ports[1],
            plugin_lines("tenant_from client-id:*:{tenant}:*"),
            ports[2],
            plugin_lines("tenant factory"),
            b = base.display(),
        )
    })
    .unwrap_or_else(|e| {
        eprintln!("could not start mosquitto: {e:#}");
        std::process::exit(2)
    });
    let (shared, orgs, tls) = (broker.ports[0], broker.ports[1], broker.ports[2]);
    println!("Mosquitto with the mqtt-policy plugin, three listeners on 127.0.0.1:");
    println!("  :{shared} tenant `shared` (shared-hub rules)");
    println!("  :{orgs} tenant from the client id `d:ORG:...` (ibm-platform rules for org acme)");
    println!("  :{tls} mTLS, tenant `factory` (dedicated-ca rules, CA embedded in the policy)");
    println!("events: {}\n", broker.events.display());
    let mut d = Demo { broker, seen: 0 };

    println!("--- shared hub (rumqttc MQTT v5 and v3.1.1 clients)");
    let (_c, code) = Mqtt::connect(&proofs::sas(shared, Proto::V5, "thermo-1").clean(false));
    d.show("thermo-1 v5 CONNECT clean-start=false", connack(code, Proto::V5));
    let (_c, code) = Mqtt::connect(&Opts::new(shared, Proto::V311, "stranger"));
    d.show("stranger v3.1.1 CONNECT", connack(code, Proto::V311));
    let expired = proofs::sas_token("thermo-1", proofs::now_s() - 60);
    let (_c, code) =
        Mqtt::connect(&Opts::new(shared, Proto::V5, "thermo-1").user(&proofs::sas_user("thermo-1"), &expired));
    d.show("thermo-1 v5 CONNECT with an expired SAS token", connack(code, Proto::V5));
    let mut t1 = Mqtt::connected(&proofs::sas(shared, Proto::V5, "thermo-1"));
    d.show("thermo-1 v5 CONNECT with its SAS token (expires in 1 h)", connack(0, Proto::V5));
    let c = t1.publish("devices/thermo-1/telemetry/temp", 1, false, b"21.5");
    d.show("thermo-1 PUBLISH devices/thermo-1/telemetry/temp q1", ack(c));
    let c = t1.publish("devices/thermo-2/telemetry/temp", 1, false, b"21.5");
    d.show("thermo-1 PUBLISH devices/thermo-2/telemetry/temp q1", ack(c));
    let c = t1.publish("devices/thermo-1/telemetry/blob", 1, false, &[0u8; 9000]);
    d.show("thermo-1 PUBLISH 9000 bytes (limit 8192) q1", ack(c));
    let c = t1.publish("devices/thermo-1/telemetry/state", 1, true, b"on");
    d.show("thermo-1 PUBLISH retained q1", ack(c));
    let c = t1.subscribe("devices/thermo-1/commands/#", 1);
    d.show("thermo-1 SUBSCRIBE devices/thermo-1/commands/# q1", suback(c));
    let c = t1.subscribe("devices/thermo-1/commands/#", 0);
    d.show("thermo-1 SUBSCRIBE devices/thermo-1/commands/# q0", suback(c));
    let mut t2 = Mqtt::connected(&proofs::sas(shared, Proto::V311, "thermo-2"));
    let c = t2.subscribe("$SYS/#", 0);
    d.show("thermo-2 v3.1.1 SUBSCRIBE $SYS/#", suback(c));

    println!("\n--- IBM-style organization `acme` (tenant read from the client id)");
    let (_c, code) = Mqtt::connect(&Opts::new(orgs, Proto::V5, "a:acme:whoever"));
    d.show("a:acme:whoever CONNECT without an API key", connack(code, Proto::V5));
    let mut app = Mqtt::connected(&proofs::ibm(orgs, Proto::V5, "a:acme:dashboard"));
    d.show("a:acme:dashboard CONNECT with API key and token", connack(0, Proto::V5));
    let c = app.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", 1);
    d.show("a:acme:dashboard SUBSCRIBE iot-2/type/+/id/+/evt/+/fmt/+ q1", suback(c));
    let mut s1 = Mqtt::connected(&proofs::ibm(orgs, Proto::V5, "d:acme:sensor:s1"));
    let (_c, code) = Mqtt::connect(&Opts::new(orgs, Proto::V5, "d:acme:sensor:s1").user("use-token-auth", "guessed"));
    let alive = if s1.is_alive() { "the real s1 stays connected" } else { "the real s1 was knocked off" };
    d.show("impostor d:acme:sensor:s1 CONNECT with a wrong token", format!("{}; {alive}", connack(code, Proto::V5)));
    let c = s1.publish("iot-2/type/sensor/id/s1/evt/temp/fmt/json", 1, false, b"{\"t\":21}");
    let got = app.drain(Duration::from_millis(300)).len();
    d.show("d:acme:sensor:s1 PUBLISH its own event q1", format!("{}; delivered to the dashboard: {got}", ack(c)));
    let c = s1.publish("iot-2/type/sensor/id/s2/evt/temp/fmt/json", 1, false, b"{\"t\":99}");
    let got = app.drain(Duration::from_millis(300)).len();
    d.show("d:acme:sensor:s1 PUBLISH as device s2 q1", format!("{}; delivered: {got}", ack(c)));
    let c = s1.publish("iot-2/type/sensor/id/s1/evt/state/fmt/json", 1, true, b"{\"on\":1}");
    let got = app.drain(Duration::from_millis(300)).len();
    d.show("d:acme:sensor:s1 PUBLISH retained q1", format!("{}; delivered live: {got}", ack(c)));
    let mut late = Mqtt::connected(&proofs::ibm(orgs, Proto::V311, "a:acme:late"));
    late.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", 0);
    let got = late.drain(Duration::from_millis(300)).len();
    d.show("a:acme:late subscribes afterwards", format!("retained copies received: {got}"));
    let (_c, code) = Mqtt::connect(&Opts::new(orgs, Proto::V5, "d:globex:sensor:1"));
    d.show("d:globex:sensor:1 CONNECT (no policy for globex)", connack(code, Proto::V5));

    println!("\n--- dedicated hub `factory` over mTLS (certificates made for this run)");
    let cert = |ca: &Ca, cn: Option<&str>| {
        let c = ca.client(cn);
        Opts::new(0, Proto::V5, cn.unwrap_or("no-cn")).tls(tls, &server_ca.pem, &c.cert, &c.key)
    };
    for (label, ca, cn) in [
        ("press-1, factory CA", &factory_ca, Some("press-1")),
        ("empty common name, factory CA", &factory_ca, None),
        ("press-1, someone else's CA", &stranger_ca, Some("press-1")),
        ("press-2 (disabled), factory CA", &factory_ca, Some("press-2")),
        ("robot-9 (not registered), factory CA", &factory_ca, Some("robot-9")),
    ] {
        let (_c, code) = Mqtt::connect(&cert(ca, cn));
        d.show(&format!("CONNECT with certificate {label}"), connack(code, Proto::V5));
    }
    let press9 = factory_ca.client(Some("press-9"));
    let as_press1 = Opts::new(0, Proto::V5, "press-1").tls(tls, &server_ca.pem, &press9.cert, &press9.key);
    let (_c, code) = Mqtt::connect(&as_press1);
    d.show("CONNECT as press-1 with press-9's certificate", connack(code, Proto::V5));

    println!("\n--- hot reload: the shared hub is locked while thermo-1 is connected");
    let locked = SHARED.replace("state = \"ready\"", "state = \"locked\"");
    support::deploy(&d.broker.policy_dir, "shared", &support::hub_policy(&locked, &[]));
    d.broker.wait_loads(4);
    d.show("shared.wasm replaced (written, then renamed)", "reloaded off the broker thread".into());
    t1.publish("devices/thermo-1/telemetry/temp", 0, false, b"22");
    let closed = t1.closed(Duration::from_secs(3)).is_some();
    d.show("thermo-1 PUBLISH after the lock", if closed { "disconnected".into() } else { "still connected".into() });
    let (_c, code) = Mqtt::connect(&proofs::sas(shared, Proto::V5, "thermo-3"));
    d.show("thermo-3 v5 CONNECT", connack(code, Proto::V5));

    let total = d.broker.events().len();
    let keep = std::env::args().nth(1).map(std::path::PathBuf::from);
    if let Some(dir) = &keep {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(&d.broker.events, dir.join("events.jsonl")).unwrap();
        std::fs::copy(d.broker.dir.join("mosquitto.conf"), dir.join("mosquitto.conf")).unwrap();
    }
    let kept = keep.map(|d| format!(" (kept in {})", d.join("events.jsonl").display())).unwrap_or_default();
    println!("\n{total} events written{kept}; stopping the broker.");
}
