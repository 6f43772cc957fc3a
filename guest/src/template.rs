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

impl<V: Vars + ?Sized> Vars for &V {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// Whether a value may be substituted into a topic: non-empty, one level, no wildcards.
pub fn is_safe_value(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0'])
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
                return Err(TemplateError {
                    position: offset + start,
                    message: format!("unknown placeholder `${{{name}}}`; known: {}", allowed.join(", ")),
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
    fn matches_level_compares_whole_levels() {
        let t = Template::parse("d-${device.id}", NAMES).unwrap();
        let v = [("device.id", "7")];
        assert!(t.matches_level("d-7", &v));
        assert!(!t.matches_level("d-77", &v));
        assert!(!t.matches_level("d-", &v));
        assert!(!t.matches_level("x-7", &v));
    }
}
