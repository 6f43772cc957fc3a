//! Decisions per second of the decision service against the same checks in-process: hub-rules
//! with a registry of 10,000 devices (`authentication = "none"`, per-device topic rules, as
//! `host/core/benches/hub_rules.rs`), `LOGGED` of them logged in over RabbitMQ's `user_path`,
//! then:
//!
//! 1. in-process: the same publish checks on one gateway `Worker` (one thread), for `SECONDS`;
//! 2. over HTTP: `CONNECTIONS` clients (one keep-alive connection each, on as many threads)
//!    sending RabbitMQ `topic_path` publish checks, each cycling over its share of the devices
//!    (each on its own topic, allowed), for `SECONDS`, with `WORKERS` worker threads.
//!
//! `CACHE` 1 keeps the policy's decision cache on, 0 turns it off (every check calls the
//! component).
//!
//! ```sh
//! cargo build --release --workspace --locked --example decisions
//! target/release/examples/decisions [CONNECTIONS] [SECONDS] [WORKERS] [CACHE] [LOGGED]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mqtt_policy_gateway::{
    Access, Check, CheckOutcome, Config, ConnectOutcome, EventTarget, Gateway, Hello, TenantSource, Worker,
};
use mqtt_policy_serve::{Options, Service};
use mqtt_policy_testkit::{TempDir, deploy, http_post_form, hub_policy};

const DEVICES: usize = 10_000;

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// The rules of `host/core/benches/hub_rules.rs`, the same document.
#[path = "../../core/benches/support/hub_document.rs"]
mod hub_document;
use hub_document::rules;

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

fn percentiles(mut all: Vec<Duration>) -> (Duration, Duration) {
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (pct(0.5), pct(0.99))
}

fn config(policies: &std::path::Path, cache: bool) -> Config {
    let mut config = Config::new(policies, TenantSource::fixed("bench").unwrap());
    config.events = EventTarget::None;
    config.decision_cache = cache;
    config.limits.memory = 256 << 20;
    config.limits.setup_deadline = Duration::from_secs(60);
    config
}

fn main() {
    let (connections, seconds, workers) = (arg(1, 16), arg(2, 5), arg(3, 2));
    let (cache, logged) = (arg(4, 1) == 1, arg(5, 1000).clamp(1, DEVICES));
    let dir = TempDir::new("serve-decisions");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    deploy(&policies, "bench", &hub_policy(&rules(DEVICES), &[]));
    let ids: Vec<String> = (0..logged).map(|i| format!("dev-{}", i * (DEVICES / logged))).collect();
    let run = Duration::from_secs(seconds as u64);

    // 1. In-process, one thread.
    let gateway = Gateway::start(config(&policies, cache)).unwrap();
    let mut worker: Worker<usize> = Worker::new(gateway.clone());
    for (k, id) in ids.iter().enumerate() {
        assert!(matches!(worker.connect(k, &Hello::new(id)), ConnectOutcome::Accept { .. }), "{id}");
    }
    let topics: Vec<String> = ids.iter().map(|id| format!("devices/{id}/telemetry/temp")).collect();
    let (mut n, mut lat) = (0usize, Vec::new());
    let end = Instant::now() + run;
    while Instant::now() < end {
        for _ in 0..100 {
            let k = n % ids.len();
            let t = Instant::now();
            let outcome = worker.check(&k, &Check::new(Access::Publish, &topics[k], 1));
            lat.push(t.elapsed());
            assert_eq!(outcome, CheckOutcome::Allow);
            n += 1;
        }
    }
    let (p50, p99) = percentiles(lat);
    println!(
        "in-process, 1 thread, cache {cache}, {logged} of {DEVICES} devices: {n} decisions in {seconds} s = {:.0}/s; p50 {p50:?}, p99 {p99:?}",
        n as f64 / seconds as f64
    );
    drop(worker);
    drop(gateway);

    // 2. Over HTTP.
    let options = Options { listen: "127.0.0.1:0".parse().unwrap(), workers, ..Options::default() };
    let service = Service::start(config(&policies, cache), options).unwrap();
    let port = service.local_addr().port();
    for id in &ids {
        let login = format!("username={id}&password=&vhost=bench&client_id={id}");
        assert_eq!(http_post_form(port, "/rabbitmq/user", &login).unwrap().1, "allow", "{id}");
    }
    let deadline = Instant::now() + run;
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let mine: Vec<Vec<u8>> = ids
                .iter()
                .skip(c % ids.len())
                .step_by(connections.min(ids.len()))
                .map(|id| {
                    let body = format!(
                        "username={id}&vhost=bench&resource=topic&name=amq.topic&permission=write&tags=\
                         &routing_key=devices.{id}.telemetry.temp&variable_map.client_id={id}"
                    );
                    format!(
                        "POST /rabbitmq/topic HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                })
                .collect();
            std::thread::spawn(move || {
                let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
                stream.get_ref().set_nodelay(true).unwrap();
                let mut latencies = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    assert_eq!(ask(&mut stream, &mine[i % mine.len()]), "allow");
                    latencies.push(t.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let count = all.len();
    let (p50, p99) = percentiles(all);
    println!(
        "http, {connections} connections, {workers} workers, cache {cache}, {logged} of {DEVICES} devices: {count} decisions in {seconds} s = {:.0}/s; p50 {p50:?}, p99 {p99:?}",
        count as f64 / seconds as f64
    );
}
