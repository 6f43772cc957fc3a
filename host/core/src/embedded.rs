//! Settings and tenant CAs embedded in a policy file, so one `.wasm` per tenant is
//! self-contained.
//!
//! They live in top-level custom sections appended to the component: [`SECTION`] holds
//! the settings, and one [`CA_SECTION`] per tenant CA holds its name, a newline, and its
//! PEM. Wasm runtimes ignore custom sections, so the file stays a valid component.

use sha2::{Digest, Sha256};

use crate::wasm;

/// Name of the custom section holding a policy's settings.
pub const SECTION: &str = "mqtt-policy/settings";

/// Prefix of every custom section this crate writes; none of them is code.
pub const SECTION_PREFIX: &str = "mqtt-policy/";

/// Name of the custom sections holding tenant CAs.
pub const CA_SECTION: &str = "mqtt-policy/ca";

/// A tenant CA as embedded: its name and PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedCa {
    /// Name the policy and events use.
    pub name: String,
    /// PEM text of the CA certificate(s).
    pub pem: String,
}

/// Top-level custom sections, in order: name and data.
fn custom_sections(component: &[u8]) -> Result<Vec<(&str, &[u8])>, String> {
    Ok(wasm::sections(component)?.sections.into_iter().filter_map(|s| s.custom).collect())
}

fn text(data: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(data.to_vec()).map_err(|e| format!("embedded {what} are not UTF-8: {e}"))
}

/// The settings embedded in `component`, if any (the last such section wins).
pub fn settings(component: &[u8]) -> Result<Option<String>, String> {
    custom_sections(component)?
        .into_iter()
        .rev()
        .find(|(name, _)| *name == SECTION)
        .map(|(_, data)| text(data, "settings"))
        .transpose()
}

/// The tenant CAs embedded in `component`, in order.
pub fn cas(component: &[u8]) -> Result<Vec<EmbeddedCa>, String> {
    let mut out = Vec::new();
    for (name, data) in custom_sections(component)? {
        if name != CA_SECTION {
            continue;
        }
        let data = text(data, "CAs")?;
        let (ca_name, pem) = data.split_once('\n').ok_or("embedded CA has no name line")?;
        out.push(EmbeddedCa { name: ca_name.to_owned(), pem: pem.to_owned() });
    }
    Ok(out)
}

/// `component` with `settings` embedded, replacing settings embedded before.
pub fn embed(component: &[u8], settings: &str) -> Result<Vec<u8>, String> {
    embed_all(component, settings, &[])
}

/// `component` with `settings` and `cas` embedded, replacing any embedded before.
pub fn embed_all(component: &[u8], settings: &str, cas: &[EmbeddedCa]) -> Result<Vec<u8>, String> {
    let split = wasm::sections(component)?;
    let mut out = Vec::with_capacity(component.len() + settings.len() + 32);
    out.extend_from_slice(split.preamble);
    for section in &split.sections {
        let ours = section.custom.is_some_and(|(name, _)| name == SECTION || name == CA_SECTION);
        if !ours {
            out.extend_from_slice(section.bytes);
        }
    }
    wasm::push_custom(&mut out, SECTION, settings.as_bytes());
    for ca in cas {
        wasm::push_custom(&mut out, CA_SECTION, format!("{}\n{}", ca.name, ca.pem).as_bytes());
    }
    Ok(out)
}

/// Whether two components have the same code: equal but for the sections this module
/// writes (settings, CAs). False if either is not a well-formed sequence of sections.
pub fn same_code(a: &[u8], b: &[u8]) -> bool {
    matches!((code_digest(a), code_digest(b)), (Some(x), Some(y)) if x == y)
}

/// SHA-256 of a component without the sections this module writes, which wasmtime does not
/// compile: the key of the compile cache, so a tenant whose rules change, or many tenants
/// sharing one generic policy, pay for one compilation. `None` if the bytes are not a
/// well-formed sequence of sections; compilation then reports the real error.
pub(crate) fn code_digest(component: &[u8]) -> Option<[u8; 32]> {
    let split = wasm::sections(component).ok()?;
    let mut hasher = Sha256::new();
    hasher.update(split.preamble);
    for section in split.sections {
        if !section.custom.is_some_and(|(name, _)| name.starts_with(SECTION_PREFIX)) {
            hasher.update(section.bytes);
        }
    }
    Some(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty component: magic, component version/layer.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn embed_then_read_back_and_replace() {
        assert_eq!(settings(EMPTY).unwrap(), None);
        let once = embed(EMPTY, "max = 1").unwrap();
        assert_eq!(settings(&once).unwrap().as_deref(), Some("max = 1"));
        let twice = embed(&once, "max = 2").unwrap();
        assert_eq!(settings(&twice).unwrap().as_deref(), Some("max = 2"));
        assert_eq!(twice.len(), once.len(), "the old section is replaced, not kept");
    }

    #[test]
    fn cas_round_trip_and_are_replaced() {
        let ca = |n: &str| EmbeddedCa { name: n.to_owned(), pem: format!("-----BEGIN CERTIFICATE-----\n{n}\n") };
        let once = embed_all(EMPTY, "s", &[ca("a"), ca("b")]).unwrap();
        assert_eq!(cas(&once).unwrap(), [ca("a"), ca("b")]);
        let twice = embed_all(&once, "t", &[ca("c")]).unwrap();
        assert_eq!(cas(&twice).unwrap(), [ca("c")]);
        assert_eq!(settings(&twice).unwrap().as_deref(), Some("t"));
        assert!(cas(&embed(&twice, "u").unwrap()).unwrap().is_empty());
    }

    #[test]
    fn large_settings_round_trip() {
        let big = "x".repeat(300_000);
        assert_eq!(settings(&embed(EMPTY, &big).unwrap()).unwrap(), Some(big));
    }

    #[test]
    fn code_digest_ignores_embedded_settings_but_not_code() {
        let generic = guest_artifacts::HUB_RULES_WASM;
        let a = embed(generic, "[hub]\nstate = \"ready\"").unwrap();
        let b = embed(generic, "[hub]\nstate = \"locked\"").unwrap();
        assert_ne!(Sha256::digest(&a), Sha256::digest(&b));
        assert_eq!(code_digest(&a), code_digest(&b));
        assert_eq!(code_digest(&a), code_digest(generic));
        let other = std::fs::read(guest_artifacts::HELLO).unwrap();
        assert_ne!(code_digest(&other), code_digest(generic));
        assert_eq!(code_digest(b"not wasm"), None);
        assert_eq!(code_digest(&generic[..generic.len() - 3]), None);
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let full = embed(EMPTY, "abc").unwrap();
        let err = settings(&full[..full.len() - 2]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(settings(b"hello world").unwrap_err().contains("not a WebAssembly file"));
    }
}
