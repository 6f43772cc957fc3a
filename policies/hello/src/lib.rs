//! The "hello world" policy: copy this crate to start your own.
//!
//! - A device connects with a client id that is a valid single topic level; it becomes the device id.
//! - It may publish under `devices/{device}/#`, up to `max-payload` bytes (settings).
//! - It may subscribe to its own commands, `devices/{device}/commands/#` or anything narrower.
//!
//! The rules live in [`rules`] as plain Rust, tested natively; this file only wires them
//! to the host.

pub mod rules;

use mqtt_policy_guest::{
    Auth, Connect, Denial, Publish, PublishDecision, ReasonCode, SessionInfo, Subscribe, SubscribeDecision,
    export_policy, host,
};
use rules::Rules;

/// The policy: its settings.
pub struct Hello(Rules);

/// What a connected device is known by.
pub struct Device {
    id: String,
}

impl mqtt_policy_guest::Policy for Hello {
    type Session = Device;

    fn new(settings: &str) -> Result<Self, String> {
        Rules::parse(settings).map(Hello)
    }

    fn authenticate(&self, c: &Connect) -> Auth<Device> {
        match rules::device_id(&c.client_id) {
            Ok(id) => Auth::Accept(SessionInfo::device(id), Device { id: id.to_owned() }),
            Err(message) => Auth::Reject(Denial::new(ReasonCode::ClientIdentifierNotValid, message)),
        }
    }

    fn authorize_publish(&self, device: &mut Device, p: &Publish) -> PublishDecision {
        match self.0.check_publish(&device.id, &p.topic, p.payload_size) {
            Ok(()) => {
                // The allow depends only on the session's device, the topic and a payload within
                // the limit: the host may answer repeats itself, without calling the policy.
                host::cache_decision(self.0.max_payload);
                PublishDecision::Allow
            }
            Err((reason, message)) => PublishDecision::Deny(Denial::new(reason, message)),
        }
    }

    fn authorize_subscribe(&self, device: &mut Device, s: &Subscribe) -> SubscribeDecision {
        match rules::check_subscribe(&device.id, &s.filter) {
            Ok(()) => SubscribeDecision::Grant(s.qos.min(1)),
            Err((reason, message)) => SubscribeDecision::Deny(Denial::new(reason, message)),
        }
    }
}

export_policy!(Hello);

#[cfg(test)]
mod tests {
    /// The cases `mqtt-policy test` runs against the `.wasm`, run natively.
    #[test]
    fn the_cases_file_passes_natively() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let settings = std::fs::read_to_string(format!("{dir}/settings.toml")).unwrap();
        let report = mqtt_policy_guest::testing::run_cases::<super::Hello>(format!("{dir}/cases.toml"), &settings);
        report.unwrap().assert_passed();
    }
}
