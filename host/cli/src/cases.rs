//! The cases file of `mqtt-policy test` (the format lives in `mqtt-policy-cases`, shared with
//! the SDK's native runner), read with the host's reason codes.

use std::path::Path;

pub use mqtt_policy_cases::*;

/// Reads and checks a cases file; errors are one line naming the file, line and field.
pub fn load(path: &Path) -> Result<CasesFile, String> {
    CasesFile::load(path, |r| mqtt_policy_host::ReasonCode::parse(r).is_some())
}

/// The host's protocol for a cases file's version.
pub fn protocol(v: ProtocolVersion) -> mqtt_policy_host::Protocol {
    match v {
        ProtocolVersion::Mqtt31 => mqtt_policy_host::Protocol::Mqtt31,
        ProtocolVersion::Mqtt311 => mqtt_policy_host::Protocol::Mqtt311,
        ProtocolVersion::Mqtt5 => mqtt_policy_host::Protocol::Mqtt5,
    }
}
