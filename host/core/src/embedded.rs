//! Settings embedded in a policy file, so one `.wasm` per tenant is self-contained.
//!
//! They live in a top-level custom section named [`SECTION`] appended to the component;
//! wasm runtimes ignore custom sections, so the file stays a valid component.

/// Name of the custom section holding a policy's settings.
pub const SECTION: &str = "mqtt-policy/settings";

/// The settings embedded in `component`, if any (the last such section wins).
/// Errors name what is malformed.
pub fn settings(component: &[u8]) -> Result<Option<String>, String> {
    let mut found = None;
    for section in sections(component)? {
        let (id, payload) = section?;
        if id != 0 {
            continue;
        }
        let (name_len, used) = leb128(payload).ok_or("custom section name length is malformed")?;
        let name_end = used + name_len as usize;
        let name = payload.get(used..name_end).ok_or("custom section name overruns the section")?;
        if name == SECTION.as_bytes() {
            let text = std::str::from_utf8(&payload[name_end..])
                .map_err(|e| format!("embedded settings are not UTF-8: {e}"))?;
            found = Some(text.to_owned());
        }
    }
    Ok(found)
}

/// `component` with `settings` embedded, replacing settings embedded before.
pub fn embed(component: &[u8], settings: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(component.len() + settings.len() + 32);
    out.extend_from_slice(component.get(..8).ok_or("file is too short to be WebAssembly")?);
    let mut offset = 8;
    for section in sections(component)? {
        let (id, payload) = section?;
        let header_len = 1 + leb128_len(payload.len() as u64);
        let whole = &component[offset..offset + header_len + payload.len()];
        offset += whole.len();
        let is_ours = id == 0
            && leb128(payload)
                .is_some_and(|(n, used)| payload.get(used..used + n as usize) == Some(SECTION.as_bytes()));
        if !is_ours {
            out.extend_from_slice(whole);
        }
    }
    let mut payload = Vec::new();
    write_leb128(&mut payload, SECTION.len() as u64);
    payload.extend_from_slice(SECTION.as_bytes());
    payload.extend_from_slice(settings.as_bytes());
    out.push(0);
    write_leb128(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    Ok(out)
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
