//! The wasmtime engine shared by every policy: configuration, limits, the epoch
//! ticker that enforces deadlines, the linker, and compilation with its cache (in this
//! process, or in a bounded child process, see [`crate::compiler`]).
//!
//! The engine knows components, not policies: loading a policy (settings, CAs, validation)
//! is [`crate::module`]'s, which also provides the `Engine::load_*` shorthands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};

use crate::bindings::{self, HostState, WORLD};
use crate::compiler::{self, Failure};
use crate::deadline::{Clock, Running, Ticking};
use crate::error::{Error, Result};
use crate::limits::Limits;

/// One wasmtime engine, its linker and compile cache. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasm: wasmtime::Engine,
    linker: Linker<HostState>,
    limits: Limits,
    /// Compiled components by SHA-256 of their bytes: a tenant reloading the same file,
    /// or many tenants running one policy, compile it once.
    cache: Mutex<HashMap<[u8; 32], Component>>,
    /// The `mqtt-policy-compile` binary to compile in, if compiling is bounded.
    compiler: Option<PathBuf>,
    /// Advances the epoch while calls run (see [`crate::deadline`]).
    clock: Clock,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("limits", &self.inner.limits).finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an engine enforcing `limits`, and starts its deadline ticker thread
    /// (which ends by itself when the last clone of the engine is dropped).
    ///
    /// Policies are compiled in this process, unbounded: for tools and tests. A broker should
    /// use [`Engine::with_compiler`].
    pub fn new(limits: Limits) -> Result<Engine> {
        Engine::build(limits, None, Ticking::Thread)
    }

    /// The `main` of the `mqtt-policy-compile` binary: the child [`Engine::with_compiler`]
    /// compiles each policy in, with this engine's wasmtime configuration (see
    /// [`crate::compiler`] for its protocol). Not meant to be called otherwise.
    pub fn compiler_child_main() -> std::process::ExitCode {
        compiler::child_main(config(), describe_compile_error)
    }

    /// Like [`Engine::new`], compiling every policy in a child process, `compiler` (the
    /// `mqtt-policy-compile` binary of this crate's build), bounded by
    /// [`Limits::compile_time`] and [`Limits::compile_memory`]; see [`crate::compiler`].
    /// Checks at once that `compiler` runs and that this engine loads what it writes.
    pub fn with_compiler(limits: Limits, compiler: &Path) -> Result<Engine> {
        Engine::configured(limits, Some(compiler), Ticking::Thread)
    }

    /// An engine compiling in `compiler` if given (as [`Engine::with_compiler`], else as
    /// [`Engine::new`]), whose deadlines tick by `ticking`. With [`Ticking::Signal`] and a
    /// compiler the engine runs no thread at all: policies load with
    /// [`crate::PolicyModule::start_loading_for_tenant`], polled from the host's event loop.
    pub fn configured(limits: Limits, compiler: Option<&Path>, ticking: Ticking) -> Result<Engine> {
        let engine = Engine::build(limits, compiler.map(Path::to_owned), ticking)?;
        let Some(compiler) = compiler else { return Ok(engine) };
        // The smallest component (the preamble alone): proves the child runs, speaks the
        // protocol and is built from the same wasmtime with the same configuration.
        // Its own time bound: a busy machine may start processes slowly, and this is no policy.
        let empty = b"\0asm\x0d\x00\x01\x00";
        let check = Limits { compile_time: limits.compile_time.max(Duration::from_secs(10)), ..limits };
        let source_name = "(compiler self-check)";
        compiler::compile_in_child(compiler, &check, empty)
            .map_err(|f| engine.failure(source_name, &check, f))
            .and_then(|artifact| engine.deserialize(source_name, &artifact))
            .map_err(|e| {
                Error::Engine(format!("the policy compiler {} does not work for this engine: {e}", compiler.display()))
            })?;
        Ok(engine)
    }

    fn build(limits: Limits, compiler: Option<PathBuf>, ticking: Ticking) -> Result<Engine> {
        let wasm = wasmtime::Engine::new(&config()).map_err(|e| Error::Engine(e.to_string()))?;
        let linker = bindings::linker(&wasm).map_err(|e| Error::Engine(e.to_string()))?;
        let clock = Clock::start(&wasm, ticking);
        let cache = Mutex::new(HashMap::new());
        Ok(Engine { inner: Arc::new(EngineInner { wasm, linker, limits, cache, compiler, clock }) })
    }

    /// How this engine's deadlines tick: [`Ticking::Signal`] may have fallen back to a thread.
    pub fn ticking(&self) -> Ticking {
        self.inner.clock.ticking()
    }

    /// The child process policies are compiled in, if any.
    pub fn compiler(&self) -> Option<&Path> {
        self.inner.compiler.as_deref()
    }

    /// The limits every policy of this engine runs under.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    pub(crate) fn wasm(&self) -> &wasmtime::Engine {
        &self.inner.wasm
    }

    /// To be held over every call into wasm, so that its deadline ticks.
    pub(crate) fn running(&self) -> Running<'_> {
        self.inner.clock.running()
    }

    /// Compiles `bytes`, or reuses the component compiled under the same `key` (the digest of
    /// the code, see [`crate::embedded`]), then checks that its imports are the policy world's.
    /// Waits for a compiling child; see [`Engine::start_compile`] for a caller that must not.
    pub(crate) fn compile(&self, source_name: &str, bytes: &[u8], key: [u8; 32]) -> Result<Component> {
        let mut job = self.start_compile(source_name, bytes, key);
        compiler::wait_for(|| self.poll_compile(&mut job))
    }

    /// Starts compiling `bytes` like [`Engine::compile`], without waiting for a compiling
    /// child: [`Engine::poll_compile`] tells when it is done. A cached component, or one
    /// compiled in this process (no compiler configured), is done at once.
    pub(crate) fn start_compile(&self, source_name: &str, bytes: &[u8], key: [u8; 32]) -> CompileJob {
        let source_name = source_name.to_owned();
        let cached = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let state = match (cached, &self.inner.compiler) {
            (Some(c), _) => JobState::Done(Ok(c)),
            (None, None) => JobState::Done(
                Component::new(self.wasm(), bytes)
                    .map_err(|e| compile_error(&source_name, describe_compile_error(bytes, &e))),
            ),
            (None, Some(compiler)) => match compiler::Compiling::start(compiler, &self.inner.limits, bytes) {
                Ok(child) => JobState::Child(child),
                Err(f) => JobState::Done(Err(self.failure(&source_name, &self.inner.limits, f))),
            },
        };
        CompileJob { source_name, key, state }
    }

    /// The component once `job` is done (each job answers once), `None` while its child runs.
    pub(crate) fn poll_compile(&self, job: &mut CompileJob) -> Option<Result<Component>> {
        let done = match std::mem::replace(&mut job.state, JobState::Taken) {
            JobState::Done(result) => result,
            JobState::Taken => return None,
            JobState::Child(mut child) => match child.poll() {
                None => {
                    job.state = JobState::Child(child);
                    return None;
                }
                Some(Ok(artifact)) => self.deserialize(&job.source_name, &artifact),
                Some(Err(f)) => Err(self.failure(&job.source_name, &self.inner.limits, f)),
            },
        };
        let component = done.inspect(|c| {
            self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(job.key, c.clone());
        });
        Some(component.and_then(|c| check_imports(self.wasm(), &c, &job.source_name).map(|()| c)))
    }

    /// The error of a child's failure to compile.
    fn failure(&self, source_name: &str, limits: &Limits, f: Failure) -> Error {
        let bound = |message: String| Error::CompileLimit { source_name: source_name.to_owned(), message };
        match f {
            Failure::Time => {
                bound(format!("compiling took longer than {} ms (compile_time)", limits.compile_time.as_millis()))
            }
            Failure::Memory => bound(format!(
                "compiling needed more than {} MiB of memory (compile_memory)",
                limits.compile_memory >> 20
            )),
            Failure::Refused(message) => compile_error(source_name, message),
            Failure::Broken(message) => Error::Compiler { source_name: source_name.to_owned(), message },
        }
    }

    fn deserialize(&self, source_name: &str, artifact: &[u8]) -> Result<Component> {
        // SAFETY: `artifact` is what `Engine::precompile_component` wrote in the child, read
        // unmodified from the memory file the child had as its stdout, which no other process
        // has. The child is the binary the operator configured, as trusted as this library
        // (whoever can point the broker at another binary controls the broker). wasmtime
        // checks that the artifact comes from its own version and this engine's
        // configuration, and refuses it otherwise.
        unsafe { Component::deserialize(self.wasm(), artifact) }
            .map_err(|e| compile_error(source_name, format!("the compiler's artifact cannot be loaded: {e:#}")))
    }

    /// Links a compiled component against the host: ready to instantiate cheaply, many times.
    pub(crate) fn link(&self, source_name: &str, component: &Component) -> Result<bindings::PolicyPre<HostState>> {
        let link_error =
            |e: wasmtime::Error| Error::Link { source_name: source_name.to_owned(), message: format!("{e:#}") };
        let pre = self.inner.linker.instantiate_pre(component).map_err(link_error)?;
        bindings::PolicyPre::new(pre).map_err(link_error)
    }
}

/// A compilation started by [`Engine::start_compile`].
pub(crate) struct CompileJob {
    source_name: String,
    key: [u8; 32],
    state: JobState,
}

enum JobState {
    Done(Result<Component>),
    Child(compiler::Compiling),
    Taken,
}

fn compile_error(source_name: &str, message: String) -> Error {
    Error::Compile { source_name: source_name.to_owned(), message }
}

/// The wasmtime configuration of every engine, and of the compiling child: an artifact loads
/// only into an engine configured the same way.
pub(crate) fn config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config
        .epoch_interruption(true)
        // No async component calls are used: turning the machinery off makes each call cheaper.
        .concurrency_support(false)
        // Compiling on every core stalls the broker thread that calls policies.
        .parallel_compilation(false);
    // For `perf`: names the JIT-compiled guest functions in /tmp/perf-PID.map. A diagnostic
    // switch only (it writes a file per process), so off unless asked for.
    if std::env::var_os("MQTT_POLICY_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// Interface prefixes a policy may import. Everything else is refused with a clear message.
const PROVIDED: &[&str] = &["mqtt-policy:policy/", "wasi:io/", "wasi:cli/"];

fn check_imports(engine: &wasmtime::Engine, component: &Component, source_name: &str) -> Result<()> {
    let version = WORLD.rsplit_once('@').map(|(_, v)| v).unwrap_or_default();
    let mut missing = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        if let Some(rest) = name.strip_prefix("mqtt-policy:policy/")
            && !rest.ends_with(&format!("@{version}"))
        {
            let found = rest.split_once('@').map(|(_, v)| v).unwrap_or("an unversioned package");
            return Err(Error::WorldVersion {
                source_name: source_name.to_owned(),
                found: format!("mqtt-policy:policy@{found}"),
                expected: WORLD.to_owned(),
            });
        }
        if !PROVIDED.iter().any(|p| name.starts_with(p)) {
            missing.push(format!("`{name}`"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Link {
        source_name: source_name.to_owned(),
        message: format!(
            "it imports {}, which mqtt-policy does not provide: policies get no files, network, \
             clocks or randomness, only the `mqtt-policy:policy/host` interface",
            missing.join(", ")
        ),
    })
}

/// Why `bytes` did not compile, in the words an operator needs.
pub(crate) fn describe_compile_error(bytes: &[u8], e: &wasmtime::Error) -> String {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return "not a WebAssembly file (no \\0asm header)".to_owned();
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return "a core WebAssembly module, not a component: build for wasm32-wasip2 \
                (or wrap the module with `wasm-tools component new`)"
            .to_owned();
    }
    format!("{e:#}")
}
