//! The rules of this policy, free of host plumbing so they test natively (`cargo test`).
//!
//! - Devices connect with client id `SITE-SERIAL`, their client id as user name and their
//!   site's password (settings `[site-passwords]`).
//! - A device publishes under `fleet/SITE/SERIAL/` (not its `commands/`), within
//!   `max-payload` bytes, and subscribes to `fleet/SITE/SERIAL/commands/#` or narrower.
//! - The `[ops]` account subscribes to anything under `fleet/` and publishes commands.
//! - QoS 2 subscriptions are refused: brokers such as Mosquitto cannot lower a granted QoS.

use std::collections::BTreeMap;

use mqtt_policy_guest::settings::{self, Secret};
use mqtt_policy_guest::{ReasonCode, topic};
use serde::Deserialize;

/// The settings (`settings.toml`), typed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Largest payload a device may publish, in bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload: u32,
    /// Publishes per device per minute.
    #[serde(default = "default_rate")]
    pub messages_per_minute: i64,
    /// Each site's device password.
    #[serde(default)]
    pub site_passwords: BTreeMap<String, Secret>,
    /// The operations account, if any.
    pub ops: Option<Ops>,
}

/// The operations account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    /// Its user name.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

fn default_max_payload() -> u32 {
    131_072
}

fn default_rate() -> i64 {
    60
}

/// Who a connected client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A device of a site.
    Device {
        /// Its site.
        site: String,
        /// Its serial number.
        serial: String,
    },
    /// The operations account.
    Ops,
}

/// A refusal: the reason code and the message for the event.
pub type Refusal = (ReasonCode, String);

impl Settings {
    /// Parses and checks the settings; errors name the line and field.
    pub fn parse(text: &str) -> Result<Settings, String> {
        let s: Settings = settings::parse(text)?;
        if s.site_passwords.is_empty() && s.ops.is_none() {
            return Err("site-passwords: name at least one site (or an [ops] account): nobody could connect".into());
        }
        if let Some(site) = s.site_passwords.keys().find(|k| !is_site(k)) {
            return Err(format!("site-passwords: `{site}` is not a site name (lower-case letters and digits)"));
        }
        Ok(s)
    }

    /// Decides who connects, from its client id, user name and password.
    pub fn identify(&self, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Result<Role, Refusal> {
        let bad = || (ReasonCode::BadUserNameOrPassword, "bad user name or password".to_owned());
        if let Some(ops) = &self.ops
            && username == Some(ops.username.as_str())
        {
            return if password.is_some_and(|p| ops.password.matches(p)) && is_level(client_id) {
                Ok(Role::Ops)
            } else {
                Err(bad())
            };
        }
        let Some((site, serial)) = client_id.split_once('-').filter(|(s, n)| is_site(s) && is_level(n)) else {
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                format!("client identifier `{client_id}` is not SITE-SERIAL"),
            ));
        };
        let known = self.site_passwords.get(site);
        match (known, password) {
            (Some(secret), Some(p)) if secret.matches(p) && username == Some(client_id) => {
                Ok(Role::Device { site: site.to_owned(), serial: serial.to_owned() })
            }
            _ => Err(bad()),
        }
    }

    /// Whether `role` may publish `payload_size` bytes to `topic_name`.
    pub fn check_publish(&self, role: &Role, topic_name: &str, payload_size: u32) -> Result<(), Refusal> {
        if let Err(e) = topic::validate_topic_name(topic_name) {
            return Err((ReasonCode::TopicNameInvalid, format!("invalid topic: {e}")));
        }
        let allowed = match role {
            Role::Device { site, serial } => {
                topic::matches(&format!("fleet/{site}/{serial}/#"), topic_name)
                    && !topic::matches(&format!("fleet/{site}/{serial}/commands/#"), topic_name)
            }
            Role::Ops => topic::matches("fleet/+/+/commands/#", topic_name),
        };
        if !allowed {
            return Err((ReasonCode::NotAuthorized, format!("unauthorized topic {topic_name}")));
        }
        if payload_size > self.max_payload {
            return Err((
                ReasonCode::PacketTooLarge,
                format!("message payload is too large ({payload_size} bytes, limit {})", self.max_payload),
            ));
        }
        Ok(())
    }
}

/// The QoS `role` is granted for `filter` at `qos`.
pub fn check_subscribe(role: &Role, filter: &str, qos: u8) -> Result<u8, Refusal> {
    if let Err(e) = topic::validate_topic_filter(filter) {
        return Err((ReasonCode::TopicFilterInvalid, format!("invalid topic filter: {e}")));
    }
    if qos > 1 {
        return Err((ReasonCode::QosNotSupported, format!("QoS {qos} subscriptions are not supported")));
    }
    let within = match role {
        Role::Device { site, serial } => topic::filter_within(filter, &format!("fleet/{site}/{serial}/commands/#")),
        Role::Ops => topic::filter_within(filter, "fleet/#"),
    };
    if within { Ok(qos) } else { Err((ReasonCode::NotAuthorized, format!("unauthorized topic filter {filter}"))) }
}

fn is_site(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// One non-empty topic level: it goes into topics, so it must not hold `/`, `+`, `#` or NUL.
fn is_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: &str = include_str!("../settings.toml");

    fn device(site: &str, serial: &str) -> Role {
        Role::Device { site: site.into(), serial: serial.into() }
    }

    #[test]
    fn settings_errors_name_the_line_and_field() {
        let e = Settings::parse("max-payload = \"big\"\n[site-passwords]\nparis = \"x\"").unwrap_err();
        assert!(e.starts_with("line 1, column 15: max-payload: "), "{e}");
        let e = Settings::parse("[site-passwords]\nParis = \"x\"").unwrap_err();
        assert!(e.contains("`Paris` is not a site name"), "{e}");
        assert!(Settings::parse("").unwrap_err().contains("name at least one site"));
        assert!(!format!("{:?}", Settings::parse(SETTINGS).unwrap()).contains("s3cret"));
    }

    #[test]
    fn devices_and_ops_prove_who_they_are() {
        let s = Settings::parse(SETTINGS).unwrap();
        let ok = s.identify("paris-0001", Some("paris-0001"), Some(b"paris-s3cret"));
        assert_eq!(ok, Ok(device("paris", "0001")));
        for (id, user, pass) in [
            ("paris-0001", "paris-0001", "lyon-s3cret"),
            ("paris-0001", "paris-0002", "paris-s3cret"),
            ("rome-1", "rome-1", "paris-s3cret"),
            ("ops-console", "ops", "paris-s3cret"),
        ] {
            let e = s.identify(id, Some(user), Some(pass.as_bytes())).unwrap_err();
            assert_eq!(e.0, ReasonCode::BadUserNameOrPassword, "{id} {user} {pass}");
        }
        assert_eq!(s.identify("paris", Some("paris"), Some(b"x")).unwrap_err().0, ReasonCode::ClientIdentifierNotValid);
        assert_eq!(s.identify("ops-console", Some("ops"), Some(b"ops-s3cret")), Ok(Role::Ops));
    }

    #[test]
    fn topics() {
        let s = Settings::parse(SETTINGS).unwrap();
        let d = device("paris", "0001");
        assert_eq!(s.check_publish(&d, "fleet/paris/0001/telemetry", 10), Ok(()));
        assert_eq!(s.check_publish(&d, "fleet/paris/0002/telemetry", 10).unwrap_err().0, ReasonCode::NotAuthorized);
        assert_eq!(s.check_publish(&d, "fleet/paris/0001/commands/x", 1).unwrap_err().0, ReasonCode::NotAuthorized);
        assert_eq!(s.check_publish(&d, "fleet/paris/0001/t", 4097).unwrap_err().0, ReasonCode::PacketTooLarge);
        assert_eq!(s.check_publish(&Role::Ops, "fleet/lyon/7/commands/reboot", 1), Ok(()));
        assert_eq!(check_subscribe(&d, "fleet/paris/0001/commands/#", 1), Ok(1));
        assert_eq!(check_subscribe(&d, "fleet/paris/0001/commands/#", 2).unwrap_err().0, ReasonCode::QosNotSupported);
        assert_eq!(check_subscribe(&d, "fleet/paris/+/commands/#", 0).unwrap_err().0, ReasonCode::NotAuthorized);
        assert_eq!(check_subscribe(&Role::Ops, "fleet/#", 1), Ok(1));
    }
}
