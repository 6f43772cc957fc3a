//! The `mqtt-policy` binary, run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqtt-policy")).args(args).output().expect("running mqtt-policy")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mqtt-policy-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn hello_cases() -> String {
    root().join("policies/hello/cases.toml").display().to_string()
}

fn hello_settings() -> String {
    root().join("policies/hello/settings.toml").display().to_string()
}

#[test]
fn hello_cases_pass() {
    let o = run(&["test", guest_artifacts::HELLO, &hello_cases(), "--settings", &hello_settings(), "-v"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("9 passed, 0 failed"), "{out}");
    assert!(out.contains("deny 0x87 not authorized"), "the table shows reason codes: {out}");
}

/// The same cases file, unchanged, on the hello policy written in Python and in JavaScript.
#[test]
fn hello_cases_pass_on_the_python_and_javascript_components() {
    for wasm in [guest_artifacts::lang(guest_artifacts::HELLO_PY), guest_artifacts::lang(guest_artifacts::HELLO_JS)] {
        let o = run(&["test", wasm, &hello_cases(), "--settings", &hello_settings(), "-v"]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{wasm}: {out}");
        assert!(out.contains("9 passed, 0 failed"), "{wasm}: {out}");
    }
}

/// A Python policy that raises, or a JavaScript one that throws, in `authorize-publish`: the
/// publish is denied with 0x83 and a trap event, as a Rust panic is.
#[test]
fn a_raising_python_or_throwing_javascript_publish_check_is_denied() {
    for wasm in
        [guest_artifacts::lang(guest_artifacts::THROWING_PY), guest_artifacts::lang(guest_artifacts::THROWING_JS)]
    {
        let o = run(&["eval", wasm, "--client-id", "d1", "--publish", "devices/d1/t"]);
        let out = text(&o);
        assert!(out.contains("-> accept as d1"), "{wasm}: {out}");
        assert!(out.contains("-> deny 0x83 implementation specific error: \"policy trapped"), "{wasm}: {out}");
        assert!(out.contains("\"outcome\":\"trap\""), "{wasm}: {out}");
    }
}

#[test]
fn flipping_any_one_expectation_fails_the_run() {
    let original = std::fs::read_to_string(hello_cases()).unwrap();
    let expects: Vec<usize> = original.match_indices("\nexpect = \"").map(|(i, _)| i).collect();
    assert_eq!(expects.len(), 9);
    let dir = scratch("flip");
    for (n, at) in expects.iter().enumerate() {
        let line_end = at + 1 + original[at + 1..].find('\n').unwrap();
        let line = &original[at + 1..line_end];
        let flipped = match line {
            l if l.contains("\"accept\"") => "expect = \"reject\"",
            l if l.contains("\"reject\"") => "expect = \"accept\"",
            l if l.contains("\"allow\"") => "expect = \"deny\"",
            l if l.contains("\"deny\"")
                && original[..*at].rsplit("[[case]]").next().unwrap().contains("subscribe =") =>
            {
                "expect = \"grant\""
            }
            l if l.contains("\"deny\"") => "expect = \"allow\"",
            l if l.contains("\"grant\"") => "expect = \"deny\"",
            l => panic!("unexpected line {l}"),
        };
        let cases = format!("{}{}{}", &original[..at + 1], flipped, &original[line_end..]);
        let path = dir.join(format!("flip-{n}.toml"));
        std::fs::write(&path, cases).unwrap();
        let o = run(&["test", guest_artifacts::HELLO, path.to_str().unwrap(), "--settings", &hello_settings()]);
        assert_eq!(o.status.code(), Some(1), "flipping expectation {n} must fail: {}", text(&o));
        assert!(text(&o).contains("8 passed, 1 failed"), "{}", text(&o));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_wrong_reason_or_message_fails_the_case() {
    let dir = scratch("reason");
    let path = dir.join("cases.toml");
    std::fs::write(
        &path,
        r#"
[[case]]
name = "wrong reason"
connect = { client-id = "d" }
publish = { topic = "elsewhere" }
expect = "deny"
reason = "quota-exceeded"
message = "unauthorized topic elsewhere"
"#,
    )
    .unwrap();
    let o = run(&["test", guest_artifacts::HELLO, path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("expected reason 0x97 quota exceeded, got deny 0x87"), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_problem() {
    let dir = scratch("bad");
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[[case]]\nname = \"x\"\nconnect = { client-id = \"d\" }\nexpct = \"accept\"\n").unwrap();
    let o = run(&["test", guest_artifacts::HELLO, typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("typo.toml:4:1") && err.contains("expct"), "{err}");

    let outcome = dir.join("outcome.toml");
    std::fs::write(
        &outcome,
        "[[case]]\nname = \"x\"\nconnect = { client-id = \"d\" }\nsubscribe = { filter = \"a\" }\nexpect = \"allow\"\n",
    )
    .unwrap();
    let o = run(&["test", guest_artifacts::HELLO, outcome.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("field `expect`: `allow` is not an outcome of subscribe"), "{}", text(&o));

    let o = run(&["test", guest_artifacts::HELLO, dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("missing.toml"), "{}", text(&o));

    let not_wasm = dir.join("not.wasm");
    std::fs::write(&not_wasm, "text").unwrap();
    let o = run(&["check", not_wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("not a WebAssembly file"), "{}", text(&o));

    let o = run(&["check", guest_artifacts::OTHER_VERSION]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("was built for mqtt-policy:policy@0.1.0; this host speaks mqtt-policy:policy@0.2.0"),
        "{}",
        text(&o)
    );

    let o = run(&["check", guest_artifacts::HELLO, "--settings", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // The settings file is named first: it is what to fix.
    let want = format!("error: {}: invalid settings for {}: line 1", typo.display(), guest_artifacts::HELLO);
    assert!(text(&o).contains(&want), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_describes_the_policy() {
    let o = run(&["check", guest_artifacts::HELLO, "--settings", &hello_settings()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("world:    mqtt-policy:policy@0.2.0"), "{out}");
    assert!(out.contains("digest:   sha256:"), "{out}");
    assert!(out.contains("settings: max-payload = 4096"), "{out}");
}

#[test]
fn eval_explains_one_decision_with_its_event() {
    let o = run(&[
        "eval",
        guest_artifacts::HELLO,
        "--client-id",
        "sensor-1",
        "--publish",
        "devices/sensor-9/x",
        "--qos",
        "1",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("connect sensor-1") && out.contains("accept as sensor-1"), "{out}");
    assert!(out.contains("deny 0x87 not authorized: \"unauthorized topic devices/sensor-9/x\""), "{out}");
    assert!(out.contains("\"reason_code\":135"), "the event is printed: {out}");
}

#[test]
fn hash_reads_the_secret_from_stdin_and_check_never_prints_a_secret() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt-policy"))
        .arg("hash")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s9-Qm7v!W2xp9Lz4tR\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let hash = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$pbkdf2-sha512$i=500,l=64$") && !hash.contains("s9-Qm7v"), "{hash}");
    let parsed = hub_rules::credentials::SecretHash::parse(&hash).unwrap();
    assert!(parsed.verify(b"s9-Qm7v!W2xp9Lz4tR"), "the trailing newline is not part of the secret");

    let dir = std::env::temp_dir().join(format!("mqtt-policy-cli-hash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.toml");
    let key = "c2VjcmV0IGtleSBvZiBzOSwgMzIgYnl0ZXMgbG9uZyE=";
    std::fs::write(
        &rules,
        format!(
            "[sas]\nhostname = \"h\"\n[[device]]\nid = \"s9\"\ntoken-hash = \"{hash}\"\n[[device]]\nid = \"s8\"\n\
             sas-key = \"{key}\"\n[[device]]\nid = \"s7\"\n[identity]\nauthentication = \"none\"\n"
        ),
    )
    .unwrap();
    let wasm = dir.join("t.wasm");
    let o = run(&["build", rules.to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["check", wasm.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("proofs:   1 x device token (pbkdf2-sha512 (500 iterations))"), "{out}");
    assert!(out.contains("proofs:   1 x device SAS key (<redacted>)"), "{out}");
    assert!(out.contains("warning:  identity.authentication = \"none\""), "{out}");
    let salt = hash.split('$').nth(3).unwrap();
    for secret in [hash.as_str(), salt, key, "s9-Qm7v"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    // Without the explicit line, a device without proof does not build.
    std::fs::write(&rules, format!("[[device]]\nid = \"s9\"\ntoken-hash = \"{hash}\"\n[[device]]\nid = \"s7\"\n"))
        .unwrap();
    let o = run(&["build", rules.to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("device[1] `s7` has no credential"), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_for_rabbitmq_warns_about_every_rule_it_cannot_enforce() {
    let dir = scratch("broker");
    let wasm = dir.join("acme.wasm");
    let rules = root().join("policies/examples/ibm-platform/rules.toml");
    let o = run(&["build", rules.to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["check", wasm.to_str().unwrap(), "--broker", "rabbitmq"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for warning in [
        "warning:  hub.max-payload = 131072 is not enforced: RabbitMQ sends no payload size",
        "warning:  hub.retained = \"override\" is not enforced: RabbitMQ sends no retained flag",
        "warning:  hub.rate counts checks, not messages",
        "warning:  hub.max-connections = 100 is counted by each decision service on its own",
        "warning:  with RabbitMQ, revocation reaches a connection only at a topic it has not used",
    ] {
        assert!(out.contains(warning), "{warning}\n{out}");
    }
    let o = run(&["check", wasm.to_str().unwrap(), "--broker", "mosquitto"]);
    assert!(!text(&o).contains("warning:"), "Mosquitto enforces all of it: {}", text(&o));
    let factory = root().join("policies/examples/dedicated-ca/rules.toml");
    let wasm = dir.join("factory.wasm");
    let o = run(&["build", factory.to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&run(&["check", wasm.to_str().unwrap(), "--broker", "rabbitmq"]));
    assert!(out.contains("warning:  certificate identities are not supported with RabbitMQ yet"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_for_emqx_and_vernemq_warns_about_what_each_cannot_enforce() {
    let dir = scratch("brokers");
    let build = |name: &str, rules: &str| {
        let wasm = dir.join(format!("{name}.wasm"));
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, rules).unwrap();
        let o = run(&["build", path.to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        wasm
    };
    let ibm = std::fs::read_to_string(root().join("policies/examples/ibm-platform/rules.toml")).unwrap();
    let shared = std::fs::read_to_string(root().join("policies/examples/shared-hub/rules.toml"))
        .unwrap()
        .replace(r#"shared-subscribe = "refuse""#, r#"shared-subscribe = "downgrade""#);
    let (ibm, shared) = (build("acme", &ibm), build("shared", &shared));
    let check = |wasm: &std::path::Path, broker: &str| {
        let o = run(&["check", wasm.to_str().unwrap(), "--broker", broker]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        text(&o)
    };
    let emqx = check(&ibm, "emqx") + &check(&shared, "emqx");
    for warning in [
        "warning:  hub.max-payload = 131072 is not enforced: EMQX sends no payload size",
        "warning:  hub.retained = \"override\" becomes a refusal",
        "warning:  hub.rate counts checks, not messages, while EMQX's authorization cache is on",
        "warning:  hub.max-connections = 100 is counted by each decision service on its own (quotas are per service instance)",
        "warning:  hub.service-level = \"shared\": its clean-session rule is not enforced",
        "warning:  hub.shared-subscribe = \"downgrade\" becomes a refusal",
        "warning:  with EMQX, revocation reaches a connection once its authorization cache entry expires",
    ] {
        assert!(emqx.contains(warning), "{warning}\n{emqx}");
    }
    let verne = check(&ibm, "vernemq") + &check(&shared, "vernemq");
    for warning in [
        "warning:  hub.max-payload = 131072 holds only while VerneMQ sends the payload",
        "warning:  hub.max-connections = 3 is counted by each decision service on its own",
        "at VerneMQ's on_client_offline / on_client_gone hooks",
        "warning:  with VerneMQ, revocation reaches a connection at its next publish",
    ] {
        assert!(verne.contains(warning), "{warning}\n{verne}");
    }
    // VerneMQ applies retain overrides, downgrades and the clean-session rule, and every publish is asked.
    let warnings: Vec<&str> = verne.lines().filter(|l| l.starts_with("warning:")).collect();
    for absent in ["hub.retained", "shared-subscribe", "service-level", "hub.rate"] {
        assert!(!warnings.iter().any(|w| w.contains(absent)), "{absent}\n{verne}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `test --broker` shows what the broker's client sees, and a case can assert it: a QoS 1
/// subscription the shared hub grants at QoS 0 (`shared-subscribe = "downgrade"`) is refused by
/// Mosquitto, which cannot lower a granted QoS (SUBACK 0x87), and granted at QoS 0 by VerneMQ.
#[test]
fn test_with_a_broker_shows_and_asserts_what_its_client_sees() {
    let dir = scratch("broker-view");
    let rules = std::fs::read_to_string(root().join("policies/examples/shared-hub/rules.toml")).unwrap();
    let downgrade = rules.replace("shared-subscribe = \"refuse\"", "shared-subscribe = \"downgrade\"");
    assert_ne!(rules, downgrade);
    std::fs::write(dir.join("rules.toml"), downgrade).unwrap();
    let wasm = dir.join("shared.wasm");
    let o = run(&["build", dir.join("rules.toml").to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let connect = r#"connect = { client-id = "thermo-1", username = "shared-hub.example.net/thermo-1/?api-version=2021-04-12", password = "SharedAccessSignature sr=shared-hub.example.net%2Fdevices%2Fthermo-1&sig=VGDCLUYWhWv9jXDCTv0bs0%2FdDjJ3FLX8rJqNhuiu9MM%3D&se=4102444800" }"#;
    let cases = format!(
        "tenant = \"shared\"\nbroker = \"mosquitto\"\n\n[[case]]\nname = \"downgraded\"\n{connect}\n\
         subscribe = {{ filter = \"devices/thermo-1/commands/#\", qos = 1 }}\nexpect = \"grant\"\nqos = 0\n\
         client-sees = \"SUBACK 0x87\"\n"
    );
    let file = dir.join("cases.toml");
    std::fs::write(&file, cases).unwrap();
    let (w, f) = (wasm.to_str().unwrap(), file.to_str().unwrap());

    let o = run(&["test", w, f]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("WARN  downgraded") && out.contains("[mosquitto: SUBACK 0x87]"), "{out}");
    assert!(out.contains("refused, not downgraded: Mosquitto 2.0 cannot lower the granted QoS"), "{out}");

    let o = run(&["test", w, f, "--broker", "vernemq"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("expected the client to see SUBACK 0x87, a vernemq client sees SUBACK 0x00"),
        "{}",
        text(&o)
    );

    let o = run(&["test", w, f, "--broker", "none"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("needs a broker"), "{}", text(&o));

    let o = run(&["eval", w, "--tenant", "shared", "--client-id", "x", "--broker", "mosquitto"]);
    assert!(text(&o).contains("mosquitto client sees: CONNACK 0x87"), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A closed stdout is not a crash: the policy is written and the command exits 0.
#[test]
fn build_into_a_closed_pipe_exits_0_after_writing_the_policy() {
    let dir = scratch("closed-pipe");
    let out = dir.join("hub.wasm");
    let rules = root().join("policies/examples/shared-hub/rules.toml");
    let script = format!(
        "set -o pipefail; '{}' build '{}' -o '{}' | head -1",
        env!("CARGO_BIN_EXE_mqtt-policy"),
        rules.display(),
        out.display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("built "), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
    assert!(out.is_file());
    std::fs::remove_dir_all(dir).unwrap();
}

/// `check` and `build` print settings without their secrets, and a policy without any settings
/// says so in those words.
#[test]
fn check_prints_no_secret_and_names_missing_settings() {
    let dir = scratch("secrets");
    let rules = std::fs::read_to_string(root().join("policies/examples/shared-hub/rules.toml")).unwrap();
    let secret = rules.lines().find_map(|l| l.strip_prefix("key = \"")).map(|k| k.trim_end_matches('"').to_owned());
    let secret = secret.expect("the shared hub has a SAS policy key");
    let path = dir.join("rules.toml");
    std::fs::write(&path, &rules).unwrap();
    let wasm = dir.join("shared.wasm");
    let built = run(&["build", path.to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
    let checked = run(&["check", wasm.to_str().unwrap()]);
    for o in [&built, &checked] {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        assert!(!text(o).contains(&secret), "a secret was printed: {}", text(o));
        assert!(text(o).contains("settings: ") && !text(o).contains("rules: "), "{}", text(o));
    }
    let o = run(&["check", guest_artifacts::HUB_RULES]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no settings supplied or embedded"), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}
