//! The {{name}} policy: the rules are in [`rules`] (plain Rust, tested natively); this file
//! wires them to the host: sessions, the per-device rate (host counters), a log line per ops
//! login.

pub mod rules;

use mqtt_policy_guest::{
    Auth, Connect, Denial, Publish, PublishDecision, ReasonCode, SessionInfo, Subscribe, SubscribeDecision,
    export_policy, host,
};
use rules::{Role, Settings};

/// The policy: its settings.
pub struct Fleet(Settings);

/// A connected client: its id and role.
pub struct Client {
    id: String,
    role: Role,
}

fn denial((reason, message): rules::Refusal) -> Denial {
    Denial::new(reason, message)
}

impl mqtt_policy_guest::Policy for Fleet {
    type Session = Client;

    fn new(settings: &str) -> Result<Self, String> {
        Settings::parse(settings).map(Fleet)
    }

    fn authenticate(&self, c: &Connect) -> Auth<Client> {
        match self.0.identify(&c.client_id, c.username.as_deref(), c.password.as_deref()) {
            Ok(role) => {
                let info = match &role {
                    Role::Device { site, .. } => SessionInfo::device(&c.client_id).with("role", "device").with("site", site),
                    Role::Ops => {
                        host::log(host::Level::Info, &format!("ops account connected as {}", c.client_id));
                        SessionInfo::device(&c.client_id).with("role", "ops")
                    }
                };
                Auth::Accept(info, Client { id: c.client_id.clone(), role })
            }
            Err(refusal) => Auth::Reject(denial(refusal)),
        }
    }

    fn authorize_publish(&self, client: &mut Client, p: &Publish) -> PublishDecision {
        if let Err(refusal) = self.0.check_publish(&client.role, &p.topic, p.payload_size) {
            return PublishDecision::Deny(denial(refusal));
        }
        if let Role::Device { .. } = client.role {
            // Fixed one-minute windows kept by the host, per tenant, across reloads.
            let sent = host::counter_add(&format!("rate/{}", client.id), 1, 60_000);
            if sent > self.0.messages_per_minute {
                let limit = self.0.messages_per_minute;
                return PublishDecision::Deny(Denial::new(
                    ReasonCode::MessageRateTooHigh,
                    format!("message rate too high: more than {limit} messages a minute"),
                ));
            }
        }
        PublishDecision::Allow
    }

    fn authorize_subscribe(&self, client: &mut Client, s: &Subscribe) -> SubscribeDecision {
        match rules::check_subscribe(&client.role, &s.filter, s.qos) {
            Ok(qos) => SubscribeDecision::Grant(qos),
            Err(refusal) => SubscribeDecision::Deny(denial(refusal)),
        }
    }
}

export_policy!(Fleet);

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_policy_guest::Policy;
    use mqtt_policy_guest::testing;

    const SETTINGS: &str = include_str!("../settings.toml");

    /// The cases `mqtt-policy test` runs against the .wasm, run natively.
    #[test]
    fn cases_pass_natively() {
        let cases = concat!(env!("CARGO_MANIFEST_DIR"), "/cases.toml");
        testing::run_cases::<Fleet>(cases, SETTINGS).unwrap().assert_passed();
    }

    /// Host calls work natively: the fake clock and counters make the rate deterministic.
    #[test]
    fn the_rate_resets_with_the_clock_and_ops_logins_are_logged() {
        let policy = Fleet::new(SETTINGS).unwrap();
        let connect = Connect::client("paris-0001").username("paris-0001").password("paris-s3cret");
        let Auth::Accept(info, mut client) = policy.authenticate(&connect) else { panic!("refused") };
        assert_eq!(info.attributes, [("role".into(), "device".into()), ("site".into(), "paris".into())]);
        testing::set_now(1_800_000_000_000); // a minute's start
        let publish = Publish::to("fleet/paris/0001/telemetry").qos(1);
        for _ in 0..60 {
            assert!(matches!(policy.authorize_publish(&mut client, &publish), PublishDecision::Allow));
        }
        let PublishDecision::Deny(d) = policy.authorize_publish(&mut client, &publish) else { panic!("allowed") };
        assert_eq!(d.reason, ReasonCode::MessageRateTooHigh);
        assert_eq!(testing::counter("rate/paris-0001"), Some(61));
        testing::advance(60_000);
        assert!(matches!(policy.authorize_publish(&mut client, &publish), PublishDecision::Allow));

        let ops = Connect::client("ops-console").username("ops").password("ops-s3cret");
        assert!(matches!(policy.authenticate(&ops), Auth::Accept(..)));
        assert_eq!(testing::logs(), [(host::Level::Info, "ops account connected as ops-console".to_owned())]);
    }
}
