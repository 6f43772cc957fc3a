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
//!
//! The epoch advances by one of two clocks ([`Ticking`]): a ticker thread, or, for a host whose
//! process must run no thread of ours (Mosquitto's broker, where any second thread makes glibc
//! take its multi-threaded paths at every `malloc` and system call), a POSIX timer whose
//! signal is delivered to the thread that created it.

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
    calls: Calls,
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

/// Calls into wasm started and ended: a clock is idle when they are equal and `started` has
/// not moved since it last looked.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    started: AtomicU64,
    ended: AtomicU64,
}

impl Calls {
    const fn new() -> Calls {
        Calls { started: AtomicU64::new(0), ended: AtomicU64::new(0) }
    }
}

/// How an engine's epoch advances while policies run (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ticking {
    /// A ticker thread of the engine's own: for any host.
    #[default]
    Thread,
    /// A POSIX timer's signal (the highest real-time signal no one handles yet), delivered to
    /// the thread that created the first such engine, which must live as long as the process:
    /// for a host that must run no thread of ours. Where no signal or timer can be had, or the
    /// engine is created on another thread, or that thread blocks the signal, the engine ticks
    /// with a thread instead ([`crate::Engine::ticking`] tells which it got).
    Signal,
}

/// The clock of one engine.
pub(crate) enum Clock {
    Thread(Arc<Ticker>),
    /// Held for its `Drop`, which unregisters the engine.
    Signal(#[expect(dead_code, reason = "held for its Drop")] signal::Registration),
}

impl Clock {
    /// A clock for `engine` of the kind asked for, or a thread where a signal cannot be had.
    pub(crate) fn start(engine: &wasmtime::Engine, ticking: Ticking) -> Clock {
        if ticking == Ticking::Signal
            && let Some(r) = signal::register(engine)
        {
            return Clock::Signal(r);
        }
        Clock::Thread(Ticker::spawn(engine))
    }

    /// Marks a call into wasm as running until the guard is dropped.
    pub(crate) fn running(&self) -> Running<'_> {
        match self {
            Clock::Thread(t) => t.running(),
            Clock::Signal(_) => signal::running(),
        }
    }

    /// The kind of clock it is.
    pub(crate) fn ticking(&self) -> Ticking {
        match self {
            Clock::Thread(_) => Ticking::Thread,
            Clock::Signal(_) => Ticking::Signal,
        }
    }
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
                let mut seen = t.calls.started.load(Ordering::SeqCst);
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                    let started = t.calls.started.load(Ordering::SeqCst);
                    if started != seen || t.calls.ended.load(Ordering::SeqCst) != started {
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
                    if t.calls.started.load(Ordering::SeqCst) == seen {
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
        self.calls.started.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Running(&self.calls)
    }

    /// Whether the ticker is parked now.
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

/// A call into wasm in progress (see [`Clock::running`]).
pub(crate) struct Running<'a>(&'a Calls);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// The timer-signal clock: one timer for the process, advancing the epoch of every engine
/// registered with it, parked (not re-armed) once no call has started or run for
/// [`IDLE_TICKS`], as the ticker thread parks.
mod signal {
    use std::ptr::null_mut;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::SeqCst};

    use super::{Calls, IDLE_TICKS, Running, TICK};

    /// Engines one process can tick by signal; more tick with threads.
    const SLOTS: usize = 16;

    struct Slot {
        engine: AtomicPtr<wasmtime::Engine>,
        /// Handlers using `engine` now, so that unregistering from another thread waits for
        /// them before freeing the engine.
        busy: AtomicU32,
    }

    static ENGINES: [Slot; SLOTS] =
        [const { Slot { engine: AtomicPtr::new(null_mut()), busy: AtomicU32::new(0) } }; SLOTS];
    static CALLS: Calls = Calls::new();
    /// Not re-armed by the handler: the next call arms the timer.
    static PARKED: AtomicBool = AtomicBool::new(true);
    /// The handler's own: `started` when it last looked, and the idle ticks since.
    static SEEN: AtomicU64 = AtomicU64::new(0);
    static IDLE: AtomicU32 = AtomicU32::new(0);
    static TIMER: OnceLock<Option<Timer>> = OnceLock::new();

    struct Timer {
        id: usize,
        signo: libc::c_int,
        /// The thread the signal goes to: only engines created on it are ticked by it (a
        /// timer aimed at a thread that has ended ticks no more).
        thread: libc::pid_t,
    }

    /// An engine ticked by the signal, until dropped.
    pub(crate) struct Registration(usize);

    impl Drop for Registration {
        fn drop(&mut self) {
            let slot = &ENGINES[self.0];
            let engine = slot.engine.swap(null_mut(), SeqCst);
            while slot.busy.load(SeqCst) != 0 {
                std::hint::spin_loop();
            }
            // SAFETY: put there by `register` with `Box::into_raw`; no handler uses it any more.
            drop(unsafe { Box::from_raw(engine) });
        }
    }

    /// Ticks `engine` by the process's timer signal (creating the timer and its handler on
    /// the calling thread the first time); `None` if no signal, timer or slot is free.
    pub(crate) fn register(engine: &wasmtime::Engine) -> Option<Registration> {
        let timer = TIMER.get_or_init(Timer::create).as_ref()?;
        // SAFETY: plain system calls; the mask is read into a set we own.
        let (thread, blocked) = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, null_mut(), &mut mask);
            (libc::gettid(), libc::sigismember(&mask, timer.signo) == 1)
        };
        if thread != timer.thread || blocked {
            return None;
        }
        let boxed = Box::into_raw(Box::new(engine.clone()));
        for (i, slot) in ENGINES.iter().enumerate() {
            if slot.engine.compare_exchange(null_mut(), boxed, SeqCst, SeqCst).is_ok() {
                return Some(Registration(i));
            }
        }
        // SAFETY: `boxed` was not stored anywhere.
        drop(unsafe { Box::from_raw(boxed) });
        None
    }

    /// A call starts: the timer is armed if it was parked. Either this sees `PARKED` set, or
    /// the handler that set it sees the new `started` (all SeqCst), so a started call is never
    /// left without ticks; both arming is harmless.
    pub(crate) fn running() -> Running<'static> {
        CALLS.started.fetch_add(1, SeqCst);
        if PARKED.load(SeqCst) {
            PARKED.store(false, SeqCst);
            arm();
        }
        Running(&CALLS)
    }

    fn arm() {
        let Some(Some(timer)) = TIMER.get() else { return };
        let value = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: 0, tv_nsec: TICK.as_nanos() as libc::c_long },
        };
        // SAFETY: our timer, a valid itimerspec; timer_settime is async-signal-safe.
        unsafe { libc::timer_settime(timer.id as libc::timer_t, 0, &value, null_mut()) };
    }

    /// The signal handler: only atomics and `timer_settime`, which are async-signal-safe.
    /// The same signal sent by anything but our timer (`kill`) is ignored.
    extern "C" fn on_signal(_signo: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
        if info.is_null() || unsafe { (*info).si_code } != libc::SI_TIMER {
            return;
        }
        // SAFETY: the thread's errno, saved and restored around a system call.
        let errno = unsafe { *libc::__errno_location() };
        for slot in &ENGINES {
            slot.busy.fetch_add(1, SeqCst);
            let engine = slot.engine.load(SeqCst);
            if !engine.is_null() {
                // SAFETY: not freed while `busy` is non-zero (see `Registration::drop`).
                unsafe { &*engine }.increment_epoch();
            }
            slot.busy.fetch_sub(1, SeqCst);
        }
        let started = CALLS.started.load(SeqCst);
        if started != SEEN.load(SeqCst) || CALLS.ended.load(SeqCst) != started {
            SEEN.store(started, SeqCst);
            IDLE.store(0, SeqCst);
            arm();
        } else if IDLE.fetch_add(1, SeqCst) + 1 < IDLE_TICKS {
            arm();
        } else {
            IDLE.store(0, SeqCst);
            PARKED.store(true, SeqCst);
            if CALLS.started.load(SeqCst) != started {
                PARKED.store(false, SeqCst);
                arm();
            }
        }
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }

    impl Timer {
        /// The handler on the highest real-time signal with none yet, and a one-shot timer
        /// delivering it to this thread.
        fn create() -> Option<Timer> {
            let signo = (0..8).map(|i| libc::SIGRTMAX() - i).find(|&s| s >= libc::SIGRTMIN() && unhandled(s))?;
            // SAFETY: installing a handler for a signal no one handles; the struct is zeroed
            // and then filled as sigaction(2) asks. SA_RESTART: the broker's reads and writes
            // go on where the signal interrupted them.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction =
                    on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signo, &action, null_mut()) != 0 {
                    return None;
                }
                let mut event: libc::sigevent = std::mem::zeroed();
                event.sigev_notify = libc::SIGEV_THREAD_ID;
                event.sigev_signo = signo;
                event.sigev_notify_thread_id = libc::gettid();
                let mut id: libc::timer_t = null_mut();
                if libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id) != 0 {
                    libc::signal(signo, libc::SIG_DFL);
                    return None;
                }
                Some(Timer { id: id as usize, thread: libc::gettid(), signo })
            }
        }
    }

    /// Whether `signo` has its default disposition (no one else's handler).
    fn unhandled(signo: libc::c_int) -> bool {
        // SAFETY: reads the current action into a zeroed struct we own.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signo, null_mut(), &mut old) == 0 && old.sa_sigaction == libc::SIG_DFL
        }
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
