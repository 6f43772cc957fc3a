//! The example hubs' proofs of identity, for tests that connect as their clients: the secrets
//! the examples document (ibm-platform) and SAS tokens signed with the keys in shared-hub's rules.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::client::{Opts, Proto};

/// ibm-platform's API key and its token (IBM's documentation examples).
pub const API_KEY: &str = "a-acme-a84ps90Ajs";
/// The token of [`API_KEY`].
pub const API_TOKEN: &str = "MP$08VKz!8rXwnR-Q*";

/// ibm-platform's token of a device (or gateway) id.
pub fn device_token(id: &str) -> String {
    format!("{id}-7Qv!m2Xp9Lz4")
}

/// Options for an ibm-platform client id, with the proof the example registers for it:
/// `d:`/`g:` ids send `use-token-auth` and the device token, `a:`/`A:` ids the API key.
pub fn ibm(port: u16, proto: Proto, client_id: &str) -> Opts {
    let o = Opts::new(port, proto, client_id);
    let parts: Vec<&str> = client_id.split(':').collect();
    match parts.as_slice() {
        ["d" | "g", _, _, id] => o.user("use-token-auth", &device_token(id)),
        ["a", ..] | ["A", ..] => o.user(API_KEY, API_TOKEN),
        _ => o,
    }
}

const SHARED: &str = include_str!("../../../policies/examples/shared-hub/rules.toml");

/// shared-hub's hostname and the key that signs for `device`: its own `sas-key`, else the
/// `device` policy's (then `Some("device")` as `skn`).
pub fn shared_key(device: &str) -> (String, Vec<u8>, Option<&'static str>) {
    let doc: toml::Table = SHARED.parse().unwrap();
    let hostname = doc["sas"]["hostname"].as_str().unwrap().to_owned();
    let own = doc["device"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"].as_str() == Some(device))
        .and_then(|d| d.get("sas-key"))
        .and_then(|k| k.as_str());
    match own {
        Some(key) => (hostname, hub_rules::sas::decode_key(key).unwrap(), None),
        None => {
            let policy = doc["sas"]["policy"].as_array().unwrap().iter().find(|p| p["name"].as_str() == Some("device"));
            let key = policy.and_then(|p| p["key"].as_str()).unwrap();
            (hostname, hub_rules::sas::decode_key(key).unwrap(), Some("device"))
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A SAS token for shared-hub's `device`, valid until `expiry` (seconds since the epoch).
pub fn sas_token(device: &str, expiry: u64) -> String {
    let (hostname, key, skn) = shared_key(device);
    hub_rules::sas::sign(&format!("{hostname}%2Fdevices%2F{device}"), &key, expiry, skn)
}

/// shared-hub's user name for `device`.
pub fn sas_user(device: &str) -> String {
    format!("{}/{device}/?api-version=2021-04-12", shared_key(device).0)
}

/// Options for a shared-hub device with an hour-long token.
pub fn sas(port: u16, proto: Proto, device: &str) -> Opts {
    Opts::new(port, proto, device).user(&sas_user(device), &sas_token(device, now_s() + 3600))
}
