//! Leaving a failing policy alone for a while: the circuit breaker that stops calling a policy
//! that keeps timing out, and the backoff between failed instantiations.
//!
//! Both are bookkeeping over instants the caller passes in (so they are tested without
//! waiting); [`crate::Policy`] asks them before calling into the policy, denies while they say
//! wait, and turns their transitions into events. The figures are [`Limits`]'.
//!
//! The breaker is closed (calls go to the policy) until [`Limits::breaker_timeouts`] calls time
//! out within [`Limits::breaker_window`]; then it is open: calls are denied at once for
//! [`Limits::breaker_open`]. The first call after that is a trial (half-open): if it times out,
//! the circuit opens again for twice as long (up to [`Limits::retry_max`]); if it ends within
//! its deadline, with an answer or another fault, the circuit closes. A circuit that opens again
//! within a window of closing also doubles its open period, so a policy that times out only on
//! some calls cannot reset its penalty with one good answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::limits::Limits;

/// What changed in a breaker, to report as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Closed → open: `timeouts` timeouts within `window`; denied for `open_for`.
    Opened {
        /// Timeouts counted.
        timeouts: usize,
        /// The window they were counted in.
        window: Duration,
        /// How long calls are denied.
        open_for: Duration,
    },
    /// The trial call timed out: open again for `open_for`.
    Reopened {
        /// How long calls are denied.
        open_for: Duration,
    },
    /// The trial call ended within its deadline.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// The open period is over; the next call is the trial.
    HalfOpen,
}

/// The circuit breaker of one tenant's policy on one thread.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: usize,
    window: Duration,
    base: Duration,
    max: Duration,
    state: State,
    /// When the latest timeouts happened while closed, oldest first; at most `threshold`.
    timeouts: VecDeque<Instant>,
    /// The open period of the latest opening.
    open_for: Duration,
    /// When the circuit last closed after being open.
    closed_at: Option<Instant>,
}

impl Breaker {
    pub(crate) fn new(limits: &Limits) -> Breaker {
        Breaker {
            threshold: limits.breaker_timeouts as usize,
            window: limits.breaker_window,
            base: limits.breaker_open,
            max: limits.retry_max.max(limits.breaker_open),
            state: State::Closed,
            timeouts: VecDeque::new(),
            open_for: limits.breaker_open,
            closed_at: None,
        }
    }

    /// Whether a call may go to the policy: `Err(left)` while the circuit is open. Reads the
    /// clock only when the circuit is not closed, so the common case costs a comparison.
    pub(crate) fn admit(&mut self, now: impl FnOnce() -> Instant) -> Result<(), Duration> {
        let State::Open { until } = self.state else { return Ok(()) };
        let now = now();
        if now < until {
            return Err(until - now);
        }
        self.state = State::HalfOpen;
        Ok(())
    }

    /// A call ended within its deadline (answered, or failed otherwise than by a timeout).
    pub(crate) fn answered(&mut self, now: impl FnOnce() -> Instant) -> Option<Transition> {
        if self.state != State::HalfOpen {
            return None;
        }
        self.state = State::Closed;
        self.closed_at = Some(now());
        Some(Transition::Closed)
    }

    /// A call timed out at `now`.
    pub(crate) fn timed_out(&mut self, now: Instant) -> Option<Transition> {
        if self.threshold == 0 {
            return None;
        }
        match self.state {
            State::HalfOpen | State::Open { .. } => {
                self.open_for = self.doubled();
                self.state = State::Open { until: now + self.open_for };
                Some(Transition::Reopened { open_for: self.open_for })
            }
            State::Closed => {
                while self.timeouts.front().is_some_and(|t| now.duration_since(*t) > self.window)
                    || self.timeouts.len() >= self.threshold
                {
                    self.timeouts.pop_front();
                }
                self.timeouts.push_back(now);
                if self.timeouts.len() < self.threshold {
                    return None;
                }
                let timeouts = std::mem::take(&mut self.timeouts).len();
                let flapping = self.closed_at.is_some_and(|c| now.duration_since(c) <= self.window);
                self.open_for = if flapping { self.doubled() } else { self.base };
                self.state = State::Open { until: now + self.open_for };
                Some(Transition::Opened { timeouts, window: self.window, open_for: self.open_for })
            }
        }
    }

    /// Forgets everything (a new policy replaced the one that timed out); says whether the
    /// circuit was open or half-open.
    pub(crate) fn reset(&mut self) -> bool {
        let was_open = self.state != State::Closed;
        self.state = State::Closed;
        self.timeouts.clear();
        self.open_for = self.base;
        self.closed_at = None;
        was_open
    }

    fn doubled(&self) -> Duration {
        self.open_for.saturating_mul(2).min(self.max)
    }
}

/// The wait between failed instantiations of one tenant's policy on one thread.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    /// Failed attempts in a row.
    failures: u32,
    /// No attempt before this instant.
    until: Option<Instant>,
    /// The wait after the latest failure.
    last: Duration,
}

impl Backoff {
    pub(crate) fn new(limits: &Limits) -> Backoff {
        Backoff {
            base: limits.instantiate_backoff,
            max: limits.retry_max.max(limits.instantiate_backoff),
            failures: 0,
            until: None,
            last: Duration::ZERO,
        }
    }

    /// How long until the next attempt may be made, if one may not be made at `now`.
    pub(crate) fn wait(&self, now: Instant) -> Option<Duration> {
        self.until.filter(|u| now < *u).map(|u| u - now)
    }

    /// An attempt failed at `now`: returns how long to wait before the next one.
    pub(crate) fn failed(&mut self, now: Instant) -> Duration {
        let wait = self.base.saturating_mul(1u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(now + wait);
        self.last = wait;
        wait
    }

    /// The wait that followed the latest failure.
    pub(crate) fn last_wait(&self) -> Duration {
        self.last
    }

    /// An attempt succeeded: returns the failed attempts before it.
    pub(crate) fn succeeded(&mut self) -> u32 {
        self.until = None;
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            breaker_timeouts: 3,
            breaker_window: Duration::from_secs(10),
            breaker_open: Duration::from_secs(1),
            instantiate_backoff: Duration::from_secs(1),
            retry_max: Duration::from_secs(5),
            ..Limits::default()
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn opens_after_the_threshold_within_the_window_and_denies_until_the_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&limits());
        assert_eq!(b.timed_out(t0), None);
        assert_eq!(b.timed_out(t0 + s(11)), None, "the first timeout left the window");
        assert_eq!(b.timed_out(t0 + s(12)), None);
        let opened = b.timed_out(t0 + s(13));
        assert_eq!(opened, Some(Transition::Opened { timeouts: 3, window: s(10), open_for: s(1) }));
        assert_eq!(b.admit(|| t0 + s(13) + Duration::from_millis(400)), Err(Duration::from_millis(600)));
        assert_eq!(b.admit(|| t0 + s(14)), Ok(()), "the trial");
        assert_eq!(b.answered(|| t0 + s(14)), Some(Transition::Closed));
        assert_eq!(b.admit(|| unreachable!("a closed circuit reads no clock")), Ok(()));
        assert_eq!(b.answered(|| unreachable!("nor does an answer while closed")), None);
    }

    #[test]
    fn a_trial_that_times_out_doubles_the_open_period_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&limits());
        for _ in 0..3 {
            b.timed_out(t0);
        }
        let mut at = t0;
        for expected in [2, 4, 5, 5] {
            at += s(expected);
            assert_eq!(b.admit(|| at), Ok(()));
            assert_eq!(b.timed_out(at), Some(Transition::Reopened { open_for: s(expected) }));
        }
    }

    #[test]
    fn opening_again_soon_after_closing_doubles_the_period() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&limits());
        for _ in 0..3 {
            b.timed_out(t0);
        }
        assert_eq!(b.admit(|| t0 + s(1)), Ok(()));
        assert_eq!(b.answered(|| t0 + s(1)), Some(Transition::Closed));
        for _ in 0..2 {
            assert_eq!(b.timed_out(t0 + s(2)), None);
        }
        assert_eq!(
            b.timed_out(t0 + s(2)),
            Some(Transition::Opened { timeouts: 3, window: s(10), open_for: s(2) }),
            "within a window of closing"
        );
        assert!(b.reset(), "it was open");
        for _ in 0..3 {
            b.timed_out(t0 + s(3));
        }
        assert_eq!(b.admit(|| t0 + s(3) + Duration::from_millis(999)), Err(Duration::from_millis(1)), "reset");
    }

    #[test]
    fn a_zero_threshold_never_opens() {
        let mut b = Breaker::new(&Limits { breaker_timeouts: 0, ..limits() });
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(b.timed_out(t0), None);
        }
        assert_eq!(b.admit(|| t0), Ok(()));
    }

    #[test]
    fn instantiation_backs_off_doubling_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = Backoff::new(&limits());
        assert_eq!(b.wait(t0), None, "the first attempt is at once");
        assert_eq!(b.failed(t0), s(1));
        assert_eq!(b.last_wait(), s(1));
        assert_eq!(b.wait(t0 + Duration::from_millis(250)), Some(Duration::from_millis(750)));
        assert_eq!(b.wait(t0 + s(1)), None);
        assert_eq!(b.failed(t0 + s(1)), s(2));
        assert_eq!(b.failed(t0 + s(3)), s(4));
        assert_eq!(b.failed(t0 + s(7)), s(5));
        assert_eq!(b.succeeded(), 4);
        assert_eq!(b.wait(t0 + s(7)), None);
        assert_eq!(b.failed(t0 + s(8)), s(1), "a success starts over");
    }
}
