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
    /// The application registry (IBM API keys): kept apart from devices.
    #[serde(default, rename = "application")]
    pub applications: Vec<ApplicationConfig>,
    /// Shared access signatures (Azure IoT Hub style).
    pub sas: Option<SasConfig>,
    /// Topic rules.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// IBM-style monitoring messages (Connect / FailedConnect / Disconnect).
    pub monitoring: Option<Spanned<MonitoringConfig>>,
}

/// Which devices' monitoring messages a device or gateway may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceScope {
    /// Devices sharing one of its groups (IBM: a gateway's resource group). The default.
    #[default]
    Group,
    /// Any device of the organization (the topic rules still decide the subscription).
    Organization,
}

/// Which devices' monitoring messages an application may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ApplicationScope {
    /// Any device of the organization. The default.
    #[default]
    Organization,
    /// Devices in one of its groups, or in no group (IBM: the application's resource group).
    Group,
}

/// `[monitoring]`: whether this hub publishes monitoring messages, for whom, and who receives
/// which. The topics are IBM's: `iot-2/type/{type}/id/{id}/mon` for devices and gateways (their
/// registered type and id), `iot-2/app/{app}/mon` for applications (the `{app}` of their
/// client-id format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MonitoringConfig {
    /// Report devices and gateways (default true).
    #[serde(default = "yes")]
    pub devices: bool,
    /// Report applications (default true).
    #[serde(default = "yes")]
    pub applications: bool,
    /// Which devices' messages a device or gateway receives.
    #[serde(default)]
    pub device_scope: DeviceScope,
    /// Which devices' messages an application receives.
    #[serde(default)]
    pub application_scope: ApplicationScope,
}

fn yes() -> bool {
    true
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
    pub require_mtls: Option<Spanned<bool>>,
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
    /// `"none"` admits clients of this source without any proof; it must be said explicitly.
    pub authentication: Option<Spanned<Authentication>>,
    /// The user name a device sends with its token as password (IBM: `use-token-auth`).
    pub token_username: Option<String>,
}

/// Whether clients must prove their identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authentication {
    /// Every client proves its identity (a credential, a SAS token or a certificate).
    Required,
    /// Clients without a registered credential are admitted on their word: insecure.
    None,
}

/// What kind of identity a client is: kinds are registered, never inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A device (`[[device]]`).
    #[default]
    Device,
    /// A gateway (a `[[device]]` with `kind = "gateway"`).
    Gateway,
    /// An application (`[[application]]`, authenticated by API key and token).
    Application,
}

impl Kind {
    /// The name used in rules and messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Gateway => "gateway",
            Kind::Application => "application",
        }
    }
}

/// `[[identity.client-id-format]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FormatConfig {
    /// The shape, e.g. `d:{org}:{type}:{id}`.
    pub pattern: Spanned<String>,
    /// The kind of identity this shape claims; the registry must agree.
    #[serde(default)]
    pub kind: Kind,
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
    /// `device` (default) or `gateway`.
    pub kind: Option<Spanned<Kind>>,
    /// Hash of the device's token (IBM: sent as password with user name `use-token-auth`).
    pub token_hash: Option<Spanned<String>>,
    /// Hash of the password sent with `username`.
    pub password_hash: Option<Spanned<String>>,
    /// User name of `password-hash` (default: the device id).
    pub username: Option<String>,
    /// The device's symmetric key for SAS tokens (base64): a secret, never printed.
    pub sas_key: Option<Spanned<String>>,
}

/// `[[application]]`: an API key and the hash of its authentication token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApplicationConfig {
    /// The API key, sent as user name (e.g. `a-acme-a84ps90Ajs`).
    pub api_key: Spanned<String>,
    /// Hash of its authentication token, sent as password.
    pub token_hash: Spanned<String>,
    /// Groups, for rules that name them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// State.
    #[serde(default)]
    pub state: DeviceState,
}

/// `[sas]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SasConfig {
    /// The hub's host name: user names are `{hostname}/{device}/...`, resources
    /// `{hostname}/devices/{device}`.
    pub hostname: Spanned<String>,
    /// Hub-level shared access policies whose keys may sign any registered device's token.
    #[serde(default, rename = "policy")]
    pub policies: Vec<SasPolicyConfig>,
}

/// `[[sas.policy]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SasPolicyConfig {
    /// The policy name (`skn`).
    pub name: Spanned<String>,
    /// Its key (base64): a secret, never printed.
    pub key: Spanned<String>,
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

impl Effect {
    /// The name used in rules documents.
    pub fn name(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

impl Action {
    /// The name used in rules documents.
    pub fn name(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Delivery => "delivery",
        }
    }
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
    /// Only identities of these kinds (none: all).
    #[serde(default)]
    pub kinds: Vec<Kind>,
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
