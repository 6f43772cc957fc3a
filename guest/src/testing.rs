//! The native test kit (not in `.wasm` builds): test a policy with `cargo test`, without a host.
//!
//! - [`crate::host`]'s calls work natively against in-memory fakes, one set per thread (each
//!   `#[test]` has its own): a clock you [`set_now`] or [`advance`] (it starts at
//!   [`START_MS`] and only moves when told), counters with the host's fixed windows, captured
//!   [`logs`], [`cache_calls`], [`monitored`] and a [`set_connection_count`].
//! - Every input record has a `Default` (a plain MQTT 5 client, the same defaults a cases file
//!   uses) and builders: `Connect::client("d1").username("u").password("p")`,
//!   `Publish::to("t").qos(1)`, `Subscribe::filter("f").qos(1)`, `Delivery::of("t")`,
//!   `Certificate::with_cn("d1")`.
//! - [`run_cases`] runs a cases file (the one `mqtt-policy test` reads) against the native
//!   policy, so the same cases run natively and as `.wasm`.
//!
//! ```
//! use mqtt_policy_guest::{host, testing};
//! testing::set_now(1_000);
//! assert_eq!(host::counter_add("msgs", 1, 1_000), 1);
//! assert_eq!(host::counter_add("msgs", 1, 1_000), 2);
//! testing::advance(1_000);                                 // a new window
//! assert_eq!(host::counter_add("msgs", 1, 1_000), 1);
//! host::log(host::Level::Info, "hello");
//! assert_eq!(testing::logs(), vec![(host::Level::Info, "hello".to_owned())]);
//! ```

use std::cell::RefCell;
use std::path::Path;

use mqtt_policy_cases::{self as cases, defaults};

use crate::bindings::mqtt_policy::policy::host::Level;
use crate::{
    Certificate, Connect, Delivery, DeliveryDecision, Denial, Policy, Protocol, Publish, PublishDecision, ReasonCode,
    Subscribe, SubscribeDecision,
};

/// Where the fake clock starts: 2026-01-01T00:00:00Z, in milliseconds since the Unix epoch.
pub const START_MS: u64 = 1_767_225_600_000;

/// Longest counter name the host accepts (its `Limits::MAX_COUNTER_NAME`): the fake refuses
/// longer ones as the host does, by failing the call (a panic here, a trap there).
pub const MAX_COUNTER_NAME: usize = 1024;

/// A connection reported for monitoring messages during `authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Monitored {
    /// `host::monitor_device(device_type, device_id)`.
    Device {
        /// Device type.
        device_type: String,
        /// Device id.
        device_id: String,
    },
    /// `host::monitor_application(app_id)`.
    Application(String),
}

struct Window {
    start_ms: u64,
    value: i64,
}

struct Fakes {
    now_ms: u64,
    counters: std::collections::BTreeMap<String, Window>,
    logs: Vec<(Level, String)>,
    cache_calls: Vec<u32>,
    connections: u32,
    monitored: Vec<Monitored>,
}

impl Default for Fakes {
    fn default() -> Fakes {
        Fakes {
            now_ms: START_MS,
            counters: Default::default(),
            logs: Vec::new(),
            cache_calls: Vec::new(),
            connections: 0,
            monitored: Vec::new(),
        }
    }
}

thread_local! {
    static FAKES: RefCell<Fakes> = RefCell::new(Fakes::default());
}

fn with<R>(f: impl FnOnce(&mut Fakes) -> R) -> R {
    FAKES.with(|s| f(&mut s.borrow_mut()))
}

/// Sets the fake clock (milliseconds since the Unix epoch).
pub fn set_now(ms: u64) {
    with(|s| s.now_ms = ms);
}

/// Moves the fake clock forward.
pub fn advance(ms: u64) {
    with(|s| s.now_ms += ms);
}

/// Sets what `host::connection_count` answers ([`run_cases`] keeps it as the host would).
pub fn set_connection_count(n: u32) {
    with(|s| s.connections = n);
}

/// The current value of counter `name` in its current window, if it was ever added to.
pub fn counter(name: &str) -> Option<i64> {
    with(|s| s.counters.get(name).map(|w| w.value))
}

/// Takes the lines logged so far.
pub fn logs() -> Vec<(Level, String)> {
    with(|s| std::mem::take(&mut s.logs))
}

/// Takes the `cache_decision` calls made so far (their `max_payload_size`).
pub fn cache_calls() -> Vec<u32> {
    with(|s| std::mem::take(&mut s.cache_calls))
}

/// Takes the monitoring reports made so far.
pub fn monitored() -> Vec<Monitored> {
    with(|s| std::mem::take(&mut s.monitored))
}

/// Forgets everything: clock back at [`START_MS`], no counters, logs or calls.
pub fn reset() {
    with(|s| *s = Fakes::default());
}

/// The fakes behind [`crate::host`] in native builds, with the host interface's signatures.
#[doc(hidden)]
pub mod fake {
    use super::*;

    pub fn log(level: Level, message: &str) {
        with(|s| s.logs.push((level, message.to_owned())));
    }

    pub fn now_millis() -> u64 {
        with(|s| s.now_ms)
    }

    pub fn counter_add(name: &str, delta: i64, window_ms: u64) -> i64 {
        assert!(
            name.len() <= MAX_COUNTER_NAME,
            "counter name of {} bytes is longer than the host's limit of {MAX_COUNTER_NAME} bytes (the call would trap)",
            name.len()
        );
        with(|s| {
            // The host's fixed windows: a new window starts from zero.
            let start_ms = if window_ms == 0 { 0 } else { s.now_ms - s.now_ms % window_ms };
            let w = s.counters.entry(name.to_owned()).or_insert(Window { start_ms, value: 0 });
            if w.start_ms != start_ms {
                *w = Window { start_ms, value: 0 };
            }
            w.value = w.value.saturating_add(delta);
            w.value
        })
    }

    pub fn connection_count() -> u32 {
        with(|s| s.connections)
    }

    pub fn cache_decision(max_payload_size: u32) {
        with(|s| s.cache_calls.push(max_payload_size));
    }

    pub fn monitor_device(device_type: &str, device_id: &str) {
        let m = Monitored::Device { device_type: device_type.to_owned(), device_id: device_id.to_owned() };
        with(|s| s.monitored.push(m));
    }

    pub fn monitor_application(app_id: &str) {
        with(|s| s.monitored.push(Monitored::Application(app_id.to_owned())));
    }
}

impl Default for Connect {
    /// A plain MQTT 5 client `client-1` of tenant `default` over TCP from loopback, with clean
    /// start: the defaults of a cases file's connect.
    fn default() -> Connect {
        Connect {
            tenant: "default".to_owned(),
            client_id: "client-1".to_owned(),
            username: None,
            password: None,
            clean_start: defaults::CLEAN_START,
            keep_alive: defaults::KEEP_ALIVE,
            protocol: Protocol::Mqtt5,
            tls: false,
            certificate: None,
            peer: defaults::PEER.to_owned(),
            resumed: false,
        }
    }
}

impl Connect {
    /// The default connect ([`Connect::default`]) of client `client_id`.
    pub fn client(client_id: &str) -> Connect {
        Connect { client_id: client_id.to_owned(), ..Connect::default() }
    }

    /// With this tenant.
    pub fn tenant(mut self, tenant: &str) -> Connect {
        self.tenant = tenant.to_owned();
        self
    }

    /// With this user name.
    pub fn username(mut self, username: &str) -> Connect {
        self.username = Some(username.to_owned());
        self
    }

    /// With this password.
    pub fn password(mut self, password: &str) -> Connect {
        self.password = Some(password.as_bytes().to_vec());
        self
    }

    /// With this protocol version.
    pub fn protocol(mut self, protocol: Protocol) -> Connect {
        self.protocol = protocol;
        self
    }

    /// Over TLS with this client certificate (as the host would have parsed it).
    pub fn certificate(mut self, certificate: Certificate) -> Connect {
        self.certificate = Some(certificate);
        self.tls = true;
        self
    }

    /// Re-established by the host (`resumed = true`), not a new connection.
    pub fn resumed(mut self) -> Connect {
        self.resumed = true;
        self
    }
}

impl Default for Certificate {
    /// A certificate verified by no tenant CA, valid from the epoch to 2038, serial `01`.
    fn default() -> Certificate {
        Certificate {
            subject_cn: None,
            subject: String::new(),
            issuer: String::new(),
            serial: defaults::SERIAL.to_owned(),
            sha256: String::new(),
            not_before: 0,
            not_after: defaults::NOT_AFTER,
            dns_names: Vec::new(),
            uris: Vec::new(),
            authority_key_id: None,
            subject_key_id: None,
            chain_verified_by: None,
        }
    }
}

impl Certificate {
    /// The default certificate with subject `CN={cn}`.
    pub fn with_cn(cn: &str) -> Certificate {
        Certificate { subject_cn: Some(cn.to_owned()), subject: format!("CN={cn}"), ..Certificate::default() }
    }

    /// Verified by the tenant CA called `ca`.
    pub fn verified_by(mut self, ca: &str) -> Certificate {
        self.chain_verified_by = Some(ca.to_owned());
        self
    }
}

impl Default for Publish {
    /// QoS 0, not retained, empty payload, to topic `t`.
    fn default() -> Publish {
        Publish { topic: "t".to_owned(), qos: 0, retain: false, payload_size: 0 }
    }
}

impl Publish {
    /// The default publish to `topic`.
    pub fn to(topic: &str) -> Publish {
        Publish { topic: topic.to_owned(), ..Publish::default() }
    }

    /// At this QoS.
    pub fn qos(mut self, qos: u8) -> Publish {
        self.qos = qos;
        self
    }

    /// With the retained flag.
    pub fn retain(mut self) -> Publish {
        self.retain = true;
        self
    }

    /// With a payload of `bytes`.
    pub fn payload(mut self, bytes: u32) -> Publish {
        self.payload_size = bytes;
        self
    }
}

impl Default for Delivery {
    /// QoS 0, not retained, empty payload, of topic `t`.
    fn default() -> Delivery {
        Delivery { topic: "t".to_owned(), qos: 0, retain: false, payload_size: 0 }
    }
}

impl Delivery {
    /// The default delivery of `topic`.
    pub fn of(topic: &str) -> Delivery {
        Delivery { topic: topic.to_owned(), ..Delivery::default() }
    }

    /// At this QoS.
    pub fn qos(mut self, qos: u8) -> Delivery {
        self.qos = qos;
        self
    }
}

impl Default for Subscribe {
    /// QoS 0 to filter `#`.
    fn default() -> Subscribe {
        Subscribe { filter: "#".to_owned(), qos: 0 }
    }
}

impl Subscribe {
    /// The default subscription to `filter`.
    pub fn filter(filter: &str) -> Subscribe {
        Subscribe { filter: filter.to_owned(), ..Subscribe::default() }
    }

    /// At this QoS.
    pub fn qos(mut self, qos: u8) -> Subscribe {
        self.qos = qos;
        self
    }
}

/// What [`run_cases`] found: a line per failed case.
#[derive(Debug)]
pub struct Report {
    /// Cases that met every expectation.
    pub passed: usize,
    /// `case NAME: problem` for each case that did not.
    pub failures: Vec<String>,
}

impl Report {
    /// Panics with every failure unless all cases passed.
    pub fn assert_passed(&self) {
        assert!(self.failures.is_empty(), "{} cases failed:\n{}", self.failures.len(), self.failures.join("\n"));
    }
}

/// A decision reduced to what a case compares.
#[derive(Debug, Default)]
struct Outcome {
    kind: &'static str,
    reason: Option<ReasonCode>,
    message: Option<String>,
    qos: Option<u8>,
    retain: Option<bool>,
    device: Option<String>,
}

impl Outcome {
    fn plain(kind: &'static str) -> Outcome {
        Outcome { kind, ..Outcome::default() }
    }

    fn denied(kind: &'static str, d: Denial) -> Outcome {
        Outcome { kind, reason: Some(d.reason), message: Some(d.message), ..Outcome::default() }
    }

    /// A decision the host does not admit is a deny with 0x83 there: the same here.
    fn invalid(why: String) -> Outcome {
        Outcome::denied("deny", Denial::new(ReasonCode::ImplementationSpecificError, why))
    }
}

impl core::fmt::Display for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(d) = &self.device {
            write!(f, " as {d}")?;
        }
        if let Some(r) = self.reason {
            write!(f, " 0x{:02X} {}", r.code(), r.name())?;
        }
        if let Some(q) = self.qos {
            write!(f, " qos={q}")?;
        }
        if let Some(r) = self.retain {
            write!(f, " retain={r}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": \"{m}\"")?;
        }
        Ok(())
    }
}

/// Runs the cases file at `path` against policy `P` built natively with `settings`, as
/// `mqtt-policy test` runs it against the `.wasm`: in order, on one policy value, each case's
/// client connected, checked (`repeat` times) and, unless `keep-connected`, disconnected. Host
/// counters are the thread's fakes, so they carry over from case to case as in the host. The
/// host's checks of a decision hold here too (a QoS granted above the one asked for, a rewrite
/// raising QoS or adding retain: denied with 0x83). `client-sees` is not checked: there is no
/// broker here.
///
/// ```ignore
/// #[test]
/// fn cases() {
///     let settings = std::fs::read_to_string("settings.toml").unwrap();
///     mqtt_policy_guest::testing::run_cases::<MyPolicy>("cases.toml", &settings).unwrap().assert_passed();
/// }
/// ```
pub fn run_cases<P: Policy>(path: impl AsRef<Path>, settings: &str) -> Result<Report, String> {
    let path = path.as_ref();
    let file = cases::CasesFile::load(path, |r| ReasonCode::parse(r).is_some())?;
    let policy = P::new(settings).map_err(|e| format!("{}: invalid settings: {e}", path.display()))?;
    let mut report = Report { passed: 0, failures: Vec::new() };
    for case in &file.cases {
        let actual = run_case(&policy, &file.tenant, case);
        let problems = compare(case, &actual);
        if problems.is_empty() {
            report.passed += 1;
        } else {
            report.failures.extend(problems.into_iter().map(|p| format!("case {:?}: {p}", case.name)));
        }
    }
    Ok(report)
}

fn connect_of(tenant: &str, spec: &cases::ConnectSpec) -> Connect {
    let mut c = Connect::client(&spec.client_id).tenant(tenant);
    c.username = spec.username.clone();
    c.password = spec.password.as_ref().map(|p| p.as_bytes().to_vec());
    c.clean_start = spec.clean_start.unwrap_or(c.clean_start);
    c.keep_alive = spec.keep_alive.unwrap_or(c.keep_alive);
    c.protocol = match spec.protocol.unwrap_or_default() {
        cases::ProtocolVersion::Mqtt31 => Protocol::Mqtt31,
        cases::ProtocolVersion::Mqtt311 => Protocol::Mqtt311,
        cases::ProtocolVersion::Mqtt5 => Protocol::Mqtt5,
    };
    c.certificate = spec.certificate.as_ref().map(|s| {
        let mut cert = Certificate::default();
        cert.subject_cn = s.subject_cn.clone();
        cert.subject =
            s.subject.clone().unwrap_or_else(|| s.subject_cn.as_ref().map(|cn| format!("CN={cn}")).unwrap_or_default());
        cert.issuer = s.issuer.clone().unwrap_or_default();
        cert.serial = s.serial.clone().unwrap_or(cert.serial);
        cert.not_before = s.not_before.unwrap_or(cert.not_before);
        cert.not_after = s.not_after.unwrap_or(cert.not_after);
        cert.dns_names = s.dns_names.clone();
        cert.uris = s.uris.clone();
        cert.chain_verified_by = s.chain_verified_by.clone();
        cert
    });
    c.tls = spec.tls.unwrap_or(c.certificate.is_some());
    c.peer = spec.peer.clone().unwrap_or(c.peer);
    c
}

fn run_case<P: Policy>(policy: &P, tenant: &str, case: &cases::Case) -> Outcome {
    let connect = connect_of(tenant, &case.connect);
    let mut session = match policy.authenticate(&connect) {
        crate::Auth::Accept(info, session) => {
            if case.action() == "connect" {
                if case.keep_connected {
                    with(|s| s.connections += 1);
                } else {
                    policy.end_session(session);
                }
                return Outcome { device: Some(info.device_id), ..Outcome::plain("accept") };
            }
            session
        }
        crate::Auth::Reject(d) => return Outcome::denied("reject", d),
        crate::Auth::Defer => return Outcome::plain("defer"),
    };
    with(|s| s.connections += 1);
    let mut last = Outcome::plain("defer");
    for _ in 0..case.repeat {
        last = if let Some(p) = &case.publish {
            let publish =
                Publish { topic: p.topic.clone(), qos: p.qos, retain: p.retain, payload_size: p.payload_size };
            match policy.authorize_publish(&mut session, &publish) {
                PublishDecision::Allow => Outcome::plain("allow"),
                PublishDecision::Rewrite(r) if r.qos > p.qos || (r.retain && !p.retain) => Outcome::invalid(format!(
                    "policy returned an invalid decision: rewrite to qos {} retain {} of a qos {} retain {} publish",
                    r.qos, r.retain, p.qos, p.retain
                )),
                PublishDecision::Rewrite(r) => Outcome {
                    qos: Some(r.qos),
                    retain: Some(r.retain),
                    message: Some(r.message),
                    ..Outcome::plain("rewrite")
                },
                PublishDecision::Deny(d) => Outcome::denied("deny", d),
                PublishDecision::Defer => Outcome::plain("defer"),
            }
        } else if let Some(s) = &case.subscribe {
            match policy.authorize_subscribe(&mut session, &Subscribe { filter: s.filter.clone(), qos: s.qos }) {
                SubscribeDecision::Grant(q) if q > s.qos || q > 2 => Outcome::invalid(format!(
                    "policy returned an invalid decision: subscription at qos {} granted at qos {q}",
                    s.qos
                )),
                SubscribeDecision::Grant(q) => Outcome { qos: Some(q), ..Outcome::plain("grant") },
                SubscribeDecision::Deny(d) => Outcome::denied("deny", d),
                SubscribeDecision::Defer => Outcome::plain("defer"),
            }
        } else if let Some(d) = &case.deliver {
            let delivery =
                Delivery { topic: d.topic.clone(), qos: d.qos, retain: d.retain, payload_size: d.payload_size };
            match policy.authorize_delivery(&mut session, &delivery) {
                DeliveryDecision::Allow => Outcome::plain("allow"),
                DeliveryDecision::Deny(d) => Outcome::denied("deny", d),
                DeliveryDecision::Defer => Outcome::plain("defer"),
            }
        } else {
            unreachable!("a case that is not a connect has a check")
        };
    }
    if !case.keep_connected {
        policy.end_session(session);
        with(|s| s.connections = s.connections.saturating_sub(1));
    }
    last
}

fn compare(case: &cases::Case, actual: &Outcome) -> Vec<String> {
    let got = cases::Observed {
        kind: actual.kind,
        reason: actual.reason.map(ReasonCode::code),
        message: actual.message.as_deref(),
        qos: actual.qos,
        retain: actual.retain,
        device: actual.device.as_deref(),
    };
    case.unmet(&got, actual, |r| ReasonCode::parse(r).map(|c| (c.code(), c.name())))
}
