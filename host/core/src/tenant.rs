//! A tenant: the state its policies share and that survives a policy reload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::events::{EventSink, NullSink};
use crate::limits::Limits;

/// A tenant: its name, counters and connected-client count, and where its events go.
/// Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Tenant {
    inner: Arc<TenantInner>,
}

struct TenantInner {
    name: String,
    counters: Mutex<Counters>,
    connections: AtomicU32,
    events: Arc<dyn EventSink>,
    logs: Mutex<LogWindow>,
}

/// A tenant's counters and the bytes their names take, bounded by [`Limits::MAX_COUNTERS`]
/// and [`Limits::MAX_COUNTER_BYTES`].
#[derive(Default)]
struct Counters {
    by_name: HashMap<String, Window>,
    name_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    /// 0: one window forever.
    window_ms: u64,
    value: i64,
}

impl Window {
    fn ended(&self, now_ms: u64) -> bool {
        self.window_ms != 0 && now_ms >= self.start_ms.saturating_add(self.window_ms)
    }
}

/// The tenant's log lines in the current second, and those dropped since the last report.
#[derive(Debug, Default)]
struct LogWindow {
    second: u64,
    written: u32,
    suppressed: u64,
}

/// Why `counter-add` was refused: the counter would take the tenant past a bound of
/// [`Limits`]. The message names the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CounterRefused(pub String);

/// Whether one policy log line may be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogAdmit {
    /// Write it, after one `suppressed` event for this many lines dropped before it (if not 0).
    Write {
        /// Lines dropped since the last line written.
        suppressed: u64,
    },
    /// Drop it: the tenant's budget for this second is spent.
    Drop,
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
                counters: Mutex::new(Counters::default()),
                connections: AtomicU32::new(0),
                events,
                logs: Mutex::new(LogWindow::default()),
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
    ///
    /// Refused, with nothing stored, for a name longer than [`Limits::MAX_COUNTER_NAME`], and
    /// for a new name that would take the tenant past [`Limits::MAX_COUNTERS`] counters or
    /// [`Limits::MAX_COUNTER_BYTES`] bytes of names once counters whose window has ended are
    /// dropped. A refused counter is never read as anything, so a rate limit built on it
    /// cannot be skipped by exhausting the tenant's counters: the policy's call traps.
    pub fn counter_add(&self, name: &str, delta: i64, window_ms: u64, now_ms: u64) -> Result<i64, CounterRefused> {
        if name.len() > Limits::MAX_COUNTER_NAME {
            return Err(CounterRefused(format!(
                "counter name of {} bytes is longer than the limit of {} bytes",
                name.len(),
                Limits::MAX_COUNTER_NAME
            )));
        }
        let start_ms = if window_ms == 0 { 0 } else { now_ms - now_ms % window_ms };
        let mut counters = self.inner.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = counters.by_name.get_mut(name) {
            if w.start_ms != start_ms {
                *w = Window { start_ms, window_ms, value: 0 };
            }
            w.window_ms = window_ms;
            w.value = w.value.saturating_add(delta);
            return Ok(w.value);
        }
        let full = |c: &Counters| {
            c.by_name.len() >= Limits::MAX_COUNTERS || c.name_bytes + name.len() > Limits::MAX_COUNTER_BYTES
        };
        if full(&counters) {
            // Drop windows that have ended before refusing to store.
            let Counters { by_name, name_bytes } = &mut *counters;
            by_name.retain(|n, w| {
                let keep = !w.ended(now_ms);
                if !keep {
                    *name_bytes -= n.len();
                }
                keep
            });
            if full(&counters) {
                return Err(CounterRefused(format!(
                    "tenant {} holds {} counters with {} bytes of names; a new one would pass the limit of {} counters or {} bytes",
                    self.inner.name,
                    counters.by_name.len(),
                    counters.name_bytes,
                    Limits::MAX_COUNTERS,
                    Limits::MAX_COUNTER_BYTES
                )));
            }
        }
        counters.name_bytes += name.len();
        counters.by_name.insert(name.to_owned(), Window { start_ms, window_ms, value: delta });
        Ok(delta)
    }

    /// Number of counters the tenant holds and the bytes of their names.
    pub fn counter_usage(&self) -> (usize, usize) {
        let counters = self.inner.counters.lock().unwrap_or_else(|e| e.into_inner());
        (counters.by_name.len(), counters.name_bytes)
    }

    /// Counts one policy log line against the tenant's [`Limits::MAX_LOGS_PER_SECOND`] in
    /// the second of `now_ms`.
    pub(crate) fn admit_log(&self, now_ms: u64) -> LogAdmit {
        let second = now_ms / 1000;
        let mut w = self.inner.logs.lock().unwrap_or_else(|e| e.into_inner());
        if w.second != second {
            w.second = second;
            w.written = 0;
        }
        if w.written >= Limits::MAX_LOGS_PER_SECOND {
            w.suppressed += 1;
            return LogAdmit::Drop;
        }
        w.written += 1;
        LogAdmit::Write { suppressed: std::mem::take(&mut w.suppressed) }
    }

    /// Counts one policy log line dropped for another reason (the per-call cap), to be
    /// reported with the tenant's next `suppressed` summary.
    pub(crate) fn log_dropped(&self) {
        self.inner.logs.lock().unwrap_or_else(|e| e.into_inner()).suppressed += 1;
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
        assert_eq!(t.counter_add("msgs", 1, 1000, 10_000), Ok(1));
        assert_eq!(t.counter_add("msgs", 2, 1000, 10_999), Ok(3));
        assert_eq!(t.counter_add("msgs", 1, 1000, 11_000), Ok(1), "new window starts at zero");
        assert_eq!(t.counter_add("gauge", 5, 0, 1), Ok(5));
        assert_eq!(t.counter_add("gauge", -2, 0, 99_999_999), Ok(3), "window 0 never resets");
    }

    #[test]
    fn tenants_do_not_share_counters() {
        let a = Tenant::new("a");
        let b = Tenant::new("b");
        a.counter_add("x", 7, 0, 0).unwrap();
        assert_eq!(b.counter_add("x", 1, 0, 0), Ok(1));
        assert_eq!(a.clone().counter_add("x", 0, 0, 0), Ok(7), "clones share state");
    }

    #[test]
    fn a_long_counter_name_is_refused_and_nothing_is_kept() {
        let t = Tenant::new("t");
        let long = "n".repeat(256 << 10);
        let e = t.counter_add(&long, 1, 0, 0).unwrap_err();
        assert_eq!(e.0, "counter name of 262144 bytes is longer than the limit of 1024 bytes");
        assert_eq!(t.counter_usage(), (0, 0));
        let longest = "n".repeat(Limits::MAX_COUNTER_NAME);
        assert_eq!(t.counter_add(&longest, 1, 0, 0), Ok(1), "the limit itself is allowed");
    }

    #[test]
    fn counter_name_bytes_are_bounded_per_tenant_and_ended_windows_make_room() {
        let t = Tenant::new("t");
        let name = |i: usize| format!("{i:0>1024}");
        let fit = Limits::MAX_COUNTER_BYTES / 1024;
        for i in 0..fit {
            t.counter_add(&name(i), 1, 1000, 5_000).unwrap();
        }
        assert_eq!(t.counter_usage(), (fit, Limits::MAX_COUNTER_BYTES));
        let e = t.counter_add(&name(fit), 1, 1000, 5_500).unwrap_err();
        assert!(e.0.contains("4194304 bytes"), "{e}");
        assert_eq!(t.counter_add(&name(3), 1, 1000, 5_500), Ok(2), "existing counters still count");
        assert_eq!(t.counter_usage().1, Limits::MAX_COUNTER_BYTES, "the refusal stored nothing");
        // Once their second is over, the old windows are dropped to make room.
        assert_eq!(t.counter_add(&name(fit), 1, 1000, 6_000), Ok(1));
        assert_eq!(t.counter_usage(), (1, 1024));
        // Counters without a window never end, so they stay and keep the bound.
        let t = Tenant::new("forever");
        for i in 0..fit {
            t.counter_add(&name(i), 1, 0, 0).unwrap();
        }
        assert!(t.counter_add("one more", 1, 0, u64::MAX / 2).is_err());
    }

    #[test]
    fn log_lines_are_bounded_per_second_and_the_dropped_ones_reported_once() {
        let t = Tenant::new("t");
        let written = (0..Limits::MAX_LOGS_PER_SECOND + 50).filter(|_| t.admit_log(7_000) != LogAdmit::Drop).count();
        assert_eq!(written, Limits::MAX_LOGS_PER_SECOND as usize);
        t.log_dropped();
        assert_eq!(t.admit_log(8_000), LogAdmit::Write { suppressed: 51 }, "the next second reports them");
        assert_eq!(t.admit_log(8_001), LogAdmit::Write { suppressed: 0 });
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
