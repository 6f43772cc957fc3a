//! `eval --explain` and `test --coverage` for hub-rules policies: which topic rules of the
//! rules document a check read, by document line.
//!
//! The decision is always the `.wasm`'s. The explanation reads the same rules document with
//! the hub-rules library this command was built with, natively, and says so when the policy's
//! code is not that build (a policy built by another version of `mqtt-policy`).

use hub_rules::config::{Action, Effect};
use hub_rules::hub::{HostApi, Hub, Requirement, RuleInfo, Session};
use mqtt_policy_guest as guest;
use mqtt_policy_host::embedded;

use crate::run::Outcome;

/// The rules document of a hub-rules policy, compiled natively.
pub struct Explainer {
    hub: Hub,
    /// Whether the policy's code is the hub-rules this command embeds.
    same_build: bool,
}

/// A host for the native authentication: no counters carried over (a fresh window), no other
/// connection, the real clock. Only the identity matters to the topic rules.
struct Quiet;

impl HostApi for Quiet {
    fn counter_add(&self, _name: &str, delta: i64, _window_ms: u64) -> i64 {
        delta
    }
    fn connection_count(&self) -> u32 {
        0
    }
    fn info(&self, _message: &str) {}
    fn now_millis(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

impl Explainer {
    /// The explainer of `component` (with `settings` replacing the embedded ones, as `eval`
    /// and `test` do), or why there is none.
    pub fn of(component: &[u8], settings: Option<&str>) -> Result<Explainer, String> {
        let embedded = embedded::settings(component)?;
        let Some(text) = settings.map(str::to_owned).or(embedded) else {
            return Err("the policy has no settings, so no hub rules document to explain with".into());
        };
        let hub = Hub::compile(&text).map_err(|e| {
            format!("the settings are not a hub rules document ({e}): only hub-rules policies are explained")
        })?;
        let same_build = embedded::same_code(component, crate::HUB_RULES_WASM);
        Ok(Explainer { hub, same_build })
    }

    /// A note to print when the policy's code is not this command's hub-rules build.
    pub fn caveat(&self) -> Option<&'static str> {
        (!self.same_build).then_some(
            "the policy's code is not the hub-rules this mqtt-policy embeds: its rules are read with this version's",
        )
    }

    /// The document's topic rules, in order.
    pub fn rules(&self) -> Vec<RuleInfo> {
        self.hub.rules().cloned().collect()
    }

    /// The session the rules see for `c`, if the rules document admits it natively too.
    pub fn session(&self, c: &mqtt_policy_host::Connect) -> Result<Session, String> {
        self.hub.authenticate(&guest_connect(c), &Quiet).map(|(_, s)| s).map_err(|d| d.message)
    }

    /// What the topic rules must say for `action` on `topic` to be allowed, and which of
    /// them matched.
    pub fn matching(&self, s: &Session, action: Action, topic: &str) -> Vec<Requirement> {
        self.hub.matching_rules(s, action, topic)
    }

    /// Lines saying which rules decided `outcome` of `action` on `topic` (who the session is
    /// is [`Session::describe`]'s).
    pub fn explain(&self, s: &Session, action: Action, topic: &str, outcome: &Outcome) -> Vec<String> {
        let rules: Vec<&RuleInfo> = self.hub.rules().collect();
        let mut lines = Vec::new();
        // Every requirement must be met; the first one that is not decides.
        let mut by_rules = true;
        for req in self.matching(s, action, topic) {
            let of = req.of.name();
            let deny = req.matched.iter().find(|i| rules[**i].effect == Effect::Deny);
            let allow = req.matched.iter().find(|i| rules[**i].effect == Effect::Allow);
            match (deny, allow) {
                (Some(d), _) => {
                    lines.push(format!("decided by the {of} deny rule at {} (a matching deny wins)", rules[*d]));
                    by_rules = false;
                }
                (None, Some(a)) => lines.push(format!("allowed by the {of} rule at {}", rules[*a])),
                (None, None) => {
                    lines.push(format!("no {of} rule matches: nothing allows it"));
                    by_rules = false;
                }
            }
            for i in req.matched.iter().filter(|i| Some(*i) != deny && Some(*i) != allow) {
                lines.push(format!("also matched: {}", rules[*i]));
            }
            if !by_rules {
                break;
            }
        }
        match (by_rules, outcome.kind) {
            (true, "deny" | "reject") => lines.push(format!(
                "the topic rules allow it; the refusal comes from the hub's other rules: {}",
                outcome.message.as_deref().unwrap_or_default()
            )),
            (false, "deny" | "reject") if outcome.reason != Some(mqtt_policy_host::ReasonCode::NotAuthorized) => lines
                .push(format!(
                    "the policy's refusal is not a topic rule's (those answer 0x87): {}",
                    outcome.message.as_deref().unwrap_or_default()
                )),
            (false, "allow" | "grant" | "rewrite") => {
                lines.push("warning: the policy allowed what the rules read here refuse".to_owned())
            }
            _ => {}
        }
        if let Some(c) = self.caveat() {
            lines.push(format!("note: {c}"));
        }
        lines
    }
}

/// The host's connect as the SDK's: what a native hub-rules authenticates.
fn guest_connect(c: &mqtt_policy_host::Connect) -> guest::Connect {
    guest::Connect {
        tenant: c.tenant.clone(),
        client_id: c.client_id.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
        clean_start: c.clean_start,
        keep_alive: c.keep_alive,
        protocol: match c.protocol {
            mqtt_policy_host::Protocol::Mqtt31 => guest::Protocol::Mqtt31,
            mqtt_policy_host::Protocol::Mqtt311 => guest::Protocol::Mqtt311,
            mqtt_policy_host::Protocol::Mqtt5 => guest::Protocol::Mqtt5,
        },
        tls: c.tls,
        certificate: c.certificate.as_ref().map(|x| guest::Certificate {
            subject_cn: x.subject_cn.clone(),
            subject: x.subject.clone(),
            issuer: x.issuer.clone(),
            serial: x.serial.clone(),
            sha256: x.sha256.clone(),
            not_before: x.not_before,
            not_after: x.not_after,
            dns_names: x.dns_names.clone(),
            uris: x.uris.clone(),
            authority_key_id: x.authority_key_id.clone(),
            subject_key_id: x.subject_key_id.clone(),
            chain_verified_by: x.chain_verified_by.clone(),
        }),
        peer: c.peer.clone(),
        resumed: false,
    }
}

/// Which rules a set of cases exercised.
#[derive(Default)]
pub struct Coverage {
    hit: std::collections::BTreeSet<usize>,
}

impl Coverage {
    /// Records the rules `action` on `topic` matched for `s`.
    pub fn record(&mut self, explainer: &Explainer, s: &Session, action: Action, topic: &str) {
        self.hit.extend(explainer.matching(s, action, topic).into_iter().flat_map(|r| r.matched));
    }

    /// The rules no recorded check matched, in document order.
    pub fn unexercised(&self, explainer: &Explainer) -> Vec<RuleInfo> {
        explainer.hub.rules().enumerate().filter(|(i, _)| !self.hit.contains(i)).map(|(_, r)| r.clone()).collect()
    }

    /// How many rules were matched.
    pub fn exercised(&self) -> usize {
        self.hit.len()
    }
}
