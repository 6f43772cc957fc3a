//! What a gateway is configured with. Brokers fill it from their own configuration (the
//! Mosquitto plugin from `plugin_opt_*` lines); [`Config::new`] gives the defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mqtt_policy_host::Limits;
use mqtt_policy_host::events::{EventSink, JsonLinesSink};

use crate::error::{Error, Result};
use crate::tenancy::TenantSource;
use crate::trust::TenantCas;

/// Where events go as JSON lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTarget {
    /// The process's standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
    /// Nowhere (a broker may still log load failures).
    None,
}

impl EventTarget {
    /// Opens the target as a JSON lines sink (a file for appending); `None` for
    /// [`EventTarget::None`].
    pub fn open(&self) -> Result<Option<Arc<dyn EventSink>>> {
        Ok(match self {
            EventTarget::Stderr => Some(Arc::new(JsonLinesSink::new(std::io::stderr()))),
            EventTarget::None => None,
            EventTarget::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::EventsFile { path: path.clone(), source })?;
                Some(Arc::new(JsonLinesSink::new(file)))
            }
        })
    }
}

/// What to do with a client whose tenant has no usable policy (never loaded, or no file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse it with an event. The default.
    Closed,
    /// Defer to the broker's own authentication and authorization, as if no policy applied
    /// to that client.
    Open,
}

/// Where monitoring messages are published through the broker, and for which tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// Topic with a `{tenant}` placeholder, e.g. `monitor/{tenant}/events`.
    pub topic: String,
    /// Tenants that publish; empty means all.
    pub tenants: Vec<String>,
}

impl Monitor {
    /// A monitor on `topic`, which must be a topic name (no wildcards).
    pub fn new(topic: &str, tenants: Vec<String>) -> Result<Monitor> {
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(Error::MonitorTopic { topic: topic.to_owned() });
        }
        Ok(Monitor { topic: topic.to_owned(), tenants })
    }

    /// Whether `topic` is the monitoring topic of some tenant: the gateway's own traffic.
    pub fn is_monitor_topic(&self, topic: &str) -> bool {
        match self.topic.split_once("{tenant}") {
            Some((before, after)) => {
                topic.len() > before.len() + after.len() && topic.starts_with(before) && topic.ends_with(after)
            }
            None => topic == self.topic,
        }
    }

    /// The topic for `tenant`, if this tenant publishes monitoring messages.
    pub fn topic_for(&self, tenant: &str) -> Option<String> {
        (self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant))
            .then(|| self.topic.replace("{tenant}", tenant))
    }
}

/// Whether `topic` (as a policy sees it, without the tenant prefix) is an IBM-style
/// monitoring topic ([`crate::monitoring`]): `iot-2/type/+/id/+/mon` or `iot-2/app/+/mon`.
pub fn is_monitoring_topic(topic: &str) -> bool {
    let l: Vec<&str> = topic.splitn(8, '/').collect();
    matches!(l.as_slice(), ["iot-2", "type", _, "id", _, "mon"] | ["iot-2", "app", _, "mon"])
}

/// The validated configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Directory holding `TENANT.wasm` files.
    pub policy_dir: PathBuf,
    /// How a connection's tenant is found.
    pub tenant: TenantSource,
    /// The operator's assignment of CAs to tenants: required by [`TenantSource::Certificate`],
    /// and a policy embedding a CA assigned to another tenant is refused at load.
    pub tenant_cas: TenantCas,
    /// Where events go.
    pub events: EventTarget,
    /// Monitoring messages published through the broker, if configured.
    pub monitor: Option<Monitor>,
    /// IBM-style monitoring messages ([`crate::monitoring`]) for the connections a tenant's
    /// policy names (`monitor-device` / `monitor-application`); off by default, because their
    /// topics are the tenant's (under its prefix, if any) and the operator opts in.
    pub monitoring: bool,
    /// The file in which [`crate::monitoring`] writes down which devices it reported
    /// connected, for server recovery after a restart; none: no recovery.
    pub monitoring_state: Option<PathBuf>,
    /// Deadlines and memory every policy call runs under, the compile bounds, and when a
    /// failing tenant's policy is left alone (circuit breaker, instantiation backoff).
    pub limits: Limits,
    /// The `mqtt-policy-compile` binary policies are compiled in, bounded by the limits'
    /// `compile_time` and `compile_memory`; `None` compiles on the watcher thread, unbounded.
    pub compiler: Option<PathBuf>,
    /// What to do when a tenant has no policy.
    pub fail_mode: FailMode,
    /// How often the policy directory is scanned for changes in any case.
    pub reload_poll: Duration,
    /// Topic prefix with a `{tenant}` placeholder that every topic and filter of a tenant's
    /// clients must start with; it is removed before the policy sees the topic. Gives each
    /// tenant its own topic space on a shared listener. Checked by [`check_prefix`].
    pub tenant_prefix: Option<String>,
    /// Whether decisions a policy marks cacheable are reused for the same session (default on);
    /// off makes every check call the policy, which is for comparing and measuring.
    pub decision_cache: bool,
    /// Whether the gateway runs threads of its own (default) or none.
    pub threads: Threads,
}

/// Whether a gateway and its engine may run threads of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// A watcher thread for the policy directory and a ticker thread for deadlines.
    #[default]
    Own,
    /// None: the host calls [`crate::Gateway::poll_directory`] from its event loop (which
    /// starts compiles in child processes and finishes them there), and deadlines tick by a
    /// timer signal to the thread that starts the gateway. For a broker whose one thread
    /// serves every client (Mosquitto): a second thread in its process makes glibc take its
    /// multi-threaded paths at every `malloc` and system call of the broker's (BENCHMARKS.md).
    /// A compiler ([`Config::compiler`]) keeps compiles off that thread; without one, they run
    /// on it.
    None,
}

impl Config {
    /// The defaults for a policy directory and tenant source: no tenant CAs, JSON lines on
    /// stderr, no monitor, no IBM-style monitoring, [`Limits::default`], compiled in-process, fail closed, a scan every
    /// 100 ms, no prefix, cache on, threads of its own.
    pub fn new(policy_dir: impl Into<PathBuf>, tenant: TenantSource) -> Config {
        Config {
            policy_dir: policy_dir.into(),
            tenant,
            tenant_cas: TenantCas::new(),
            events: EventTarget::Stderr,
            monitor: None,
            monitoring: false,
            monitoring_state: None,
            limits: Limits::default(),
            compiler: None,
            fail_mode: FailMode::Closed,
            reload_poll: Duration::from_millis(100),
            tenant_prefix: None,
            decision_cache: true,
            threads: Threads::Own,
        }
    }

    /// The topic prefix of `tenant`, if prefixes are configured.
    pub fn prefix_for(&self, tenant: &str) -> Option<String> {
        self.tenant_prefix.as_ref().map(|p| p.replace("{tenant}", tenant))
    }
}

/// Checks a tenant topic prefix: `{tenant}` exactly once, ending with `/`, no wildcards, so
/// that no tenant's topic space contains another's.
pub fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.matches("{tenant}").count() != 1 || !prefix.ends_with('/') || prefix.contains(['+', '#']) {
        return Err(Error::TopicPrefix { prefix: prefix.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_topic_per_tenant() {
        let m = Monitor::new("monitor/{tenant}/events", vec!["acme".into(), "globex".into()]).unwrap();
        assert_eq!(m.topic_for("acme").as_deref(), Some("monitor/acme/events"));
        assert_eq!(m.topic_for("initech"), None);
        assert!(Monitor::new("m/#", vec![]).is_err());
        assert!(Monitor::new("", vec![]).is_err());
    }

    #[test]
    fn prefixes_must_separate_tenants() {
        assert!(check_prefix("tenants/{tenant}/").is_ok());
        for bad in ["t/", "{tenant}", "{tenant}/{tenant}/", "+/{tenant}/"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        let mut c = Config::new("/p", TenantSource::Certificate);
        assert_eq!(c.prefix_for("acme"), None);
        c.tenant_prefix = Some("tenants/{tenant}/".into());
        assert_eq!(c.prefix_for("acme").as_deref(), Some("tenants/acme/"));
    }
}
