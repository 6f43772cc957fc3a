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
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(is_name_byte) && !name.starts_with(['.', '-']);
    if ok { Ok(()) } else { Err(Error::TenantName { name: name.to_owned() }) }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Star,
    Tenant,
}

/// A pattern with one `{tenant}` and any number of `*` (any run of characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses a pattern; it must contain `{tenant}` exactly once.
    pub fn parse(text: &str) -> Result<Pattern> {
        if text.matches("{tenant}").count() != 1 {
            return Err(Error::TenantPattern { pattern: text.to_owned() });
        }
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
        Ok(Pattern { text: text.to_owned(), tokens })
    }

    /// The tenant named by `value`, if it matches. The tenant part is one or more
    /// tenant-name characters, so `d:{tenant}:*` reads `acme` from `d:acme:sensor:7`.
    ///
    /// Where several readings match, the one a left-to-right search finds first wins: each
    /// `*` takes as little as it can, `{tenant}` as much as it can. Linear in the length of
    /// `value` (times the number of tokens, and 64 per position for `{tenant}`): a client id
    /// of 64 KiB costs microseconds, never a backtracking search.
    pub fn extract<'v>(&self, value: &'v str) -> Option<&'v str> {
        let (start, end) = matching(&self.tokens, value)?;
        Some(&value[start..end])
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn flush(literal: &mut String, tokens: &mut Vec<Token>) {
    if !literal.is_empty() {
        tokens.push(Token::Literal(std::mem::take(literal)));
    }
}

/// Longest tenant name: the upper bound of [`check_name`].
const MAX_NAME: usize = 64;

/// Where the tenant is in `value` under `tokens`, found in two passes.
///
/// First, from the end: `fits[k][i]` says whether `tokens[k..]` can match `value[i..]`.
/// Then, from the start, each token takes the reading the backtracking definition would try
/// first (the shortest `*`, the longest `{tenant}`) among those after which the rest still
/// fits, so the answer is the one a depth-first search would find, without its exponential
/// cost.
fn matching(tokens: &[Token], value: &str) -> Option<(usize, usize)> {
    let bytes = value.as_bytes();
    let n = bytes.len();
    // Bytes that begin a character; `*` may stop only there. Literals and tenant names start
    // with such a byte anyway.
    let boundary = |i: usize| value.is_char_boundary(i);
    // How many tenant-name bytes start at each position (capped at MAX_NAME), from the end.
    let mut run = vec![0u8; n + 1];
    for i in (0..n).rev() {
        run[i] = if is_name_byte(bytes[i]) { (run[i + 1] + 1).min(MAX_NAME as u8) } else { 0 };
    }
    // A tenant name cannot start with '.' or '-' (see `check_name`).
    let name_at = |i: usize| i < n && run[i] > 0 && !matches!(bytes[i], b'.' | b'-');
    let mut fits = vec![vec![false; n + 1]; tokens.len() + 1];
    fits[tokens.len()][n] = true;
    for k in (0..tokens.len()).rev() {
        let (row, next) = {
            let (head, tail) = fits.split_at_mut(k + 1);
            (&mut head[k], &tail[0])
        };
        match &tokens[k] {
            Token::Literal(l) => {
                for i in 0..=n {
                    row[i] = bytes[i..].starts_with(l.as_bytes()) && next[i + l.len()];
                }
            }
            Token::Star => {
                let mut later = false;
                for i in (0..=n).rev() {
                    later |= boundary(i) && next[i];
                    row[i] = later;
                }
            }
            Token::Tenant => {
                for i in 0..=n {
                    row[i] = name_at(i) && (1..=usize::from(run[i])).any(|len| next[i + len]);
                }
            }
        }
    }
    if !fits[0][0] {
        return None;
    }
    let (mut at, mut found) = (0, None);
    for (k, token) in tokens.iter().enumerate() {
        let next = &fits[k + 1];
        at = match token {
            Token::Literal(l) => at + l.len(),
            Token::Star => (at..=n).find(|&i| boundary(i) && next[i])?,
            Token::Tenant => {
                let len = (1..=usize::from(run[at])).rev().find(|&len| next[at + len])?;
                found = Some((at, at + len));
                at + len
            }
        };
    }
    found
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
