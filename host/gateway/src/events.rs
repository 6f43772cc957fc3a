//! Where a tenant's events go: JSON lines shared by all tenants, and the tenant's monitoring
//! topic, whose messages wait in a [`MonitorQueue`] until the broker publishes them on its
//! own thread.
//!
//! Events are bounded: at most [`MAX_EVENTS_PER_SECOND`] and [`MAX_EVENT_BYTES_PER_SECOND`]
//! per tenant (the rest are counted and reported by one `suppressed` event; tenants without a
//! policy file share one budget), at most [`MAX_MONITOR_QUEUE`] monitoring messages
//! waiting, and a refused delivery of a monitoring message never becomes a monitoring message
//! itself (it would be delivered, refused and reported again, without end).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mqtt_policy_host::events::{Action, Event, EventSink, Severity};

use crate::config::Monitor;

/// Most events one tenant emits per second; the rest are counted in a `suppressed` event.
pub const MAX_EVENTS_PER_SECOND: u32 = 1000;

/// Most bytes of events one tenant emits per second, counted as the length of an event's text
/// fields plus [`EVENT_OVERHEAD`] (before JSON escaping): a client id, topic or policy message
/// can be 64 KiB, so a count alone would not bound the events file.
pub const MAX_EVENT_BYTES_PER_SECOND: usize = 1 << 20;

/// What an event's fixed fields (time, action, severity, outcome, codes, names, JSON syntax)
/// are counted as, in bytes, against [`MAX_EVENT_BYTES_PER_SECOND`].
pub const EVENT_OVERHEAD: usize = 200;

/// Most monitoring messages waiting for the broker to publish them; later ones are dropped.
pub const MAX_MONITOR_QUEUE: usize = 10_000;

/// One message for the broker to publish (QoS 0, from no client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorMessage {
    /// Topic name.
    pub topic: String,
    /// Payload (JSON; empty to clear a retained message).
    pub payload: String,
    /// Whether the broker keeps it as the topic's retained message.
    pub retain: bool,
}

/// Monitoring messages waiting to be published by the broker: the events of
/// `monitor_topic`, and IBM-style monitoring messages (the gateway's `monitoring` module).
#[derive(Default)]
pub struct MonitorQueue {
    items: Mutex<Vec<MonitorMessage>>,
    nonempty: AtomicBool,
    dropped: AtomicU64,
}

impl MonitorQueue {
    /// Queues one message, not retained, unless [`MAX_MONITOR_QUEUE`] are already waiting.
    pub fn push(&self, topic: String, payload: String) {
        self.push_message(MonitorMessage { topic, payload, retain: false });
    }

    /// Queues one message, unless [`MAX_MONITOR_QUEUE`] are already waiting.
    pub fn push_message(&self, message: MonitorMessage) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() >= MAX_MONITOR_QUEUE {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        items.push(message);
        self.nonempty.store(true, Ordering::Release);
    }

    /// Counts a message dropped before it reached the queue (a budget refused it).
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped so far because the queue was full (or a budget refused them).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether nothing is queued (one load).
    pub fn is_empty(&self) -> bool {
        !self.nonempty.load(Ordering::Relaxed)
    }

    /// Takes everything queued (cheap when empty).
    pub fn drain(&self) -> Vec<MonitorMessage> {
        if !take_flag(&self.nonempty) {
            return Vec::new();
        }
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Clears `flag` and says whether it was set. Asked on every callback and almost always
/// unset, so a plain load comes first: the common case stays a read of a shared cache line.
fn take_flag(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::Acquire)
}

/// Event sinks for one tenant: JSON lines, plus the monitoring topic if configured.
pub struct TenantSink {
    /// Where JSON lines go (shared by all tenants).
    lines: Option<Arc<dyn EventSink>>,
    /// Monitoring topic of this tenant, with the queue the broker publishes from.
    monitor: Option<(String, Arc<MonitorQueue>)>,
    /// Which topics are monitoring topics (of any tenant).
    monitors: Option<Monitor>,
    /// Whether IBM-style monitoring is on: refused deliveries of its messages (a subscriber
    /// outside a device's group) are no events at all.
    ibm: bool,
    window: Mutex<Budget>,
}

/// One tenant's events in the current second, and those suppressed since the last report.
#[derive(Debug, Default)]
struct Budget {
    second: u64,
    events: u32,
    bytes: usize,
    suppressed: u64,
}

/// What `event` counts as against [`MAX_EVENT_BYTES_PER_SECOND`].
fn size(event: &Event) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    EVENT_OVERHEAD
        + event.tenant.len()
        + event.message.len()
        + text(&event.client_id)
        + text(&event.device_id)
        + text(&event.topic)
        + text(&event.policy)
        + event.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

impl TenantSink {
    /// A sink writing to `lines` and, for a tenant that publishes monitoring messages, to
    /// `monitor` (its topic and the queue); `monitors` names every monitoring topic.
    pub fn new(
        lines: Option<Arc<dyn EventSink>>,
        monitor: Option<(String, Arc<MonitorQueue>)>,
        monitors: Option<Monitor>,
    ) -> TenantSink {
        TenantSink { lines, monitor, monitors, ibm: false, window: Mutex::new(Budget::default()) }
    }

    /// With IBM-style monitoring on or off ([`crate::Config::monitoring`]).
    pub fn with_monitoring(mut self, on: bool) -> TenantSink {
        self.ibm = on;
        self
    }

    /// Counts `event` against the per-second budgets; returns whether it may be emitted, and
    /// the number suppressed before it to report first. The summary itself is not counted.
    fn admit(&self, event: &Event) -> (bool, u64) {
        let second = event.time_ms / 1000;
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.second != second {
            *w = Budget { second, suppressed: w.suppressed, ..Budget::default() };
        }
        let bytes = size(event);
        if w.events >= MAX_EVENTS_PER_SECOND || w.bytes + bytes > MAX_EVENT_BYTES_PER_SECOND {
            w.suppressed += 1;
            return (false, 0);
        }
        w.events += 1;
        w.bytes += bytes;
        (true, std::mem::take(&mut w.suppressed))
    }

    fn write(&self, event: Event) {
        let own_traffic = event.action == Action::Delivery
            && event.topic.as_deref().is_some_and(|t| self.monitors.as_ref().is_some_and(|m| m.is_monitor_topic(t)));
        if let Some((topic, queue)) = &self.monitor
            && !own_traffic
        {
            queue.push(topic.clone(), event.to_json());
        }
        if let Some(lines) = &self.lines {
            lines.emit(event);
        }
    }
}

impl EventSink for TenantSink {
    fn emit(&self, event: Event) {
        if self.ibm
            && event.action == Action::Delivery
            && event.topic.as_deref().is_some_and(crate::config::is_monitoring_topic)
        {
            // The gateway's own status messages, kept from a subscriber outside their scope:
            // reporting each refusal would turn every Connect into events.
            return;
        }
        let (admitted, suppressed) = self.admit(&event);
        if suppressed > 0 {
            let mut summary = Event::new(
                &event.tenant,
                Action::Log,
                Severity::Warn,
                "suppressed",
                format!(
                    "{suppressed} events suppressed: more than {MAX_EVENTS_PER_SECOND} or \
                     {MAX_EVENT_BYTES_PER_SECOND} bytes a second"
                ),
            );
            summary.time_ms = event.time_ms;
            self.write(summary);
        }
        if admitted {
            self.write(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_policy_host::events::MemorySink;

    #[test]
    fn refused_deliveries_of_monitoring_messages_never_feed_the_monitor_topic() {
        let lines = Arc::new(MemorySink::new());
        let queue = Arc::new(MonitorQueue::default());
        let monitors = Monitor::new("mon/{tenant}/events", vec![]).unwrap();
        let sink =
            TenantSink::new(Some(lines.clone()), Some(("mon/acme/events".into(), queue.clone())), Some(monitors));
        let mut own = Event::new("acme", Action::Delivery, Severity::Warn, "deny", "unauthorized topic");
        own.topic = Some("mon/globex/events".into());
        sink.emit(own);
        assert!(queue.drain().is_empty(), "a monitoring message's refusal is not published");
        assert_eq!(lines.take().len(), 1, "but it is written");
        let mut other = Event::new("acme", Action::Delivery, Severity::Warn, "deny", "unauthorized topic");
        other.topic = Some("devices/d1/t".into());
        sink.emit(other);
        assert_eq!(queue.drain().len(), 1);
    }

    #[test]
    fn a_flood_of_events_is_cut_at_the_budget_and_reported_once() {
        let lines = Arc::new(MemorySink::new());
        let sink = TenantSink::new(Some(lines.clone()), None, None);
        let at = |ms: u64| {
            let mut e = Event::new("acme", Action::Publish, Severity::Warn, "deny", "unauthorized topic");
            e.time_ms = ms;
            e
        };
        for i in 0..(MAX_EVENTS_PER_SECOND as u64 + 500) {
            sink.emit(at(5_000 + i % 1000));
        }
        assert_eq!(lines.take().len(), MAX_EVENTS_PER_SECOND as usize);
        sink.emit(at(6_000));
        let next = lines.take();
        assert_eq!(next.len(), 2, "the summary, then the event");
        assert_eq!(next[0].outcome, "suppressed");
        assert!(next[0].message.starts_with("500 events suppressed"), "{}", next[0].message);
    }

    #[test]
    fn large_events_are_cut_at_the_byte_budget() {
        let lines = Arc::new(MemorySink::new());
        let sink = TenantSink::new(Some(lines.clone()), None, None);
        let big = |ms: u64| {
            let mut e = Event::new("acme", Action::Publish, Severity::Warn, "deny", "unauthorized topic");
            e.topic = Some("t".repeat(64 << 10));
            e.time_ms = ms;
            e
        };
        for i in 0..100 {
            sink.emit(big(9_000 + i));
        }
        let written = lines.take();
        let fit = MAX_EVENT_BYTES_PER_SECOND / size(&big(0));
        assert_eq!(written.len(), fit, "{fit} events of 64 KiB fit in the second");
        sink.emit(Event::new("acme", Action::Publish, Severity::Warn, "deny", "small"));
        let next = lines.take();
        assert_eq!(next[0].outcome, "suppressed");
        assert!(next[0].message.starts_with(&format!("{} events suppressed", 100 - fit)), "{}", next[0].message);
    }

    #[test]
    fn the_monitor_queue_is_bounded() {
        let q = MonitorQueue::default();
        for _ in 0..MAX_MONITOR_QUEUE + 3 {
            q.push("m".into(), "{}".into());
        }
        assert_eq!(q.drain().len(), MAX_MONITOR_QUEUE);
        assert_eq!(q.dropped(), 3);
    }

    #[test]
    fn monitor_queue_drains_once() {
        let q = MonitorQueue::default();
        assert!(q.drain().is_empty());
        q.push("m/acme".into(), "{}".into());
        assert_eq!(
            q.drain(),
            vec![MonitorMessage { topic: "m/acme".to_owned(), payload: "{}".to_owned(), retain: false }]
        );
        assert!(q.drain().is_empty());
    }

    #[test]
    fn a_tenant_sink_feeds_lines_and_its_monitor_topic() {
        let lines = Arc::new(MemorySink::new());
        let queue = Arc::new(MonitorQueue::default());
        let sink = TenantSink::new(Some(lines.clone()), Some(("m/acme".into(), queue.clone())), None);
        sink.emit(Event::new("acme", Action::Connect, Severity::Info, "accept", "device d connected"));
        assert_eq!(lines.take().len(), 1);
        let queued = queue.drain();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].topic, "m/acme");
        assert!(queued[0].payload.contains("device d connected"), "{}", queued[0].payload);
    }
}
