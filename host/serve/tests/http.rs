//! The decision service's HTTP contract, in-process, without a broker: RabbitMQ's
//! `rabbitmq_auth_backend_http` requests as RabbitMQ 3.10 sends them (form POST and GET query),
//! garbage and hostile requests (always a 4xx or 503 with `deny`, never an allow), the shared
//! secret, `/healthz` and `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mqtt_policy_gateway::{Config, EventTarget, TenantSource};
use mqtt_policy_serve::rabbitmq::{self, Path, Permission, Request};
use mqtt_policy_serve::{Options, Service};
use mqtt_policy_testkit::proofs::{API_KEY, API_TOKEN, device_token};
use mqtt_policy_testkit::{TempDir, deploy, http_get, http_post_form, http_request, hub_policy, read_events};

const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");

/// The example's rules without its 3-messages-a-day quota: these tests ask about more publishes.
fn rules() -> String {
    format!("{}{}", &IBM[..IBM.find("[hub.rate]").unwrap()], &IBM[IBM.find("[identity]").unwrap()..])
}

fn start(tag: &str, options: Options) -> (Service, TempDir) {
    start_with(tag, options, &[])
}

/// [`start`] with more policy files (`(file stem, policy)`) deployed beside `acme`.
fn start_with(tag: &str, options: Options, more: &[(&str, Vec<u8>)]) -> (Service, TempDir) {
    let dir = TempDir::new(tag);
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    deploy(&policies, "acme", &hub_policy(&rules(), &[]));
    for (stem, bytes) in more {
        deploy(&policies, stem, bytes);
    }
    let mut config = Config::new(&policies, TenantSource::parse("username:{tenant}").unwrap());
    config.events = EventTarget::File(dir.join("events.jsonl"));
    let options = Options { listen: "127.0.0.1:0".parse().unwrap(), workers: 2, ..options };
    (Service::start(config, options).unwrap(), dir)
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

fn login(id: &str) -> String {
    form(&[
        ("username", "use-token-auth"),
        ("password", &device_token(id)),
        ("vhost", "acme"),
        ("client_id", &format!("d:acme:sensor:{id}")),
    ])
}

fn topic(client: &str, permission: &str, routing_key: &str) -> String {
    form(&[
        ("username", "use-token-auth"),
        ("vhost", "acme"),
        ("resource", "topic"),
        ("name", "amq.topic"),
        ("permission", permission),
        ("tags", ""),
        ("routing_key", routing_key),
        ("variable_map.client_id", client),
        ("variable_map.username", "use-token-auth"),
        ("variable_map.vhost", "acme"),
    ])
}

fn resource(client: &str, resource: &str, name: &str, permission: &str) -> String {
    form(&[
        ("username", "use-token-auth"),
        ("vhost", "acme"),
        ("resource", resource),
        ("name", name),
        ("permission", permission),
        ("tags", ""),
        ("client_id", client),
    ])
}

fn post(s: &Service, path: &str, body: &str) -> (u16, String) {
    http_post_form(s.local_addr().port(), path, body).expect("an answer")
}

#[test]
fn rabbitmq_requests_are_decided_by_the_tenant_policy() {
    let (s, dir) = start("serve-rabbitmq", Options::default());
    let ok = (200, "allow".to_owned());
    let no = (200, "deny".to_owned());
    assert_eq!(post(&s, "/rabbitmq/user", &login("s1")), ok);
    let mut bad = login("s1");
    bad = bad.replace("password=", "password=x");
    assert_eq!(post(&s, "/rabbitmq/user", &bad), no, "a wrong token");
    // RabbitMQ asks twice per login (authentication, then authorization): the repeat is
    // answered from the first decision, once.
    assert_eq!(post(&s, "/rabbitmq/user", &login("s1")), ok);
    assert_eq!(post(&s, "/rabbitmq/user", &login("s1")), ok);
    // `http_method = get` sends the same parameters as a query.
    let (code, body) = http_get(s.local_addr().port(), &format!("/rabbitmq/user?{}", login("s2"))).unwrap();
    assert_eq!((code, body.as_str()), (200, "allow"));
    let d1 = "d:acme:sensor:s1";
    let vhost = form(&[
        ("username", "use-token-auth"),
        ("vhost", "acme"),
        ("ip", "127.0.0.1"),
        ("tags", ""),
        ("client_id", d1),
    ]);
    assert_eq!(post(&s, "/rabbitmq/vhost", &vhost), ok);
    // Publishes: routing keys are MQTT topics with / as . (rabbit_mqtt_util:to_amqp). The
    // refused login with s1's client id above left s1's session alone.
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "write", "iot-2.type.sensor.id.s1.evt.status.fmt.json")), ok);
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "write", "iot-2.type.sensor.id.s2.evt.status.fmt.json")), no);
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "write", "iot-2.type.sensor.id.*.evt.status.fmt.json")), no);
    // Subscriptions: + was turned into *.
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "read", "iot-2.type.sensor.id.s1.cmd.*.fmt.*")), ok);
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "read", "iot-2.type.*.id.*.evt.*.fmt.*")), no);
    let on_other_exchange =
        topic(d1, "write", "iot-2.type.sensor.id.s1.evt.status.fmt.json").replace("amq.topic", "amq.fanout");
    assert_eq!(post(&s, "/rabbitmq/topic", &on_other_exchange), no);
    // Queues and exchanges: only the client's own subscription queues and the MQTT exchange.
    for (kind, name, perm, want) in [
        ("queue", "mqtt-subscription-d:acme:sensor:s1qos1", "configure", &ok),
        ("queue", "mqtt-subscription-d:acme:sensor:s1qos0", "read", &ok),
        ("queue", "mqtt-subscription-d:acme:sensor:s2qos1", "read", &no),
        ("queue", "orders", "write", &no),
        ("exchange", "amq.topic", "write", &ok),
        ("exchange", "amq.topic", "read", &ok),
        ("exchange", "amq.topic", "configure", &no),
        ("exchange", "amq.direct", "write", &no),
    ] {
        assert_eq!(&post(&s, "/rabbitmq/resource", &resource(d1, kind, name, perm)), want, "{perm} {kind} {name}");
    }
    // Not an MQTT connection (no client id): nothing to allow.
    let amqp = form(&[("username", API_KEY), ("password", API_TOKEN), ("vhost", "acme")]);
    assert_eq!(post(&s, "/rabbitmq/user", &amqp), no);
    // A client the service never saw log in (it restarted): re-established with
    // `resumed = true` and no proof, which hub-rules admits for deliveries only.
    let d3 = "d:acme:sensor:s3";
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d3, "write", "iot-2.type.sensor.id.s3.evt.status.fmt.json")), no);
    let events = read_events(&dir.join("events.jsonl"));
    assert!(
        events.iter().any(|e| e["client_id"] == d3 && e["outcome"] == "restore"),
        "the unknown session was re-established with resumed = true: {events:#?}"
    );
    assert!(
        events.iter().any(|e| e["outcome"] == "deny" && e["topic"] == "iot-2/type/sensor/id/s2/evt/status/fmt/json")
    );
}

#[test]
fn garbage_gets_a_4xx_deny_and_never_an_allow() {
    let opts = Options { request_timeout: Duration::from_millis(300), max_body: 1024, ..Options::default() };
    let (s, _dir) = start("serve-garbage", opts);
    let port = s.local_addr().port();
    let deny = |(code, body): (u16, String), want: u16, what: &str| {
        assert_eq!(code, want, "{what}");
        assert_eq!(body, "deny", "{what}");
    };
    deny(post(&s, "/rabbitmq/user", "password=x&vhost=acme&client_id=c"), 400, "no user name");
    deny(post(&s, "/rabbitmq/user", &format!("{}&client_id=d:acme:sensor:s2", login("s1"))), 400, "a client id twice");
    deny(post(&s, "/rabbitmq/topic", &topic("c", "configure", "a")), 400, "configure on a topic");
    deny(post(&s, "/rabbitmq/resource", &resource("c", "queue", "q", "own")), 400, "an unknown permission");
    deny(
        post(&s, "/rabbitmq/topic", &topic("c", "write", "a").replace("resource=topic", "resource=queue")),
        400,
        "not a topic",
    );
    deny(post(&s, "/rabbitmq/nothing", &login("s1")), 404, "an unknown path");
    deny(post(&s, "/", ""), 404, "the root");
    deny(
        http_request(port, b"PUT /rabbitmq/user HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap(),
        405,
        "PUT",
    );
    deny(
        post(&s, "/rabbitmq/user", &format!("{}&pad={}", login("s1"), "x".repeat(2000))),
        413,
        "a body over the limit",
    );
    let huge = b"POST /rabbitmq/user HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n";
    deny(http_request(port, huge).unwrap(), 413, "a declared length over the limit");
    let chunked = format!(
        "POST /rabbitmq/user HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
        "y".repeat(0x800)
    );
    deny(http_request(port, chunked.as_bytes()).unwrap(), 413, "a chunked body over the limit");
    // A body that never comes: answered at the request deadline.
    let started = Instant::now();
    let slow = b"POST /rabbitmq/user HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nuser";
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(slow).unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408") && text.ends_with("deny"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered at the deadline, not later");
    // Not HTTP at all: hyper refuses it; whatever comes back is no allow.
    if let Some((code, body)) = http_request(port, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n") {
        assert!((400..500).contains(&code) && body != "allow", "{code} {body}");
    }
    // Invalid UTF-8 percent-encoded in a value is decoded lossily, never trusted as allow.
    let (code, body) = post(&s, "/rabbitmq/user", "username=%FF%FE&password=%FF&vhost=acme&client_id=%C3");
    assert_eq!((code, body.as_str()), (200, "deny"));
    // The service still answers properly afterwards.
    assert_eq!(post(&s, "/rabbitmq/user", &login("s1")), (200, "allow".to_owned()));
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(metrics.contains("mqtt_policy_rejected_requests_total{reason=\"bad-request\"} 5"), "{metrics}");
    assert!(metrics.contains("mqtt_policy_rejected_requests_total{reason=\"too-large\"} 3"), "{metrics}");
    assert!(metrics.contains("mqtt_policy_rejected_requests_total{reason=\"timeout\"} 1"), "{metrics}");
}

#[test]
fn a_shared_secret_is_required_when_configured() {
    let opts = Options { secret: Some("s3cret-Token".into()), ..Options::default() };
    let (s, _dir) = start("serve-secret", opts);
    let port = s.local_addr().port();
    assert_eq!(post(&s, "/rabbitmq/user", &login("s1")), (403, "deny".to_owned()), "without the secret");
    assert_eq!(post(&s, "/s3cret-Tokex/rabbitmq/user", &login("s1")), (403, "deny".to_owned()), "a wrong secret");
    // RabbitMQ cannot send headers: the secret as the first path segment of its URLs.
    assert_eq!(post(&s, "/s3cret-Token/rabbitmq/user", &login("s1")), (200, "allow".to_owned()));
    let with_header = |header: &str| {
        let body = login("s1");
        let req = format!(
            "POST /rabbitmq/user HTTP/1.1\r\nHost: x\r\n{header}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        http_request(port, req.as_bytes()).unwrap()
    };
    assert_eq!(with_header("x-mqtt-policy-secret: s3cret-Token"), (200, "allow".to_owned()));
    assert_eq!(with_header("authorization: Bearer s3cret-Token"), (200, "allow".to_owned()));
    assert_eq!(with_header("authorization: Bearer nope"), (403, "deny".to_owned()));
    assert_eq!(http_get(port, "/metrics").unwrap().0, 403, "metrics name tenants: behind the secret too");
    assert_eq!(http_get(port, "/s3cret-Token/metrics").unwrap().0, 200);
    assert_eq!(http_get(port, "/healthz").unwrap(), (200, "ok\n".to_owned()), "health needs no secret");
    let bad = Options { secret: Some("a/b".into()), ..Options::default() };
    let mut config = Config::new("/nonexistent", TenantSource::fixed("acme").unwrap());
    config.events = EventTarget::None;
    assert!(Service::start(config, bad).is_err(), "a secret that cannot be a path segment");
}

#[test]
fn metrics_count_decisions_by_tenant_kind_and_outcome() {
    let (s, _dir) = start("serve-metrics", Options::default());
    let port = s.local_addr().port();
    assert_eq!(http_get(port, "/healthz").unwrap(), (200, "ok\n".to_owned()));
    post(&s, "/rabbitmq/user", &login("s1"));
    post(&s, "/rabbitmq/user", &login("s1").replace("password=", "password=x"));
    let d1 = "d:acme:sensor:s1";
    post(&s, "/rabbitmq/topic", &topic(d1, "write", "iot-2.type.sensor.id.s1.evt.status.fmt.json"));
    post(&s, "/rabbitmq/topic", &topic(d1, "read", "iot-2.type.*.id.*.evt.*.fmt.*"));
    let m = http_get(port, "/metrics").unwrap().1;
    for line in [
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"connect\",outcome=\"allow\"} 1",
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"connect\",outcome=\"deny\"} 1",
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"publish\",outcome=\"allow\"} 1",
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"subscribe\",outcome=\"deny\"} 1",
        "mqtt_policy_check_seconds_count{kind=\"connect\"} 2",
        "mqtt_policy_check_seconds_bucket{kind=\"publish\",le=\"+Inf\"} 1",
        "mqtt_policy_events_total{action=\"load\",outcome=\"loaded\"} 1",
        "mqtt_policy_events_total{action=\"connect\",outcome=\"reject\"} 1",
        "mqtt_policy_sessions 1",
        "# TYPE mqtt_policy_check_seconds histogram",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line}:\n{m}");
    }
}

#[test]
fn routing_keys_become_mqtt_topics_as_rabbitmq_maps_them() {
    use Permission::{Read, Write};
    assert_eq!(rabbitmq::to_mqtt("a.b.c", Write).as_deref(), Some("a/b/c"));
    assert_eq!(rabbitmq::to_mqtt("a.*.#", Read).as_deref(), Some("a/+/#"));
    assert_eq!(rabbitmq::to_mqtt("a..b", Read).as_deref(), Some("a//b"));
    // A publish topic with a wildcard is no topic name.
    assert_eq!(rabbitmq::to_mqtt("a.*", Write), None);
    assert_eq!(rabbitmq::to_mqtt("a.#", Write), None);
    let r = rabbitmq::parse(Path::Topic, Some(&topic("c1", "read", "x.*")), b"").unwrap();
    assert_eq!(
        r,
        Request::Topic {
            username: "use-token-auth".into(),
            vhost: "acme".into(),
            exchange: "amq.topic".into(),
            permission: Read,
            routing_key: "x.*".into(),
            client_id: Some("c1".into()),
        }
    );
    // Query and body together may not repeat a parameter.
    assert!(rabbitmq::parse(Path::User, Some("username=a"), b"username=b&vhost=v").is_err());
}

#[test]
fn slow_headers_and_connections_over_the_cap_are_cut() {
    let opts = Options { header_timeout: Duration::from_millis(300), max_connections: 2, ..Options::default() };
    let (s, _dir) = start("serve-slow", opts);
    // Headers that never end: the connection is closed at the header deadline, with no allow.
    let started = Instant::now();
    let mut slow = TcpStream::connect(s.local_addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"POST /rabbitmq/user HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("allow"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "cut at the header deadline, after {:?}", started.elapsed());
    // Two connections held open: a third is closed at once, unanswered.
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(s.local_addr()).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut third = TcpStream::connect(s.local_addr()).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = Vec::new();
    let _ = third.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(http_get(s.local_addr().port(), "/healthz").unwrap().0, 200, "answered again once they closed");
}

#[test]
fn idle_sessions_end_because_rabbitmq_never_reports_a_disconnect() {
    let (s, dir) = start("serve-idle", Options { idle_session: Duration::from_millis(500), ..Options::default() });
    let d1 = "d:acme:sensor:s1";
    let own = "iot-2.type.sensor.id.s1.evt.status.fmt.json";
    assert_eq!(post(&s, "/rabbitmq/user", &login("s1")).1, "allow");
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "write", own)).1, "allow");
    // Requests keep a session alive...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "write", own)).1, "allow");
    }
    // ...silence ends it (at the workers' next tick, once a second), with a disconnect event.
    let deadline = Instant::now() + Duration::from_secs(5);
    let events = || read_events(&dir.join("events.jsonl"));
    while !events().iter().any(|e| e["client_id"] == d1 && e["outcome"] == "disconnect") {
        assert!(Instant::now() < deadline, "the idle session did not end: {:#?}", events());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The client is now unknown: re-established without a proof, it may not publish.
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "write", own)).1, "deny");
    assert_eq!(post(&s, "/rabbitmq/user", &login("s1")).1, "allow", "until it logs in again");
    assert_eq!(post(&s, "/rabbitmq/topic", &topic(d1, "write", own)).1, "allow");
    // A session re-established for a client never seen logging in ends when idle as well.
    let d3 = "d:acme:sensor:s3";
    assert_eq!(
        post(&s, "/rabbitmq/topic", &topic(d3, "write", "iot-2.type.sensor.id.s3.evt.status.fmt.json")).1,
        "deny"
    );
    let sessions = || {
        let m = http_get(s.local_addr().port(), "/metrics").unwrap().1;
        m.lines().find_map(|l| l.strip_prefix("mqtt_policy_sessions ")).and_then(|n| n.parse::<usize>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions() != Some(0) {
        assert!(Instant::now() < deadline, "idle sessions still held: {:?}", sessions());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One request over the Unix socket at `path`: the status and body (`None` if the service
/// closed the connection without answering).
fn unix_request(path: &std::path::Path, request: &str) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned()))
}

#[test]
fn a_unix_socket_listener_answers_and_is_bounded_like_tcp() {
    let sockets = TempDir::new("serve-unix");
    let path = sockets.join("serve.sock");
    // A socket file left by an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let options = Options { unix: Some(path.clone()), max_connections: 2, max_body: 1024, ..Options::default() };
    let (s, _dir) = start("serve-unix-policies", options);
    let close = "Connection: close\r\n\r\n";
    assert_eq!(
        unix_request(&path, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{close}")),
        Some((200, "ok\n".into()))
    );
    let body = login("s1");
    let post = format!(
        "POST /rabbitmq/user HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{close}{body}",
        body.len()
    );
    assert_eq!(unix_request(&path, &post), Some((200, "allow".into())));
    let huge =
        format!("POST /rabbitmq/user HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n{close}{}", "x".repeat(5000));
    assert_eq!(unix_request(&path, &huge), Some((413, "deny".into())), "the body bound holds");
    // The connection bound is shared with TCP: two idle connections (one per listener) hold it,
    // the next is closed unanswered on either.
    let idle_unix = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let idle_tcp = TcpStream::connect(s.local_addr()).unwrap();
    // The service counts a connection once it has accepted it: on a loaded machine that may
    // come after a request that was sent later, so wait (bounded) for the refusal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while unix_request(&path, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{close}")).is_some() {
        assert!(Instant::now() < deadline, "a third connection was still answered after 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop((idle_unix, idle_tcp));
    let deadline = Instant::now() + Duration::from_secs(5);
    while unix_request(&path, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{close}")).is_none() {
        assert!(Instant::now() < deadline, "the bound was released");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    assert!(!path.exists(), "the socket is removed when the service stops");
}

/// Monitor mode in the decision service, as in the plugin: `acme.next.wasm` is asked every
/// question `acme.wasm` answers and decides nothing; a difference is a `would-deny` event with
/// both decisions. Taking the candidate away ends the dry run; promoting one is a rename. Six
/// devices, so both workers (a client's worker is chosen by a hash of its id) take part.
#[test]
fn a_candidate_policy_is_evaluated_beside_the_enforced_one_and_promoted_by_a_rename() {
    let stricter = format!(
        "{}\n[[rule]]\neffect = \"deny\"\nactions = [\"publish\"]\ntopics = [\"iot-2/type/+/id/+/evt/status/fmt/+\"]\n",
        rules()
    );
    let (s, dir) = start_with("serve-candidate", Options::default(), &[("acme.next", hub_policy(&stricter, &[]))]);
    let policies = dir.join("policies");
    let ok = (200, "allow".to_owned());
    let no = (200, "deny".to_owned());
    let devices = ["s0", "s1", "s2", "s3", "s4", "r1"];
    let client = |id: &str| format!("d:acme:sensor:{id}");
    let status = |id: &str| topic(&client(id), "write", &format!("iot-2.type.sensor.id.{id}.evt.status.fmt.json"));
    let alarm = |id: &str| topic(&client(id), "write", &format!("iot-2.type.sensor.id.{id}.evt.alarm.fmt.json"));
    let told = || -> Vec<serde_json::Value> {
        read_events(&dir.join("events.jsonl"))
            .into_iter()
            .filter(|e| e["outcome"].as_str().is_some_and(|o| o.starts_with("would-")))
            .collect()
    };
    for id in devices {
        assert_eq!(post(&s, "/rabbitmq/user", &login(id)), ok, "{id}");
    }
    // Allowed by the enforced policy, refused by the candidate: allowed, and told, for each.
    for id in devices {
        assert_eq!(post(&s, "/rabbitmq/topic", &status(id)), ok, "the enforced policy decides");
    }
    let events = told();
    assert_eq!(events.len(), devices.len(), "{events:#?}");
    for (e, id) in events.iter().zip(devices) {
        assert_eq!(e["outcome"], "would-deny");
        assert_eq!((e["tenant"].as_str(), e["client_id"].as_str()), (Some("acme"), Some(client(id).as_str())));
        assert_eq!(e["topic"], format!("iot-2/type/sensor/id/{id}/evt/status/fmt/json"));
    }
    // Where both agree, nothing is told; the candidate's own denials are not decisions.
    for id in devices {
        assert_eq!(post(&s, "/rabbitmq/topic", &alarm(id)), ok);
    }
    assert_eq!(told().len(), devices.len());
    let all = read_events(&dir.join("events.jsonl"));
    assert!(!all.iter().any(|e| e["tenant"] == "acme.next" && e["outcome"] == "deny"), "{all:#?}");

    // Taken away: every worker stops asking it (bounded wait), and the enforced policy still allows.
    std::fs::remove_file(policies.join("acme.next.wasm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = told().len();
        for id in devices {
            assert_eq!(post(&s, "/rabbitmq/topic", &status(id)), ok);
        }
        if told().len() == before {
            break;
        }
        assert!(Instant::now() < deadline, "the candidate was still asked 10 s after its file went");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Promotion: a candidate's file renamed over the tenant's; every open session gets its rules.
    deploy(&policies, "acme.next", &hub_policy(&stricter, &[]));
    std::fs::rename(policies.join("acme.next.wasm"), policies.join("acme.wasm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in devices {
        while post(&s, "/rabbitmq/topic", &status(id)) != no {
            assert!(Instant::now() < deadline, "{id}: still allowed 10 s after the rename");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(post(&s, "/rabbitmq/topic", &alarm(id)), ok, "what both allowed is still allowed");
    }
}
