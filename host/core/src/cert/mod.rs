//! Client certificates: DER → the record policies receive, and verification against the
//! CA certificates a tenant trusts.
//!
//! Choices made here, and why:
//! - Reading and verifying are separate: x509-parser reads the fields policies get (the
//!   [`Certificate`] record), rustls-webpki decides whether a chain leads to a tenant CA. A
//!   certificate no tenant CA verifies is not an error; `chain_verified_by` stays `None` and
//!   the policy decides what that means ([`verify_chain`] says why, for logs and tools).
//! - Verification is what webpki does for a TLS client certificate, one tenant CA (trust
//!   anchor) at a time: a path through intermediates (those the client presented and those in
//!   the tenant's CA bundle), every certificate of it within its validity period now,
//!   extended key usage clientAuth where the extension is present, no unknown critical
//!   extension, and the tenant CA itself within its validity period. The broker's TLS stack
//!   has already checked the chain it was configured with; this check answers the different
//!   question "which *tenant* vouches for this device".
//! - The record still carries `not_before`/`not_after`, so a policy can apply its own
//!   rules (and explain them) to records that did not come from a verified chain.
//! - Names are compared byte for byte (no RFC 5280 §7.1 case folding): a re-encoded name can
//!   only cause a false "not verified", never a false "verified".
//! - SHA-1 signatures never count as verified (chosen-prefix collisions are practical);
//!   webpki does not accept them.
//! - Distinguished names are rendered like x509-parser does (encoded order, `", "` between
//!   RDNs, `" + "` inside one) but with RFC 4514 escaping, so that a CN of `a, O=Acme` cannot
//!   render the same as a real `O=Acme` attribute.
//! - Anything ambiguous in a field a policy reads (a CN that is not text, a repeated or
//!   malformed SAN or key-identifier extension) is an error rather than a guess: a dropped
//!   SAN or a lossily decoded CN could make two devices look alike.

mod error;
mod fields;
mod names;
mod pem;
mod verify;

pub use error::CertError;
pub use fields::Certificate;
pub use pem::pem_to_der;
pub use verify::{ChainError, Refusal, TenantCa, verify_chain, verify_chain_at};

/// Parses a DER client certificate into the record policies receive, verified against no CA.
pub fn parse_der(der: &[u8]) -> Result<Certificate, CertError> {
    fields::extract(der)
}

/// Parses `der` and sets `chain_verified_by` to the first of `cas` that verifies it now
/// (see [`verify_chain`]). A certificate none of them verifies is not an error.
pub fn parse_and_verify(der: &[u8], cas: &[TenantCa]) -> Result<Certificate, CertError> {
    parse_and_verify_chain(der, &[], cas)
}

/// [`parse_and_verify`] with the intermediate certificates (DER) the client presented.
pub fn parse_and_verify_chain(der: &[u8], intermediates: &[&[u8]], cas: &[TenantCa]) -> Result<Certificate, CertError> {
    let mut certificate = fields::extract(der)?;
    if !cas.is_empty() {
        certificate.chain_verified_by = verify_chain(der, intermediates, cas).ok().map(|ca| ca.name().to_owned());
    }
    Ok(certificate)
}

#[cfg(test)]
mod tests;
