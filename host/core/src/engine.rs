//! The wasmtime engine shared by every policy: configuration, limits, the epoch
//! ticker that enforces deadlines, and the compile cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};

use crate::bindings::{self, HostState};
use crate::error::{Error, Result};
use crate::events::{Action, Event, Severity};
use crate::module::PolicyModule;
use crate::tenant::Tenant;

/// Bounds every policy call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a single check (authenticate, publish, subscribe, delivery) may run.
    pub deadline: Duration,
    /// Longest instantiation plus `validate-settings` may run (large rule sets parse here).
    pub setup_deadline: Duration,
    /// Most linear memory one policy instance may grow to, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    /// 10 ms per check, 5 s for setup, 64 MiB of memory.
    fn default() -> Self {
        Limits { deadline: Duration::from_millis(10), setup_deadline: Duration::from_secs(5), memory: 64 << 20 }
    }
}

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

    /// Deadline, in ticks, for instantiation and settings validation.
    pub(crate) fn setup_ticks(&self) -> u64 {
        ticks(self.inner.limits.setup_deadline)
    }

    /// Loads a policy file. `settings` overrides the settings embedded in the file
    /// (see [`crate::embedded`]); with neither, the policy gets an empty string.
    pub fn load_file(&self, path: &Path, settings: Option<&str>) -> Result<PolicyModule> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        self.load_bytes(&path.display().to_string(), &bytes, settings)
    }

    /// Loads a policy file for `tenant` like [`Engine::load_file`], and records the outcome
    /// in the tenant's events: `loaded` (with the digest) or `load-failed` (with the cause).
    /// A failed load changes nothing that is already running.
    pub fn load_for_tenant(&self, tenant: &Tenant, path: &Path, settings: Option<&str>) -> Result<PolicyModule> {
        let result = self.load_file(path, settings);
        let event = match &result {
            Ok(m) => {
                let mut e = Event::new(
                    tenant.name(),
                    Action::Load,
                    Severity::Info,
                    "loaded",
                    format!("loaded {} (sha256:{})", path.display(), m.digest()),
                );
                e.policy = Some(m.short_digest().to_owned());
                e
            }
            Err(err) => Event::new(tenant.name(), Action::Load, Severity::Error, "load-failed", err.to_string()),
        };
        tenant.events().emit(event);
        result
    }

    /// Loads a policy from bytes: compile (cached by digest), check the world version and
    /// imports, link, and run the policy's own `validate-settings`. Nothing is kept on failure.
    pub fn load_bytes(&self, source_name: &str, bytes: &[u8], settings: Option<&str>) -> Result<PolicyModule> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let component = self.compile(source_name, bytes, code_digest(bytes).unwrap_or(digest))?;
        check_imports(self.wasm(), &component, source_name)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::Link { source_name: source_name.to_owned(), message: format!("{e:#}") })?;
        let pre = bindings::PolicyPre::new(pre)
            .map_err(|e| Error::Link { source_name: source_name.to_owned(), message: format!("{e:#}") })?;
        let settings = match settings {
            Some(s) => s.to_owned(),
            None => crate::embedded::settings(bytes)
                .map_err(|message| Error::Compile { source_name: source_name.to_owned(), message })?
                .unwrap_or_default(),
        };
        let mut cas = Vec::new();
        for ca in crate::embedded::cas(bytes)
            .map_err(|message| Error::Compile { source_name: source_name.to_owned(), message })?
        {
            cas.extend(crate::cert::TenantCa::from_pem(&ca.name, &ca.pem)?);
        }
        PolicyModule::new(self.clone(), pre, source_name, crate::cert::hex(&digest), settings, cas, bytes.len())
    }

    /// Compiles `bytes`, or reuses the component compiled from the same code: `code` is the
    /// digest without the embedded settings and CAs, so a tenant whose rules change, or
    /// many tenants sharing one generic policy, pay for one compilation.
    fn compile(&self, source_name: &str, bytes: &[u8], code: [u8; 32]) -> Result<Component> {
        let digest = code;
        if let Some(c) = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&digest) {
            return Ok(c.clone());
        }
        let component = Component::new(self.wasm(), bytes).map_err(|e| Error::Compile {
            source_name: source_name.to_owned(),
            message: describe_compile_error(bytes, &e),
        })?;
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(digest, component.clone());
        Ok(component)
    }
}

/// SHA-256 of a component's top-level sections other than the `mqtt-policy/...` custom
/// sections (see [`crate::embedded`]), which wasmtime does not compile. `None` if the bytes
/// are not a well-formed sequence of sections; compilation then reports the real error.
fn code_digest(bytes: &[u8]) -> Option<[u8; 32]> {
    let header = bytes.get(..8)?;
    if !header.starts_with(b"\0asm") {
        return None;
    }
    let mut hasher = Sha256::new();
    hasher.update(header);
    let mut rest = bytes.get(8..)?;
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, after_size) = leb128_u32(after_id)?;
        let content = after_size.get(..size as usize)?;
        let skip = id == 0
            && leb128_u32(content)
                .and_then(|(n, r)| r.get(..n as usize))
                .is_some_and(|name| name.starts_with(crate::embedded::SECTION_PREFIX.as_bytes()));
        if !skip {
            hasher.update([id]);
            hasher.update((size as u64).to_le_bytes());
            hasher.update(content);
        }
        rest = &after_size[size as usize..];
    }
    Some(hasher.finalize().into())
}

fn leb128_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((u32::try_from(value).ok()?, &bytes[i + 1..]));
        }
    }
    None
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
    let version = crate::WORLD.rsplit_once('@').map(|(_, v)| v).unwrap_or_default();
    let mut missing = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        if let Some(rest) = name.strip_prefix("mqtt-policy:policy/")
            && !rest.ends_with(&format!("@{version}"))
        {
            let found = rest.split_once('@').map(|(_, v)| v).unwrap_or("an unversioned package");
            return Err(Error::WorldVersion {
                source_name: source_name.to_owned(),
                found: format!("mqtt-policy:policy@{found}"),
                expected: crate::WORLD.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_digest_ignores_embedded_settings_but_not_code() {
        let generic = guest_artifacts::HUB_RULES_WASM;
        let a = crate::embedded::embed(generic, "[hub]\nstate = \"ready\"").unwrap();
        let b = crate::embedded::embed(generic, "[hub]\nstate = \"locked\"").unwrap();
        assert_ne!(Sha256::digest(&a), Sha256::digest(&b));
        assert_eq!(code_digest(&a), code_digest(&b));
        assert_eq!(code_digest(&a), code_digest(generic));
        let other = std::fs::read(guest_artifacts::HELLO).unwrap();
        assert_ne!(code_digest(&other), code_digest(generic));
        assert_eq!(code_digest(b"not wasm"), None);
        assert_eq!(code_digest(&generic[..generic.len() - 3]), None);
    }
}
