//! Differential fuzzing of `mqtt_policy_guest::topic` against a plain reference written from
//! MQTT 5.0 §4.7 and §4.8.2 in this file:
//!
//! - `validate_topic_name` / `validate_topic_filter` return exactly the reference's verdict
//!   (including which `TopicError`), on structured strings and on raw ones;
//! - `matches` agrees with a recursive reference matcher (`+` one level, `#` this level and
//!   everything below, wildcards in the first level never reach topics starting with `$`,
//!   `$share/{group}/` stripped);
//! - `filter_within` and `filters_overlap` agree with their definitions ("every topic the
//!   inner filter matches, the outer matches"; "some topic matches both") checked on every
//!   topic of a finite universe that provably contains a witness when one exists; and on the
//!   given topics `within(a, b) && matches(a, t) => matches(b, t)`,
//!   `matches(a, t) && matches(b, t) => overlap(a, b)`, overlap is symmetric, a valid filter
//!   is within itself;
//! - a `TopicTrie` (with a `${v}` placeholder) reports exactly the inserted filters that
//!   match, after substituting the placeholder's value, and `any_match` agrees.
//!
//! The reference below is deliberately a second, independent implementation: written from the
//! specification, simple rather than fast, and never calling or copying `mqtt_policy_guest::topic`.
//! Differential fuzzing finds bugs only where two implementations disagree, so deriving it from
//! the SDK would compare the SDK with itself. It is the oracle of this target and nothing else:
//! every program of the workspace (policies, the host, `mqtt-loadgen`) uses the SDK's module.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mqtt_policy_guest::topic::{
    TopicError, TopicTrie, filter_within, filters_overlap, matches, validate_topic_filter, validate_topic_name,
};

/// One level of a generated filter or topic: a small alphabet, so that levels collide.
#[derive(Arbitrary, Debug)]
enum Level {
    A,
    B,
    Empty,
    Sys,
    Dollar,
    Share,
    Plus,
    Hash,
    Var,
    AffixedVar,
    Other(String),
}

impl Level {
    fn text(&self) -> &str {
        match self {
            Level::A => "a",
            Level::B => "b",
            Level::Empty => "",
            Level::Sys => "$SYS",
            Level::Dollar => "$",
            Level::Share => "$share",
            Level::Plus => "+",
            Level::Hash => "#",
            Level::Var => "${v}",
            Level::AffixedVar => "p-${v}",
            Level::Other(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    filters: Vec<Vec<Level>>,
    topics: Vec<Vec<Level>>,
    /// Value of the placeholder `v` for the trie.
    value: Level,
    /// Arbitrary text for the validators.
    raw: Vec<String>,
}

fn join(levels: &[Level], max: usize) -> String {
    levels.iter().take(max).map(Level::text).collect::<Vec<_>>().join("/")
}

// ---- The reference (independent of the SDK on purpose, see the top of the file) -----------

fn ref_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        Err(TopicError::Empty)
    } else if s.len() > 65_535 {
        Err(TopicError::TooLong)
    } else if s.chars().any(|c| c == '\0') {
        Err(TopicError::NullCharacter)
    } else {
        Ok(())
    }
}

fn ref_name(s: &str) -> Result<(), TopicError> {
    ref_common(s)?;
    if s.chars().any(|c| c == '+' || c == '#') { Err(TopicError::WildcardInTopicName) } else { Ok(()) }
}

/// `$share/{group}/{filter}` → `(group, filter)` when it has that shape.
fn ref_shared(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("$share/")?;
    let slash = rest.find('/')?;
    Some((&rest[..slash], &rest[slash + 1..]))
}

fn ref_filter(s: &str) -> Result<(), TopicError> {
    ref_common(s)?;
    let inner = if s.starts_with("$share/") {
        match ref_shared(s) {
            Some((group, inner))
                if !group.is_empty() && !group.contains('+') && !group.contains('#') && !inner.is_empty() =>
            {
                inner
            }
            _ => return Err(TopicError::InvalidSharedSubscription),
        }
    } else {
        s
    };
    let levels: Vec<&str> = inner.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        if level.contains('#') && !(*level == "#" && last) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && *level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// The filter to match with: `$share/g/` removed.
fn ref_strip(filter: &str) -> &str {
    ref_shared(filter).map_or(filter, |(_, f)| f)
}

fn ref_levels(f: &[&str], t: &[&str]) -> bool {
    match (f.first(), t.first()) {
        (Some(&"#"), _) => true,
        (None, None) => true,
        (Some(&fl), Some(&tl)) if fl == "+" || fl == tl => ref_levels(&f[1..], &t[1..]),
        _ => false,
    }
}

fn ref_matches(filter: &str, topic: &str) -> bool {
    if ref_filter(filter).is_err() || ref_name(topic).is_err() {
        return false;
    }
    let f: Vec<&str> = ref_strip(filter).split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    ref_levels(&f, &t)
}

/// Every topic built from the literal levels of `a` and `b`, plus one fresh level (and a fresh
/// `$` level first), up to one level deeper than the deeper filter. Any topic can be mapped
/// into this set without changing whether `a` or `b` matches it (replace levels that equal no
/// literal with the fresh one, keeping a leading `$`; cut what lies below both filters' reach
/// to one level), so a witness for "not within" or "overlap" exists iff one exists here.
/// `None` when the set would be too large to be worth it.
fn universe(a: &str, b: &str) -> Option<Vec<String>> {
    let (fa, fb) = (ref_strip(a).split('/'), ref_strip(b).split('/'));
    let depth = fa.clone().count().max(fb.clone().count()) + 1;
    let mut literals: Vec<String> = fa.chain(fb).filter(|l| *l != "+" && *l != "#").map(str::to_owned).collect();
    literals.sort();
    literals.dedup();
    let mut fresh = "z".to_owned();
    while literals.contains(&fresh) || literals.contains(&format!("${fresh}")) {
        fresh.push('z');
    }
    let mut first = literals.clone();
    first.push(fresh.clone());
    first.push(format!("${fresh}"));
    literals.push(fresh);
    let size: usize = (0..depth).map(|d| first.len() * literals.len().pow(d as u32)).sum();
    if size > 1_000 {
        return None;
    }
    let mut all = first;
    let mut start = 0;
    for _ in 1..depth {
        let end = all.len();
        for i in start..end {
            for l in &literals {
                all.push(format!("{}/{l}", all[i]));
            }
        }
        start = end;
    }
    Some(all)
}

// ---- The checks ---------------------------------------------------------------------------

fn check_validators(s: &str) {
    assert_eq!(validate_topic_name(s), ref_name(s), "validate_topic_name({s:?})");
    assert_eq!(validate_topic_filter(s), ref_filter(s), "validate_topic_filter({s:?})");
}

fn check_pair(a: &str, b: &str, topics: &[String], exhaustive: bool) {
    let within = filter_within(a, b);
    let overlap = filters_overlap(a, b);
    assert_eq!(overlap, filters_overlap(b, a), "overlap({a:?}, {b:?}) is not symmetric");
    let valid = ref_filter(a).is_ok() && ref_filter(b).is_ok();
    if !valid {
        assert!(!within && !overlap, "within/overlap must be false for invalid {a:?}, {b:?}");
        return;
    }
    assert!(filter_within(a, a), "{a:?} is not within itself");
    assert!(!within || overlap, "{a:?} within {b:?} but they do not overlap");
    for t in topics {
        let (ma, mb) = (ref_matches(a, t), ref_matches(b, t));
        assert!(!(within && ma) || mb, "{a:?} within {b:?}, {a:?} matches {t:?} but {b:?} does not");
        assert!(!(ma && mb) || overlap, "{a:?} and {b:?} both match {t:?} but do not overlap");
    }
    if exhaustive && let Some(universe) = universe(a, b) {
        let mut ref_within = true;
        let mut ref_overlap = false;
        for t in &universe {
            let (ma, mb) = (ref_matches(a, t), ref_matches(b, t));
            assert_eq!(matches(a, t), ma, "matches({a:?}, {t:?})");
            ref_within &= !ma || mb;
            ref_overlap |= ma && mb;
        }
        assert_eq!(within, ref_within, "filter_within({a:?}, {b:?})");
        assert_eq!(overlap, ref_overlap, "filters_overlap({a:?}, {b:?})");
    }
}

fn check_trie(filters: &[String], topics: &[String], value: &str) {
    let mut trie = TopicTrie::with_placeholders(&["v"]);
    let mut inserted = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let result = trie.insert(f, i);
        if result.is_ok() {
            assert!(ref_filter(f).is_ok() && !f.starts_with("$share/"), "trie accepted {f:?}");
            inserted.push((i, f));
        } else if !f.contains("${") {
            assert!(ref_filter(f).is_err() || f.starts_with("$share/"), "trie refused {f:?}: {result:?}");
        }
    }
    assert_eq!(trie.len(), inserted.len());
    let safe = !value.is_empty() && !value.contains(['/', '+', '#', '\0']);
    let vars = [("v", value)];
    for t in topics {
        let mut found = Vec::new();
        trie.for_each_match(t, &vars, |i| found.push(*i));
        found.sort_unstable();
        let expected: Vec<usize> = inserted
            .iter()
            .filter(|(_, f)| {
                if f.contains("${") { safe && ref_matches(&f.replace("${v}", value), t) } else { ref_matches(f, t) }
            })
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(found, expected, "trie lookup of {t:?} with v = {value:?} in {inserted:?}");
        assert_eq!(trie.any_match(t, &vars, |_| true), !expected.is_empty(), "any_match({t:?})");
    }
}

fuzz_target!(|input: Input| {
    for s in input.raw.iter().take(4) {
        check_validators(s);
    }
    let filters: Vec<String> = input.filters.iter().take(6).map(|f| join(f, 5)).collect();
    let topics: Vec<String> = input.topics.iter().take(6).map(|t| join(t, 6)).collect();
    for s in filters.iter().chain(&topics) {
        check_validators(s);
    }
    for f in &filters {
        for t in &topics {
            assert_eq!(matches(f, t), ref_matches(f, t), "matches({f:?}, {t:?})");
        }
    }
    for (i, a) in filters.iter().enumerate() {
        for (j, b) in filters.iter().enumerate() {
            check_pair(a, b, &topics, i < 4 && j < 4);
        }
    }
    check_trie(&filters, &topics, input.value.text());
});
