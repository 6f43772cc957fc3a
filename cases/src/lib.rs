//! The cases file of `mqtt-policy test`: a table of connects and checks with the
//! decisions expected of a policy. One definition for both runners: the CLI's, against the
//! `.wasm` in the host, and the SDK's native one (`mqtt_policy_guest::testing::run_cases`),
//! against the policy compiled for `cargo test`, so the same file runs both ways.
#![deny(missing_docs)]

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

/// A whole cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CasesFile {
    /// Tenant every case connects as (default "default").
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The broker whose client's view `mqtt-policy test` shows and `client-sees` is compared
    /// with, unless `--broker` says otherwise: `mosquitto`, `rabbitmq`, `emqx`, `vernemq` or
    /// `none` (the default: the policy's decision only).
    pub broker: Option<String>,
    /// The cases, run in order on one policy instance (counters carry over).
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

fn default_tenant() -> String {
    "default".to_owned()
}

/// One case: a connect, optionally followed by one check, and what is expected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// The connection.
    pub connect: ConnectSpec,
    /// A publish to check after connecting.
    pub publish: Option<PublishSpec>,
    /// A subscription to check after connecting.
    pub subscribe: Option<SubscribeSpec>,
    /// A delivery to check after connecting.
    pub deliver: Option<PublishSpec>,
    /// Perform the check this many times; the expectation applies to the last (quotas).
    #[serde(default = "one")]
    pub repeat: u32,
    /// Expected outcome: accept/reject/defer for a connect; allow/rewrite/deny/defer for
    /// publish and delivery; grant/deny/defer for subscribe.
    pub expect: String,
    /// Expected reason code (name like `not-authorized` or number like `0x87`), for deny/reject.
    pub reason: Option<String>,
    /// Text the message must contain.
    pub message: Option<String>,
    /// Expected granted QoS (grant) or rewritten QoS (rewrite).
    pub qos: Option<u8>,
    /// Expected rewritten retain flag (rewrite).
    pub retain: Option<bool>,
    /// Expected device id of an accepted connect.
    pub device: Option<String>,
    /// Leave the client connected after the case (to fill connection quotas).
    #[serde(default)]
    pub keep_connected: bool,
    /// What the client of the file's broker (or `--broker`) sees, e.g. `SUBACK 0x87`,
    /// `PUBACK 0x00`, `CONNACK 0x87`, `closed`: compared with the start of the broker's
    /// answer. Ignored by runners without a broker (the native one).
    pub client_sees: Option<String>,
}

fn one() -> u32 {
    1
}

/// The connect of a case; omitted fields take the defaults of a plain MQTT 5 client.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConnectSpec {
    /// Client identifier.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Clean start / clean session (default true).
    pub clean_start: Option<bool>,
    /// Keep-alive in seconds (default 60).
    pub keep_alive: Option<u16>,
    /// "3.1", "3.1.1" or "5" (default).
    pub protocol: Option<ProtocolVersion>,
    /// Whether the connection is over TLS (default: when a certificate is given).
    pub tls: Option<bool>,
    /// Peer address (default `127.0.0.1:0`).
    pub peer: Option<String>,
    /// The client certificate, as the host would have parsed it.
    pub certificate: Option<CertificateSpec>,
}

/// An MQTT protocol version by the name cases files and `mqtt-policy eval --protocol` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ProtocolVersion {
    /// `3.1`.
    Mqtt31,
    /// `3.1.1`.
    Mqtt311,
    /// `5`, the default.
    #[default]
    Mqtt5,
}

impl ProtocolVersion {
    const NAMES: [(&'static str, ProtocolVersion); 3] =
        [("3.1", ProtocolVersion::Mqtt31), ("3.1.1", ProtocolVersion::Mqtt311), ("5", ProtocolVersion::Mqtt5)];
}

impl FromStr for ProtocolVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ProtocolVersion::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("`{s}` is not one of 3.1, 3.1.1, 5"))
    }
}

impl TryFrom<String> for ProtocolVersion {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, _) = ProtocolVersion::NAMES.iter().find(|(_, v)| v == self).expect("every version has a name");
        f.write_str(name)
    }
}

/// A client certificate as the host would have parsed it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CertificateSpec {
    /// Subject common name.
    pub subject_cn: Option<String>,
    /// Subject (default `CN=` the common name).
    pub subject: Option<String>,
    /// Issuer.
    pub issuer: Option<String>,
    /// Serial number (default `01`).
    pub serial: Option<String>,
    /// Start of validity, seconds since the epoch (default 0).
    pub not_before: Option<i64>,
    /// End of validity, seconds since the epoch (default 2038).
    pub not_after: Option<i64>,
    /// DNS subject alternative names.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// URI subject alternative names.
    #[serde(default)]
    pub uris: Vec<String>,
    /// Name of the tenant CA that verified it; absent: verified by none.
    pub chain_verified_by: Option<String>,
}

/// A publish or delivery.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PublishSpec {
    /// Topic name.
    pub topic: String,
    /// QoS (default 0).
    #[serde(default)]
    pub qos: u8,
    /// Retain flag (default false).
    #[serde(default)]
    pub retain: bool,
    /// Payload size in bytes (default 0).
    #[serde(default)]
    pub payload_size: u32,
}

/// A subscription.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SubscribeSpec {
    /// Topic filter.
    pub filter: String,
    /// Requested QoS (default 0).
    #[serde(default)]
    pub qos: u8,
}

/// The defaults of a case's connect, where a runner builds its own record: a plain MQTT 5
/// client over TCP from loopback.
pub mod defaults {
    /// Clean start / clean session.
    pub const CLEAN_START: bool = true;
    /// Keep-alive, seconds.
    pub const KEEP_ALIVE: u16 = 60;
    /// Peer address.
    pub const PEER: &str = "127.0.0.1:0";
    /// Certificate serial number.
    pub const SERIAL: &str = "01";
    /// Certificate end of validity (2038), seconds since the epoch.
    pub const NOT_AFTER: i64 = i32::MAX as i64;
}

impl CasesFile {
    /// Reads and checks a cases file; errors are one line naming the file, line and field.
    /// `reason_known` says whether a `reason` names a reason code (each runner has its own
    /// reason-code type).
    pub fn load(path: &Path, reason_known: impl Fn(&str) -> bool) -> Result<CasesFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: CasesFile = toml::from_str(&text).map_err(|e| {
            let place = e.span().map(|s| line_col(&text, s.start)).unwrap_or_default();
            format!("{}{place}: {}", path.display(), e.message().trim().replace('\n', " "))
        })?;
        if file.cases.is_empty() {
            return Err(format!("{}: no [[case]] entries", path.display()));
        }
        for (i, c) in file.cases.iter().enumerate() {
            c.check(&reason_known).map_err(|e| format!("{}: case {} ({:?}): {e}", path.display(), i + 1, c.name))?;
        }
        Ok(file)
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count() + 1).unwrap_or(1);
    format!(":{line}:{col}")
}

/// What a policy decided, reduced to what a case can expect of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// accept, reject, allow, rewrite, deny, grant or defer.
    pub kind: &'a str,
    /// The reason code (its number) of a deny or reject.
    pub reason: Option<u8>,
    /// The message of a deny, reject or rewrite.
    pub message: Option<&'a str>,
    /// Granted or rewritten QoS.
    pub qos: Option<u8>,
    /// Rewritten retain flag.
    pub retain: Option<bool>,
    /// Device id of an accepted connect.
    pub device: Option<&'a str>,
}

impl Case {
    /// Each expectation of this case that `got` does not meet, in words (empty: the case
    /// passed). `shown` is how the outcome is printed; `reason` reads the case's reason as
    /// the runner's reason table does: its number and name.
    pub fn unmet(
        &self,
        got: &Observed<'_>,
        shown: &dyn fmt::Display,
        reason: impl Fn(&str) -> Option<(u8, &'static str)>,
    ) -> Vec<String> {
        if got.kind != self.expect {
            return vec![format!("expected {}, got {shown}", self.expect)];
        }
        let mut problems = Vec::new();
        if let Some((code, name)) = self.reason.as_deref().and_then(reason)
            && got.reason != Some(code)
        {
            problems.push(format!("expected reason 0x{code:02X} {name}, got {shown}"));
        }
        if let Some(want) = &self.message
            && !got.message.unwrap_or_default().contains(want.as_str())
        {
            problems.push(format!("expected a message containing \"{want}\", got {shown}"));
        }
        if let Some(q) = self.qos
            && got.qos != Some(q)
        {
            problems.push(format!("expected qos {q}, got {shown}"));
        }
        if let Some(r) = self.retain
            && got.retain != Some(r)
        {
            problems.push(format!("expected retain={r}, got {shown}"));
        }
        if let Some(d) = &self.device
            && got.device != Some(d.as_str())
        {
            problems.push(format!("expected device {d}, got {shown}"));
        }
        problems
    }

    /// The kind of check this case makes: `connect`, `publish`, `subscribe` or `deliver`.
    pub fn action(&self) -> &'static str {
        if self.publish.is_some() {
            "publish"
        } else if self.subscribe.is_some() {
            "subscribe"
        } else if self.deliver.is_some() {
            "deliver"
        } else {
            "connect"
        }
    }

    fn check(&self, reason_known: &impl Fn(&str) -> bool) -> Result<(), String> {
        let actions = [self.publish.is_some(), self.subscribe.is_some(), self.deliver.is_some()];
        if actions.iter().filter(|a| **a).count() > 1 {
            return Err("give at most one of `publish`, `subscribe`, `deliver`".to_owned());
        }
        let allowed: &[&str] = match self.action() {
            "connect" => &["accept", "reject", "defer"],
            "subscribe" => &["grant", "deny", "defer"],
            _ => &["allow", "rewrite", "deny", "defer"],
        };
        if !allowed.contains(&self.expect.as_str()) {
            return Err(format!(
                "field `expect`: `{}` is not an outcome of {}; use one of {}",
                self.expect,
                self.action(),
                allowed.join(", ")
            ));
        }
        if let Some(r) = &self.reason
            && !reason_known(r)
        {
            return Err(format!("field `reason`: unknown reason code `{r}` (use e.g. `not-authorized` or `0x87`)"));
        }
        if self.repeat == 0 {
            return Err("field `repeat`: must be at least 1".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(extra: &str) -> Case {
        let text = format!("[[case]]\nname = \"c\"\nconnect = {{ client-id = \"d1\" }}\n{extra}\n");
        let file: CasesFile = toml::from_str(&text).unwrap();
        file.cases.into_iter().next().unwrap()
    }

    fn reason(r: &str) -> Option<(u8, &'static str)> {
        match r {
            "not-authorized" | "0x87" => Some((0x87, "not authorized")),
            "quota-exceeded" => Some((0x97, "quota exceeded")),
            _ => None,
        }
    }

    /// Every expectation a case can write is compared, and only when written.
    #[test]
    fn each_unmet_expectation_is_named_and_only_written_ones_count() {
        let denied =
            Observed { kind: "deny", reason: Some(0x87), message: Some("unauthorized topic a"), ..Default::default() };
        let c = case("publish = { topic = \"a\" }\nexpect = \"deny\"");
        assert!(c.unmet(&denied, &"deny", reason).is_empty(), "nothing else was expected");
        let c = case("publish = { topic = \"a\" }\nexpect = \"allow\"\nreason = \"quota-exceeded\"");
        assert_eq!(
            c.unmet(&denied, &"deny 0x87", reason),
            vec!["expected allow, got deny 0x87"],
            "the kind first, alone"
        );
        let c =
            case("publish = { topic = \"a\" }\nexpect = \"deny\"\nreason = \"quota-exceeded\"\nmessage = \"quota\"");
        assert_eq!(
            c.unmet(&denied, &"deny 0x87", reason),
            vec![
                "expected reason 0x97 quota exceeded, got deny 0x87",
                "expected a message containing \"quota\", got deny 0x87"
            ]
        );
        let granted = Observed { kind: "grant", qos: Some(0), ..Default::default() };
        let c = case("subscribe = { filter = \"a\", qos = 1 }\nexpect = \"grant\"\nqos = 1");
        assert_eq!(c.unmet(&granted, &"grant qos=0", reason), vec!["expected qos 1, got grant qos=0"]);
        let rewritten = Observed { kind: "rewrite", qos: Some(1), retain: Some(true), ..Default::default() };
        let c = case("publish = { topic = \"a\" }\nexpect = \"rewrite\"\nretain = false");
        assert_eq!(c.unmet(&rewritten, &"rewrite", reason), vec!["expected retain=false, got rewrite"]);
        let accepted = Observed { kind: "accept", device: Some("d2"), ..Default::default() };
        let c = case("expect = \"accept\"\ndevice = \"d1\"");
        assert_eq!(c.unmet(&accepted, &"accept as d2", reason), vec!["expected device d1, got accept as d2"]);
    }
}
