//! Builds the hub-rules policy that `mqtt-policy build` embeds (`policies/hub-rules`, to
//! wasm32-wasip2, through `guest-build`) and hands its path to the crate as
//! `MQTT_POLICY_HUB_RULES_WASM`. Only this one policy: the test guests are not part of the CLI.

use std::path::PathBuf;

use guest_build::Guest;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../..").canonicalize()?;
    // The fixtures build the same package into the same directory: whichever build script runs
    // second finds it up to date instead of compiling it again.
    let built =
        guest_build::build(&root, &root.join("target/guests"), &[Guest { package: "hub-rules", stem: "hub_rules" }])?;
    println!("cargo:rustc-env=MQTT_POLICY_HUB_RULES_WASM={}", built[0].display());
    Ok(())
}
