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
use crate::deadline::{Running, Ticker};
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
    ticker: Arc<Ticker>,
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
        Engine::build(limits, None)
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
        let engine = Engine::build(limits, Some(compiler.to_owned()))?;
        // The smallest component (the preamble alone): proves the child runs, speaks the
        // protocol and is built from the same wasmtime with the same configuration.
        // Its own time bound: a busy machine may start processes slowly, and this is no policy.
        let empty = b"\0asm\x0d\x00\x01\x00";
        let check = Limits { compile_time: limits.compile_time.max(Duration::from_secs(10)), ..limits };
        engine.compile_uncached("(compiler self-check)", empty, &check).map_err(|e| {
            Error::Engine(format!("the policy compiler {} does not work for this engine: {e}", compiler.display()))
        })?;
        Ok(engine)
    }

    fn build(limits: Limits, compiler: Option<PathBuf>) -> Result<Engine> {
        let wasm = wasmtime::Engine::new(&config()).map_err(|e| Error::Engine(e.to_string()))?;
        let linker = bindings::linker(&wasm).map_err(|e| Error::Engine(e.to_string()))?;
        let ticker = Ticker::spawn(&wasm);
        let cache = Mutex::new(HashMap::new());
        Ok(Engine { inner: Arc::new(EngineInner { wasm, linker, limits, cache, compiler, ticker }) })
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
        self.inner.ticker.running()
    }

    /// Compiles `bytes`, or reuses the component compiled under the same `key` (the digest of
    /// the code, see [`crate::embedded`]), then checks that its imports are the policy world's.
    pub(crate) fn compile(&self, source_name: &str, bytes: &[u8], key: [u8; 32]) -> Result<Component> {
        let cached = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let component = match cached {
            Some(c) => c,
            None => {
                let component = self.compile_uncached(source_name, bytes, &self.inner.limits)?;
                self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, component.clone());
                component
            }
        };
        check_imports(self.wasm(), &component, source_name)?;
        Ok(component)
    }

    fn compile_uncached(&self, source_name: &str, bytes: &[u8], limits: &Limits) -> Result<Component> {
        let compile_error = |message: String| Error::Compile { source_name: source_name.to_owned(), message };
        let Some(compiler) = &self.inner.compiler else {
            return Component::new(self.wasm(), bytes).map_err(|e| compile_error(describe_compile_error(bytes, &e)));
        };
        let bound = |message: String| Error::CompileLimit { source_name: source_name.to_owned(), message };
        let artifact = compiler::compile_in_child(compiler, limits, bytes).map_err(|f| match f {
            Failure::Time => {
                bound(format!("compiling took longer than {} ms (compile_time)", limits.compile_time.as_millis()))
            }
            Failure::Memory => bound(format!(
                "compiling needed more than {} MiB of memory (compile_memory)",
                limits.compile_memory >> 20
            )),
            Failure::Refused(message) => compile_error(message),
            Failure::Broken(message) => Error::Compiler { source_name: source_name.to_owned(), message },
        })?;
        // SAFETY: `artifact` is what `Engine::precompile_component` wrote in the child, read
        // unmodified from the child's stdout pipe, which nothing else can write to. The child is
        // the binary the operator configured, as trusted as this library (whoever can point the
        // broker at another binary controls the broker). wasmtime checks that the artifact
        // comes from its own version and this engine's configuration, and refuses it otherwise.
        unsafe { Component::deserialize(self.wasm(), &artifact) }
            .map_err(|e| compile_error(format!("the compiler's artifact cannot be loaded: {e:#}")))
    }

    /// Links a compiled component against the host: ready to instantiate cheaply, many times.
    pub(crate) fn link(&self, source_name: &str, component: &Component) -> Result<bindings::PolicyPre<HostState>> {
        let link_error =
            |e: wasmtime::Error| Error::Link { source_name: source_name.to_owned(), message: format!("{e:#}") };
        let pre = self.inner.linker.instantiate_pre(component).map_err(link_error)?;
        bindings::PolicyPre::new(pre).map_err(link_error)
    }
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
