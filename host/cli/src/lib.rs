//! The pieces of the `mqtt-policy` command, usable from tests and other tools: the cases
//! file format and runner, the hub-rules build and its explanations, and `new`'s policy template.
#![deny(missing_docs)]

pub mod cases;
pub mod client_view;
pub mod compile;
pub mod explain;
pub mod new;
pub mod run;

/// The generic hub-rules policy (`policies/hub-rules`) that `mqtt-policy build` embeds rules
/// into, built for wasm32-wasip2 from current sources by this crate's build script.
pub static HUB_RULES_WASM: &[u8] = include_bytes!(env!("MQTT_POLICY_HUB_RULES_WASM"));
