//! `mqtt-policy new NAME`: a policy crate that builds on its own, outside this repository.
//!
//! The template (`host/cli/template/`) is a working fleet policy: typed settings, rules in a
//! plain module with native tests, a cases file run both natively and against the `.wasm`, a
//! README, and a `Cargo.toml` with its own `[workspace]` and the `wasm` profile. The SDK is a
//! path dependency (there is no published crate): by default the checkout this command was
//! built from, or `--sdk PATH`.

use std::path::{Path, PathBuf};

/// The SDK this binary was built beside (`guest/` of its checkout).
pub const DEFAULT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest");

/// The template's files: (path in the new crate, contents).
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../template/Cargo.toml.in")),
    (".gitignore", include_str!("../template/gitignore")),
    ("README.md", include_str!("../template/README.md")),
    ("settings.toml", include_str!("../template/settings.toml")),
    ("cases.toml", include_str!("../template/cases.toml")),
    ("src/lib.rs", include_str!("../template/src/lib.rs")),
    ("src/rules.rs", include_str!("../template/src/rules.rs")),
];

/// Whether `name` can be a cargo package name here: 1-64 of `a-z 0-9 - _`, starting with a letter.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}`: a policy name is 1-64 of a-z, 0-9, - and _, starting with a letter"))
    }
}

/// Writes the policy crate `name` into `dir` (which must not exist) against the SDK at `sdk`,
/// and copies the `Cargo.lock` of the SDK's workspace, so an offline build resolves the
/// crates that workspace already uses. Returns the crate's artifact name (`my_policy`).
pub fn generate(name: &str, dir: &Path, sdk: &Path) -> Result<String, String> {
    check_name(name)?;
    let sdk = sdk.canonicalize().map_err(|e| format!("SDK {}: {e} (give its directory with --sdk)", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() || !sdk.join("src/lib.rs").is_file() {
        return Err(format!("{}: not the mqtt-policy-guest SDK (give its directory with --sdk)", sdk.display()));
    }
    if dir.exists() {
        return Err(format!("{}: already exists", dir.display()));
    }
    let artifact = name.replace('-', "_");
    let sdk_text = sdk.to_str().ok_or_else(|| format!("{}: the SDK path is not UTF-8", sdk.display()))?;
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &artifact)
            .replace("{{sdk}}", &sdk_text.replace('\\', "\\\\"))
    };
    for (path, text) in FILES {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&target, fill(text)).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    if let Some(lock) = sdk.ancestors().map(|a| a.join("Cargo.lock")).find(|l| l.is_file()) {
        let to = dir.join("Cargo.lock");
        std::fs::copy(&lock, &to).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    Ok(artifact)
}

/// Where `mqtt-policy new NAME` writes: `./NAME` unless told.
pub fn default_dir(name: &str) -> PathBuf {
    PathBuf::from(name)
}
