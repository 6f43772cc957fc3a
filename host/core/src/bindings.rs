//! Generated bindings and the store state behind them. Private: the public API speaks
//! the domain types of [`crate::types`].

use std::sync::Arc;

use wasmtime::component::{HasData, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::deadline::Deadline;

use crate::events::{Action, Event, Severity, now_ms};
use crate::limits::{Limits, StoreLimiter};
use crate::output::OutputRing;
use crate::tenant::{LogAdmit, Tenant};

/// The WIT package and version this host speaks.
pub const WORLD: &str = "mqtt-policy:policy@0.2.0";

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "policy",
    // Export parameters borrow (`&str` topics): no string copies per check.
    ownership: Borrowing { duplicate_if_necessary: true },
    // A counter past a bound of `Limits` traps the call (the WIT's `s64` has no error case,
    // and answering any number would let a policy skip the rate limit built on it).
    imports: { "mqtt-policy:policy/host.counter-add": trappable },
});

pub(crate) use mqtt_policy::policy::types as wit;

/// Everything a policy's store holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: StoreLimiter,
    pub(crate) tenant: Tenant,
    pub(crate) policy_digest: Arc<str>,
    /// The guest's stdout and stderr: their newest bytes (e.g. a panic message).
    pub(crate) output: OutputRing,
    /// Set when a host call refused to go past a bound of [`Limits`] during the current
    /// call (and trapped it): what the bound was.
    pub(crate) limit_exceeded: Option<String>,
    logs_this_call: u32,
    /// Set by `cache-decision` during the current call: the payload bound it allows caching for.
    pub(crate) cache_grant: Option<u32>,
    /// Whether the current call is `authenticate` (the only one `monitor-*` counts in).
    pub(crate) authenticating: bool,
    /// Set by `monitor-device` / `monitor-application` during the current `authenticate`.
    pub(crate) monitor: Option<crate::types::MonitorSubject>,
    /// The current call's deadline.
    pub(crate) deadline: Deadline,
}

impl HostState {
    pub(crate) fn new(tenant: Tenant, policy_digest: Arc<str>, memory_limit: usize) -> HostState {
        let output = OutputRing::new(Limits::OUTPUT_RING);
        // No preopens, no environment, no arguments, empty stdin, stdout and stderr into a
        // ring that never fills: std's plumbing links, but reaches nothing.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new().stdout(output.clone()).stderr(output.clone()).build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: StoreLimiter::new(memory_limit),
            tenant,
            policy_digest,
            output,
            limit_exceeded: None,
            logs_this_call: 0,
            cache_grant: None,
            authenticating: false,
            monitor: None,
            deadline: Deadline::default(),
        }
    }

    pub(crate) fn begin_call(&mut self) {
        self.logs_this_call = 0;
        self.cache_grant = None;
        self.monitor = None;
        self.authenticating = false;
        self.limit_exceeded = None;
        self.limiter.reset();
    }

    /// The newest of what the policy wrote to stdout and stderr (e.g. its panic message), trimmed.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.output.contents()).trim().to_owned()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit::Host for HostState {}

impl mqtt_policy::policy::host::Host for HostState {
    fn log(&mut self, level: mqtt_policy::policy::host::Level, mut message: String) {
        use mqtt_policy::policy::host::Level;
        self.logs_this_call += 1;
        if self.logs_this_call > Limits::MAX_LOGS_PER_CALL {
            self.tenant.log_dropped();
            return;
        }
        let LogAdmit::Write { suppressed } = self.tenant.admit_log(now_ms()) else { return };
        if suppressed > 0 {
            let mut summary = Event::new(
                self.tenant.name(),
                Action::Log,
                Severity::Warn,
                "suppressed",
                format!(
                    "{suppressed} policy log lines suppressed: more than {} in one call or {} a second",
                    Limits::MAX_LOGS_PER_CALL,
                    Limits::MAX_LOGS_PER_SECOND
                ),
            );
            summary.policy = Some(self.policy_digest.to_string());
            self.tenant.events().emit(summary);
        }
        if message.len() > Limits::MAX_LOG_LINE {
            let mut cut = Limits::MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let severity = match level {
            Level::Debug => Severity::Debug,
            Level::Info => Severity::Info,
            Level::Warn => Severity::Warn,
            Level::Error => Severity::Error,
        };
        let mut event = Event::new(self.tenant.name(), Action::Log, severity, "log", message);
        event.policy = Some(self.policy_digest.to_string());
        self.tenant.events().emit(event);
    }

    fn now_millis(&mut self) -> u64 {
        now_ms()
    }

    fn counter_add(&mut self, name: String, delta: i64, window_ms: u64) -> wasmtime::Result<i64> {
        self.tenant.counter_add(&name, delta, window_ms, now_ms()).map_err(|refused| {
            let error = wasmtime::format_err!("{refused}");
            self.limit_exceeded = Some(refused.0);
            error
        })
    }

    fn connection_count(&mut self) -> u32 {
        self.tenant.connection_count()
    }

    fn cache_decision(&mut self, max_payload_size: u32) {
        self.cache_grant = Some(max_payload_size);
    }

    fn monitor_device(&mut self, device_type: String, device_id: String) {
        if self.authenticating {
            self.monitor = crate::types::MonitorSubject::device(&device_type, &device_id);
        }
    }

    fn monitor_application(&mut self, app_id: String) {
        if self.authenticating {
            self.monitor = crate::types::MonitorSubject::application(&app_id);
        }
    }
}

struct HasTable;

impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// The linker every policy is instantiated with: the policy world's imports, plus the
/// inert part of WASI that Rust's standard library links against (I/O streams and CLI
/// plumbing). Filesystem, sockets, clocks and random are deliberately absent, so a
/// component importing them is refused at load.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::cli::WasiCliView as _;
    use wasmtime_wasi::p2::bindings::{cli, sync::io};

    let mut l = Linker::new(engine);
    Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s)?;
    io::error::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    io::poll::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    io::streams::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    Ok(l)
}
