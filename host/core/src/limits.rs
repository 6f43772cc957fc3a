//! The bounds every policy runs under, and the store limiter that enforces the memory bound
//! and records that it did, so a fault is classified from that record rather than from the
//! wording of wasmtime's error. The circuit breaker and the instantiation backoff that use the
//! retry figures are [`crate::breaker`]'s; the compile bounds, [`crate::compiler`]'s.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Bounds every policy runs under: per call, per instance, per compilation, and how long a
/// tenant whose policy keeps failing is left alone before it is tried again. The one place
/// these figures live; [`Limits::default`] documents the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a single check (publish, subscribe, delivery, end of session) may run: half
    /// of it wall-clock time, the other half the calling thread's CPU time from then on, so a
    /// thread the machine did not schedule is not charged for the wait (see the module
    /// `deadline`). Uncontended, a looping policy is stopped at this time.
    pub deadline: Duration,
    /// Longest `authenticate` may run. Longer than a check: it runs once per connection and
    /// verifies proofs (a token hash costs 0.5-8 ms), and a loaded machine must not turn a
    /// right password into a refusal. Still bounded: it runs on the broker's thread. Split
    /// like [`Limits::deadline`].
    pub connect_deadline: Duration,
    /// Longest instantiation plus `validate-settings` may run (large rule sets parse here).
    pub setup_deadline: Duration,
    /// Most linear memory one policy instance may grow to, in bytes.
    pub memory: usize,
    /// Longest compiling one policy may take (wall clock, and the child's CPU time) when the
    /// engine compiles in a child process (see [`crate::Engine::with_compiler`]).
    pub compile_time: Duration,
    /// Most memory (address space, `RLIMIT_AS`) the compiling child process may map, in bytes.
    pub compile_memory: usize,
    /// Timeouts of one tenant's policy within [`Limits::breaker_window`] that open its circuit
    /// breaker: its checks are then denied at once, without calling the policy. 0: never open.
    pub breaker_timeouts: u32,
    /// The window [`Limits::breaker_timeouts`] are counted in.
    pub breaker_window: Duration,
    /// How long an open circuit denies before one check tries the policy again (half-open).
    /// Doubles each time that try times out, or the circuit opens again within
    /// [`Limits::breaker_window`] of closing, up to [`Limits::retry_max`].
    pub breaker_open: Duration,
    /// How long checks are denied after an instantiation failed before the next attempt;
    /// doubles after each failed attempt, up to [`Limits::retry_max`].
    pub instantiate_backoff: Duration,
    /// The longest an open circuit or a failed instantiation waits before the next try.
    pub retry_max: Duration,
}

impl Default for Limits {
    /// 10 ms per check, 50 ms per connect, 5 s for setup, 64 MiB of memory; compilation (in a child) 30 s and
    /// 1 GiB; the circuit opens after 3 timeouts within 10 s, for 1 s at first; a failed
    /// instantiation is retried after 1 s at first; both back off to at most 60 s.
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(10),
            connect_deadline: Duration::from_millis(50),
            setup_deadline: Duration::from_secs(5),
            memory: 64 << 20,
            compile_time: Duration::from_secs(30),
            compile_memory: 1 << 30,
            breaker_timeouts: 3,
            breaker_window: Duration::from_secs(10),
            breaker_open: Duration::from_secs(1),
            instantiate_backoff: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
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

/// Most instances, tables and memories one store may hold. Tables and memories are what a
/// guest could multiply to take host memory (each memory may grow to [`Limits::memory`]), so
/// they stay at what the toolchains need: a Rust `wasm32-wasip2` component, componentize-py's
/// and componentize-js's each define one memory and two tables. Core instances cannot be made
/// at run time: their number is fixed by the component's binary (one per `instantiate` in it),
/// and each costs the host only its context (a few KiB; its memories and tables are counted
/// above). A Rust or JavaScript (componentize-js 0.23.0) policy instantiates 3 core modules,
/// a Python one (componentize-py 0.25.1: libc, libpython, its runtime, one trapping stub per
/// WASI interface) 38; 64 leaves room for a Python policy's native extension modules.
const INSTANCES: usize = 64;
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
