//! Which tenant a connection belongs to.
//!
//! A tenant's name is also its policy file's name (`TENANT.wasm`), so names are restricted to
//! `[A-Za-z0-9_-]` (and `.` after the first character): a client can never steer the lookup
//! outside the policy directory.

use crate::error::{Error, Result};

/// How a gateway finds the tenant of a connection the broker has not already placed in one
/// (see [`Hello::tenant`](crate::Hello::tenant)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// Every client belongs to one tenant (e.g. a broker listener bound to it). Nothing the
    /// client sends can change it.
    Fixed(String),
    /// Taken from the client id by a pattern such as `d:{tenant}:*`.
    ClientId(Pattern),
    /// Taken from the user name by a pattern such as `{tenant}/*`.
    Username(Pattern),
    /// The tenant whose CA (embedded in its policy) signed the client certificate.
    Certificate,
}

impl TenantSource {
    /// A fixed tenant, checked as a file-safe name.
    pub fn fixed(name: &str) -> Result<TenantSource> {
        check_name(name)?;
        Ok(TenantSource::Fixed(name.to_owned()))
    }

    /// Parses `client-id:PATTERN`, `username:PATTERN` or `certificate`.
    pub fn parse(text: &str) -> Result<TenantSource> {
        if text == "certificate" {
            return Ok(TenantSource::Certificate);
        }
        if let Some(p) = text.strip_prefix("client-id:") {
            return Ok(TenantSource::ClientId(Pattern::parse(p)?));
        }
        if let Some(p) = text.strip_prefix("username:") {
            return Ok(TenantSource::Username(Pattern::parse(p)?));
        }
        Err(Error::TenantSource { text: text.to_owned() })
    }
}

/// Checks that `name` can be a tenant (and a file name): 1 to 64 of `[A-Za-z0-9_.-]`, not
/// starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<()> {
    // `TENANT.next.wasm` is a tenant's candidate policy (monitor mode), never a tenant of its own.
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(is_name_byte)
        && !name.starts_with(['.', '-'])
        && !name.ends_with(CANDIDATE_SUFFIX);
    if ok { Ok(()) } else { Err(Error::TenantName { name: name.to_owned() }) }
}

/// What a candidate policy's file stem adds to its tenant's name: `acme.next.wasm` is evaluated
/// beside `acme.wasm` and enforces nothing (monitor mode; README, "Trying a policy before it
/// enforces"). Tenant names cannot end with it.
pub const CANDIDATE_SUFFIX: &str = ".next";

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Star,
    Tenant,
}

/// The pattern's text as tokens: runs of literal characters, `*` and `{tenant}`.
fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{tenant}") {
            flush(&mut literal, &mut tokens);
            tokens.push(Token::Tenant);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            flush(&mut literal, &mut tokens);
            tokens.push(Token::Star);
            rest = r;
        } else {
            let c = rest.chars().next().expect("not empty");
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    flush(&mut literal, &mut tokens);
    tokens
}

fn flush(literal: &mut String, tokens: &mut Vec<Token>) {
    if !literal.is_empty() {
        tokens.push(Token::Literal(std::mem::take(literal)));
    }
}

/// The literals between the `*`s of one side of `{tenant}`: one more than there are `*`s,
/// empty where two `*`s (or a `*` and an end) meet.
fn segments(tokens: &[Token]) -> Vec<String> {
    let mut segments = vec![String::new()];
    for token in tokens {
        match token {
            Token::Literal(l) => segments.last_mut().expect("never empty").push_str(l),
            Token::Star => segments.push(String::new()),
            Token::Tenant => unreachable!("one {{tenant}}, split off by the caller"),
        }
    }
    segments
}

/// A pattern with one `{tenant}` and any number of `*` (any run of characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// The literals between the `*`s before `{tenant}` and after it.
    before: Vec<String>,
    after: Vec<String>,
}

impl Pattern {
    /// Parses a pattern; it must contain `{tenant}` exactly once.
    pub fn parse(text: &str) -> Result<Pattern> {
        if text.matches("{tenant}").count() != 1 {
            return Err(Error::TenantPattern { pattern: text.to_owned() });
        }
        let tokens = tokenize(text);
        let at = tokens.iter().position(|t| *t == Token::Tenant).expect("counted above");
        Ok(Pattern { text: text.to_owned(), before: segments(&tokens[..at]), after: segments(&tokens[at + 1..]) })
    }

    /// The tenant named by `value`, if it matches. The tenant part is one or more
    /// tenant-name characters, so `d:{tenant}:*` reads `acme` from `d:acme:sensor:7`.
    ///
    /// Where several readings match, the one a left-to-right search finds first wins: each
    /// `*` takes as little as it can, `{tenant}` as much as it can. Linear in the length of
    /// `value` (and of the pattern): never a backtracking search (`benches/tenancy.rs`
    /// measures a 64 KiB client id).
    pub fn extract<'v>(&self, value: &'v str) -> Option<&'v str> {
        let (start, end) = matching(&self.before, &self.after, value)?;
        Some(&value[start..end])
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Longest tenant name: the upper bound of [`check_name`].
const MAX_NAME: usize = 64;

/// Where the tenant is in `value` for a pattern `before {tenant} after` (each side given as
/// the literals between its `*`s).
///
/// The reading a depth-first search (each `*` shortest first, `{tenant}` longest first)
/// would find is the one with the earliest tenant start, then the longest name. Why:
/// placing each literal of `before` at its leftmost occurrence leaves every later choice
/// open that a later occurrence would, so the search keeps the leftmost ones whenever any
/// reading exists, and then tries tenant starts in increasing order. So: the literals of
/// `before` by leftmost search, the literals of `after` by rightmost search (which gives the
/// latest position the `*`-part of `after` may begin at), then one pass over the tenant
/// starts. A `*` stops only between characters, which every literal and tenant-name byte
/// does anyway.
fn matching(before: &[String], after: &[String], value: &str) -> Option<(usize, usize)> {
    let bytes = value.as_bytes();
    let n = bytes.len();

    // After the tenant: `first`, then (if there are `*`s) any text holding the middle
    // literals in order, ending with `last`. `limit` is the last position `first` may end at.
    let (first, rest) = after.split_first().expect("one segment at least");
    let limit = match rest.split_last() {
        None => n,
        Some((last, middle)) => {
            let mut latest = n.checked_sub(last.len()).filter(|_| value.ends_with(last.as_str()))?;
            for literal in middle.iter().rev() {
                latest = value[..latest].rfind(literal.as_str())?;
            }
            latest
        }
    };
    let starred = !rest.is_empty();
    let fits_after = |e: usize| {
        e + first.len() <= limit
            && (starred || e + first.len() == n)
            // The first byte inline before comparing the rest: most positions fail there.
            && first.as_bytes().first().is_none_or(|b| bytes.get(e) == Some(b))
            && bytes[e..].starts_with(first.as_bytes())
    };

    // Before the tenant: `head`, the middle literals leftmost, then `tail` ending at the
    // tenant's start, no earlier than `earliest`.
    let (head, rest) = before.split_first().expect("one segment at least");
    if !value.starts_with(head.as_str()) {
        return None;
    }
    let (tail, earliest) = match rest.split_last() {
        None => (None, head.len()),
        Some((tail, middle)) => {
            let mut at = head.len();
            for literal in middle {
                at += value[at..].find(literal.as_str())? + literal.len();
            }
            (Some(tail.as_str()), at + tail.len())
        }
    };

    // The run of tenant-name bytes met last, `[from, to)`, and how far ends have been tried:
    // whether the rest fits after an end does not depend on where the name began, so no end
    // is tried twice, and no byte is scanned twice for runs (starts only increase).
    let mut run = (0, 0);
    let mut tried = 0;
    let mut try_start = |t: usize| -> Option<(usize, usize)> {
        if t >= run.1 {
            run = (t, t + bytes[t..].iter().take_while(|&&b| is_name_byte(b)).count());
        }
        // A name does not start with '.' or '-' (see `check_name`).
        if t >= run.1 || matches!(bytes[t], b'.' | b'-') {
            return None;
        }
        let reach = run.1.min(t + MAX_NAME);
        let end = (tried.max(t) + 1..=reach).rev().find(|&e| fits_after(e));
        tried = tried.max(reach);
        end.map(|e| (t, e))
    };
    match tail {
        // No `*` before the tenant: it starts right after `head`.
        None => try_start(earliest),
        Some("") => (earliest..=n).find_map(try_start),
        // Just after each occurrence of `tail` (overlapping ones too), in order. Its first byte
        // begins a character, so it matches only where a character begins. (A plain loop:
        // memchr is faster on values with few of them, but costs far more per occurrence.)
        Some(tail) => {
            let tail = tail.as_bytes();
            for at in earliest - tail.len()..n.saturating_sub(tail.len()) {
                let t = at + tail.len();
                // Cheapest tests first: `tail`'s first byte, a name byte after it, then the rest.
                if bytes[at] == tail[0]
                    && is_name_byte(bytes[t])
                    && bytes[at..].starts_with(tail)
                    && let Some(found) = try_start(t)
                {
                    return Some(found);
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_pattern_reads_the_org() {
        let p = Pattern::parse("d:{tenant}:*").unwrap();
        assert_eq!(p.extract("d:acme:sensor:7"), Some("acme"));
        assert_eq!(p.extract("d:acme:"), Some("acme"));
        assert_eq!(p.extract("a:acme:app"), None);
        assert_eq!(p.extract("d::x"), None);
        // A tenant name never contains '/' or "..": the file lookup cannot escape.
        assert_eq!(p.extract("d:../etc:x"), None);
        assert_eq!(p.extract("d:a/b:x"), None);
    }

    #[test]
    fn username_pattern_and_whole_value() {
        let p = Pattern::parse("{tenant}/*").unwrap();
        assert_eq!(p.extract("globex/device-1"), Some("globex"));
        assert_eq!(p.extract("globex"), None);
        let whole = Pattern::parse("{tenant}").unwrap();
        assert_eq!(whole.extract("initech"), Some("initech"));
        assert_eq!(whole.extract("init tech"), None);
    }

    #[test]
    fn the_first_reading_of_a_left_to_right_search_wins() {
        // `*` takes as little as it can, `{tenant}` as much as it can, as a backtracking
        // search would.
        let p = Pattern::parse("*:{tenant}:*").unwrap();
        assert_eq!(p.extract("a:b:c:d"), Some("b"));
        assert_eq!(p.extract("x:acme:"), Some("acme"));
        assert_eq!(p.extract(":acme:"), Some("acme"));
        assert_eq!(p.extract("a::b:c"), Some("b"), "an empty run is not a tenant; the next one is");
        let p = Pattern::parse("{tenant}*").unwrap();
        assert_eq!(p.extract("acme-1/x"), Some("acme-1"), "longest name first");
        let p = Pattern::parse("{tenant}.x").unwrap();
        assert_eq!(p.extract("a.b.x"), Some("a.b"));
        assert_eq!(p.extract(".b.x"), None, "a name does not start with a dot");
        let p = Pattern::parse("é*{tenant}").unwrap();
        assert_eq!(p.extract("éü-acme"), Some("acme"), "characters of several bytes before the tenant");
        let p = Pattern::parse("{tenant}").unwrap();
        assert_eq!(p.extract(&"a".repeat(64)).map(str::len), Some(64));
        assert_eq!(p.extract(&"a".repeat(65)), None, "longer than a tenant name");
        let p = Pattern::parse("*{tenant}").unwrap();
        assert_eq!(p.extract(&"a".repeat(100)).map(str::len), Some(64), "the shortest star leaves 64");
    }

    /// The backtracking matcher this module had before: the definition the linear one must
    /// agree with (exponential in the number of `*`, so only for short values).
    fn backtracking(tokens: &[Token], value: &str, at: usize, found: &mut Option<(usize, usize)>) -> bool {
        let Some((first, rest)) = tokens.split_first() else { return at == value.len() };
        let tail = &value[at..];
        match first {
            Token::Literal(l) => tail.starts_with(l.as_str()) && backtracking(rest, value, at + l.len(), found),
            Token::Star => {
                (at..=value.len()).filter(|&i| value.is_char_boundary(i)).any(|i| backtracking(rest, value, i, found))
            }
            Token::Tenant => {
                let run = tail.bytes().take_while(|&b| is_name_byte(b)).count();
                for len in (1..=run.min(64)).rev() {
                    if check_name(&value[at..at + len]).is_ok() && backtracking(rest, value, at + len, found) {
                        *found = Some((at, at + len));
                        return true;
                    }
                }
                false
            }
        }
    }

    #[test]
    fn the_linear_matcher_agrees_with_backtracking() {
        let patterns = [
            "{tenant}",
            "*{tenant}",
            "{tenant}*",
            "*{tenant}*",
            "*:{tenant}:*",
            ":{tenant}",
            "a*:*{tenant}",
            "*.*{tenant}-",
            "{tenant}a*",
            "*a{tenant}*-*",
            "**{tenant}.*é",
            "*:{tenant}:*:*a",
        ];
        let alphabet = ["a", ":", ".", "-", "é"];
        let mut values = vec![String::new()];
        let mut last = values.clone();
        for _ in 0..6 {
            last = last.iter().flat_map(|v| alphabet.iter().map(move |c| format!("{v}{c}"))).collect();
            values.extend(last.iter().cloned());
        }
        // And longer ones, past the 64-byte name bound: long runs of name bytes, few separators.
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..100 {
            let mut v = String::new();
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = 65 + (seed >> 24) as usize % 40;
            for _ in 0..len {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                v.push(match (seed >> 24) % 40 {
                    0 => ':',
                    1 => '-',
                    2 => '.',
                    3 => 'é',
                    _ => 'a',
                });
            }
            values.push(v);
        }
        for text in patterns {
            let p = Pattern::parse(text).unwrap();
            let tokens = tokenize(text);
            for v in &values {
                let mut found = None;
                let expected =
                    if backtracking(&tokens, v, 0, &mut found) { found.map(|(a, b)| &v[a..b]) } else { None };
                assert_eq!(p.extract(v), expected, "{text} against {v:?}");
            }
        }
    }

    #[test]
    fn a_64_kib_client_id_against_two_stars_resolves_at_once() {
        let p = Pattern::parse("*:{tenant}:*").unwrap();
        // A backtracking match took 2.5 s at 2,000 bytes and grows with the square of the
        // length; benches/tenancy.rs measures this one.
        let mut id = "x".repeat(64 << 10);
        assert_eq!(p.extract(&id), None);
        id.replace_range(30_000..30_006, ":acme:");
        assert_eq!(p.extract(&id), Some("acme"));
        let colons = ":".repeat(64 << 10);
        assert_eq!(p.extract(&colons), None);
    }

    #[test]
    fn patterns_and_names_are_validated() {
        assert!(Pattern::parse("d:*").is_err());
        assert!(Pattern::parse("{tenant}{tenant}").is_err());
        assert!(check_name("acme-1.eu").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(TenantSource::parse("certificate").unwrap(), TenantSource::Certificate);
        assert!(matches!(TenantSource::parse("username:{tenant}").unwrap(), TenantSource::Username(_)));
        assert!(TenantSource::parse("listener").is_err());
    }
}
