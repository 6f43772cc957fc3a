//! The hub rules document as written (TOML), before compilation.

use serde::Deserialize;
use toml::Spanned;

/// A whole rules document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rules {
    /// Hub-wide settings.
    #[serde(default)]
    pub hub: HubConfig,
    /// How a client's device identity is established.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Tenant CAs, by name (the host verifies signatures; the policy sees the name).
    #[serde(default, rename = "ca")]
    pub cas: Vec<CaConfig>,
    /// The device registry.
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    /// Topic rules.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

/// Hub state (Scaleway: ready, not ready, locked, deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HubState {
    /// Accepting connections.
    #[default]
    Ready,
    /// Not yet accepting connections.
    NotReady,
    /// Locked by an administrator: nobody connects or stays connected.
    Locked,
    /// Deleted: nobody connects or stays connected.
    Deleted,
}

/// Shared hubs restrict what clients may do (Scaleway service levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceLevel {
    /// Clean session mandatory, no retained or QoS 2 publish, subscriptions at QoS 0.
    Shared,
    /// No service-level restrictions.
    #[default]
    Dedicated,
}

/// What to do with a retained publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Retained {
    /// Keep the flag.
    #[default]
    Allow,
    /// Refuse the publish (0x9A).
    Deny,
    /// Clear the flag and deliver (IBM Watson IoT).
    Override,
}

/// What to do with a QoS 1-2 subscription on a shared hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SharedSubscribe {
    /// Refuse it.
    #[default]
    Refuse,
    /// Grant it at QoS 0.
    Downgrade,
}

/// How an exceeded message rate is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Exceeded {
    /// 0x96 message rate too high (Azure 429001 throttling).
    #[default]
    Throttle,
    /// 0x97 quota exceeded (Azure 403002).
    Quota,
}

/// Messages per device per fixed window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RateConfig {
    /// Messages allowed per window.
    pub messages: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// How going over is answered.
    #[serde(default)]
    pub exceeded: Exceeded,
}

/// `[hub]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HubConfig {
    /// Organization id: `${hub.org}`, and the `{org}` of client-id formats.
    pub org: Option<String>,
    /// Hub state.
    #[serde(default)]
    pub state: HubState,
    /// Service level.
    #[serde(default)]
    pub service_level: ServiceLevel,
    /// Shared hubs: refuse or downgrade QoS 1-2 subscriptions.
    #[serde(default)]
    pub shared_subscribe: SharedSubscribe,
    /// Largest payload in bytes.
    pub max_payload: Option<u32>,
    /// Retained publishes.
    #[serde(default)]
    pub retained: Retained,
    /// Refuse clients without a certificate verified by a hub CA ("deny insecure").
    #[serde(default)]
    pub require_mtls: bool,
    /// Most clients connected at once.
    pub max_connections: Option<u32>,
    /// Messages per device per window.
    pub rate: Option<RateConfig>,
}

/// Where the device id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IdentitySource {
    /// The MQTT client id (optionally parsed by `client-id-formats`).
    #[default]
    ClientId,
    /// The MQTT user name.
    Username,
    /// The common name of a certificate verified by one of the hub's CAs.
    Certificate,
}

/// `[identity]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdentityConfig {
    /// Where the device id comes from.
    #[serde(default)]
    pub from: IdentitySource,
    /// Accepted client-id shapes, e.g. `d:{org}:{type}:{id}`; none: any client id.
    #[serde(default, rename = "client-id-format")]
    pub client_id_formats: Vec<FormatConfig>,
    /// Accept devices missing from the registry. Default: true when no device is listed.
    pub allow_unregistered: Option<bool>,
    /// With `from = "certificate"`: register unknown certificate CNs as new devices.
    #[serde(default)]
    pub auto_provision: bool,
    /// Device type given to auto-provisioned and unregistered devices.
    pub default_type: Option<String>,
}

/// `[[identity.client-id-format]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FormatConfig {
    /// The shape, e.g. `d:{org}:{type}:{id}`.
    pub pattern: Spanned<String>,
    /// Groups every client of this shape joins: rules tell devices from applications by
    /// shape, never by a field the client chooses.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[[ca]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CaConfig {
    /// Name shown in events and matched against the host's verification.
    pub name: Spanned<String>,
    /// PEM file, relative to the rules file (read by `mqtt-policy build`).
    pub file: Option<String>,
    /// PEM text.
    pub pem: Option<String>,
}

/// Registry state of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    /// May connect.
    #[default]
    Enabled,
    /// "device is not enabled".
    Disabled,
    /// "device is deleted".
    Deleted,
}

/// `[[device]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceConfig {
    /// Device id.
    pub id: Spanned<String>,
    /// Device type (`${device.type}`).
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    /// Groups, for rules that name them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// State.
    #[serde(default)]
    pub state: DeviceState,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Grant.
    Allow,
    /// Refuse; a matching deny beats any allow.
    Deny,
}

/// What a rule governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Delivery to a subscriber (the broker's read check).
    Delivery,
}

/// `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// Allow or deny.
    pub effect: Effect,
    /// Actions governed.
    pub actions: Vec<Action>,
    /// Topic filters, with `${...}` placeholders.
    pub topics: Vec<Spanned<String>>,
    /// Only devices of these types (none: all).
    #[serde(default)]
    pub types: Vec<String>,
    /// Only devices in one of these groups (none: all).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `line L, column C` of a byte offset, for error messages.
pub fn place(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// Parses the document; errors name the line, column and field.
pub fn parse(text: &str) -> Result<Rules, String> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| format!("{}: ", place(text, s.start))).unwrap_or_default();
        format!("{at}{}", e.message().trim().replace('\n', " "))
    })
}
