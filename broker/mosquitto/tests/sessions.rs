//! Broker sessions as an operator relies on them, with the plugin loaded: Last Wills, messages
//! queued for offline persistent sessions (also across a restart with persistence), session
//! takeover, revocation of existing subscriptions, and a monitoring topic that cannot feed itself.

use mqtt_policy_testkit as support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::client::{Mqtt, Opts, Proto};
use support::{Broker, Setup, deploy, field};

/// Devices `s1`, `s2` publish in their own tree and take commands; `app` reads every device and
/// sends commands. `subscribe_all` decides whether the app may still subscribe to `devices/#`.
fn rules(identity_from: &str, subscribe_all: bool) -> String {
    let mut r = format!(
        "[hub]\nservice-level = \"dedicated\"\n\n[identity]\nfrom = \"{identity_from}\"\nauthentication = \"none\"\n\n"
    );
    for d in ["s1", "s2"] {
        r += &format!("[[device]]\nid = \"{d}\"\n\n");
    }
    r += "[[device]]\nid = \"app\"\ngroups = [\"apps\"]\n\n";
    r += "[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${device.id}/#\"]\n\n";
    r += "[[rule]]\neffect = \"allow\"\nactions = [\"subscribe\"]\ntopics = [\"devices/${device.id}/cmd/#\"]\n\n";
    r += "[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/+/cmd/#\"]\ngroups = [\"apps\"]\n\n";
    if subscribe_all {
        r += "[[rule]]\neffect = \"allow\"\nactions = [\"subscribe\"]\ntopics = [\"devices/#\", \"monitor/#\"]\ngroups = [\"apps\"]\n\n";
    }
    r
}

fn hub(identity_from: &str, subscribe_all: bool) -> Vec<u8> {
    support::hub_policy(&rules(identity_from, subscribe_all), &[])
}

/// `mosquitto_sub` (v3.1.1) with extra arguments, left running.
fn sub(port: u16, args: &[&str]) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "311"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed")
}

/// Waits for a child to end (bounded) and returns what it printed on stdout.
fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One QoS 1 publish with `mosquitto_pub` (v3.1.1); true when it exited 0.
fn publish(port: u16, client_id: &str, user: Option<&str>, topic: &str, message: &str) -> bool {
    let port = port.to_string();
    let mut args =
        vec!["-h", "127.0.0.1", "-p", &port, "-V", "311", "-q", "1", "-i", client_id, "-t", topic, "-m", message];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    support::run("mosquitto_pub", &args).0 == 0
}

fn accepted(b: &Broker, client_id: &str) {
    b.wait_event(&format!("accept of {client_id}"), |e| {
        field(e, "outcome") == "accept" && field(e, "client_id") == client_id
    });
}

#[test]
fn an_allowed_will_is_delivered_and_a_forbidden_one_is_refused_with_an_event() {
    let b = Broker::start("wills", Setup::tenant("hub", hub("client-id", true))).unwrap();
    let mut app = Mqtt::connected(&Opts::new(b.port, Proto::V5, "app"));
    assert_eq!(app.subscribe("devices/#", 1), 1);

    // The device's process dies: the socket closes without DISCONNECT and the broker sends the will.
    let will = ["--will-topic", "devices/s1/status", "--will-qos", "1"];
    let mut s1 =
        sub(b.port, &[&["-i", "s1", "-t", "devices/s1/cmd/#", "--will-payload", "offline"][..], &will[..]].concat());
    accepted(&b, "s1");
    s1.kill().unwrap();
    let _ = s1.wait();
    let got = app.recv(Duration::from_secs(5));
    assert_eq!(got, Some(("devices/s1/status".to_owned(), b"offline".to_vec(), false)), "{}", b.log());

    // Another device's will may not speak for s1.
    let mut s2 =
        sub(b.port, &[&["-i", "s2", "-t", "devices/s2/cmd/#", "--will-payload", "forged"][..], &will[..]].concat());
    accepted(&b, "s2");
    s2.kill().unwrap();
    let _ = s2.wait();
    b.wait_event("the forged will refused", |e| {
        field(e, "outcome") == "deny"
            && field(e, "action") == "publish"
            && field(e, "client_id") == "s2"
            && field(e, "topic") == "devices/s1/status"
    });
    let late = app.drain(Duration::from_millis(1500));
    assert!(late.iter().all(|(_, p, _)| p != b"forged"), "forged will delivered: {late:?}");
}

#[test]
fn a_message_queued_for_an_offline_persistent_session_is_delivered_when_it_returns() {
    let b = Broker::start("offline", Setup::tenant("hub", hub("client-id", true))).unwrap();
    // Subscribe with a persistent session, then leave cleanly.
    let first = sub(b.port, &["-i", "app", "-c", "-q", "1", "-t", "devices/#", "-E"]);
    assert_eq!(output(first), "");
    assert!(publish(b.port, "s1", None, "devices/s1/t", "while-you-were-away"));
    let back = sub(b.port, &["-i", "app", "-c", "-q", "1", "-t", "devices/#", "-C", "1", "-W", "5"]);
    assert_eq!(output(back).trim(), "while-you-were-away", "events: {:#?}\n{}", b.events(), b.log());
}

#[test]
fn queued_messages_survive_a_broker_restart_with_persistence() {
    let mut b = Broker::start("persist", Setup::tenant("hub", hub("client-id", true)).persistent()).unwrap();
    let first = sub(b.port, &["-i", "app", "-c", "-q", "1", "-t", "devices/#", "-E"]);
    assert_eq!(output(first), "");
    for i in 0..20 {
        assert!(publish(b.port, "s1", None, "devices/s1/t", &format!("m{i}")));
    }
    assert!(b.terminate(Duration::from_secs(10)), "SIGTERM ends the broker:\n{}", b.log());
    b.restart().unwrap();
    let back = sub(b.port, &["-i", "app", "-c", "-q", "1", "-t", "devices/#", "-C", "20", "-W", "8"]);
    let got: Vec<String> = output(back).lines().map(str::to_owned).collect();
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "events: {:#?}\n{}", b.events(), b.log());
}

#[test]
fn another_identity_cannot_take_over_a_session_or_its_queue() {
    // Identity from the user name: the client id is the client's choice, the session belongs to s1.
    let b = Broker::start("takeover", Setup::tenant("hub", hub("username", true))).unwrap();
    let owner = ["-i", "station-1", "-u", "s1", "-c", "-q", "1", "-t", "devices/s1/cmd/#"];
    assert_eq!(output(sub(b.port, &[&owner[..], &["-E"][..]].concat())), "");
    assert!(publish(b.port, "ops", Some("app"), "devices/s1/cmd/reboot", "for-s1-only"));

    // s2 presents s1's client id with clean session 0: Mosquitto would hand it s1's session.
    let thief =
        sub(b.port, &["-i", "station-1", "-u", "s2", "-c", "-q", "1", "-t", "devices/s2/cmd/#", "-C", "1", "-W", "3"]);
    assert_eq!(output(thief), "", "the queued command leaked to another identity");
    b.wait_event("the takeover refused", |e| field(e, "outcome") == "reject" && field(e, "client_id") == "station-1");

    // The owner comes back and gets its command.
    let back = sub(b.port, &[&owner[..], &["-C", "1", "-W", "5"][..]].concat());
    assert_eq!(output(back).trim(), "for-s1-only", "events: {:#?}", b.events());
}

#[test]
fn the_same_identity_may_take_over_its_own_connected_session() {
    let b = Broker::start("own-takeover", Setup::tenant("hub", hub("client-id", true))).unwrap();
    let mut old = Mqtt::connected(&Opts::new(b.port, Proto::V311, "s1").clean(false));
    assert_eq!(old.subscribe("devices/s1/cmd/#", 1), 1);
    let mut new = Mqtt::connected(&Opts::new(b.port, Proto::V311, "s1").clean(false));
    assert!(old.closed(Duration::from_secs(5)).is_some(), "the old connection is replaced");
    assert!(publish(b.port, "app", None, "devices/s1/cmd/x", "to-new"));
    assert_eq!(new.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"to-new".to_vec()));
}

#[test]
fn a_reload_that_removes_a_subscribe_right_stops_deliveries_within_a_second() {
    let b = Broker::start("revoke", Setup::tenant("hub", hub("client-id", true))).unwrap();
    let mut app = Mqtt::connected(&Opts::new(b.port, Proto::V5, "app"));
    assert_eq!(app.subscribe("devices/#", 1), 1);
    let mut s1 = Mqtt::connected(&Opts::new(b.port, Proto::V5, "s1"));
    assert!(matches!(s1.publish("devices/s1/t", 1, false, b"before"), Some(0)));
    assert_eq!(app.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"before".to_vec()));

    deploy(&b.policy_dir, "hub", &hub("client-id", false));
    b.wait_loads(2);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut delivered_late = Vec::new();
    let mut n = 0;
    while Instant::now() < deadline + Duration::from_millis(500) {
        n += 1;
        s1.publish("devices/s1/t", 1, false, format!("after-{n}").as_bytes());
        if let Some(m) = app.recv(Duration::from_millis(100))
            && Instant::now() > deadline
        {
            delivered_late.push(m);
        }
    }
    assert!(delivered_late.is_empty(), "delivered more than 1 s after the reload: {delivered_late:?}");
    let e = b.wait_event("the delivery refused", |e| field(e, "action") == "delivery" && field(e, "outcome") == "deny");
    assert!(field(&e, "message").contains("devices/s1/t"), "{e}");
}

#[test]
fn a_monitor_subscriber_whose_deliveries_are_denied_cannot_hang_the_broker() {
    let setup = Setup::tenant("hub", hub("client-id", true)).option("monitor_topic", "monitor/{tenant}/events");
    let mut b = Broker::start("monitor-loop", setup).unwrap();
    let mut watcher = Mqtt::connected(&Opts::new(b.port, Proto::V5, "app"));
    assert_eq!(watcher.subscribe("monitor/#", 0), 0);
    // Lock the hub: the watcher's deliveries are now denied, and every denial is an event.
    let locked = rules("client-id", true).replace("service-level", "state = \"locked\"\nservice-level");
    deploy(&b.policy_dir, "hub", &support::hub_policy(&locked, &[]));
    b.wait_loads(2);
    let (_refused, _) = Mqtt::connect(&Opts::new(b.port, Proto::V5, "s1"));
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    let (_c, code) = Mqtt::connect(&Opts::new(b.port, Proto::V5, "s2"));
    assert_eq!(code, 0x87, "a locked hub refuses, but it answers");
    assert!(started.elapsed() < Duration::from_secs(1), "CONNACK took {:?}", started.elapsed());
    let n = b.events().len();
    assert!(n < 500, "{n} events in 2 s: the monitor topic feeds itself");
    assert!(b.terminate(Duration::from_secs(5)), "SIGTERM stops the broker");
}

/// `rules(identity_from, true)` plus delivery rules: every device topic may be delivered except
/// commands under `secret/`, and at most `max_connections` connections.
fn restore_rules(identity_from: &str, max_connections: u32) -> String {
    rules(identity_from, true).replace(
        "service-level = \"dedicated\"\n",
        &format!("service-level = \"dedicated\"\nmax-connections = {max_connections}\n"),
    ) + "[[rule]]\neffect = \"allow\"\nactions = [\"delivery\"]\ntopics = [\"devices/#\", \"monitor/#\"]\n\n\
           [[rule]]\neffect = \"deny\"\nactions = [\"delivery\"]\ntopics = [\"devices/+/cmd/secret/#\"]\n"
}

/// Waits (bounded) for `n` messages, or returns what came.
fn receive(client: &mut Mqtt, n: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        match client.recv(deadline.saturating_duration_since(Instant::now())) {
            Some((_, payload, _)) => got.push(String::from_utf8_lossy(&payload).into_owned()),
            None => break,
        }
    }
    got
}

#[test]
fn messages_published_after_a_restart_while_the_restored_session_is_offline_are_delivered() {
    const N: usize = 20;
    let setup = Setup::tenant("hub", support::hub_policy(&restore_rules("username", 2), &[])).persistent();
    let mut b = Broker::start("restored", setup).unwrap();
    let owner = Opts::new(b.port, Proto::V311, "station-1").user("s1", "").clean(false);
    let mut s1 = Mqtt::connected(&owner);
    assert_eq!(s1.subscribe("devices/s1/cmd/#", 1), 1);
    s1.disconnect();
    b.wait_event("s1 offline", |e| field(e, "outcome") == "disconnect" && field(e, "client_id") == "station-1");
    assert!(b.terminate(Duration::from_secs(10)), "SIGTERM ends the broker:\n{}", b.log());
    b.restart().unwrap();

    // Mosquitto restored station-1's session from its file; the plugin has not seen it since.
    let mut ops = Mqtt::connected(&Opts::new(b.port, Proto::V5, "ops").user("app", ""));
    for i in 0..N {
        assert_eq!(ops.publish("devices/s1/cmd/run", 1, false, format!("m{i}").as_bytes()), Some(0));
    }
    assert!(matches!(ops.publish("devices/s1/cmd/secret/key", 1, false, b"not-for-s1"), Some(0 | 0x10)));
    let restored = b.wait_event("the restore", |e| field(e, "outcome") == "restore");
    assert_eq!((field(&restored, "client_id"), field(&restored, "device_id")), ("station-1", "s1"), "{restored}");
    b.wait_event("the secret refused to the restored session", |e| {
        field(e, "action") == "delivery"
            && field(e, "outcome") == "deny"
            && field(e, "topic") == "devices/s1/cmd/secret/key"
    });

    // Another identity presenting the restored client id is refused before Mosquitto hands it the session.
    let (_thief, code) = Mqtt::connect(&Opts::new(b.port, Proto::V5, "station-1").user("s2", "").clean(false));
    assert_eq!(code, 0x87);
    let refused = b.wait_event("the takeover refused", |e| {
        field(e, "outcome") == "reject" && field(e, "client_id") == "station-1" && e["reason_code"] == 0x85
    });
    assert!(field(&refused, "message").contains("another device (s1)"), "{refused}");

    // The owner proves itself again (the restored session counted no connection: ops + s1 fit in 2).
    let mut back = Mqtt::connected(&owner);
    assert!(back.session_present, "session_present = 1");
    let got = receive(&mut back, N, Duration::from_secs(10));
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "events: {:#?}\n{}", b.events(), b.log());
    let late = back.drain(Duration::from_millis(1000));
    assert!(late.is_empty(), "the refused message was delivered: {late:?}");
}

#[test]
fn a_client_let_in_without_authentication_is_never_restored_and_stays_denied() {
    // `use_identity_as_username`: Mosquitto skips BASIC_AUTH, the plugin never saw the client,
    // and with persistence on it must not mistake it for a restored session.
    let ca = support::pki::Ca::new("device CA");
    let server = ca.server();
    let setup = Setup {
        tls: Some((ca.pem.clone(), server.cert, server.key)),
        ..Setup::tenant("hub", hub("client-id", true)).persistent()
    };
    let b = Broker::start_with("identity-as-username", true, &setup, "use_identity_as_username true\n").unwrap();
    let c = ca.client(Some("s1"));
    let opts = Opts::new(0, Proto::V5, "s1").clean(false).tls(b.tls_port.unwrap(), &ca.pem, &c.cert, &c.key);
    let mut s1 = Mqtt::connected(&opts);
    assert_eq!(s1.subscribe("devices/s1/cmd/#", 1), 0x87);
    assert_eq!(s1.publish("devices/s1/t", 1, false, b"x"), Some(0x87));
    assert!(b.events().iter().all(|e| field(e, "outcome") != "restore"), "{:#?}", b.events());
}

/// Persistent subscriber offline, `n` QoS 1 messages queued, SIGKILL, restart, `n` more while
/// it is still offline, then it reconnects: how many of the 2n it receives. The same
/// configuration with (`plugin`) and without the plugin.
fn delivered_after_sigkill(plugin: bool, n: usize) -> (usize, bool) {
    let autosave = "autosave_on_changes true\nautosave_interval 10\n";
    let setup =
        if plugin { Setup::tenant("hub", hub("client-id", true)).persistent() } else { Setup::default().persistent() };
    let mut b = Broker::start_with(if plugin { "kill-plugin" } else { "kill-bare" }, plugin, &setup, autosave).unwrap();
    let sub = Opts::new(b.port, Proto::V311, "s1").clean(false);
    let mut s1 = Mqtt::connected(&sub);
    assert_eq!(s1.subscribe("devices/s1/cmd/#", 1), 1);
    s1.disconnect();
    std::thread::sleep(Duration::from_millis(300));
    let publish = |b: &Broker, from: usize| {
        let mut app = Mqtt::connected(&Opts::new(b.port, Proto::V5, "app"));
        for i in from..from + n {
            assert_eq!(app.publish("devices/s1/cmd/run", 1, false, format!("m{i}").as_bytes()), Some(0));
        }
        app.disconnect();
        // Let the broker's loop run its autosave check after the last change.
        std::thread::sleep(Duration::from_millis(500));
    };
    publish(&b, 0);
    b.kill();
    b.restart().unwrap();
    publish(&b, n);
    let mut back = Mqtt::connected(&sub);
    let got = receive(&mut back, 2 * n, Duration::from_secs(5));
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    (unique.len(), back.session_present)
}

#[test]
fn after_sigkill_the_plugin_delivers_no_fewer_messages_than_bare_mosquitto() {
    const N: usize = 25;
    let (bare, bare_session) = delivered_after_sigkill(false, N);
    let (plugin, plugin_session) = delivered_after_sigkill(true, N);
    println!(
        "after SIGKILL, {N} QoS 1 messages queued before and {N} after the restart: bare Mosquitto delivered {bare} \
         (session present: {bare_session}), with the plugin {plugin} (session present: {plugin_session})"
    );
    assert!(plugin >= bare, "plugin delivered {plugin}, bare Mosquitto {bare}");
}

/// `mosquitto_sub -V 5` with extra arguments, left running.
fn sub5(port: u16, args: &[&str]) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "5"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed")
}

/// Two listeners with a plugin each (`per_listener_settings true`): tenant `open` on the first,
/// `victim` on the second, both with the same rules (devices `s1`, `s2`, `app`).
fn two_tenant_listeners(tag: &str) -> Broker {
    let policies = [("open", hub("client-id", true)), ("victim", hub("client-id", true))];
    Broker::start_per_listener(tag, &policies, "").unwrap()
}

#[test]
fn a_client_of_another_tenants_listener_cannot_take_over_a_session() {
    let b = two_tenant_listeners("cross-listener");
    let (open, victim) = (b.ports[0], b.ports[1]);
    // The victim's device subscribes with a persistent session and leaves; a command is queued.
    let owner = ["-i", "s1", "-c", "-q", "1", "-t", "devices/s1/cmd/#"];
    assert_eq!(output(sub(victim, &[&owner[..], &["-E"][..]].concat())), "");
    assert!(publish(victim, "app", None, "devices/s1/cmd/reboot", "for-the-victim"));

    // The same client id on the other tenant's listener, whose rules would admit it: refused,
    // before Mosquitto hands it the victim's session.
    let thief = sub(open, &[&owner[..], &["-C", "1", "-W", "3"][..]].concat());
    assert_eq!(output(thief), "", "the victim's queued command leaked to another tenant's client");
    let e = b.wait_event("the takeover refused", |e| {
        field(e, "outcome") == "reject" && field(e, "client_id") == "s1" && field(e, "tenant") == "open"
    });
    assert!(field(&e, "message").contains("belongs to the session of another device"), "{e}");
    assert_eq!(e["reason_code"], 0x85, "{e}");

    // The victim gets its command; connected, it is not knocked off by another attempt.
    let mut back = Mqtt::connected(&Opts::new(victim, Proto::V311, "s1").clean(false));
    assert_eq!(back.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"for-the-victim".to_vec()));
    let (_c, code) = Mqtt::connect(&Opts::new(open, Proto::V5, "s1").clean(false));
    // Mosquitto 2.0.11 answers a plugin's refusal with 0x87; the event holds the gateway's 0x85.
    assert_eq!(code, 0x87);
    assert!(back.closed(Duration::from_secs(1)).is_none(), "the victim stays connected");
    assert!(publish(victim, "app", None, "devices/s1/cmd/x", "still-yours"));
    assert_eq!(back.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"still-yours".to_vec()));
}

#[test]
fn an_mqtt5_session_with_clean_start_and_an_expiry_keeps_its_queue_and_its_delayed_will() {
    let b = Broker::start("v5-expiry", Setup::tenant("hub", hub("client-id", true))).unwrap();
    // Clean start 1 with a session expiry interval (paho's usual MQTT 5 pattern): the broker
    // keeps the session after the connection.
    let first = sub5(b.port, &["-i", "app", "-x", "300", "-q", "1", "-t", "devices/#", "-E"]);
    assert_eq!(output(first), "");
    for i in 0..3 {
        assert!(publish(b.port, "s1", None, "devices/s1/t", &format!("queued-{i}")));
    }
    let back = sub5(b.port, &["-i", "app", "-c", "-x", "300", "-q", "1", "-t", "devices/#", "-C", "3", "-W", "5"]);
    let got: Vec<String> = output(back).lines().map(str::to_owned).collect();
    assert_eq!(got, ["queued-0", "queued-1", "queued-2"], "events: {:#?}\n{}", b.events(), b.log());

    // A Last Will with a delay, from a clean-start session with an expiry: sent after the delay.
    let mut app = Mqtt::connected(&Opts::new(b.port, Proto::V5, "app"));
    assert_eq!(app.subscribe("devices/s2/status", 1), 1);
    let will = [
        "-i",
        "s2",
        "-x",
        "60",
        "-t",
        "devices/s2/cmd/#",
        "--will-topic",
        "devices/s2/status",
        "--will-qos",
        "1",
        "--will-payload",
        "gone",
        "-D",
        "will",
        "will-delay-interval",
        "1",
    ];
    let mut s2 = sub5(b.port, &will);
    accepted(&b, "s2");
    s2.kill().unwrap();
    let _ = s2.wait();
    let got = app.recv(Duration::from_secs(6));
    assert_eq!(got.map(|m| m.1), Some(b"gone".to_vec()), "events: {:#?}\n{}", b.events(), b.log());
}

#[test]
fn a_retained_last_will_is_refused_where_the_rules_override_retained_flags() {
    let rules = rules("client-id", true).replace("[hub]\n", "[hub]\nretained = \"override\"\n");
    let b = Broker::start("retained-will", Setup::tenant("hub", support::hub_policy(&rules, &[]))).unwrap();
    let will = [
        "-i",
        "s1",
        "-t",
        "devices/s1/cmd/#",
        "--will-topic",
        "devices/s1/status",
        "--will-qos",
        "1",
        "--will-retain",
        "--will-payload",
        "offline",
    ];
    let mut s1 = sub(b.port, &will);
    accepted(&b, "s1");
    s1.kill().unwrap();
    let _ = s1.wait();
    let e = b.wait_event("the retained will refused", |e| {
        field(e, "outcome") == "deny" && field(e, "client_id") == "s1" && field(e, "topic") == "devices/s1/status"
    });
    assert!(field(&e, "message").contains("retained Last Will refused"), "{e}");
    // Nothing was stored retained for later subscribers.
    let late = sub(b.port, &["-i", "app", "-t", "devices/s1/status", "-C", "1", "-W", "2"]);
    assert_eq!(output(late), "", "a retained will was stored on a hub that overrides retained flags");
}
