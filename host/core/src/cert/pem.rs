//! Certificate input: PEM text to DER, and DER to exactly one parsed certificate, with
//! errors worded for whoever configured the input.

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::nom::{self, error::ErrorKind};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use super::error::CertError;

/// Every certificate in a PEM text, as DER, in order. Other blocks (keys, CRLs) are skipped;
/// lines may be indented, as they often are when PEM is pasted into a configuration file.
pub fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, CertError> {
    pem_certificates(pem).map_err(CertError::Pem)
}

pub(super) fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
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
pub(super) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
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
