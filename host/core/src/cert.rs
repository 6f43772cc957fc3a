//! Client certificates: DER → the record policies receive, and verification against the
//! CA certificates a tenant trusts.
//!
//! Choices made here, and why:
//! - Expiry is not judged: the record carries `not_before`/`not_after` and the policy decides
//!   (hubs differ on grace periods and clock-skew allowances).
//! - Verification is one level deep: a tenant CA signs device certificates directly, as the
//!   hubs' custom-CA flows do. The broker's TLS stack has already checked the chain it was
//!   configured with; this check answers the different question "which *tenant* vouches for
//!   this device".
//! - The issuer must equal the CA's subject byte for byte (no RFC 5280 §7.1 case folding): a
//!   re-encoded name can only cause a false "not verified", never a false "verified".
//! - SHA-1 signatures never count as verified (chosen-prefix collisions are practical).
//! - Distinguished names are rendered like x509-parser does (encoded order, `", "` between
//!   RDNs, `" + "` inside one) but with RFC 4514 escaping, so that a CN of `a, O=Acme` cannot
//!   render the same as a real `O=Acme` attribute.
//! - Anything ambiguous in a field a policy reads (a CN that is not text, a repeated or
//!   malformed SAN or key-identifier extension) is an error rather than a guess: a dropped
//!   SAN or a lossily decoded CN could make two devices look alike.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Any, Class, Oid, Tag, ToDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::nom::{self, error::ErrorKind};
use x509_parser::objects::{oid_registry, oid2abbrev, oid2sn};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_ED25519, OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
    OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

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
    /// Name of the tenant CA that issued and signed this certificate, if any.
    pub chain_verified_by: Option<String>,
}

impl Certificate {
    /// Whether `unix_secs` lies within the validity period; both ends count as valid, as in
    /// RFC 5280 §4.1.2.5.
    pub fn is_valid_at(&self, unix_secs: i64) -> bool {
        self.not_before <= unix_secs && unix_secs <= self.not_after
    }
}

/// Why a certificate or a tenant CA could not be used; each variant names the stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The PEM text is malformed or holds no certificate.
    #[error("PEM text holds no usable certificate: {0}")]
    Pem(String),
    /// The client certificate's bytes are not one DER X.509 certificate.
    #[error("client certificate is not valid DER: {0}")]
    Der(String),
    /// A field policies read cannot be extracted without guessing.
    #[error("client certificate has an unusable {field}: {reason}")]
    Field {
        /// Which field or extension.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tenant CA's PEM or DER does not parse.
    #[error("tenant CA `{name}` cannot be read: {reason}")]
    CaUnreadable {
        /// The CA's configured name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// A certificate configured as a tenant CA may not sign certificates.
    #[error("tenant CA `{name}` ({subject}) is not a CA certificate: {reason}")]
    NotACa {
        /// The CA's configured name.
        name: String,
        /// The certificate's subject.
        subject: String,
        /// Which constraint it fails.
        reason: &'static str,
    },
    /// A tenant CA's key could never verify a signature here, so every device would silently
    /// come out unverified; refused at load instead.
    #[error(
        "tenant CA `{name}` ({subject}) has a {key} key, which cannot verify client certificates \
         (supported: RSA 2048-8192 bits, ECDSA P-256 or P-384, Ed25519)"
    )]
    UnsupportedCaKey {
        /// The CA's configured name.
        name: String,
        /// The certificate's subject.
        subject: String,
        /// The key type found.
        key: String,
    },
}

/// Every certificate in a PEM text, as DER, in order. Other blocks (keys, CRLs) are skipped;
/// lines may be indented, as they often are when PEM is pasted into a configuration file.
pub fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, CertError> {
    pem_certificates(pem).map_err(CertError::Pem)
}

fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut text = String::with_capacity(pem.len() + 1);
    for line in pem.lines() {
        text.push_str(line.trim());
        text.push('\n');
    }
    let mut ders = Vec::new();
    let mut others = Vec::new();
    for (i, block) in Pem::iter_from_buffer(text.as_bytes()).enumerate() {
        let block = block.map_err(|e| format!("PEM block {} is malformed: {e}", i + 1))?;
        if block.label == "CERTIFICATE" {
            ders.push(block.contents);
        } else {
            others.push(block.label);
        }
    }
    match (ders.is_empty(), others.is_empty()) {
        (false, _) => Ok(ders),
        (true, true) => Err("no `-----BEGIN CERTIFICATE-----` block found".to_owned()),
        (true, false) => Err(format!("no CERTIFICATE block, only: {}", others.join(", "))),
    }
}

/// Parses exactly one certificate; the error is worded for whoever configured the input,
/// since x509-parser's own messages ("nom error: Eof") mean little to them.
fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    if der.is_empty() {
        return Err("no bytes".to_owned());
    }
    if der.starts_with(b"-----BEGIN") {
        return Err("this is PEM text; pass the DER inside it".to_owned());
    }
    if der[0] != 0x30 {
        return Err(format!("does not start with a DER SEQUENCE (first byte 0x{:02x})", der[0]));
    }
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} unexpected bytes after the certificate", rest.len())),
        Err(nom::Err::Incomplete(_) | nom::Err::Error(X509Error::NomError(ErrorKind::Eof))) => {
            Err("truncated: a length runs past the end of the input".to_owned())
        }
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e.to_string()),
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses a DER client certificate into the record policies receive, verified against no CA.
pub fn parse_der(der: &[u8]) -> Result<Certificate, CertError> {
    parse_and_verify(der, &[])
}

/// Parses `der` and sets `chain_verified_by` to the first of `cas` that issued it: the issuer
/// DN equals the CA's subject *and* the signature verifies with the CA's key. A certificate
/// none of them signed is not an error; the policy decides what that means.
pub fn parse_and_verify(der: &[u8], cas: &[TenantCa]) -> Result<Certificate, CertError> {
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
    let chain_verified_by = cas.iter().find(|ca| ca.issued(&cert)).map(|ca| ca.name.clone());
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
        chain_verified_by,
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

/// The text of a directory string, or `None` when it is not one or does not decode.
fn text(value: &Any<'_>) -> Option<String> {
    if value.class() != Class::Universal || value.header.is_constructed() {
        return None;
    }
    let data = value.data;
    match value.tag() {
        // T61/Teletex is nominally another charset; in practice encoders put ASCII or UTF-8 there.
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::T61String
        | Tag::GeneralString
        | Tag::GraphicString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString if data.len().is_multiple_of(2) => {
            char::decode_utf16(data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])))
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString if data.len().is_multiple_of(4) => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect::<Option<String>>(),
        _ => None,
    }
}

fn tag_name(value: &Any<'_>) -> String {
    if value.class() == Class::Universal {
        format!("{}", value.tag())
    } else {
        format!("{:?} {}", value.class(), value.tag().0)
    }
}

/// A distinguished name as text; see the module documentation for the format.
fn render_name(name: &X509Name<'_>) -> String {
    let registry = oid_registry();
    let mut out = String::new();
    for (i, rdn) in name.iter_rdn().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            match oid2abbrev(attr.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match text(attr.attr_value()) {
                Some(value) => escape_value(&mut out, &value),
                None => {
                    // RFC 4514 §2.4: a value without a string form is `#` and its BER in hex.
                    out.push('#');
                    let der = attr.attr_value().to_der_vec().unwrap_or_else(|_| attr.attr_value().data.to_vec());
                    out.push_str(&hex(&der));
                }
            }
        }
    }
    out
}

/// RFC 4514 §2.4 escaping, plus control characters as `\XX` so a name cannot break a log line.
fn escape_value(out: &mut String, value: &str) {
    for (i, c) in value.char_indices() {
        let first = i == 0;
        let last = i + c.len_utf8() == value.len();
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if first => out.push_str("\\#"),
            ' ' if first || last => out.push_str("\\ "),
            c if c.is_control() => {
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// A CA certificate a tenant trusts, under a name that events and policies see.
///
/// Accepted as a CA: a v3 certificate with basicConstraints `cA` TRUE (and, if it has a
/// keyUsage extension, keyCertSign), or a v1/v2 certificate, which cannot carry extensions
/// and whose CA status RFC 5280 §6.1.4(k) leaves to out-of-band trust, as configuring it here
/// is. A v3 certificate without basicConstraints is refused: that is the usual shape of a
/// device certificate pasted by mistake.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantCa {
    name: String,
    der: Vec<u8>,
    subject: String,
    subject_raw: Vec<u8>,
    spki_raw: Vec<u8>,
}

impl std::fmt::Debug for TenantCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCa").field("name", &self.name).field("subject", &self.subject).finish_non_exhaustive()
    }
}

impl TenantCa {
    /// Every certificate in a PEM bundle, all under `name`; fails if any of them is not a
    /// usable CA, so a bad bundle is noticed at load rather than at the first device.
    pub fn from_pem(name: &str, pem: &str) -> Result<Vec<TenantCa>, CertError> {
        let ders = pem_certificates(pem).map_err(|reason| CertError::CaUnreadable { name: name.to_owned(), reason })?;
        let count = ders.len();
        ders.iter()
            .enumerate()
            .map(|(i, der)| {
                TenantCa::from_der(name, der).map_err(|e| match e {
                    CertError::CaUnreadable { name, reason } if count > 1 => {
                        CertError::CaUnreadable { name, reason: format!("certificate {} of {count}: {reason}", i + 1) }
                    }
                    e => e,
                })
            })
            .collect()
    }

    /// One CA certificate in DER; see the type's documentation for what counts as a CA.
    pub fn from_der(name: &str, der: &[u8]) -> Result<TenantCa, CertError> {
        let cert = parse(der).map_err(|reason| CertError::CaUnreadable {
            name: name.to_owned(),
            reason: format!("not valid DER: {reason}"),
        })?;
        let subject = render_name(cert.subject());
        if let Err(reason) = may_sign_certificates(&cert) {
            return Err(CertError::NotACa { name: name.to_owned(), subject, reason });
        }
        if let Err(key) = usable_key(cert.public_key()) {
            return Err(CertError::UnsupportedCaKey { name: name.to_owned(), subject, key });
        }
        Ok(TenantCa {
            name: name.to_owned(),
            der: der.to_vec(),
            subject,
            subject_raw: cert.subject().as_raw().to_vec(),
            spki_raw: cert.public_key().raw.to_vec(),
        })
    }

    /// The name given to this CA, reported in `chain_verified_by`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA's subject, rendered like [`Certificate::subject`].
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The CA certificate as configured, in DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    fn issued(&self, cert: &X509Certificate<'_>) -> bool {
        // Names first: cheap, and a signature by the right key under another name is another CA.
        if cert.issuer().as_raw() != self.subject_raw.as_slice() {
            return false;
        }
        // RFC 5280 §4.1.1.2: the signed and the outer algorithm identifiers must agree.
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return false;
        }
        let alg = &cert.signature_algorithm.algorithm;
        if *alg == OID_PKCS1_SHA1WITHRSA || *alg == OID_SHA1_WITH_RSA {
            return false;
        }
        let Ok((_, key)) = SubjectPublicKeyInfo::from_der(&self.spki_raw) else { return false };
        cert.verify_signature(Some(&key)).is_ok()
    }
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

/// Whether x509-parser's verifier (ring) can check signatures made with this key; the key
/// type it found otherwise.
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
mod tests {
    use super::*;
    use rcgen::string::{BmpString, PrintableString, UniversalString};
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PublicKeyData, SanType,
        SerialNumber, SignatureAlgorithm, SigningKey, date_time_ymd,
    };
    use std::time::Duration;

    /// 2025-01-01T01:02:03Z and 2030-01-01T00:00:00Z.
    const NOT_BEFORE: i64 = 1_735_693_323;
    const NOT_AFTER: i64 = 1_893_456_000;

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: Vec<u8>,
        pem: String,
    }

    impl Ca {
        fn new(cn: &str) -> Ca {
            Ca::with(cn, &PKCS_ECDSA_P256_SHA256, |_| {})
        }

        fn with(cn: &str, alg: &'static SignatureAlgorithm, tweak: impl FnOnce(&mut CertificateParams)) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::OrganizationName, "Tenant");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            tweak(&mut params);
            let key = KeyPair::generate_for(alg).unwrap();
            let cert = params.self_signed(&key).unwrap();
            Ca { der: cert.der().to_vec(), pem: cert.pem(), params, key }
        }

        fn tenant(&self, name: &str) -> TenantCa {
            TenantCa::from_der(name, &self.der).unwrap()
        }

        /// Signs `params` for a fresh P-256 device key.
        fn sign(&self, params: &CertificateParams) -> Vec<u8> {
            self.sign_for(params, &KeyPair::generate().unwrap())
        }

        fn sign_for(&self, params: &CertificateParams, device: &KeyPair) -> Vec<u8> {
            params.signed_by(device, &Issuer::from_params(&self.params, &self.key)).unwrap().der().to_vec()
        }
    }

    fn device(cn: Option<&str>) -> CertificateParams {
        let mut params =
            CertificateParams::new(vec!["dev-1.example.com".to_owned(), "alt.example.com".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::URI("spiffe://acme/dev-1".try_into().unwrap()));
        params.subject_alt_names.push(SanType::URI("urn:device:1".try_into().unwrap()));
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.distinguished_name.push(DnType::OrganizationName, "Acme");
        params.serial_number = Some(SerialNumber::from_slice(&[0x01, 0x02, 0xab]));
        params.not_before = date_time_ymd(2025, 1, 1) + Duration::from_secs(3723);
        params.not_after = date_time_ymd(2030, 1, 1);
        params.use_authority_key_identifier_extension = true;
        params
    }

    fn der_with_subject(dn: DistinguishedName) -> Vec<u8> {
        let mut params = device(None);
        params.distinguished_name = dn;
        Ca::new("A").sign(&params)
    }

    #[test]
    fn the_record_carries_every_field() {
        let a = Ca::new("Tenant A CA");
        let mut params = device(Some("dev-1"));
        params.is_ca = IsCa::ExplicitNoCa; // rcgen writes a subject key id only with basicConstraints
        let device_key = KeyPair::generate().unwrap();
        let der = a.sign_for(&params, &device_key);
        let c = parse_der(&der).unwrap();
        assert_eq!(c.subject_cn.as_deref(), Some("dev-1"));
        assert_eq!(c.subject, "CN=dev-1, O=Acme", "encoded order, x509-parser's separators");
        assert_eq!(c.issuer, "O=Tenant, CN=Tenant A CA", "not reversed into LDAP order");
        assert_eq!(c.serial, "0102ab");
        assert_eq!(c.sha256, hex(&Sha256::digest(&der)));
        assert_eq!(c.sha256.len(), 64);
        assert_eq!(c.not_before, NOT_BEFORE);
        assert_eq!(c.not_after, NOT_AFTER);
        assert_eq!(c.dns_names, ["dev-1.example.com", "alt.example.com"]);
        assert_eq!(c.uris, ["spiffe://acme/dev-1", "urn:device:1"]);
        let ca_record = parse_der(&a.der).unwrap();
        let ca_key_id = ca_record.subject_key_id.clone().expect("rcgen gives CAs a subject key id");
        assert_eq!(c.authority_key_id.as_deref(), Some(ca_key_id.as_str()), "the device names its CA's key");
        assert_eq!(ca_key_id, hex(&a.params.key_identifier(&a.key)));
        assert_eq!(c.subject_key_id, Some(hex(&params.key_identifier(&device_key))));
        assert_ne!(c.subject_key_id, c.authority_key_id);
        assert_eq!(parse_der(&a.sign(&device(Some("dev-1")))).unwrap().subject_key_id, None, "absent stays None");
        assert_eq!(c.chain_verified_by, None, "nothing verifies without CAs");
    }

    #[test]
    fn validity_is_inclusive_and_times_outside_utctime_work() {
        let c = parse_der(&Ca::new("A").sign(&device(Some("d")))).unwrap();
        assert!(c.is_valid_at(NOT_BEFORE) && c.is_valid_at(NOT_AFTER) && c.is_valid_at(1_800_000_000));
        assert!(!c.is_valid_at(NOT_BEFORE - 1) && !c.is_valid_at(NOT_AFTER + 1));

        let mut params = device(Some("d"));
        params.not_before = date_time_ymd(1969, 12, 31);
        params.not_after = date_time_ymd(2051, 6, 1); // GeneralizedTime from 2050 on
        let c = parse_der(&Ca::new("A").sign(&params)).unwrap();
        assert_eq!((c.not_before, c.not_after), (-86_400, 2_569_190_400));
    }

    #[test]
    fn serials_are_minimal_lower_case_hex() {
        let a = Ca::new("A");
        let serial_of = |bytes: &[u8]| {
            let mut params = device(Some("d"));
            params.serial_number = Some(SerialNumber::from_slice(bytes));
            parse_der(&a.sign(&params)).unwrap().serial
        };
        assert_eq!(serial_of(&[0x80, 0x01]), "8001", "the DER sign-padding byte is not part of the value");
        assert_eq!(serial_of(&[0xDE, 0xAD, 0xBE, 0xEF]), "deadbeef");
        assert_eq!(serial_of(&[0x2a]), "2a");

        // The serial rcgen picks itself (20 bytes derived from the key).
        let mut params = device(Some("d"));
        params.serial_number = None;
        let der = a.sign(&params);
        let record = parse_der(&der).unwrap();
        let (_, x509) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(record.serial, hex(&x509.tbs_certificate.serial.to_bytes_be()));
        assert!(record.serial.len() >= 36 && record.serial.len() <= 40, "{}", record.serial);
        assert!(record.serial.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn empty_and_missing_common_names_differ() {
        let a = Ca::new("A");
        let empty = parse_der(&a.sign(&device(Some("")))).unwrap();
        assert_eq!(empty.subject_cn.as_deref(), Some(""));
        assert_eq!(empty.subject, "CN=, O=Acme");
        let missing = parse_der(&a.sign(&device(None))).unwrap();
        assert_eq!(missing.subject_cn, None);
        assert_eq!(missing.subject, "O=Acme");
    }

    #[test]
    fn names_are_escaped_so_a_cn_cannot_forge_other_attributes() {
        let a = Ca::new("A");
        let genuine = parse_der(&a.sign(&device(Some("dev-1")))).unwrap();
        let mut forged = DistinguishedName::new();
        forged.push(DnType::CommonName, "dev-1, O=Acme");
        let forged = parse_der(&der_with_subject(forged)).unwrap();
        assert_eq!(forged.subject, r"CN=dev-1\, O=Acme");
        assert_ne!(forged.subject, genuine.subject);
        assert_eq!(forged.subject_cn.as_deref(), Some("dev-1, O=Acme"), "the CN itself is not escaped");

        let mut odd = DistinguishedName::new();
        odd.push(DnType::CommonName, "# a+b;\"<x>\\ ");
        odd.push(DnType::OrganizationName, "line\nbreak");
        assert_eq!(parse_der(&der_with_subject(odd)).unwrap().subject, r#"CN=\# a\+b\;\"\<x\>\\\ , O=line\0Abreak"#);
    }

    #[test]
    fn every_directory_string_type_decodes() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::BmpString(BmpString::try_from("Gerät-7").unwrap()));
        dn.push(DnType::OrganizationName, DnValue::PrintableString(PrintableString::try_from("Acme Ltd").unwrap()));
        dn.push(DnType::OrganizationalUnitName, DnValue::UniversalString(UniversalString::try_from("Ωmega").unwrap()));
        dn.push(DnType::CountryName, "DE");
        let c = parse_der(&der_with_subject(dn)).unwrap();
        assert_eq!(c.subject_cn.as_deref(), Some("Gerät-7"));
        assert_eq!(c.subject, "CN=Gerät-7, O=Acme Ltd, OU=Ωmega, C=DE");
    }

    #[test]
    fn the_first_of_several_common_names_counts() {
        let signer = KeyPair::generate().unwrap();
        let subject = name(&[(OID_CN, UTF8, b"first"), (OID_O, UTF8, b"Acme"), (OID_CN, UTF8, b"second")]);
        let der =
            hand_made(true, &name(&[(OID_CN, UTF8, b"Hand CA")]), &subject, &signer.subject_public_key_info(), &signer);
        let c = parse_der(&der).unwrap();
        assert_eq!(c.subject_cn.as_deref(), Some("first"));
        assert_eq!(c.subject, "CN=first, O=Acme, CN=second");
    }

    #[test]
    fn a_common_name_that_is_not_text_is_refused_but_other_attributes_are_rendered() {
        let signer = KeyPair::generate().unwrap();
        let issuer = name(&[(OID_CN, UTF8, b"Hand CA")]);
        let spki = signer.subject_public_key_info();
        let bad_cn = hand_made(true, &issuer, &name(&[(OID_CN, UTF8, b"dev\xff")]), &spki, &signer);
        let err = parse_der(&bad_cn).unwrap_err();
        assert!(matches!(err, CertError::Field { field: "subject common name", .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "client certificate has an unusable subject common name: its value (Utf8String) is not decodable text"
        );

        let bad_o = hand_made(true, &issuer, &name(&[(OID_CN, UTF8, b"dev"), (OID_O, UTF8, b"\xff")]), &spki, &signer);
        let c = parse_der(&bad_o).unwrap();
        assert_eq!(c.subject, "CN=dev, O=#0c01ff", "RFC 4514 hex form of the DER value");
    }

    #[test]
    fn only_the_issuing_tenant_ca_verifies() {
        let (a, b) = (Ca::new("Tenant A CA"), Ca::new("Tenant B CA"));
        let der = a.sign(&device(Some("dev-1")));
        let (ta, tb) = (a.tenant("tenant-a"), b.tenant("tenant-b"));
        let verified_by = |cas: &[TenantCa]| parse_and_verify(&der, cas).unwrap().chain_verified_by;
        assert_eq!(verified_by(std::slice::from_ref(&ta)).as_deref(), Some("tenant-a"));
        assert_eq!(verified_by(std::slice::from_ref(&tb)), None);
        assert_eq!(verified_by(&[tb.clone(), ta.clone()]).as_deref(), Some("tenant-a"));
        assert_eq!(verified_by(&[]), None);
        // Everything but chain_verified_by is the same as an unverified parse.
        let verified = parse_and_verify(&der, &[tb, ta]).unwrap();
        assert_eq!(Certificate { chain_verified_by: None, ..verified }, parse_der(&der).unwrap());
    }

    #[test]
    fn a_spoofed_issuer_name_signed_by_another_key_does_not_verify() {
        let a = Ca::new("Tenant A CA");
        // The forger's "CA": tenant A's exact subject DN, the forger's own key.
        let forger =
            Ca { params: a.params.clone(), key: KeyPair::generate().unwrap(), der: vec![], pem: String::new() };
        let der = forger.sign(&device(Some("dev-1")));
        let c = parse_and_verify(&der, &[a.tenant("tenant-a")]).unwrap();
        assert_eq!(c.issuer, parse_der(&a.der).unwrap().subject, "the names match");
        assert_eq!(c.chain_verified_by, None, "but the signature does not");

        // A self-signed device certificate whose subject and issuer are tenant A's name.
        let key = KeyPair::generate().unwrap();
        let self_signed = a.params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(parse_and_verify(&self_signed, &[a.tenant("tenant-a")]).unwrap().chain_verified_by, None);
    }

    #[test]
    fn the_right_key_under_another_name_does_not_verify() {
        let a = Ca::new("Tenant A CA");
        let mut renamed = a.params.clone();
        renamed.distinguished_name.push(DnType::CommonName, "Someone Else");
        let impostor = Ca {
            params: renamed,
            key: KeyPair::from_pem(&a.key.serialize_pem()).unwrap(),
            der: vec![],
            pem: String::new(),
        };
        let der = impostor.sign(&device(Some("dev-1")));
        assert_eq!(parse_and_verify(&der, &[a.tenant("tenant-a")]).unwrap().chain_verified_by, None);
    }

    #[test]
    fn a_modified_certificate_does_not_verify() {
        let a = Ca::new("Tenant A CA");
        let mut der = a.sign(&device(Some("dev-1")));
        let at = der.windows(5).position(|w| w == b"dev-1").unwrap();
        der[at + 4] = b'2';
        let c = parse_and_verify(&der, &[a.tenant("tenant-a")]).unwrap();
        assert_eq!(c.subject_cn.as_deref(), Some("dev-2"));
        assert_eq!(c.chain_verified_by, None);
    }

    #[test]
    fn p384_and_ed25519_cas_verify() {
        for (alg, label) in
            [(&PKCS_ECDSA_P384_SHA384, "p384"), (&PKCS_ED25519, "ed25519"), (&PKCS_ECDSA_P256_SHA256, "p256")]
        {
            let ca = Ca::with(label, alg, |_| {});
            let other = Ca::with(label, alg, |_| {});
            let der = ca.sign(&device(Some("dev-1")));
            assert_eq!(parse_and_verify(&der, &[ca.tenant(label)]).unwrap().chain_verified_by.as_deref(), Some(label));
            assert_eq!(parse_and_verify(&der, &[other.tenant(label)]).unwrap().chain_verified_by, None, "{label}");
        }
    }

    #[test]
    fn a_v1_ca_is_accepted_and_verifies() {
        let key = KeyPair::generate().unwrap();
        let root_name = name(&[(OID_CN, UTF8, b"Legacy Root")]);
        let root = hand_made(false, &root_name, &root_name, &key.subject_public_key_info(), &key);
        let (_, parsed) = X509Certificate::from_der(&root).unwrap();
        assert_eq!(parsed.version().0, 0, "hand-made as v1");
        let ca = TenantCa::from_der("legacy", &root).unwrap();
        assert_eq!(ca.subject(), "CN=Legacy Root");

        let mut root_params = CertificateParams::default();
        root_params.distinguished_name = DistinguishedName::new();
        root_params.distinguished_name.push(DnType::CommonName, "Legacy Root");
        let der = Ca { params: root_params, key, der: root, pem: String::new() }.sign(&device(Some("dev-1")));
        assert_eq!(parse_and_verify(&der, &[ca]).unwrap().chain_verified_by.as_deref(), Some("legacy"));
    }

    #[test]
    fn certificates_that_may_not_sign_are_refused_as_cas() {
        let a = Ca::new("A");
        let device_der = a.sign(&device(Some("dev-1")));
        let err = TenantCa::from_der("acme", &device_der).unwrap_err();
        assert!(
            matches!(&err, CertError::NotACa { name, subject, .. } if name == "acme" && subject == "CN=dev-1, O=Acme")
        );
        assert!(err.to_string().contains("without basicConstraints"), "{err}");

        let explicit = Ca::with("No", &PKCS_ECDSA_P256_SHA256, |p| p.is_ca = IsCa::ExplicitNoCa);
        let err = TenantCa::from_der("acme", &explicit.der).unwrap_err();
        assert!(matches!(err, CertError::NotACa { reason: "basicConstraints says cA: FALSE", .. }), "{err:?}");

        let no_cert_sign =
            Ca::with("KU", &PKCS_ECDSA_P256_SHA256, |p| p.key_usages = vec![KeyUsagePurpose::DigitalSignature]);
        let err = TenantCa::from_der("acme", &no_cert_sign.der).unwrap_err();
        assert!(matches!(err, CertError::NotACa { reason: "keyUsage does not include keyCertSign", .. }), "{err:?}");

        let with_cert_sign = Ca::with("KU", &PKCS_ECDSA_P256_SHA256, |p| {
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
        });
        assert_eq!(TenantCa::from_der("acme", &with_cert_sign.der).unwrap().name(), "acme");
    }

    #[test]
    fn a_ca_key_that_could_never_verify_is_refused() {
        let signer = KeyPair::generate().unwrap();
        // id-ecPublicKey on secp521r1, which ring cannot verify with.
        let algorithm = seq(&[
            &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            &tlv(0x06, &[0x2b, 0x81, 0x04, 0x00, 0x23]),
        ]);
        let spki = seq(&[&algorithm, &tlv(0x03, &[&[0x00, 0x04][..], &[7; 132]].concat())]);
        let root_name = name(&[(OID_CN, UTF8, b"P-521 Root")]);
        let der = hand_made(false, &root_name, &root_name, &spki, &signer);
        let err = TenantCa::from_der("acme", &der).unwrap_err();
        assert!(matches!(&err, CertError::UnsupportedCaKey { key, .. } if key == "ECDSA secp521r1"), "{err:?}");
        assert!(err.to_string().contains("cannot verify client certificates"), "{err}");
    }

    #[test]
    fn malformed_and_repeated_alternative_names_are_refused() {
        let a = Ca::new("A");
        let mut repeated = device(Some("d"));
        // rcgen writes its own SAN extension from subject_alt_names, so this one is a second.
        repeated
            .custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 17], tlv(0x30, &tlv(0x82, b"x.example"))));
        let err = parse_der(&a.sign(&repeated)).unwrap_err();
        assert_eq!(
            err,
            CertError::Field {
                field: "subject alternative name",
                reason: "the extension appears more than once".into()
            }
        );

        let mut malformed = device(Some("d"));
        malformed.subject_alt_names.clear();
        malformed.custom_extensions.push(CustomExtension::from_oid_content(&[2, 5, 29, 17], vec![0x30, 0x05, 0x82]));
        assert!(matches!(
            parse_der(&a.sign(&malformed)),
            Err(CertError::Field { field: "subject alternative name", .. })
        ));

        let mut not_text = device(Some("d"));
        not_text.subject_alt_names.clear();
        not_text
            .custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 17], tlv(0x30, &tlv(0x82, b"\xff\xfe"))));
        let err = parse_der(&a.sign(&not_text)).unwrap_err();
        assert!(err.to_string().contains("a DNS name is not valid text"), "{err}");
    }

    #[test]
    fn bytes_that_are_not_one_certificate_are_refused() {
        let der = Ca::new("A").sign(&device(Some("d")));
        for bad in [&b""[..], b"not a certificate", b"-----BEGIN CERTIFICATE-----", &[0x30, 0x03, 0x02, 0x01, 0x01]] {
            let err = parse_der(bad).unwrap_err();
            assert!(matches!(err, CertError::Der(_)), "{bad:?}: {err:?}");
            assert!(err.to_string().starts_with("client certificate is not valid DER: "), "{err}");
        }
        for cut in [1, 4, 100, der.len() / 2, der.len() - 1] {
            let err = parse_der(&der[..cut]).unwrap_err();
            assert!(matches!(&err, CertError::Der(m) if m.starts_with("truncated")), "cut at {cut}: {err:?}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(parse_der(&trailing), Err(CertError::Der("1 unexpected bytes after the certificate".into())));
        assert!(
            matches!(TenantCa::from_der("acme", b"junk"), Err(CertError::CaUnreadable { name, .. }) if name == "acme")
        );
    }

    #[test]
    fn pem_without_a_certificate_is_refused() {
        assert!(matches!(pem_to_der(""), Err(CertError::Pem(_))));
        assert!(matches!(pem_to_der("hello"), Err(CertError::Pem(_))));
        let key_only = KeyPair::generate().unwrap().serialize_pem();
        let err = pem_to_der(&key_only).unwrap_err();
        assert!(err.to_string().contains("only: PRIVATE KEY"), "{err}");
        let err = TenantCa::from_pem("acme", &key_only).unwrap_err();
        assert!(matches!(&err, CertError::CaUnreadable { name, .. } if name == "acme"), "{err:?}");
        let unterminated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert!(matches!(pem_to_der(unterminated), Err(CertError::Pem(_))));
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(pem_to_der(bad_base64).unwrap_err().to_string().contains("block 1 is malformed"));
    }

    #[test]
    fn a_bundle_yields_every_ca_and_indentation_is_tolerated() {
        let (one, two) = (Ca::new("One"), Ca::new("Two"));
        let key = KeyPair::generate().unwrap().serialize_pem();
        let bundle = format!("{}{key}{}", one.pem, two.pem);
        assert_eq!(pem_to_der(&bundle).unwrap(), [one.der.clone(), two.der.clone()], "the key block is skipped");
        let cas = TenantCa::from_pem("acme", &bundle).unwrap();
        assert_eq!(cas.len(), 2);
        assert!(cas.iter().all(|c| c.name() == "acme"));
        assert_eq!([cas[0].subject(), cas[1].subject()], ["O=Tenant, CN=One", "O=Tenant, CN=Two"]);
        assert_eq!(cas[1].der(), two.der);

        let indented: String = one.pem.lines().map(|l| format!("    {l}\r\n")).collect();
        assert_eq!(pem_to_der(&indented).unwrap(), std::slice::from_ref(&one.der));

        let device_pem = Ca::new("A").sign(&device(Some("dev-1")));
        let mixed = format!("{}{}", one.pem, pem_of(&device_pem));
        let err = TenantCa::from_pem("acme", &mixed).unwrap_err();
        assert!(matches!(err, CertError::NotACa { .. }), "one bad certificate spoils the bundle: {err:?}");
    }

    // ---- hand-made DER, for shapes rcgen will not produce ----

    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
    const UTF8: u8 = 0x0c;
    const ECDSA_WITH_SHA256: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n <= 0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    /// A Name with one attribute per RDN, in the order given.
    fn name(attrs: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> =
            attrs.iter().map(|(oid, tag, value)| tlv(0x31, &seq(&[&tlv(0x06, oid), &tlv(*tag, value)]))).collect();
        tlv(0x30, &rdns.concat())
    }

    /// A certificate signed with ECDSA P-256 by `signer`; v1 (no version, no extensions) or v3.
    fn hand_made(v3: bool, issuer: &[u8], subject: &[u8], spki: &[u8], signer: &KeyPair) -> Vec<u8> {
        let version = if v3 { tlv(0xa0, &tlv(0x02, &[2])) } else { vec![] };
        let validity = seq(&[&tlv(0x17, b"250101000000Z"), &tlv(0x17, b"300101000000Z")]);
        let tbs = seq(&[&version, &tlv(0x02, &[0x05]), ECDSA_WITH_SHA256, issuer, &validity, subject, spki]);
        let signature = signer.sign(&tbs).unwrap();
        seq(&[&tbs, ECDSA_WITH_SHA256, &tlv(0x03, &[&[0u8][..], &signature].concat())])
    }

    fn pem_of(der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                b64.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
            }
        }
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    }
}
