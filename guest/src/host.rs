//! What the host offers a policy: logging, the clock, counters, the connection count and
//! how a connection is reported in monitoring messages.
//! Counters live in the host, per tenant, so they are shared by every instance of the
//! tenant's policy and survive a reload.

//!
//! In a native build (`cargo test`), these calls go to the in-memory fakes of
//! [`crate::testing`] (a clock you set, counters, captured logs and cache calls) instead of the
//! host, which only a `.wasm` has.

#[cfg(target_arch = "wasm32")]
use crate::bindings::mqtt_policy::policy::host as h;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::fake as h;

pub use crate::bindings::mqtt_policy::policy::host::Level;

/// Writes a line into the host's event stream. Lines past 1 KiB are cut; at most 8 lines
/// per call and 100 per tenant per second are written, the rest are counted in one
/// `suppressed` event.
pub fn log(level: Level, message: &str) {
    h::log(level, message);
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    h::now_millis()
}

/// Adds `delta` to the tenant's counter `name` in the current fixed window of
/// `window_ms` milliseconds (0: no window) and returns the new value.
///
/// The host bounds what a tenant's counters take (`mqtt_policy_host::Limits::MAX_COUNTER_NAME`,
/// `MAX_COUNTERS`, `MAX_COUNTER_BYTES`): past a bound the call traps, so the check is denied
/// with 0x83 and a `limit-exceeded` event. Keep names short and windows finite.
pub fn counter_add(name: &str, delta: i64, window_ms: u64) -> i64 {
    h::counter_add(name, delta, window_ms)
}

/// Number of clients of this tenant currently connected, as the host counts them.
pub fn connection_count() -> u32 {
    h::connection_count()
}

/// Lets the host reuse this check's decision for later checks of the same session with the
/// same topic (or filter), QoS and retain flag and a payload of at most `max_payload_size`
/// bytes, until the session ends or the policy is reloaded. Skipping the call into the policy
/// makes a repeated check several times cheaper. Call it only when the decision depends on
/// nothing else: not on the clock, on counters, or on state the policy keeps.
pub fn cache_decision(max_payload_size: u32) {
    h::cache_decision(max_payload_size);
}

/// During `authenticate` (whether it accepts or rejects; ignored elsewhere): report this
/// connection in the hub's monitoring messages as device `device_id` of type `device_type`,
/// i.e. on `iot-2/type/{device_type}/id/{device_id}/mon`. Each value must be one topic level
/// (1-256 bytes, no `/`, `+`, `#`, NUL, not starting with `$`), or the host ignores the call.
/// The host fills in the connection's facts, and publishes only where its operator enabled
/// monitoring.
pub fn monitor_device(device_type: &str, device_id: &str) {
    h::monitor_device(device_type, device_id);
}

/// As [`monitor_device`], for an application: `iot-2/app/{app_id}/mon`.
pub fn monitor_application(app_id: &str) {
    h::monitor_application(app_id);
}
