//! Client certificates: DER → the record policies receive, and verification against the
//! CA certificates a tenant trusts.
//!
//! Expiry is not judged here: the record carries `not_before`/`not_after` and the policy
//! decides (hubs differ on grace periods). Chain verification is one level deep: a
//! tenant CA signs device certificates directly, as the seeded hubs' custom-CA flows do.

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

/// A parsed client certificate (mirrors the WIT record `certificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Subject common name: `None` without a CN, `Some("")` when the CN is present but empty.
    pub subject_cn: Option<String>,
    /// Subject distinguished name, e.g. `CN=dev-1, O=Acme`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, lower-case hex without separators or leading zero bytes.
    pub serial: String,
    /// SHA-256 of the DER, lower-case hex.
    pub sha256: String,
    /// Validity start, seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity end, seconds since the Unix epoch.
    pub not_after: i64,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// Authority key identifier, lower-case hex.
    pub authority_key_id: Option<String>,
    /// Subject key identifier, lower-case hex.
    pub subject_key_id: Option<String>,
    /// Name of the tenant CA whose signature verified, if any.
    pub chain_verified_by: Option<String>,
}

impl Certificate {
    /// Whether `unix_secs` lies within the validity period.
    pub fn is_valid_at(&self, unix_secs: i64) -> bool {
        self.not_before <= unix_secs && unix_secs <= self.not_after
    }
}

/// Why a certificate or CA could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The PEM text is malformed or holds no certificate.
    #[error("PEM is not usable: {0}")]
    Pem(String),
    /// The bytes are not a DER X.509 certificate.
    #[error("certificate is not valid DER X.509: {0}")]
    Der(String),
    /// A certificate offered as a tenant CA is not a CA (no basicConstraints CA:TRUE).
    #[error("certificate `{subject}` offered as CA `{name}` is not a CA (basicConstraints CA:TRUE is missing)")]
    NotACa {
        /// The CA's configured name.
        name: String,
        /// The certificate's subject.
        subject: String,
    },
}

/// Every certificate in a PEM text, as DER, in order. Non-certificate blocks are skipped.
pub fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let mut ders = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| CertError::Pem(e.to_string()))?;
        if block.label == "CERTIFICATE" {
            ders.push(block.contents);
        }
    }
    if ders.is_empty() {
        return Err(CertError::Pem("no CERTIFICATE block found".to_owned()));
    }
    Ok(ders)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(CertError::Der(format!("{} trailing bytes after the certificate", rest.len()))),
        Err(e) => Err(CertError::Der(e.to_string())),
    }
}

fn hex(bytes: &[u8]) -> String {
    crate::engine::hex(bytes)
}

/// Parses a DER certificate into the record policies receive (not verified against any CA).
pub fn parse_der(der: &[u8]) -> Result<Certificate, CertError> {
    parse_and_verify(der, &[])
}

/// Parses `der` and sets `chain_verified_by` to the first of `cas` that issued it: the
/// issuer DN equals the CA's subject *and* the signature verifies with the CA's key. A
/// certificate none of them signed is not an error; the policy decides what that means.
pub fn parse_and_verify(der: &[u8], cas: &[TenantCa]) -> Result<Certificate, CertError> {
    let cert = parse(der)?;
    let subject_cn = cert.subject().iter_common_name().next().map(|cn| {
        cn.as_str().map(str::to_owned).unwrap_or_else(|_| String::from_utf8_lossy(cn.as_slice()).into_owned())
    });
    let mut dns_names = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    let mut authority_key_id = None;
    let mut subject_key_id = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|k| hex(k.0));
            }
            ParsedExtension::SubjectKeyIdentifier(k) => subject_key_id = Some(hex(k.0)),
            _ => {}
        }
    }
    let serial = cert.raw_serial();
    let significant = serial.iter().position(|b| *b != 0).unwrap_or(serial.len().saturating_sub(1));
    let chain_verified_by = cas.iter().find(|ca| ca.signed(&cert)).map(|ca| ca.name.clone());
    Ok(Certificate {
        subject_cn,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex(&serial[significant..]),
        sha256: hex(&Sha256::digest(der)),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        uris,
        authority_key_id,
        subject_key_id,
        chain_verified_by,
    })
}

/// A CA certificate a tenant trusts, under a name that events and policies see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCa {
    name: String,
    der: Vec<u8>,
}

impl TenantCa {
    /// Every CA certificate in a PEM bundle, all under `name`. Refuses non-CA certificates.
    pub fn from_pem(name: &str, pem: &str) -> Result<Vec<TenantCa>, CertError> {
        pem_to_der(pem)?.into_iter().map(|der| TenantCa::from_der(name, &der)).collect()
    }

    /// One CA certificate. Refuses a certificate without basicConstraints CA:TRUE.
    pub fn from_der(name: &str, der: &[u8]) -> Result<TenantCa, CertError> {
        let cert = parse(der)?;
        if !cert.is_ca() {
            return Err(CertError::NotACa { name: name.to_owned(), subject: cert.subject().to_string() });
        }
        Ok(TenantCa { name: name.to_owned(), der: der.to_vec() })
    }

    /// The name given to this CA.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn signed(&self, cert: &X509Certificate<'_>) -> bool {
        let Ok(ca) = parse(&self.der) else { return false };
        // Names first: cheap, and a signature by the right key under another name is still not ours.
        cert.issuer().as_raw() == ca.subject().as_raw() && cert.verify_signature(Some(ca.public_key())).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType, SerialNumber,
        date_time_ymd,
    };

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn ca(cn: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "Tenant");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn leaf_params(cn: Option<&str>) -> CertificateParams {
        let mut params = CertificateParams::new(vec!["dev-1.example.com".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::URI("spiffe://acme/dev-1".try_into().unwrap()));
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.distinguished_name.push(DnType::OrganizationName, "Acme");
        params.serial_number = Some(SerialNumber::from_slice(&[0x01, 0x02, 0xab]));
        params.not_before = date_time_ymd(2025, 1, 1);
        params.not_after = date_time_ymd(2030, 1, 1);
        params.use_authority_key_identifier_extension = true;
        params
    }

    fn leaf(cn: Option<&str>, by: &Ca) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&by.params, &by.key);
        leaf_params(cn).signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    fn tenant_ca(name: &str, ca: &Ca) -> TenantCa {
        TenantCa::from_pem(name, &ca.pem).unwrap().remove(0)
    }

    #[test]
    fn the_record_carries_every_field() {
        let a = ca("Tenant A CA");
        let der = leaf(Some("dev-1"), &a);
        let c = parse_der(&der).unwrap();
        assert_eq!(c.subject_cn.as_deref(), Some("dev-1"));
        assert_eq!(c.subject, "CN=dev-1, O=Acme");
        assert_eq!(c.issuer, "CN=Tenant A CA, O=Tenant");
        assert_eq!(c.serial, "0102ab");
        assert_eq!(c.sha256, hex(&Sha256::digest(&der)));
        assert_eq!(c.not_before, 1_735_689_600, "2025-01-01T00:00:00Z");
        assert_eq!(c.not_after, 1_893_456_000, "2030-01-01T00:00:00Z");
        assert_eq!(c.dns_names, ["dev-1.example.com"]);
        assert_eq!(c.uris, ["spiffe://acme/dev-1"]);
        let ca_record = parse_der(&pem_to_der(&a.pem).unwrap()[0]).unwrap();
        assert!(ca_record.subject_key_id.is_some(), "{ca_record:?}");
        assert_eq!(c.authority_key_id, ca_record.subject_key_id, "the leaf names its CA's key");
        assert_eq!(c.chain_verified_by, None, "not verified without CAs");
        assert!(c.is_valid_at(1_800_000_000) && !c.is_valid_at(1_700_000_000) && !c.is_valid_at(1_900_000_000));
    }

    #[test]
    fn empty_and_missing_common_names_differ() {
        let a = ca("A");
        assert_eq!(parse_der(&leaf(Some(""), &a)).unwrap().subject_cn.as_deref(), Some(""));
        assert_eq!(parse_der(&leaf(None, &a)).unwrap().subject_cn, None);
    }

    #[test]
    fn only_the_issuing_tenant_ca_verifies() {
        let (a, b) = (ca("Tenant A CA"), ca("Tenant B CA"));
        let der = leaf(Some("dev-1"), &a);
        let (ta, tb) = (tenant_ca("tenant-a", &a), tenant_ca("tenant-b", &b));
        assert_eq!(
            parse_and_verify(&der, std::slice::from_ref(&ta)).unwrap().chain_verified_by.as_deref(),
            Some("tenant-a")
        );
        assert_eq!(parse_and_verify(&der, std::slice::from_ref(&tb)).unwrap().chain_verified_by, None);
        assert_eq!(parse_and_verify(&der, &[tb, ta]).unwrap().chain_verified_by.as_deref(), Some("tenant-a"));
    }

    #[test]
    fn a_spoofed_issuer_name_signed_by_another_key_does_not_verify() {
        let a = ca("Tenant A CA");
        // Same subject DN as tenant A's CA, different key: the forger's "CA".
        let forged = Ca { params: a.params.clone(), key: KeyPair::generate().unwrap(), pem: String::new() };
        let der = leaf(Some("dev-1"), &forged);
        let c = parse_and_verify(&der, &[tenant_ca("tenant-a", &a)]).unwrap();
        assert_eq!(c.issuer, "CN=Tenant A CA, O=Tenant", "the names match");
        assert_eq!(c.chain_verified_by, None, "but the signature does not");
    }

    #[test]
    fn garbage_truncated_and_non_ca_inputs_are_errors() {
        assert!(matches!(parse_der(b"not a certificate"), Err(CertError::Der(_))));
        let a = ca("A");
        let der = leaf(Some("d"), &a);
        assert!(matches!(parse_der(&der[..der.len() - 10]), Err(CertError::Der(_))));
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(parse_der(&trailing), Err(CertError::Der(_))));
        assert!(matches!(pem_to_der("hello"), Err(CertError::Pem(_))));
        let leaf_pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", pem_body(&der));
        assert!(matches!(TenantCa::from_pem("x", &leaf_pem), Err(CertError::NotACa { .. })));
    }

    #[test]
    fn a_bundle_yields_every_ca() {
        let bundle = format!("{}{}", ca("One").pem, ca("Two").pem);
        let cas = TenantCa::from_pem("acme", &bundle).unwrap();
        assert_eq!(cas.len(), 2);
        assert!(cas.iter().all(|c| c.name() == "acme"));
    }

    fn pem_body(der: &[u8]) -> String {
        // Minimal base64 for the test, so no extra dependency is needed.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in der.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.as_bytes().chunks(64).map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join("\n")
    }
}
