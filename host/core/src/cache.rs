//! Decisions a policy allowed the host to reuse (see `cache-decision` in the WIT), per
//! session and kind of check, within a byte budget shared by all sessions of a policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustc_hash::FxHashMap as HashMap;

use crate::bytes::same_bytes;
use crate::types::{DeliveryDecision, PublishDecision, SubscribeDecision};

/// Most decisions kept per session and kind of check; a full map is emptied, so a client
/// cycling through endless topics costs memory only up to this bound.
pub(crate) const MAX_CACHED_PER_SESSION: usize = 256;

/// Longest topic (or filter) whose decision is kept: clients choose topics of up to 64 KiB,
/// and a cache of those would hold megabytes per session outside any policy's memory bound.
pub(crate) const MAX_CACHED_TOPIC: usize = 512;

/// Most bytes of cached decisions one policy holds over all its sessions (connected and
/// offline); past it, decisions are answered but not kept until sessions free some.
pub(crate) const MAX_CACHE_BYTES: usize = 16 << 20;

/// What one kept decision costs beyond its topic's bytes (map slot, key box, flags, decision).
const ENTRY_OVERHEAD: usize = 96;

/// What a check is about, as far as reusing its decision goes: a decision applies again to
/// the same topic (or filter) with the same QoS and retain flag and a payload no larger than
/// the bound the policy gave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    /// As bytes: a broker's hot path looks a decision up before (and instead of) checking
    /// that its topic is UTF-8; only decisions on valid topics are ever kept.
    pub(crate) topic: &'a [u8],
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

/// Decisions kept in a session's short list before its map: most devices use a few topics,
/// and for those comparing lengths and bytes costs less than hashing the topic and probing a
/// map (about 60 instructions per cached check inside Mosquitto, BENCHMARKS.md).
const FEW: usize = 4;

/// The decisions of one kind in one session, and the bytes they cost. A topic is in `few` or
/// in `map`, never both: the first [`FEW`] topics go to `few`, later ones to `map`.
#[derive(Debug)]
pub(crate) struct Entries<D> {
    few: Vec<(Box<[u8]>, Cached<D>)>,
    map: HashMap<Box<[u8]>, Cached<D>>,
    bytes: usize,
}

impl<D> Default for Entries<D> {
    fn default() -> Self {
        Entries { few: Vec::new(), map: HashMap::default(), bytes: 0 }
    }
}

impl<D: Clone> Entries<D> {
    /// The decision kept for `key`, if it applies.
    #[inline]
    pub(crate) fn lookup(&self, key: &Key<'_>) -> Option<&D> {
        let c = match self.few.iter().find(|(t, _)| same_bytes(t, key.topic)) {
            Some((_, c)) => c,
            None if self.map.is_empty() => return None,
            None => self.map.get(key.topic)?,
        };
        (c.qos == key.qos && c.retain == key.retain && key.payload_size <= c.max_payload).then_some(&c.decision)
    }

    /// Keeps `decision` for `key`; returns the bytes the entries cost before and after.
    fn remember(&mut self, key: &Key<'_>, max_payload: u32, decision: D) -> (usize, usize) {
        let before = self.bytes;
        if self.len() >= MAX_CACHED_PER_SESSION {
            self.clear();
        }
        let Key { topic, qos, retain, .. } = *key;
        let cached = Cached { qos, retain, max_payload, decision };
        if let Some((_, c)) = self.few.iter_mut().find(|(t, _)| same_bytes(t, topic)) {
            *c = cached;
        } else if let Some(c) = self.map.get_mut(topic) {
            *c = cached;
        } else {
            if self.few.len() < FEW {
                self.few.push((topic.into(), cached));
            } else {
                self.map.insert(topic.into(), cached);
            }
            self.bytes += cost(topic);
        }
        (before, self.bytes)
    }

    fn clear(&mut self) {
        self.few.clear();
        self.map.clear();
        self.bytes = 0;
    }

    fn len(&self) -> usize {
        self.few.len() + self.map.len()
    }
}

fn cost(topic: &[u8]) -> usize {
    topic.len() + ENTRY_OVERHEAD
}

/// The bytes all caches of one policy hold, shared by them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pool(Arc<AtomicUsize>);

impl Pool {
    /// Bytes held now.
    pub(crate) fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The reusable decisions of one session. Its bytes count in its policy's [`Pool`] until it
/// is cleared or dropped.
#[derive(Debug)]
pub(crate) struct DecisionCache {
    pub(crate) publish: Entries<PublishDecision>,
    pub(crate) subscribe: Entries<SubscribeDecision>,
    pub(crate) delivery: Entries<DeliveryDecision>,
    pool: Pool,
}

impl DecisionCache {
    /// An empty cache counting in `pool`.
    pub(crate) fn new(pool: &Pool) -> DecisionCache {
        DecisionCache {
            publish: Entries::default(),
            subscribe: Entries::default(),
            delivery: Entries::default(),
            pool: pool.clone(),
        }
    }

    /// Keeps `decision` in the entries `pick` chooses, unless its topic is too long or the
    /// policy's pool is full (the decision is then simply not reused).
    pub(crate) fn remember<D: Clone>(
        &mut self,
        pick: fn(&mut DecisionCache) -> &mut Entries<D>,
        key: &Key<'_>,
        max_payload: u32,
        decision: D,
    ) {
        if key.topic.len() > MAX_CACHED_TOPIC || self.pool.bytes() + cost(key.topic) > MAX_CACHE_BYTES {
            return;
        }
        let (before, after) = pick(self).remember(key, max_payload, decision);
        if after >= before {
            self.pool.0.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.pool.0.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Forgets every decision.
    pub(crate) fn clear(&mut self) {
        self.pool.0.fetch_sub(self.bytes(), Ordering::Relaxed);
        self.publish.clear();
        self.subscribe.clear();
        self.delivery.clear();
    }

    /// Forgets the decisions of a client's own actions (publish, subscribe), keeping those on
    /// deliveries: an offline session is only asked about deliveries.
    pub(crate) fn clear_actions(&mut self) {
        self.pool.0.fetch_sub(self.publish.bytes + self.subscribe.bytes, Ordering::Relaxed);
        self.publish.clear();
        self.subscribe.clear();
    }

    fn bytes(&self) -> usize {
        self.publish.bytes + self.subscribe.bytes + self.delivery.bytes
    }

    /// Decisions kept.
    pub(crate) fn len(&self) -> usize {
        self.publish.len() + self.subscribe.len() + self.delivery.len()
    }
}

impl Drop for DecisionCache {
    fn drop(&mut self) {
        self.pool.0.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, payload_size: u32) -> Key<'_> {
        Key { topic: topic.as_bytes(), qos: 1, retain: false, payload_size }
    }

    fn publish(c: &mut DecisionCache) -> &mut Entries<PublishDecision> {
        &mut c.publish
    }

    #[test]
    fn a_decision_applies_to_the_same_flags_within_the_bound() {
        let mut e = Entries::default();
        e.remember(&key("a/b", 10), 100, PublishDecision::Allow);
        assert_eq!(e.lookup(&key("a/b", 100)), Some(&PublishDecision::Allow));
        assert_eq!(e.lookup(&key("a/b", 101)), None, "over the bound");
        assert_eq!(e.lookup(&Key { qos: 0, ..key("a/b", 1) }), None, "another QoS");
        assert_eq!(e.lookup(&Key { retain: true, ..key("a/b", 1) }), None, "another retain flag");
        assert_eq!(e.lookup(&key("a/c", 1)), None);
    }

    #[test]
    fn decisions_past_the_short_list_are_found_in_the_map_and_each_topic_is_kept_once() {
        let mut e = Entries::default();
        let topics: Vec<String> = (0..FEW * 3).map(|i| format!("devices/d/evt/{i}")).collect();
        for (i, t) in topics.iter().enumerate() {
            e.remember(&key(t, 0), i as u32, PublishDecision::Allow);
        }
        assert_eq!((e.few.len(), e.map.len()), (FEW, FEW * 2));
        for (i, t) in topics.iter().enumerate() {
            assert_eq!(e.lookup(&key(t, i as u32)), Some(&PublishDecision::Allow), "{t}");
            assert_eq!(e.lookup(&key(t, i as u32 + 1)), None, "{t}: over its own bound");
        }
        // A decision again for a topic in either place replaces it, costing nothing more.
        let bytes = e.bytes;
        e.remember(&key(&topics[1], 0), 0, PublishDecision::Defer);
        e.remember(&key(&topics[FEW + 1], 0), 0, PublishDecision::Defer);
        assert_eq!((e.len(), e.bytes), (FEW * 3, bytes));
        assert_eq!(e.lookup(&key(&topics[1], 0)), Some(&PublishDecision::Defer));
        assert_eq!(e.lookup(&key(&topics[FEW + 1], 0)), Some(&PublishDecision::Defer));
        assert_eq!(e.lookup(&key("devices/d/evt/", 0)), None, "a prefix of kept topics");
        e.clear();
        assert_eq!((e.len(), e.bytes, e.lookup(&key(&topics[0], 0))), (0, 0, None));
    }

    #[test]
    fn a_full_map_is_emptied() {
        let mut e = Entries::default();
        let topics: Vec<String> = (0..=MAX_CACHED_PER_SESSION).map(|i| format!("t/{i}")).collect();
        for t in &topics {
            e.remember(&key(t, 0), 0, PublishDecision::Allow);
        }
        assert_eq!(e.len(), 1, "the 257th decision found the map full");
        assert_eq!(e.bytes, cost(topics[MAX_CACHED_PER_SESSION].as_bytes()));
        assert!(e.lookup(&key(&topics[MAX_CACHED_PER_SESSION], 0)).is_some());
    }

    #[test]
    fn long_topics_are_answered_but_not_kept() {
        let pool = Pool::default();
        let mut c = DecisionCache::new(&pool);
        let long = "t/".repeat(MAX_CACHED_TOPIC);
        c.remember(publish, &key(&long, 0), 0, PublishDecision::Allow);
        assert_eq!((c.len(), pool.bytes()), (0, 0));
    }

    #[test]
    fn the_pool_counts_every_session_and_is_freed_when_they_go() {
        let pool = Pool::default();
        let topic = "t".repeat(MAX_CACHED_TOPIC);
        let per_session = MAX_CACHED_PER_SESSION - 1;
        let mut sessions = Vec::new();
        // Fill the pool with sessions of full caches.
        while pool.bytes() + cost(topic.as_bytes()) <= MAX_CACHE_BYTES {
            let mut c = DecisionCache::new(&pool);
            for i in 0..per_session {
                let t = format!("{}{i:03}", &topic[..MAX_CACHED_TOPIC - 3]);
                c.remember(publish, &key(&t, 0), 0, PublishDecision::Allow);
            }
            sessions.push(c);
        }
        assert!(pool.bytes() <= MAX_CACHE_BYTES, "{}", pool.bytes());
        let mut late = DecisionCache::new(&pool);
        late.remember(publish, &key(&topic, 0), 0, PublishDecision::Allow);
        assert_eq!(late.len(), 0, "a full pool keeps nothing more");
        sessions.truncate(1);
        sessions[0].clear_actions();
        assert_eq!(pool.bytes(), 0, "dropped and cleared sessions give their bytes back");
        late.remember(publish, &key(&topic, 0), 0, PublishDecision::Allow);
        assert_eq!((late.len(), pool.bytes()), (1, cost(topic.as_bytes())));
    }
}
