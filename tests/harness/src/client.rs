//! Real MQTT clients (rumqttc, v5 and v3.1.1) whose packets are reported with their codes.

use std::sync::Once;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use mqtt_policy_host::ReasonCode;
use rumqttc::{QoS, TlsConfiguration, Transport};

/// Protocol version of a test client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// MQTT 5.0.
    V5,
    /// MQTT 3.1.1.
    V311,
}

/// What a client saw, with numeric codes as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// CONNACK with its code, or a refused connection's code.
    ConnAck(u8),
    /// The session-present flag of the CONNACK that follows.
    SessionPresent(bool),
    /// PUBACK (or PUBREC) of a packet id, with its reason code (none on v3.1.1).
    PubAck {
        /// The packet id.
        pkid: u16,
        /// The reason code (v5 only).
        code: Option<u8>,
    },
    /// SUBACK with the code of each filter.
    SubAck(Vec<u8>),
    /// A delivered message.
    Publish {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
        /// Its QoS.
        qos: u8,
        /// Its retain flag.
        retain: bool,
    },
    /// DISCONNECT from the server with its reason code.
    Disconnect(u8),
    /// The connection ended, with the client library's words.
    Closed(String),
}

/// How to connect.
#[derive(Clone)]
pub struct Opts {
    /// Broker port on 127.0.0.1.
    pub port: u16,
    /// Protocol version.
    pub proto: Proto,
    /// Client identifier.
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// Clean start (v5) / clean session (v3.1.1).
    pub clean: bool,
    /// (CA PEM, client cert PEM, client key PEM)
    pub tls: Option<(String, String, String)>,
}

impl Opts {
    /// A plain client: clean start, no credentials, no TLS.
    pub fn new(port: u16, proto: Proto, client_id: &str) -> Opts {
        Opts { port, proto, client_id: client_id.into(), credentials: None, clean: true, tls: None }
    }
    /// With clean start (session) set to `clean`.
    pub fn clean(mut self, clean: bool) -> Opts {
        self.clean = clean;
        self
    }
    /// With a user name and password.
    pub fn user(mut self, user: &str, password: &str) -> Opts {
        self.credentials = Some((user.into(), password.into()));
        self
    }
    /// Over TLS to `port`, trusting `ca`, presenting `cert` with `key` (all PEM).
    pub fn tls(mut self, port: u16, ca: &str, cert: &str, key: &str) -> Opts {
        self.port = port;
        self.tls = Some((ca.into(), cert.into(), key.into()));
        self
    }
}

enum Handle {
    V5(rumqttc::v5::Client),
    V311(rumqttc::Client),
}

/// A connected (or refused) client with its packet stream.
pub struct Mqtt {
    handle: Handle,
    rx: Receiver<Seen>,
    /// Packets read but not yet asked for.
    backlog: Vec<Seen>,
    /// The protocol version it speaks.
    pub proto: Proto,
    /// The CONNACK's session-present flag: the broker kept a session for this client id.
    pub session_present: bool,
}

const WAIT: Duration = Duration::from_secs(10);

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn words(debug_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug_name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn v5_code(name: &str) -> u8 {
    match name {
        "Success" => 0,
        "NoMatchingSubscribers" => 0x10,
        "QoSNotSupported" => 0x9B,
        n => ReasonCode::parse(&words(n)).map(ReasonCode::code).unwrap_or(0xFF),
    }
}

impl Mqtt {
    /// Connects and waits for the CONNACK (or the refusal). Never retries. Panics if the
    /// connection closes before a CONNACK (see [`Mqtt::try_connect`]).
    pub fn connect(o: &Opts) -> (Mqtt, u8) {
        Mqtt::try_connect(o).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Mqtt::connect`], with a connection closed before any CONNACK (e.g. a TLS handshake the
    /// broker refused) as an error.
    pub fn try_connect(o: &Opts) -> Result<(Mqtt, u8), String> {
        install_crypto();
        let (tx, rx) = channel();
        let transport = o.tls.as_ref().map(|(ca, cert, key)| {
            Transport::Tls(TlsConfiguration::Simple {
                ca: ca.as_bytes().to_vec(),
                alpn: None,
                client_auth: Some((cert.as_bytes().to_vec(), key.as_bytes().to_vec())),
            })
        });
        let handle = match o.proto {
            Proto::V5 => {
                let mut opts = rumqttc::v5::MqttOptions::new(o.client_id.clone(), "127.0.0.1", o.port);
                opts.set_clean_start(o.clean).set_keep_alive(Duration::from_secs(30));
                if let Some((u, p)) = &o.credentials {
                    opts.set_credentials(u.clone(), p.clone());
                }
                if let Some(t) = transport {
                    opts.set_transport(t);
                }
                let (client, mut conn) = rumqttc::v5::Client::new(opts, 100);
                std::thread::spawn(move || {
                    use rumqttc::v5::{ConnectionError, Event, mqttbytes::v5::Packet};
                    for n in conn.iter() {
                        let seen = match n {
                            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                                let _ = tx.send(Seen::SessionPresent(c.session_present));
                                Seen::ConnAck(v5_code(&format!("{:?}", c.code)))
                            }
                            Ok(Event::Incoming(Packet::PubAck(a))) => {
                                Seen::PubAck { pkid: a.pkid, code: Some(v5_code(&format!("{:?}", a.reason))) }
                            }
                            Ok(Event::Incoming(Packet::PubRec(a))) => {
                                Seen::PubAck { pkid: a.pkid, code: Some(v5_code(&format!("{:?}", a.reason))) }
                            }
                            Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(
                                s.return_codes
                                    .iter()
                                    .map(|c| match c {
                                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(q) => *q as u8,
                                        other => v5_code(&format!("{other:?}")),
                                    })
                                    .collect(),
                            ),
                            Ok(Event::Incoming(Packet::Publish(p))) => Seen::Publish {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.to_vec(),
                                qos: p.qos as u8,
                                retain: p.retain,
                            },
                            Ok(Event::Incoming(Packet::Disconnect(d))) => Seen::Disconnect(d.reason_code as u8),
                            Ok(_) => continue,
                            Err(ConnectionError::ConnectionRefused(code)) => {
                                let _ = tx.send(Seen::ConnAck(v5_code(&format!("{code:?}"))));
                                break;
                            }
                            Err(ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
                                reason_code,
                                ..
                            })) => {
                                let _ = tx.send(Seen::Disconnect(reason_code as u8));
                                break;
                            }
                            Err(e) => {
                                let _ = tx.send(Seen::Closed(e.to_string()));
                                break;
                            }
                        };
                        if tx.send(seen).is_err() {
                            break;
                        }
                    }
                });
                Handle::V5(client)
            }
            Proto::V311 => {
                let mut opts = rumqttc::MqttOptions::new(o.client_id.clone(), "127.0.0.1", o.port);
                opts.set_clean_session(o.clean)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(4 << 20, 4 << 20);
                if let Some((u, p)) = &o.credentials {
                    opts.set_credentials(u.clone(), p.clone());
                }
                if let Some(t) = transport {
                    opts.set_transport(t);
                }
                let (client, mut conn) = rumqttc::Client::new(opts, 100);
                std::thread::spawn(move || {
                    use rumqttc::{ConnectionError, Event, Packet, SubscribeReasonCode};
                    for n in conn.iter() {
                        let seen = match n {
                            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                                let _ = tx.send(Seen::SessionPresent(c.session_present));
                                Seen::ConnAck(c.code as u8)
                            }
                            Ok(Event::Incoming(Packet::PubAck(a))) => Seen::PubAck { pkid: a.pkid, code: None },
                            Ok(Event::Incoming(Packet::PubRec(a))) => Seen::PubAck { pkid: a.pkid, code: None },
                            Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(
                                s.return_codes
                                    .iter()
                                    .map(|c| match c {
                                        SubscribeReasonCode::Success(q) => *q as u8,
                                        SubscribeReasonCode::Failure => 0x80,
                                    })
                                    .collect(),
                            ),
                            Ok(Event::Incoming(Packet::Publish(p))) => Seen::Publish {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                qos: p.qos as u8,
                                retain: p.retain,
                            },
                            Ok(_) => continue,
                            Err(ConnectionError::ConnectionRefused(code)) => {
                                let _ = tx.send(Seen::ConnAck(code as u8));
                                break;
                            }
                            Err(e) => {
                                let _ = tx.send(Seen::Closed(e.to_string()));
                                break;
                            }
                        };
                        if tx.send(seen).is_err() {
                            break;
                        }
                    }
                });
                Handle::V311(client)
            }
        };
        let mut m = Mqtt { handle, rx, backlog: Vec::new(), proto: o.proto, session_present: false };
        let code = match m.next_matching(WAIT, |s| matches!(s, Seen::ConnAck(_) | Seen::Closed(_))) {
            Some(Seen::ConnAck(c)) => c,
            Some(Seen::Closed(e)) => return Err(format!("connection closed before CONNACK: {e}")),
            _ => panic!("no CONNACK within {WAIT:?}"),
        };
        m.session_present = m.backlog.contains(&Seen::SessionPresent(true));
        m.backlog.retain(|s| !matches!(s, Seen::SessionPresent(_)));
        Ok((m, code))
    }

    /// Connects and asserts it was accepted.
    pub fn connected(o: &Opts) -> Mqtt {
        let (m, code) = Mqtt::connect(o);
        assert_eq!(code, 0, "CONNACK for {}", o.client_id);
        m
    }

    fn next_matching(&mut self, wait: Duration, pred: impl Fn(&Seen) -> bool) -> Option<Seen> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return Some(self.backlog.remove(i));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(s) if pred(&s) => return Some(s),
                Ok(s) => self.backlog.push(s),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Publishes; for QoS 1 (2) returns the PUBACK's (PUBREC's) code (None on v3.1.1, which has none).
    pub fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) -> Option<u8> {
        match self.try_publish(topic, qos, retain, payload) {
            Ok(code) => code,
            Err(other) => panic!("no PUBACK for {topic}: {other}"),
        }
    }

    /// As [`Mqtt::publish`], but a connection the broker closed instead of acknowledging (as
    /// RabbitMQ does for a refused publish) is an `Err` with what the client saw.
    pub fn try_publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) -> Result<Option<u8>, String> {
        let queued = match &self.handle {
            Handle::V5(c) => c.publish(topic, qos5(qos), retain, payload.to_vec()).is_ok(),
            Handle::V311(c) => c.publish(topic, qos_of(qos), retain, payload.to_vec()).is_ok(),
        };
        if !queued {
            return Err("the client is closed".into());
        }
        if qos == 0 {
            return Ok(None);
        }
        match self.next_matching(WAIT, |s| matches!(s, Seen::PubAck { .. } | Seen::Closed(_) | Seen::Disconnect(_))) {
            Some(Seen::PubAck { code, .. }) => Ok(code),
            other => Err(format!("{other:?}")),
        }
    }

    /// Subscribes; returns the SUBACK code.
    pub fn subscribe(&mut self, filter: &str, qos: u8) -> u8 {
        match self.try_subscribe(filter, qos) {
            Ok(code) => code,
            Err(other) => panic!("no SUBACK for {filter}: {other}"),
        }
    }

    /// As [`Mqtt::subscribe`], but a connection the broker closed instead of answering (as
    /// RabbitMQ does for a refused subscription) is an `Err` with what the client saw.
    pub fn try_subscribe(&mut self, filter: &str, qos: u8) -> Result<u8, String> {
        let queued = match &self.handle {
            Handle::V5(c) => c.subscribe(filter, qos5(qos)).is_ok(),
            Handle::V311(c) => c.subscribe(filter, qos_of(qos)).is_ok(),
        };
        if !queued {
            return Err("the client is closed".into());
        }
        match self.next_matching(WAIT, |s| matches!(s, Seen::SubAck(_) | Seen::Closed(_) | Seen::Disconnect(_))) {
            Some(Seen::SubAck(codes)) => Ok(codes[0]),
            other => Err(format!("{other:?}")),
        }
    }

    /// The next message delivered within `wait`, if any.
    pub fn recv(&mut self, wait: Duration) -> Option<(String, Vec<u8>, bool)> {
        match self.next_matching(wait, |s| matches!(s, Seen::Publish { .. })) {
            Some(Seen::Publish { topic, payload, retain, .. }) => Some((topic, payload, retain)),
            _ => None,
        }
    }

    /// All messages delivered within `wait`.
    pub fn drain(&mut self, wait: Duration) -> Vec<(String, Vec<u8>, bool)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        while let Some(m) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            out.push(m);
        }
        out
    }

    /// Waits for the server to end the connection: the DISCONNECT reason (v5), or 0xFF if
    /// it closed without one.
    pub fn closed(&mut self, wait: Duration) -> Option<u8> {
        match self.next_matching(wait, |s| matches!(s, Seen::Disconnect(_) | Seen::Closed(_))) {
            Some(Seen::Disconnect(code)) => Some(code),
            Some(Seen::Closed(_)) => Some(0xFF),
            _ => None,
        }
    }

    /// Whether the connection is still up: a round trip (subscribe to an unused filter the
    /// policy may refuse; any SUBACK proves the session is alive).
    pub fn is_alive(&mut self) -> bool {
        if self.backlog.iter().any(|s| matches!(s, Seen::Closed(_) | Seen::Disconnect(_))) {
            return false;
        }
        let sent = match &self.handle {
            Handle::V5(c) => c.subscribe("alive/check", qos5(0)).is_ok(),
            Handle::V311(c) => c.subscribe("alive/check", QoS::AtMostOnce).is_ok(),
        };
        sent && matches!(
            self.next_matching(WAIT, |s| matches!(s, Seen::SubAck(_) | Seen::Closed(_) | Seen::Disconnect(_))),
            Some(Seen::SubAck(_))
        )
    }

    /// Sends DISCONNECT.
    pub fn disconnect(self) {
        match &self.handle {
            Handle::V5(c) => {
                let _ = c.disconnect();
            }
            Handle::V311(c) => {
                let _ = c.disconnect();
            }
        }
    }
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}
