//! Domain types of the host API: what a broker adapter hands in and gets back.

use crate::cert::Certificate;

/// The MQTT protocol version of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1 (protocol level 3).
    Mqtt31,
    /// MQTT 3.1.1 (protocol level 4).
    Mqtt311,
    /// MQTT 5.0 (protocol level 5).
    Mqtt5,
}

macro_rules! reason_code_enum {
    ([] $($variant:ident = $code:literal, $name:literal;)*) => {
        /// An MQTT v5 reason code a denial can carry (MQTT 5.0 §2.4).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ReasonCode { $(#[doc = $name] $variant,)* }
    };
}

mqtt_policy_reasons::with_reason_codes!(reason_code_enum);
mqtt_policy_reasons::reason_code_methods!(ReasonCode);

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02X} {}", self.code(), self.name())
    }
}

/// A connection attempt, as the broker saw it. Its `Debug` output shows the password as
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// The tenant the adapter resolved for this connection (never chosen by the client).
    pub tenant: String,
    /// MQTT client identifier.
    pub client_id: String,
    /// User name, if sent.
    pub username: Option<String>,
    /// Password, if sent.
    pub password: Option<Vec<u8>>,
    /// Clean session (v3.1.1) / clean start (v5).
    pub clean_start: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Protocol version.
    pub protocol: Protocol,
    /// Whether the connection arrived over TLS.
    pub tls: bool,
    /// The client certificate, parsed (and verified against the tenant's CAs) by the host.
    pub certificate: Option<Certificate>,
    /// Peer address, e.g. `127.0.0.1:50312`.
    pub peer: String,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("protocol", &self.protocol)
            .field("tls", &self.tls)
            .field("certificate", &self.certificate)
            .field("peer", &self.peer)
            .finish()
    }
}

impl Connect {
    /// A plain-TCP MQTT 5 connect with clean start, for tests and tools.
    pub fn new(tenant: &str, client_id: &str) -> Connect {
        Connect {
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            username: None,
            password: None,
            clean_start: true,
            keep_alive: 60,
            protocol: Protocol::Mqtt5,
            tls: false,
            certificate: None,
            peer: "127.0.0.1:0".to_owned(),
        }
    }
}

/// A PUBLISH a client sends (the broker's write check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Requested QoS (0-2; other values are the policy's to refuse).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Payload size in bytes.
    pub payload_size: u32,
}

/// A SUBSCRIBE request for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Topic filter.
    pub filter: &'a str,
    /// Requested maximum QoS.
    pub qos: u8,
}

/// A message about to be delivered to a subscriber (the broker's read check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// QoS of the delivery.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Payload size in bytes.
    pub payload_size: u32,
}

/// A refusal with the reason it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The MQTT v5 reason code.
    pub reason: ReasonCode,
    /// Human text in the style of a hub's event messages.
    pub message: String,
    /// Close the connection as well.
    pub disconnect: bool,
}

/// What the host learns about an accepted client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionInfo {
    /// The identity later checks and events refer to.
    pub device_id: String,
    /// Free-form facts shown in events.
    pub attributes: Vec<(String, String)>,
    /// When the client's proof expires (ms since the Unix epoch): from then on every check of
    /// the session is denied with a disconnecting denial ([`crate::Policy::expired_sessions`]).
    pub expires_at_ms: Option<u64>,
}

/// How a policy asked the host to report a connection in the hub's monitoring messages
/// (`monitor-device` / `monitor-application` during `authenticate`). Each value is one topic
/// level, checked by [`MonitorSubject::device`] and [`MonitorSubject::application`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MonitorSubject {
    /// A device (or gateway): `iot-2/type/{device_type}/id/{device_id}/mon`.
    Device {
        /// Its type.
        device_type: String,
        /// Its id.
        device_id: String,
    },
    /// An application: `iot-2/app/{app_id}/mon`.
    Application {
        /// Its id.
        app_id: String,
    },
}

/// Longest value of a [`MonitorSubject`], in bytes.
pub const MAX_MONITOR_LEVEL: usize = 256;

/// Whether `s` can be one level of a monitoring topic a policy names: 1-256 bytes, no `/`,
/// `+`, `#` or NUL, not starting with `$`, so it never widens or leaves its topic.
fn one_level(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_MONITOR_LEVEL && !s.starts_with('$') && !s.contains(['/', '+', '#', '\0'])
}

impl MonitorSubject {
    /// A device subject, if both values are single topic levels.
    pub fn device(device_type: &str, device_id: &str) -> Option<MonitorSubject> {
        (one_level(device_type) && one_level(device_id))
            .then(|| MonitorSubject::Device { device_type: device_type.to_owned(), device_id: device_id.to_owned() })
    }

    /// An application subject, if the id is a single topic level.
    pub fn application(app_id: &str) -> Option<MonitorSubject> {
        one_level(app_id).then(|| MonitorSubject::Application { app_id: app_id.to_owned() })
    }
}

/// The host's handle for a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Outcome of a connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectDecision {
    /// Let the client in; later checks use the session.
    Accept(SessionId, SessionInfo),
    /// Refuse the connection.
    Reject(Denial),
    /// Not this policy's call: ask the next authenticator.
    Defer,
}

/// How a publish is softened instead of refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRewrite {
    /// QoS to deliver with.
    pub qos: u8,
    /// Retain flag to deliver with.
    pub retain: bool,
    /// Why, for the event.
    pub message: String,
}

/// Outcome of a publish check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishDecision {
    /// Deliver as sent.
    Allow,
    /// Deliver with changed flags.
    Rewrite(PublishRewrite),
    /// Refuse.
    Deny(Denial),
    /// Not this policy's call.
    Defer,
}

/// Outcome of a subscription check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// Grant with this maximum QoS.
    Grant(u8),
    /// Refuse.
    Deny(Denial),
    /// Not this policy's call.
    Defer,
}

/// Outcome of a delivery check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryDecision {
    /// Deliver.
    Allow,
    /// Do not deliver to this subscriber.
    Deny(Denial),
    /// Not this policy's call.
    Defer,
}

/// The denial a decision carries, if any: lets callers treat all decisions alike.
pub trait Verdict {
    /// The denial, when the decision refuses.
    fn denial(&self) -> Option<&Denial>;
}

impl Verdict for ConnectDecision {
    fn denial(&self) -> Option<&Denial> {
        match self {
            ConnectDecision::Reject(d) => Some(d),
            _ => None,
        }
    }
}
impl Verdict for PublishDecision {
    fn denial(&self) -> Option<&Denial> {
        match self {
            PublishDecision::Deny(d) => Some(d),
            _ => None,
        }
    }
}
impl Verdict for SubscribeDecision {
    fn denial(&self) -> Option<&Denial> {
        match self {
            SubscribeDecision::Deny(d) => Some(d),
            _ => None,
        }
    }
}
impl Verdict for DeliveryDecision {
    fn denial(&self) -> Option<&Denial> {
        match self {
            DeliveryDecision::Deny(d) => Some(d),
            _ => None,
        }
    }
}
