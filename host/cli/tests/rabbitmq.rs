//! `mqtt-policy serve` answering a real RabbitMQ 3.10 (Debian's, `rabbitmq_mqtt` with
//! `rabbitmq_auth_backend_http`) for MQTT 3.1.1 clients (rumqttc) over the wire, with the
//! shipped ibm-platform example's rules as tenant `acme` (virtual host `acme`).
//!
//! One node is shared by the scenarios of this file, run in order by one test: Erlang takes
//! ~15 s to boot a node on this kind of machine. Besides its TCP listener it has a mutual-TLS
//! MQTT listener with `mqtt.ssl_cert_login = true`, for what RabbitMQ sends about a
//! certificate login.

use std::time::{Duration, Instant};

use mqtt_policy_testkit::client::{Mqtt, Opts, Proto};
use mqtt_policy_testkit::pki::Ca;
use mqtt_policy_testkit::rabbitmq::ibm::{APP_FILTER, app, device, evt, rules};
use mqtt_policy_testkit::rabbitmq::{Cluster, DecisionService};
use mqtt_policy_testkit::{TempDir, deploy, field, free_port, http_get, hub_policy};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-policy");

/// Waits (bounded) for an event of the service matching `pred`.
fn wait_event(s: &DecisionService, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = s.events().into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(Instant::now() < deadline, "no event {what} within 10 s; events:\n{:#?}\n{}", s.events(), s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_rabbitmq_node_enforces_the_tenant_policy_through_serve() {
    let dir = TempDir::new("rabbitmq-serve");
    let policy = hub_policy(&rules(), &[]);
    // RabbitMQ cannot send a header: the shared secret is the first segment of its URLs.
    std::fs::write(dir.join("secret"), "Zk3-tr0ub4dor\n").unwrap();
    let secret_file = dir.join("secret").display().to_string();
    let mut service =
        DecisionService::start(BIN.as_ref(), &dir, &[("acme", policy.clone())], &["--secret-file", &secret_file])
            .unwrap();
    let url = format!("{}/Zk3-tr0ub4dor", service.url());
    // RabbitMQ's own CA and certificate for the mutual-TLS listener (PKCS#8 keys, which Erlang reads).
    let ca = Ca::new("rabbitmq test CA");
    let server = ca.server();
    for (name, pem) in [("ca.pem", &ca.pem), ("server.pem", &server.cert), ("server.key", &server.key)] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let tls_port = free_port();
    let tls = format!(
        "mqtt.listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
         ssl_options.keyfile = {}\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n\
         mqtt.ssl_cert_login = true\nssl_cert_login_from = common_name\n",
        dir.join("ca.pem").display(),
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    );
    let booting = Instant::now();
    let cluster = Cluster::start_with("rabbitmq-1", 1, &[url], "acme", &tls).unwrap();
    eprintln!("one RabbitMQ node up in {:?}", booting.elapsed());
    let port = cluster.nodes[0].mqtt_port;

    let mut ops = a_device_publishes_to_its_own_topic_and_an_application_receives_it(port);
    a_publish_to_another_devices_topic_closes_the_connection_and_is_never_delivered(port, &service, &mut ops);
    a_forbidden_subscription_is_refused(port, &service, &mut ops);
    a_bad_token_is_refused_at_connect(port, &service);
    a_certificate_login_sends_only_the_user_name_and_is_refused(tls_port, &ca, &service);
    a_replaced_policy_applies_to_new_connections_within_1_s_and_to_new_topics_of_old_ones(port, &service, &policy);
    drop(ops);
    a_killed_service_grants_nothing_and_its_restart_resumes(port, &mut service);
    let (code, metrics) = http_get(service.port, "/Zk3-tr0ub4dor/metrics").unwrap();
    assert_eq!(code, 200);
    for line in [
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"connect\",outcome=\"allow\"}",
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"publish\",outcome=\"allow\"}",
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"resource\",outcome=\"allow\"}",
        "mqtt_policy_decisions_total{dialect=\"rabbitmq\",tenant=\"acme\",kind=\"vhost\",outcome=\"allow\"}",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert_eq!(http_get(service.port, "/metrics").unwrap().0, 403, "behind the secret");
    drop(cluster);
    drop(service);
}

fn a_device_publishes_to_its_own_topic_and_an_application_receives_it(port: u16) -> Mqtt {
    let mut ops = Mqtt::connected(&app(port, "ops"));
    assert_eq!(ops.subscribe(APP_FILTER, 1), 1, "RabbitMQ grants QoS 1");
    let mut s1 = Mqtt::connected(&device(port, "s1"));
    assert_eq!(s1.try_publish(&evt("s1", "status"), 1, false, b"21.5"), Ok(None), "PUBACK (no code in 3.1.1)");
    let got = ops.recv(Duration::from_secs(5)).expect("the application receives the device's event");
    assert_eq!((got.0.as_str(), got.1.as_slice()), (evt("s1", "status").as_str(), b"21.5".as_slice()));
    // RabbitMQ sends no payload size to the backend: the rules' max-payload (131072) cannot hold.
    let big = vec![b'x'; 200 << 10];
    assert_eq!(s1.try_publish(&evt("s1", "status"), 1, false, &big), Ok(None));
    assert_eq!(ops.recv(Duration::from_secs(5)).map(|m| m.1.len()), Some(big.len()), "delivered: not enforceable here");
    s1.disconnect();
    ops
}

fn a_publish_to_another_devices_topic_closes_the_connection_and_is_never_delivered(
    port: u16,
    service: &DecisionService,
    ops: &mut Mqtt,
) {
    let mut s1 = Mqtt::connected(&device(port, "s1"));
    let forged = evt("s2", "status");
    let answer = s1.try_publish(&forged, 1, false, b"forged");
    assert!(answer.is_err(), "RabbitMQ closes the connection instead of a PUBACK: {answer:?}");
    let e = wait_event(service, "the publish denial", |e| {
        field(e, "action") == "publish" && field(e, "outcome") == "deny" && field(e, "topic") == forged
    });
    assert_eq!(field(&e, "client_id"), "d:acme:sensor:s1");
    assert_eq!(e["reason_code"], 0x87);
    assert!(ops.drain(Duration::from_secs(1)).is_empty(), "the forged event is never delivered");
}

fn a_forbidden_subscription_is_refused(port: u16, service: &DecisionService, ops: &mut Mqtt) {
    // Devices may not read other devices' events.
    let mut s3 = Mqtt::connected(&device(port, "s3"));
    let answer = s3.try_subscribe(APP_FILTER, 1);
    assert!(answer.is_err(), "RabbitMQ closes the connection instead of a SUBACK: {answer:?}");
    let e = wait_event(service, "the subscribe denial", |e| {
        field(e, "action") == "subscribe"
            && field(e, "outcome") == "deny"
            && field(e, "client_id") == "d:acme:sensor:s3"
    });
    assert_eq!(field(&e, "topic"), APP_FILTER, "the policy saw the MQTT filter, not the routing key");
    // Nothing published afterwards reaches the refused subscriber (it has no connection left).
    let mut s4 = Mqtt::connected(&device(port, "s4"));
    assert_eq!(s4.try_publish(&evt("s4", "status"), 1, false, b"x"), Ok(None));
    assert_eq!(ops.recv(Duration::from_secs(5)).map(|m| m.0), Some(evt("s4", "status")));
    assert!(s3.recv(Duration::from_millis(300)).is_none());
}

fn a_bad_token_is_refused_at_connect(port: u16, service: &DecisionService) {
    let bad = Opts::new(port, Proto::V311, "d:acme:sensor:s2").user("use-token-auth", "not-the-token");
    let (_c, code) = Mqtt::connect(&bad);
    assert_eq!(code, 4, "CONNACK 4: bad user name or password");
    let e = wait_event(service, "the connect rejection", |e| {
        field(e, "outcome") == "reject" && field(e, "client_id") == "d:acme:sensor:s2"
    });
    assert_eq!(e["reason_code"], 0x86);
    assert!(
        !service.log().contains("not-the-token")
            && !std::fs::read_to_string(&service.events).unwrap().contains("not-the-token")
    );
}

/// Rejected requests of `reason` so far (the service's `/metrics`).
fn rejected(service: &DecisionService, reason: &str) -> u64 {
    let (_, metrics) = http_get(service.port, "/Zk3-tr0ub4dor/metrics").unwrap();
    let line = format!("mqtt_policy_rejected_requests_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |n| n.trim().parse().unwrap())
}

/// `mqtt.ssl_cert_login`: a client that presents a certificate RabbitMQ verified and no user
/// name is logged in as the certificate's common name, and `user_path` gets only `username`
/// (`rabbit_direct:auth_fun({Username, none}, ..)`: no password, no virtual host, no client id,
/// nothing of the certificate). The service cannot tell that from a request missing its
/// parameters, so it answers 400 and RabbitMQ refuses the login; the same certificate with
/// the device's token is an ordinary password login over mutual TLS.
fn a_certificate_login_sends_only_the_user_name_and_is_refused(tls_port: u16, ca: &Ca, service: &DecisionService) {
    // A common name without `:`: RabbitMQ reads `A:B` as virtual host A, user B, for
    // certificate names as for user names (`rabbit_mqtt_processor:get_vhost_ssl`).
    let cert = ca.client(Some("s3"));
    let by_cert = Opts::new(tls_port, Proto::V311, "d:acme:sensor:s3").tls(tls_port, &ca.pem, &cert.cert, &cert.key);
    let before = rejected(service, "bad-request");
    let (_c, code) = Mqtt::connect(&by_cert);
    assert_eq!(code, 4, "CONNACK 4: the backend's error refuses the certificate login");
    assert!(rejected(service, "bad-request") > before, "user_path came without its virtual host: 400");
    assert!(
        !service.events().iter().any(|e| field(e, "action") == "connect"
            && field(e, "outcome") == "allow"
            && field(e, "client_id") == "d:acme:sensor:s3"),
        "no session was made for the certificate login"
    );
    let with_token = device(tls_port, "s3").tls(tls_port, &ca.pem, &cert.cert, &cert.key);
    let mut s3 = Mqtt::connected(&with_token);
    assert_eq!(s3.try_publish(&evt("s3", "tls"), 1, false, b"1"), Ok(None), "enforced as over TCP");
    s3.disconnect();
    // A certificate of another CA: RabbitMQ's TLS handshake refuses it before any login.
    let other = Ca::new("another CA").client(Some("d:acme:sensor:s3"));
    let before = rejected(service, "bad-request");
    let foreign = device(tls_port, "s3").tls(tls_port, &ca.pem, &other.cert, &other.key);
    assert!(Mqtt::try_connect(&foreign).is_err(), "closed before any CONNACK");
    assert_eq!(rejected(service, "bad-request"), before, "the service was not asked");
}

fn a_replaced_policy_applies_to_new_connections_within_1_s_and_to_new_topics_of_old_ones(
    port: u16,
    service: &DecisionService,
    original: &[u8],
) {
    let mut disabled = rules();
    for id in ["s1", "s4"] {
        let entry = format!("id = \"{id}\"\ntype = \"sensor\"\n");
        assert!(disabled.contains(&entry), "{id} is in the example");
        disabled = disabled.replacen(&entry, &format!("{entry}state = \"disabled\"\n"), 1);
    }
    let replaced = hub_policy(&disabled, &[]);
    // Connected before the replacement (another client id: RabbitMQ closes a connection when
    // its client id connects again).
    let mut before = Mqtt::connected(&device(port, "s4"));
    assert_eq!(before.try_publish(&evt("s4", "cached"), 1, false, b"1"), Ok(None));
    let deployed = Instant::now();
    deploy(&service.policy_dir, "acme", &replaced);
    loop {
        let (c, code) = Mqtt::connect(&device(port, "s1"));
        drop(c);
        if code != 0 {
            assert_eq!(code, 4);
            break;
        }
        assert!(deployed.elapsed() < Duration::from_secs(1), "the replaced policy did not apply within 1 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = deployed.elapsed();
    assert!(took < Duration::from_secs(1), "applied after {took:?}");
    eprintln!("replaced policy applied to a new connection {took:?} after the deploy");
    wait_event(service, "the disabled device's refusal", |e| field(e, "message").contains("not enabled"));
    // The connection made before: RabbitMQ keeps its positive answers for the connection's
    // life and does not ask again about a topic it allowed, but asks about a new one, which
    // the replaced policy refuses (its session is re-established under the new rules).
    assert_eq!(before.try_publish(&evt("s4", "cached"), 1, false, b"2"), Ok(None), "RabbitMQ's own cache");
    assert!(before.try_publish(&evt("s4", "new"), 1, false, b"3").is_err(), "a new topic is asked about, and refused");
    // The original back: s1 connects again.
    deploy(&service.policy_dir, "acme", original);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Mqtt::connect(&device(port, "s1")).1 != 0 {
        assert!(Instant::now() < deadline, "the original policy did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn a_killed_service_grants_nothing_and_its_restart_resumes(port: u16, service: &mut DecisionService) {
    let mut ops = Mqtt::connected(&app(port, "ops2"));
    assert_eq!(ops.subscribe(APP_FILTER, 1), 1);
    let mut s2 = Mqtt::connected(&device(port, "s2"));
    service.kill();
    // While it is down: no login, no new topic.
    let (_c, code) = Mqtt::connect(&device(port, "s3"));
    assert_ne!(code, 0, "a login while the service is down is refused");
    assert!(s2.try_publish(&evt("s2", "down"), 1, false, b"x").is_err(), "an unchecked topic is refused");
    service.restart().unwrap();
    // Connected before the restart, unknown to the new service: re-established with
    // `resumed = true` from what RabbitMQ sends (no proof), which hub-rules admits for nothing
    // more than deliveries, so its next subscription is refused...
    assert!(
        ops.try_subscribe("iot-2/type/+/id/+/mon", 1).is_err(),
        "a resumed session without a proof may not subscribe"
    );
    // (hub-rules refuses to restore an application: `restore-refused`; a device: `restore`.)
    wait_event(service, "the resumed session", |e| {
        field(e, "client_id") == "a:acme:ops2" && field(e, "outcome").starts_with("restore")
    });
    // ...and clients that log in again prove themselves and carry on.
    let mut ops = Mqtt::connected(&app(port, "ops2"));
    assert_eq!(ops.subscribe(APP_FILTER, 1), 1);
    let mut s2 = Mqtt::connected(&device(port, "s2"));
    assert_eq!(s2.try_publish(&evt("s2", "up"), 1, false, b"back"), Ok(None));
    assert_eq!(ops.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"back".to_vec()));
    let events = service.events();
    assert!(
        !events.iter().any(|e| field(e, "topic") == evt("s2", "down") && field(e, "outcome") != "deny"),
        "nothing was allowed for the topic tried while the service was down"
    );
}
