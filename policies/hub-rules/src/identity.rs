//! Client-id formats such as IBM's `d:{org}:{type}:{id}` and `A:{org}:{app}:{instance}`.

/// The fields a format can capture.
pub const FIELDS: &[&str] = &["org", "type", "id", "app", "instance"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(&'static str),
}

/// A parsed client-id format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    text: String,
    parts: Vec<Part>,
}

/// What a client id yielded under a format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures<'a> {
    /// `{org}`.
    pub org: Option<&'a str>,
    /// `{type}`.
    pub device_type: Option<&'a str>,
    /// `{id}`.
    pub id: Option<&'a str>,
    /// `{app}`.
    pub app: Option<&'a str>,
    /// `{instance}`.
    pub instance: Option<&'a str>,
}

impl Format {
    /// Parses a format. It must capture `{id}` or `{app}`, and two fields may not touch
    /// (`{type}{id}` could split either way).
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            } else if matches!(parts.last(), Some(Part::Field(_))) {
                return Err(format!("format `{text}`: two fields must be separated by literal text"));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("format `{text}`: unterminated `{{`"))? + open;
            let name = &rest[open + 1..close];
            let field = FIELDS
                .iter()
                .find(|f| **f == name)
                .ok_or_else(|| format!("format `{text}`: unknown field `{{{name}}}`; known: {}", FIELDS.join(", ")))?;
            parts.push(Part::Field(field));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Field("id") | Part::Field("app"))) {
            return Err(format!("format `{text}`: must capture {{id}} or {{app}}"));
        }
        Ok(Format { text: text.to_owned(), parts })
    }

    /// The format as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Captures the fields of `client_id`, or `None` when it does not have this shape. A
    /// field never captures an empty string, `/`, `+`, `#`, or a leading `$` (fields become
    /// parts of topics, and must not turn into `$SYS`).
    pub fn capture<'a>(&self, client_id: &'a str) -> Option<Captures<'a>> {
        let mut caps = Captures::default();
        let mut rest = client_id;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(l) => rest = rest.strip_prefix(l.as_str())?,
                Part::Field(name) => {
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(next)) => rest.find(next.as_str())?,
                        _ => rest.len(),
                    };
                    let value = &rest[..end];
                    if value.is_empty() || value.contains(['/', '+', '#', '\0']) || value.starts_with('$') {
                        return None;
                    }
                    let slot = match *name {
                        "org" => &mut caps.org,
                        "type" => &mut caps.device_type,
                        "id" => &mut caps.id,
                        "app" => &mut caps.app,
                        _ => &mut caps.instance,
                    };
                    *slot = Some(value);
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then_some(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibm_client_id_formats() {
        let d = Format::parse("d:{org}:{type}:{id}").unwrap();
        let c = d.capture("d:acme:sensor:s-1").unwrap();
        assert_eq!((c.org, c.device_type, c.id), (Some("acme"), Some("sensor"), Some("s-1")));
        assert_eq!(d.capture("d:acme:sensor"), None);
        assert_eq!(d.capture("g:acme:sensor:s-1"), None);
        assert_eq!(d.capture("d:acme::s-1"), None, "empty fields never match");
        assert_eq!(d.capture("d:acme:sensor:a/b"), None, "topic separators never match");
        assert_eq!(d.capture("d:acme:$SYS:x"), None, "no field may become a $-topic level");
        let a = Format::parse("A:{org}:{app}:{instance}").unwrap();
        let c = a.capture("A:acme:billing:7").unwrap();
        assert_eq!((c.app, c.instance), (Some("billing"), Some("7")));
        let key = Format::parse("a-{org}-{app}").unwrap();
        assert_eq!(key.capture("a-acme-a84ps90Ajs").unwrap().app, Some("a84ps90Ajs"));
    }

    #[test]
    fn bad_formats_are_explained() {
        assert!(Format::parse("d:{org}:{type}").unwrap_err().contains("must capture {id} or {app}"));
        assert!(Format::parse("d:{name}").unwrap_err().contains("unknown field `{name}`"));
        assert!(Format::parse("d:{type}{id}").unwrap_err().contains("separated"));
        assert!(Format::parse("d:{id").unwrap_err().contains("unterminated"));
    }
}
