//! Settings and tenant CAs embedded in a policy file, so one `.wasm` per tenant is
//! self-contained.
//!
//! They live in top-level custom sections appended to the component: [`SECTION`] holds
//! the settings, and one [`CA_SECTION`] per tenant CA holds its name, a newline, and its
//! PEM. Wasm runtimes ignore custom sections, so the file stays a valid component.

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

/// A custom section: its name and data.
type CustomSection<'a> = (&'a [u8], &'a [u8]);

/// Top-level custom sections, in order.
fn custom_sections(component: &[u8]) -> Result<Vec<CustomSection<'_>>, String> {
    let mut out = Vec::new();
    for section in sections(component)? {
        let (id, payload) = section?;
        if id != 0 {
            continue;
        }
        let (name_len, used) = leb128(payload).ok_or("custom section name length is malformed")?;
        let name_end = used + name_len as usize;
        let name = payload.get(used..name_end).ok_or("custom section name overruns the section")?;
        out.push((name, &payload[name_end..]));
    }
    Ok(out)
}

fn text(data: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(data.to_vec()).map_err(|e| format!("embedded {what} are not UTF-8: {e}"))
}

/// The settings embedded in `component`, if any (the last such section wins).
pub fn settings(component: &[u8]) -> Result<Option<String>, String> {
    custom_sections(component)?
        .into_iter()
        .rev()
        .find(|(name, _)| *name == SECTION.as_bytes())
        .map(|(_, data)| text(data, "settings"))
        .transpose()
}

/// The tenant CAs embedded in `component`, in order.
pub fn cas(component: &[u8]) -> Result<Vec<EmbeddedCa>, String> {
    let mut out = Vec::new();
    for (name, data) in custom_sections(component)? {
        if name != CA_SECTION.as_bytes() {
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
    let mut out = Vec::with_capacity(component.len() + settings.len() + 32);
    out.extend_from_slice(component.get(..8).ok_or("file is too short to be WebAssembly")?);
    let mut offset = 8;
    for section in sections(component)? {
        let (id, payload) = section?;
        let header_len = 1 + leb128_len(payload.len() as u64);
        let whole = &component[offset..offset + header_len + payload.len()];
        offset += whole.len();
        let ours = id == 0
            && leb128(payload).is_some_and(|(n, used)| {
                let name = payload.get(used..used + n as usize);
                name == Some(SECTION.as_bytes()) || name == Some(CA_SECTION.as_bytes())
            });
        if !ours {
            out.extend_from_slice(whole);
        }
    }
    push_section(&mut out, SECTION, settings.as_bytes());
    for ca in cas {
        push_section(&mut out, CA_SECTION, format!("{}\n{}", ca.name, ca.pem).as_bytes());
    }
    Ok(out)
}

fn push_section(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut payload = Vec::new();
    write_leb128(&mut payload, name.len() as u64);
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    out.push(0);
    write_leb128(out, payload.len() as u64);
    out.extend_from_slice(&payload);
}

type Section<'a> = Result<(u8, &'a [u8]), String>;

fn sections(bytes: &[u8]) -> Result<impl Iterator<Item = Section<'_>>, String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (no \\0asm header)".to_owned());
    }
    let mut rest = &bytes[8..];
    Ok(std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let id = rest[0];
        let Some((len, used)) = leb128(&rest[1..]) else {
            rest = &[];
            return Some(Err("section size is malformed".to_owned()));
        };
        let start = 1 + used;
        let Some(payload) = rest.get(start..start + len as usize) else {
            rest = &[];
            return Some(Err(format!("section {id} overruns the file (truncated?)")));
        };
        rest = &rest[start + len as usize..];
        Some(Ok((id, payload)))
    }))
}

/// Decodes an unsigned LEB128 (at most 5 bytes, as for a u32): value and bytes used.
fn leb128(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

fn leb128_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn write_leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
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
    fn truncated_and_foreign_files_are_errors() {
        let full = embed(EMPTY, "abc").unwrap();
        let err = settings(&full[..full.len() - 2]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(settings(b"hello world").unwrap_err().contains("not a WebAssembly file"));
    }
}
