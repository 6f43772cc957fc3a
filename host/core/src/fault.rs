//! Faults: what a failed call into a policy was (timeout, memory, trap), the denial it
//! stands for and its event. The one place that classifies them.

use crate::bindings::HostState;
use crate::error::Error;
use crate::events::{Action, Event, Severity};
use crate::limits::Limits;
use crate::types::{Denial, ReasonCode};

/// The stage a wasmtime error from a call into a policy stands for. `state` is the store's,
/// read after the call: its limiter says whether memory was refused, its own record whether
/// a host call refused a bound, its output ring holds a guest panic's message.
pub(crate) fn classify(limits: &Limits, state: &HostState, e: &wasmtime::Error) -> Error {
    if let Some(bound) = &state.limit_exceeded {
        return Error::LimitExceeded(bound.clone());
    }
    let trap = e.downcast_ref::<wasmtime::Trap>();
    if let Some(wasmtime::Trap::Interrupt) = trap {
        return Error::Timeout(limits.deadline);
    }
    if state.limiter.memory_refused() {
        return Error::OutOfMemory(limits.memory);
    }
    let trap = trap.map(|t| t.to_string()).unwrap_or_else(|| first_line(&format!("{e:#}")));
    match panic_message(&state.stderr_text()) {
        Some(panic) => Error::Trap(format!("{trap}: {panic}")),
        None => Error::Trap(trap),
    }
}

/// The denial answering a fault: 0x83, the error's text, the client stays connected.
pub(crate) fn denial(e: &Error) -> Denial {
    Denial { reason: ReasonCode::ImplementationSpecificError, message: e.to_string(), disconnect: false }
}

/// The event recording a fault and the denial it was answered with.
pub(crate) fn event(tenant: &str, action: Action, e: &Error, denial: &Denial) -> Event {
    let outcome = match e {
        Error::Timeout(_) => "timeout",
        Error::OutOfMemory(_) => "out-of-memory",
        Error::Trap(_) => "trap",
        Error::InvalidDecision(_) => "invalid-decision",
        Error::LimitExceeded(_) => "limit-exceeded",
        _ => "instantiate-failed",
    };
    Event::new(tenant, action, Severity::Error, outcome, denial.message.clone()).with_reason(denial.reason)
}

/// The last panic in a guest's stderr as one line: `panicked at FILE:LINE:COL: MESSAGE`.
/// std prints the location on one line and the message on the next.
fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines.iter().rposition(|l| l.contains("panicked at"))?;
    let location = &lines[at][lines[at].find("panicked at")?..];
    let message = lines.get(at + 1).map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with("note:"));
    Some(match message {
        Some(m) => format!("{} {m}", location.trim()),
        None => location.trim().to_owned(),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_location_and_message_on_one_line() {
        let stderr =
            "\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom for a/b\nnote: run with `RUST_BACKTRACE=1`";
        assert_eq!(panic_message(stderr).as_deref(), Some("panicked at src/lib.rs:10:5: boom for a/b"));
        assert_eq!(panic_message("nothing to see"), None);
    }
}
