//! `${name}` placeholders in topic rules, e.g. `devices/${device.id}/#`.
//!
//! A substituted value can never widen a rule: a missing, empty or unsafe value (one
//! containing `/`, `+`, `#` or NUL) makes expansion fail and matching answer false, so a
//! device named `a/#` gets nothing rather than everything under `devices/a/`.

use std::fmt;

/// Where placeholder values come from.
pub trait Vars {
    /// The value of placeholder `name`, if known.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Vars for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

impl<const N: usize> Vars for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        Vars::get(self.as_slice(), name)
    }
}

impl Vars for Vec<(&str, &str)> {
    fn get(&self, name: &str) -> Option<&str> {
        Vars::get(self.as_slice(), name)
    }
}

impl<S: std::hash::BuildHasher> Vars for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::HashMap::get(self, name).map(String::as_str)
    }
}

impl Vars for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, name).map(String::as_str)
    }
}

impl<V: Vars + ?Sized> Vars for &V {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// Whether a value may be substituted into a topic: non-empty, one level, no wildcards.
pub fn is_safe_value(value: &str) -> bool {
    // Asked at every check of a rule with a placeholder: bytes, not a `char` search (all four
    // are ASCII, which never occurs inside a longer UTF-8 sequence).
    !value.is_empty() && !value.bytes().any(|b| matches!(b, b'/' | b'+' | b'#' | 0))
}

/// A template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset of the problem in the template text.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.position, self.message)
    }
}

impl std::error::Error for TemplateError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

/// A parsed template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

impl Template {
    /// Parses `text`; `allowed` lists the placeholder names that may appear. A `$` not
    /// followed by `{` is literal text (`$SYS/#` is plain).
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(TemplateError { position: offset + start, message: "unterminated `${`".to_owned() });
            };
            let name = &after[..end];
            if !valid_name(name) {
                return Err(TemplateError {
                    position: offset + start,
                    message: format!(
                        "`${{{name}}}` is not a placeholder name (lower-case letters, digits, `.`, `_`, `-`)"
                    ),
                });
            }
            if !allowed.contains(&name) {
                // An empty list would read "known: " and look like a bug in the message.
                let known = if allowed.is_empty() {
                    "no placeholders are allowed here".to_owned()
                } else {
                    format!("known: {}", allowed.join(", "))
                };
                return Err(TemplateError {
                    position: offset + start,
                    message: format!("unknown placeholder `${{{name}}}`; {known}"),
                });
            }
            parts.push(Part::Var(name.to_owned()));
            let consumed = start + 2 + end + 1;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// True when the template has no placeholders.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The placeholder names used, in order of appearance.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(n) => Some(n.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The text with every placeholder replaced, or `None` if a value is missing or unsafe
    /// (see [`is_safe_value`]).
    pub fn expand(&self, vars: &impl Vars) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(name) => out.push_str(vars.get(name).filter(|v| is_safe_value(v))?),
            }
        }
        Some(out)
    }

    /// Whether `level` equals the expansion, compared without building it. False when a
    /// value is missing or unsafe.
    pub fn matches_level(&self, level: &str, vars: &impl Vars) -> bool {
        let mut rest = level;
        for part in &self.parts {
            let piece = match part {
                Part::Literal(l) => l.as_str(),
                Part::Var(name) => match vars.get(name) {
                    Some(v) if is_safe_value(v) => v,
                    _ => return false,
                },
            };
            match rest.strip_prefix(piece) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(l) => f.write_str(l)?,
                Part::Var(n) => write!(f, "${{{n}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["device.id", "device.type", "client.id", "username", "cert.cn", "hub.org"];

    #[test]
    fn expands_placeholders_with_prefix_and_suffix() {
        let t = Template::parse("iot-2/type/${device.type}/id/d-${device.id}-x/#", NAMES).unwrap();
        let vars = [("device.type", "sensor"), ("device.id", "42")];
        assert_eq!(t.expand(&vars).as_deref(), Some("iot-2/type/sensor/id/d-42-x/#"));
        assert_eq!(t.names().collect::<Vec<_>>(), ["device.type", "device.id"]);
        assert!(!t.is_literal());
        assert_eq!(t.to_string(), "iot-2/type/${device.type}/id/d-${device.id}-x/#");
    }

    #[test]
    fn dollar_without_brace_is_literal() {
        let t = Template::parse("$SYS/#", NAMES).unwrap();
        assert!(t.is_literal());
        assert_eq!(t.expand(&[("x", "y")]).as_deref(), Some("$SYS/#"));
    }

    #[test]
    fn parse_errors_name_the_position_and_problem() {
        let e = Template::parse("a/${device.id", NAMES).unwrap_err();
        assert_eq!(e.position, 2);
        assert!(e.message.contains("unterminated"));
        let e = Template::parse("a/${device.name}/b", NAMES).unwrap_err();
        assert!(e.message.contains("unknown placeholder `${device.name}`; known: device.id"), "{e}");
        assert!(Template::parse("${}", NAMES).unwrap_err().message.contains("not a placeholder name"));
        assert!(Template::parse("${Device}", NAMES).is_err());
        assert!(Template::parse("${a b}", NAMES).is_err());
    }

    #[test]
    fn unsafe_or_missing_values_never_widen_a_rule() {
        let t = Template::parse("devices/${device.id}/#", NAMES).unwrap();
        for bad in ["a/#", "+", "#", "a/b", "", "x\0"] {
            assert_eq!(t.expand(&[("device.id", bad)]), None, "{bad:?}");
        }
        assert_eq!(t.expand(&[("client.id", "a")]), None, "missing value");
        let level = Template::parse("${device.id}", NAMES).unwrap();
        assert!(level.matches_level("dev-1", &[("device.id", "dev-1")]));
        assert!(!level.matches_level("a", &[("device.id", "+")]));
        assert!(!level.matches_level("", &[("device.id", "")]));
        assert!(!level.matches_level("a", &[]));
    }

    #[test]
    fn unknown_placeholder_with_no_allowed_names_says_so() {
        let e = Template::parse("a/${device.id}", &[]).unwrap_err();
        assert_eq!(e.position, 2);
        assert_eq!(e.message, "unknown placeholder `${device.id}`; no placeholders are allowed here");
        assert_eq!(e.to_string(), "at byte 2: unknown placeholder `${device.id}`; no placeholders are allowed here");
    }

    #[test]
    fn parse_error_positions_count_bytes_after_earlier_placeholders() {
        let e = Template::parse("ü/${device.id}/${nope}", NAMES).unwrap_err();
        // "ü" is two bytes; "ü/${device.id}/" is 16.
        assert_eq!(e.position, 16);
        assert!(e.message.contains("`${nope}`"), "{e}");
        let e = Template::parse("a/${device.id}/${", NAMES).unwrap_err();
        assert_eq!((e.position, e.message.as_str()), (15, "unterminated `${`"));
        // A nested `${` is swallowed into the name, which is then not a valid name.
        let e = Template::parse("${a${b}}", NAMES).unwrap_err();
        assert_eq!(e.position, 0);
        assert!(e.message.contains("not a placeholder name"), "{e}");
        for bad in ["${1a}", "${.a}", "${a/b}", "${a+b}", "${a#}", "${-}", "${a\0}"] {
            assert!(Template::parse(bad, &["a"]).is_err(), "{bad}");
        }
        for good in ["${a}", "${a1}", "${a_b}", "${a.b}", "${a-b}", "${a.b-c_d9}"] {
            let name = &good[2..good.len() - 1];
            assert!(Template::parse(good, &[name]).is_ok(), "{good}");
        }
    }

    #[test]
    fn dollar_forms_that_are_not_placeholders_stay_literal() {
        for text in ["$", "$$", "a$", "$}{", "{a}", "$ {a}", "$SYS/broker/+"] {
            let t = Template::parse(text, NAMES).unwrap();
            assert!(t.is_literal(), "{text}");
            assert_eq!(t.expand(&[("device.id", "x")]).as_deref(), Some(text));
            assert_eq!(t.names().count(), 0);
        }
        let t = Template::parse("$${device.id}}", NAMES).unwrap();
        assert_eq!(t.expand(&[("device.id", "x")]).as_deref(), Some("$x}"));
    }

    #[test]
    fn several_placeholders_in_one_level() {
        let t = Template::parse("${device.type}-${device.id}", NAMES).unwrap();
        let v = [("device.type", "sensor"), ("device.id", "7")];
        assert!(t.matches_level("sensor-7", &v));
        assert!(!t.matches_level("sensor-8", &v));
        assert!(!t.matches_level("sensor7", &v));
        assert!(!t.matches_level("sensor-7-", &v));
        assert!(!t.matches_level("sensor-7", &[("device.type", "sensor")]), "one value missing");
        assert!(!t.matches_level("sensor-a/b", &[("device.type", "sensor"), ("device.id", "a/b")]));
        assert_eq!(t.expand(&v).as_deref(), Some("sensor-7"));
    }

    #[test]
    fn unsafe_values_are_refused_wherever_the_placeholder_sits() {
        let t = Template::parse("x/pre-${device.id}-post/y", NAMES).unwrap();
        for bad in ["", "/", "a/b", "+", "#", "a+", "a#", "\0", "a\0b"] {
            assert_eq!(t.expand(&[("device.id", bad)]), None, "{bad:?}");
            let level = format!("pre-{bad}-post");
            let level_t = Template::parse("pre-${device.id}-post", NAMES).unwrap();
            assert!(!level_t.matches_level(&level, &[("device.id", bad)]), "{bad:?}");
        }
        assert!(!is_safe_value("") && !is_safe_value("a/b") && !is_safe_value("+") && !is_safe_value("#"));
        assert!(!is_safe_value("a\0"));
        // Characters with no meaning to topic matching are fine, including a `$`.
        for ok in ["d1", "ü", "a b", "$x", "a.b-c_d", "${x}"] {
            assert!(is_safe_value(ok), "{ok:?}");
        }
        assert_eq!(t.expand(&[("device.id", "$x")]).as_deref(), Some("x/pre-$x-post/y"));
    }

    #[test]
    fn a_value_that_looks_like_a_placeholder_is_not_expanded_again() {
        let t = Template::parse("devices/${device.id}", NAMES).unwrap();
        let v = [("device.id", "${client.id}"), ("client.id", "admin")];
        assert_eq!(t.expand(&v).as_deref(), Some("devices/${client.id}"));
    }

    #[test]
    fn vars_from_maps_vectors_and_references() {
        let t = Template::parse("${device.id}/${username}", NAMES).unwrap();
        let mut std_map = std::collections::HashMap::new();
        std_map.insert("device.id".to_owned(), "d1".to_owned());
        std_map.insert("username".to_owned(), "u".to_owned());
        assert_eq!(t.expand(&std_map).as_deref(), Some("d1/u"));
        let mut fx_map = crate::collections::HashMap::default();
        fx_map.insert("device.id".to_owned(), "d2".to_owned());
        fx_map.insert("username".to_owned(), "v".to_owned());
        assert_eq!(t.expand(&fx_map).as_deref(), Some("d2/v"));
        let tree: std::collections::BTreeMap<String, String> =
            std_map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(t.expand(&tree).as_deref(), Some("d1/u"));
        let vec = vec![("device.id", "d3"), ("username", "w")];
        assert_eq!(t.expand(&vec).as_deref(), Some("d3/w"));
        let slice: &[(&str, &str)] = &vec;
        assert_eq!(t.expand(&slice).as_deref(), Some("d3/w"));
        assert_eq!(t.expand(&&slice).as_deref(), Some("d3/w"));
        // The first of duplicate keys wins, as with a linear lookup.
        assert_eq!(Vars::get(&[("a", "1"), ("a", "2")], "a"), Some("1"));
    }

    #[test]
    fn matches_level_compares_whole_levels() {
        let t = Template::parse("d-${device.id}", NAMES).unwrap();
        let v = [("device.id", "7")];
        assert!(t.matches_level("d-7", &v));
        assert!(!t.matches_level("d-77", &v));
        assert!(!t.matches_level("d-", &v));
        assert!(!t.matches_level("x-7", &v));
    }
}
