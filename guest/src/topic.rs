//! MQTT topic names and filters, per MQTT 3.1.1 §4.7 and MQTT 5.0 §4.7 and §4.8.2.

use std::fmt;

use crate::collections::HashMap;
use crate::template::{Template, TemplateError, Vars};

/// Longest topic the protocol can carry (a UTF-8 string with a 16-bit length).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Zero length.
    Empty,
    /// Over 65535 bytes of UTF-8.
    TooLong,
    /// Contains U+0000.
    NullCharacter,
    /// A topic name (PUBLISH) contains `+` or `#`.
    WildcardInTopicName,
    /// `#` is not alone in the last level (`a/#/b`, `a#`).
    MisplacedMultiLevelWildcard,
    /// `+` is not alone in its level (`a+/b`).
    MisplacedSingleLevelWildcard,
    /// `$share/` without a valid group or filter.
    InvalidSharedSubscription,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic is empty",
            TopicError::TooLong => "topic is longer than 65535 bytes",
            TopicError::NullCharacter => "topic contains the null character U+0000",
            TopicError::WildcardInTopicName => "topic name contains a wildcard ('+' or '#')",
            TopicError::MisplacedMultiLevelWildcard => "'#' must be the last level, on its own",
            TopicError::MisplacedSingleLevelWildcard => "'+' must be a whole level, on its own",
            TopicError::InvalidSharedSubscription => {
                "a shared subscription must be $share/{group}/{filter}, the group non-empty without '/', '+' or '#'"
            }
        })
    }
}

impl std::error::Error for TopicError {}

fn check_length(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

fn check_common(s: &str) -> Result<(), TopicError> {
    check_length(s)?;
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Validates a PUBLISH topic name: non-empty, at most 65535 bytes, no U+0000, no wildcards.
/// Empty levels (`a//b`, `/a`, `a/`) and `$`-topics are valid.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_length(name)?;
    // Every check runs this (twice for a publish): one pass over the bytes, not one `char`
    // search per character. NUL, `+` and `#` are ASCII, which never occurs inside a longer
    // UTF-8 sequence, so a byte is enough. A NUL anywhere wins over a wildcard, as before.
    let mut wildcard = false;
    for &b in name.as_bytes() {
        match b {
            0 => return Err(TopicError::NullCharacter),
            b'+' | b'#' => wildcard = true,
            _ => {}
        }
    }
    if wildcard {
        return Err(TopicError::WildcardInTopicName);
    }
    Ok(())
}

/// The first level of `rest` and what follows its `/`, if there is one. Topic levels are
/// short: a plain byte scan beats `split_once`'s general searcher, in wasm above all.
#[inline]
fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.as_bytes().iter().position(|&b| b == b'/') {
        // `/` is ASCII, so both sides are on character boundaries.
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// Validates a SUBSCRIBE topic filter, including `$share/{group}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let inner = if filter.starts_with("$share/") {
        split_shared(filter).ok_or(TopicError::InvalidSharedSubscription)?.1
    } else {
        filter
    };
    let mut levels = inner.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits a well-formed `$share/{group}/{filter}` into group and filter (the filter itself
/// is not validated here). `None` for anything else.
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, inner) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return None;
    }
    Some((group, inner))
}

/// Whether topic name `topic` matches `filter`. Invalid names or filters never match.
/// Wildcards in the first level do not match `$`-topics; `$share/g/f` matches as `f`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if validate_topic_filter(filter).is_err() || validate_topic_name(topic).is_err() {
        return false;
    }
    let filter = split_shared(filter).map_or(filter, |(_, f)| f);
    let dollar = topic.starts_with('$');
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    let mut first = true;
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return !(first && dollar),
            (Some("+"), Some(_)) if first && dollar => return false,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether every topic `inner` can match is also matched by `outer` (both valid filters,
/// `$share/` prefixes ignored). Used to grant a subscription inside an allowed tree.
pub fn filter_within(inner: &str, outer: &str) -> bool {
    if validate_topic_filter(inner).is_err() || validate_topic_filter(outer).is_err() {
        return false;
    }
    let inner = split_shared(inner).map_or(inner, |(_, f)| f);
    let outer = split_shared(outer).map_or(outer, |(_, f)| f);
    let mut i = inner.split('/');
    let mut o = outer.split('/');
    let mut first = true;
    loop {
        match (o.next(), i.next()) {
            // A leading wildcard in `outer` does not reach `$`-topics, which `inner` may name.
            (Some("#"), Some(il)) if first && il.starts_with('$') => return false,
            (Some("#"), _) => return true,
            (Some("+"), Some(il)) if first && il.starts_with('$') => return false,
            // A leading `#` matches what `+/#` does (one level or more); deeper, `#` also matches its parent.
            (Some("+"), Some("#")) => return first && o.next() == Some("#"),
            (Some("+"), Some(il)) if il != "#" => {}
            (Some(ol), Some(il)) if ol == il && ol != "+" && ol != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether some topic name matches both filters (both valid, `$share/` prefixes ignored).
/// A deny rule overlapping a subscription means the subscription could receive denied topics.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    if validate_topic_filter(a).is_err() || validate_topic_filter(b).is_err() {
        return false;
    }
    let a = split_shared(a).map_or(a, |(_, f)| f);
    let b = split_shared(b).map_or(b, |(_, f)| f);
    let mut x = a.split('/');
    let mut y = b.split('/');
    let mut first = true;
    // Whether the levels matched so far can only be the single empty level: `/#` and `+`
    // would then share only the empty topic, which is not a valid name.
    let mut only_empty_root = false;
    loop {
        match (x.next(), y.next()) {
            // A leading wildcard cannot reach the `$`-topics a literal first level may name.
            (Some("#" | "+"), Some(l)) | (Some(l), Some("#" | "+")) if first && l.starts_with('$') => return false,
            (Some("#"), None) | (None, Some("#")) => return !only_empty_root,
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(m)) if l == m => {}
            (None, None) => return true,
            _ => return false,
        }
        only_empty_root = first && (a.starts_with('/') || b.starts_with('/'));
        first = false;
    }
}

/// A set of topic filters, each with a value, looked up by topic name at a cost that
/// depends on the topic's depth and the number of matches, not the number of filters.
/// Filters may hold whole-level placeholders (`devices/${device.id}/#`, `d-${device.id}`)
/// resolved per lookup.
#[derive(Debug, Clone)]
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
    placeholders: Vec<String>,
}

#[derive(Debug, Clone)]
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    plus: Option<Box<Node<T>>>,
    templates: Vec<(Template, Node<T>)>,
    /// Values of filters ending here.
    here: Vec<T>,
    /// Values of filters ending in `#` here (they also match this level itself).
    hash: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { literal: HashMap::default(), plus: None, templates: Vec::new(), here: Vec::new(), hash: Vec::new() }
    }
}

/// Why a filter could not be added to a [`TopicTrie`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrieError {
    /// The filter is not a valid topic filter.
    Topic(TopicError),
    /// A placeholder is malformed or unknown.
    Template(TemplateError),
}

impl fmt::Display for TrieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrieError::Topic(e) => e.fmt(f),
            TrieError::Template(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TrieError {}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TopicTrie<T> {
    /// An empty trie whose filters may not contain placeholders.
    pub fn new() -> Self {
        TopicTrie { root: Node::default(), len: 0, placeholders: Vec::new() }
    }

    /// An empty trie whose filters may use the placeholders `names`.
    pub fn with_placeholders(names: &[&str]) -> Self {
        TopicTrie { placeholders: names.iter().map(|n| (*n).to_owned()).collect(), ..Self::new() }
    }

    /// Number of filters inserted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no filter was inserted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `filter` with `value`. `$share/` prefixes are not allowed here: rules name topics.
    pub fn insert(&mut self, filter: &str, value: T) -> Result<(), TrieError> {
        let allowed: Vec<&str> = self.placeholders.iter().map(String::as_str).collect();
        // Placeholders first, so `${a+b}` is reported as a bad name rather than a misplaced `+`.
        Template::parse(filter, &allowed).map_err(TrieError::Template)?;
        // Then the shape, with placeholders standing in as plain text.
        validate_topic_filter(filter).map_err(TrieError::Topic)?;
        if filter.starts_with("$share/") {
            return Err(TrieError::Topic(TopicError::InvalidSharedSubscription));
        }
        let mut node = &mut self.root;
        let mut offset = 0;
        for level in filter.split('/') {
            let at = offset;
            offset += level.len() + 1;
            node = match level {
                "#" => {
                    node.hash.push(value);
                    self.len += 1;
                    return Ok(());
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                l if l.contains("${") => {
                    // Cannot fail after the whole filter parsed; mapped anyway rather than unwrapped.
                    let t = Template::parse(l, &allowed).map_err(|mut e| {
                        e.position += at;
                        TrieError::Template(e)
                    })?;
                    match node.templates.iter().position(|(existing, _)| *existing == t) {
                        Some(i) => &mut node.templates[i].1,
                        None => {
                            node.templates.push((t, Node::default()));
                            &mut node.templates.last_mut().expect("just pushed").1
                        }
                    }
                }
                l => node.literal.entry(l.into()).or_default(),
            };
        }
        node.here.push(value);
        self.len += 1;
        Ok(())
    }

    /// Calls `f` with the value of every filter matching topic name `topic`. Invalid
    /// topic names match nothing. Does not allocate.
    pub fn for_each_match(&self, topic: &str, vars: &impl Vars, mut f: impl FnMut(&T)) {
        if validate_topic_name(topic).is_err() {
            return;
        }
        walk(&self.root, Some(topic), true, topic.starts_with('$'), vars, &mut |v| {
            f(v);
            true
        });
    }

    /// Whether any matching filter's value satisfies `pred`; stops at the first.
    pub fn any_match(&self, topic: &str, vars: &impl Vars, mut pred: impl FnMut(&T) -> bool) -> bool {
        if validate_topic_name(topic).is_err() {
            return false;
        }
        let mut found = false;
        walk(&self.root, Some(topic), true, topic.starts_with('$'), vars, &mut |v| {
            found = pred(v);
            !found
        });
        found
    }
}

/// Visits matches; `f` returns false to stop. Returns false once stopped.
fn walk<T>(
    node: &Node<T>,
    rest: Option<&str>,
    first: bool,
    dollar: bool,
    vars: &impl Vars,
    f: &mut impl FnMut(&T) -> bool,
) -> bool {
    if !(first && dollar) {
        for v in &node.hash {
            if !f(v) {
                return false;
            }
        }
    }
    let Some(rest) = rest else {
        return node.here.iter().all(f);
    };
    let (level, next) = split_level(rest);
    if let Some(child) = node.literal.get(level)
        && !walk(child, next, false, dollar, vars, f)
    {
        return false;
    }
    if let Some(child) = &node.plus
        && !(first && dollar)
        && !walk(child, next, false, dollar, vars, f)
    {
        return false;
    }
    for (t, child) in &node.templates {
        if t.matches_level(level, vars) && !walk(child, next, false, dollar, vars, f) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_split_at_the_first_slash_only() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("/a"), ("", Some("a")));
        assert_eq!(split_level("a/"), ("a", Some("")));
        assert_eq!(split_level("ü"), ("ü", None));
        assert_eq!(split_level(""), ("", None));
    }

    #[test]
    fn topic_names_per_spec() {
        for ok in ["a", "/", "a//b", "/finance", "a/", "$SYS/broker", "sport/tennis/player1", "ü/x"] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInTopicName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInTopicName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        // A NUL is reported wherever it is, also after a wildcard (the byte scan keeps going).
        assert_eq!(validate_topic_name("a/+/\0"), Err(TopicError::NullCharacter));
        // Multi-byte characters contain no ASCII bytes: none is taken for a wildcard or NUL.
        assert_eq!(validate_topic_name("é/€/𝄞"), Ok(()));
        assert_eq!(validate_topic_name(&"x".repeat(65_535)), Ok(()));
        assert_eq!(validate_topic_name(&"x".repeat(65_536)), Err(TopicError::TooLong));
    }

    #[test]
    fn topic_filters_per_spec() {
        for ok in [
            "#",
            "+",
            "+/+",
            "/+",
            "sport/#",
            "sport/tennis/#",
            "sport/+/player1",
            "+/tennis/#",
            "$SYS/#",
            "a//b",
            "$share/g/a/#",
            "$share",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_topic_filter("sport/tennis#"), Err(TopicError::MisplacedMultiLevelWildcard));
        assert_eq!(validate_topic_filter("sport/tennis/#/ranking"), Err(TopicError::MisplacedMultiLevelWildcard));
        assert_eq!(validate_topic_filter("a/#/b"), Err(TopicError::MisplacedMultiLevelWildcard));
        assert_eq!(validate_topic_filter("sport+"), Err(TopicError::MisplacedSingleLevelWildcard));
        assert_eq!(validate_topic_filter("a/b+/c"), Err(TopicError::MisplacedSingleLevelWildcard));
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        for bad in ["$share/g", "$share/g/", "$share//a", "$share/g+/a", "$share/#/a"] {
            assert_eq!(validate_topic_filter(bad), Err(TopicError::InvalidSharedSubscription), "{bad}");
        }
        assert_eq!(validate_topic_filter("$share/g/a/#/b"), Err(TopicError::MisplacedMultiLevelWildcard));
        assert_eq!(split_shared("$share/consumers/sensors/#"), Some(("consumers", "sensors/#")));
        assert_eq!(split_shared("sensors/#"), None);
    }

    #[test]
    fn matching_per_the_specs_examples() {
        // MQTT 5.0 §4.7.1.2
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "anything/at/all"));
        // §4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // §4.7.2: $-topics
        assert!(!matches("#", "$SYS/broker/clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("a/+", "a/$x"), "only the first level is special");
        // shared subscriptions match as their filter
        assert!(matches("$share/g/sport/#", "sport/tennis"));
        // case and exactness
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("a/b", "a/b/"));
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/#/b", "a/x/b"), "invalid filters never match");
        assert!(!matches("a", ""), "invalid names never match");
    }

    #[test]
    fn filter_within_a_tree() {
        assert!(filter_within("devices/d1/commands/#", "devices/d1/commands/#"));
        assert!(filter_within("devices/d1/commands", "devices/d1/commands/#"));
        assert!(filter_within("devices/d1/commands/+/x", "devices/d1/commands/#"));
        assert!(filter_within("devices/d1/x", "devices/+/x"));
        assert!(filter_within("devices/+/x", "devices/+/x"));
        assert!(!filter_within("devices/#", "devices/+/x"));
        assert!(!filter_within("devices/+/x", "devices/d1/x"));
        assert!(!filter_within("devices/d1/#", "devices/d1/commands/#"));
        assert!(!filter_within("$SYS/x", "#"));
        assert!(!filter_within("$SYS/x", "+/x"));
        assert!(filter_within("$SYS/x", "$SYS/#"));
        assert!(filter_within("a/b", "#"));
        assert!(!filter_within("a/b/c", "a/b"));
        // Found by fuzz/fuzz_targets/topic_validate_match.rs: `+/#` is `#` (its `#` matches the parent).
        assert!(filter_within("#", "+/#"));
        assert!(filter_within("$share/g/#", "+/#"));
        assert!(!filter_within("a/#", "a/+/#"), "`a/#` matches `a`");
        assert!(!filter_within("#", "+/+/#"));
        assert!(!filter_within("#", "+"));
    }

    #[test]
    fn overlapping_filters() {
        assert!(filters_overlap("a/+/c", "a/b/#"));
        assert!(filters_overlap("#", "secret/x"));
        assert!(filters_overlap("a/#", "a"));
        assert!(filters_overlap("+/+", "a/b"));
        assert!(!filters_overlap("a/+", "a/b/c"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("#", "$SYS/x"));
        assert!(filters_overlap("$SYS/#", "$SYS/x"));
        assert!(!filters_overlap("a/#/b", "a"), "invalid filters never overlap");
    }

    #[test]
    fn trie_with_placeholders() {
        let mut trie = TopicTrie::with_placeholders(&["device.id", "device.type"]);
        trie.insert("devices/${device.id}/#", "own").unwrap();
        trie.insert("iot-2/type/${device.type}/id/${device.id}/evt/+/fmt/+", "ibm").unwrap();
        trie.insert("public/#", "public").unwrap();
        trie.insert("#", "all").unwrap();
        let vars = [("device.id", "d1"), ("device.type", "sensor")];
        let found = |topic: &str, vars: &[(&str, &str)]| {
            let mut v = Vec::new();
            trie.for_each_match(topic, &vars, |x| v.push(*x));
            v.sort();
            v
        };
        assert_eq!(found("devices/d1/temp", &vars), ["all", "own"]);
        assert_eq!(found("devices/d1", &vars), ["all", "own"]);
        assert_eq!(found("devices/d2/temp", &vars), ["all"]);
        assert_eq!(found("iot-2/type/sensor/id/d1/evt/temp/fmt/json", &vars), ["all", "ibm"]);
        assert_eq!(found("iot-2/type/other/id/d1/evt/temp/fmt/json", &vars), ["all"]);
        assert_eq!(found("$SYS/x", &vars), Vec::<&str>::new(), "# does not reach $-topics");
        // an unsafe device id matches nothing through the placeholder
        assert_eq!(found("devices/a/temp", &[("device.id", "a/#")]), ["all"]);
        assert_eq!(found("devices/+/temp", &vars), Vec::<&str>::new(), "invalid names match nothing");
        assert!(trie.any_match("public/x", &vars, |v| *v == "public"));
        assert!(!trie.any_match("private/x", &vars, |v| *v == "public"));
        assert_eq!(trie.len(), 4);
    }

    #[test]
    fn trie_insert_errors() {
        let mut trie = TopicTrie::with_placeholders(&["device.id"]);
        assert_eq!(trie.insert("a/#/b", 1), Err(TrieError::Topic(TopicError::MisplacedMultiLevelWildcard)));
        match trie.insert("a/${device.name}/b", 1) {
            Err(TrieError::Template(e)) => {
                assert_eq!(e.position, 2);
                assert!(e.message.contains("unknown placeholder"));
            }
            other => panic!("{other:?}"),
        }
        assert!(TopicTrie::new().insert("a/${device.id}", 1).is_err(), "no placeholders unless declared");
        assert!(trie.insert("$share/g/a", 1).is_err());
        assert!(trie.is_empty());
    }

    #[test]
    fn filter_limits_and_null_character() {
        assert_eq!(validate_topic_filter(&"x".repeat(65_535)), Ok(()));
        assert_eq!(validate_topic_filter(&"x".repeat(65_536)), Err(TopicError::TooLong));
        // The limit counts UTF-8 bytes, not characters: "€" takes three.
        assert_eq!(validate_topic_name(&"€".repeat(21_845)), Ok(()));
        assert_eq!(validate_topic_name(&"€".repeat(21_846)), Err(TopicError::TooLong));
        let long_shared = format!("$share/g/{}", "x".repeat(65_535 - 9));
        assert_eq!(long_shared.len(), 65_535);
        assert_eq!(validate_topic_filter(&long_shared), Ok(()));
        assert_eq!(validate_topic_filter(&format!("{long_shared}x")), Err(TopicError::TooLong));
        assert_eq!(validate_topic_filter("a/\0/#"), Err(TopicError::NullCharacter));
        assert_eq!(validate_topic_filter("\0"), Err(TopicError::NullCharacter));
        assert_eq!(validate_topic_filter("$share/g/a\0"), Err(TopicError::NullCharacter));
        assert!(!matches("#", "a\0b"));
        assert!(!matches(&"+/".repeat(20_000), "a"), "long valid filters just don't match");
        let deep = "/".repeat(65_535);
        assert!(matches("#", &deep));
        assert!(!matches("+", &deep));
    }

    #[test]
    fn shared_subscription_forms() {
        for (filter, group, inner) in [
            ("$share/g/a", "g", "a"),
            ("$share/g/#", "g", "#"),
            ("$share/g/+/x", "g", "+/x"),
            ("$share/g/$SYS/#", "g", "$SYS/#"),
            ("$share/g//", "g", "/"),
            ("$share/consumer-1/a/b/c", "consumer-1", "a/b/c"),
        ] {
            assert_eq!(split_shared(filter), Some((group, inner)), "{filter}");
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter}");
        }
        for bad in ["$share/", "$share//", "$share/g", "$share/g/", "$share/+/a", "$share/a#/b", "$share/g+/a"] {
            assert_eq!(split_shared(bad), None, "{bad}");
            assert_eq!(validate_topic_filter(bad), Err(TopicError::InvalidSharedSubscription), "{bad}");
        }
        assert_eq!(validate_topic_filter("$share/g/a+"), Err(TopicError::MisplacedSingleLevelWildcard));
        // Only the exact, case-sensitive prefix `$share/` is special.
        for plain in ["$share", "$SHARE/g", "$shared/g", "x/$share/g"] {
            assert_eq!(split_shared(plain), None, "{plain}");
            assert_eq!(validate_topic_filter(plain), Ok(()), "{plain}");
        }
        // A shared filter's own filter obeys the `$` rule.
        assert!(!matches("$share/g/#", "$SYS/x"));
        assert!(matches("$share/g/$SYS/#", "$SYS/x"));
        assert!(matches("$share/g/+/x", "a/x"));
        assert!(!matches("$share/g/a", "$share/g/a"), "the name is matched against `a` alone");
        assert!(matches("$share", "$share"));
        assert!(!matches("$share/g/", "g"), "malformed shared filters never match");
        assert!(!matches("$share/g", "$share/g"), "malformed shared filters never match");
    }

    #[test]
    fn topic_semantics_per_mqtt5_4_7_3() {
        assert!(!matches("ACCOUNTS", "Accounts"), "case sensitive");
        assert_eq!(validate_topic_name("Accounts payable"), Ok(()), "spaces are allowed");
        assert!(matches("Accounts payable", "Accounts payable"));
        assert!(!matches("/finance", "finance"), "a leading slash makes a distinct topic");
        assert!(!matches("finance", "/finance"));
        assert_eq!(validate_topic_name("/"), Ok(()), "'/' alone is a valid name");
        assert!(matches("/", "/"));
        assert!(matches("+/+", "/"));
        assert!(!matches("+", "/"));
        assert!(matches("#", "/"));
        assert!(matches("+/#", "/"));
        // §4.7.2: a leading `$` level is only reached by a filter that names it.
        assert!(!matches("+/#", "$SYS"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS", "$SYS"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/+", "$SYS/"));
        assert!(!matches("#", "$"));
        assert!(matches("/#", "/$SYS"), "only a topic that starts with `$` is special");
        assert!(matches("#", "a$/b"));
    }

    /// Counts this thread's allocations, so tests running in parallel do not disturb each other.
    struct CountingAlloc;
    std::thread_local! {
        static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    // SAFETY: delegates to the system allocator; only adds a thread-local counter.
    unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
            unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
        }
    }
    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    fn allocations_in(f: impl FnOnce()) -> usize {
        let before = ALLOCATIONS.with(|c| c.get());
        f();
        ALLOCATIONS.with(|c| c.get()) - before
    }

    #[test]
    fn matching_and_lookups_do_not_allocate() {
        let mut trie = TopicTrie::with_placeholders(&["device.id", "device.type"]);
        for (i, f) in ["devices/${device.id}/#", "t/${device.type}-${device.id}/+", "a/+/c", "#", "$SYS/#"]
            .into_iter()
            .enumerate()
        {
            trie.insert(f, i).unwrap();
        }
        let vars = [("device.id", "d1"), ("device.type", "s")];
        let template = Template::parse("pre-${device.id}", &["device.id"]).unwrap();
        let mut sum = 0;
        let n = allocations_in(|| {
            assert!(matches("sport/+/player1", "sport/tennis/player1"));
            assert!(matches("$share/g/sport/#", "sport/tennis/player1"));
            assert!(!matches("#", "$SYS/x"));
            assert!(template.matches_level("pre-d1", &vars));
            trie.for_each_match("devices/d1/x/y", &vars, |i| sum += i);
            trie.for_each_match("t/s-d1/z", &vars, |i| sum += i);
            trie.for_each_match("$SYS/broker", &vars, |i| sum += i);
            assert!(trie.any_match("a/b/c", &vars, |i| *i == 2));
        });
        assert_eq!(n, 0);
        assert_eq!(sum, (3) + (1 + 3) + 4);
        assert_ne!(allocations_in(|| drop(template.expand(&vars))), 0, "the counter does count");
    }

    #[test]
    fn trie_levels_side_by_side() {
        let mut trie = TopicTrie::with_placeholders(&["device.id"]);
        trie.insert("d/x", "literal").unwrap();
        trie.insert("d/+", "plus").unwrap();
        trie.insert("d/${device.id}", "template").unwrap();
        trie.insert("d/p-${device.id}-s", "affixed").unwrap();
        trie.insert("d/#", "hash").unwrap();
        trie.insert("d/${device.id}", "template again").unwrap();
        trie.insert("d/${device.id}/#", "template tree").unwrap();
        assert_eq!(trie.len(), 7);
        let found = |topic: &str, id: &str| {
            let mut v = Vec::new();
            trie.for_each_match(topic, &[("device.id", id)], |x| v.push(*x));
            v.sort();
            v
        };
        assert_eq!(found("d/x", "x"), ["hash", "literal", "plus", "template", "template again", "template tree"]);
        assert_eq!(found("d/x", "y"), ["hash", "literal", "plus"]);
        assert_eq!(found("d/p-x-s", "x"), ["affixed", "hash", "plus"]);
        assert_eq!(found("d/p-x-s", "p-x-s"), ["hash", "plus", "template", "template again", "template tree"]);
        assert_eq!(found("d", "x"), ["hash"]);
        assert_eq!(found("d/", "x"), ["hash", "plus"]);
        assert_eq!(found("d/x/y", "x"), ["hash", "template tree"]);
        assert_eq!(found("d/p--s", ""), ["hash", "plus"], "an empty value matches nothing");
        assert_eq!(found("e/x", "x"), Vec::<&str>::new());
    }

    #[test]
    fn trie_dollar_topics_and_leading_placeholders() {
        let mut trie = TopicTrie::with_placeholders(&["client.id"]);
        trie.insert("#", "hash").unwrap();
        trie.insert("+/x", "plus").unwrap();
        trie.insert("${client.id}/x", "template").unwrap();
        trie.insert("$SYS/#", "sys").unwrap();
        let found = |topic: &str, id: &str| {
            let mut v = Vec::new();
            trie.for_each_match(topic, &[("client.id", id)], |x| v.push(*x));
            v.sort();
            v
        };
        assert_eq!(found("c1/x", "c1"), ["hash", "plus", "template"]);
        assert_eq!(found("$SYS/x", "c1"), ["sys"]);
        assert_eq!(found("$SYS", "c1"), ["sys"]);
        // A placeholder stands for the literal value: exactly what `matches` does with the expansion.
        assert_eq!(found("$c1/x", "$c1"), ["template"]);
        assert!(matches("$c1/x", "$c1/x"));
    }

    #[test]
    fn trie_any_match_stops_at_the_first_hit() {
        let mut trie = TopicTrie::new();
        for i in 0..100 {
            trie.insert("a/#", i).unwrap();
        }
        let mut calls = 0;
        assert!(trie.any_match("a/b", &[], |_| {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        let mut all = 0;
        trie.for_each_match("a/b", &[], |_| all += 1);
        assert_eq!(all, 100, "duplicate filters each report their value");
        assert!(!trie.any_match("b", &[], |_| true));
        assert!(!trie.any_match("a/+", &[], |_| true), "invalid names match nothing");
    }

    #[test]
    fn trie_insert_reports_placeholder_problems_before_shape() {
        let mut trie = TopicTrie::with_placeholders(&["device.id"]);
        match trie.insert("x/${a+b}", 1) {
            Err(TrieError::Template(e)) => assert_eq!(e.position, 2, "{e}"),
            other => panic!("{other:?}"),
        }
        match trie.insert("x/y/${device.id", 1) {
            Err(TrieError::Template(e)) => assert_eq!((e.position, e.message.as_str()), (4, "unterminated `${`")),
            other => panic!("{other:?}"),
        }
        assert_eq!(trie.insert("x/${device.id}+", 1), Err(TrieError::Topic(TopicError::MisplacedSingleLevelWildcard)));
        assert_eq!(trie.insert("${device.id}#", 1), Err(TrieError::Topic(TopicError::MisplacedMultiLevelWildcard)));
        assert_eq!(trie.insert("", 1), Err(TrieError::Topic(TopicError::Empty)));
        assert_eq!(trie.insert("a\0", 1), Err(TrieError::Topic(TopicError::NullCharacter)));
        assert!(trie.is_empty());
        assert_eq!(
            TrieError::Topic(TopicError::MisplacedMultiLevelWildcard).to_string(),
            "'#' must be the last level, on its own"
        );
    }

    #[test]
    fn trie_with_placeholders_agrees_with_expanding_then_matching() {
        const NAMES: &[&str] = &["v", "w"];
        let filter_levels = ["a", "", "$x", "+", "${v}", "p-${v}", "${v}${w}", "${w}", "$${v}"];
        let name_levels = ["a", "b", "", "$x", "ab", "p-a", "p-$x", "p-", "$a", "$$x", "p-a/b"];
        let mut rng = Lcg(11);
        let mut trie = TopicTrie::with_placeholders(NAMES);
        let mut entries = Vec::new();
        for i in 0..2500 {
            let depth = 1 + rng.next(3);
            let mut levels: Vec<&str> = (0..depth).map(|_| filter_levels[rng.next(filter_levels.len())]).collect();
            if rng.next(3) == 0 {
                levels.push("#");
            }
            let f = levels.join("/");
            if f.is_empty() {
                continue;
            }
            trie.insert(&f, i).unwrap();
            entries.push((i, Template::parse(&f, NAMES).unwrap()));
        }
        let var_sets: [&[(&str, &str)]; 7] = [
            &[("v", "a"), ("w", "b")],
            &[("v", "$x"), ("w", "a")],
            &[("v", "a/b"), ("w", "b")],
            &[("v", ""), ("w", "b")],
            &[("v", "+"), ("w", "#")],
            &[("w", "a")],
            &[],
        ];
        let mut hits = 0;
        for vars in var_sets {
            let expanded: Vec<(usize, Option<String>)> = entries.iter().map(|(i, t)| (*i, t.expand(&vars))).collect();
            for _ in 0..300 {
                let depth = 1 + rng.next(4);
                let t = (0..depth).map(|_| name_levels[rng.next(name_levels.len())]).collect::<Vec<_>>().join("/");
                let mut from_trie = Vec::new();
                trie.for_each_match(&t, &vars, |i| from_trie.push(*i));
                from_trie.sort();
                let linear: Vec<usize> = expanded
                    .iter()
                    .filter(|(_, f)| f.as_deref().is_some_and(|f| matches(f, &t)))
                    .map(|(i, _)| *i)
                    .collect();
                assert_eq!(from_trie, linear, "topic {t:?} vars {vars:?}");
                hits += linear.len();
            }
        }
        assert!(hits > 10_000, "the generator must produce matches to compare, got {hits}");
    }

    #[test]
    fn within_and_overlap_agree_with_matches_on_every_small_topic() {
        let levels = ["a", "b", "", "$x"];
        let mut topics: Vec<String> = Vec::new();
        let mut frontier = vec![String::new()];
        for depth in 1..=5 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for l in levels {
                    next.push(if depth == 1 { l.to_owned() } else { format!("{prefix}/{l}") });
                }
            }
            topics.extend(next.iter().filter(|t| !t.is_empty()).cloned());
            frontier = next;
        }
        let filter_levels = ["a", "b", "", "$x", "+"];
        let mut rng = Lcg(3);
        let mut filter = || {
            let depth = 1 + rng.next(3);
            let mut l: Vec<&str> = (0..depth).map(|_| filter_levels[rng.next(filter_levels.len())]).collect();
            if rng.next(3) == 0 {
                l.push("#");
            }
            l.join("/")
        };
        let (mut within, mut overlaps) = (0, 0);
        for _ in 0..1500 {
            let (x, y) = (filter(), filter());
            let both = topics.iter().any(|t| matches(&x, t) && matches(&y, t));
            assert_eq!(filters_overlap(&x, &y), both, "overlap {x:?} {y:?}");
            assert_eq!(filters_overlap(&y, &x), both, "overlap {y:?} {x:?}");
            if filter_within(&x, &y) {
                within += 1;
                for t in &topics {
                    assert!(!matches(&x, t) || matches(&y, t), "{x:?} within {y:?} but {t:?}");
                }
            }
            overlaps += usize::from(both);
        }
        assert!(within > 20 && overlaps > 100, "within {within}, overlaps {overlaps}");
    }

    /// A deterministic generator, so the differential test needs no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    #[test]
    fn trie_agrees_with_matches_on_random_filters_and_topics() {
        let name_levels = ["a", "b", "", "$x", "c"];
        let filter_levels = ["a", "b", "", "$x", "+", "c"];
        let mut rng = Lcg(7);
        let mut filters = Vec::new();
        let mut trie = TopicTrie::new();
        for i in 0..3000 {
            let depth = 1 + rng.next(4);
            let mut levels: Vec<&str> = (0..depth).map(|_| filter_levels[rng.next(filter_levels.len())]).collect();
            if rng.next(4) == 0 {
                levels.push("#");
            }
            let f = levels.join("/");
            if f.is_empty() {
                continue;
            }
            trie.insert(&f, i).unwrap();
            filters.push((i, f));
        }
        let none: [(&str, &str); 0] = [];
        for _ in 0..2000 {
            let depth = 1 + rng.next(5);
            let t: String = (0..depth).map(|_| name_levels[rng.next(name_levels.len())]).collect::<Vec<_>>().join("/");
            let mut from_trie = Vec::new();
            trie.for_each_match(&t, &none, |i| from_trie.push(*i));
            from_trie.sort();
            let linear: Vec<usize> = filters.iter().filter(|(_, f)| matches(f, &t)).map(|(i, _)| *i).collect();
            assert_eq!(from_trie, linear, "topic {t:?}");
        }
    }
}
