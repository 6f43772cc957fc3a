//! Contract tests for the EMQX 5 and VerneMQ dialects, in-process, without a broker (neither
//! can be installed here). Every request is shaped as the broker's own documentation shows it,
//! with this test's identities filled in:
//!
//! - EMQX: docs.emqx.com, EMQX v5.8, `access-control/authn/http` (the POST body template
//!   `{"username": "${username}", "password": "${password}", ...}`, the response example with
//!   `result`, `is_superuser`, `client_attrs`, `expire_at`) and `access-control/authz/http`
//!   (placeholders `${clientid} ${username} ${action} ${topic} ${qos} ${retain}`, results
//!   `allow` / `deny` / `ignore`); statuses as `emqx_authn_http.erl` / `emqx_authz_http.erl` of
//!   v5.8.9 read them (any status but 200/204 is `ignore`, 204 is allow).
//! - VerneMQ: vernemq/vmq-docs `plugin-development/webhookplugins.md` (the example payloads of
//!   `auth_on_register`, `auth_on_publish`, `auth_on_subscribe`, `on_client_gone`; the header
//!   `vernemq-hook`; results `ok`, `next`, `{"error": ...}`, `modifiers`, per-topic `qos` 128);
//!   the `_m5` shapes as `vmq_webhooks_plugin.erl` of VerneMQ 2.1.2 encodes and decodes them
//!   (`clean_start`, `properties`, `modifiers.topics`).
//!
//! And hostile requests: garbage JSON, huge bodies, missing fields, another tenant's client
//! id, superuser flags.

use std::time::Duration;

use mqtt_policy_gateway::{Config, EventTarget, TenantSource};
use mqtt_policy_serve::{Options, Service, vernemq};
use mqtt_policy_testkit::proofs::{device_token, now_s, sas_token, sas_user};
use mqtt_policy_testkit::{TempDir, deploy, http_request, hub_policy, read_events};
use serde_json::{Value, json};

const IBM: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");
const SHARED: &str = include_str!("../../../policies/examples/shared-hub/rules.toml");

/// A service answering for `tenant` only, with `rules`.
fn start(tag: &str, tenant: &str, rules: &str, options: Options) -> (Service, TempDir) {
    let dir = TempDir::new(tag);
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    deploy(&policies, tenant, &hub_policy(rules, &[]));
    let mut config = Config::new(&policies, TenantSource::fixed(tenant).unwrap());
    config.events = EventTarget::File(dir.join("events.jsonl"));
    let options = Options { listen: "127.0.0.1:0".parse().unwrap(), workers: 2, ..options };
    (Service::start(config, options).unwrap(), dir)
}

/// ibm-platform without its 3-messages-a-day quota (these tests publish more).
fn ibm() -> String {
    format!("{}{}", &IBM[..IBM.find("[hub.rate]").unwrap()], &IBM[IBM.find("[monitoring]").unwrap()..])
}

/// shared-hub granting QoS 1-2 subscriptions at QoS 0 instead of refusing them.
fn shared_downgrading() -> String {
    SHARED.replace(r#"shared-subscribe = "refuse""#, r#"shared-subscribe = "downgrade""#)
}

/// A POST of `body` with `headers`: the status, the content type and the body.
fn post(s: &Service, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n");
    for (k, v) in headers {
        request += &format!("{k}: {v}\r\n");
    }
    request += &format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    http_request(s.local_addr().port(), request.as_bytes()).expect("an answer")
}

/// A JSON answer with status 200.
fn json_ok(answer: (u16, String)) -> Value {
    assert_eq!(answer.0, 200, "{answer:?}");
    serde_json::from_str(&answer.1).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.1))
}

fn emqx(s: &Service, path: &str, body: &Value) -> Value {
    json_ok(post(s, path, &[], &body.to_string()))
}

fn authn(client: &str, username: &str, password: &str) -> Value {
    // The documented template, with the client id and peer added as the README configures it.
    json!({ "clientid": client, "username": username, "password": password, "peerhost": "127.0.0.1" })
}

fn authz(client: &str, action: &str, topic: &str, qos: &str, retain: &str) -> Value {
    // Rendered as strings, as the template `"qos": "${qos}"` renders them.
    json!({ "clientid": client, "username": "use-token-auth", "action": action, "topic": topic, "qos": qos, "retain": retain })
}

#[test]
fn emqx_authentication_and_authorization_follow_the_documented_contract() {
    let (s, dir) = start("emqx-contract", "acme", &ibm(), Options::default());
    let d1 = "d:acme:sensor:s1";
    let allow = emqx(&s, "/emqx/authn", &authn(d1, "use-token-auth", &device_token("s1")));
    assert_eq!(
        allow,
        json!({ "result": "allow", "is_superuser": false, "client_attrs": { "tenant": "acme", "device_id": "s1" } }),
        "ibm-platform's tokens do not expire: no expire_at"
    );
    assert_eq!(emqx(&s, "/emqx/authn", &authn(d1, "use-token-auth", "wrong")), json!({ "result": "deny" }));
    // The refused login left s1's session alone.
    let own = "iot-2/type/sensor/id/s1/evt/status/fmt/json";
    assert_eq!(emqx(&s, "/emqx/authz", &authz(d1, "publish", own, "1", "false")), json!({ "result": "allow" }));
    let other = "iot-2/type/sensor/id/s2/evt/status/fmt/json";
    assert_eq!(emqx(&s, "/emqx/authz", &authz(d1, "publish", other, "1", "false")), json!({ "result": "deny" }));
    // ibm-platform overrides retained flags; EMQX's authorization cannot clear one: refused.
    assert_eq!(emqx(&s, "/emqx/authz", &authz(d1, "publish", own, "0", "true")), json!({ "result": "deny" }));
    assert_eq!(
        emqx(&s, "/emqx/authz", &authz(d1, "subscribe", "iot-2/type/sensor/id/s1/cmd/+/fmt/+", "1", "false")),
        json!({ "result": "allow" })
    );
    assert_eq!(
        emqx(&s, "/emqx/authz", &authz(d1, "subscribe", "iot-2/type/+/id/+/evt/+/fmt/+", "1", "false")),
        json!({ "result": "deny" })
    );
    // Numbers and booleans unquoted in the template, and `method = get` (query parameters).
    let unquoted = json!({ "clientid": d1, "action": "publish", "topic": own, "qos": 1, "retain": false });
    assert_eq!(emqx(&s, "/emqx/authz", &unquoted), json!({ "result": "allow" }));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("clientid", d1), ("action", "publish"), ("topic", own), ("qos", "0"), ("retain", "false")])
        .finish();
    let get = format!("GET /emqx/authz?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(json_ok(http_request(s.local_addr().port(), get.as_bytes()).unwrap()), json!({ "result": "allow" }));
    // A client the service never saw authenticate (it restarted, or the client's node asked
    // another service): re-established with resumed = true, which hub-rules lets publish nothing.
    let d3 = "d:acme:sensor:s3";
    let topic3 = "iot-2/type/sensor/id/s3/evt/status/fmt/json";
    assert_eq!(emqx(&s, "/emqx/authz", &authz(d3, "publish", topic3, "1", "false")), json!({ "result": "deny" }));
    let events = read_events(&dir.join("events.jsonl"));
    assert!(events.iter().any(|e| e["client_id"] == d3 && e["outcome"] == "restore"), "{events:#?}");
    assert!(events.iter().any(|e| e["outcome"] == "deny" && e["topic"] == other), "{events:#?}");
    assert!(
        events.iter().any(|e| e["outcome"] == "deny"
            && e["message"].as_str().is_some_and(|m| m.contains("EMQX's authorization cannot"))),
        "the retained refusal says why: {events:#?}"
    );
    // /metrics counts the dialect.
    let metrics = http_request(s.local_addr().port(), b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap()
        .1;
    assert!(metrics.contains(r#"dialect="emqx",tenant="acme",kind="publish",outcome="allow""#), "{metrics}");
}

#[test]
fn emqx_expire_at_is_the_sas_token_expiry_and_downgrades_are_refused() {
    let (s, _dir) = start("emqx-sas", "shared", &shared_downgrading(), Options::default());
    let se = now_s() + 3600;
    let answer = emqx(&s, "/emqx/authn", &authn("thermo-1", &sas_user("thermo-1"), &sas_token("thermo-1", se)));
    assert_eq!(answer["result"], "allow", "{answer}");
    assert_eq!(answer["expire_at"], json!(se), "expire_at is the token's se, in seconds: {answer}");
    assert_eq!(answer["is_superuser"], json!(false));
    // The policy grants subscriptions at QoS 0 only; EMQX cannot downgrade: refused.
    let sub = |qos: &str| authz("thermo-1", "subscribe", "devices/thermo-1/commands/#", qos, "false");
    assert_eq!(emqx(&s, "/emqx/authz", &sub("0")), json!({ "result": "allow" }));
    assert_eq!(emqx(&s, "/emqx/authz", &sub("1")), json!({ "result": "deny" }));
    // An expired token is refused at connect.
    let old = emqx(&s, "/emqx/authn", &authn("thermo-2", &sas_user("thermo-2"), &sas_token("thermo-2", now_s() - 10)));
    assert_eq!(old, json!({ "result": "deny" }));
}

#[test]
fn emqx_garbage_and_hostile_requests_are_denied_with_200_never_ignored() {
    let secret = "s3cret";
    let (s, _dir) = start(
        "emqx-hostile",
        "acme",
        &ibm(),
        Options { secret: Some(secret.into()), max_body: 4096, ..Default::default() },
    );
    let d1 = "d:acme:sensor:s1";
    let deny = (200, json!({ "result": "deny" }).to_string());
    let with = |path: &str| format!("/{secret}{path}");
    // Superuser flags or attributes a request carries change nothing: the answer never says
    // is_superuser true.
    let mut login = authn(d1, "use-token-auth", &device_token("s1"));
    login["is_superuser"] = json!(true);
    login["client_attrs"] = json!({ "tenant": "other" });
    let answer = json_ok(post(&s, &with("/emqx/authn"), &[], &login.to_string()));
    assert_eq!(answer["is_superuser"], json!(false), "{answer}");
    assert_eq!(answer["client_attrs"]["tenant"], "acme", "{answer}");
    for (what, path, body) in [
        ("not JSON", with("/emqx/authn"), "{not json".to_owned()),
        ("a JSON array", with("/emqx/authz"), "[1, 2]".to_owned()),
        ("no client id", with("/emqx/authz"), json!({ "action": "publish", "topic": "t" }).to_string()),
        ("an empty client id", with("/emqx/authn"), json!({ "clientid": "", "username": "u" }).to_string()),
        ("no topic", with("/emqx/authz"), json!({ "clientid": d1, "action": "publish" }).to_string()),
        ("an unknown action", with("/emqx/authz"), authz(d1, "all", "t", "0", "false").to_string()),
        ("QoS 3", with("/emqx/authz"), authz(d1, "publish", "t", "3", "false").to_string()),
        ("retain maybe", with("/emqx/authz"), authz(d1, "publish", "t", "0", "maybe").to_string()),
        (
            "a field twice",
            format!("{}?clientid=x", with("/emqx/authz")),
            authz(d1, "publish", "t", "0", "false").to_string(),
        ),
        ("a huge body", with("/emqx/authn"), format!("{{\"clientid\": \"{}\"}}", "x".repeat(10_000))),
        ("no secret", "/emqx/authz".to_owned(), authz(d1, "publish", "t", "0", "false").to_string()),
        ("a wrong secret", "/wrong/emqx/authz".to_owned(), authz(d1, "publish", "t", "0", "false").to_string()),
        ("an unknown endpoint", with("/emqx/acl"), authz(d1, "publish", "t", "0", "false").to_string()),
    ] {
        // EMQX takes any other status as `ignore`, after which `no_match` (default allow) decides.
        assert_eq!(post(&s, &path, &[], &body), deny, "{what}");
    }
    // Another tenant's client id: the service answers for acme only, so it is refused at
    // connect and its checks (a restored session with a client id no policy admits) too.
    let foreign = "d:other:sensor:s1";
    assert_eq!(
        post(&s, &with("/emqx/authn"), &[], &authn(foreign, "use-token-auth", &device_token("s1")).to_string()),
        deny
    );
    let topic = "iot-2/type/sensor/id/s1/evt/status/fmt/json";
    assert_eq!(post(&s, &with("/emqx/authz"), &[], &authz(foreign, "publish", topic, "0", "false").to_string()), deny);
}

fn hook(s: &Service, name: &str, body: &Value) -> Value {
    json_ok(post(s, "/vernemq", &[("vernemq-hook", name)], &body.to_string()))
}

fn register(client: &str, username: Value, password: Value) -> Value {
    // The documented auth_on_register payload.
    json!({ "peer_addr": "127.0.0.1", "peer_port": 8888, "username": username, "password": password,
            "mountpoint": "", "client_id": client, "clean_session": true })
}

fn publish(client: &str, topic: &str, qos: u8, payload: &str, retain: bool) -> Value {
    use std::fmt::Write;
    // VerneMQ's default: the payload base64-encoded.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in payload.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = b64.write_char(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    json!({ "username": "use-token-auth", "client_id": client, "mountpoint": "", "qos": qos, "topic": topic,
            "payload": b64, "retain": retain })
}

fn subscribe(client: &str, topics: &[(&str, u8)]) -> Value {
    let topics: Vec<Value> = topics.iter().map(|(t, q)| json!({ "topic": t, "qos": q })).collect();
    json!({ "client_id": client, "mountpoint": "", "username": "use-token-auth", "topics": topics })
}

#[test]
fn vernemq_webhooks_follow_the_documented_contract() {
    let options = Options {
        vernemq: vernemq::Dialect { takeover_grace: Duration::ZERO, ..Default::default() },
        ..Default::default()
    };
    let (s, dir) = start("vernemq-contract", "acme", &ibm(), options);
    let d1 = "d:acme:sensor:s1";
    let ok = json!({ "result": "ok" });
    assert_eq!(hook(&s, "auth_on_register", &register(d1, json!("use-token-auth"), json!(device_token("s1")))), ok);
    let refused = hook(&s, "auth_on_register", &register(d1, json!("use-token-auth"), json!("wrong")));
    assert!(refused["result"]["error"].is_string(), "{refused}");
    assert!(hook(&s, "auth_on_register", &register(d1, Value::Null, Value::Null))["result"]["error"].is_string());
    // Publishes: allowed as sent, the retained flag overridden through a modifier, another
    // device's topic refused.
    let own = "iot-2/type/sensor/id/s1/evt/status/fmt/json";
    assert_eq!(hook(&s, "auth_on_publish", &publish(d1, own, 1, "hello", false)), ok);
    assert_eq!(
        hook(&s, "auth_on_publish", &publish(d1, own, 1, "hello", true)),
        json!({ "result": "ok", "modifiers": { "retain": false } })
    );
    let other = hook(&s, "auth_on_publish", &publish(d1, "iot-2/type/sensor/id/s2/evt/status/fmt/json", 1, "x", false));
    assert_eq!(other, json!({ "result": { "error": "not_authorized" } }));
    // The hook in the path instead of the header (one endpoint per hook), and the m5 variant.
    let m5 = json_ok(post(&s, "/vernemq/auth_on_publish_m5", &[], &publish(d1, own, 0, "", false).to_string()));
    assert_eq!(m5, ok);
    // Subscriptions: per-topic answers in the order asked, 128 for a refused filter.
    let subs = hook(&s, "auth_on_subscribe", &subscribe(d1, &[("iot-2/type/sensor/id/s1/cmd/+/fmt/+", 1), ("a/b", 2)]));
    assert_eq!(
        subs,
        json!({ "result": "ok", "topics": [
            { "topic": "iot-2/type/sensor/id/s1/cmd/+/fmt/+", "qos": 1 }, { "topic": "a/b", "qos": 128 }] })
    );
    let subs5 = hook(&s, "auth_on_subscribe_m5", &subscribe(d1, &[("a/b", 1)]));
    assert_eq!(subs5, json!({ "result": "ok", "modifiers": { "topics": [{ "topic": "a/b", "qos": 135 }] } }));
    // on_client_gone ends the session: its next publish is a restored session's (refused).
    let sessions = |s: &Service| {
        let m = http_request(s.local_addr().port(), b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .1;
        m.lines().find_map(|l| l.strip_prefix("mqtt_policy_sessions ")).unwrap().trim().parse::<usize>().unwrap()
    };
    assert_eq!(hook(&s, "on_client_gone", &json!({ "client_id": d1, "mountpoint": "" })), json!({}));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sessions(&s) != 0 {
        assert!(std::time::Instant::now() < deadline, "the session ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(hook(&s, "auth_on_publish", &publish(d1, own, 1, "hello", false)), other);
    let events = read_events(&dir.join("events.jsonl"));
    assert!(events.iter().any(|e| e["client_id"] == d1 && e["outcome"] == "disconnect"), "{events:#?}");
    assert!(events.iter().any(|e| e["client_id"] == d1 && e["outcome"] == "restore"), "{events:#?}");
}

#[test]
fn vernemq_downgrades_payload_limits_and_mqtt5_register() {
    let (s, _dir) = start("vernemq-shared", "shared", &shared_downgrading(), Options::default());
    let token = sas_token("thermo-1", now_s() + 3600);
    let mut reg = register("thermo-1", json!(sas_user("thermo-1")), json!(token));
    reg.as_object_mut().unwrap().remove("clean_session");
    reg["clean_start"] = json!(true);
    reg["properties"] = json!({});
    assert_eq!(hook(&s, "auth_on_register_m5", &reg), json!({ "result": "ok" }));
    // Shared service level: subscriptions granted at QoS 0 (VerneMQ downgrades them), its
    // internal broadcasts refused.
    let mut sub = subscribe("thermo-1", &[("devices/thermo-1/commands/#", 1), ("broadcast/internal/#", 0)]);
    sub["username"] = json!(sas_user("thermo-1"));
    sub["properties"] = json!({});
    assert_eq!(
        hook(&s, "auth_on_subscribe_m5", &sub),
        json!({ "result": "ok", "modifiers": { "topics": [
            { "topic": "devices/thermo-1/commands/#", "qos": 0 }, { "topic": "broadcast/internal/#", "qos": 135 }] } })
    );
    // The payload size is the decoded base64's: 8192 bytes pass the 8192-byte limit, 8193 not.
    let topic = "devices/thermo-1/telemetry/t";
    let at = |n: usize| {
        let mut p = publish("thermo-1", topic, 0, &"x".repeat(n), false);
        p["username"] = json!(sas_user("thermo-1"));
        hook(&s, "auth_on_publish_m5", &p)
    };
    assert_eq!(at(8192), json!({ "result": "ok" }));
    assert_eq!(at(8193)["result"]["error"], "packet_too_large");
    // The shared service level refuses retained publishes (no override): an error, no modifier.
    let mut retained = publish("thermo-1", topic, 0, "x", true);
    retained["username"] = json!(sas_user("thermo-1"));
    assert!(hook(&s, "auth_on_publish_m5", &retained)["result"]["error"].is_string());
}

#[test]
fn vernemq_garbage_and_hostile_requests_are_refused_with_an_error() {
    let options = Options {
        max_body: 4096,
        vernemq: vernemq::Dialect { tenant_from_mountpoint: true, ..Default::default() },
        ..Default::default()
    };
    let (s, dir) = start("vernemq-hostile", "acme", &ibm(), options);
    let d1 = "d:acme:sensor:s1";
    let mut reg = register(d1, json!("use-token-auth"), json!(device_token("s1")));
    reg["mountpoint"] = json!("acme");
    assert_eq!(hook(&s, "auth_on_register", &reg), json!({ "result": "ok" }));
    let own = "iot-2/type/sensor/id/s1/evt/status/fmt/json";
    let mut p = publish(d1, own, 1, "hi", false);
    p["mountpoint"] = json!("acme");
    assert_eq!(hook(&s, "auth_on_publish", &p), json!({ "result": "ok" }));
    // The same client id on another mountpoint (another tenant's listener) is another client:
    // not the acme session, and no policy for tenant `other`.
    p["mountpoint"] = json!("other");
    assert!(hook(&s, "auth_on_publish", &p)["result"]["error"].is_string());
    reg["mountpoint"] = json!("other");
    assert!(hook(&s, "auth_on_register", &reg)["result"]["error"].is_string());
    let events = read_events(&dir.join("events.jsonl"));
    assert!(events.iter().any(|e| e["tenant"] == "other"), "{events:#?}");
    let garbage = |headers: &[(&str, &str)], path: &str, body: &str| {
        let (code, text) = post(&s, path, headers, body);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{code} {text}"));
        assert!(v["result"]["error"].is_string(), "{code} {text}");
        code
    };
    let h = [("vernemq-hook", "auth_on_publish")];
    assert_eq!(garbage(&h, "/vernemq", "{not json"), 400);
    assert_eq!(garbage(&h, "/vernemq", "[]"), 400);
    assert_eq!(
        garbage(&h, "/vernemq", &json!({ "client_id": d1, "topic": own, "qos": 1 }).to_string()),
        400,
        "no retain"
    );
    let mut bad = publish(d1, own, 1, "x", false);
    bad["payload"] = json!("not base64!");
    assert_eq!(garbage(&h, "/vernemq", &bad.to_string()), 400);
    bad["payload"] = json!("eA==");
    bad["qos"] = json!(3);
    assert_eq!(garbage(&h, "/vernemq", &bad.to_string()), 400);
    bad["qos"] = json!(1);
    bad["client_id"] = json!(7);
    assert_eq!(garbage(&h, "/vernemq", &bad.to_string()), 400);
    let sub = subscribe(d1, &[]);
    assert_eq!(garbage(&[("vernemq-hook", "auth_on_subscribe")], "/vernemq", &sub.to_string()), 400, "no topics");
    assert_eq!(garbage(&[], "/vernemq", &p.to_string()), 400, "no hook named");
    assert_eq!(garbage(&h, "/vernemq/auth_on_subscribe", &p.to_string()), 400, "header and path disagree");
    assert_eq!(garbage(&[("vernemq-hook", "on_deliver")], "/vernemq", &p.to_string()), 404, "a hook not answered");
    let huge = publish(d1, own, 1, &"x".repeat(10_000), false);
    assert_eq!(garbage(&h, "/vernemq", &huge.to_string()), 413);
    let get = b"GET /vernemq/auth_on_publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(http_request(s.local_addr().port(), get).unwrap().0, 405);
}
