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
    pub fn extract<'v>(&self, value: &'v str) -> Option<&'v str> {
        let mut found = None;
        if match_from(&self.tokens, value, 0, &mut found) { found.map(|(a, b)| &value[a..b]) } else { None }
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

fn match_from(tokens: &[Token], value: &str, at: usize, found: &mut Option<(usize, usize)>) -> bool {
    let Some((first, rest)) = tokens.split_first() else { return at == value.len() };
    let tail = &value[at..];
    match first {
        Token::Literal(l) => tail.starts_with(l.as_str()) && match_from(rest, value, at + l.len(), found),
        Token::Star => {
            (at..=value.len()).filter(|&i| value.is_char_boundary(i)).any(|i| match_from(rest, value, i, found))
        }
        Token::Tenant => {
            let run = tail.bytes().take_while(|&b| is_name_byte(b)).count();
            for len in (1..=run.min(64)).rev() {
                let candidate = &value[at..at + len];
                if check_name(candidate).is_ok() && match_from(rest, value, at + len, found) {
                    *found = Some((at, at + len));
                    return true;
                }
            }
            false
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
