//! The top-level sections of a WebAssembly file, read with wasmparser and written with
//! wasm-encoder: the one place in the host that knows the binary layout.

use wasm_encoder::Section as _;
use wasmtime::wasmparser::{BinaryReaderError, Chunk, Parser, Payload};

/// A file split into its preamble (magic and version) and its top-level sections.
pub(crate) struct Sections<'a> {
    /// The 8 bytes before the first section.
    pub(crate) preamble: &'a [u8],
    /// Every top-level section, in file order.
    pub(crate) sections: Vec<Section<'a>>,
}

/// One top-level section. Nested modules and components are one section each: their
/// insides are not looked at.
pub(crate) struct Section<'a> {
    /// The section as it appears in the file, id and size included.
    pub(crate) bytes: &'a [u8],
    /// Name and data, when it is a custom section.
    pub(crate) custom: Option<(&'a str, &'a [u8])>,
}

/// Splits `file` into its top-level sections, or says why it cannot.
pub(crate) fn sections(file: &[u8]) -> Result<Sections<'_>, String> {
    // wasmparser's "magic header not detected" says the same less plainly.
    if !file.starts_with(b"\0asm") {
        return Err("not a WebAssembly file (no \\0asm header)".to_owned());
    }
    let mut parser = Parser::new(0);
    let mut at = 0;
    let mut preamble: &[u8] = &[];
    let mut sections = Vec::new();
    loop {
        let (payload, consumed) = match parser.parse(&file[at..], true).map_err(|e| malformed(&e))? {
            Chunk::Parsed { payload, consumed } => (payload, consumed),
            // With `eof` set, wasmparser reports missing bytes as an error instead.
            Chunk::NeedMoreData(_) => return Err(format!("truncated at byte {}", file.len())),
        };
        let end = match &payload {
            Payload::End(_) => break,
            Payload::Version { .. } => {
                preamble = &file[at..at + consumed];
                at += consumed;
                continue;
            }
            // The parser hands back only the header of these; their bodies are skipped whole.
            Payload::ModuleSection { unchecked_range, .. } | Payload::ComponentSection { unchecked_range, .. } => {
                unchecked_range.end
            }
            Payload::CodeSectionStart { range, .. } => {
                parser.skip_section();
                range.end
            }
            _ => at + consumed,
        };
        let bytes =
            file.get(at..end).ok_or_else(|| format!("the section at byte {at} overruns the file (truncated?)"))?;
        let custom = match &payload {
            Payload::CustomSection(c) => Some((c.name(), c.data())),
            _ => None,
        };
        sections.push(Section { bytes, custom });
        at = end;
    }
    Ok(Sections { preamble, sections })
}

fn malformed(e: &BinaryReaderError) -> String {
    format!("malformed or truncated at byte {}: {}", e.offset(), e.message())
}

/// Appends a custom section named `name` holding `data`.
pub(crate) fn push_custom(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    wasm_encoder::CustomSection { name: name.into(), data: data.into() }.append_to(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_modules_are_one_section_and_custom_sections_are_named() {
        let component = std::fs::read(guest_artifacts::HELLO).unwrap();
        let split = sections(&component).unwrap();
        assert_eq!(split.preamble, &component[..8]);
        let total: usize = split.preamble.len() + split.sections.iter().map(|s| s.bytes.len()).sum::<usize>();
        assert_eq!(total, component.len(), "the sections cover the file exactly");

        let mut with = component.clone();
        push_custom(&mut with, "mqtt-policy/test", b"data");
        let last = sections(&with).unwrap().sections.pop().unwrap();
        assert_eq!(last.custom, Some(("mqtt-policy/test", &b"data"[..])));
    }

    #[test]
    fn foreign_and_truncated_files_are_errors() {
        let Err(err) = sections(b"hello") else { panic!("text parsed") };
        assert!(err.contains("not a WebAssembly file"), "{err}");
        let component = std::fs::read(guest_artifacts::HELLO).unwrap();
        for cut in [9, component.len() / 2, component.len() - 1] {
            let Err(err) = sections(&component[..cut]) else { panic!("cut at {cut} parsed") };
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
    }
}
