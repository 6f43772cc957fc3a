//! How long a call into a policy may run, and why a stalled thread is not charged for it.
//!
//! Deadlines are enforced with wasmtime's epoch interruption: a ticker thread advances the
//! engine's epoch every [`TICK`], and wasm code checks it at loop heads and calls, which costs
//! nothing measurable per call. Epochs are wall-clock time, though, and on a loaded machine the
//! broker's thread may not be scheduled for tens of milliseconds: a check that needs two
//! microseconds would then be stopped, and an allowed message lost, for a stall it did not
//! cause. Reading the thread's CPU clock on every call would fix that but costs a system call
//! (0.3-0.8 µs measured here, against a 1.4 µs uncached check), so the deadline is split:
//! the first half is wall-clock time, read by no one; only when it has passed (rare: the call
//! is slow or its thread stalled) is the thread's CPU clock read, and the call may use the second
//! half as CPU time from then on. An uncontended loop is stopped at the full deadline, as with
//! a pure wall-clock bound; a call whose thread is not running is not charged in the second half.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::UpdateDeadline;

/// Granularity of deadlines: the epoch ticker's period.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Ticks without any call started or running after which the ticker parks.
const IDLE_TICKS: u32 = 20;

/// How long a parked ticker sleeps before it looks whether its engine is gone (a dropped
/// engine's thread lingers that long, parked).
const PARKED_FOR: Duration = Duration::from_secs(10);

/// The engine's epoch ticker. Epochs only matter while wasm runs, and in a broker most checks
/// are answered from the decision cache without entering wasm, so the ticker parks once no call
/// has started or run for [`IDLE_TICKS`]; a call that finds it parked wakes it. A ticker that
/// woke the broker's core 1,000 times a second for nothing cost the broker more CPU per message
/// than the plugin's own work (BENCHMARKS.md, "At a fixed offered rate").
#[derive(Debug, Default)]
pub(crate) struct Ticker {
    started: AtomicU64,
    ended: AtomicU64,
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Ticker {
    /// Starts the ticker thread of `engine`; it ends by itself when the engine is dropped
    /// (within [`PARKED_FOR`] if it was parked).
    pub(crate) fn spawn(engine: &wasmtime::Engine) -> Arc<Ticker> {
        let ticker = Arc::new(Ticker::default());
        let weak = engine.weak();
        let t = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("mqtt-policy-epoch".into())
            .spawn(move || {
                let mut idle = 0;
                let mut seen = t.started.load(Ordering::SeqCst);
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                    let started = t.started.load(Ordering::SeqCst);
                    if started != seen || t.ended.load(Ordering::SeqCst) != started {
                        (seen, idle) = (started, 0);
                        continue;
                    }
                    idle += 1;
                    if idle < IDLE_TICKS {
                        continue;
                    }
                    // Park unless a call started meanwhile: a call stores `started` before it
                    // reads `parked`, the ticker stores `parked` before it reads `started`
                    // (all SeqCst), so at least one of them sees the other.
                    t.parked.store(true, Ordering::SeqCst);
                    if t.started.load(Ordering::SeqCst) == seen {
                        std::thread::park_timeout(PARKED_FOR);
                    }
                    t.parked.store(false, Ordering::SeqCst);
                    idle = 0;
                }
            })
            .expect("spawning the epoch thread");
        let _ = ticker.thread.set(handle.thread().clone());
        ticker
    }

    /// Marks a call into wasm as running until the guard is dropped, waking the ticker first if
    /// it is parked.
    pub(crate) fn running(&self) -> Running<'_> {
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Running(self)
    }

    /// Whether the ticker is parked now.
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

/// A call into wasm in progress (see [`Ticker::running`]).
pub(crate) struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// Epoch ticks covering `d`, at least one.
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(TICK.as_nanos()) as u64).max(1)
}

/// The deadline of the call a store is running (kept in its host state).
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    /// The CPU time the call may use once its wall-clock half has passed.
    cpu_budget: Duration,
    /// The thread's CPU clock when the wall-clock half passed; `None` before.
    cpu_from: Option<Duration>,
}

impl Deadline {
    /// Starts a call bounded by `limit`; returns the ticks of its wall-clock half, for
    /// `Store::set_epoch_deadline`.
    pub(crate) fn start(&mut self, limit: Duration) -> u64 {
        let wall = limit / 2;
        self.cpu_budget = limit - wall;
        self.cpu_from = None;
        ticks(wall)
    }

    /// What wasmtime does when the current epoch deadline has passed: the first time, the
    /// CPU-time half begins; after that, the call is interrupted once it has used that half
    /// (a `Trap::Interrupt`, classified as a timeout), or given the ticks it has left.
    pub(crate) fn passed(&mut self) -> UpdateDeadline {
        let now = thread_cpu_time();
        let from = *self.cpu_from.get_or_insert(now);
        let used = now.saturating_sub(from);
        if used >= self.cpu_budget {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(ticks(self.cpu_budget - used))
        }
    }
}

/// CPU time the calling thread has used. A failing clock (it cannot on Linux) reads as
/// `Duration::MAX`, which ends the call at once: never an unbounded one.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the C library knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::MAX;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let end = thread_cpu_time() + d;
        while thread_cpu_time() < end {
            std::hint::black_box(());
        }
    }

    #[test]
    fn the_wall_clock_half_is_ticks_and_the_cpu_half_begins_when_it_passes() {
        let mut d = Deadline::default();
        assert_eq!(d.start(Duration::from_millis(10)), 5);
        // Passed after a stall: nothing used yet, the whole CPU half is left.
        assert!(matches!(d.passed(), UpdateDeadline::Continue(5)));
        spin(Duration::from_millis(6));
        assert!(matches!(d.passed(), UpdateDeadline::Interrupt));
    }

    #[test]
    fn sleeping_is_not_charged() {
        let mut d = Deadline::default();
        d.start(Duration::from_millis(4));
        d.passed();
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(d.passed(), UpdateDeadline::Continue(_)), "20 ms asleep used no CPU time");
    }

    #[test]
    fn a_new_call_starts_afresh() {
        let mut d = Deadline::default();
        d.start(Duration::from_millis(2));
        d.passed();
        spin(Duration::from_millis(2));
        assert!(matches!(d.passed(), UpdateDeadline::Interrupt));
        d.start(Duration::from_millis(2));
        assert!(matches!(d.passed(), UpdateDeadline::Continue(1)));
    }

    #[test]
    fn the_ticker_parks_when_idle_and_a_call_wakes_it() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::spawn(&engine);
        // Well under PARKED_FOR: a call that did not wake the ticker would be seen here.
        let wait = |what: &str, parked: bool| {
            let until = std::time::Instant::now() + PARKED_FOR / 2;
            while ticker.is_parked() != parked {
                assert!(std::time::Instant::now() < until, "the ticker never {what}");
                std::thread::sleep(TICK);
            }
        };
        wait("parked", true);
        {
            let _call = ticker.running();
            wait("woke", false);
            // A call that runs long (a loop) keeps it ticking.
            std::thread::sleep(TICK * IDLE_TICKS * 5);
            assert!(!ticker.is_parked(), "parked under a running call");
        }
        wait("parked again", true);
    }

    #[test]
    fn one_millisecond_is_still_bounded() {
        let mut d = Deadline::default();
        assert_eq!(d.start(Duration::from_millis(1)), 1);
        assert_eq!(d.cpu_budget, Duration::from_micros(500));
    }
}
