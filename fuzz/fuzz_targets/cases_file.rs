//! The `mqtt-policy test` cases-file parser (`cases/src/lib.rs`, `CasesFile::load`) on
//! arbitrary UTF-8: it loads or returns an error naming the file; it never panics.
//!
//! The module is compiled into this target by path rather than through the
//! `mqtt-policy-cli` crate: that crate's build script builds the hub-rules policy it embeds
//! to wasm with the current toolchain, and the nightly toolchain this runs on need not have
//! the `wasm32-wasip2` target. `load` takes a path, so each input is
//! written to a file first.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../cases/src/lib.rs"]
#[allow(dead_code)]
mod cases;

/// What `cases.rs` needs of the CLI's `run` module.
mod run {
    #[derive(Debug)]
    pub struct Outcome;
}

static FILE: LazyLock<PathBuf> =
    LazyLock::new(|| std::env::temp_dir().join(format!("mqtt-policy-fuzz-cases-{}.toml", std::process::id())));

fuzz_target!(|text: &str| {
    std::fs::write(&*FILE, text).expect("writing the input file");
    match cases::CasesFile::load(&FILE, |_| true) {
        Ok(file) => {
            assert!(!file.cases.is_empty());
            for case in &file.cases {
                let _ = case.action();
            }
        }
        Err(message) => assert!(message.starts_with(&*FILE.to_string_lossy()), "{message}"),
    }
});
