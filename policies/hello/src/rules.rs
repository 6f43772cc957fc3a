//! The hello policy's rules, free of any host plumbing so they test natively.

use mqtt_policy_guest::ReasonCode;
use mqtt_policy_guest::topic;

/// Parsed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Largest payload a device may publish, in bytes.
    pub max_payload: u32,
}

/// Payload limit when the settings name none (the IBM Watson IoT limit).
pub const DEFAULT_MAX_PAYLOAD: u32 = 131_072;

impl Rules {
    /// Parses `key = value` lines; `#` starts a comment. Known key: `max-payload`.
    pub fn parse(settings: &str) -> Result<Rules, String> {
        let mut rules = Rules { max_payload: DEFAULT_MAX_PAYLOAD };
        for (n, raw) in settings.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected `key = value`, found `{line}`", n + 1))?;
            match key.trim() {
                "max-payload" => {
                    rules.max_payload = value.trim().parse().map_err(|_| {
                        format!("line {}: max-payload must be a whole number of bytes, found `{}`", n + 1, value.trim())
                    })?
                }
                other => return Err(format!("line {}: unknown setting `{other}` (known: max-payload)", n + 1)),
            }
        }
        Ok(rules)
    }

    /// A device may publish under `devices/{device}/` within the payload limit.
    pub fn check_publish(&self, device: &str, topic_name: &str, payload_size: u32) -> Result<(), (ReasonCode, String)> {
        if let Err(e) = topic::validate_topic_name(topic_name) {
            return Err((ReasonCode::TopicNameInvalid, format!("invalid topic: {e}")));
        }
        if !within_device(device, topic_name) {
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

/// The device id a client id stands for: itself, if it is one non-empty topic level.
pub fn device_id(client_id: &str) -> Result<&str, String> {
    if client_id.is_empty() {
        return Err("client identifier cannot be empty".to_owned());
    }
    if client_id.contains(['/', '+', '#', '\0']) {
        return Err(format!("client identifier `{client_id}` cannot contain '/', '+', '#' or NUL"));
    }
    Ok(client_id)
}

/// `devices/{device}/...`, compared in place: this runs for every publish, so no string is built.
fn within_device(device: &str, topic_name: &str) -> bool {
    topic_name
        .strip_prefix("devices/")
        .and_then(|rest| rest.strip_prefix(device))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// A device may subscribe to `devices/{device}/commands/#` or any filter inside it.
pub fn check_subscribe(device: &str, filter: &str) -> Result<(), (ReasonCode, String)> {
    if let Err(e) = topic::validate_topic_filter(filter) {
        return Err((ReasonCode::TopicFilterInvalid, format!("invalid topic filter: {e}")));
    }
    let inside = topic::filter_within(filter, &format!("devices/{device}/commands/#"));
    if inside { Ok(()) } else { Err((ReasonCode::NotAuthorized, format!("unauthorized topic filter {filter}"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_with_defaults_and_named_errors() {
        assert_eq!(Rules::parse("").unwrap().max_payload, DEFAULT_MAX_PAYLOAD);
        assert_eq!(Rules::parse("# comment\nmax-payload = 64 # bytes\n").unwrap().max_payload, 64);
        let e = Rules::parse("\nmax-payload = lots").unwrap_err();
        assert!(e.starts_with("line 2: max-payload"), "{e}");
        let e = Rules::parse("max-paylod = 1").unwrap_err();
        assert!(e.contains("unknown setting `max-paylod`"), "{e}");
        assert!(Rules::parse("max-payload").unwrap_err().contains("expected `key = value`"));
    }

    #[test]
    fn publish_inside_own_tree_within_limit() {
        let r = Rules { max_payload: 10 };
        assert_eq!(r.check_publish("d1", "devices/d1/temp", 10), Ok(()));
        assert_eq!(r.check_publish("d1", "devices/d1/a/b/c", 0), Ok(()));
        assert_eq!(r.check_publish("d1", "devices/d1/temp", 11).unwrap_err().0, ReasonCode::PacketTooLarge);
        for other in ["devices/d2/temp", "devices/d10/temp", "devices/d1", "devices/d1x/t", "d1/temp", "$SYS/x"] {
            assert_eq!(r.check_publish("d1", other, 1).unwrap_err().0, ReasonCode::NotAuthorized, "{other}");
        }
        assert_eq!(r.check_publish("d1", "devices/d1/+", 1).unwrap_err().0, ReasonCode::TopicNameInvalid);
        assert_eq!(r.check_publish("d1", "", 1).unwrap_err().0, ReasonCode::TopicNameInvalid);
    }

    #[test]
    fn subscribe_only_to_own_commands() {
        for ok in [
            "devices/d1/commands/#",
            "devices/d1/commands",
            "devices/d1/commands/reboot",
            "devices/d1/commands/+/x",
            "devices/d1/commands/+/#",
        ] {
            assert_eq!(check_subscribe("d1", ok), Ok(()), "{ok}");
        }
        for no in [
            "devices/d1/#",
            "devices/+/commands/#",
            "#",
            "devices/d2/commands/#",
            "devices/d1/commandsx",
            "devices/d1/telemetry",
        ] {
            assert_eq!(check_subscribe("d1", no).unwrap_err().0, ReasonCode::NotAuthorized, "{no}");
        }
        assert_eq!(check_subscribe("d1", "devices/d1/commands/#/x").unwrap_err().0, ReasonCode::TopicFilterInvalid);
    }

    #[test]
    fn client_ids_that_are_not_one_level_are_refused() {
        assert_eq!(device_id("sensor-1"), Ok("sensor-1"));
        for bad in ["", "a/b", "a+", "#", "x\0"] {
            assert!(device_id(bad).is_err(), "{bad:?}");
        }
    }
}
