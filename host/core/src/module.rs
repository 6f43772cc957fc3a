//! A compiled, linked and validated policy: shareable across threads and tenants.

use std::sync::Arc;

use wasmtime::Store;

use crate::bindings::{self, HostState};
use crate::cert::{self, CertError, Certificate, TenantCa};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::tenant::Tenant;

/// A policy ready to run: compiled, linked against the host, settings accepted by the
/// policy's own `validate-settings`. Cheap to clone; create a [`Policy`] per calling
/// thread and tenant with [`PolicyModule::instantiate`].
#[derive(Clone)]
pub struct PolicyModule {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub(crate) engine: Engine,
    pub(crate) pre: bindings::PolicyPre<HostState>,
    pub(crate) source_name: String,
    pub(crate) digest: String,
    pub(crate) short_digest: Arc<str>,
    pub(crate) settings: String,
    pub(crate) cas: Vec<TenantCa>,
    pub(crate) size: usize,
}

impl std::fmt::Debug for PolicyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyModule")
            .field("source", &self.inner.source_name)
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

/// A live instance and its store: what a [`Policy`] calls into.
pub(crate) struct Live {
    pub(crate) store: Store<HostState>,
    pub(crate) exports: bindings::Policy,
}

impl PolicyModule {
    pub(crate) fn new(
        engine: Engine,
        pre: bindings::PolicyPre<HostState>,
        source_name: &str,
        digest: String,
        settings: String,
        cas: Vec<TenantCa>,
        size: usize,
    ) -> Result<PolicyModule> {
        let module = PolicyModule {
            inner: Arc::new(ModuleInner {
                engine,
                pre,
                source_name: source_name.to_owned(),
                short_digest: digest[..12].into(),
                digest,
                settings,
                cas,
                size,
            }),
        };
        // Validate now, on a throw-away instance, so a bad policy is refused at load
        // and never replaces a good one.
        module.live(Tenant::new("(validation)"))?;
        Ok(module)
    }

    /// Creates a callable instance for `tenant`. The wasm instance itself is created on
    /// first use and re-created after a trap or a timeout.
    pub fn instantiate(&self, tenant: Tenant) -> Policy {
        Policy::new(self.clone(), tenant)
    }

    /// A fresh store and instance with the settings applied.
    pub(crate) fn live(&self, tenant: Tenant) -> Result<Live> {
        let m = &self.inner;
        let state = HostState::new(tenant, m.short_digest.clone(), m.engine.limits().memory);
        let mut store = Store::new(m.engine.wasm(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(m.engine.setup_ticks());
        let exports = m.pre.instantiate(&mut store).map_err(|e| Error::Instantiate {
            source_name: m.source_name.clone(),
            message: crate::policy::describe_fault(&m.engine, &store, &e).to_string(),
        })?;
        match exports.call_validate_settings(&mut store, &m.settings) {
            Ok(Ok(())) => Ok(Live { store, exports }),
            Ok(Err(message)) => Err(Error::InvalidSettings { source_name: m.source_name.clone(), message }),
            Err(e) => Err(Error::InvalidSettings {
                source_name: m.source_name.clone(),
                message: format!("validate-settings failed: {}", crate::policy::describe_fault(&m.engine, &store, &e)),
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

    /// The tenant CAs embedded in the policy file (see [`crate::embedded`]).
    pub fn tenant_cas(&self) -> &[TenantCa] {
        &self.inner.cas
    }

    /// Parses a client certificate and verifies it against this policy's tenant CAs.
    pub fn verify_certificate(&self, der: &[u8]) -> Result<Certificate, CertError> {
        cert::parse_and_verify(der, &self.inner.cas)
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
