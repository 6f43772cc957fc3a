//! The example hubs: built with `mqtt-policy build`, their cases run through the `.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use mqtt_policy_cli::{compile, run};
use mqtt_policy_host::events::MemorySink;
use mqtt_policy_host::{Limits, PolicyModule, Tenant};

const HUBS: &[&str] = &["shared-hub", "ibm-platform", "dedicated-ca"];

fn example(hub: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/examples").join(hub).join(file)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mqtt-policy-examples-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cli(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_mqtt-policy")).args(args).output().unwrap();
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The example `hub` built by `mqtt-policy build` into `dir/HUB.wasm`.
fn cli_built(dir: &Path, hub: &str) -> PathBuf {
    let wasm = dir.join(format!("{hub}.wasm"));
    let (code, out) = cli(&["build", example(hub, "rules.toml").to_str().unwrap(), "-o", wasm.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    wasm
}

#[test]
fn every_example_builds_and_its_cases_pass_through_the_cli() {
    let dir = scratch("cli");
    for hub in HUBS {
        let wasm = cli_built(&dir, hub);
        let (code, out) = cli(&["test", wasm.to_str().unwrap(), example(hub, "cases.toml").to_str().unwrap()]);
        assert_eq!(code, Some(0), "{hub}: {out}");
        assert!(out.contains(" passed, 0 failed"), "{out}");
    }
    let (code, out) = cli(&["check", dir.join("dedicated-ca.wasm").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ca:       factory-ca") && out.contains("settings: 3 [[device]]"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The example `hub`, built as `mqtt-policy build` would.
fn built(hub: &str) -> PolicyModule {
    compile::build(&example(hub, "rules.toml"), guest_artifacts::HUB_RULES_WASM, Limits::default()).unwrap().0
}

/// Runs every case of `hub` on a fresh tenant, with `change` applied to case `target`;
/// returns the problems each case reported.
fn run_with(
    module: &PolicyModule,
    hub: &str,
    target: usize,
    change: impl Fn(&mut mqtt_policy_cli::cases::Case),
) -> Vec<Vec<String>> {
    let mut file = mqtt_policy_cli::cases::load(&example(hub, "cases.toml")).unwrap();
    change(&mut file.cases[target]);
    let mut policy = module.instantiate(Tenant::new(&file.tenant));
    file.cases.iter().map(|c| run::run_case(&mut policy, &file.tenant, c).problems).collect()
}

#[test]
fn flipping_any_one_expected_outcome_fails_exactly_that_case() {
    for hub in HUBS {
        let module = built(hub);
        let count = mqtt_policy_cli::cases::load(&example(hub, "cases.toml")).unwrap().cases.len();
        for target in 0..count {
            let problems = run_with(&module, hub, target, |case| {
                case.expect = match (case.action(), case.expect.as_str()) {
                    ("connect", "accept") => "reject",
                    ("connect", _) => "accept",
                    ("subscribe", "grant") => "deny",
                    ("subscribe", _) => "grant",
                    (_, "allow" | "rewrite") => "deny",
                    (_, _) => "allow",
                }
                .to_owned();
            });
            assert!(!problems[target].is_empty(), "{hub}: flipping case {target} went unnoticed");
            for (i, p) in problems.iter().enumerate() {
                assert!(i == target || p.is_empty(), "{hub}: flipping case {target} broke case {i}: {p:?}");
            }
        }
    }
}

#[test]
fn a_wrong_reason_or_message_fails_the_case() {
    let module = built("shared-hub");
    let problems = run_with(&module, "shared-hub", 1, |case| case.reason = Some("0x97".into()));
    assert!(problems[1].iter().any(|p| p.contains("expected reason 0x97 quota exceeded")), "{:?}", problems[1]);
    let problems = run_with(&module, "shared-hub", 1, |case| case.message = Some("something else".into()));
    assert!(!problems[1].is_empty());
}

#[test]
fn auto_provisioning_emits_an_event_with_name_and_source_address() {
    let module = built("dedicated-ca");
    let file = mqtt_policy_cli::cases::load(&example("dedicated-ca", "cases.toml")).unwrap();
    let case = file.cases.iter().find(|c| c.name == "unknown device is auto-provisioned").unwrap();
    let sink = Arc::new(MemorySink::new());
    let mut policy = module.instantiate(Tenant::with_events("factory", sink.clone()));
    assert!(run::run_case(&mut policy, "factory", case).problems.is_empty());
    let events = sink.take();
    assert!(
        events
            .iter()
            .any(|e| e.message == "device was auto-provisioned: object-name=robot-7 source-address=127.0.0.1:0"),
        "{events:?}"
    );
}

#[test]
fn bad_rules_are_refused_naming_line_and_field() {
    let dir = scratch("bad");
    let cases: &[(&str, &str, &str)] = &[
        ("unknown-key.toml", "[hub]\nmax-paylod = 10\n", "line 2, column 1"),
        (
            "bad-filter.toml",
            "[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"a/#/b\"]\n",
            "line 4, column 11: rule[0].topics[0] `a/#/b`: '#' must be the last level",
        ),
        (
            "placeholder.toml",
            "[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"d/${device.name}\"]\n",
            "unknown placeholder `${device.name}`",
        ),
        (
            "duplicate.toml",
            "[[device]]\nid = \"a\"\n\n[[device]]\nid = \"a\"\n[identity]\nauthentication = \"none\"\n",
            "line 5, column 6: device[1].id: duplicate device `a`",
        ),
        ("no-proof.toml", "[[device]]\nid = \"a\"\n", "line 2, column 6: device[0] `a` has no credential"),
        (
            "mtls-no-ca.toml",
            "[hub]\nrequire-mtls = true\n",
            "line 2, column 16: hub.require-mtls needs at least one [[ca]]",
        ),
        ("missing-ca.toml", "[[ca]]\nname = \"x\"\nfile = \"nowhere.pem\"\n", "ca[0].file (CA `x`): cannot read"),
        ("not-toml.toml", "[hub\n", "line 1"),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out_wasm = dir.join("out.wasm");
        let (code, out) = cli(&["build", path.to_str().unwrap(), "-o", out_wasm.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{name}: {out}");
        assert!(out.contains(expected), "{name}: expected `{expected}` in: {out}");
        assert_eq!(out.trim().lines().count(), 1, "{name}: one line: {out}");
        assert!(!out_wasm.exists(), "{name}: nothing written on failure");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The line of the `[[rule]]` whose first topic is `topic` in the example's rules.
fn rule_line(hub: &str, topic: &str) -> usize {
    let text = std::fs::read_to_string(example(hub, "rules.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(&format!("topics = [\"{topic}\""))).expect("the rule");
    lines[..at].iter().rposition(|l| l.trim() == "[[rule]]").expect("its header") + 1
}

/// `eval --explain`: which rule decided, by the line a reader finds it at; a refusal that is
/// not the topic rules' is said to be the hub's.
#[test]
fn eval_explain_names_the_deciding_rule_by_its_document_line() {
    let dir = scratch("explain");
    let wasm = cli_built(&dir, "ibm-platform");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            wasm.to_str().unwrap(),
            "--tenant",
            "acme",
            "--client-id",
            "d:acme:sensor:s1",
            "--username",
            "use-token-auth",
            "--password",
            "s1-7Qv!m2Xp9Lz4",
            "--explain",
        ];
        args.extend_from_slice(extra);
        let (code, out) = cli(&args);
        assert_eq!(code, Some(0), "{out}");
        out
    };
    let own = "iot-2/type/${device.type}/id/${device.id}/evt/+/fmt/+";
    let out = eval(&["--publish", "iot-2/type/sensor/id/s1/evt/status/fmt/json"]);
    assert!(out.contains("explain: as device s1 of type sensor, groups hall"), "{out}");
    let allowed =
        format!("explain: allowed by the publish rule at line {}: allow publish {own}", rule_line("ibm-platform", own));
    assert!(out.contains(&allowed), "{out}");
    assert!(!out.contains("note:"), "the policy is this build's hub-rules: {out}");

    let out = eval(&["--publish", "iot-2/type/sensor/id/s1/mon"]);
    let line = rule_line("ibm-platform", "iot-2/type/+/id/+/mon\", \"iot-2/app/+/mon");
    assert!(out.contains("deny 0x87"), "{out}");
    assert!(out.contains(&format!("explain: decided by the publish deny rule at line {line}: deny publish")), "{out}");

    let out = eval(&["--publish", "iot-2/type/sensor/id/s2/evt/status/fmt/json"]);
    assert!(out.contains("explain: no publish rule matches: nothing allows it"), "{out}");

    // Over the payload limit on an allowed topic: the rules allow it, the hub refuses it.
    let out = eval(&["--publish", "iot-2/type/sensor/id/s1/evt/status/fmt/json", "--payload-size", "131073"]);
    assert!(out.contains("deny 0x95"), "{out}");
    assert!(out.contains("explain: the topic rules allow it; the refusal comes from the hub's other rules"), "{out}");

    // Subscriptions read as the check reads them: within the allow rule's filter.
    let cmd = "iot-2/type/${device.type}/id/${device.id}/cmd/+/fmt/+";
    let out = eval(&["--subscribe", "iot-2/type/sensor/id/s1/cmd/+/fmt/+"]);
    assert!(
        out.contains(&format!("explain: allowed by the subscribe rule at line {}", rule_line("ibm-platform", cmd))),
        "{out}"
    );

    // Not a hub-rules policy: said, exit 2, before any decision.
    let (code, out) = cli(&["eval", guest_artifacts::HELLO, "--explain", "--publish", "devices/x"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("only hub-rules policies are explained") || out.contains("no settings"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `test --coverage`: the topic rules no case matched, by line; a case that exercises one
/// removes it from the list.
#[test]
fn test_coverage_lists_the_rules_no_case_matched() {
    let dir = scratch("coverage");
    let wasm = cli_built(&dir, "ibm-platform");
    let rules = mqtt_policy_cli::explain::Explainer::of(&std::fs::read(&wasm).unwrap(), None).unwrap().rules();
    let cases = dir.join("cases.toml");
    let device =
        r#"connect = { client-id = "d:acme:sensor:s1", username = "use-token-auth", password = "s1-7Qv!m2Xp9Lz4" }"#;
    let one = format!(
        "tenant = \"acme\"\n[[case]]\nname = \"own event\"\n{device}\npublish = {{ topic = \"iot-2/type/sensor/id/s1/evt/a/fmt/json\" }}\nexpect = \"allow\"\n"
    );
    std::fs::write(&cases, &one).unwrap();
    let (code, out) = cli(&["test", wasm.to_str().unwrap(), cases.to_str().unwrap(), "--coverage"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("coverage: 1 of {} topic rules matched by a case", rules.len())), "{out}");
    let mon = rules.iter().find(|r| r.effect == hub_rules::config::Effect::Deny).unwrap();
    assert!(out.contains(&format!("not exercised: {mon}")), "{out}");
    assert!(!out.contains(&format!("not exercised: {}", rules[0])), "the matched rule is not listed: {out}");

    // A second case publishing a monitoring message exercises the deny rule.
    let two = format!(
        "{one}[[case]]\nname = \"monitoring is the platform's\"\n{device}\npublish = {{ topic = \"iot-2/type/sensor/id/s1/mon\" }}\nexpect = \"deny\"\n"
    );
    std::fs::write(&cases, two).unwrap();
    let (code, out) = cli(&["test", wasm.to_str().unwrap(), cases.to_str().unwrap(), "--coverage"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("coverage: 2 of {} topic rules", rules.len())), "{out}");
    assert!(!out.contains(&format!("not exercised: {mon}")), "{out}");

    // The example's own cases: every rule is matched by one.
    let (code, out) =
        cli(&["test", wasm.to_str().unwrap(), example("ibm-platform", "cases.toml").to_str().unwrap(), "--coverage"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("coverage: {0} of {0} topic rules", rules.len())), "{out}");
    assert!(!out.contains("not exercised"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A delivery must still be one the session may subscribe to and pass the delivery rules: the
/// explanation names the first requirement not met, never a subscribe rule as the allow.
#[test]
fn a_delivery_is_explained_by_its_first_unmet_requirement() {
    use hub_rules::config::Action;
    use mqtt_policy_cli::explain::Explainer;
    let rules = "[identity]\nauthentication = \"none\"\n\n[[rule]]\neffect = \"allow\"\nactions = [\"subscribe\"]\n\
                 topics = [\"a/#\"]\n\n[[rule]]\neffect = \"allow\"\nactions = [\"delivery\"]\ntopics = [\"b/#\"]\n";
    let x = Explainer::of(mqtt_policy_cli::HUB_RULES_WASM, Some(rules)).unwrap();
    let spec = mqtt_policy_cli::cases::ConnectSpec { client_id: "d1".into(), ..Default::default() };
    let s = x.session(&run::connect("t", &spec)).unwrap();
    let denied = run::Outcome {
        reason: Some(mqtt_policy_host::ReasonCode::NotAuthorized),
        message: Some("unauthorized topic a/x".into()),
        ..run::Outcome::plain_kind("deny")
    };
    let lines = x.explain(&s, Action::Delivery, "a/x", &denied);
    assert_eq!(
        lines,
        ["allowed by the subscribe rule at line 4: allow subscribe a/#", "no delivery rule matches: nothing allows it"],
        "{lines:?}"
    );
    let lines = x.explain(&s, Action::Delivery, "b/x", &denied);
    assert_eq!(lines, ["no subscribe rule matches: nothing allows it"], "{lines:?}");
}
