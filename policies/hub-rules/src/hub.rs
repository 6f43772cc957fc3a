//! A compiled hub: the rules document turned into hash maps and topic tries, and the
//! decisions. Everything here is plain Rust over the [`HostApi`] trait, tested natively.

use mqtt_policy_guest::collections::HashMap;
use mqtt_policy_guest::template::{Template, Vars};
use mqtt_policy_guest::topic::{self, TopicTrie};
use mqtt_policy_guest::{
    Connect, Delivery, DeliveryDecision, Denial, Publish, PublishDecision, PublishRewrite, ReasonCode, SessionInfo,
    Subscribe, SubscribeDecision,
};

use crate::config::{self, Action, Effect, Exceeded, HubState, IdentitySource, Retained, ServiceLevel};
use crate::identity::Format;

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

/// A device in the registry.
#[derive(Debug, Clone)]
pub struct Device {
    device_type: String,
    groups: Vec<String>,
    state: config::DeviceState,
}

#[derive(Debug)]
struct Rule {
    effect: Effect,
    types: Vec<String>,
    groups: Vec<String>,
}

impl Rule {
    fn applies(&self, s: &Session) -> bool {
        (self.types.is_empty() || self.types.contains(&s.device_type))
            && (self.groups.is_empty() || self.groups.iter().any(|g| s.groups.contains(g)))
    }
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
    formats: Vec<(Format, Vec<String>)>,
    allow_unregistered: bool,
    auto_provision: bool,
    default_type: String,
    cas: Vec<String>,
    devices: HashMap<String, Device>,
    rules: Vec<Rule>,
    publish: TopicTrie<usize>,
    delivery: TopicTrie<usize>,
    has_delivery_rules: bool,
    subscribe: Vec<(Template, usize)>,
}

/// What the policy remembers about a connected client.
#[derive(Debug, Clone)]
pub struct Session {
    device_id: String,
    device_type: String,
    groups: Vec<String>,
    client_id: String,
    username: Option<String>,
    cert_cn: Option<String>,
    org: Option<String>,
    rate_counter: String,
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
            formats.push((format, f.groups.clone()));
        }
        if id.from == IdentitySource::Certificate && doc.cas.is_empty() {
            return Err("identity.from = \"certificate\" needs at least one [[ca]]".to_owned());
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

        let default_type = id.default_type.clone().unwrap_or_else(|| "device".to_owned());
        let mut devices = HashMap::default();
        for (i, d) in doc.devices.iter().enumerate() {
            let name = d.id.get_ref();
            if !topic_safe(name) {
                return Err(format!(
                    "{}: device[{i}].id `{name}`: must be non-empty, not start with '$', and hold no '/', '+', '#' or NUL",
                    at(d.id.span())
                ));
            }
            let device = Device {
                device_type: d.device_type.clone().unwrap_or_else(|| default_type.clone()),
                groups: d.groups.clone(),
                state: d.state,
            };
            if devices.insert(name.clone(), device).is_some() {
                return Err(format!("{}: device[{i}].id: duplicate device `{name}`", at(d.id.span())));
            }
        }

        let mut publish = TopicTrie::with_placeholders(PLACEHOLDERS);
        let mut delivery = TopicTrie::with_placeholders(PLACEHOLDERS);
        let mut subscribe = Vec::new();
        let mut rules = Vec::new();
        let mut has_delivery_rules = false;
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
                            Ok(())
                        }
                    }
                    .map_err(|e| format!("{}: {e}", field()))?;
                }
            }
            rules.push(Rule { effect: r.effect, types: r.types.clone(), groups: r.groups.clone() });
        }

        Ok(Hub {
            org: h.org.clone(),
            state: h.state,
            shared: h.service_level == ServiceLevel::Shared,
            shared_subscribe: h.shared_subscribe,
            max_payload: h.max_payload,
            retained: h.retained,
            require_mtls: h.require_mtls,
            max_connections: h.max_connections,
            rate: h.rate.clone(),
            source: id.from,
            formats,
            allow_unregistered: id.allow_unregistered.unwrap_or(doc.devices.is_empty()),
            auto_provision: id.auto_provision,
            default_type,
            cas,
            devices,
            rules,
            publish,
            delivery,
            has_delivery_rules,
            subscribe,
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
        if self.require_mtls {
            let ok = c.tls && c.certificate.is_some() && (self.cas.is_empty() || verified_ca.is_some());
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

        let mut device_type = None;
        let mut extra_groups: &[String] = &[];
        let mut attributes = Vec::new();
        let device_id: &str = match self.source {
            IdentitySource::Username => c.username.as_deref().filter(|u| topic_safe(u)).ok_or_else(|| {
                deny(ReasonCode::BadUserNameOrPassword, "could not identify device: no usable user name")
            })?,
            IdentitySource::Certificate => {
                let cert = c
                    .certificate
                    .as_ref()
                    .ok_or_else(|| deny(ReasonCode::NotAuthorized, "mutual TLS authentication is required"))?;
                if verified_ca.is_none() {
                    return Err(deny(ReasonCode::NotAuthorized, "invalid device certificate"));
                }
                match cert.subject_cn.as_deref() {
                    None | Some("") => {
                        return Err(deny(ReasonCode::NotAuthorized, "certificate common name cannot be empty"));
                    }
                    Some(cn) if !topic_safe(cn) => {
                        return Err(deny(ReasonCode::NotAuthorized, "invalid device certificate"));
                    }
                    Some(cn) => cn,
                }
            }
            IdentitySource::ClientId if self.formats.is_empty() => {
                if !topic_safe(&c.client_id) {
                    return Err(deny(
                        ReasonCode::ClientIdentifierNotValid,
                        format!("client identifier `{}` is not a valid device id", c.client_id),
                    ));
                }
                &c.client_id
            }
            IdentitySource::ClientId => {
                let (format, format_groups, caps) = self
                    .formats
                    .iter()
                    .find_map(|(f, g)| f.capture(&c.client_id).map(|caps| (f, g, caps)))
                    .ok_or_else(|| {
                        deny(
                            ReasonCode::ClientIdentifierNotValid,
                            format!("client identifier `{}` matches no accepted format", c.client_id),
                        )
                    })?;
                if let Some(org) = caps.org
                    && Some(org) != self.org.as_deref()
                {
                    return Err(deny(
                        ReasonCode::ClientIdentifierNotValid,
                        format!("client identifier organization `{org}` is not this hub's"),
                    ));
                }
                device_type = caps.device_type;
                extra_groups = format_groups.as_slice();
                attributes.push(("format".to_owned(), format.text().to_owned()));
                if let Some(instance) = caps.instance {
                    attributes.push(("instance".to_owned(), instance.to_owned()));
                }
                caps.id.or(caps.app).expect("formats capture id or app")
            }
        };

        let (device_type, mut groups) = match self.devices.get(device_id) {
            Some(d) => {
                match d.state {
                    config::DeviceState::Disabled => {
                        return Err(deny(ReasonCode::NotAuthorized, "device is not enabled"));
                    }
                    config::DeviceState::Deleted => return Err(deny(ReasonCode::NotAuthorized, "device is deleted")),
                    config::DeviceState::Enabled => {}
                }
                (d.device_type.clone(), d.groups.clone())
            }
            None if self.auto_provision => {
                if !c.resumed {
                    host.info(&format!(
                        "device was auto-provisioned: object-name={device_id} source-address={}",
                        c.peer
                    ));
                }
                attributes.push(("provisioned".to_owned(), "auto".to_owned()));
                (self.default_type.clone(), Vec::new())
            }
            None if self.allow_unregistered => {
                (device_type.map_or_else(|| self.default_type.clone(), str::to_owned), Vec::new())
            }
            None => return Err(deny(ReasonCode::NotAuthorized, "could not identify device")),
        };

        groups.extend(extra_groups.iter().cloned());
        if let Some(max) = self.max_connections
            && !c.resumed
            && host.connection_count() >= max
        {
            return Err(deny(ReasonCode::QuotaExceeded, format!("too many connections for this hub (limit {max})")));
        }

        attributes.push(("type".to_owned(), device_type.clone()));
        let info = SessionInfo { device_id: device_id.to_owned(), attributes };
        let session = Session {
            rate_counter: format!("rate:{device_id}"),
            device_id: device_id.to_owned(),
            device_type,
            groups,
            client_id: c.client_id.clone(),
            username: c.username.clone(),
            cert_cn: c.certificate.as_ref().and_then(|c| c.subject_cn.clone()),
            org: self.org.clone(),
        };
        Ok((info, session))
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
        for (template, rule) in &self.subscribe {
            let rule_ref = &self.rules[*rule];
            if !rule_ref.applies(s) {
                continue;
            }
            let Some(filter) = template.expand(s) else { continue };
            match rule_ref.effect {
                Effect::Deny if topic::filters_overlap(&sub.filter, &filter) => {
                    return SubscribeDecision::Deny(deny(
                        ReasonCode::NotAuthorized,
                        format!("unauthorized topic {}", sub.filter),
                    ));
                }
                Effect::Allow if topic::filter_within(&sub.filter, &filter) => allowed = true,
                _ => {}
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
        DeliveryDecision::Allow
    }

    /// Whether the session may currently subscribe to a filter matching `topic_name`: an
    /// applicable subscribe allow rule matches it and no applicable subscribe deny rule does.
    fn may_subscribe_to(&self, s: &Session, topic_name: &str) -> bool {
        let mut allowed = false;
        for (template, rule) in &self.subscribe {
            let rule_ref = &self.rules[*rule];
            if !rule_ref.applies(s) {
                continue;
            }
            let Some(filter) = template.expand(s) else { continue };
            if topic::matches(&filter, topic_name) {
                match rule_ref.effect {
                    Effect::Deny => return false,
                    Effect::Allow => allowed = true,
                }
            }
        }
        allowed
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
