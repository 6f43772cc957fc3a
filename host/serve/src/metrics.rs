//! What `/metrics` shows, in the Prometheus text format (version 0.0.4):
//!
//! - `mqtt_policy_decisions_total{dialect,tenant,kind,outcome}`: every answer to a broker;
//!   `kind` is `connect`, `vhost`, `resource`, `publish` or `subscribe`, `outcome` `allow` or
//!   `deny`. At most [`MAX_TENANT_LABELS`] tenant names become labels; the rest count as `*`.
//! - `mqtt_policy_check_seconds{kind}`: a histogram of the time from a request's arrival to its
//!   answer (queueing on the worker included).
//! - `mqtt_policy_rejected_requests_total{reason}`: requests answered 4xx/5xx `deny` before a
//!   policy was asked (`bad-request`, `secret`, `too-large`, `timeout`, `overloaded`, ...).
//! - `mqtt_policy_events_total{action,outcome}`: the gateway's events (loads, load failures,
//!   traps, timeouts, denials...), counted as they are written (after the per-tenant event budget).
//! - `mqtt_policy_sessions`: sessions the workers hold.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtt_policy_host::events::{Action, Event, EventSink};

/// Most distinct tenant labels; later tenants are counted under `*`.
pub const MAX_TENANT_LABELS: usize = 1024;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const BUCKETS: &[f64] = &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    total: u64,
}

#[derive(Default)]
struct Inner {
    decisions: BTreeMap<(&'static str, String, &'static str, &'static str), u64>,
    tenants: std::collections::BTreeSet<String>,
    latency: BTreeMap<&'static str, Histogram>,
    rejected: BTreeMap<&'static str, u64>,
    events: BTreeMap<(&'static str, &'static str), u64>,
}

/// The service's counters, shared by every request.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one answer and its latency.
    pub fn decision(&self, dialect: &'static str, tenant: &str, kind: &'static str, allow: bool, took: Duration) {
        let mut m = self.lock();
        let label = if m.tenants.contains(tenant) {
            tenant.to_owned()
        } else if m.tenants.len() < MAX_TENANT_LABELS {
            m.tenants.insert(tenant.to_owned());
            tenant.to_owned()
        } else {
            "*".to_owned()
        };
        *m.decisions.entry((dialect, label, kind, if allow { "allow" } else { "deny" })).or_default() += 1;
        let h = m.latency.entry(kind).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += s;
        h.total += 1;
    }

    /// Counts a request refused before any policy was asked.
    pub fn rejected(&self, reason: &'static str) {
        *self.lock().rejected.entry(reason).or_default() += 1;
    }

    /// Counts one gateway event.
    pub fn event(&self, e: &Event) {
        *self.lock().events.entry((action_name(e.action), e.outcome)).or_default() += 1;
    }

    /// The text `/metrics` answers, with `sessions` held.
    pub fn render(&self, sessions: usize) -> String {
        let m = self.lock();
        let mut out = String::new();
        out += "# HELP mqtt_policy_decisions_total Answers to brokers by dialect, tenant, kind and outcome.\n";
        out += "# TYPE mqtt_policy_decisions_total counter\n";
        for ((dialect, tenant, kind, outcome), n) in &m.decisions {
            let _ = writeln!(
                out,
                "mqtt_policy_decisions_total{{dialect=\"{dialect}\",tenant=\"{}\",kind=\"{kind}\",outcome=\"{outcome}\"}} {n}",
                escape(tenant)
            );
        }
        out += "# HELP mqtt_policy_check_seconds Time from a request's arrival to its answer.\n";
        out += "# TYPE mqtt_policy_check_seconds histogram\n";
        for (kind, h) in &m.latency {
            for (b, n) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(out, "mqtt_policy_check_seconds_bucket{{kind=\"{kind}\",le=\"{b}\"}} {n}");
            }
            let _ = writeln!(out, "mqtt_policy_check_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}", h.total);
            let _ = writeln!(out, "mqtt_policy_check_seconds_sum{{kind=\"{kind}\"}} {}", h.sum);
            let _ = writeln!(out, "mqtt_policy_check_seconds_count{{kind=\"{kind}\"}} {}", h.total);
        }
        out += "# HELP mqtt_policy_rejected_requests_total Requests answered deny before any policy was asked.\n";
        out += "# TYPE mqtt_policy_rejected_requests_total counter\n";
        for (reason, n) in &m.rejected {
            let _ = writeln!(out, "mqtt_policy_rejected_requests_total{{reason=\"{reason}\"}} {n}");
        }
        out += "# HELP mqtt_policy_events_total Gateway events (loads, load failures, faults, denials) by action and outcome.\n";
        out += "# TYPE mqtt_policy_events_total counter\n";
        for ((action, outcome), n) in &m.events {
            let _ = writeln!(out, "mqtt_policy_events_total{{action=\"{action}\",outcome=\"{outcome}\"}} {n}");
        }
        out += "# HELP mqtt_policy_sessions Sessions held by the workers.\n# TYPE mqtt_policy_sessions gauge\n";
        let _ = writeln!(out, "mqtt_policy_sessions {sessions}");
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Connect => "connect",
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::Delivery => "delivery",
        Action::Load => "load",
        Action::Log => "log",
    }
}

/// An event sink that counts every event in [`Metrics`] and passes it on.
pub struct CountingSink {
    /// Where the counts go.
    pub metrics: Arc<Metrics>,
    /// Where events go next (the JSON lines), if anywhere.
    pub next: Option<Arc<dyn EventSink>>,
}

impl EventSink for CountingSink {
    fn emit(&self, event: Event) {
        self.metrics.event(&event);
        if let Some(next) = &self.next {
            next.emit(event);
        }
    }
}
