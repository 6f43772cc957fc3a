//! Stored secrets: password and token hashes, verified in constant time.
//!
//! Two formats are read:
//! - Mosquitto's own `mosquitto_passwd` lines' hash part, `$7$ITERATIONS$SALT$HASH`
//!   (PBKDF2-HMAC-SHA512, standard base64), so an existing password file comes over unchanged;
//! - PHC strings `$pbkdf2-sha512$i=ROUNDS,l=64$SALT$HASH` (and `pbkdf2-sha256`), the scheme
//!   [`hash_secret`] writes for new secrets.
//!
//! The verification runs inside the policy on the broker's thread at every connect, under
//! the per-check deadline, so the iteration count is bounded ([`MAX_ITERATIONS`]).

use base64ct::{Base64, Encoding};
use pbkdf2::password_hash::{PasswordHash, PasswordVerifier};
use sha2::Sha512;
use subtle::ConstantTimeEq;

/// Rounds [`hash_secret`] uses for new secrets; chosen so one verification fits well inside
/// the 10 ms default check deadline in wasm (measured figures in BENCHMARKS.md).
pub const DEFAULT_ITERATIONS: u32 = 500;

/// Most iterations a stored hash may ask for: more could not be verified within the default
/// deadline and every connect of that client would time out.
pub const MAX_ITERATIONS: u32 = 2_000;

/// A stored secret hash, parsed once when the rules are compiled.
#[derive(Clone)]
pub enum SecretHash {
    /// `mosquitto_passwd`'s `$7$`: PBKDF2-HMAC-SHA512.
    Mosquitto {
        /// PBKDF2 rounds.
        iterations: u32,
        /// The salt, decoded.
        salt: Vec<u8>,
        /// The derived key, decoded.
        hash: Vec<u8>,
    },
    /// A PHC string of the `pbkdf2` family.
    Phc(String),
}

impl std::fmt::Debug for SecretHash {
    // Never print the hash or salt: a log of the compiled rules must not help an offline attack.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretHash({})", self.scheme())
    }
}

impl SecretHash {
    /// Parses a stored hash. Errors say what is wrong without repeating the hash.
    pub fn parse(text: &str) -> Result<SecretHash, String> {
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("a `$7$` hash has the form `$7$ITERATIONS$SALT$HASH`".to_owned());
            };
            let iterations: u32 =
                iterations.parse().map_err(|_| "`$7$` hash: the iteration count is not a number".to_owned())?;
            let salt = Base64::decode_vec(salt).map_err(|_| "`$7$` hash: the salt is not base64".to_owned())?;
            let hash = Base64::decode_vec(hash).map_err(|_| "`$7$` hash: the hash is not base64".to_owned())?;
            if hash.len() != 64 {
                return Err(format!("`$7$` hash: {} hash bytes, PBKDF2-SHA512 gives 64", hash.len()));
            }
            check_iterations(iterations)?;
            return Ok(SecretHash::Mosquitto { iterations, salt, hash });
        }
        if text.starts_with("$pbkdf2-sha512$") || text.starts_with("$pbkdf2-sha256$") {
            let parsed = PasswordHash::new(text).map_err(|e| format!("PBKDF2 hash: {e}"))?;
            let params = pbkdf2::Params::try_from(&parsed).map_err(|e| format!("PBKDF2 hash: {e}"))?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err("PBKDF2 hash: salt and hash are both required".to_owned());
            }
            check_iterations(params.rounds)?;
            return Ok(SecretHash::Phc(text.to_owned()));
        }
        Err("unknown hash scheme: use a `$7$` hash from mosquitto_passwd or `mqtt-policy hash` \
             (`$pbkdf2-sha512$...`); plain secrets are never stored"
            .to_owned())
    }

    /// The scheme, safe to print: e.g. `pbkdf2-sha512 (500 iterations)`.
    pub fn scheme(&self) -> String {
        match self {
            SecretHash::Mosquitto { iterations, .. } => {
                format!("mosquitto $7$ pbkdf2-sha512 ({iterations} iterations)")
            }
            SecretHash::Phc(text) => {
                let id = text.split('$').nth(1).unwrap_or("pbkdf2");
                match PasswordHash::new(text).ok().and_then(|h| pbkdf2::Params::try_from(&h).ok()) {
                    Some(p) => format!("{id} ({} iterations)", p.rounds),
                    None => id.to_owned(),
                }
            }
        }
    }

    /// Whether `secret` is the one hashed. Always runs the whole derivation and compares in
    /// constant time: a wrong secret costs what a right one does.
    pub fn verify(&self, secret: &[u8]) -> bool {
        match self {
            SecretHash::Mosquitto { iterations, salt, hash } => {
                let mut derived = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(secret, salt, *iterations, &mut derived);
                derived.ct_eq(hash.as_slice()).into()
            }
            SecretHash::Phc(text) => match PasswordHash::new(text) {
                Ok(h) => pbkdf2::Pbkdf2.verify_password(secret, &h).is_ok(),
                Err(_) => false,
            },
        }
    }
}

fn check_iterations(n: u32) -> Result<(), String> {
    if n == 0 {
        return Err("the iteration count must be at least 1".to_owned());
    }
    if n > MAX_ITERATIONS {
        return Err(format!(
            "{n} iterations: at most {MAX_ITERATIONS} can be verified within a connect's deadline \
             (re-hash with `mqtt-policy hash`)"
        ));
    }
    Ok(())
}

/// Hashes a new secret in the default scheme: PBKDF2-HMAC-SHA512, [`DEFAULT_ITERATIONS`]
/// rounds, a 64-byte output, `salt` (16 random bytes from the caller: the policy itself has
/// no randomness). Used by `mqtt-policy hash`.
pub fn hash_secret(secret: &[u8], salt: &[u8], iterations: u32) -> Result<String, String> {
    use pbkdf2::password_hash::{PasswordHasher, SaltString};
    check_iterations(iterations)?;
    let salt = SaltString::encode_b64(salt).map_err(|e| format!("salt: {e}"))?;
    let params = pbkdf2::Params { rounds: iterations, output_length: 64 };
    pbkdf2::Pbkdf2
        .hash_password_customized(secret, Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()), None, params, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing: {e}"))
}

/// A hash that no secret matches in practice, verified in place of a missing entry so that an
/// unknown user name or API key costs the same time as a known one.
pub fn decoy() -> SecretHash {
    SecretHash::Mosquitto { iterations: DEFAULT_ITERATIONS, salt: vec![0x5a; 16], hash: vec![0; 64] }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Debian bookworm's `mosquitto` 2.0.11-1.2+deb12u2 with
    /// `mosquitto_passwd -c -b pw alice 'wonder land'` (the hash part of the line; the broker e2e
    /// test `credentials.rs` makes a fresh one with the real tool on every run).
    const MOSQUITTO_ALICE: &str = "$7$101$RH34QZdrSqGjBOgl$J87JFu3ovEPnBj17Vv1DQUGchSwLktPYvHWj9kxNyU2BKNaPdCQJYaid3tqP99c2u/pwuW3ZGA2UqKDSEPavkg==";

    #[test]
    fn new_hashes_verify_and_wrong_secrets_do_not() {
        let h = hash_secret(b"MP$08VKz!8rXwnR-Q*", &[7; 16], DEFAULT_ITERATIONS).unwrap();
        assert!(h.starts_with("$pbkdf2-sha512$i=500,l=64$"), "{h}");
        let parsed = SecretHash::parse(&h).unwrap();
        assert!(parsed.verify(b"MP$08VKz!8rXwnR-Q*"));
        assert!(!parsed.verify(b"MP$08VKz!8rXwnR-Q"));
        assert!(!parsed.verify(b""));
        assert_eq!(parsed.scheme(), "pbkdf2-sha512 (500 iterations)");
        assert!(!format!("{parsed:?}").contains(h.split('$').nth(3).unwrap()), "Debug never shows the salt");
    }

    #[test]
    fn mosquitto_hashes_are_read_unchanged() {
        // Same derivation as mosquitto's pw__hash: PBKDF2-HMAC-SHA512 over the password, 64 bytes.
        let salt = [1u8; 12];
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(b"secret", &salt, 101, &mut out);
        let line = format!("$7$101${}${}", Base64::encode_string(&salt), Base64::encode_string(&out));
        let h = SecretHash::parse(&line).unwrap();
        assert!(h.verify(b"secret") && !h.verify(b"Secret"));
        assert_eq!(h.scheme(), "mosquitto $7$ pbkdf2-sha512 (101 iterations)");
        let real = SecretHash::parse(MOSQUITTO_ALICE).unwrap();
        assert!(real.verify(b"wonder land"));
        assert!(!real.verify(b"wonder-land") && !real.verify(b"wonder land "));
    }

    #[test]
    fn bad_and_costly_hashes_are_refused_without_echoing_them() {
        for (text, why) in [
            ("hunter2", "unknown hash scheme"),
            ("$6$abc$def", "unknown hash scheme"),
            ("$7$101$salt", "has the form"),
            ("$7$x$AAAA$AAAA", "not a number"),
            ("$7$101$!!$AAAA", "salt is not base64"),
            ("$7$101$AAAA$AAAA", "hash bytes"),
            (
                "$pbkdf2-sha512$i=1000000,l=64$c2FsdHNhbHQ$eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eA",
                "1000000 iterations",
            ),
        ] {
            let e = SecretHash::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
            assert!(text.len() < 8 || !e.contains(text), "{e}");
        }
    }

    #[test]
    fn the_decoy_matches_nothing() {
        assert!(!decoy().verify(b""));
        assert!(!decoy().verify(b"anything"));
    }
}
