//! Structured events: one per denial, rewrite, load, load failure, trap and policy log line.
//!
//! Nothing is built or written when a check allows, so events cost the hot path nothing.

use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::types::{Denial, ReasonCode};

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Diagnostic detail.
    Debug,
    /// Normal operation worth recording (a load, an auto-provisioned device).
    Info,
    /// A client was refused or its message changed.
    Warn,
    /// The policy itself failed (trap, timeout, bad file).
    Error,
}

/// What the client or operator was doing when the event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// CONNECT.
    Connect,
    /// PUBLISH from a client.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Delivery of a message to a subscriber.
    Delivery,
    /// Loading or reloading a policy.
    Load,
    /// A line the policy logged through the host.
    Log,
}

/// One structured event, written as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Tenant the event belongs to.
    pub tenant: String,
    /// What happened.
    pub action: Action,
    /// How serious.
    pub severity: Severity,
    /// `deny`, `rewrite`, `reject`, `trap`, `timeout`, `out-of-memory`, `loaded`, `load-failed`, `log`...
    pub outcome: &'static str,
    /// Client identifier, when a client was involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Device identity established at connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Topic or filter involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Numeric MQTT v5 reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<u8>,
    /// The reason code's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Human message.
    pub message: String,
    /// Short digest of the policy that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The facts the policy attached to the session when it accepted it
    /// (`session-info.attributes`: device type, groups, how it proved itself), written as a JSON
    /// object in `accept` events.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_object")]
    pub attributes: Vec<(String, String)>,
}

/// Attributes as one JSON object, in the policy's order (a later duplicate key is written too:
/// the policy's list is shown as it is).
fn as_object<S: serde::Serializer>(attributes: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(attributes.len()))?;
    for (k, v) in attributes {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

impl Event {
    /// A new event stamped now, with no client details.
    pub fn new(
        tenant: &str,
        action: Action,
        severity: Severity,
        outcome: &'static str,
        message: impl Into<String>,
    ) -> Event {
        Event {
            time_ms: now_ms(),
            tenant: tenant.to_owned(),
            action,
            severity,
            outcome,
            client_id: None,
            device_id: None,
            topic: None,
            reason_code: None,
            reason: None,
            message: message.into(),
            policy: None,
            attributes: Vec::new(),
        }
    }

    /// Sets the reason code (number and name).
    pub fn with_reason(mut self, reason: ReasonCode) -> Event {
        self.reason_code = Some(reason.code());
        self.reason = Some(reason.name());
        self
    }

    /// Builds the event for a denial.
    pub fn denial(tenant: &str, action: Action, outcome: &'static str, denial: &Denial) -> Event {
        Event::new(tenant, action, Severity::Warn, outcome, denial.message.clone()).with_reason(denial.reason)
    }

    /// The event as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialize")
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where events go. Implementations must be cheap and must not block for long:
/// they are called on the broker's thread.
pub trait EventSink: Send + Sync {
    /// Records one event.
    fn emit(&self, event: Event);
}

/// Discards events.
#[derive(Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: Event) {}
}

/// Writes each event as a JSON line to a writer (a file, stderr).
pub struct JsonLinesSink<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> JsonLinesSink<W> {
    /// Wraps a writer.
    pub fn new(out: W) -> Self {
        JsonLinesSink { out: Mutex::new(out) }
    }
}

impl<W: Write + Send> EventSink for JsonLinesSink<W> {
    fn emit(&self, event: Event) {
        let mut line = event.to_json();
        line.push('\n');
        if let Ok(mut out) = self.out.lock() {
            // One write per line: several sinks (one per Mosquitto listener) may append to the same
            // file, and `writeln!` would let their lines interleave (the text, then the newline).
            // An event that cannot be written must not fail the decision it describes.
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }
}

/// Keeps events in memory, for tests and for tools that print them afterwards.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Event>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes and returns the events recorded so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl EventSink for MemorySink {
    fn emit(&self, event: Event) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` call separately, as the kernel sees appends from several handles.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_event_is_one_write_ending_in_a_newline() {
        let sink = JsonLinesSink::new(Writes::default());
        sink.emit(Event::new("acme", Action::Load, Severity::Info, "loaded", "one"));
        sink.emit(Event::new("acme", Action::Load, Severity::Info, "loaded", "two"));
        let writes = sink.out.into_inner().unwrap().0;
        assert_eq!(writes.len(), 2, "a line split over writes can interleave with another sink's");
        for w in writes {
            assert_eq!(w.last(), Some(&b'\n'));
            assert_eq!(w.iter().filter(|b| **b == b'\n').count(), 1);
        }
    }
}
