//! `mqtt_policy_host::cert` on arbitrary bytes taken as a DER client certificate, a DER
//! tenant CA and (when UTF-8) PEM text: no panic, and
//!
//! - `parse_and_verify` against two real CAs (the `seed-ca-*` files of the corpus) succeeds
//!   exactly when `parse_der` does, with the same record except `chain_verified_by`, which
//!   names one of those CAs only when the issuer is that CA's subject;
//! - a CA that `TenantCa::from_der` accepts keeps the bytes it was given, and checking the
//!   seed device certificates against it does not panic (a fuzzed CA key reaches the
//!   signature check whenever its subject equals the seed's issuer).
//!
//! The seeds were generated once with rcgen 0.14: a P-256 and an Ed25519 CA (basicConstraints,
//! keyUsage), the P-256 one also as PEM, and a device certificate signed by each (the P-256 one
//! with a CN, DNS and URI SANs, an authority key id and a 0x80-led serial).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mqtt_policy_host::cert::{Certificate, TenantCa, parse_and_verify, parse_der, pem_to_der};

const CA_P256: &[u8] = include_bytes!("../corpus/certificate/seed-ca-p256.der");
const CA_ED25519: &[u8] = include_bytes!("../corpus/certificate/seed-ca-ed25519.der");
const DEVICES: [&[u8]; 2] = [
    include_bytes!("../corpus/certificate/seed-device-p256.der"),
    include_bytes!("../corpus/certificate/seed-device-ed25519.der"),
];

static CAS: LazyLock<Vec<TenantCa>> = LazyLock::new(|| {
    vec![TenantCa::from_der("p256", CA_P256).unwrap(), TenantCa::from_der("ed25519", CA_ED25519).unwrap()]
});

fuzz_target!(|data: &[u8]| {
    let plain = parse_der(data);
    let verified = parse_and_verify(data, &CAS);
    match (&plain, &verified) {
        (Ok(p), Ok(v)) => {
            assert_eq!(p.chain_verified_by, None);
            assert_eq!(p, &Certificate { chain_verified_by: None, ..v.clone() });
            if let Some(name) = &v.chain_verified_by {
                let ca = CAS.iter().find(|ca| ca.name() == name).expect("verified by a CA not given");
                assert_eq!(v.issuer, ca.subject(), "verified by a CA whose subject is not the issuer");
            }
        }
        (Err(p), Err(v)) => assert_eq!(p, v),
        _ => panic!("parse_der {plain:?} but parse_and_verify {verified:?}"),
    }

    if let Ok(ca) = TenantCa::from_der("fuzz", data) {
        assert_eq!(ca.der(), data);
        for device in DEVICES {
            let _ = parse_and_verify(device, std::slice::from_ref(&ca));
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pem_to_der(text);
        let _ = TenantCa::from_pem("fuzz", text);
    }
});
