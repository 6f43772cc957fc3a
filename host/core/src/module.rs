//! A compiled, linked and validated policy: shareable across threads and tenants.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::{self, HostState};
use crate::cert::{self, CertError, Certificate, ChainError, TenantCa};
use crate::embedded;
use crate::engine::{CompileJob, Engine};
use crate::error::{Error, Result};
use crate::events::{Action, Event, Severity};
use crate::fault;
use crate::hex::hex;
use crate::tenant::Tenant;

/// A policy ready to run: compiled, linked against the host, settings accepted by the
/// policy's own `validate-settings`. Cheap to clone; create a [`crate::Policy`] per calling
/// thread and tenant with [`PolicyModule::instantiate`].
#[derive(Clone)]
pub struct PolicyModule {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    engine: Engine,
    pre: bindings::PolicyPre<HostState>,
    source_name: String,
    digest: String,
    short_digest: Arc<str>,
    settings: String,
    /// No settings were supplied and none are embedded: the policy got an empty string, and a
    /// refusal says so (a raw policy copied into a policy directory is the usual cause).
    unsupplied: bool,
    cas: Vec<TenantCa>,
    size: usize,
}

impl std::fmt::Debug for PolicyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyModule")
            .field("source", &self.inner.source_name)
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

impl PolicyModule {
    /// Loads a policy from bytes with `engine`: compile (cached by the digest of the code),
    /// check the world version and imports, link, and run the policy's own
    /// `validate-settings`. `settings` overrides the settings embedded in the bytes (see
    /// [`crate::embedded`]); with neither, the policy gets an empty string. Nothing is kept on
    /// failure.
    pub fn load(engine: &Engine, source_name: &str, bytes: &[u8], settings: Option<&str>) -> Result<PolicyModule> {
        let (digest, key) = digests(bytes);
        let component = engine.compile(source_name, bytes, key)?;
        PolicyModule::finish(engine, source_name, bytes, digest, settings, &component)
    }

    /// What loading does once the component is compiled: link, settings, CAs, validation.
    fn finish(
        engine: &Engine,
        source_name: &str,
        bytes: &[u8],
        digest: [u8; 32],
        settings: Option<&str>,
        component: &Component,
    ) -> Result<PolicyModule> {
        let pre = engine.link(source_name, component)?;
        let unreadable = |message| Error::Compile { source_name: source_name.to_owned(), message };
        let (settings, unsupplied) = match settings {
            Some(s) => (s.to_owned(), false),
            None => match embedded::settings(bytes).map_err(unreadable)? {
                Some(s) => (s, false),
                None => (String::new(), true),
            },
        };
        let mut cas = Vec::new();
        for ca in embedded::cas(bytes).map_err(unreadable)? {
            cas.extend(TenantCa::from_pem(&ca.name, &ca.pem)?);
        }
        let digest = hex(&digest);
        let module = PolicyModule {
            inner: Arc::new(ModuleInner {
                engine: engine.clone(),
                pre,
                source_name: source_name.to_owned(),
                short_digest: digest[..12].into(),
                digest,
                settings,
                unsupplied,
                cas,
                size: bytes.len(),
            }),
        };
        // Validate now, on a throw-away instance, so a bad policy is refused at load
        // and never replaces a good one.
        module.start(Tenant::new("(validation)"))?;
        Ok(module)
    }

    /// Loads a policy file with `engine`, like [`PolicyModule::load`].
    pub fn load_file(engine: &Engine, path: &Path, settings: Option<&str>) -> Result<PolicyModule> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        PolicyModule::load(engine, &path.display().to_string(), &bytes, settings)
    }

    /// Loads a policy file for `tenant` like [`PolicyModule::load_file`], then asks `admit`
    /// whether the host accepts it (an `Err` is the reason it does not), and records the
    /// outcome in the tenant's events: `loaded` (with the digest) or `load-failed` (with the
    /// cause). A failed load changes nothing that is already running.
    pub fn load_for_tenant(
        engine: &Engine,
        tenant: &Tenant,
        path: &Path,
        settings: Option<&str>,
        admit: impl FnOnce(&PolicyModule) -> std::result::Result<(), String> + Send + 'static,
    ) -> Result<PolicyModule> {
        PolicyModule::start_loading_for_tenant(engine, tenant, path, settings, admit).wait()
    }

    /// Starts loading a policy file for `tenant` as [`PolicyModule::load_for_tenant`] does,
    /// without waiting for its compilation: [`Loading::poll`] finishes it. For a host whose
    /// one thread serves the broker: compiling a policy takes seconds, in a child process
    /// (with [`Engine::with_compiler`]); the rest of loading (linking, the policy's
    /// `validate-settings`) runs in `poll`, on the calling thread.
    pub fn start_loading_for_tenant(
        engine: &Engine,
        tenant: &Tenant,
        path: &Path,
        settings: Option<&str>,
        admit: impl FnOnce(&PolicyModule) -> std::result::Result<(), String> + Send + 'static,
    ) -> Loading {
        let source_name = path.display().to_string();
        let (stage, bytes, digest) = match std::fs::read(path) {
            Err(source) => (Stage::Failed(Error::Read { path: path.to_owned(), source }), Vec::new(), [0; 32]),
            Ok(bytes) => {
                let (digest, key) = digests(&bytes);
                (Stage::Compiling(engine.start_compile(&source_name, &bytes, key)), bytes, digest)
            }
        };
        Loading {
            engine: engine.clone(),
            tenant: tenant.clone(),
            path: path.to_owned(),
            source_name,
            settings: settings.map(str::to_owned),
            bytes,
            digest,
            admit: Some(Box::new(admit)),
            stage,
        }
    }

    /// A fresh store and instance for `tenant`, with the settings validated: what every live
    /// instance starts from. Runs under the setup deadline.
    pub(crate) fn start(&self, tenant: Tenant) -> Result<(Store<HostState>, bindings::Policy)> {
        let m = &*self.inner;
        let limits = m.engine.limits();
        let state = HostState::new(tenant, m.short_digest.clone(), limits.memory);
        let mut store = Store::new(m.engine.wasm(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut cx| Ok(cx.data_mut().deadline.passed()));
        let ticks = store.data_mut().deadline.start(limits.setup_deadline);
        let _running = m.engine.running();
        store.set_epoch_deadline(ticks);
        let exports = m.pre.instantiate(&mut store).map_err(|e| Error::Instantiate {
            source_name: m.source_name.clone(),
            message: fault::classify(&limits, store.data(), &e).to_string(),
        })?;
        match exports.call_validate_settings(&mut store, &m.settings) {
            Ok(Ok(())) => Ok((store, exports)),
            Ok(Err(message)) if m.unsupplied => Err(Error::InvalidSettings {
                source_name: m.source_name.clone(),
                message: format!(
                    "no settings supplied or embedded (embed them with `mqtt-policy build SETTINGS --policy \
                     POLICY.wasm -o TENANT.wasm`); the policy refused empty settings: {message}"
                ),
            }),
            Ok(Err(message)) => Err(Error::InvalidSettings { source_name: m.source_name.clone(), message }),
            Err(e) => Err(Error::InvalidSettings {
                source_name: m.source_name.clone(),
                message: format!("validate-settings failed: {}", fault::classify(&limits, store.data(), &e)),
            }),
        }
    }

    /// Lower-case hex SHA-256 of the policy file.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The first 12 hex digits of the digest, as shown in events.
    pub fn short_digest(&self) -> &str {
        &self.inner.short_digest
    }

    /// The settings the policy runs with.
    pub fn settings(&self) -> &str {
        &self.inner.settings
    }

    /// Where the policy came from (file name or label).
    pub fn source_name(&self) -> &str {
        &self.inner.source_name
    }

    /// The tenant CAs embedded in the policy file (see [`crate::embedded`]): every
    /// certificate of every CA bundle, trust anchors and intermediates.
    pub fn tenant_cas(&self) -> &[TenantCa] {
        &self.inner.cas
    }

    /// Parses a client certificate and verifies it against this policy's tenant CAs
    /// (see [`cert::parse_and_verify`]).
    pub fn verify_certificate(&self, der: &[u8]) -> Result<Certificate, CertError> {
        cert::parse_and_verify(der, &self.inner.cas)
    }

    /// Parses a client certificate and verifies it, with the intermediates the client
    /// presented, against this policy's tenant CAs (see [`cert::parse_and_verify_chain`]).
    pub fn verify_certificate_chain(&self, der: &[u8], intermediates: &[&[u8]]) -> Result<Certificate, CertError> {
        cert::parse_and_verify_chain(der, intermediates, &self.inner.cas)
    }

    /// Why no tenant CA of this policy verifies the client certificate `der` now, or the name
    /// of the one that does (see [`cert::verify_chain`]).
    pub fn explain_certificate(&self, der: &[u8], intermediates: &[&[u8]]) -> Result<String, ChainError> {
        cert::verify_chain(der, intermediates, &self.inner.cas).map(|ca| ca.name().to_owned())
    }

    /// Size of the policy file in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The engine that compiled this policy.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

/// Shorthands for [`PolicyModule::load`] and its siblings, defined here rather than with the
/// engine so that the engine stays unaware of what a policy module is.
impl Engine {
    /// Loads a policy file; see [`PolicyModule::load_file`].
    pub fn load_file(&self, path: &Path, settings: Option<&str>) -> Result<PolicyModule> {
        PolicyModule::load_file(self, path, settings)
    }

    /// Loads a policy file for `tenant` if `admit` accepts it, recording the outcome in its
    /// events; see [`PolicyModule::load_for_tenant`].
    pub fn load_for_tenant(
        &self,
        tenant: &Tenant,
        path: &Path,
        settings: Option<&str>,
        admit: impl FnOnce(&PolicyModule) -> std::result::Result<(), String> + Send + 'static,
    ) -> Result<PolicyModule> {
        PolicyModule::load_for_tenant(self, tenant, path, settings, admit)
    }

    /// Loads a policy from bytes; see [`PolicyModule::load`].
    pub fn load_bytes(&self, source_name: &str, bytes: &[u8], settings: Option<&str>) -> Result<PolicyModule> {
        PolicyModule::load(self, source_name, bytes, settings)
    }
}

/// The SHA-256 of a policy file's bytes, and the key its compiled code is cached under (the
/// digest of the code without the embedded rules, see [`crate::embedded`]).
fn digests(bytes: &[u8]) -> ([u8; 32], [u8; 32]) {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    (digest, embedded::code_digest(bytes).unwrap_or(digest))
}

/// The digest [`PolicyModule::digest`] reports for a policy file of these bytes (lower-case hex
/// SHA-256): for a host that wants to know whether a file is the one already loaded.
pub fn policy_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A policy file being loaded for a tenant ([`PolicyModule::start_loading_for_tenant`]).
/// Dropping it before it is done stops its compilation (the child is killed) and records
/// nothing.
pub struct Loading {
    engine: Engine,
    tenant: Tenant,
    path: PathBuf,
    source_name: String,
    settings: Option<String>,
    bytes: Vec<u8>,
    digest: [u8; 32],
    admit: Option<Box<Admit>>,
    stage: Stage,
}

type Admit = dyn FnOnce(&PolicyModule) -> std::result::Result<(), String> + Send;

enum Stage {
    Failed(Error),
    Compiling(CompileJob),
    Done,
}

impl Loading {
    /// The loaded policy, or why it did not load, once its compilation has ended; `None`
    /// while it runs, and after the outcome was given. The outcome is recorded in the tenant's
    /// events as [`PolicyModule::load_for_tenant`] does. Cheap while the compiler runs (one
    /// system call); the call that finishes the load links and validates the policy.
    pub fn poll(&mut self) -> Option<Result<PolicyModule>> {
        let result = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Done => return None,
            Stage::Failed(e) => Err(e),
            Stage::Compiling(mut job) => match self.engine.poll_compile(&mut job) {
                None => {
                    self.stage = Stage::Compiling(job);
                    return None;
                }
                Some(component) => component.and_then(|c| {
                    let settings = self.settings.as_deref();
                    PolicyModule::finish(&self.engine, &self.source_name, &self.bytes, self.digest, settings, &c)
                }),
            },
        };
        let admit = self.admit.take().expect("answered once");
        let result = result.and_then(|m| match admit(&m) {
            Ok(()) => Ok(m),
            Err(message) => Err(Error::Refused { source_name: self.source_name.clone(), message }),
        });
        let event = match &result {
            Ok(m) => {
                let mut e = Event::new(
                    self.tenant.name(),
                    Action::Load,
                    Severity::Info,
                    "loaded",
                    format!("loaded {} (sha256:{})", self.path.display(), m.digest()),
                );
                e.policy = Some(m.short_digest().to_owned());
                e
            }
            Err(err) => Event::new(self.tenant.name(), Action::Load, Severity::Error, "load-failed", err.to_string()),
        };
        self.tenant.events().emit(event);
        Some(result)
    }

    /// Waits for the outcome of [`Loading::poll`].
    pub fn wait(mut self) -> Result<PolicyModule> {
        crate::compiler::wait_for(|| self.poll())
    }

    /// The policy file being loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
