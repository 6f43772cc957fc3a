//! The bounds every policy runs under, and the store limiter that enforces the memory bound
//! and records that it did, so a fault is classified from that record rather than from the
//! wording of wasmtime's error.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Bounds every policy call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a single check (publish, subscribe, delivery, end of session) may run.
    pub deadline: Duration,
    /// Longest `authenticate` may run. Longer than a check: it runs once per connection and
    /// verifies proofs (a token hash costs 0.5-8 ms), and a loaded machine must not turn a
    /// right password into a refusal. Still bounded: it runs on the broker's thread.
    pub connect_deadline: Duration,
    /// Longest instantiation plus `validate-settings` may run (large rule sets parse here).
    pub setup_deadline: Duration,
    /// Most linear memory one policy instance may grow to, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    /// 10 ms per check, 50 ms per connect, 5 s for setup, 64 MiB of memory.
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(10),
            connect_deadline: Duration::from_millis(50),
            setup_deadline: Duration::from_secs(5),
            memory: 64 << 20,
        }
    }
}

/// Bounds on what a policy can make the host keep or write, fixed for every policy. A policy
/// that goes past a bound on what the host keeps (a counter) traps: its check is denied with
/// 0x83 and a `limit-exceeded` event says which bound. Output past a bound is dropped.
impl Limits {
    /// Longest counter name (`host.counter-add`), in bytes.
    pub const MAX_COUNTER_NAME: usize = 1024;
    /// Most counters one tenant holds (over all its policies and reloads). Counters whose
    /// window has ended are dropped first.
    pub const MAX_COUNTERS: usize = 100_000;
    /// Most bytes of counter names one tenant holds; with [`Limits::MAX_COUNTERS`] this caps a
    /// tenant's counters at about 10 MiB.
    pub const MAX_COUNTER_BYTES: usize = 4 << 20;
    /// Longest `host.log` line, in bytes; longer lines are cut.
    pub const MAX_LOG_LINE: usize = 1024;
    /// Most `host.log` lines one call writes; the rest are dropped.
    pub const MAX_LOGS_PER_CALL: u32 = 8;
    /// Most `host.log` lines one tenant writes per second (all its instances together); the
    /// rest are dropped and counted in one `suppressed` event written before the next line.
    pub const MAX_LOGS_PER_SECOND: u32 = 100;
    /// Bytes of a policy's stdout and stderr kept (one ring per instance, newest bytes kept):
    /// the guest can write any amount without blocking or failing, and a panic message, the
    /// last thing it writes, names the fault in its event.
    pub const OUTPUT_RING: usize = 16 * 1024;
}

/// Most instances, tables and memories one store may hold: a component built by
/// `wasm32-wasip2` needs a few of each; more would only serve to exhaust the host.
const INSTANCES: usize = 4;
const TABLES: usize = 8;
const MEMORIES: usize = 2;

/// The resource limiter of every policy store.
///
/// A refused growth traps instead of returning -1 to the guest: a Rust guest would abort on
/// the failed allocation anyway, and a trap names the cause precisely.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    memory: usize,
    memory_refused: bool,
}

impl StoreLimiter {
    pub(crate) fn new(memory: usize) -> StoreLimiter {
        StoreLimiter { memory, memory_refused: false }
    }

    /// Whether a memory growth was refused (past the cap or the memory's own maximum) or
    /// failed since the last [`StoreLimiter::reset`].
    pub(crate) fn memory_refused(&self) -> bool {
        self.memory_refused
    }

    /// Forgets earlier refusals, at the start of a call.
    pub(crate) fn reset(&mut self) {
        self.memory_refused = false;
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory || maximum.is_some_and(|max| desired > max) {
            self.memory_refused = true;
            wasmtime::bail!("forcing trap when growing memory to {desired} bytes");
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        Err(error.context("forcing a memory growth failure to be a trap"))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!("forcing trap when growing table to {desired} elements");
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("forcing a table growth failure to be a trap"))
    }

    fn instances(&self) -> usize {
        INSTANCES
    }

    fn tables(&self) -> usize {
        TABLES
    }

    fn memories(&self) -> usize {
        MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recorded_until_reset() {
        let mut l = StoreLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap(), "up to the cap is allowed");
        assert!(!l.memory_refused());
        assert!(l.memory_growing(0, (1 << 20) + 1, None).is_err());
        assert!(l.memory_refused());
        l.reset();
        assert!(l.memory_growing(0, 2 << 10, Some(1 << 10)).is_err(), "past the memory's own maximum");
        assert!(l.memory_refused());
        l.reset();
        assert!(l.table_growing(0, 10, Some(5)).is_err());
        assert!(!l.memory_refused(), "a table is not memory");
    }
}
