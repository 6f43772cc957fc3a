//! The record policies receive, extracted from a DER client certificate.

use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Oid, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use super::error::CertError;
use super::names::{render_name, tag_name, text};
use super::pem::parse;
use crate::hex::hex;

/// A parsed client certificate (mirrors the WIT record `certificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Subject common name: `None` without a CN, `Some("")` when the CN is present but empty.
    /// With several CNs the first one encoded counts, as with OpenSSL-based brokers.
    pub subject_cn: Option<String>,
    /// Subject distinguished name, e.g. `CN=dev-1, O=Acme` (encoded order, RFC 4514 escaping;
    /// a value that is not text appears as `#` and the hex of its DER).
    pub subject: String,
    /// Issuer distinguished name, rendered like `subject`.
    pub issuer: String,
    /// Serial number, lower-case hex without separators or leading zero bytes (as
    /// `openssl x509 -serial` prints it, lower-cased).
    pub serial: String,
    /// SHA-256 of the DER, lower-case hex: the fingerprint hubs register devices by.
    pub sha256: String,
    /// Validity start, seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity end (inclusive), seconds since the Unix epoch.
    pub not_after: i64,
    /// DNS subject alternative names, in certificate order.
    pub dns_names: Vec<String>,
    /// URI subject alternative names, in certificate order.
    pub uris: Vec<String>,
    /// Key identifier of the authority key identifier extension, lower-case hex.
    pub authority_key_id: Option<String>,
    /// Subject key identifier, lower-case hex.
    pub subject_key_id: Option<String>,
    /// Name of the tenant CA whose trust anchor this certificate's chain leads to (directly or
    /// through intermediates), checked now, if any.
    pub chain_verified_by: Option<String>,
}

impl Certificate {
    /// Whether `unix_secs` lies within the validity period; both ends count as valid, as in
    /// RFC 5280 §4.1.2.5.
    pub fn is_valid_at(&self, unix_secs: i64) -> bool {
        self.not_before <= unix_secs && unix_secs <= self.not_after
    }
}

/// The record of `der`, with `chain_verified_by` unset: verification is the caller's.
pub(super) fn extract(der: &[u8]) -> Result<Certificate, CertError> {
    let cert = parse(der).map_err(CertError::Der)?;
    let subject_cn = match cert.subject().iter_common_name().next() {
        None => None,
        Some(cn) => Some(text(cn.attr_value()).ok_or_else(|| CertError::Field {
            field: "subject common name",
            reason: format!("its value ({}) is not decodable text", tag_name(cn.attr_value())),
        })?),
    };
    let (dns_names, uris) = alternative_names(&cert)?;
    let authority_key_id = match extension(&cert, &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, "authority key identifier")? {
        Some(ParsedExtension::AuthorityKeyIdentifier(aki)) => aki.key_identifier.as_ref().map(|k| hex(k.0)),
        _ => None,
    };
    let subject_key_id = match extension(&cert, &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER, "subject key identifier")? {
        Some(ParsedExtension::SubjectKeyIdentifier(k)) => Some(hex(k.0)),
        _ => None,
    };
    let raw_serial = cert.raw_serial();
    // DER pads a serial whose top bit is set with 0x00; that byte is encoding, not value.
    let significant = raw_serial.iter().position(|b| *b != 0).unwrap_or(raw_serial.len().saturating_sub(1));
    Ok(Certificate {
        subject_cn,
        subject: render_name(cert.subject()),
        issuer: render_name(cert.issuer()),
        serial: hex(&raw_serial[significant..]),
        sha256: hex(&Sha256::digest(der)),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        uris,
        authority_key_id,
        subject_key_id,
        chain_verified_by: None,
    })
}

/// The parsed content of the only extension with `oid`. x509-parser keeps a malformed
/// extension as `ParseError` and lets duplicates through; both are refused here.
fn extension<'c, 'a>(
    cert: &'c X509Certificate<'a>,
    oid: &Oid<'_>,
    field: &'static str,
) -> Result<Option<&'c ParsedExtension<'a>>, CertError> {
    let ext = cert
        .get_extension_unique(oid)
        .map_err(|_| CertError::Field { field, reason: "the extension appears more than once".to_owned() })?;
    match ext.map(|e| e.parsed_extension()) {
        Some(ParsedExtension::ParseError { error }) => {
            Err(CertError::Field { field, reason: format!("the extension does not parse: {error}") })
        }
        other => Ok(other),
    }
}

fn alternative_names(cert: &X509Certificate<'_>) -> Result<(Vec<String>, Vec<String>), CertError> {
    const FIELD: &str = "subject alternative name";
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    if let Some(ParsedExtension::SubjectAlternativeName(san)) = extension(cert, &OID_X509_EXT_SUBJECT_ALT_NAME, FIELD)?
    {
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                // x509-parser keeps undecodable entries as `Invalid`; dropping a DNS name or URI
                // would change what the policy sees.
                GeneralName::Invalid(tag, _) if *tag == Tag(2) || *tag == Tag(6) => {
                    let kind = if *tag == Tag(2) { "DNS name" } else { "URI" };
                    return Err(CertError::Field { field: FIELD, reason: format!("a {kind} is not valid text") });
                }
                _ => {}
            }
        }
    }
    Ok((dns, uris))
}
