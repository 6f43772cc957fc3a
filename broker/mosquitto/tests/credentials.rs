//! Identities proven, not claimed, over a real Mosquitto with the shipped examples: IBM device
//! tokens and API keys, Azure-style SAS tokens, certificates bound to the client id, Mosquitto
//! `mosquitto_passwd` hashes, and no secret in any event line.

use mqtt_policy_testkit as support;
use support::proofs;

use std::time::Duration;

use proofs::{API_KEY, API_TOKEN, device_token, now_s, sas_token, sas_user, shared_key};
use support::client::{Mqtt, Opts, Proto};
use support::pki::Ca;
use support::{Broker, Setup, field, run};

const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");
const SHARED: &str = include_str!("../../../policies/examples/shared-hub/rules.toml");
const FACTORY: &str = include_str!("../../../policies/examples/dedicated-ca/rules.toml");
const SHORT: Duration = Duration::from_millis(500);

fn ibm_broker() -> Broker {
    let setup = Setup {
        options: vec![("tenant_from".into(), "client-id:*:{tenant}:*".into())],
        policies: vec![("acme".into(), support::hub_policy(IBM, &[]))],
        tls: None,
        ..Default::default()
    };
    Broker::start("creds-ibm", setup).unwrap()
}

fn refused(proto: Proto) -> u8 {
    if proto == Proto::V5 { 0x87 } else { 5 }
}

/// Every secret of a run must be absent from every event line.
fn assert_no_secret_in_events(b: &Broker, secrets: &[&str]) {
    let text = std::fs::read_to_string(&b.events).unwrap_or_default();
    assert!(!text.is_empty(), "the run wrote events");
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} in an event line:\n{text}");
    }
}

#[test]
fn ibm_applications_need_an_api_key_and_devices_their_token() {
    let b = ibm_broker();
    for proto in [Proto::V5, Proto::V311] {
        let (_c, code) = Mqtt::connect(&Opts::new(b.port, proto, "a:acme:whoever"));
        assert_eq!(code, refused(proto), "anonymous application");
        let e = b.wait_event("anonymous application", |e| {
            field(e, "client_id") == "a:acme:whoever" && field(e, "outcome") == "reject"
        });
        assert_eq!(e["reason_code"], 0x86);
        assert!(field(&e, "message").contains("API key"), "{e}");

        let (_c, code) = Mqtt::connect(&Opts::new(b.port, proto, "a:acme:dash").user(API_KEY, "MP$08VKz!8rXwnR-Q"));
        assert_eq!(code, refused(proto), "wrong API token");
        let (_c, code) = Mqtt::connect(&Opts::new(b.port, proto, "a:acme:m-009").user(API_KEY, API_TOKEN));
        assert_eq!(code, refused(proto), "a device id in the application form");
        let (_c, code) = Mqtt::connect(
            &Opts::new(b.port, proto, "d:acme:gauge:m-009").user("use-token-auth", &device_token("m-009")),
        );
        assert_eq!(code, refused(proto), "a registered device claiming another type");
    }
    b.wait_event("a: form", |e| field(e, "message").contains("names device `m-009`"));
    b.wait_event("other type", |e| field(e, "message").contains("registered as type `meter`"));

    // The real device and an application that commands it.
    let mut app = Mqtt::connected(&Opts::new(b.port, Proto::V5, "a:acme:ops").user(API_KEY, API_TOKEN));
    let mut dev =
        Mqtt::connected(&Opts::new(b.port, Proto::V5, "d:acme:sensor:s1").user("use-token-auth", &device_token("s1")));
    assert_eq!(dev.subscribe("iot-2/type/sensor/id/s1/cmd/+/fmt/+", 1), 1);
    let cmd = "iot-2/type/sensor/id/s1/cmd/reboot/fmt/json";
    assert_eq!(app.publish(cmd, 1, false, b"first"), Some(0));
    assert_eq!(dev.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"first".to_vec()));

    // Impostors with the device's client id are refused at authentication, before Mosquitto's
    // session takeover: the real device stays connected and keeps getting its commands.
    for (proto, creds) in [
        (Proto::V5, None),
        (Proto::V311, None),
        (Proto::V5, Some(("use-token-auth", "guessed"))),
        (Proto::V311, Some(("use-token-auth", device_token("s2").leak() as &str))),
    ] {
        let mut o = Opts::new(b.port, proto, "d:acme:sensor:s1");
        if let Some((u, p)) = creds {
            o = o.user(u, p);
        }
        let (_c, code) = Mqtt::connect(&o);
        assert_eq!(code, refused(proto), "impostor {creds:?}");
    }
    assert!(dev.is_alive(), "the real device is still connected");
    assert_eq!(app.publish(cmd, 1, false, b"second"), Some(0));
    assert_eq!(dev.recv(Duration::from_secs(5)).map(|m| m.1), Some(b"second".to_vec()));
    assert!(dev.closed(SHORT).is_none());

    // mosquitto_sub with the device's token works as well (v3.1.1 and v5 clients).
    let (code, out) = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &b.port.to_string(),
            "-i",
            "d:acme:sensor:s2",
            "-u",
            "use-token-auth",
            "-P",
            &device_token("s2"),
            "-t",
            "iot-2/type/sensor/id/s2/cmd/+/fmt/+",
            "-W",
            "1",
        ],
    );
    assert!(!out.contains("not authorised") && !out.contains("Connection Refused"), "{code}: {out}");
    let (_, out) = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &b.port.to_string(),
            "-V",
            "5",
            "-i",
            "d:acme:sensor:s2",
            "-u",
            "use-token-auth",
            "-P",
            "wrong",
            "-t",
            "x",
            "-W",
            "1",
        ],
    );
    assert!(out.to_lowercase().contains("not authori"), "{out}");

    let s2 = device_token("s2");
    assert_no_secret_in_events(&b, &[API_TOKEN, "MP$08VKz!8rXwnR-Q", &device_token("s1"), &s2, "guessed"]);
    dev.disconnect();
    app.disconnect();
}

fn sas_opts(port: u16, proto: Proto, device: &str, token: &str) -> Opts {
    Opts::new(port, proto, device).user(&sas_user(device), token)
}

#[test]
fn sas_tokens_admit_until_they_expire() {
    let b = Broker::start("creds-sas", Setup::tenant("shared", support::hub_policy(SHARED, &[]))).unwrap();
    let (hostname, _, _) = shared_key("thermo-1");
    let resource = format!("{hostname}%2Fdevices%2Fthermo-1");
    let good = sas_token("thermo-1", now_s() + 3600);
    let expired = sas_token("thermo-1", now_s() - 60);
    let forged = hub_rules::sas::sign(&resource, b"not the device's key, 32 bytes..", now_s() + 3600, None);
    for proto in [Proto::V5, Proto::V311] {
        let mut ok = Mqtt::connected(&sas_opts(b.port, proto, "thermo-1", &good));
        assert!(matches!(ok.publish("devices/thermo-1/telemetry/t", 1, false, b"21"), None | Some(0 | 0x10)));
        ok.disconnect();
        for (token, message) in [
            (&expired, "shared access signature expired at se="),
            (&forged, "shared access signature is not valid: the signature does not match"),
        ] {
            let (_c, code) = Mqtt::connect(&sas_opts(b.port, proto, "thermo-1", token));
            assert_eq!(code, refused(proto));
            let e = b.wait_event(message, |e| field(e, "message").starts_with(message));
            assert_eq!(e["reason_code"], 0x86);
        }
    }

    // A token that expires shortly: admitted, then disconnected by the broker's tick once `se`
    // passed, without the client doing anything (IoT Hub's 401003).
    let se = now_s() + 2;
    let short = sas_token("thermo-1", se);
    let mut dev = Mqtt::connected(&sas_opts(b.port, Proto::V5, "thermo-1", &short));
    assert!(matches!(dev.publish("devices/thermo-1/telemetry/t", 1, false, b"1"), Some(0 | 0x10)));
    assert!(dev.closed(Duration::from_secs(8)).is_some(), "disconnected at expiry");
    let after_se = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
        - (se as i64) * 1000;
    eprintln!("disconnected {after_se} ms after se");
    assert!((0..2000).contains(&after_se), "disconnected {after_se} ms after se");
    let e = b.wait_event("expired", |e| field(e, "outcome") == "expired");
    assert!(field(&e, "message").starts_with("IoTHubUnauthorized:"), "{e}");
    Mqtt::connected(&proofs::sas(b.port, Proto::V5, "thermo-1")).disconnect();
    // thermo-3 has no key of its own: the hub's `device` policy signs for it.
    Mqtt::connected(&proofs::sas(b.port, Proto::V311, "thermo-3")).disconnect();

    let sig = |t: &str| t.split("sig=").nth(1).unwrap().split('&').next().unwrap().to_owned();
    let (s1, s2, s3) = (sig(&good), sig(&expired), sig(&short));
    let key_b64 = SHARED.split("sas-key = \"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert_no_secret_in_events(&b, &[&s1, &s2, &s3, &key_b64, "SharedAccessSignature"]);
}

#[test]
fn a_certificate_must_name_the_client_ids_device() {
    let (server_ca, factory) = (Ca::new("test server CA"), Ca::new("factory CA"));
    let server = server_ca.server();
    let setup = Setup {
        options: vec![("tenant".into(), "acme".into())],
        policies: vec![("acme".into(), support::hub_policy(FACTORY, &[("factory-ca", &factory.pem)]))],
        tls: Some((factory.pem.clone(), server.cert, server.key)),
        ..Default::default()
    };
    let b = Broker::start("creds-mtls", setup).unwrap();
    let press9 = factory.client(Some("press-9"));
    for proto in [Proto::V5, Proto::V311] {
        let o = Opts::new(0, proto, "press-1").tls(b.tls_port.unwrap(), &server_ca.pem, &press9.cert, &press9.key);
        let (_c, code) = Mqtt::connect(&o);
        assert_eq!(code, refused(proto));
    }
    b.wait_event("binding", |e| {
        field(e, "message")
            == "certificate common name `press-9` is not the identity `press-1` the client identifier names"
    });
    let own = Opts::new(0, Proto::V5, "press-9").tls(b.tls_port.unwrap(), &server_ca.pem, &press9.cert, &press9.key);
    Mqtt::connected(&own).disconnect();
}

#[test]
fn dollar_user_names_never_expand_and_mosquitto_passwd_hashes_verify() {
    // A real password file line from Debian's mosquitto_passwd, brought over unchanged.
    let dir = std::env::temp_dir().join(format!("mqtt-policy-creds-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("passwd");
    let (code, out) = run("mosquitto_passwd", &["-c", "-b", file.to_str().unwrap(), "alice", "wonder land"]);
    assert_eq!(code, 0, "{out}");
    let line = std::fs::read_to_string(&file).unwrap();
    let hash = line.trim().strip_prefix("alice:").unwrap().to_owned();
    assert!(hash.starts_with("$7$"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();

    let rules = format!(
        "[identity]\nauthentication = \"none\"\nallow-unregistered = true\n\
         [[device]]\nid = \"alice\"\npassword-hash = \"{hash}\"\n\
         [[rule]]\neffect = \"allow\"\nactions = [\"publish\", \"subscribe\"]\ntopics = [\"${{username}}/#\"]\n"
    );
    let b = Broker::start("creds-pw", Setup::tenant("t", support::hub_policy(&rules, &[]))).unwrap();
    let port = b.port.to_string();
    let pub_as = |user: &str, pw: &str, topic: &str| {
        run(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "5",
                "-i",
                user,
                "-u",
                user,
                "-P",
                pw,
                "-t",
                topic,
                "-m",
                "x",
                "-q",
                "1",
            ],
        )
    };
    let (code, out) = pub_as("alice", "wonder land", "alice/t");
    assert_eq!(code, 0, "the mosquitto_passwd hash verifies: {out}");
    let (code, _) = pub_as("alice", "wonderland", "alice/t");
    assert_ne!(code, 0, "a wrong password is refused");
    for proto in [Proto::V5, Proto::V311] {
        let (_c, code) = Mqtt::connect(&Opts::new(b.port, proto, "c1").user("$SYS", "x"));
        assert_eq!(code, refused(proto), "user name $SYS");
    }
    let e = b.wait_event("$SYS", |e| field(e, "message").starts_with("user name `$SYS` cannot be used"));
    assert_eq!(e["reason_code"], 0x86);
    let mut bob = Mqtt::connected(&Opts::new(b.port, Proto::V5, "c2").user("bob", ""));
    assert_eq!(bob.subscribe("$SYS/#", 0), 0x87);
    assert_eq!(bob.subscribe("bob/#", 0), 0);
    assert_no_secret_in_events(&b, &["wonder land", "wonderland", &hash]);
}

#[test]
fn a_second_api_key_cannot_take_over_another_keys_application_session() {
    // The example hub with a second key (the same token, for brevity) in the same organization.
    let key_line = IBM.lines().position(|l| l.contains(API_KEY)).expect("the example's API key");
    let hash = IBM.lines().nth(key_line + 1).filter(|l| l.starts_with("token-hash")).expect("its token hash");
    let rules = format!("{IBM}\n[[application]]\napi-key = \"a-acme-second0001\"\n{hash}\n");
    let setup = Setup {
        options: vec![("tenant_from".into(), "client-id:*:{tenant}:*".into())],
        policies: vec![("acme".into(), support::hub_policy(&rules, &[]))],
        tls: None,
        ..Default::default()
    };
    let b = Broker::start("creds-apps", setup).unwrap();
    let first = Opts::new(b.port, Proto::V311, "A:acme:dashboard:1").user(API_KEY, API_TOKEN).clean(false);
    let mut app = Mqtt::connected(&first);
    assert_eq!(app.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", 1), 1);
    // The other key presents the same client id: refused, and the first key's connection stays.
    let second = Opts::new(b.port, Proto::V311, "A:acme:dashboard:1").user("a-acme-second0001", API_TOKEN).clean(false);
    let (_c, code) = Mqtt::connect(&second);
    assert_eq!(code, refused(Proto::V311));
    let e = b.wait_event("the other key refused", |e| {
        field(e, "outcome") == "reject" && field(e, "message").contains("belongs to the session of another device")
    });
    assert!(!field(&e, "message").contains(API_KEY), "names no other key: {e}");
    assert!(app.closed(Duration::from_secs(1)).is_none(), "the first key's application stays connected");
    // The same key reconnecting takes its own session over.
    let (_again, code) = Mqtt::connect(&first);
    assert_eq!(code, 0);
}
