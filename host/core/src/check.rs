//! The three per-message checks (publish, subscribe, delivery) described once each, so that
//! [`crate::Policy`] runs all three through one path: cache, call, admissibility, remember,
//! event.

use crate::cache::{DecisionCache, Entries, Key};
use crate::error::Error;
use crate::events::{Action, Event, Severity};
use crate::instance::{Answer, Instance};
use crate::types::*;

/// One kind of check: its input is `Self`, its answer [`Check::Decision`].
pub(crate) trait Check {
    /// What the policy answers.
    type Decision: Clone + Verdict;
    /// The action events and faults of this check are filed under.
    const ACTION: Action;

    /// What the decision may be reused for.
    fn key(&self) -> Key<'_>;
    /// The topic (or filter) asked about, for the decision's event.
    fn topic(&self) -> &str;
    /// The reusable decisions of this kind in a session's cache.
    fn entries(cache: &DecisionCache) -> &Entries<Self::Decision>;
    /// The same, to add to.
    fn entries_mut(cache: &mut DecisionCache) -> &mut Entries<Self::Decision>;
    /// Asks the policy.
    fn ask(&self, instance: &mut Instance, session: u64) -> Result<Answer<Self::Decision>, Error>;
    /// Why the policy's answer is not admissible for this input, if it is not.
    fn inadmissible(&self, _decision: &Self::Decision) -> Option<String> {
        None
    }
    /// A refusal as this check's decision.
    fn deny(denial: Denial) -> Self::Decision;
    /// The event a decision deserves, if any: every denial, and a publish rewrite. Built
    /// for reused decisions too, so the event log does not depend on the cache.
    fn event(tenant: &str, decision: &Self::Decision) -> Option<Event> {
        decision.denial().map(|d| Event::denial(tenant, Self::ACTION, "deny", d))
    }
    /// Whether [`Check::event`] gives nothing for `decision`: such a reused decision is
    /// answered without building one.
    fn event_free(decision: &Self::Decision) -> bool {
        decision.denial().is_none()
    }
}

impl Check for Publish<'_> {
    type Decision = PublishDecision;
    const ACTION: Action = Action::Publish;

    fn key(&self) -> Key<'_> {
        Key { topic: self.topic.as_bytes(), qos: self.qos, retain: self.retain, payload_size: self.payload_size }
    }

    fn topic(&self) -> &str {
        self.topic
    }

    fn entries(cache: &DecisionCache) -> &Entries<PublishDecision> {
        &cache.publish
    }

    fn entries_mut(cache: &mut DecisionCache) -> &mut Entries<PublishDecision> {
        &mut cache.publish
    }

    fn ask(&self, instance: &mut Instance, session: u64) -> Result<Answer<PublishDecision>, Error> {
        instance.publish(session, self)
    }

    /// A rewrite may only soften (lower the QoS, drop the retain flag), never ask for more
    /// than the client sent.
    fn inadmissible(&self, d: &PublishDecision) -> Option<String> {
        let PublishDecision::Rewrite(r) = d else { return None };
        if r.qos > 2 {
            return Some(format!("rewrite to QoS {} (QoS is 0, 1 or 2)", r.qos));
        }
        if r.qos > self.qos {
            return Some(format!("rewrite raises QoS {} to {}", self.qos, r.qos));
        }
        if r.retain && !self.retain {
            return Some("rewrite adds the retain flag".to_owned());
        }
        None
    }

    fn deny(denial: Denial) -> PublishDecision {
        PublishDecision::Deny(denial)
    }

    fn event(tenant: &str, decision: &PublishDecision) -> Option<Event> {
        match decision {
            PublishDecision::Deny(d) => Some(Event::denial(tenant, Action::Publish, "deny", d)),
            PublishDecision::Rewrite(r) => {
                Some(Event::new(tenant, Action::Publish, Severity::Info, "rewrite", r.message.clone()))
            }
            _ => None,
        }
    }

    fn event_free(decision: &PublishDecision) -> bool {
        matches!(decision, PublishDecision::Allow | PublishDecision::Defer)
    }
}

impl Check for Subscribe<'_> {
    type Decision = SubscribeDecision;
    const ACTION: Action = Action::Subscribe;

    /// A grant depends on the filter and the QoS asked for; there is no payload, so any
    /// bound the policy gives covers it.
    fn key(&self) -> Key<'_> {
        Key { topic: self.filter.as_bytes(), qos: self.qos, retain: false, payload_size: 0 }
    }

    fn topic(&self) -> &str {
        self.filter
    }

    fn entries(cache: &DecisionCache) -> &Entries<SubscribeDecision> {
        &cache.subscribe
    }

    fn entries_mut(cache: &mut DecisionCache) -> &mut Entries<SubscribeDecision> {
        &mut cache.subscribe
    }

    fn ask(&self, instance: &mut Instance, session: u64) -> Result<Answer<SubscribeDecision>, Error> {
        instance.subscribe(session, self)
    }

    /// A grant above QoS 2 or above the requested QoS.
    fn inadmissible(&self, d: &SubscribeDecision) -> Option<String> {
        match d {
            SubscribeDecision::Grant(q) if *q > 2 => Some(format!("grant of QoS {q} (QoS is 0, 1 or 2)")),
            SubscribeDecision::Grant(q) if *q > self.qos => {
                Some(format!("grant of QoS {q} above the requested {}", self.qos))
            }
            _ => None,
        }
    }

    fn deny(denial: Denial) -> SubscribeDecision {
        SubscribeDecision::Deny(denial)
    }
}

impl Check for Delivery<'_> {
    type Decision = DeliveryDecision;
    const ACTION: Action = Action::Delivery;

    fn key(&self) -> Key<'_> {
        Key { topic: self.topic.as_bytes(), qos: self.qos, retain: self.retain, payload_size: self.payload_size }
    }

    fn topic(&self) -> &str {
        self.topic
    }

    fn entries(cache: &DecisionCache) -> &Entries<DeliveryDecision> {
        &cache.delivery
    }

    fn entries_mut(cache: &mut DecisionCache) -> &mut Entries<DeliveryDecision> {
        &mut cache.delivery
    }

    fn ask(&self, instance: &mut Instance, session: u64) -> Result<Answer<DeliveryDecision>, Error> {
        instance.delivery(session, self)
    }

    fn deny(denial: Denial) -> DeliveryDecision {
        DeliveryDecision::Deny(denial)
    }
}
