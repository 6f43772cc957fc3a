//! A compiled hub: the rules document turned into hash maps and topic tries, and the
//! decisions. Everything here is plain Rust over the [`HostApi`] trait, tested natively.

use mqtt_policy_guest::collections::HashMap;
use mqtt_policy_guest::template::{Template, Vars};
use mqtt_policy_guest::topic::{self, TopicTrie};
use mqtt_policy_guest::{
    Connect, Delivery, DeliveryDecision, Denial, Publish, PublishDecision, PublishRewrite, ReasonCode, SessionInfo,
    Subscribe, SubscribeDecision,
};

use crate::config::{
    self, Action, Authentication, Effect, Exceeded, HubState, IdentitySource, Kind, Retained, ServiceLevel,
};
use crate::credentials::{self, SecretHash};
use crate::identity::Format;
use crate::sas;

/// The user name a device sends with its token, unless the rules say otherwise (IBM).
pub const TOKEN_USERNAME: &str = "use-token-auth";

const UNSAFE: &str = "must be non-empty, not start with '$', and hold no '/', '+', '#' or NUL";

/// Placeholders topic rules may use.
pub const PLACEHOLDERS: &[&str] = &["device.id", "device.type", "client.id", "username", "cert.cn", "hub.org"];

/// What the policy needs from the host: counters, the connection count, logging.
pub trait HostApi {
    /// Adds `delta` to counter `name` in the current window and returns the new value.
    fn counter_add(&self, name: &str, delta: i64, window_ms: u64) -> i64;
    /// Clients of this tenant currently connected.
    fn connection_count(&self) -> u32;
    /// An informational event (e.g. auto-provisioning).
    fn info(&self, message: &str);
    /// Wall-clock time in milliseconds since the Unix epoch (certificate validity).
    fn now_millis(&self) -> u64;
}

/// A device in the registry, with the proofs it must give.
#[derive(Debug, Clone)]
pub struct Device {
    device_type: String,
    groups: Vec<String>,
    state: config::DeviceState,
    kind: Kind,
    token: Option<SecretHash>,
    password: Option<(String, SecretHash)>,
    sas_key: Option<Secret>,
}

impl Device {
    fn has_credentials(&self) -> bool {
        self.token.is_some() || self.password.is_some() || self.sas_key.is_some()
    }
}

/// Key bytes that never show in `Debug` output.
#[derive(Clone)]
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An application in the registry, by API key.
#[derive(Debug, Clone)]
struct Application {
    token: SecretHash,
    groups: Vec<String>,
    state: config::DeviceState,
}

/// The `[sas]` section, compiled.
#[derive(Debug)]
struct Sas {
    hostname: String,
    policies: Vec<(String, Secret)>,
}

/// Which client-chosen values some topic rule expands, so each is checked at connect.
#[derive(Debug, Default)]
struct Expanded {
    username: bool,
    client_id: bool,
    cert_cn: bool,
}

#[derive(Debug)]
struct Rule {
    effect: Effect,
    types: Vec<String>,
    groups: Vec<String>,
    kinds: Vec<Kind>,
    /// Where it is written and what it says, for explanations and coverage.
    info: RuleInfo,
}

/// A topic rule as the document wrote it: what `mqtt-policy eval --explain` and
/// `mqtt-policy test --coverage` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// The document line of its `[[rule]]` header.
    pub line: usize,
    /// Allow or deny.
    pub effect: Effect,
    /// The actions it governs.
    pub actions: Vec<Action>,
    /// Its topic filters, placeholders unexpanded.
    pub topics: Vec<String>,
}

/// One thing a check asks of the topic rules (see [`Hub::matching_rules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Whose rules: publish, subscribe or delivery rules.
    pub of: Action,
    /// The applicable rules that matched (indexes into [`Hub::rules`], in document order).
    pub matched: Vec<usize>,
}

impl std::fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(|a| a.name()).collect();
        write!(f, "line {}: {} {} {}", self.line, self.effect.name(), actions.join(","), self.topics.join(" "))
    }
}

/// Where each `[[rule]]` header is: (byte offset, line), in one pass over the document, so a
/// rule's line costs a binary search. Headers may be spaced, quoted (`[[ "rule" ]]`) and
/// followed by a comment.
fn rule_headers(text: &str) -> Vec<(usize, usize)> {
    let mut headers = Vec::new();
    let mut offset = 0;
    for (n, line) in text.split('\n').enumerate() {
        if line.trim_start().starts_with("[[") {
            let key = line.split('#').next().unwrap_or_default();
            if key.chars().filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'').eq("[[rule]]".chars()) {
                headers.push((offset, n + 1));
            }
        }
        offset += line.len() + 1;
    }
    headers
}

/// The line of the last `[[rule]]` header before `offset` (a rule's first topic); the
/// topic's own line if there is none (a rule written as an inline table array).
fn rule_line(headers: &[(usize, usize)], text: &str, offset: usize) -> usize {
    match headers.partition_point(|(o, _)| *o < offset) {
        0 => text[..offset.min(text.len())].matches('\n').count() + 1,
        i => headers[i - 1].1,
    }
}

impl Rule {
    fn applies(&self, s: &Session) -> bool {
        (self.types.is_empty() || self.types.contains(&s.device_type))
            && (self.groups.is_empty() || self.groups.iter().any(|g| s.groups.contains(g)))
            && (self.kinds.is_empty() || self.kinds.contains(&s.kind))
    }
}

/// Who a client says it is, before any proof.
struct Claim<'a> {
    id: &'a str,
    kind: Option<Kind>,
    device_type: Option<&'a str>,
    attributes: Vec<(String, String)>,
}

/// Who a client turned out to be.
struct Admitted {
    kind: Kind,
    device_type: String,
    groups: Vec<String>,
    proof: &'static str,
    expires_at_ms: Option<u64>,
}

/// A compiled hub.
#[derive(Debug)]
pub struct Hub {
    org: Option<String>,
    state: HubState,
    shared: bool,
    shared_subscribe: config::SharedSubscribe,
    max_payload: Option<u32>,
    retained: Retained,
    require_mtls: bool,
    max_connections: Option<u32>,
    rate: Option<config::RateConfig>,
    source: IdentitySource,
    formats: Vec<(Format, Kind)>,
    allow_unregistered: bool,
    open: bool,
    token_username: String,
    applications: HashMap<String, Application>,
    sas: Option<Sas>,
    expanded: Expanded,
    decoy: SecretHash,
    auto_provision: bool,
    default_type: String,
    cas: Vec<String>,
    devices: HashMap<String, Device>,
    rules: Vec<Rule>,
    publish: TopicTrie<usize>,
    delivery: TopicTrie<usize>,
    has_delivery_rules: bool,
    subscribe: Vec<(Template, usize)>,
    /// The same subscribe rules as a trie, for the per-delivery question whether a topic is
    /// still covered by some subscription the session may make (no expansion, no scan).
    subscribable: TopicTrie<usize>,
    monitoring: Option<config::MonitoringConfig>,
}

/// How a connection is reported in the hub's monitoring messages (`[monitoring]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Monitored {
    /// A device or gateway: `iot-2/type/{device_type}/id/{id}/mon`.
    Device {
        /// Its type.
        device_type: String,
        /// Its id.
        id: String,
    },
    /// An application: `iot-2/app/{app}/mon`.
    Application {
        /// Its application id.
        app: String,
    },
}

/// The device id of a device monitoring topic `iot-2/type/{type}/id/{id}/mon`.
fn device_monitor_topic(topic: &str) -> Option<&str> {
    let mut l = topic.split('/');
    match (l.next(), l.next(), l.next(), l.next(), l.next(), l.next(), l.next()) {
        (Some("iot-2"), Some("type"), Some(_), Some("id"), Some(id), Some("mon"), None) => Some(id),
        _ => None,
    }
}

/// Whether `topic` is an application monitoring topic `iot-2/app/{app}/mon`.
fn app_monitor_topic(topic: &str) -> bool {
    let mut l = topic.split('/');
    matches!(
        (l.next(), l.next(), l.next(), l.next(), l.next()),
        (Some("iot-2"), Some("app"), Some(_), Some("mon"), None)
    )
}

/// What the policy remembers about a connected client.
#[derive(Debug, Clone)]
pub struct Session {
    device_id: String,
    kind: Kind,
    device_type: String,
    groups: Vec<String>,
    client_id: String,
    username: Option<String>,
    cert_cn: Option<String>,
    org: Option<String>,
    rate_counter: String,
    /// A session the broker restored from its persistence: nobody is connected on it, so it
    /// only has messages checked into its offline queue (see [`restored`]).
    restored: bool,
}

impl Session {
    /// Who the session is, as the topic rules see it: kind, type, id and groups.
    pub fn describe(&self) -> String {
        let groups = if self.groups.is_empty() { String::new() } else { format!(", groups {}", self.groups.join(",")) };
        format!("{} {} of type {}{groups}", self.kind.name(), self.device_id, self.device_type)
    }
}

impl Vars for Session {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "device.id" => Some(&self.device_id),
            "device.type" => Some(&self.device_type),
            "client.id" => Some(&self.client_id),
            "username" => self.username.as_deref(),
            "cert.cn" => self.cert_cn.as_deref(),
            "hub.org" => self.org.as_deref(),
            _ => None,
        }
    }
}

fn deny(reason: ReasonCode, message: impl Into<String>) -> Denial {
    Denial::new(reason, message)
}

/// Whether the host re-establishes a session the broker restored from its persistence after a
/// restart (`resumed` in the WIT): no network connection (empty peer), no password, no
/// certificate, only what the broker kept. Such a session was proven when its client connected
/// before the restart; it only decides which messages enter its offline queue, and a client
/// that wants them must connect and prove the same identity again (the host refuses a takeover
/// by another identity). So it is admitted without a proof, but it may neither publish nor
/// subscribe. Only the host sets `resumed`, and it keeps `peer` non-empty for connections.
pub fn restored(c: &Connect) -> bool {
    c.resumed && c.peer.is_empty() && !c.tls && c.password.is_none() && c.certificate.is_none()
}

/// The refusal of a publish or subscribe on a restored session (which Mosquitto never asks for).
fn not_connected() -> Denial {
    deny(ReasonCode::NotAuthorized, "session restored from the broker's persistence: no client is connected on it")
        .and_disconnect()
}

impl Hub {
    /// Parses and compiles a rules document. Errors name the line and field.
    pub fn compile(text: &str) -> Result<Hub, String> {
        let doc = config::parse(text)?;
        let at = |span: std::ops::Range<usize>| config::place(text, span.start);
        let h = &doc.hub;
        let id = &doc.identity;

        let mut formats = Vec::new();
        for (i, f) in id.client_id_formats.iter().enumerate() {
            let pattern = &f.pattern;
            let format = Format::parse(pattern.get_ref())
                .map_err(|e| format!("{}: identity.client-id-format[{i}].pattern: {e}", at(pattern.span())))?;
            if pattern.get_ref().contains("{org}") && h.org.is_none() {
                return Err(format!(
                    "{}: identity.client-id-format[{i}].pattern uses {{org}}, so hub.org must be set",
                    at(pattern.span())
                ));
            }
            formats.push((format, f.kind));
        }
        if let Some(org) = &h.org
            && !topic_safe(org)
        {
            return Err(format!("hub.org `{org}`: {UNSAFE}"));
        }
        if id.from == IdentitySource::Certificate && doc.cas.is_empty() {
            return Err("identity.from = \"certificate\" needs at least one [[ca]]".to_owned());
        }
        if let Some(m) = &h.require_mtls
            && *m.get_ref()
            && doc.cas.is_empty()
        {
            return Err(format!(
                "{}: hub.require-mtls needs at least one [[ca]] to verify client certificates against",
                at(m.span())
            ));
        }
        if id.auto_provision && id.from != IdentitySource::Certificate {
            return Err("identity.auto-provision needs identity.from = \"certificate\"".to_owned());
        }
        if let Some(r) = &h.rate
            && (r.messages == 0 || r.window_ms == 0)
        {
            return Err("hub.rate: messages and window-ms must be at least 1".to_owned());
        }
        let mut cas: Vec<String> = Vec::new();
        for (i, ca) in doc.cas.iter().enumerate() {
            if cas.contains(ca.name.get_ref()) {
                return Err(format!("{}: ca[{i}].name: duplicate CA `{}`", at(ca.name.span()), ca.name.get_ref()));
            }
            if ca.file.is_none() && ca.pem.is_none() {
                return Err(format!("{}: ca[{i}]: give `file` or `pem`", at(ca.name.span())));
            }
            cas.push(ca.name.get_ref().clone());
        }

        let sas = match &doc.sas {
            None => None,
            Some(s) => {
                let mut policies: Vec<(String, Secret)> = Vec::new();
                for (i, p) in s.policies.iter().enumerate() {
                    let name = p.name.get_ref();
                    if policies.iter().any(|(n, _)| n == name) {
                        return Err(format!("{}: sas.policy[{i}].name: duplicate policy `{name}`", at(p.name.span())));
                    }
                    let key = sas::decode_key(p.key.get_ref())
                        .map_err(|e| format!("{}: sas.policy[{i}].key (policy `{name}`): {e}", at(p.key.span())))?;
                    policies.push((name.clone(), Secret(key)));
                }
                Some(Sas { hostname: s.hostname.get_ref().to_ascii_lowercase(), policies })
            }
        };
        let hub_keys = sas.as_ref().is_some_and(|s| !s.policies.is_empty());
        let open = id.authentication.as_ref().is_some_and(|a| *a.get_ref() == Authentication::None);
        let proven_by_certificate = id.from == IdentitySource::Certificate;

        let default_type = id.default_type.clone().unwrap_or_else(|| "device".to_owned());
        if !topic_safe(&default_type) {
            return Err(format!("identity.default-type `{default_type}`: {UNSAFE}"));
        }
        let hash = |field: String, span: std::ops::Range<usize>, text: &str| {
            SecretHash::parse(text).map_err(|e| format!("{}: {field}: {e}", at(span)))
        };
        let mut devices = HashMap::default();
        for (i, d) in doc.devices.iter().enumerate() {
            let name = d.id.get_ref();
            if !topic_safe(name) {
                return Err(format!("{}: device[{i}].id `{name}`: {UNSAFE}", at(d.id.span())));
            }
            let kind = match &d.kind {
                Some(k) if *k.get_ref() == Kind::Application => {
                    return Err(format!(
                        "{}: device[{i}].kind: applications are registered as [[application]] with an API key",
                        at(k.span())
                    ));
                }
                Some(k) => *k.get_ref(),
                None => Kind::Device,
            };
            let device_type = d.device_type.clone().unwrap_or_else(|| default_type.clone());
            if !topic_safe(&device_type) {
                return Err(format!("{}: device[{i}].type `{device_type}`: {UNSAFE}", at(d.id.span())));
            }
            let token = d.token_hash.as_ref().map(|t| hash(format!("device[{i}].token-hash"), t.span(), t.get_ref()));
            let password =
                d.password_hash.as_ref().map(|t| hash(format!("device[{i}].password-hash"), t.span(), t.get_ref()));
            if d.username.is_some() && password.is_none() {
                return Err(format!("{}: device[{i}].username needs a password-hash", at(d.id.span())));
            }
            let sas_key = match &d.sas_key {
                None => None,
                Some(_) if sas.is_none() => {
                    return Err(format!(
                        "{}: device[{i}].sas-key needs a [sas] section naming the hub's hostname",
                        at(d.id.span())
                    ));
                }
                Some(k) => Some(Secret(
                    sas::decode_key(k.get_ref()).map_err(|e| format!("{}: device[{i}].sas-key: {e}", at(k.span())))?,
                )),
            };
            let device = Device {
                device_type,
                groups: d.groups.clone(),
                state: d.state,
                kind,
                token: token.transpose()?,
                password: password.transpose()?.map(|h| (d.username.clone().unwrap_or_else(|| name.clone()), h)),
                sas_key,
            };
            if !open && !proven_by_certificate && !hub_keys && !device.has_credentials() {
                return Err(format!(
                    "{}: device[{i}] `{name}` has no credential (token-hash, password-hash or sas-key): \
                     give one, or admit devices without proof with identity.authentication = \"none\"",
                    at(d.id.span())
                ));
            }
            if devices.insert(name.clone(), device).is_some() {
                return Err(format!("{}: device[{i}].id: duplicate device `{name}`", at(d.id.span())));
            }
        }
        let mut applications = HashMap::default();
        for (i, a) in doc.applications.iter().enumerate() {
            let key = a.api_key.get_ref();
            if key.is_empty() || key == &id.token_username.clone().unwrap_or_else(|| TOKEN_USERNAME.to_owned()) {
                return Err(format!("{}: application[{i}].api-key: not a usable API key", at(a.api_key.span())));
            }
            let token = hash(format!("application[{i}].token-hash"), a.token_hash.span(), a.token_hash.get_ref())?;
            let app = Application { token, groups: a.groups.clone(), state: a.state };
            if applications.insert(key.clone(), app).is_some() {
                return Err(format!("{}: application[{i}].api-key: duplicate API key", at(a.api_key.span())));
            }
        }
        let allow_unregistered = id.allow_unregistered.unwrap_or(doc.devices.is_empty());
        let mut publish = TopicTrie::with_placeholders(PLACEHOLDERS);
        let mut delivery = TopicTrie::with_placeholders(PLACEHOLDERS);
        let mut subscribe = Vec::new();
        let mut subscribable = TopicTrie::with_placeholders(PLACEHOLDERS);
        let mut rules = Vec::new();
        let mut has_delivery_rules = false;
        let mut expanded = Expanded::default();
        let headers = rule_headers(text);
        for (i, r) in doc.rules.iter().enumerate() {
            if r.topics.is_empty() {
                return Err(format!("rule[{i}].topics: list at least one topic filter"));
            }
            if r.actions.is_empty() {
                return Err(format!("rule[{i}].actions: list at least one of publish, subscribe, delivery"));
            }
            for (j, t) in r.topics.iter().enumerate() {
                let field = || format!("{}: rule[{i}].topics[{j}] `{}`", at(t.span()), t.get_ref());
                let template = Template::parse(t.get_ref(), PLACEHOLDERS).map_err(|e| format!("{}: {e}", field()))?;
                for name in template.names() {
                    match name {
                        "username" => expanded.username = true,
                        "client.id" => expanded.client_id = true,
                        "cert.cn" => expanded.cert_cn = true,
                        _ => {}
                    }
                }
                topic::validate_topic_filter(t.get_ref()).map_err(|e| format!("{}: {e}", field()))?;
                for action in &r.actions {
                    match action {
                        Action::Publish => publish.insert(t.get_ref(), rules.len()),
                        Action::Delivery => {
                            has_delivery_rules = true;
                            delivery.insert(t.get_ref(), rules.len())
                        }
                        Action::Subscribe => {
                            subscribe.push((template.clone(), rules.len()));
                            subscribable.insert(t.get_ref(), rules.len())
                        }
                    }
                    .map_err(|e| format!("{}: {e}", field()))?;
                }
            }
            rules.push(Rule {
                effect: r.effect,
                types: r.types.clone(),
                groups: r.groups.clone(),
                kinds: r.kinds.clone(),
                info: RuleInfo {
                    line: rule_line(&headers, text, r.topics[0].span().start),
                    effect: r.effect,
                    actions: r.actions.clone(),
                    topics: r.topics.iter().map(|t| t.get_ref().clone()).collect(),
                },
            });
        }

        let devices_claimable = formats.is_empty() || formats.iter().any(|(_, k)| *k != Kind::Application);
        if allow_unregistered && devices_claimable && !open && !proven_by_certificate && !hub_keys {
            let why = if id.allow_unregistered.is_some() {
                "identity.allow-unregistered = true"
            } else {
                "no [[device]] is registered, so any device id is accepted"
            };
            return Err(format!(
                "identity: {why}, and nothing would prove a client's identity: register devices with \
                 credentials, add a [[sas.policy]], use identity.from = \"certificate\", or admit clients \
                 without proof with identity.authentication = \"none\""
            ));
        }

        let monitoring = match &doc.monitoring {
            None => None,
            Some(m) if !m.get_ref().devices && !m.get_ref().applications => {
                return Err(format!(
                    "{}: monitoring: devices and applications are both false, so nothing would be reported; \
                     remove the section or set one of them to true",
                    at(m.span())
                ));
            }
            Some(m) => Some(m.get_ref().clone()),
        };

        Ok(Hub {
            org: h.org.clone(),
            state: h.state,
            shared: h.service_level == ServiceLevel::Shared,
            shared_subscribe: h.shared_subscribe,
            max_payload: h.max_payload,
            retained: h.retained,
            require_mtls: h.require_mtls.as_ref().is_some_and(|m| *m.get_ref()),
            max_connections: h.max_connections,
            rate: h.rate.clone(),
            source: id.from,
            formats,
            allow_unregistered,
            open,
            token_username: id.token_username.clone().unwrap_or_else(|| TOKEN_USERNAME.to_owned()),
            applications,
            sas,
            expanded,
            decoy: credentials::decoy(),
            auto_provision: id.auto_provision,
            default_type,
            cas,
            devices,
            rules,
            publish,
            delivery,
            has_delivery_rules,
            subscribable,
            subscribe,
            monitoring,
        })
    }

    /// Number of devices in the registry.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Refusal for clients of a hub that is not ready, locked or deleted.
    fn state_denial(&self) -> Option<Denial> {
        match self.state {
            HubState::Ready => None,
            HubState::NotReady => Some(deny(ReasonCode::ServerUnavailable, "hub is not ready")),
            HubState::Locked => Some(deny(ReasonCode::NotAuthorized, "hub is locked").and_disconnect()),
            HubState::Deleted => Some(deny(ReasonCode::NotAuthorized, "hub is deleted").and_disconnect()),
        }
    }

    fn service_level(&self, message: &str) -> String {
        if self.shared { format!("service level: {message}") } else { message.to_owned() }
    }

    /// Decides a connection: hub state, mTLS, service level, identity, registry, quota.
    pub fn authenticate(&self, c: &Connect, host: &impl HostApi) -> Result<(SessionInfo, Session), Denial> {
        if let Some(d) = self.state_denial() {
            return Err(d);
        }
        let verified_ca = c
            .certificate
            .as_ref()
            .and_then(|cert| cert.chain_verified_by.as_deref())
            .filter(|ca| self.cas.iter().any(|n| n == ca));
        let restored = restored(c);
        if restored && self.source == IdentitySource::Certificate {
            return Err(deny(
                ReasonCode::NotAuthorized,
                "a session restored from the broker's persistence cannot be re-established: its identity comes from \
                 a certificate, which the broker does not keep; the device gets its queued messages when it reconnects",
            ));
        }
        if self.require_mtls && !restored {
            let ok = c.tls && verified_ca.is_some();
            if !ok {
                let message = if c.certificate.is_some() && c.tls {
                    "invalid device certificate"
                } else {
                    "mutual TLS authentication is required"
                };
                return Err(deny(ReasonCode::NotAuthorized, message));
            }
        }
        // The broker's TLS layer checks validity too; checking here keeps a policy right when it
        // is tested on a laptop or run behind a TLS terminator that does not.
        if let Some(cert) =
            c.certificate.as_ref().filter(|_| self.require_mtls || self.source == IdentitySource::Certificate)
        {
            let now = i64::try_from(host.now_millis() / 1000).unwrap_or(i64::MAX);
            if now < cert.not_before {
                return Err(deny(ReasonCode::NotAuthorized, "device certificate is not yet valid"));
            }
            if now > cert.not_after {
                return Err(deny(ReasonCode::NotAuthorized, "device certificate has expired"));
            }
        }
        if self.shared && !c.clean_start {
            return Err(deny(
                ReasonCode::NotAuthorized,
                "service level: \"clean session\" flag is mandatory to connect to a shared hub",
            ));
        }

        let claim = self.claim(c)?;
        let cn = c.certificate.as_ref().filter(|_| verified_ca.is_some()).and_then(|cert| cert.subject_cn.as_deref());
        if let Some(cn) = cn
            && (self.require_mtls || self.source == IdentitySource::Certificate)
            && cn != claim.id
        {
            return Err(deny(
                ReasonCode::NotAuthorized,
                format!(
                    "certificate common name `{cn}` is not the identity `{}` the client identifier names",
                    claim.id
                ),
            ));
        }
        let admitted = match claim.kind {
            Some(Kind::Application) => self.admit_application(c, &claim)?,
            _ => self.admit_device(c, &claim, host)?,
        };
        self.check_expanded(c, cn)?;

        if let Some(max) = self.max_connections
            && !c.resumed
            && host.connection_count() >= max
        {
            return Err(deny(ReasonCode::QuotaExceeded, format!("too many connections for this hub (limit {max})")));
        }

        let device_id = claim.id;
        let mut attributes = claim.attributes;
        attributes.push(("kind".to_owned(), admitted.kind.name().to_owned()));
        attributes.push(("type".to_owned(), admitted.device_type.clone()));
        attributes.push(("auth".to_owned(), admitted.proof.to_owned()));
        if admitted.kind == Kind::Application
            && let Some(key) = &c.username
        {
            // Two API keys may use the same application id; the session is the key's.
            attributes.push(("principal".to_owned(), key.clone()));
        }
        let info = SessionInfo::device(device_id);
        let info = SessionInfo { attributes, expires_at_ms: admitted.expires_at_ms, ..info };
        let session = Session {
            rate_counter: rate_counter_name(device_id),
            device_id: device_id.to_owned(),
            kind: admitted.kind,
            device_type: admitted.device_type,
            groups: admitted.groups,
            client_id: c.client_id.clone(),
            username: c.username.clone(),
            cert_cn: c.certificate.as_ref().and_then(|c| c.subject_cn.clone()),
            org: self.org.clone(),
            restored,
        };
        Ok((info, session))
    }

    /// The identity the client names (client id, user name or certificate), unproven.
    fn claim<'c>(&self, c: &'c Connect) -> Result<Claim<'c>, Denial> {
        let mut claim = Claim { id: "", kind: None, device_type: None, attributes: Vec::new() };
        match self.source {
            IdentitySource::Username => {
                claim.id = c.username.as_deref().filter(|u| topic_safe(u)).ok_or_else(|| {
                    deny(ReasonCode::BadUserNameOrPassword, "could not identify device: no usable user name")
                })?;
            }
            IdentitySource::Certificate => {
                let cert = c
                    .certificate
                    .as_ref()
                    .ok_or_else(|| deny(ReasonCode::NotAuthorized, "mutual TLS authentication is required"))?;
                let verified = cert.chain_verified_by.as_deref().is_some_and(|ca| self.cas.iter().any(|n| n == ca));
                if !verified {
                    return Err(deny(ReasonCode::NotAuthorized, "invalid device certificate"));
                }
                let cn = match cert.subject_cn.as_deref() {
                    None | Some("") => {
                        return Err(deny(ReasonCode::NotAuthorized, "certificate common name cannot be empty"));
                    }
                    Some(cn) if !topic_safe(cn) => {
                        return Err(deny(ReasonCode::NotAuthorized, "invalid device certificate"));
                    }
                    Some(cn) => cn,
                };
                // The client id must name the certificate's identity (its own format, if any).
                let named =
                    if self.formats.is_empty() { c.client_id.as_str() } else { self.parse_client_id(c, &mut claim)? };
                if named != cn {
                    return Err(deny(
                        ReasonCode::NotAuthorized,
                        format!(
                            "certificate common name `{cn}` is not the identity `{named}` the client identifier names"
                        ),
                    ));
                }
                claim.id = cn;
            }
            IdentitySource::ClientId if self.formats.is_empty() => {
                if !topic_safe(&c.client_id) {
                    return Err(deny(
                        ReasonCode::ClientIdentifierNotValid,
                        format!("client identifier `{}` is not a valid device id", c.client_id.escape_debug()),
                    ));
                }
                claim.id = &c.client_id;
            }
            IdentitySource::ClientId => claim.id = self.parse_client_id(c, &mut claim)?,
        }
        Ok(claim)
    }

    /// The id a client id names under the first matching format; fills the claimed kind and type.
    fn parse_client_id<'c>(&self, c: &'c Connect, claim: &mut Claim<'c>) -> Result<&'c str, Denial> {
        let (format, kind, caps) =
            self.formats.iter().find_map(|(f, k)| f.capture(&c.client_id).map(|caps| (f, *k, caps))).ok_or_else(
                || {
                    deny(
                        ReasonCode::ClientIdentifierNotValid,
                        format!("client identifier `{}` matches no accepted format", c.client_id.escape_debug()),
                    )
                },
            )?;
        if let Some(org) = caps.org
            && Some(org) != self.org.as_deref()
        {
            return Err(deny(
                ReasonCode::ClientIdentifierNotValid,
                format!("client identifier organization `{org}` is not this hub's"),
            ));
        }
        claim.kind = Some(kind);
        claim.device_type = caps.device_type;
        claim.attributes.push(("format".to_owned(), format.text().to_owned()));
        if let Some(instance) = caps.instance {
            claim.attributes.push(("instance".to_owned(), instance.to_owned()));
        }
        Ok(caps.id.or(caps.app).expect("formats capture id or app"))
    }

    /// An application: a registered API key (the user name) and its token (the password).
    fn admit_application(&self, c: &Connect, claim: &Claim<'_>) -> Result<Admitted, Denial> {
        if restored(c) {
            // The broker keeps the application id (the user name the host set), not its API key,
            // and the key decides the application's groups.
            return Err(deny(
                ReasonCode::NotAuthorized,
                "an application's session restored from the broker's persistence cannot be re-established: \
                 the broker keeps its id, not its API key",
            ));
        }
        if self.devices.contains_key(claim.id) {
            return Err(deny(
                ReasonCode::ClientIdentifierNotValid,
                format!(
                    "client identifier names device `{}`: an application cannot take a device's identity",
                    claim.id
                ),
            ));
        }
        let (Some(key), Some(token)) = (c.username.as_deref(), c.password.as_deref()) else {
            return Err(deny(
                ReasonCode::BadUserNameOrPassword,
                "an application must authenticate with an API key (user name) and its token (password)",
            ));
        };
        let app = self.applications.get(key);
        // An unknown key costs one verification too, so timing does not tell keys apart.
        let verified = match app {
            Some(a) => a.token.verify(token),
            None => {
                let _ = self.decoy.verify(token);
                false
            }
        };
        let Some(app) = app.filter(|_| verified) else {
            return Err(deny(ReasonCode::BadUserNameOrPassword, "bad API key or authentication token"));
        };
        match app.state {
            config::DeviceState::Enabled => {}
            config::DeviceState::Disabled => return Err(deny(ReasonCode::NotAuthorized, "API key is not enabled")),
            config::DeviceState::Deleted => return Err(deny(ReasonCode::NotAuthorized, "API key is deleted")),
        }
        Ok(Admitted {
            kind: Kind::Application,
            device_type: "application".to_owned(),
            groups: app.groups.clone(),
            proof: "api-key",
            expires_at_ms: None,
        })
    }

    /// A device or gateway: the registry entry decides its kind, type and groups, and which
    /// proof it owes.
    fn admit_device(&self, c: &Connect, claim: &Claim<'_>, host: &impl HostApi) -> Result<Admitted, Denial> {
        let id = claim.id;
        match self.devices.get(id) {
            Some(d) => {
                if let Some(k) = claim.kind
                    && k != d.kind
                {
                    return Err(deny(
                        ReasonCode::ClientIdentifierNotValid,
                        format!(
                            "client identifier claims a {}, but `{id}` is registered as a {}",
                            k.name(),
                            d.kind.name()
                        ),
                    ));
                }
                if let Some(t) = claim.device_type
                    && t != d.device_type
                {
                    return Err(deny(
                        ReasonCode::ClientIdentifierNotValid,
                        format!(
                            "client identifier claims type `{t}`, but device `{id}` is registered as type `{}`",
                            d.device_type
                        ),
                    ));
                }
                match d.state {
                    config::DeviceState::Disabled => {
                        return Err(deny(ReasonCode::NotAuthorized, "device is not enabled"));
                    }
                    config::DeviceState::Deleted => return Err(deny(ReasonCode::NotAuthorized, "device is deleted")),
                    config::DeviceState::Enabled => {}
                }
                let (proof, expires_at_ms) = self.prove(c, id, Some(d), host)?;
                Ok(Admitted {
                    kind: d.kind,
                    device_type: d.device_type.clone(),
                    groups: d.groups.clone(),
                    proof,
                    expires_at_ms,
                })
            }
            None if self.auto_provision => {
                if !c.resumed {
                    host.info(&format!("device was auto-provisioned: object-name={id} source-address={}", c.peer));
                }
                let (proof, expires_at_ms) = self.prove(c, id, None, host)?;
                Ok(Admitted {
                    kind: Kind::Device,
                    device_type: self.default_type.clone(),
                    groups: vec![],
                    proof,
                    expires_at_ms,
                })
                .map(|mut a| {
                    a.proof = if a.proof == "certificate" { "certificate (auto-provisioned)" } else { a.proof };
                    a
                })
            }
            None if self.allow_unregistered => {
                let (proof, expires_at_ms) = self.prove(c, id, None, host)?;
                Ok(Admitted {
                    kind: claim.kind.unwrap_or(Kind::Device),
                    device_type: claim.device_type.map_or_else(|| self.default_type.clone(), str::to_owned),
                    groups: Vec::new(),
                    proof,
                    expires_at_ms,
                })
            }
            None => {
                if let Some(p) = c.password.as_deref() {
                    let _ = self.decoy.verify(p);
                }
                Err(deny(ReasonCode::NotAuthorized, "could not identify device"))
            }
        }
    }

    /// Checks the proof a device gives: a SAS token, its token or password, its certificate;
    /// returns the proof's name and when it stops being valid.
    fn prove(
        &self,
        c: &Connect,
        id: &str,
        entry: Option<&Device>,
        host: &impl HostApi,
    ) -> Result<(&'static str, Option<u64>), Denial> {
        let bad = |message: String| deny(ReasonCode::BadUserNameOrPassword, message);
        if restored(c) {
            // Proven before the broker's restart; the proof itself is not kept (see `restored`).
            return Ok(("restored", None));
        }
        if let (Some(sas), Some(password)) = (&self.sas, c.password.as_deref())
            && sas::is_token(password)
        {
            let key_of_device = entry.and_then(|d| d.sas_key.as_ref());
            return self.prove_sas(sas, c, id, key_of_device, password, host.now_millis());
        }
        if let Some(d) = entry.filter(|d| d.token.is_some() || d.password.is_some()) {
            let user = c.username.as_deref();
            let (hash, proof) = match user {
                Some(u) if u == self.token_username && d.token.is_some() => (d.token.as_ref(), "token"),
                Some(u) if d.password.as_ref().is_some_and(|(name, _)| name == u) => {
                    (d.password.as_ref().map(|(_, h)| h), "password")
                }
                _ => (None, ""),
            };
            let Some(password) = c.password.as_deref() else {
                let how = if d.token.is_some() {
                    format!("user name `{}` and the device token as password", self.token_username)
                } else {
                    "its user name and password".to_owned()
                };
                return Err(bad(format!("device `{id}` must authenticate with {how}")));
            };
            let verified = match hash {
                Some(h) => h.verify(password),
                None => {
                    let _ = self.decoy.verify(password);
                    false
                }
            };
            return if verified { Ok((proof, None)) } else { Err(bad("bad user name or password".to_owned())) };
        }
        if entry.is_some_and(|d| d.sas_key.is_some()) {
            return Err(bad(format!("device `{id}` must authenticate with a shared access signature")));
        }
        if self.source == IdentitySource::Certificate {
            return Ok(("certificate", None));
        }
        if self.open {
            return Ok(("none", None));
        }
        if self.sas.is_some() {
            return Err(bad(format!("device `{id}` must authenticate with a shared access signature")));
        }
        Err(bad(format!("device `{id}` has no credential to authenticate with")))
    }

    fn prove_sas(
        &self,
        sas: &Sas,
        c: &Connect,
        id: &str,
        device_key: Option<&Secret>,
        password: &[u8],
        now_ms: u64,
    ) -> Result<(&'static str, Option<u64>), Denial> {
        let bad = |message: String| deny(ReasonCode::BadUserNameOrPassword, message);
        let token = sas::parse(password).map_err(|e| bad(format!("malformed shared access signature: {e}")))?;
        let user = format!("{}/{id}", sas.hostname);
        // Host names compare without case; device ids are case-sensitive (`Sensor-A` is not
        // `sensor-a`), so a token for one never admits the other.
        let user_ok = c.username.as_deref().is_some_and(|u| {
            let rest = host_prefix(u, &sas.hostname).and_then(|r| r.strip_prefix(id));
            rest.is_some_and(|r| r.is_empty() || r.starts_with('/'))
        });
        if !user_ok {
            return Err(bad(format!(
                "a device signing in with a shared access signature uses user name `{user}/?api-version=...`"
            )));
        }
        let resource = format!("{}/devices/{id}", sas.hostname);
        if host_prefix(&token.resource, &sas.hostname).and_then(|r| r.strip_prefix("devices/")) != Some(id) {
            return Err(bad(format!(
                "shared access signature for resource `{}` does not grant access to `{resource}`",
                token.resource.escape_debug()
            )));
        }
        let (key, proof) = match &token.policy {
            Some(name) => match sas.policies.iter().find(|(n, _)| n == name) {
                Some((_, key)) => (key, "sas-policy"),
                None => {
                    return Err(bad(format!("shared access policy `{}` does not exist", name.escape_debug())));
                }
            },
            None => match device_key {
                Some(key) => (key, "sas"),
                None => {
                    return Err(bad(format!(
                        "device `{id}` has no symmetric key: sign with a shared access policy (skn)"
                    )));
                }
            },
        };
        if !sas::signed_by(&token, &key.0) {
            return Err(bad("shared access signature is not valid: the signature does not match".to_owned()));
        }
        let expires_at_ms = token.expiry.saturating_mul(1000);
        if expires_at_ms <= now_ms {
            return Err(bad(format!(
                "shared access signature expired at se={} ({} s ago): renew the token and reconnect",
                token.expiry,
                (now_ms - expires_at_ms) / 1000
            )));
        }
        Ok((proof, Some(expires_at_ms)))
    }

    /// Refuses a client whose user name, client id or certificate CN a topic rule would expand
    /// but which could widen it (a `$` start, `/`, `+`, `#`, NUL): `${username}/#` must never
    /// become `$SYS/#`.
    fn check_expanded(&self, c: &Connect, cn: Option<&str>) -> Result<(), Denial> {
        let cert_cn = cn.or(c.certificate.as_ref().and_then(|c| c.subject_cn.as_deref()));
        for (used, what, value, reason) in [
            (self.expanded.username, "user name", c.username.as_deref(), ReasonCode::BadUserNameOrPassword),
            (
                self.expanded.client_id,
                "client identifier",
                Some(c.client_id.as_str()),
                ReasonCode::ClientIdentifierNotValid,
            ),
            (self.expanded.cert_cn, "certificate common name", cert_cn, ReasonCode::NotAuthorized),
        ] {
            if let Some(v) = value.filter(|v| used && !topic_safe(v)) {
                return Err(deny(
                    reason,
                    format!("{what} `{}` cannot be used in this hub's topic rules: {UNSAFE}", v.escape_debug()),
                ));
            }
        }
        Ok(())
    }

    /// Decides a publish: state, topic, QoS, service level, payload, topic rules, retain, rate.
    pub fn authorize_publish(&self, s: &Session, p: &Publish, host: &impl HostApi) -> PublishDecision {
        match self.check_publish(s, p, host) {
            Ok(None) => PublishDecision::Allow,
            Ok(Some(rewrite)) => PublishDecision::Rewrite(rewrite),
            Err(d) => PublishDecision::Deny(d),
        }
    }

    fn check_publish(&self, s: &Session, p: &Publish, host: &impl HostApi) -> Result<Option<PublishRewrite>, Denial> {
        if let Some(d) = self.state_denial() {
            return Err(d);
        }
        if s.restored {
            return Err(not_connected());
        }
        check_topic_name(&p.topic)?;
        check_qos(p.qos)?;
        if self.shared && p.qos == 2 {
            return Err(deny(
                ReasonCode::QosNotSupported,
                "service level: publishing QoS 2 messages is forbidden on a shared hub",
            ));
        }
        if self.shared && p.retain {
            return Err(deny(
                ReasonCode::RetainNotSupported,
                "service level: publishing retained messages is forbidden on a shared hub",
            ));
        }
        if let Some(max) = self.max_payload
            && p.payload_size > max
        {
            return Err(deny(ReasonCode::PacketTooLarge, self.service_level("message payload is too large")));
        }
        if self.monitoring.is_some() && (device_monitor_topic(&p.topic).is_some() || app_monitor_topic(&p.topic)) {
            // Only the hub reports connections; a client's message there would be a forgery.
            return Err(deny(
                ReasonCode::NotAuthorized,
                format!("unauthorized topic {}: monitoring messages are published by the hub only", p.topic),
            ));
        }
        if !self.permitted(&self.publish, s, &p.topic) {
            return Err(deny(ReasonCode::NotAuthorized, format!("unauthorized topic {}", p.topic)));
        }
        let rewrite = match (p.retain, self.retained) {
            (true, Retained::Deny) => {
                return Err(deny(ReasonCode::RetainNotSupported, "retained messages are not allowed on this hub"));
            }
            (true, Retained::Override) => Some(PublishRewrite {
                qos: p.qos,
                retain: false,
                message: "retained flag overridden to false".to_owned(),
            }),
            _ => None,
        };
        if let Some(rate) = &self.rate
            && host.counter_add(&s.rate_counter, 1, rate.window_ms) > i64::from(rate.messages)
        {
            let (reason, what) = match rate.exceeded {
                Exceeded::Throttle => (ReasonCode::MessageRateTooHigh, "message rate too high"),
                Exceeded::Quota => (ReasonCode::QuotaExceeded, "message quota exceeded"),
            };
            return Err(deny(reason, format!("{what}: {} messages per {} ms", rate.messages, rate.window_ms)));
        }
        Ok(rewrite)
    }

    /// Up to which payload size this publish's decision may be reused for the same session,
    /// topic, QoS and retain flag (`None`: not at all). A decision that read a counter (a
    /// rate) is never reused; one reached with a payload over the limit depends on that size.
    pub fn publish_cache_bound(&self, p: &Publish, counted: bool) -> Option<u32> {
        if counted {
            return None;
        }
        match self.max_payload {
            Some(max) if p.payload_size > max => None,
            Some(max) => Some(max),
            None => Some(u32::MAX),
        }
    }

    /// Decides a subscription: state, filter, QoS, topic rules, shared-hub QoS.
    pub fn authorize_subscribe(&self, s: &Session, sub: &Subscribe) -> SubscribeDecision {
        if let Some(d) = self.state_denial() {
            return SubscribeDecision::Deny(d);
        }
        if s.restored {
            return SubscribeDecision::Deny(not_connected());
        }
        if sub.filter.is_empty() {
            return SubscribeDecision::Deny(deny(ReasonCode::TopicFilterInvalid, "empty topics are not authorized"));
        }
        if let Err(e) = topic::validate_topic_filter(&sub.filter) {
            return SubscribeDecision::Deny(deny(ReasonCode::TopicFilterInvalid, format!("invalid topic filter: {e}")));
        }
        if let Err(d) = check_qos(sub.qos) {
            return SubscribeDecision::Deny(d);
        }
        let mut allowed = false;
        for rule in self.subscribe_rules_matching(s, &sub.filter) {
            match self.rules[rule].effect {
                Effect::Deny => {
                    return SubscribeDecision::Deny(deny(
                        ReasonCode::NotAuthorized,
                        format!("unauthorized topic {}", sub.filter),
                    ));
                }
                Effect::Allow => allowed = true,
            }
        }
        if !allowed {
            return SubscribeDecision::Deny(deny(
                ReasonCode::NotAuthorized,
                format!("unauthorized topic {}", sub.filter),
            ));
        }
        if self.shared && sub.qos > 0 {
            return match self.shared_subscribe {
                config::SharedSubscribe::Downgrade => SubscribeDecision::Grant(0),
                config::SharedSubscribe::Refuse => SubscribeDecision::Deny(deny(
                    ReasonCode::QosNotSupported,
                    "service level: subscribing with QoS 1-2 is forbidden on a shared hub",
                )),
            };
        }
        SubscribeDecision::Grant(sub.qos)
    }

    /// Decides a delivery: state, and delivery rules when the document has any.
    pub fn authorize_delivery(&self, s: &Session, d: &Delivery) -> DeliveryDecision {
        if let Some(denial) = self.state_denial() {
            return DeliveryDecision::Deny(denial);
        }
        if !self.may_subscribe_to(s, &d.topic) {
            // The subscription was granted under rules that no longer allow it (a reload), or
            // came with a session taken over from elsewhere.
            return DeliveryDecision::Deny(deny(
                ReasonCode::NotAuthorized,
                format!("subscription no longer authorized for topic {}", d.topic),
            ));
        }
        if self.has_delivery_rules && !self.permitted(&self.delivery, s, &d.topic) {
            return DeliveryDecision::Deny(deny(ReasonCode::NotAuthorized, format!("unauthorized topic {}", d.topic)));
        }
        if let Some(denial) = self.monitoring_scope(s, &d.topic) {
            return DeliveryDecision::Deny(denial);
        }
        DeliveryDecision::Allow
    }

    /// `[monitoring]` scopes, per delivery (a subscription to `iot-2/type/+/id/+/mon` is one
    /// filter, the devices behind it are many): a device or gateway receives the messages of
    /// devices sharing one of its groups (and its own), an application those of the
    /// organization or of its groups' and ungrouped devices; application messages go to
    /// applications only.
    fn monitoring_scope(&self, s: &Session, topic_name: &str) -> Option<Denial> {
        let m = self.monitoring.as_ref()?;
        if let Some(id) = device_monitor_topic(topic_name) {
            let groups: &[String] = self.devices.get(id).map_or(&[], |d| &d.groups);
            let shares = || groups.iter().any(|g| s.groups.contains(g));
            let ok = match (s.kind, m.device_scope, m.application_scope) {
                (Kind::Application, _, config::ApplicationScope::Organization) => true,
                (Kind::Application, _, config::ApplicationScope::Group) => groups.is_empty() || shares(),
                (_, config::DeviceScope::Organization, _) => true,
                (_, config::DeviceScope::Group, _) => id == s.device_id || shares(),
            };
            return (!ok).then(|| {
                deny(
                    ReasonCode::NotAuthorized,
                    format!("monitoring messages of device {id} are outside this {}'s groups", s.kind.name()),
                )
            });
        }
        (app_monitor_topic(topic_name) && s.kind != Kind::Application).then(|| {
            deny(
                ReasonCode::NotAuthorized,
                format!("monitoring messages of applications are for applications only: {topic_name}"),
            )
        })
    }

    /// How the connection `c` is reported in monitoring messages, if this hub has a
    /// `[monitoring]` section: an admitted client by its registered kind, type and id (its
    /// application id); a refused one by what its client id names under this hub's formats
    /// (or, without formats, a registered device's id), so its `FailedConnect` reaches the
    /// device's topic. A session restored from the broker's persistence is no connection: none.
    pub fn monitored(&self, c: &Connect, admitted: Option<&Session>) -> Option<Monitored> {
        let m = self.monitoring.as_ref()?;
        if restored(c) {
            return None;
        }
        let device = |device_type: &str, id: &str| {
            (m.devices && topic_safe(device_type) && topic_safe(id))
                .then(|| Monitored::Device { device_type: device_type.to_owned(), id: id.to_owned() })
        };
        let application =
            |app: &str| (m.applications && topic_safe(app)).then(|| Monitored::Application { app: app.to_owned() });
        if let Some(s) = admitted {
            return match s.kind {
                Kind::Application => application(&s.device_id),
                _ => device(&s.device_type, &s.device_id),
            };
        }
        if self.formats.is_empty() {
            let d = self.devices.get(c.client_id.as_str())?;
            return device(&d.device_type, &c.client_id);
        }
        let (kind, caps) = self.formats.iter().find_map(|(f, k)| f.capture(&c.client_id).map(|caps| (*k, caps)))?;
        if caps.org.is_some_and(|org| Some(org) != self.org.as_deref()) {
            return None;
        }
        match kind {
            Kind::Application => application(caps.app?),
            _ => {
                let id = caps.id?;
                let registered = self.devices.get(id).map(|d| d.device_type.as_str());
                device(caps.device_type.or(registered).unwrap_or(&self.default_type), id)
            }
        }
    }

    /// The document's topic rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = &RuleInfo> {
        self.rules.iter().map(|r| &r.info)
    }

    /// What the topic rules must say for `action` on `topic` (a publish or delivery topic, a
    /// subscription filter) to be allowed, read the way the checks read them: each
    /// [`Requirement`] is met when one of its matched rules allows and none denies. A publish
    /// needs its publish rules; a subscription its subscribe rules (the filter within an allow
    /// rule's, or overlapping a deny rule's); a delivery needs the topic to be one the session
    /// may still subscribe to, and its delivery rules when the document has any. Explains a
    /// decision; never decides one.
    pub fn matching_rules(&self, s: &Session, action: Action, topic: &str) -> Vec<Requirement> {
        let from_trie = |trie: &TopicTrie<usize>, of: Action| {
            let mut matched = Vec::new();
            trie.any_match(topic, s, |i| {
                if self.rules[*i].applies(s) {
                    matched.push(*i);
                }
                false
            });
            matched.sort_unstable();
            matched.dedup();
            Requirement { of, matched }
        };
        match action {
            Action::Publish => vec![from_trie(&self.publish, Action::Publish)],
            Action::Delivery if self.has_delivery_rules => {
                vec![from_trie(&self.subscribable, Action::Subscribe), from_trie(&self.delivery, Action::Delivery)]
            }
            Action::Delivery => vec![from_trie(&self.subscribable, Action::Subscribe)],
            Action::Subscribe => {
                let mut matched: Vec<usize> = self.subscribe_rules_matching(s, topic).collect();
                matched.sort_unstable();
                matched.dedup();
                vec![Requirement { of: Action::Subscribe, matched }]
            }
        }
    }

    /// The subscribe rules, in order, that apply to the session and match `filter` as a
    /// subscription reads them: an allow rule when the filter lies within the rule's, a deny
    /// rule when the two overlap.
    fn subscribe_rules_matching<'a>(&'a self, s: &'a Session, filter: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.subscribe.iter().filter_map(move |(template, i)| {
            let rule = &self.rules[*i];
            if !rule.applies(s) {
                return None;
            }
            let expanded = template.expand(s)?;
            let hit = match rule.effect {
                Effect::Deny => topic::filters_overlap(filter, &expanded),
                Effect::Allow => topic::filter_within(filter, &expanded),
            };
            hit.then_some(*i)
        })
    }

    /// Whether the session may currently subscribe to a filter matching `topic_name`: an
    /// applicable subscribe allow rule matches it and no applicable subscribe deny rule does.
    fn may_subscribe_to(&self, s: &Session, topic_name: &str) -> bool {
        self.permitted(&self.subscribable, s, topic_name)
    }

    /// An applicable allow rule matches and no applicable deny rule does.
    fn permitted(&self, trie: &TopicTrie<usize>, s: &Session, topic_name: &str) -> bool {
        let mut allowed = false;
        let denied = trie.any_match(topic_name, s, |i| {
            let rule = &self.rules[*i];
            if !rule.applies(s) {
                return false;
            }
            match rule.effect {
                Effect::Deny => true,
                Effect::Allow => {
                    allowed = true;
                    false
                }
            }
        });
        allowed && !denied
    }
}

/// The name of a session's rate counter. Device ids can be client ids of up to 64 KiB on a
/// hub that admits unregistered devices, and the host refuses counter names over 1 KiB (the
/// check would trap, and the policy be instantiated anew, at every publish of such a client):
/// long ids are counted under their SHA-256.
pub(crate) fn rate_counter_name(device_id: &str) -> String {
    use base64ct::Encoding;
    use sha2::Digest;
    if device_id.len() <= 128 {
        return format!("rate:{device_id}");
    }
    format!("rate#{}", base64ct::Base64UrlUnpadded::encode_string(&sha2::Sha256::digest(device_id.as_bytes())))
}

/// What follows `host/` at the start of `s`, the host compared without case.
fn host_prefix<'a>(s: &'a str, host: &str) -> Option<&'a str> {
    let (h, rest) = s.split_once('/')?;
    h.eq_ignore_ascii_case(host).then_some(rest)
}

/// Whether an identity can stand in a topic rule: a safe placeholder value that also does
/// not start with `$`, so `${client.id}/#` can never become `$SYS/#`.
fn topic_safe(s: &str) -> bool {
    mqtt_policy_guest::template::is_safe_value(s) && !s.starts_with('$')
}

fn check_topic_name(t: &str) -> Result<(), Denial> {
    if t.is_empty() {
        return Err(deny(ReasonCode::TopicNameInvalid, "empty topics are not authorized"));
    }
    topic::validate_topic_name(t).map_err(|e| deny(ReasonCode::TopicNameInvalid, format!("invalid topic: {e}")))
}

fn check_qos(qos: u8) -> Result<(), Denial> {
    if qos > 2 {
        return Err(deny(ReasonCode::ProtocolError, format!("invalid MQTT QoS value: {qos}")));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// (device id, device type) of a session.
    pub fn device(s: &super::Session) -> (&str, &str) {
        (&s.device_id, &s.device_type)
    }

    /// Groups of a session.
    pub fn groups(s: &super::Session) -> &[String] {
        &s.groups
    }
}
