//! Builds policies of this workspace to wasm32-wasip2 components from a build script (the CLI
//! embeds hub-rules; the test fixtures build every guest).
//!
//! The nested cargo gets its own target directory, so it never waits on the lock of the outer
//! build, and none of the outer build's flags. After it ran, the build script is told to rerun
//! when any source file listed in the `.d` dep-info files of the artifacts changes, or a
//! manifest: exactly the inputs, not whole directories.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every policy is built for.
pub const TARGET: &str = "wasm32-wasip2";
/// The cargo profile policies are built with (small and fast, see the root `Cargo.toml`).
pub const PROFILE: &str = "wasm";

/// One package to build: its cargo name and the stem of its artifact (`hub-rules` →
/// `hub_rules`, giving `hub_rules.wasm`).
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    /// The package name, as given to `cargo build -p`.
    pub package: &'a str,
    /// The artifact's file stem.
    pub stem: &'a str,
}

/// Why building the guests failed, by stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable cargo sets for build scripts is missing.
    #[error("build-script variable {0} is not set")]
    Env(&'static str),
    /// Cargo could not be started.
    #[error("running cargo to build the wasm guests: {0}")]
    Spawn(#[source] std::io::Error),
    /// Cargo ran and failed.
    #[error("building the wasm guests failed (is the target installed? `rustup target add {TARGET}`)")]
    Build,
    /// Cargo reported success but an artifact is not where it belongs.
    #[error("{package} built, but {} is missing", path.display())]
    Missing {
        /// The package.
        package: String,
        /// Where its artifact should be.
        path: PathBuf,
    },
    /// The dep-info file of an artifact cannot be read.
    #[error("reading the dep-info file {}: {source}", path.display())]
    DepInfo {
        /// The `.d` file.
        path: PathBuf,
        /// What reading it returned.
        #[source]
        source: std::io::Error,
    },
}

/// Builds `guests` of the workspace at `root` into `target_dir` and returns each artifact's
/// path, in order. Prints `cargo:rerun-if-changed` for every source the artifacts were built
/// from (their dep-info), the manifests of the workspace and `Cargo.lock`.
pub fn build(root: &Path, target_dir: &Path, guests: &[Guest<'_>]) -> Result<Vec<PathBuf>, Error> {
    let cargo = std::env::var_os("CARGO").ok_or(Error::Env("CARGO"))?;
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--target", TARGET, "--profile", PROFILE])
        .env("CARGO_TARGET_DIR", target_dir)
        // Flags meant for the outer (native) build must not leak into the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS");
    for g in guests {
        cmd.args(["-p", g.package]);
    }
    if !cmd.status().map_err(Error::Spawn)?.success() {
        return Err(Error::Build);
    }

    let out = target_dir.join(TARGET).join(PROFILE);
    let mut sources = Vec::new();
    let mut artifacts = Vec::new();
    for g in guests {
        let wasm = out.join(format!("{}.wasm", g.stem));
        if !wasm.exists() {
            return Err(Error::Missing { package: g.package.to_owned(), path: wasm });
        }
        let dep_info = out.join(format!("{}.d", g.stem));
        let text =
            std::fs::read_to_string(&dep_info).map_err(|source| Error::DepInfo { path: dep_info.clone(), source })?;
        sources.extend(dep_info_sources(&text));
        artifacts.push(wasm);
    }
    // Dep-info lists sources, not manifests: a changed dependency or feature must rebuild too.
    sources.push(root.join("Cargo.lock"));
    sources.push(root.join("Cargo.toml"));
    sources.extend(sources.iter().filter_map(|p| package_manifest(p)).collect::<Vec<_>>());
    sources.sort();
    sources.dedup();
    for path in sources {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Ok(artifacts)
}

/// The prerequisites of a Makefile-style dep-info file (`target: dep dep\ with\ space ...`).
pub fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else { continue };
        let mut current = String::new();
        let mut chars = deps.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.extend(chars.next()),
                ' ' => {
                    if !current.is_empty() {
                        paths.push(PathBuf::from(std::mem::take(&mut current)));
                    }
                }
                c => current.push(c),
            }
        }
        if !current.is_empty() {
            paths.push(PathBuf::from(current));
        }
    }
    paths
}

/// The `Cargo.toml` of the package a source file belongs to: the nearest one above its `src/`.
fn package_manifest(source: &Path) -> Option<PathBuf> {
    source.ancestors().skip(1).map(|dir| dir.join("Cargo.toml")).find(|m| m.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_lists_every_prerequisite_with_escaped_spaces() {
        let text =
            "/t/hub_rules.wasm: /w/policies/hub-rules/src/lib.rs /w/guest/src/my\\ file.rs /w/wit/policy.wit\n\n";
        let paths = dep_info_sources(text);
        assert_eq!(
            paths,
            ["/w/policies/hub-rules/src/lib.rs", "/w/guest/src/my file.rs", "/w/wit/policy.wit"].map(PathBuf::from)
        );
    }

    #[test]
    fn lines_without_prerequisites_add_nothing() {
        assert!(dep_info_sources("/t/a.wasm:\n/w/src/lib.rs:\n").is_empty());
    }
}
