//! The operator's map from tenants to the CAs they own: which tenant a client certificate
//! belongs to is the operator's decision, never a policy's.
//!
//! A policy is semi-trusted (a tenant may write its own), so a CA it embeds only narrows what
//! its tenant admits; it can never pull another tenant's devices in. With
//! [`TenantSource::Certificate`](crate::TenantSource::Certificate) a certificate belongs to
//! the one tenant whose operator CAs verify it (one that verifies for two tenants is
//! refused), and a policy that embeds a CA the operator gave another tenant is refused at load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mqtt_policy_host::cert::{ChainError, TenantCa, verify_chain};

use crate::error::{Error, Result};
use crate::tenancy::check_name;

/// Tenant name → the CA certificates the operator assigned to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantCas {
    by_tenant: BTreeMap<String, Vec<TenantCa>>,
}

impl TenantCas {
    /// No tenant owns a CA.
    pub fn new() -> TenantCas {
        TenantCas::default()
    }

    /// Whether no CA is assigned.
    pub fn is_empty(&self) -> bool {
        self.by_tenant.is_empty()
    }

    /// Tenants that own a CA, sorted.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.by_tenant.keys().map(String::as_str)
    }

    /// Assigns the CA certificates of a PEM file (a bundle may hold intermediates) to
    /// `tenant`. A CA already assigned to another tenant is refused: ownership must be
    /// unambiguous.
    pub fn add_file(&mut self, tenant: &str, path: &Path) -> Result<()> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::TenantCa { path: path.to_owned(), message: e.to_string() })?;
        self.add_pem(tenant, &pem, path)
    }

    /// As [`TenantCas::add_file`], with the PEM text given; `path` names it in errors.
    pub fn add_pem(&mut self, tenant: &str, pem: &str, path: &Path) -> Result<()> {
        check_name(tenant)?;
        let bad = |message: String| Error::TenantCa { path: PathBuf::from(path), message };
        let cas = TenantCa::from_pem(tenant, pem).map_err(|e| bad(e.to_string()))?;
        for ca in &cas {
            if let Some((owner, _)) = self.owner_of(ca).filter(|(owner, _)| *owner != tenant) {
                return Err(bad(format!("CA `{}` is already assigned to tenant {owner}", ca.subject())));
            }
        }
        self.by_tenant.entry(tenant.to_owned()).or_default().extend(cas);
        Ok(())
    }

    /// The tenant whose CAs verify `der` (a client certificate): exactly one, or why not.
    pub fn tenant_of(&self, der: &[u8]) -> Result<&str, String> {
        let mut verifying = Vec::new();
        let mut unusable = None;
        for (tenant, cas) in &self.by_tenant {
            match verify_chain(der, &[], cas) {
                Ok(_) => verifying.push(tenant.as_str()),
                Err(ChainError::Unusable(reason)) => unusable = Some(reason),
                Err(_) => {}
            }
        }
        match verifying[..] {
            [one] => Ok(one),
            [] => Err(match unusable {
                Some(reason) => format!("client certificate is not usable: {reason}"),
                None => "client certificate was not issued by any tenant's CA".to_owned(),
            }),
            _ => Err(format!(
                "client certificate verifies for more than one tenant ({}); the operator's CA map must give each CA to one tenant",
                verifying.join(", ")
            )),
        }
    }

    /// Why a policy for `tenant` embedding `embedded` must not load: one of its CAs is a CA
    /// (the same key) the operator assigned to another tenant.
    pub fn conflict(&self, tenant: &str, embedded: &[TenantCa]) -> Option<String> {
        embedded.iter().find_map(|ca| {
            let (owner, theirs) = self.owner_of(ca).filter(|(owner, _)| *owner != tenant)?;
            Some(format!(
                "the policy for tenant {tenant} embeds CA `{}` ({}), which the operator assigned to tenant {owner} (as `{}`); not loaded",
                ca.name(),
                ca.subject(),
                theirs.subject()
            ))
        })
    }

    /// The tenant owning a CA with the same public key as `ca`: a re-issued or re-encoded CA
    /// certificate with that key signs the same devices.
    fn owner_of(&self, ca: &TenantCa) -> Option<(&str, &TenantCa)> {
        self.by_tenant.iter().find_map(|(tenant, cas)| {
            cas.iter().find(|c| c.public_key() == ca.public_key()).map(|c| (tenant.as_str(), c))
        })
    }
}
