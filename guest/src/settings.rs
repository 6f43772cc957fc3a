//! Typed settings: deserialize the settings string the host hands [`crate::Policy::new`] into
//! your own `#[derive(Deserialize)]` type, from TOML or JSON, with errors that name the line,
//! column and field, and [`Secret`] for values nobody should see printed.
//!
//! ```
//! use mqtt_policy_guest::settings::{self, Secret};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields, rename_all = "kebab-case")]
//! struct Settings {
//!     max_payload: u32,
//!     ops_password: Secret,
//! }
//!
//! let s: Settings = settings::parse("max-payload = 4096\nops-password = \"hunter2\"").unwrap();
//! assert_eq!(format!("{:?}", s.ops_password), "<redacted>");
//! let e = settings::parse::<Settings>("max-payload = \"lots\"\nops-password = \"x\"").err().unwrap();
//! assert!(e.starts_with("line 1, column 15: max-payload: "), "{e}");
//! ```
//!
//! What `mqtt-policy check`, `build` and `eval` print of settings hides the value of every key
//! whose name contains `password`, `secret`, `token`, `key`, `hash` or `sig` (and everything in
//! a table so named): name a secret field so, and type it [`Secret`] so the policy's own
//! messages and `Debug` output cannot show it either.

use serde::de::DeserializeOwned;

/// Parses `text` as TOML, or as JSON when it starts with `{`. Errors read
/// `line L, column C: FIELD: what is wrong` (the field when the error points at a `key = value`
/// line), or serde's message naming the field (`missing field ...`, `unknown field ...`).
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| {
            let message = e.to_string();
            // serde_json appends " at line L column C"; say it first, as for TOML.
            let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m).to_owned();
            if e.line() == 0 { message } else { format!("line {}, column {}: {message}", e.line(), e.column()) }
        });
    }
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        let Some(span) = e.span() else { return message };
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let field = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().trim_matches('"'))
            .filter(|k| !k.is_empty() && !message.contains(&format!("`{k}`")));
        match field {
            Some(k) => format!("line {line}, column {column}: {k}: {message}"),
            None => format!("line {line}, column {column}: {message}"),
        }
    })
}

/// A settings value that is never shown: `Debug` and `Display` print `<redacted>`. Read it
/// with [`Secret::expose`], compare a client's proof with [`Secret::matches`].
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value` (for tests and defaults).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in time that depends on the lengths only (a
    /// client measuring how long its refusal took learns nothing of the secret's bytes).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        let mut diff = secret.len() ^ candidate.len();
        for (i, b) in secret.iter().enumerate() {
            diff |= usize::from(b ^ candidate.get(i).copied().unwrap_or(!b));
        }
        diff == 0
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl core::fmt::Display for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct S {
        max_payload: u32,
        #[serde(default)]
        sites: std::collections::BTreeMap<String, Secret>,
    }

    #[test]
    fn toml_and_json_parse_into_the_same_type() {
        let t: S = parse("max-payload = 10\n[sites]\nparis = \"p\"\n").unwrap();
        let j: S = parse(r#"{"max-payload": 10, "sites": {"paris": "p"}}"#).unwrap();
        assert_eq!((t.max_payload, j.max_payload), (10, 10));
        assert!(t.sites["paris"].matches(b"p") && j.sites["paris"].matches(b"p"));
        assert!(!t.sites["paris"].matches(b"q") && !t.sites["paris"].matches(b"pp") && !t.sites["paris"].matches(b""));
        assert!(!format!("{t:?}").contains("\"p\""), "{t:?}");
    }

    #[test]
    fn errors_name_line_column_and_field() {
        let e = parse::<S>("\nmax-payload = -1\n").unwrap_err();
        assert!(e.starts_with("line 2, column 15: max-payload: "), "{e}");
        let e = parse::<S>("max-payload = 1\nmax-paylod = 2\n").unwrap_err();
        assert!(e.starts_with("line 2, column 1: ") && e.contains("unknown field `max-paylod`"), "{e}");
        let e = parse::<S>("").unwrap_err();
        assert!(e.contains("missing field `max-payload`"), "{e}");
        let e = parse::<S>("{\n \"max-payload\": \"x\"}").unwrap_err();
        assert!(e.starts_with("line 2, column 19: ") && e.contains("invalid type"), "{e}");
    }
}
