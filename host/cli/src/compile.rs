//! `mqtt-policy build`: a hub rules document → one self-contained policy file per tenant.

use std::path::{Path, PathBuf};

use hub_rules::config::CaConfig;
use mqtt_policy_host::cert::TenantCa;
use mqtt_policy_host::embedded::{self, EmbeddedCa};
use mqtt_policy_host::{Engine, Limits, PolicyModule};
use serde::Deserialize;

/// Builds `rules` into a policy: the generic policy with the rules and the PEM of every
/// `[[ca]]` embedded, validated by the policy's own `validate-settings` before anything is
/// written, under `limits`. Returns the loaded module and the bytes.
pub fn build(rules_path: &Path, generic: &[u8], limits: Limits) -> Result<(PolicyModule, Vec<u8>), String> {
    let text = std::fs::read_to_string(rules_path).map_err(|e| format!("{}: {e}", rules_path.display()))?;
    let cas = collect_cas(rules_path, &text)?;
    let bytes = embedded::embed_all(generic, &text, &cas).map_err(|e| format!("generic policy: {e}"))?;
    let engine = Engine::new(limits).map_err(|e| e.to_string())?;
    let module = engine.load_bytes(&rules_path.display().to_string(), &bytes, None).map_err(|e| e.to_string())?;
    Ok((module, bytes))
}

/// The `[[ca]]` entries of a rules document, read with the policy's own definition of an
/// entry; the rest of the document is the policy's to validate.
#[derive(Deserialize)]
struct CaEntries {
    #[serde(default)]
    ca: Vec<CaConfig>,
}

/// The `[[ca]]` entries' PEM, read from `file` (relative to the rules) or `pem`, each
/// checked to be a CA certificate. A document whose TOML or `[[ca]]` entries do not parse
/// yields no CAs here: the policy's own validation reports where it is broken.
fn collect_cas(rules_path: &Path, text: &str) -> Result<Vec<EmbeddedCa>, String> {
    let Ok(CaEntries { ca: entries }) = toml::from_str(text) else { return Ok(Vec::new()) };
    let base = rules_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut cas = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let name = entry.name.get_ref();
        let field = |f: &str| format!("{}: ca[{i}].{f} (CA `{name}`)", rules_path.display());
        let (pem, source) = match (&entry.file, &entry.pem) {
            (Some(file), _) => {
                let path = base.join(file);
                let pem = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: cannot read {}: {e}", field("file"), path.display()))?;
                (pem, "file")
            }
            (None, Some(pem)) => (pem.clone(), "pem"),
            (None, None) => continue,
        };
        TenantCa::from_pem(name, &pem).map_err(|e| format!("{}: {e}", field(source)))?;
        cas.push(EmbeddedCa { name: name.clone(), pem });
    }
    Ok(cas)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a directory watcher
/// never sees half a policy.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether a settings key holds a credential (a hash, a key, a password or a token), whose
/// value is never printed.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["hash", "key", "password", "token", "secret", "sig"].iter().any(|s| k.contains(s))
}

/// A settings line as printed: the value of a credential key replaced by `<redacted>`.
pub fn redact_line(line: &str) -> String {
    match line.split_once(['=', ':']) {
        Some((key, _)) if is_secret_key(key) => format!("{} = <redacted>", key.trim_end()),
        _ => line.to_owned(),
    }
}

/// One line per part of a TOML settings document: scalar keys of tables, and counts of
/// arrays of tables; credentials show as `<redacted>`, at any depth. `None` when the settings
/// are not TOML.
pub fn summary(settings: &str) -> Option<Vec<String>> {
    let doc = settings.parse::<toml::Table>().ok()?;
    let mut lines = Vec::new();
    for (key, value) in &doc {
        match value {
            // A table named as a credential (`[passwords]`) is secret as a whole.
            toml::Value::Table(_) if is_secret_key(key) => lines.push(format!("[{key}] <redacted>")),
            toml::Value::Table(t) => {
                let fields: Vec<String> = t
                    .iter()
                    .filter(|(_, v)| !v.is_table() && !v.is_array())
                    .map(|(k, v)| format!("{k}={}", shown(k, v)))
                    .collect();
                lines.push(format!("[{key}] {}", fields.join(" ")));
            }
            toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_table) => {
                lines.push(format!("{} [[{key}]]", a.len()));
            }
            other => lines.push(format!("{key} = {}", shown(key, other))),
        }
    }
    Some(lines)
}

/// A settings value as printed: `<redacted>` under a credential key ([`is_secret_key`]), and
/// inside inline tables and arrays the same, so no secret is printed at any depth.
fn shown(key: &str, value: &toml::Value) -> String {
    if is_secret_key(key) {
        return "<redacted>".to_owned();
    }
    match value {
        toml::Value::Table(t) => {
            let fields: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {}", shown(k, v))).collect();
            format!("{{ {} }}", fields.join(", "))
        }
        toml::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(|v| shown(key, v)).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// What proves identities in a hub rules document, without a secret: e.g.
/// `3 device tokens (pbkdf2-sha512 (500 iterations))`, `1 SAS policy key <redacted>`.
pub fn credentials(settings: &str) -> Vec<String> {
    use std::collections::BTreeMap;
    let Ok(doc) = settings.parse::<toml::Table>() else { return Vec::new() };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    // A hash shows its scheme; a key (SAS) shows nothing.
    let mut count = |what: &str, value: Option<&toml::Value>| {
        let Some(text) = value.and_then(|v| v.as_str()) else { return };
        let scheme = if what.ends_with(" key") {
            "<redacted>".to_owned()
        } else {
            hub_rules::credentials::SecretHash::parse(text).map(|h| h.scheme()).unwrap_or_else(|_| "invalid".to_owned())
        };
        *counts.entry(format!("{what} ({scheme})")).or_default() += 1;
    };
    let tables = |name: &str| doc.get(name).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    for d in tables("device") {
        count("device token", d.get("token-hash"));
        count("device password", d.get("password-hash"));
        count("device SAS key", d.get("sas-key"));
    }
    for a in tables("application") {
        count("API key token", a.get("token-hash"));
    }
    if let Some(policies) = doc.get("sas").and_then(|s| s.get("policy")).and_then(|p| p.as_array()) {
        for p in policies {
            count("SAS policy key", p.get("key"));
        }
    }
    counts.into_iter().map(|(what, n)| format!("{n} x {what}")).collect()
}

/// Warnings `check` prints for a hub rules document: identities admitted without proof.
pub fn warnings(settings: &str) -> Vec<String> {
    let Ok(doc) = settings.parse::<toml::Table>() else { return Vec::new() };
    let none = doc.get("identity").and_then(|i| i.get("authentication")).and_then(|a| a.as_str()) == Some("none");
    if none {
        vec![
            "identity.authentication = \"none\": clients without a registered credential are admitted on \
             their word, with no proof of identity"
                .to_owned(),
        ]
    } else {
        Vec::new()
    }
}

/// The brokers `check --broker` knows the limits of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// Mosquitto 2.0 with the plugin: every rule of a hub rules document holds.
    Mosquitto,
    /// RabbitMQ 3.10 through `mqtt-policy serve` (`rabbitmq_auth_backend_http`).
    Rabbitmq,
    /// EMQX 5 through `mqtt-policy serve` (HTTP authentication and authorization).
    Emqx,
    /// VerneMQ through `mqtt-policy serve` (webhooks).
    Vernemq,
}

/// Warnings `check --broker` prints: every rule of a hub rules document that `broker` cannot
/// enforce, so an operator does not believe it holds (README, "Clusters": the capability
/// matrix).
pub fn broker_warnings(settings: &str, broker: Broker) -> Vec<String> {
    let Ok(doc) = settings.parse::<toml::Table>() else { return Vec::new() };
    let name = match broker {
        Broker::Mosquitto => return Vec::new(),
        Broker::Rabbitmq => "RabbitMQ",
        Broker::Emqx => "EMQX",
        Broker::Vernemq => "VerneMQ",
    };
    let hub = doc.get("hub").and_then(|h| h.as_table());
    let hub_str = |key: &str| hub.and_then(|h| h.get(key)).and_then(|v| v.as_str());
    let mut out = Vec::new();
    if let Some(max) = hub.and_then(|h| h.get("max-payload")) {
        match broker {
            Broker::Vernemq => out.push(format!(
                "hub.max-payload = {max} holds only while VerneMQ sends the payload (not with the webhook's \
                 no_payload = on), and serve's --max-body-kib must hold it base64-encoded"
            )),
            _ => out.push(format!("hub.max-payload = {max} is not enforced: {name} sends no payload size")),
        }
    }
    match (broker, hub_str("retained")) {
        (Broker::Rabbitmq, Some(r @ ("deny" | "override"))) => {
            out.push(format!("hub.retained = \"{r}\" is not enforced: RabbitMQ sends no retained flag"))
        }
        (Broker::Emqx, Some("override")) => out.push(
            "hub.retained = \"override\" becomes a refusal: EMQX's authorization cannot clear the retained flag"
                .to_owned(),
        ),
        _ => {}
    }
    let shared = hub_str("service-level") == Some("shared");
    match broker {
        Broker::Rabbitmq if shared => out.push(
            "hub.service-level = \"shared\": its retained rule cannot hold (RabbitMQ sends no retained flag) and, \
             subscriptions being checked at QoS 1 (RabbitMQ sends no QoS), every subscription is refused"
                .to_owned(),
        ),
        Broker::Emqx if shared => out.push(
            "hub.service-level = \"shared\": its clean-session rule is not enforced (EMQX's authentication sends \
             no clean start)"
                .to_owned(),
        ),
        _ => {}
    }
    if broker == Broker::Emqx && hub_str("shared-subscribe") == Some("downgrade") {
        out.push(
            "hub.shared-subscribe = \"downgrade\" becomes a refusal: EMQX's authorization cannot lower a \
             subscription's QoS"
                .to_owned(),
        );
    }
    if hub.and_then(|h| h.get("rate")).is_some() {
        match broker {
            Broker::Rabbitmq => out.push(
                "hub.rate counts checks, not messages: RabbitMQ asks about each topic about twice per connection, \
                 then keeps the answer for the connection's life"
                    .to_owned(),
            ),
            Broker::Emqx => out.push(
                "hub.rate counts checks, not messages, while EMQX's authorization cache is on (default: 32 topics \
                 per client for 1 minute); set authorization.cache.enable = false"
                    .to_owned(),
            ),
            _ => {}
        }
    }
    if let Some(max) = hub.and_then(|h| h.get("max-connections")) {
        let end = match broker {
            Broker::Vernemq => "at VerneMQ's on_client_offline / on_client_gone hooks (or when idle)",
            _ => "when idle (serve --idle-session-s), not at disconnect: the broker reports none",
        };
        out.push(format!(
            "hub.max-connections = {max} is counted by each decision service on its own (quotas are per service \
             instance), and a session ends {end}"
        ));
    }
    let rules = doc.get("rule").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    let delivery = rules.iter().any(|r| {
        r.get("actions").and_then(|a| a.as_array()).is_some_and(|a| a.iter().any(|v| v.as_str() == Some("delivery")))
    });
    if delivery {
        out.push(format!("rules with action \"delivery\" are never asked: {name} checks at subscribe only"));
    }
    let by_cert = doc.get("identity").and_then(|i| i.get("from")).and_then(|v| v.as_str()) == Some("certificate");
    if by_cert || hub.and_then(|h| h.get("require-mtls")).and_then(|v| v.as_bool()) == Some(true) {
        out.push(match broker {
            Broker::Rabbitmq => "certificate identities are not supported with RabbitMQ yet: with ssl_cert_login, \
                                 RabbitMQ sends only the certificate's name (no certificate, password, virtual host \
                                 or client id), and serve refuses such logins; a device with a certificate can log \
                                 in with its password or token over RabbitMQ's mutual-TLS listener"
                .to_owned(),
            _ => format!("certificate identities are not supported with {name} yet: serve does not read the client certificate {name} can send"),
        });
    }
    out.push(match broker {
        Broker::Rabbitmq => "with RabbitMQ, revocation reaches a connection only at a topic it has not used: \
                             RabbitMQ keeps allowed topics for the connection's life"
            .to_owned(),
        Broker::Emqx => "with EMQX, revocation reaches a connection once its authorization cache entry expires \
                         (default 1 minute)"
            .to_owned(),
        _ => "with VerneMQ, revocation reaches a connection at its next publish or subscription (serve sends no \
              cache-control), but it is not disconnected"
            .to_owned(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_print_no_credential_at_any_depth() {
        let settings = r#"
password = "top-s3cret"
ops = { user = "ops", password-hash = "deep-s3cret" }
tokens = ["list-s3cret"]
[passwords]
site-a = "table-s3cret"
[site]
name = "a"
api-key = "field-s3cret"
"#;
        let lines = summary(settings).unwrap().join("\n");
        assert!(!lines.contains("s3cret"), "{lines}");
        assert!(lines.contains("user=\"ops\"") && lines.contains("name=\"a\""), "{lines}");
    }
}
