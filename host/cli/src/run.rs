//! Running cases and single decisions against a policy, and describing the outcomes.

use mqtt_policy_host::cert::Certificate;
use mqtt_policy_host::*;

use crate::cases::{self, Case, CertificateSpec, ConnectSpec, PublishSpec, SubscribeSpec, defaults};

/// A decision of any kind, reduced to what cases compare and reports print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// accept, reject, allow, rewrite, deny, grant or defer.
    pub kind: &'static str,
    /// The reason code of a deny or reject.
    pub reason: Option<ReasonCode>,
    /// The message of a deny, reject or rewrite.
    pub message: Option<String>,
    /// Granted or rewritten QoS.
    pub qos: Option<u8>,
    /// Rewritten retain flag.
    pub retain: Option<bool>,
    /// Device id of an accepted connect.
    pub device: Option<String>,
    /// The attributes the policy attached to an accepted session (shown in events too).
    pub attributes: Vec<(String, String)>,
    /// Whether a denial asks for the connection to be closed.
    pub disconnect: bool,
}

/// What running a case produced.
#[derive(Debug)]
pub struct CaseOutcome {
    /// The decision the policy made.
    pub actual: Outcome,
    /// Each unmet expectation; empty when the case passed.
    pub problems: Vec<String>,
}

impl Outcome {
    /// What a case compares.
    pub fn observed(&self) -> cases::Observed<'_> {
        cases::Observed {
            kind: self.kind,
            reason: self.reason.map(ReasonCode::code),
            message: self.message.as_deref(),
            qos: self.qos,
            retain: self.retain,
            device: self.device.as_deref(),
        }
    }

    /// An outcome of `kind` with nothing else known (for tests and other runners).
    pub fn plain_kind(kind: &'static str) -> Outcome {
        Outcome::plain(kind)
    }

    fn plain(kind: &'static str) -> Outcome {
        Outcome {
            kind,
            reason: None,
            message: None,
            qos: None,
            retain: None,
            device: None,
            attributes: Vec::new(),
            disconnect: false,
        }
    }

    fn denied(kind: &'static str, d: &Denial) -> Outcome {
        Outcome {
            reason: Some(d.reason),
            message: Some(d.message.clone()),
            disconnect: d.disconnect,
            ..Outcome::plain(kind)
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(d) = &self.device {
            write!(f, " as {d}")?;
        }
        if !self.attributes.is_empty() {
            let shown: Vec<String> = self.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " {{{}}}", shown.join(", "))?;
        }
        if let Some(r) = self.reason {
            write!(f, " {r}")?;
        }
        if self.disconnect {
            write!(f, " (disconnect)")?;
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

/// Builds the host's connect from a case's.
pub fn connect(tenant: &str, spec: &ConnectSpec) -> Connect {
    let mut c = Connect::new(tenant, &spec.client_id);
    c.username = spec.username.clone();
    c.password = spec.password.as_ref().map(|p| p.as_bytes().to_vec());
    c.clean_start = spec.clean_start.unwrap_or(defaults::CLEAN_START);
    c.keep_alive = spec.keep_alive.unwrap_or(defaults::KEEP_ALIVE);
    c.protocol = cases::protocol(spec.protocol.unwrap_or_default());
    c.certificate = spec.certificate.as_ref().map(certificate);
    c.tls = spec.tls.unwrap_or(c.certificate.is_some());
    c.peer = spec.peer.clone().unwrap_or_else(|| defaults::PEER.to_owned());
    c
}

fn certificate(spec: &CertificateSpec) -> Certificate {
    let subject = spec
        .subject
        .clone()
        .unwrap_or_else(|| spec.subject_cn.as_ref().map(|cn| format!("CN={cn}")).unwrap_or_default());
    Certificate {
        subject_cn: spec.subject_cn.clone(),
        subject,
        issuer: spec.issuer.clone().unwrap_or_default(),
        serial: spec.serial.clone().unwrap_or_else(|| defaults::SERIAL.to_owned()),
        sha256: String::new(),
        not_before: spec.not_before.unwrap_or(0),
        not_after: spec.not_after.unwrap_or(defaults::NOT_AFTER),
        dns_names: spec.dns_names.clone(),
        uris: spec.uris.clone(),
        authority_key_id: None,
        subject_key_id: None,
        chain_verified_by: spec.chain_verified_by.clone(),
    }
}

/// Connects; on accept returns the session too.
pub fn run_connect(policy: &mut Policy, c: &Connect) -> (Outcome, Option<SessionId>) {
    match policy.authenticate(c) {
        ConnectDecision::Accept(id, info) => {
            let outcome =
                Outcome { device: Some(info.device_id), attributes: info.attributes, ..Outcome::plain("accept") };
            (outcome, Some(id))
        }
        ConnectDecision::Reject(d) => (Outcome::denied("reject", &d), None),
        ConnectDecision::Defer => (Outcome::plain("defer"), None),
    }
}

/// Checks a publish.
pub fn run_publish(policy: &mut Policy, s: SessionId, p: &PublishSpec) -> Outcome {
    let publish = Publish { topic: &p.topic, qos: p.qos, retain: p.retain, payload_size: p.payload_size };
    match policy.authorize_publish(s, &publish) {
        PublishDecision::Allow => Outcome::plain("allow"),
        PublishDecision::Rewrite(r) => {
            Outcome { qos: Some(r.qos), retain: Some(r.retain), message: Some(r.message), ..Outcome::plain("rewrite") }
        }
        PublishDecision::Deny(d) => Outcome::denied("deny", &d),
        PublishDecision::Defer => Outcome::plain("defer"),
    }
}

/// Checks a subscription.
pub fn run_subscribe(policy: &mut Policy, s: SessionId, spec: &SubscribeSpec) -> Outcome {
    match policy.authorize_subscribe(s, &Subscribe { filter: &spec.filter, qos: spec.qos }) {
        SubscribeDecision::Grant(q) => Outcome { qos: Some(q), ..Outcome::plain("grant") },
        SubscribeDecision::Deny(d) => Outcome::denied("deny", &d),
        SubscribeDecision::Defer => Outcome::plain("defer"),
    }
}

/// Checks a delivery.
pub fn run_delivery(policy: &mut Policy, s: SessionId, p: &PublishSpec) -> Outcome {
    let d = Delivery { topic: &p.topic, qos: p.qos, retain: p.retain, payload_size: p.payload_size };
    match policy.authorize_delivery(s, &d) {
        DeliveryDecision::Allow => Outcome::plain("allow"),
        DeliveryDecision::Deny(d) => Outcome::denied("deny", &d),
        DeliveryDecision::Defer => Outcome::plain("defer"),
    }
}

/// Runs one case on `policy` and compares with its expectations.
pub fn run_case(policy: &mut Policy, tenant: &str, case: &Case) -> CaseOutcome {
    let c = connect(tenant, &case.connect);
    let (connected, session) = run_connect(policy, &c);
    let actual = match (case.action(), session) {
        ("connect", _) => connected,
        (_, None) => {
            let problem = format!("connect was refused, so the {} was never checked: {connected}", case.action());
            return CaseOutcome { actual: connected, problems: vec![problem] };
        }
        (_, Some(s)) => {
            let mut last = None;
            for _ in 0..case.repeat {
                last = Some(if let Some(p) = &case.publish {
                    run_publish(policy, s, p)
                } else if let Some(sub) = &case.subscribe {
                    run_subscribe(policy, s, sub)
                } else {
                    run_delivery(policy, s, case.deliver.as_ref().expect("action is deliver"))
                });
            }
            last.expect("repeat is at least 1")
        }
    };
    if let Some(s) = session
        && !case.keep_connected
    {
        policy.end_session(s);
    }
    let problems = compare(case, &actual);
    CaseOutcome { actual, problems }
}

fn compare(case: &Case, actual: &Outcome) -> Vec<String> {
    case.unmet(&actual.observed(), actual, |r| ReasonCode::parse(r).map(|c| (c.code(), c.name())))
}
