//! Decisions per second of the decision service over HTTP/1.1 keep-alive, with latency
//! percentiles: the shipped ibm-platform policy as tenant `acme`, `DEVICES` devices logged in,
//! then `CONNECTIONS` clients (one keep-alive connection each, on as many threads) sending
//! RabbitMQ `topic_path` publish checks (each device on its own topic, allowed) for `SECONDS`.
//!
//! ```sh
//! cargo build --workspace --all-targets --locked
//! target/debug/examples/throughput [CONNECTIONS] [SECONDS] [WORKERS] [DEVICES]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mqtt_policy_gateway::{Config, EventTarget, TenantSource};
use mqtt_policy_serve::{Options, Service};
use mqtt_policy_testkit::proofs::device_token;
use mqtt_policy_testkit::{TempDir, deploy, http_post_form, hub_policy};

const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// Sends one request on a keep-alive connection and reads the answer's body.
fn ask(stream: &mut BufReader<TcpStream>, request: &[u8]) -> String {
    stream.get_mut().write_all(request).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

fn main() {
    let (connections, seconds, workers, devices) = (arg(1, 16), arg(2, 5), arg(3, 2), arg(4, 9));
    // The example's registry: s0..s4, r1, m1, m-009 (and g1, a gateway); all sensors here.
    let ids: Vec<&str> = ["s0", "s1", "s2", "s3", "s4", "r1"].into_iter().cycle().take(devices.clamp(1, 6)).collect();
    let dir = TempDir::new("serve-throughput");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    // Without the example's per-device message quota: this measures checks, not the quota.
    let rules = format!("{}{}", &IBM[..IBM.find("[hub.rate]").unwrap()], &IBM[IBM.find("[identity]").unwrap()..]);
    deploy(&policies, "acme", &hub_policy(&rules, &[]));
    let mut config = Config::new(&policies, TenantSource::parse("username:{tenant}").unwrap());
    config.events = EventTarget::None;
    let options = Options { listen: "127.0.0.1:0".parse().unwrap(), workers, ..Options::default() };
    let service = Service::start(config, options).unwrap();
    let port = service.local_addr().port();
    for id in &ids {
        let login = format!(
            "username=use-token-auth&password={}&vhost=acme&client_id=d%3Aacme%3Asensor%3A{id}",
            form_urlencoded::byte_serialize(device_token(id).as_bytes()).collect::<String>()
        );
        assert_eq!(http_post_form(port, "/rabbitmq/user", &login).unwrap().1, "allow", "{id}");
    }
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let id = ids[c % ids.len()].to_owned();
            std::thread::spawn(move || {
                let body = format!(
                    "username=use-token-auth&vhost=acme&resource=topic&name=amq.topic&permission=write&tags=\
                     &routing_key=iot-2.type.sensor.id.{id}.evt.status.fmt.json&variable_map.client_id=d%3Aacme%3Asensor%3A{id}"
                );
                let request = format!(
                    "POST /rabbitmq/topic HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
                stream.get_ref().set_nodelay(true).unwrap();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    assert_eq!(ask(&mut stream, request.as_bytes()), "allow");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "connections {connections}, workers {workers}, devices {}: {} decisions in {seconds} s = {:.0}/s; p50 {:?}, p99 {:?}",
        ids.len(),
        all.len(),
        all.len() as f64 / seconds as f64,
        pct(0.5),
        pct(0.99)
    );
}
