//! What a broker tells the gateway, and what the gateway answers: no broker's codes.

use mqtt_policy_host::{Denial, Protocol};

/// What the broker knows of a connecting client.
#[derive(Debug, Clone)]
pub struct Hello<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// User name, if sent.
    pub username: Option<&'a str>,
    /// Password, if sent.
    pub password: Option<&'a [u8]>,
    /// Clean session / clean start.
    pub clean_start: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Protocol version.
    pub protocol: Protocol,
    /// The client certificate as DER, if one was presented.
    pub certificate: Option<Vec<u8>>,
    /// Peer address.
    pub peer: &'a str,
    /// Whether the client speaks MQTT over websockets (monitoring messages' `-ws` protocols).
    pub websockets: bool,
    /// The broker's port the client connected to, if the broker says (monitoring messages'
    /// `Port`).
    pub port: Option<u16>,
    /// The tenant the broker itself has placed this connection in (a listener or virtual
    /// host bound to one tenant), if any. It takes precedence over the configured
    /// [`TenantSource`](crate::TenantSource): the broker's configuration is the operator's.
    pub tenant: Option<&'a str>,
}

impl<'a> Hello<'a> {
    /// A hello with only a client id: no credentials, clean start, MQTT 5, keep-alive 60 s.
    pub fn new(client_id: &'a str) -> Hello<'a> {
        Hello {
            client_id,
            username: None,
            password: None,
            clean_start: true,
            keep_alive: 60,
            protocol: Protocol::Mqtt5,
            certificate: None,
            peer: "",
            websockets: false,
            port: None,
            tenant: None,
        }
    }
}

/// What a broker still knows about a session it restored from its own persistence after a
/// restart (Mosquitto's `persistence true`) and that no client has connected on since: there
/// is no connection and nothing to verify, only what the broker kept. Only the broker adapter
/// makes one, and only for a session the broker itself says has no connection and was never
/// seen connecting; see [`Worker::restore`](crate::Worker::restore).
#[derive(Debug, Clone, Copy)]
pub struct Restored<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// The user name the broker kept: the one the gateway set at the session's connect (the
    /// admitted device id, [`ConnectOutcome::Accept`]).
    pub username: Option<&'a str>,
    /// Protocol version, as far as the broker kept it.
    pub protocol: Protocol,
    /// The tenant the broker itself places the session in, as [`Hello::tenant`].
    pub tenant: Option<&'a str>,
}

/// The answer to a connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// Let the client in.
    Accept {
        /// The device id, to become the broker's user name for this client (so its logs and
        /// later checks show it); `None` when the policy named no device.
        username: Option<String>,
    },
    /// Refuse it; the event is already emitted.
    Reject(Denial),
    /// Not the gateway's call: the broker's own authentication decides (fail-open mode, or
    /// the policy deferred).
    Defer,
}

/// The kind of access a check asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The client publishes to the topic.
    Publish,
    /// The client subscribes to the filter.
    Subscribe,
    /// The client unsubscribes from the filter: always allowed.
    Unsubscribe,
    /// A message on the topic is about to be delivered to the client.
    Delivery,
}

/// One check of a connected client.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// What the client does.
    pub access: Access,
    /// Topic name or filter as the broker received it; bytes that are not UTF-8 are denied.
    pub topic: &'a [u8],
    /// QoS of the message, or requested by the subscription.
    pub qos: u8,
    /// Retained flag of the message.
    pub retain: bool,
    /// Payload size in bytes.
    pub payload_size: u32,
    /// What the broker says of the client, if it says: a check whose client differs from the
    /// session held for its key is not that session's.
    pub client: Option<ClientFacts<'a>>,
}

impl<'a> Check<'a> {
    /// A check of `access` on `topic` at `qos`, not retained, with an empty payload.
    pub fn new(access: Access, topic: &'a str, qos: u8) -> Check<'a> {
        Check { access, topic: topic.as_bytes(), qos, retain: false, payload_size: 0, client: None }
    }
}

/// The client a check is for, as the broker knows it now. A broker that keys connections by
/// an object it frees and reuses (Mosquitto's client pointer) may hand the key of an ended
/// session to a new client it let in without asking the gateway (`use_identity_as_username`);
/// these facts tell the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFacts<'a> {
    /// The client id, as the broker holds it: compared byte for byte, never decoded (asked
    /// at every check, where validating UTF-8 cost more than the cached decision).
    pub client_id: &'a [u8],
    /// The user name the broker holds (after the gateway's `username` of an accept).
    pub username: Option<&'a [u8]>,
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Allowed as asked.
    Allow,
    /// A publish allowed, to be stored and delivered with the retained flag cleared.
    AllowRetainCleared,
    /// Refused; `disconnect` in the denial asks to end the connection as well.
    Deny(Denial),
    /// Not the gateway's call: the broker's own rules decide (client let in by fail-open mode).
    Defer,
}

/// The answer to [`Worker::check_lowering`](crate::Worker::check_lowering), for brokers that
/// can lower a message's or a subscription's QoS and clear a message's retained flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adjusted {
    /// As [`Worker::check`](crate::Worker::check) answers.
    As(CheckOutcome),
    /// Allowed, at a lower QoS or without the retained flag: for a publish, the QoS and the
    /// retained flag to store and deliver it with; for a subscription, the QoS to grant
    /// (`retain` false).
    Lowered {
        /// The QoS (never above the one asked for).
        qos: u8,
        /// The retained flag (never set unless the publish set it).
        retain: bool,
    },
}

/// Who a session was admitted as ([`Worker::admitted_as`](crate::Worker::admitted_as)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmittedAs<'a> {
    /// Its tenant.
    pub tenant: &'a str,
    /// The device id the policy named (empty when it named none).
    pub device_id: &'a str,
    /// When the proof it connected with expires (ms since the Unix epoch), if it does: a SAS
    /// token's `se`.
    pub expires_at_ms: Option<u64>,
}
