//! Certificate reading and verification against rcgen-made and hand-made certificates.

use super::*;
use crate::hex::hex;
use rcgen::string::{BmpString, PrintableString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    PublicKeyData, SanType, SerialNumber, SignatureAlgorithm, SigningKey, date_time_ymd,
};
use sha2::{Digest, Sha256};
use std::time::Duration;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// 2025-01-01T01:02:03Z and 2049-12-31T00:00:00Z (the last UTCTime year: the certificates
/// these tests verify at the current time must stay valid for as long as the suite runs).
const NOT_BEFORE: i64 = 1_735_693_323;
const NOT_AFTER: i64 = 2_524_521_600;

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
    params.not_after = date_time_ymd(2049, 12, 31);
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
    let forger = Ca { params: a.params.clone(), key: KeyPair::generate().unwrap(), der: vec![], pem: String::new() };
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
    assert!(matches!(&err, CertError::NotACa { name, subject, .. } if name == "acme" && subject == "CN=dev-1, O=Acme"));
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
    let algorithm =
        seq(&[&tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]), &tlv(0x06, &[0x2b, 0x81, 0x04, 0x00, 0x23])]);
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
        CertError::Field { field: "subject alternative name", reason: "the extension appears more than once".into() }
    );

    let mut malformed = device(Some("d"));
    malformed.subject_alt_names.clear();
    malformed.custom_extensions.push(CustomExtension::from_oid_content(&[2, 5, 29, 17], vec![0x30, 0x05, 0x82]));
    assert!(matches!(parse_der(&a.sign(&malformed)), Err(CertError::Field { field: "subject alternative name", .. })));

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
    assert!(matches!(TenantCa::from_der("acme", b"junk"), Err(CertError::CaUnreadable { name, .. }) if name == "acme"));
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

// ---- chains through webpki: CA validity, intermediates, extended key usage, critical extensions ----

/// 2150-01-01T00:00:00Z: after the CAs below that end in 2100, before their devices end.
const YEAR_2150: i64 = 5_680_281_600;

/// A CA issued by `parent` (an intermediate), valid from 2000 to `until`.
fn intermediate(parent: &Ca, cn: &str, until: (i32, u8, u8)) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(until.0, until.1, until.2);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &Issuer::from_params(&parent.params, &parent.key)).unwrap();
    Ca { der: cert.der().to_vec(), pem: cert.pem(), params, key }
}

/// A device certificate valid from 2000 to 2200, with the given extended key usages.
fn client(eku: &[ExtendedKeyUsagePurpose]) -> CertificateParams {
    let mut params = device(Some("dev-1"));
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2200, 1, 1);
    params.extended_key_usages = eku.to_vec();
    params
}

fn why_not(der: &[u8], presented: &[&[u8]], cas: &[TenantCa]) -> String {
    verify_chain(der, presented, cas).map(|ca| ca.name().to_owned()).unwrap_err().to_string()
}

#[test]
fn an_expired_tenant_ca_is_refused_with_a_message_naming_it() {
    let old = Ca::with("Old CA", &PKCS_ECDSA_P256_SHA256, |p| {
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2001, 1, 1);
    });
    let err = TenantCa::from_der("old-ca", &old.der).unwrap_err();
    assert!(matches!(&err, CertError::CaExpired { name, .. } if name == "old-ca"), "{err:?}");
    assert_eq!(err.to_string(), "tenant CA `old-ca` (O=Tenant, CN=Old CA) expired at Jan  1 00:00:00 2001 +00:00");
    assert!(matches!(TenantCa::from_pem("old-ca", &old.pem), Err(CertError::CaExpired { .. })));

    let early = Ca::with("Early CA", &PKCS_ECDSA_P256_SHA256, |p| p.not_before = date_time_ymd(2190, 1, 1));
    let err = TenantCa::from_der("early", &early.der).unwrap_err();
    assert!(err.to_string().starts_with("tenant CA `early` (O=Tenant, CN=Early CA) is not valid before"), "{err}");

    // A CA valid when loaded that has expired since: its devices are no longer verified.
    let ca = Ca::with("Tenant CA", &PKCS_ECDSA_P256_SHA256, |p| {
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2100, 1, 1);
    });
    let cas = [ca.tenant("acme")];
    let der = ca.sign(&client(&[ExtendedKeyUsagePurpose::ClientAuth]));
    assert_eq!(verify_chain(&der, &[], &cas).unwrap().name(), "acme");
    let err = verify_chain_at(&der, &[], &cas, YEAR_2150).unwrap_err();
    assert_eq!(
        err.to_string(),
        "client certificate not verified by tenant CA `acme` (O=Tenant, CN=Tenant CA): it was issued by this CA, \
         whose certificate expired at Jan  1 00:00:00 2100 +00:00"
    );
    assert!(verify::tenant_ca_at("acme", &ca.der, YEAR_2150).is_err(), "and it would not load any more");
}

#[test]
fn a_chain_through_an_intermediate_verifies() {
    let root = Ca::new("Root");
    let issuing = intermediate(&root, "Issuing", (2200, 1, 1));
    let der = issuing.sign(&client(&[]));
    let anchors = [root.tenant("acme")];

    assert_eq!(parse_and_verify(&der, &anchors).unwrap().chain_verified_by, None, "no path without the intermediate");
    assert!(why_not(&der, &[], &anchors).contains("not issued by this CA"), "{}", why_not(&der, &[], &anchors));
    let presented = parse_and_verify_chain(&der, &[&issuing.der], &anchors).unwrap();
    assert_eq!(presented.chain_verified_by.as_deref(), Some("acme"), "with the intermediate the client sent");

    for bundle in [format!("{}{}", root.pem, issuing.pem), format!("{}{}", issuing.pem, root.pem)] {
        let cas = TenantCa::from_pem("acme", &bundle).unwrap();
        assert_eq!(cas.len(), 2);
        let anchors: Vec<&str> = cas.iter().filter(|c| c.is_anchor()).map(TenantCa::subject).collect();
        assert_eq!(anchors, ["O=Tenant, CN=Root"], "the intermediate links, the root is trusted");
        assert_eq!(parse_and_verify(&der, &cas).unwrap().chain_verified_by.as_deref(), Some("acme"));
    }
    // A bundle holding only the issuing CA trusts it directly.
    let only = TenantCa::from_pem("acme", &issuing.pem).unwrap();
    assert!(only[0].is_anchor());
    assert_eq!(parse_and_verify(&der, &only).unwrap().chain_verified_by.as_deref(), Some("acme"));
    // Another tenant's intermediate does not lead to this tenant's root.
    let other = TenantCa::from_pem("other", &format!("{}{}", Ca::new("Other Root").pem, issuing.pem)).unwrap();
    let mixed: Vec<TenantCa> = anchors.iter().cloned().chain(other.into_iter().filter(|c| !c.is_anchor())).collect();
    assert_eq!(parse_and_verify(&der, &mixed).unwrap().chain_verified_by, None);

    // Every certificate of the chain must be valid now, the intermediate too.
    let lapsed = intermediate(&root, "Issuing", (2010, 1, 1));
    let der = lapsed.sign(&client(&[]));
    let err = why_not(&der, &[&lapsed.der], &anchors);
    assert!(err.contains("an intermediate certificate of the chain expired at Jan  1 00:00:00 2010"), "{err}");
    assert!(err.contains("tenant CA `acme` (O=Tenant, CN=Root)"), "{err}");
}

#[test]
fn a_leaf_only_for_server_authentication_is_refused() {
    let ca = Ca::new("Tenant CA");
    let cas = [ca.tenant("acme")];
    let server_only = ca.sign(&client(&[ExtendedKeyUsagePurpose::ServerAuth]));
    assert_eq!(parse_and_verify(&server_only, &cas).unwrap().chain_verified_by, None);
    assert!(why_not(&server_only, &[], &cas).contains("extended key usage without clientAuth"));
    for eku in [
        &[ExtendedKeyUsagePurpose::ClientAuth][..],
        &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    ] {
        assert_eq!(parse_and_verify(&ca.sign(&client(eku)), &cas).unwrap().chain_verified_by.as_deref(), Some("acme"));
    }
}

#[test]
fn an_unknown_critical_extension_is_refused() {
    let ca = Ca::new("Tenant CA");
    let cas = [ca.tenant("acme")];
    let with = |critical: bool| {
        let mut params = client(&[ExtendedKeyUsagePurpose::ClientAuth]);
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
        ext.set_criticality(critical);
        params.custom_extensions.push(ext);
        ca.sign(&params)
    };
    let critical = with(true);
    let record = parse_and_verify(&critical, &cas).unwrap();
    assert_eq!(record.subject_cn.as_deref(), Some("dev-1"), "the record is still read");
    assert_eq!(record.chain_verified_by, None);
    let err = why_not(&critical, &[], &cas);
    assert_eq!(
        err,
        "client certificate cannot be verified: a certificate of the chain has a critical extension this host does not understand"
    );
    assert_eq!(parse_and_verify(&with(false), &cas).unwrap().chain_verified_by.as_deref(), Some("acme"));
}

#[test]
fn each_tenant_ca_tried_says_why_it_did_not_verify() {
    let (a, b) = (Ca::new("A"), Ca::new("B"));
    let cas = [a.tenant("a"), b.tenant("b")];
    let stranger = Ca::new("Stranger").sign(&client(&[]));
    assert_eq!(
        why_not(&stranger, &[], &cas),
        "client certificate not verified by tenant CA `a` (O=Tenant, CN=A), `b` (O=Tenant, CN=B): it was not issued \
         by this CA, nor through an intermediate that this CA issued"
    );
    assert_eq!(verify_chain(&stranger, &[], &[]).unwrap_err(), ChainError::NoTenantCa);
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
