//! Azure IoT Hub-style shared access signatures, the password of a device connecting as
//! user `{hostname}/{device}/?api-version=...`:
//! `SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]`, where
//! the signature is base64(HMAC-SHA256(key, `{resource as sent}\n{expiry}`)) and the key is
//! the device's symmetric key or a hub-level shared access policy's.

use base64ct::{Base64, Encoding};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "SharedAccessSignature ";

/// A parsed token (its signature not yet checked).
#[derive(Debug, PartialEq, Eq)]
pub struct Token {
    /// `sr` exactly as sent (still URL-encoded): the signed text.
    pub resource_raw: String,
    /// `sr` decoded.
    pub resource: String,
    /// `sig` decoded from URL and base64 encoding.
    pub signature: Vec<u8>,
    /// `se`: expiry, seconds since the Unix epoch.
    pub expiry: u64,
    /// `skn`: the shared access policy that signed it, if not the device key.
    pub policy: Option<String>,
}

/// Whether a password is a shared access signature (and should be read as one).
pub fn is_token(password: &[u8]) -> bool {
    password.starts_with(PREFIX.as_bytes())
}

fn decode(value: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| "a field is not valid UTF-8 once URL-decoded".to_owned())
}

/// Parses a token; errors name the missing or malformed field, never the signature.
pub fn parse(password: &[u8]) -> Result<Token, String> {
    let text = std::str::from_utf8(password).map_err(|_| "the token is not UTF-8".to_owned())?;
    let body = text.strip_prefix(PREFIX).ok_or("the token does not start with `SharedAccessSignature`")?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in body.split('&') {
        let (key, value) = pair.split_once('=').ok_or_else(|| "a field is not `name=value`".to_owned())?;
        let slot = match key {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(format!("field `{key}` is given twice"));
        }
    }
    let resource_raw = sr.ok_or_else(|| "field `sr` is missing".to_owned())?;
    let sig = sig.ok_or_else(|| "field `sig` is missing".to_owned())?;
    let se = se.ok_or_else(|| "field `se` is missing".to_owned())?;
    let signature = Base64::decode_vec(&decode(sig)?).map_err(|_| "field `sig` is not base64".to_owned())?;
    let expiry = se.parse().map_err(|_| "field `se` is not a number of seconds".to_owned())?;
    Ok(Token {
        resource: decode(resource_raw)?,
        resource_raw: resource_raw.to_owned(),
        signature,
        expiry,
        policy: skn.map(decode).transpose()?,
    })
}

/// Whether `token` carries the signature `key` makes, compared in constant time.
pub fn signed_by(token: &Token, key: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(token.resource_raw.as_bytes());
    mac.update(b"\n");
    mac.update(token.expiry.to_string().as_bytes());
    mac.verify_slice(&token.signature).is_ok()
}

/// Signs `resource` (sent as is, so pass it URL-encoded) until `expiry` with `key`, optionally
/// naming the policy: what a device SDK does. For tests and tools.
pub fn sign(resource: &str, key: &[u8], expiry: u64, policy: Option<&str>) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{resource}\n{expiry}").as_bytes());
    let sig = Base64::encode_string(&mac.finalize().into_bytes());
    let sig: String = percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC).collect();
    let skn = policy.map(|p| format!("&skn={p}")).unwrap_or_default();
    format!("{PREFIX}sr={resource}&sig={sig}&se={expiry}{skn}")
}

/// Decodes a key written in the rules (base64, as Azure shows it).
pub fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    match Base64::decode_vec(text.trim()) {
        Ok(k) if k.len() >= 16 => Ok(k),
        Ok(k) => Err(format!("a key of {} bytes is too short (at least 16)", k.len())),
        Err(_) => Err("the key is not base64".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_token_parses_and_verifies() {
        let t = sign("hub.example.net%2Fdevices%2Fthermo-1", KEY, 1_900_000_000, None);
        let token = parse(t.as_bytes()).unwrap();
        assert_eq!(token.resource, "hub.example.net/devices/thermo-1");
        assert_eq!(token.expiry, 1_900_000_000);
        assert_eq!(token.policy, None);
        assert!(signed_by(&token, KEY));
        assert!(!signed_by(&token, b"another key, just as long as it"));
        let signed = sign("hub.example.net", KEY, 5, Some("device"));
        assert_eq!(parse(signed.as_bytes()).unwrap().policy.as_deref(), Some("device"));
    }

    #[test]
    fn a_changed_expiry_or_resource_breaks_the_signature() {
        let t = sign("hub%2Fdevices%2Fa", KEY, 100, None);
        let later = t.replace("se=100", "se=999999999999");
        assert!(!signed_by(&parse(later.as_bytes()).unwrap(), KEY));
        let other = t.replace("devices%2Fa", "devices%2Fb");
        assert!(!signed_by(&parse(other.as_bytes()).unwrap(), KEY));
    }

    #[test]
    fn malformed_tokens_name_the_field() {
        for (t, why) in [
            ("SharedAccessSignature se=1&sig=AAAA", "`sr` is missing"),
            ("SharedAccessSignature sr=a&se=1", "`sig` is missing"),
            ("SharedAccessSignature sr=a&sig=AAAA", "`se` is missing"),
            ("SharedAccessSignature sr=a&sig=AAAA&se=soon", "`se` is not"),
            ("SharedAccessSignature sr=a&sig=!!&se=1", "`sig` is not base64"),
            ("SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1", "given twice"),
            ("SharedAccessSignature sr", "name=value"),
        ] {
            assert!(parse(t.as_bytes()).unwrap_err().contains(why), "{t}");
        }
        assert!(!is_token(b"password"));
    }

    #[test]
    fn keys_are_base64_and_long_enough() {
        assert_eq!(decode_key(&Base64::encode_string(KEY)).unwrap(), KEY);
        assert!(decode_key("c2hvcnQ=").unwrap_err().contains("too short"));
        assert!(decode_key("not base64!").unwrap_err().contains("not base64"));
    }
}
