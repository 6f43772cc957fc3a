//! Distinguished names and directory strings as text (see [`crate::cert`] for the format).

use std::fmt::Write as _;

use x509_parser::asn1_rs::{Any, Class, Tag, ToDer};
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::x509::X509Name;

use crate::hex::hex;

/// The text of a directory string, or `None` when it is not one or does not decode.
pub(super) fn text(value: &Any<'_>) -> Option<String> {
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

pub(super) fn tag_name(value: &Any<'_>) -> String {
    if value.class() == Class::Universal {
        format!("{}", value.tag())
    } else {
        format!("{:?} {}", value.class(), value.tag().0)
    }
}

/// A distinguished name as text; see the module documentation for the format.
pub(super) fn render_name(name: &X509Name<'_>) -> String {
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
