//! A tenant: the state its policies share and that survives a policy reload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::events::{EventSink, NullSink};

/// Most counters one tenant may hold, so a policy cannot exhaust host memory by naming new ones.
pub const MAX_COUNTERS: usize = 100_000;

/// A tenant: its name, counters and connected-client count, and where its events go.
/// Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Tenant {
    inner: Arc<TenantInner>,
}

struct TenantInner {
    name: String,
    counters: Mutex<HashMap<String, Window>>,
    connections: AtomicU32,
    events: Arc<dyn EventSink>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    value: i64,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

impl Tenant {
    /// A tenant whose events are discarded.
    pub fn new(name: &str) -> Tenant {
        Tenant::with_events(name, Arc::new(NullSink))
    }

    /// A tenant whose events go to `events`.
    pub fn with_events(name: &str, events: Arc<dyn EventSink>) -> Tenant {
        Tenant {
            inner: Arc::new(TenantInner {
                name: name.to_owned(),
                counters: Mutex::new(HashMap::new()),
                connections: AtomicU32::new(0),
                events,
            }),
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where this tenant's events go.
    pub fn events(&self) -> &dyn EventSink {
        &*self.inner.events
    }

    /// Adds `delta` to counter `name` in the fixed window of `window_ms` containing `now_ms`
    /// (0: one window forever) and returns the new value. A new window starts from zero.
    /// Past [`MAX_COUNTERS`] distinct names, new names are not stored and read as `delta`.
    pub fn counter_add(&self, name: &str, delta: i64, window_ms: u64, now_ms: u64) -> i64 {
        let start_ms = if window_ms == 0 { 0 } else { now_ms - now_ms % window_ms };
        let mut counters = self.inner.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = counters.get_mut(name) {
            if w.start_ms != start_ms {
                *w = Window { start_ms, value: 0 };
            }
            w.value = w.value.saturating_add(delta);
            return w.value;
        }
        if counters.len() >= MAX_COUNTERS {
            // Drop windows that have ended before refusing to store.
            counters.retain(|_, w| w.start_ms == start_ms || window_ms == 0);
            if counters.len() >= MAX_COUNTERS {
                return delta;
            }
        }
        counters.insert(name.to_owned(), Window { start_ms, value: delta });
        delta
    }

    /// Number of clients the host holds as connected for this tenant.
    pub fn connection_count(&self) -> u32 {
        self.inner.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn connected(&self) {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self) {
        let _ = self.inner.connections.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_reset_at_window_boundaries() {
        let t = Tenant::new("t");
        assert_eq!(t.counter_add("msgs", 1, 1000, 10_000), 1);
        assert_eq!(t.counter_add("msgs", 2, 1000, 10_999), 3);
        assert_eq!(t.counter_add("msgs", 1, 1000, 11_000), 1, "new window starts at zero");
        assert_eq!(t.counter_add("gauge", 5, 0, 1), 5);
        assert_eq!(t.counter_add("gauge", -2, 0, 99_999_999), 3, "window 0 never resets");
    }

    #[test]
    fn tenants_do_not_share_counters() {
        let a = Tenant::new("a");
        let b = Tenant::new("b");
        a.counter_add("x", 7, 0, 0);
        assert_eq!(b.counter_add("x", 1, 0, 0), 1);
        assert_eq!(a.clone().counter_add("x", 0, 0, 0), 7, "clones share state");
    }

    #[test]
    fn connection_count_never_goes_negative() {
        let t = Tenant::new("t");
        t.disconnected();
        assert_eq!(t.connection_count(), 0);
        t.connected();
        t.connected();
        t.disconnected();
        assert_eq!(t.connection_count(), 1);
    }
}
