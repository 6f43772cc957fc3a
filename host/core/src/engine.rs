//! The wasmtime engine shared by every policy: configuration, limits, the epoch
//! ticker that enforces deadlines, the linker, and compilation with its cache.
//!
//! The engine knows components, not policies: loading a policy (settings, CAs, validation)
//! is [`crate::module`]'s, which also provides the `Engine::load_*` shorthands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};

use crate::bindings::{self, HostState, WORLD};
use crate::error::{Error, Result};
use crate::limits::Limits;

/// Granularity of deadlines: the epoch ticker's period.
const TICK: Duration = Duration::from_millis(1);

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
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("limits", &self.inner.limits).finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an engine enforcing `limits`, and starts its deadline ticker thread
    /// (which ends by itself when the last clone of the engine is dropped).
    pub fn new(limits: Limits) -> Result<Engine> {
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            // No async component calls are used: turning the machinery off makes each call cheaper.
            .concurrency_support(false)
            // Compiling on every core stalls the broker thread that calls policies.
            .parallel_compilation(false);
        let wasm = wasmtime::Engine::new(&config).map_err(|e| Error::Engine(e.to_string()))?;
        let linker = bindings::linker(&wasm).map_err(|e| Error::Engine(e.to_string()))?;
        spawn_ticker(&wasm);
        Ok(Engine { inner: Arc::new(EngineInner { wasm, linker, limits, cache: Mutex::new(HashMap::new()) }) })
    }

    /// The limits every policy of this engine runs under.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    pub(crate) fn wasm(&self) -> &wasmtime::Engine {
        &self.inner.wasm
    }

    /// Deadline, in ticks, for one check.
    pub(crate) fn call_ticks(&self) -> u64 {
        ticks(self.inner.limits.deadline)
    }

    /// Deadline, in ticks, for one `authenticate`.
    pub(crate) fn connect_ticks(&self) -> u64 {
        ticks(self.inner.limits.connect_deadline)
    }

    /// Deadline, in ticks, for instantiation and settings validation.
    pub(crate) fn setup_ticks(&self) -> u64 {
        ticks(self.inner.limits.setup_deadline)
    }

    /// Compiles `bytes`, or reuses the component compiled under the same `key` (the digest of
    /// the code, see [`crate::embedded`]), then checks that its imports are the policy world's.
    pub(crate) fn compile(&self, source_name: &str, bytes: &[u8], key: [u8; 32]) -> Result<Component> {
        let cached = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let component = match cached {
            Some(c) => c,
            None => {
                let component = Component::new(self.wasm(), bytes).map_err(|e| Error::Compile {
                    source_name: source_name.to_owned(),
                    message: describe_compile_error(bytes, &e),
                })?;
                self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, component.clone());
                component
            }
        };
        check_imports(self.wasm(), &component, source_name)?;
        Ok(component)
    }

    /// Links a compiled component against the host: ready to instantiate cheaply, many times.
    pub(crate) fn link(&self, source_name: &str, component: &Component) -> Result<bindings::PolicyPre<HostState>> {
        let link_error =
            |e: wasmtime::Error| Error::Link { source_name: source_name.to_owned(), message: format!("{e:#}") };
        let pre = self.inner.linker.instantiate_pre(component).map_err(link_error)?;
        bindings::PolicyPre::new(pre).map_err(link_error)
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(TICK.as_nanos()) as u64).max(1)
}

fn spawn_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("mqtt-policy-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch thread");
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

fn describe_compile_error(bytes: &[u8], e: &wasmtime::Error) -> String {
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
