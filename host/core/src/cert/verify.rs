//! Tenant CAs and the verification of client certificates against them, with rustls-webpki:
//! path building through intermediates, validity of every certificate in the chain, extended
//! key usage clientAuth, refusal of unknown critical extensions.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::objects::{oid_registry, oid2sn};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
    OID_SIG_ED25519,
};
use x509_parser::public_key::PublicKey;
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::error::CertError;
use super::names::render_name;
use super::pem::{parse, pem_certificates};

/// A CA certificate a tenant trusts, under a name that events and policies see.
///
/// Accepted as a CA: a v3 certificate with basicConstraints `cA` TRUE (and, if it has a
/// keyUsage extension, keyCertSign), or a v1/v2 certificate, which cannot carry extensions
/// and whose CA status RFC 5280 §6.1.4(k) leaves to out-of-band trust, as configuring it here
/// is. A v3 certificate without basicConstraints is refused: that is the usual shape of a
/// device certificate pasted by mistake. So is a certificate outside its validity period.
///
/// In a bundle ([`TenantCa::from_pem`]), a certificate issued by another certificate of the
/// same bundle is an intermediate: it links device certificates to that issuer but is no
/// trust anchor of its own. Every other certificate is a trust anchor.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantCa {
    name: String,
    der: Vec<u8>,
    subject: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    /// subjectPublicKeyInfo, DER: what makes two CA certificates the same signer.
    public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
    /// `None` for an intermediate of its bundle.
    anchor: Option<TrustAnchor<'static>>,
}

impl std::fmt::Debug for TenantCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCa")
            .field("name", &self.name)
            .field("subject", &self.subject)
            .field("anchor", &self.anchor.is_some())
            .finish_non_exhaustive()
    }
}

impl TenantCa {
    /// Every certificate in a PEM bundle, all under `name`, in order; fails if any of them is
    /// not a usable CA, so a bad bundle is noticed at load rather than at the first device.
    pub fn from_pem(name: &str, pem: &str) -> Result<Vec<TenantCa>, CertError> {
        let ders = pem_certificates(pem).map_err(|reason| CertError::CaUnreadable { name: name.to_owned(), reason })?;
        let count = ders.len();
        let mut cas = ders
            .iter()
            .enumerate()
            .map(|(i, der)| {
                TenantCa::from_der(name, der).map_err(|e| match e {
                    CertError::CaUnreadable { name, reason } if count > 1 => {
                        CertError::CaUnreadable { name, reason: format!("certificate {} of {count}: {reason}", i + 1) }
                    }
                    e => e,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let intermediate: Vec<bool> = (0..cas.len())
            .map(|i| {
                let c = &cas[i];
                c.issuer_raw != c.subject_raw
                    && cas.iter().enumerate().any(|(j, other)| j != i && other.subject_raw == c.issuer_raw)
            })
            .collect();
        // CAs that only issue one another (a cross-signed pair) would leave nothing to trust.
        if intermediate.iter().any(|i| !i) {
            for (ca, intermediate) in cas.iter_mut().zip(intermediate) {
                if intermediate {
                    ca.anchor = None;
                }
            }
        }
        Ok(cas)
    }

    /// One CA certificate in DER, as a trust anchor; see the type's documentation for what
    /// counts as a CA.
    pub fn from_der(name: &str, der: &[u8]) -> Result<TenantCa, CertError> {
        TenantCa::from_der_at(name, der, now())
    }

    fn from_der_at(name: &str, der: &[u8], at: i64) -> Result<TenantCa, CertError> {
        let unreadable = |reason: String| CertError::CaUnreadable { name: name.to_owned(), reason };
        let cert = parse(der).map_err(|reason| unreadable(format!("not valid DER: {reason}")))?;
        let subject = render_name(cert.subject());
        if let Err(reason) = may_sign_certificates(&cert) {
            return Err(CertError::NotACa { name: name.to_owned(), subject, reason });
        }
        if let Err(key) = usable_key(cert.public_key()) {
            return Err(CertError::UnsupportedCaKey { name: name.to_owned(), subject, key });
        }
        let (not_before, not_after) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
        if at > not_after {
            return Err(CertError::CaExpired { name: name.to_owned(), subject, not_after: time_of(not_after) });
        }
        if at < not_before {
            return Err(CertError::CaNotYetValid { name: name.to_owned(), subject, not_before: time_of(not_before) });
        }
        let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(der))
            .map_err(|e| unreadable(format!("not usable as a trust anchor: {}", reason(&e, None))))?
            .to_owned();
        Ok(TenantCa {
            name: name.to_owned(),
            der: der.to_vec(),
            subject,
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            public_key: cert.public_key().raw.to_vec(),
            not_before,
            not_after,
            anchor: Some(anchor),
        })
    }

    /// The name given to this CA, reported in `chain_verified_by`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA's subject, rendered like [`crate::cert::Certificate::subject`].
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The CA certificate as configured, in DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The CA's subjectPublicKeyInfo in DER. Two CA certificates with the same key sign (and
    /// so verify) the same certificates, whatever their names or validity say.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Whether this certificate is a trust anchor, rather than an intermediate of its bundle.
    pub fn is_anchor(&self) -> bool {
        self.anchor.is_some()
    }
}

/// Why no tenant CA verifies a client certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// There is no tenant CA to verify against.
    #[error("no tenant CA is configured")]
    NoTenantCa,
    /// The client certificate cannot be verified whichever CA is tried.
    #[error("client certificate cannot be verified: {0}")]
    Unusable(String),
    /// No tenant CA verifies it: why not, for each one tried (in order).
    #[error("{}", describe_refusals(.0))]
    NotVerified(Vec<Refusal>),
}

/// Why one tenant CA does not verify a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The CA's configured name.
    pub ca: String,
    /// The CA certificate's subject.
    pub subject: String,
    /// What failed, in words.
    pub reason: String,
}

fn describe_refusals(refusals: &[Refusal]) -> String {
    let cas = |rs: &[Refusal]| rs.iter().map(|r| format!("`{}` ({})", r.ca, r.subject)).collect::<Vec<_>>().join(", ");
    match refusals {
        [first, rest @ ..] if rest.iter().all(|r| r.reason == first.reason) => {
            format!("client certificate not verified by tenant CA {}: {}", cas(refusals), first.reason)
        }
        _ => {
            let each: Vec<String> =
                refusals.iter().map(|r| format!("tenant CA `{}` ({}): {}", r.ca, r.subject, r.reason)).collect();
            format!("client certificate not verified: {}", each.join("; "))
        }
    }
}

/// The first trust anchor among `cas` that a path from the client certificate `leaf` leads
/// to now, through `presented` (intermediates the client sent) and the intermediates of that
/// anchor's own bundle. Tried one anchor at a time, in order, so the answer names the tenant
/// CA that vouches for the device; a CA whose own validity has ended since it was loaded
/// does not count.
pub fn verify_chain<'c>(leaf: &[u8], presented: &[&[u8]], cas: &'c [TenantCa]) -> Result<&'c TenantCa, ChainError> {
    verify_chain_at(leaf, presented, cas, now())
}

/// [`verify_chain`] at `unix_secs` (seconds since the Unix epoch) instead of now.
pub fn verify_chain_at<'c>(
    leaf: &[u8],
    presented: &[&[u8]],
    cas: &'c [TenantCa],
    unix_secs: i64,
) -> Result<&'c TenantCa, ChainError> {
    if !cas.iter().any(TenantCa::is_anchor) {
        return Err(ChainError::NoTenantCa);
    }
    let leaf_der = CertificateDer::from(leaf);
    let end_entity = EndEntityCert::try_from(&leaf_der).map_err(|e| ChainError::Unusable(reason(&e, None)))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(unix_secs).unwrap_or(0)));
    let leaf_validity = parse(leaf).ok().map(|c| c.validity().not_after.timestamp());
    let mut refusals = Vec::new();
    for ca in cas {
        let Some(anchor) = &ca.anchor else { continue };
        let intermediates: Vec<CertificateDer<'_>> = presented
            .iter()
            .map(|der| CertificateDer::from(*der))
            .chain(cas.iter().filter(|i| !i.is_anchor() && i.name == ca.name).map(|i| CertificateDer::from(&i.der[..])))
            .collect();
        let verified = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(anchor),
            &intermediates,
            time,
            KeyUsage::client_auth(),
            None,
            None,
        );
        let why = match verified {
            // webpki takes trust anchors as timeless; a tenant CA is a certificate with a validity.
            Ok(_) if unix_secs > ca.not_after => {
                format!("it was issued by this CA, whose certificate expired at {}", time_of(ca.not_after))
            }
            Ok(_) if unix_secs < ca.not_before => {
                format!("it was issued by this CA, whose certificate is not valid before {}", time_of(ca.not_before))
            }
            Ok(_) => return Ok(ca),
            Err(e) => reason(&e, leaf_validity),
        };
        refusals.push(Refusal { ca: ca.name.clone(), subject: ca.subject.clone(), reason: why });
    }
    Err(ChainError::NotVerified(refusals))
}

/// A webpki error in words. `leaf_not_after` tells the client certificate's expiry from an
/// intermediate's.
fn reason(e: &webpki::Error, leaf_not_after: Option<i64>) -> String {
    use webpki::Error as E;
    let secs = |t: &UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    #[allow(deprecated)]
    match e {
        E::UnknownIssuer => "it was not issued by this CA, nor through an intermediate that this CA issued".into(),
        E::InvalidSignatureForPublicKey => "the issuer's name matches but its key did not make the signature".into(),
        E::CertExpired { not_after, .. } if leaf_not_after == Some(secs(not_after)) => {
            format!("the client certificate expired at {}", time_of(secs(not_after)))
        }
        E::CertExpired { not_after, .. } => {
            format!("an intermediate certificate of the chain expired at {}", time_of(secs(not_after)))
        }
        E::CertNotValidYet { not_before, .. } => {
            format!("a certificate of the chain is not valid before {}", time_of(secs(not_before)))
        }
        E::InvalidCertValidity => "a certificate of the chain ends its validity before it begins".into(),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => {
            "a certificate of the chain has an extended key usage without clientAuth".into()
        }
        E::EmptyEkuExtension => "a certificate of the chain has an empty extended key usage".into(),
        E::UnsupportedCriticalExtension => {
            "a certificate of the chain has a critical extension this host does not understand".into()
        }
        E::CaUsedAsEndEntity => "the client certificate is itself a CA certificate".into(),
        E::EndEntityUsedAsCa => "the chain passes through a certificate that is not a CA".into(),
        E::PathLenConstraintViolated => "the chain is longer than a CA's pathLenConstraint allows".into(),
        E::NameConstraintViolation => "the client certificate violates a CA's name constraints".into(),
        E::SignatureAlgorithmMismatch => "a certificate's inner and outer signature algorithms differ".into(),
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a certificate of the chain is signed with an algorithm not accepted here (such as SHA-1) \
             or one that does not fit its issuer's key"
                .into()
        }
        E::UnsupportedCertVersion => "a certificate of the chain is not X.509 v3".into(),
        E::MaximumPathDepthExceeded | E::MaximumSignatureChecksExceeded | E::MaximumPathBuildCallsExceeded => {
            "the chain is too long or too tangled to verify".into()
        }
        E::CertDistrusted => "a certificate of the chain is distrusted".into(),
        other => format!("a certificate of the chain is malformed ({other:?})"),
    }
}

fn now() -> i64 {
    i64::try_from(UnixTime::now().as_secs()).unwrap_or(i64::MAX)
}

/// A time as `openssl x509 -dates` shows it (`Jan  1 00:00:00 2001 +00:00`).
fn time_of(unix_secs: i64) -> String {
    ASN1Time::from_timestamp(unix_secs).map_or_else(|_| format!("{unix_secs} (Unix time)"), |t| t.to_string())
}

fn may_sign_certificates(cert: &X509Certificate<'_>) -> Result<(), &'static str> {
    match cert.basic_constraints() {
        Err(_) => return Err("basicConstraints appears more than once"),
        Ok(Some(bc)) if !bc.value.ca => return Err("basicConstraints says cA: FALSE"),
        Ok(Some(_)) => {}
        Ok(None) if cert.version().0 >= 2 => return Err("it is a v3 certificate without basicConstraints"),
        Ok(None) => {}
    }
    match cert.key_usage() {
        Err(_) => Err("keyUsage is malformed or appears more than once"),
        Ok(Some(ku)) if !ku.value.key_cert_sign() => Err("keyUsage does not include keyCertSign"),
        Ok(_) => Ok(()),
    }
}

/// Whether the verification algorithms in use ([`webpki::ALL_VERIFICATION_ALGS`], on ring) can
/// check signatures made with this key; the key type it found otherwise.
fn usable_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), String> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION || *alg == OID_PKCS1_RSASSAPSS {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else { return Err("malformed RSA".to_owned()) };
        let modulus = &rsa.modulus[rsa.modulus.iter().position(|b| *b != 0).unwrap_or(rsa.modulus.len())..];
        let bits = modulus.first().map_or(0, |top| modulus.len() * 8 - top.leading_zeros() as usize);
        return if (2048..=8192).contains(&bits) { Ok(()) } else { Err(format!("{bits}-bit RSA")) };
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => Ok(()),
            Some(c) => {
                Err(format!("ECDSA {}", oid2sn(&c, oid_registry()).map_or_else(|_| c.to_id_string(), str::to_owned)))
            }
            None => Err("ECDSA key without a named curve".to_owned()),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(());
    }
    Err(oid2sn(alg, oid_registry()).map_or_else(|_| alg.to_id_string(), str::to_owned))
}

#[cfg(test)]
pub(super) fn tenant_ca_at(name: &str, der: &[u8], unix_secs: i64) -> Result<TenantCa, CertError> {
    TenantCa::from_der_at(name, der, unix_secs)
}
