//! What the host offers a policy: logging, the clock, counters and the connection count.
//! Counters live in the host, per tenant, so they are shared by every instance of the
//! tenant's policy and survive a reload.

use crate::bindings::mqtt_policy::policy::host as h;

pub use h::Level;

/// Writes a line into the host's event stream (at most a few lines per call are kept).
pub fn log(level: Level, message: &str) {
    h::log(level, message);
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    h::now_millis()
}

/// Adds `delta` to the tenant's counter `name` in the current fixed window of
/// `window_ms` milliseconds (0: no window) and returns the new value.
pub fn counter_add(name: &str, delta: i64, window_ms: u64) -> i64 {
    h::counter_add(name, delta, window_ms)
}

/// Number of clients of this tenant currently connected, as the host counts them.
pub fn connection_count() -> u32 {
    h::connection_count()
}
