//! Hash maps for policies.
//!
//! std's default hasher seeds itself from randomness, which on wasm32-wasip2 imports
//! `wasi:random`; the host provides no randomness, so such a policy would be refused
//! at load. These maps hash deterministically instead, with the workspace's `rustc-hash`
//! (FxHash). Their keys come from rules and the host, not from clients, so flooding attacks
//! on the hash do not apply.

pub use rustc_hash::FxHasher;

/// A `HashMap` with [`FxHasher`]: create it with `HashMap::default()`.
pub type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;
/// A `HashSet` with [`FxHasher`]: create it with `HashSet::default()`.
pub type HashSet<K> = rustc_hash::FxHashSet<K>;

#[cfg(test)]
mod tests {
    use core::hash::Hasher;

    use super::*;

    #[test]
    fn maps_work_and_hash_deterministically() {
        let mut m: HashMap<String, u32> = HashMap::default();
        for i in 0..1000 {
            m.insert(format!("device-{i}"), i);
        }
        assert_eq!(m.get("device-517"), Some(&517));
        let h = |s: &str| {
            let mut h = FxHasher::default();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_eq!(h("abc"), h("abc"));
        assert_ne!(h("abc"), h("abd"));
        assert_ne!(h("12345678a"), h("12345678b"), "the tail past 8 bytes counts");
    }
}
