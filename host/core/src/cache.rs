//! Decisions a policy allowed the host to reuse (see `cache-decision` in the WIT), per
//! session and kind of check.

use rustc_hash::FxHashMap as HashMap;

use crate::types::{DeliveryDecision, PublishDecision, SubscribeDecision};

/// Most decisions kept per session and kind of check; a full map is emptied, so a client
/// cycling through endless topics costs memory only up to this bound.
pub(crate) const MAX_CACHED_PER_SESSION: usize = 256;

/// What a check is about, as far as reusing its decision goes: a decision applies again to
/// the same topic (or filter) with the same QoS and retain flag and a payload no larger than
/// the bound the policy gave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) topic: &'a str,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) payload_size: u32,
}

#[derive(Debug, Clone)]
struct Cached<D> {
    qos: u8,
    retain: bool,
    max_payload: u32,
    decision: D,
}

/// Reusable decisions of one kind, by topic or filter.
#[derive(Debug)]
pub(crate) struct Entries<D>(HashMap<Box<str>, Cached<D>>);

impl<D> Default for Entries<D> {
    fn default() -> Self {
        Entries(HashMap::default())
    }
}

impl<D: Clone> Entries<D> {
    /// The decision kept for `key`, if it applies.
    pub(crate) fn lookup(&self, key: &Key<'_>) -> Option<D> {
        let c = self.0.get(key.topic)?;
        (c.qos == key.qos && c.retain == key.retain && key.payload_size <= c.max_payload).then(|| c.decision.clone())
    }

    /// Keeps `decision` for `key`'s topic, QoS and retain flag, up to `max_payload` bytes.
    pub(crate) fn remember(&mut self, key: &Key<'_>, max_payload: u32, decision: D) {
        if self.0.len() >= MAX_CACHED_PER_SESSION {
            self.0.clear();
        }
        let Key { topic, qos, retain, .. } = *key;
        self.0.insert(topic.into(), Cached { qos, retain, max_payload, decision });
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Reusable decisions of one session.
#[derive(Debug, Default)]
pub(crate) struct DecisionCache {
    pub(crate) publish: Entries<PublishDecision>,
    pub(crate) subscribe: Entries<SubscribeDecision>,
    pub(crate) delivery: Entries<DeliveryDecision>,
}

impl DecisionCache {
    /// Forgets every decision (new rules, or caching turned off).
    pub(crate) fn clear(&mut self) {
        self.publish.0.clear();
        self.subscribe.0.clear();
        self.delivery.0.clear();
    }

    /// Number of decisions kept.
    pub(crate) fn len(&self) -> usize {
        self.publish.len() + self.subscribe.len() + self.delivery.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, payload_size: u32) -> Key<'_> {
        Key { topic, qos: 1, retain: false, payload_size }
    }

    #[test]
    fn a_decision_applies_to_the_same_flags_within_the_bound() {
        let mut e = Entries::default();
        e.remember(&key("a/b", 10), 100, PublishDecision::Allow);
        assert_eq!(e.lookup(&key("a/b", 100)), Some(PublishDecision::Allow));
        assert_eq!(e.lookup(&key("a/b", 101)), None, "over the bound");
        assert_eq!(e.lookup(&Key { qos: 0, ..key("a/b", 1) }), None, "another QoS");
        assert_eq!(e.lookup(&Key { retain: true, ..key("a/b", 1) }), None, "another retain flag");
        assert_eq!(e.lookup(&key("a/c", 1)), None);
    }

    #[test]
    fn a_full_map_is_emptied() {
        let mut e = Entries::default();
        let topics: Vec<String> = (0..=MAX_CACHED_PER_SESSION).map(|i| format!("t/{i}")).collect();
        for t in &topics {
            e.remember(&key(t, 0), 0, PublishDecision::Allow);
        }
        assert_eq!(e.len(), 1, "the 257th decision found the map full");
        assert!(e.lookup(&key(&topics[MAX_CACHED_PER_SESSION], 0)).is_some());
    }
}
