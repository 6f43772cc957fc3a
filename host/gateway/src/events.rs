//! Where a tenant's events go: JSON lines shared by all tenants, and the tenant's monitoring
//! topic, whose messages wait in a [`MonitorQueue`] until the broker publishes them on its
//! own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mqtt_policy_host::events::{Event, EventSink};

/// Monitoring messages (topic, JSON payload) waiting to be published by the broker.
#[derive(Default)]
pub struct MonitorQueue {
    items: Mutex<Vec<(String, String)>>,
    nonempty: AtomicBool,
}

impl MonitorQueue {
    /// Queues one message.
    pub fn push(&self, topic: String, payload: String) {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).push((topic, payload));
        self.nonempty.store(true, Ordering::Release);
    }

    /// Takes everything queued (cheap when empty).
    pub fn drain(&self) -> Vec<(String, String)> {
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
    pub lines: Option<Arc<dyn EventSink>>,
    /// Monitoring topic of this tenant, with the queue the broker publishes from.
    pub monitor: Option<(String, Arc<MonitorQueue>)>,
}

impl EventSink for TenantSink {
    fn emit(&self, event: Event) {
        if let Some((topic, queue)) = &self.monitor {
            queue.push(topic.clone(), event.to_json());
        }
        if let Some(lines) = &self.lines {
            lines.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_policy_host::events::{Action, MemorySink, Severity};

    #[test]
    fn monitor_queue_drains_once() {
        let q = MonitorQueue::default();
        assert!(q.drain().is_empty());
        q.push("m/acme".into(), "{}".into());
        assert_eq!(q.drain(), vec![("m/acme".to_owned(), "{}".to_owned())]);
        assert!(q.drain().is_empty());
    }

    #[test]
    fn a_tenant_sink_feeds_lines_and_its_monitor_topic() {
        let lines = Arc::new(MemorySink::new());
        let queue = Arc::new(MonitorQueue::default());
        let sink = TenantSink { lines: Some(lines.clone()), monitor: Some(("m/acme".into(), queue.clone())) };
        sink.emit(Event::new("acme", Action::Connect, Severity::Info, "accept", "device d connected"));
        assert_eq!(lines.take().len(), 1);
        let queued = queue.drain();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].0, "m/acme");
        assert!(queued[0].1.contains("device d connected"), "{}", queued[0].1);
    }
}
