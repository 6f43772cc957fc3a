//! PROVISIONAL STUB (replaced by the certificate module being written in parallel).
/// A parsed client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub subject_cn: Option<String>, pub subject: String, pub issuer: String, pub serial: String, pub sha256: String,
    pub not_before: i64, pub not_after: i64, pub dns_names: Vec<String>, pub uris: Vec<String>,
    pub authority_key_id: Option<String>, pub subject_key_id: Option<String>, pub chain_verified_by: Option<String>,
}
/// Certificate errors.
#[derive(Debug, thiserror::Error)]
pub enum CertError { #[error("stub")] Stub }
