//! The plugin's configuration: `plugin_opt_*` lines in mosquitto.conf, validated at start
//! into the gateway's [`Config`].
//!
//! ```text
//! plugin /usr/lib/mqtt-policy/libmqtt_policy_mosquitto.so
//! plugin_opt_policy_dir /etc/mosquitto/policies     # one TENANT.wasm per tenant
//! plugin_opt_tenant acme                            # or: plugin_opt_tenant_from client-id:d:{tenant}:*
//! plugin_opt_events /var/log/mosquitto/policy.jsonl # or stderr, or none
//! plugin_opt_compiler /usr/lib/mqtt-policy/mqtt-policy-compile  # compile in a bounded child
//! ```
//!
//! With `plugin_opt_tenant_from certificate`, the operator says which CA belongs to which
//! tenant, one line per tenant: `plugin_opt_tenant_ca_acme /etc/mosquitto/ca/acme.pem`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mqtt_policy_gateway::config::check_prefix;
use mqtt_policy_gateway::{Config, EventTarget, FailMode, Monitor, TenantCas, TenantSource};

/// Why the configuration was refused: names the option and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin_opt_{option}: {message}")]
pub struct ConfigError {
    /// The option without its `plugin_opt_` prefix.
    pub option: String,
    /// What is wrong with it.
    pub message: String,
}

fn bad(option: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { option: option.to_owned(), message: message.into() }
}

/// The prefix of `tenant_ca_TENANT FILE`: the CA certificates (PEM) the operator assigns to a
/// tenant.
pub const TENANT_CA: &str = "tenant_ca_";

/// Every option the plugin understands, for the error on an unknown one (besides
/// [`TENANT_CA`]`TENANT`).
pub const OPTIONS: &[&str] = &[
    "policy_dir",
    "tenant",
    "tenant_from",
    "events",
    "monitor_topic",
    "monitor_tenants",
    "monitoring",
    "monitoring_state",
    "deadline_ms",
    "connect_deadline_ms",
    "memory_mib",
    "setup_deadline_ms",
    "fail_mode",
    "reload_poll_ms",
    "tenant_prefix",
    "decision_cache",
    "compiler",
    "compile_time_ms",
    "compile_memory_mib",
    "breaker_timeouts",
    "breaker_open_ms",
];

/// Validates `(key, value)` pairs (keys without the `plugin_opt_` prefix).
pub fn parse<'a>(options: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Config, ConfigError> {
    let mut policy_dir = None;
    let mut tenant = None;
    let mut tenant_from = None;
    let defaults = Config::new(PathBuf::new(), TenantSource::Certificate);
    let mut events = defaults.events;
    let mut monitor_topic: Option<String> = None;
    let mut monitor_tenants = Vec::new();
    let mut monitoring = defaults.monitoring;
    let mut monitoring_state = defaults.monitoring_state;
    let mut limits = defaults.limits;
    let mut fail_mode = defaults.fail_mode;
    let mut reload_poll = defaults.reload_poll;
    let mut tenant_prefix = defaults.tenant_prefix;
    let mut decision_cache = defaults.decision_cache;
    let mut tenant_cas = TenantCas::new();
    let mut compiler = defaults.compiler;
    let mut seen = Vec::new();
    for (key, value) in options {
        let value = value.trim();
        if seen.contains(&key) {
            return Err(bad(key, "given twice"));
        }
        seen.push(key);
        if let Some(tenant) = key.strip_prefix(TENANT_CA) {
            if value.is_empty() {
                return Err(bad(key, "must name a PEM file of the tenant's CA certificates"));
            }
            tenant_cas.add_file(tenant, Path::new(value)).map_err(|e| bad(key, e.to_string()))?;
            continue;
        }
        if !OPTIONS.contains(&key) {
            return Err(bad(key, format!("unknown option; known options: {}, {TENANT_CA}TENANT", OPTIONS.join(", "))));
        }
        match key {
            "policy_dir" => {
                if value.is_empty() {
                    return Err(bad(key, "must name a directory"));
                }
                policy_dir = Some(PathBuf::from(value));
            }
            "tenant" => tenant = Some(TenantSource::fixed(value).map_err(|e| bad(key, e.to_string()))?),
            "tenant_from" => tenant_from = Some(TenantSource::parse(value).map_err(|e| bad(key, e.to_string()))?),
            "events" => {
                events = match value {
                    "stderr" => EventTarget::Stderr,
                    "none" => EventTarget::None,
                    "" => return Err(bad(key, "must be stderr, none or a file path")),
                    path => EventTarget::File(PathBuf::from(path)),
                }
            }
            "monitor_topic" => {
                Monitor::new(value, Vec::new()).map_err(|e| bad(key, e.to_string()))?;
                monitor_topic = Some(value.to_owned());
            }
            "monitor_tenants" => {
                monitor_tenants =
                    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            }
            "monitoring" => {
                monitoring = match value {
                    "ibm" => true,
                    "none" => false,
                    _ => return Err(bad(key, format!("`{value}` is not ibm or none"))),
                }
            }
            "monitoring_state" => {
                if value.is_empty() {
                    return Err(bad(key, "must name a file the plugin may write"));
                }
                monitoring_state = Some(PathBuf::from(value));
            }
            "deadline_ms" => limits.deadline = Duration::from_millis(number(key, value, 1, 10_000)?),
            "connect_deadline_ms" => limits.connect_deadline = Duration::from_millis(number(key, value, 1, 10_000)?),
            "memory_mib" => limits.memory = (number(key, value, 1, 4096)? as usize) << 20,
            "setup_deadline_ms" => limits.setup_deadline = Duration::from_millis(number(key, value, 10, 600_000)?),
            "compile_time_ms" => limits.compile_time = Duration::from_millis(number(key, value, 10, 600_000)?),
            "compile_memory_mib" => limits.compile_memory = (number(key, value, 16, 65_536)? as usize) << 20,
            "breaker_timeouts" => limits.breaker_timeouts = number(key, value, 0, 1_000_000)? as u32,
            "breaker_open_ms" => limits.breaker_open = Duration::from_millis(number(key, value, 1, 3_600_000)?),
            "compiler" => {
                if value.is_empty() {
                    return Err(bad(key, "must name the mqtt-policy-compile binary"));
                }
                compiler = Some(PathBuf::from(value));
            }
            "reload_poll_ms" => reload_poll = Duration::from_millis(number(key, value, 10, 60_000)?),
            "tenant_prefix" => {
                check_prefix(value).map_err(|e| bad(key, e.to_string()))?;
                tenant_prefix = Some(value.to_owned());
            }
            "fail_mode" => {
                fail_mode = match value {
                    "closed" => FailMode::Closed,
                    "open" => FailMode::Open,
                    _ => return Err(bad(key, format!("`{value}` is not closed or open"))),
                }
            }
            "decision_cache" => {
                decision_cache = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad(key, format!("`{value}` is not on or off"))),
                }
            }
            _ => unreachable!("checked against OPTIONS"),
        }
    }
    let policy_dir = policy_dir.ok_or_else(|| bad("policy_dir", "missing: name the directory of TENANT.wasm files"))?;
    let tenant = match (tenant, tenant_from) {
        (Some(_), Some(_)) => {
            return Err(bad("tenant_from", "give either plugin_opt_tenant or plugin_opt_tenant_from, not both"));
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            return Err(bad(
                "tenant",
                "missing: bind this listener to a tenant (plugin_opt_tenant NAME) or say how to find it \
                 (plugin_opt_tenant_from client-id:PATTERN | username:PATTERN | certificate)",
            ));
        }
    };
    if tenant == TenantSource::Certificate && tenant_cas.is_empty() {
        return Err(bad(
            "tenant_from",
            format!(
                "certificate needs the CAs of each tenant: plugin_opt_{TENANT_CA}TENANT FILE (the operator, not a \
                 tenant's policy, decides which devices belong to a tenant)"
            ),
        ));
    }
    if !monitor_tenants.is_empty() && monitor_topic.is_none() {
        return Err(bad("monitor_tenants", "needs plugin_opt_monitor_topic"));
    }
    if monitoring_state.is_some() && !monitoring {
        return Err(bad("monitoring_state", "needs plugin_opt_monitoring ibm"));
    }
    if monitoring && !matches!(tenant, TenantSource::Fixed(_)) && tenant_prefix.is_none() {
        // Each tenant's policy names the devices on its monitoring topics: in one shared topic
        // space, one tenant could report (and overwrite the retained status of) another's.
        return Err(bad(
            "monitoring",
            "with several tenants on this listener (plugin_opt_tenant_from), ibm monitoring needs \
             plugin_opt_tenant_prefix, so that each tenant's monitoring topics are its own",
        ));
    }
    let monitor = monitor_topic.map(|topic| Monitor { topic, tenants: monitor_tenants });
    Ok(Config {
        policy_dir,
        tenant,
        tenant_cas,
        events,
        monitor,
        monitoring,
        monitoring_state,
        limits,
        compiler,
        fail_mode,
        reload_poll,
        tenant_prefix,
        decision_cache,
        // Decided by the plugin's init, which knows whether Mosquitto will send TICK.
        threads: defaults.threads,
    })
}

fn number(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = value.parse().map_err(|_| bad(key, format!("`{value}` is not a whole number")))?;
    if !(min..=max).contains(&n) {
        return Err(bad(key, format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        super::parse(pairs.iter().copied())
    }

    #[test]
    fn minimal_listener_bound_config_gets_defaults() {
        let c = parse(&[("policy_dir", "/p"), ("tenant", "acme")]).unwrap();
        assert_eq!(c.policy_dir, PathBuf::from("/p"));
        assert_eq!(c.tenant, TenantSource::Fixed("acme".into()));
        assert_eq!(c.events, EventTarget::Stderr);
        assert_eq!(c.limits, mqtt_policy_host::Limits::default());
        assert_eq!(c.fail_mode, FailMode::Closed);
        assert_eq!(c.monitor, None);
        assert_eq!(c.compiler, None);
        assert_eq!(c.limits.breaker_timeouts, 3);
        assert!(c.decision_cache);
        let c = parse(&[("policy_dir", "/p"), ("tenant", "acme"), ("decision_cache", "off")]).unwrap();
        assert!(!c.decision_cache);
        let e = parse(&[("policy_dir", "/p"), ("tenant", "acme"), ("decision_cache", "yes")]).unwrap_err();
        assert_eq!(e.to_string(), "plugin_opt_decision_cache: `yes` is not on or off");
    }

    #[test]
    fn errors_name_the_option() {
        let e = parse(&[("policy_dir", "/p"), ("tenant", "acme"), ("deadline_ms", "ten")]).unwrap_err();
        assert_eq!(e.to_string(), "plugin_opt_deadline_ms: `ten` is not a whole number");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "acme"), ("memory_mib", "0")]).unwrap_err();
        assert_eq!(e.option, "memory_mib");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "acme"), ("polcy", "x")]).unwrap_err();
        assert!(e.to_string().starts_with("plugin_opt_polcy: unknown option"), "{e}");
        let e = parse(&[("tenant", "acme")]).unwrap_err();
        assert_eq!(e.option, "policy_dir");
        let e = parse(&[("policy_dir", "/p")]).unwrap_err();
        assert_eq!(e.option, "tenant");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("tenant_from", "certificate")]).unwrap_err();
        assert_eq!(e.option, "tenant_from");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "../etc")]).unwrap_err();
        assert_eq!(e.option, "tenant");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("fail_mode", "maybe")]).unwrap_err();
        assert_eq!(e.to_string(), "plugin_opt_fail_mode: `maybe` is not closed or open");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("tenant_prefix", "t/")]).unwrap_err();
        assert_eq!(e.option, "tenant_prefix");
        let c = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("tenant_prefix", "tenants/{tenant}/")]).unwrap();
        assert_eq!(c.tenant_prefix.as_deref(), Some("tenants/{tenant}/"));
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("tenant", "b")]).unwrap_err();
        assert_eq!(e.to_string(), "plugin_opt_tenant: given twice");
    }

    #[test]
    fn compile_bounds_and_breaker_options() {
        let c = parse(&[
            ("policy_dir", "/p"),
            ("tenant", "a"),
            ("compiler", "/usr/lib/mqtt-policy/mqtt-policy-compile"),
            ("compile_time_ms", "5000"),
            ("compile_memory_mib", "256"),
            ("breaker_timeouts", "0"),
            ("breaker_open_ms", "250"),
        ])
        .unwrap();
        assert_eq!(c.compiler, Some(PathBuf::from("/usr/lib/mqtt-policy/mqtt-policy-compile")));
        assert_eq!(c.limits.compile_time, Duration::from_secs(5));
        assert_eq!(c.limits.compile_memory, 256 << 20);
        assert_eq!(c.limits.breaker_timeouts, 0, "0 turns the breaker off");
        assert_eq!(c.limits.breaker_open, Duration::from_millis(250));
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("compile_memory_mib", "1")]).unwrap_err();
        assert_eq!(e.to_string(), "plugin_opt_compile_memory_mib: 1 is outside 16..=65536");
    }

    #[test]
    fn monitor_topic_per_tenant() {
        let c = parse(&[
            ("policy_dir", "/p"),
            ("tenant_from", "client-id:d:{tenant}:*"),
            ("monitor_topic", "monitor/{tenant}/events"),
            ("monitor_tenants", "acme, globex"),
            ("events", "/var/log/e.jsonl"),
        ])
        .unwrap();
        let m = c.monitor.unwrap();
        assert_eq!(m.topic_for("acme").as_deref(), Some("monitor/acme/events"));
        assert_eq!(m.topic_for("initech"), None);
        assert_eq!(c.events, EventTarget::File("/var/log/e.jsonl".into()));
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("monitor_topic", "m/#")]).unwrap_err();
        assert_eq!(e.option, "monitor_topic");
    }

    #[test]
    fn ibm_monitoring_is_opt_in() {
        let c = parse(&[("policy_dir", "/p"), ("tenant", "a")]).unwrap();
        assert!(!c.monitoring && c.monitoring_state.is_none());
        let c =
            parse(&[("policy_dir", "/p"), ("tenant", "a"), ("monitoring", "ibm"), ("monitoring_state", "/s")]).unwrap();
        assert!(c.monitoring);
        assert_eq!(c.monitoring_state, Some(PathBuf::from("/s")));
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("monitoring", "azure")]).unwrap_err();
        assert_eq!(e.to_string(), "plugin_opt_monitoring: `azure` is not ibm or none");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "a"), ("monitoring_state", "/s")]).unwrap_err();
        assert_eq!(e.option, "monitoring_state");
        let shared = [("policy_dir", "/p"), ("tenant_from", "client-id:d:{tenant}:*"), ("monitoring", "ibm")];
        let e = parse(&shared).unwrap_err();
        assert_eq!(e.option, "monitoring");
        assert!(e.message.contains("needs plugin_opt_tenant_prefix"), "{e}");
        let c = parse(&[&shared[..], &[("tenant_prefix", "t/{tenant}/")]].concat()).unwrap();
        assert!(c.monitoring);
    }

    #[test]
    fn certificate_tenancy_needs_the_operators_ca_map() {
        let e = parse(&[("policy_dir", "/p"), ("tenant_from", "certificate")]).unwrap_err();
        assert_eq!(e.option, "tenant_from");
        assert!(e.message.contains("plugin_opt_tenant_ca_TENANT FILE"), "{e}");

        let dir = std::env::temp_dir().join(format!("mqtt-policy-config-cas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (acme, globex) = (dir.join("acme.pem"), dir.join("globex.pem"));
        let acme_ca = mqtt_policy_testkit::pki::Ca::new("acme CA");
        std::fs::write(&acme, &acme_ca.pem).unwrap();
        std::fs::write(&globex, mqtt_policy_testkit::pki::Ca::new("globex CA").pem).unwrap();
        let (a, g) = (acme.to_str().unwrap(), globex.to_str().unwrap());
        let c = parse(&[
            ("policy_dir", "/p"),
            ("tenant_from", "certificate"),
            ("tenant_ca_acme", a),
            ("tenant_ca_globex", g),
        ])
        .unwrap();
        assert_eq!(c.tenant_cas.tenants().collect::<Vec<_>>(), ["acme", "globex"]);

        // One CA, two owners: refused, naming the option.
        let e = parse(&[
            ("policy_dir", "/p"),
            ("tenant_from", "certificate"),
            ("tenant_ca_acme", a),
            ("tenant_ca_evil", a),
        ])
        .unwrap_err();
        assert_eq!(e.option, "tenant_ca_evil");
        assert!(e.message.contains("already assigned to tenant acme"), "{e}");
        // A device certificate is no CA; a missing file and a bad tenant name are named.
        std::fs::write(dir.join("leaf.pem"), acme_ca.client(Some("d1")).cert).unwrap();
        let leaf = dir.join("leaf.pem");
        let e =
            parse(&[("policy_dir", "/p"), ("tenant", "x"), ("tenant_ca_acme", leaf.to_str().unwrap())]).unwrap_err();
        assert_eq!(e.option, "tenant_ca_acme");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "x"), ("tenant_ca_acme", "/nonexistent.pem")]).unwrap_err();
        assert!(e.to_string().starts_with("plugin_opt_tenant_ca_acme: tenant CA file /nonexistent.pem:"), "{e}");
        let e = parse(&[("policy_dir", "/p"), ("tenant", "x"), ("tenant_ca_../etc", a)]).unwrap_err();
        assert_eq!(e.option, "tenant_ca_../etc");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
