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

/// One line per part of a TOML settings document: scalar keys of tables, and counts of
/// arrays of tables. `None` when the settings are not TOML.
pub fn summary(settings: &str) -> Option<Vec<String>> {
    let doc = settings.parse::<toml::Table>().ok()?;
    let mut lines = Vec::new();
    for (key, value) in &doc {
        match value {
            toml::Value::Table(t) => {
                let fields: Vec<String> =
                    t.iter().filter(|(_, v)| !v.is_table() && !v.is_array()).map(|(k, v)| format!("{k}={v}")).collect();
                lines.push(format!("[{key}] {}", fields.join(" ")));
            }
            toml::Value::Array(a) if a.iter().all(toml::Value::is_table) => {
                lines.push(format!("{} [[{key}]]", a.len()));
            }
            other => lines.push(format!("{key} = {other}")),
        }
    }
    Some(lines)
}
