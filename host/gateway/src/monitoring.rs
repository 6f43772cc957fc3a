//! Monitoring messages the way IBM Watson IoT Platform reports connections (seed 004):
//! `Connect` (retained), `FailedConnect`, `Disconnect` (retained for devices; for
//! applications not retained, and their retained `Connect` cleared) as JSON on
//! `iot-2/type/{type}/id/{id}/mon` and `iot-2/app/{app}/mon`, with IBM's closing codes.
//!
//! The tenant's policy decides whether a connection is reported and as what
//! ([`MonitorSubject`], from `monitor-device` / `monitor-application`); the operator decides
//! whether the gateway publishes any ([`crate::Config::monitoring`]); the gateway fills in the
//! connection's facts and builds the messages; the broker adapter only publishes them (from
//! the [`MonitorQueue`](crate::events::MonitorQueue)) and says how a connection closed
//! ([`BrokerClose`]).
//!
//! Server recovery: with a state file ([`crate::Config::monitoring_state`]), every retained
//! `Connect` the gateway publishes is written down, and its `Disconnect` crosses it out; at the
//! next start, each device still written down gets a retained `Disconnect` with code 93, so
//! a device that did not come back after a restart (or a crash) is never left "connected".

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mqtt_policy_host::{MonitorSubject, Protocol, ReasonCode};
use serde::Serialize;

use crate::events::{MonitorMessage, MonitorQueue};

/// Most `FailedConnect` messages one tenant publishes per second; the rest are dropped (and
/// counted). A client without credentials can cause one per attempt, so they are bounded
/// apart from `Connect` and `Disconnect`, which need an admitted connection each.
pub const MAX_FAILED_CONNECTS_PER_SECOND: u32 = 100;

/// Most lines the state file grows to before it is rewritten with only the devices still
/// connected.
pub const MAX_STATE_LINES: usize = 10_000;

/// IBM's closing codes and reason strings (seed 004's two tables).
pub const CLOSE_CODES: &[(u16, &str)] = &[
    (0, "The connection completed normally"),
    (91, "The connection was closed by the client"),
    (92, "The connection was closed by the server"),
    (93, "The connection was closed because the server was shut down"),
    (94, "The connection was closed by an administrator"),
    (104, "The server capacity is reached"),
    (105, "The data from the client is not valid"),
    (154, "Too many producers or consumers in a single connection"),
    (160, "The connection timed out"),
    (163, "Closed during TLS handshake"),
    (164, "No data was received on a connection"),
    (165, "The initial packet is too large"),
    (166, "The ClientID is not valid"),
    (167, "Server not available"),
    (169, "Certificate missing"),
    (170, "Certificate not valid"),
    (173, "Too many connections for an organization"),
    (175, "The HTTP Authorization header cannot be changed in a connection"),
    (176, "Authorization request is in delay or too many authentication requests"),
    (180, "The operation is not authorized"),
    (271, "The length of the message is not correct"),
    (276, "The topic is not valid"),
    (287, "The message size is too large for this endpoint"),
    (288, "The clientID was reused"),
];

/// Why a connection closed, with IBM's code and the reason string (its table's, with the
/// detail after a colon where there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// The closing code.
    pub code: u16,
    /// What follows the table's reason string after `: `, if anything.
    pub detail: Option<String>,
}

impl Closing {
    /// The code without detail.
    pub fn code(code: u16) -> Closing {
        Closing { code, detail: None }
    }

    /// The reason string: the table's for the code, then `: detail`.
    pub fn reason(&self) -> String {
        let base = CLOSE_CODES.iter().find(|(c, _)| *c == self.code).map_or("The connection was closed", |(_, r)| r);
        match &self.detail {
            Some(d) => format!("{base}: {d}"),
            None => base.to_owned(),
        }
    }

    /// The code of a refusal (a rejected connect, or a denial the gateway closed a connection
    /// with), by its MQTT reason code.
    pub fn of_denial(reason: ReasonCode, message: &str) -> Closing {
        let code = match reason {
            ReasonCode::NotAuthorized
            | ReasonCode::BadUserNameOrPassword
            | ReasonCode::Banned
            | ReasonCode::BadAuthenticationMethod => 180,
            ReasonCode::ClientIdentifierNotValid => 166,
            ReasonCode::PacketTooLarge => 287,
            ReasonCode::TopicNameInvalid | ReasonCode::TopicFilterInvalid => 276,
            ReasonCode::QuotaExceeded => 173,
            ReasonCode::ServerUnavailable => 167,
            ReasonCode::ServerBusy => 104,
            ReasonCode::ConnectionRateExceeded => 176,
            ReasonCode::MalformedPacket | ReasonCode::ProtocolError => 105,
            ReasonCode::AdministrativeAction => 94,
            _ => 92,
        };
        Closing { code, detail: (!message.is_empty()).then(|| message.to_owned()) }
    }
}

/// How the broker says a connection closed (what a broker adapter can tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerClose {
    /// The client sent DISCONNECT: 0.
    Normal,
    /// The socket closed or failed without a DISCONNECT: 91.
    ClientClosed,
    /// The broker closed it for a protocol or other error of its own: 92.
    ServerClosed,
    /// The broker is shutting down: 93.
    Shutdown,
    /// Closed by an administrative action (a plugin or an operator kicked it): 94.
    Administrator,
    /// No packet within one and a half keep-alive periods: 160.
    KeepAlive,
    /// Another connection took its client id over: 288.
    Takeover,
    /// The broker did not say: reported as 91, with that said in the reason.
    Unknown,
}

impl BrokerClose {
    /// The closing code.
    pub fn closing(self) -> Closing {
        match self {
            BrokerClose::Normal => Closing::code(0),
            BrokerClose::ClientClosed => Closing::code(91),
            BrokerClose::ServerClosed => Closing::code(92),
            BrokerClose::Shutdown => Closing::code(93),
            BrokerClose::Administrator => Closing::code(94),
            BrokerClose::KeepAlive => Closing::code(160),
            BrokerClose::Takeover => Closing::code(288),
            BrokerClose::Unknown => {
                Closing { code: 91, detail: Some("the broker did not say how the connection closed".into()) }
            }
        }
    }
}

/// The topic of a subject under a tenant's topic prefix.
pub fn topic_of(subject: &MonitorSubject, prefix: Option<&str>) -> String {
    let prefix = prefix.unwrap_or("");
    match subject {
        MonitorSubject::Device { device_type, device_id } => {
            format!("{prefix}iot-2/type/{device_type}/id/{device_id}/mon")
        }
        MonitorSubject::Application { app_id } => format!("{prefix}iot-2/app/{app_id}/mon"),
    }
}

pub use crate::config::is_monitoring_topic;

/// IBM's protocol name: `mqtt3`, `mqtt4` or `mqtt5`, with `-ws` over websockets.
pub fn protocol_name(p: Protocol, websockets: bool) -> &'static str {
    match (p, websockets) {
        (Protocol::Mqtt31, false) => "mqtt3",
        (Protocol::Mqtt311, false) => "mqtt4",
        (Protocol::Mqtt5, false) => "mqtt5",
        (Protocol::Mqtt31, true) => "mqtt3-ws",
        (Protocol::Mqtt311, true) => "mqtt4-ws",
        (Protocol::Mqtt5, true) => "mqtt5-ws",
    }
}

/// `2026-12-02T20:31:05.123Z` for milliseconds since the Unix epoch.
pub fn iso_time(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let rem = ms % 86_400_000;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// What the gateway knows of a connection, for its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The client's address as the broker knows it.
    pub client_addr: String,
    /// Its client id.
    pub client_id: String,
    /// The broker's port it connected to (0 when the broker did not say).
    pub port: u16,
    /// Whether the connection presented a client certificate over TLS.
    pub secure: bool,
    /// `mqtt3`, `mqtt4` or `mqtt5`, with `-ws` over websockets.
    pub protocol: &'static str,
    /// The user name it sent.
    pub user: Option<String>,
    /// The common name of its certificate.
    pub certname: Option<String>,
    /// When it connected (ms since the epoch); none for a failed connection.
    pub connect_ms: Option<u64>,
}

/// Messages in and out counted for one connection, from what the gateway is asked: publishes
/// the client made (every write check, allowed or not) and deliveries to it that were allowed,
/// with their payload bytes (not the MQTT framing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Payload bytes the client published.
    pub read_bytes: u64,
    /// Messages the client published.
    pub read_msgs: u64,
    /// Payload bytes delivered to the client.
    pub write_bytes: u64,
    /// Messages delivered to the client.
    pub write_msgs: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Json<'a> {
    action: &'a str,
    time: String,
    client_addr: &'a str,
    #[serde(rename = "ClientID")]
    client_id: &'a str,
    port: u16,
    secure: bool,
    protocol: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_bytes: Option<u64>,
    #[serde(rename = "ReadMsg", skip_serializing_if = "Option::is_none")]
    read_msg: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_bytes: Option<u64>,
    #[serde(rename = "WriteMsg", skip_serializing_if = "Option::is_none")]
    write_msg: Option<u64>,
}

/// The JSON of one message: `Connect` (no closing), `FailedConnect` (a closing, no traffic)
/// or `Disconnect` (a closing and the traffic). CloseCode and Reason are left out for code 0.
pub fn message(
    action: &str,
    now_ms: u64,
    facts: &Facts,
    closing: Option<&Closing>,
    traffic: Option<Traffic>,
) -> String {
    let closing = closing.filter(|c| c.code != 0);
    // A refused client chose these freely (up to 64 KiB each), and every application watching
    // would receive them at the FailedConnect rate.
    let failed = action == "FailedConnect";
    let bounded = |s: &'_ str| -> String { if failed { clip(s, MAX_FAILED_FIELD).to_owned() } else { s.to_owned() } };
    let (client_id, user) = (bounded(&facts.client_id), facts.user.as_deref().map(bounded));
    let json = Json {
        action,
        time: iso_time(now_ms),
        client_addr: &facts.client_addr,
        client_id: &client_id,
        port: facts.port,
        secure: facts.secure,
        protocol: facts.protocol,
        user: user.as_deref(),
        certname: facts.certname.as_deref(),
        connect_time: facts.connect_ms.map(iso_time),
        close_code: closing.map(|c| c.code),
        reason: closing.map(Closing::reason),
        read_bytes: traffic.map(|t| t.read_bytes),
        read_msg: traffic.map(|t| t.read_msgs),
        write_bytes: traffic.map(|t| t.write_bytes),
        write_msg: traffic.map(|t| t.write_msgs),
    };
    serde_json::to_string(&json).expect("plain data serializes")
}

/// Longest `ClientID` and `User` of a `FailedConnect`, in bytes.
pub const MAX_FAILED_FIELD: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The gateway's monitoring: where messages go, the state file, the `FailedConnect` budget.
pub struct Monitoring {
    queue: Arc<MonitorQueue>,
    state: Option<Mutex<State>>,
    failed: Mutex<HashMap<String, (u64, u32)>>,
}

/// The state file and what it says: retained `Connect`s not yet crossed out.
struct State {
    path: PathBuf,
    file: File,
    live: HashMap<String, String>,
    lines: usize,
}

impl State {
    fn append(&mut self, line: &str) {
        // Written at once (no buffer): a crash right after still finds the line.
        let _ = self.file.write_all(line.as_bytes());
        self.lines += 1;
        if self.lines > MAX_STATE_LINES.max(2 * self.live.len()) {
            self.rewrite();
        }
    }

    /// Rewrites the file with only the live entries (renamed in, so it is never half written).
    fn rewrite(&mut self) {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for (topic, payload) in &self.live {
            text += &format!("+\t{topic}\t{payload}\n");
        }
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, &self.path).is_ok() {
            if let Ok(f) = OpenOptions::new().append(true).open(&self.path) {
                self.file = f;
            }
            self.lines = self.live.len();
        }
    }
}

impl Monitoring {
    /// Monitoring publishing to `queue`; with a state file, recovers from it first: a retained
    /// `Disconnect` (93) for every device whose `Connect` it still lists.
    pub fn start(queue: Arc<MonitorQueue>, state: Option<&Path>) -> std::io::Result<Monitoring> {
        let state = match state {
            None => None,
            Some(path) => {
                let mut live = HashMap::new();
                if let Ok(f) = File::open(path) {
                    for line in BufReader::new(f).lines().map_while(Result::ok) {
                        let mut parts = line.splitn(3, '\t');
                        match (parts.next(), parts.next(), parts.next()) {
                            (Some("+"), Some(topic), Some(payload)) => {
                                live.insert(topic.to_owned(), payload.to_owned());
                            }
                            (Some("-"), Some(topic), _) => {
                                live.remove(topic);
                            }
                            _ => {}
                        }
                    }
                }
                let now = mqtt_policy_host::events::now_ms();
                let mut topics: Vec<_> = live.into_iter().collect();
                topics.sort();
                for (topic, connect) in topics {
                    if let Some(payload) = recovered(&connect, now) {
                        // An application's Disconnect is not retained, and its retained
                        // Connect is cleared, as when it leaves while the broker runs.
                        let app = is_application_topic(&topic);
                        queue.push_message(MonitorMessage { topic: topic.clone(), payload, retain: !app });
                        if app {
                            queue.push_message(MonitorMessage { topic, payload: String::new(), retain: true });
                        }
                    }
                }
                std::fs::write(path, "")?;
                let file = OpenOptions::new().append(true).open(path)?;
                Some(Mutex::new(State { path: path.to_owned(), file, live: HashMap::new(), lines: 0 }))
            }
        };
        Ok(Monitoring { queue, state, failed: Mutex::new(HashMap::new()) })
    }

    /// A device's retained `Connect`, written down for recovery.
    pub(crate) fn connect(&self, topic: String, payload: String, retain: bool) {
        if retain && let Some(state) = &self.state {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let line = format!("+\t{topic}\t{payload}\n");
            s.live.insert(topic.clone(), payload.clone());
            s.append(&line);
        }
        self.queue.push_message(MonitorMessage { topic, payload, retain });
    }

    /// A `Disconnect`; for a device, crossed out of the state file.
    pub(crate) fn disconnect(&self, topic: String, payload: String, retain: bool) {
        if let Some(state) = &self.state {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if s.live.remove(&topic).is_some() {
                let line = format!("-\t{topic}\n");
                s.append(&line);
            }
        }
        self.queue.push_message(MonitorMessage { topic, payload, retain });
    }

    /// Clears the retained message of `topic` (an application that left).
    pub(crate) fn clear(&self, topic: String) {
        self.queue.push_message(MonitorMessage { topic, payload: String::new(), retain: true });
    }

    /// A `FailedConnect`, unless the tenant already had [`MAX_FAILED_CONNECTS_PER_SECOND`]
    /// this second.
    pub(crate) fn failed(&self, tenant: &str, topic: String, payload: String, now_ms: u64) {
        {
            let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            let second = now_ms / 1000;
            if f.len() > 10_000 {
                f.retain(|_, (s, _)| *s == second);
            }
            let entry = f.entry(tenant.to_owned()).or_insert((second, 0));
            if entry.0 != second {
                *entry = (second, 0);
            }
            if entry.1 >= MAX_FAILED_CONNECTS_PER_SECOND {
                self.queue.count_dropped();
                return;
            }
            entry.1 += 1;
        }
        self.queue.push_message(MonitorMessage { topic, payload, retain: false });
    }
}

/// Whether a monitoring topic is an application's (`…iot-2/app/{app}/mon`, one level for the
/// id) rather than a device's (`…iot-2/type/{type}/id/{id}/mon`).
fn is_application_topic(topic: &str) -> bool {
    let mut levels = topic.rsplit('/');
    matches!(
        (levels.next(), levels.next(), levels.next(), levels.next()),
        (Some("mon"), Some(_), Some("app"), Some("iot-2"))
    )
}

/// The recovery `Disconnect` (93) for a stored `Connect`: its facts, the time now, counters 0
/// (what the connection exchanged before the restart is not kept).
fn recovered(connect: &str, now_ms: u64) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(connect).ok()?;
    let o = v.as_object_mut()?;
    let closing = Closing { code: 93, detail: Some("recovered after a restart of the server".into()) };
    o.insert("Action".into(), "Disconnect".into());
    o.insert("Time".into(), iso_time(now_ms).into());
    o.insert("CloseCode".into(), closing.code.into());
    o.insert("Reason".into(), closing.reason().into());
    for k in ["ReadBytes", "ReadMsg", "WriteBytes", "WriteMsg"] {
        o.insert(k.into(), 0.into());
    }
    Some(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_796_083_200_000), "2026-12-01T00:00:00.000Z");
        assert_eq!(iso_time(951_782_400_000 + 3_723_004), "2000-02-29T01:02:03.004Z");
    }

    #[test]
    fn monitoring_topics() {
        assert!(is_monitoring_topic("iot-2/type/sensor/id/s1/mon"));
        assert!(is_monitoring_topic("iot-2/app/a1/mon"));
        assert!(!is_monitoring_topic("iot-2/type/sensor/id/s1/mon/x"));
        assert!(!is_monitoring_topic("iot-2/type/sensor/id/s1/evt/t/fmt/json"));
        let s = MonitorSubject::device("sensor", "s1").unwrap();
        assert_eq!(topic_of(&s, Some("t/acme/")), "t/acme/iot-2/type/sensor/id/s1/mon");
        assert!(MonitorSubject::device("a/b", "s1").is_none() && MonitorSubject::application("#").is_none());
    }

    #[test]
    fn closing_codes_and_reasons() {
        assert_eq!(
            Closing::of_denial(ReasonCode::NotAuthorized, "device is not enabled").reason(),
            "The operation is not authorized: device is not enabled"
        );
        assert_eq!(Closing::of_denial(ReasonCode::PacketTooLarge, "").code, 287);
        assert_eq!(BrokerClose::Takeover.closing().reason(), "The clientID was reused");
        let f = Facts {
            client_addr: "127.0.0.1".into(),
            client_id: "d:acme:sensor:s1".into(),
            port: 1883,
            secure: false,
            protocol: "mqtt4",
            user: Some("use-token-auth".into()),
            certname: None,
            connect_ms: Some(0),
        };
        let normal: serde_json::Value =
            serde_json::from_str(&message("Disconnect", 0, &f, Some(&Closing::code(0)), Some(Traffic::default())))
                .unwrap();
        assert!(normal.get("CloseCode").is_none() && normal.get("Reason").is_none(), "{normal}");
        assert_eq!(normal["ReadMsg"], 0);
        let connect: serde_json::Value = serde_json::from_str(&message("Connect", 0, &f, None, None)).unwrap();
        assert!(connect.get("ReadBytes").is_none());
        let back: serde_json::Value = serde_json::from_str(&recovered(&connect.to_string(), 5).unwrap()).unwrap();
        assert_eq!((back["Action"].as_str(), back["CloseCode"].as_u64()), (Some("Disconnect"), Some(93)));
        assert_eq!(back["ClientID"], "d:acme:sensor:s1");
    }

    #[test]
    fn the_state_file_recovers_devices_still_connected() {
        let dir = std::env::temp_dir().join(format!("mqtt-policy-monitoring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        let _ = std::fs::remove_file(&path);
        let q = Arc::new(MonitorQueue::default());
        let m = Monitoring::start(q.clone(), Some(&path)).unwrap();
        m.connect("a/mon".into(), r#"{"Action":"Connect","ClientID":"a"}"#.into(), true);
        m.connect("b/mon".into(), r#"{"Action":"Connect","ClientID":"b"}"#.into(), true);
        m.disconnect("a/mon".into(), "{}".into(), true);
        assert_eq!(q.drain().len(), 3);
        drop(m);
        let m = Monitoring::start(q.clone(), Some(&path)).unwrap();
        let out = q.drain();
        assert_eq!(out.len(), 1, "only b was still connected");
        assert_eq!((out[0].topic.as_str(), out[0].retain), ("b/mon", true));
        assert!(out[0].payload.contains("\"CloseCode\":93"), "{}", out[0].payload);
        // An application still connected at the stop: a Disconnect that is not retained, and
        // its retained Connect cleared.
        let app = "t/iot-2/app/dash/mon";
        m.connect(app.into(), r#"{"Action":"Connect","ClientID":"a:t:dash"}"#.into(), true);
        q.drain();
        drop(m);
        let m = Monitoring::start(q.clone(), Some(&path)).unwrap();
        let out = q.drain();
        let got: Vec<(&str, bool, bool)> =
            out.iter().map(|m| (m.topic.as_str(), m.retain, m.payload.contains("\"CloseCode\":93"))).collect();
        assert_eq!(got, [(app, false, true), (app, true, false)], "{out:?}");
        assert!(out[1].payload.is_empty());
        assert!(!is_application_topic("t/iot-2/type/app/id/x/mon"), "a device of type app");
        drop(m);
        let m = Monitoring::start(q.clone(), Some(&path)).unwrap();
        assert!(q.drain().is_empty(), "recovered once");
        // Reconnecting devices do not grow the file without bound: it is rewritten.
        for _ in 0..MAX_STATE_LINES {
            m.connect("c/mon".into(), "{}".into(), true);
            m.disconnect("c/mon".into(), "{}".into(), true);
            assert_eq!(q.drain().len(), 2);
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= MAX_STATE_LINES, "{lines} lines");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_connects_client_id_and_user_name_are_cut() {
        let long = "é".repeat(40_000);
        let facts = Facts {
            client_addr: "127.0.0.1".into(),
            client_id: long.clone(),
            port: 1883,
            secure: false,
            protocol: "mqtt4",
            user: Some(long.clone()),
            certname: None,
            connect_ms: None,
        };
        let failed: serde_json::Value =
            serde_json::from_str(&message("FailedConnect", 0, &facts, Some(&Closing::code(180)), None)).unwrap();
        for field in ["ClientID", "User"] {
            let v = failed[field].as_str().unwrap();
            assert!(v.len() <= MAX_FAILED_FIELD && v.len() >= MAX_FAILED_FIELD - 1, "{field}: {} bytes", v.len());
            assert!(long.starts_with(v));
        }
        let connect: serde_json::Value = serde_json::from_str(&message("Connect", 0, &facts, None, None)).unwrap();
        assert_eq!(connect["ClientID"].as_str().map(str::len), Some(long.len()), "an admitted client's id is whole");
    }

    #[test]
    fn failed_connects_are_bounded_per_tenant_and_second() {
        let q = Arc::new(MonitorQueue::default());
        let m = Monitoring::start(q.clone(), None).unwrap();
        for _ in 0..MAX_FAILED_CONNECTS_PER_SECOND + 50 {
            m.failed("acme", "t".into(), "{}".into(), 7_000);
        }
        m.failed("globex", "t".into(), "{}".into(), 7_000);
        assert_eq!(q.drain().len(), MAX_FAILED_CONNECTS_PER_SECOND as usize + 1);
        assert_eq!(q.dropped(), 50);
        m.failed("acme", "t".into(), "{}".into(), 8_000);
        assert_eq!(q.drain().len(), 1, "a new second");
    }
}
