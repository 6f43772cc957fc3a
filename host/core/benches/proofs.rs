//! What each proof of identity costs at connect: hub-rules' `authenticate` with a device token
//! (PBKDF2-SHA512, the default 500 rounds and Mosquitto's `$7$` 101), a SAS token (HMAC-SHA256),
//! a certificate and no proof, through the component and on the native `Hub` (the same hub-rules
//! code compiled for the host, in the same profile as this bench).
//!
//! The certificate rows include what the gateway does first at such a connect: the host parses the
//! DER and verifies it against the tenant's CA (`PolicyModule::verify_certificate`), then the policy
//! checks the verified CN; `host/certificate: parse + verify` is that first part alone.
//!
//! `cargo bench --workspace --locked --bench proofs` (release: the native side must be optimised
//! as a release build is, or it is no floor).
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hub_rules::hub::{HostApi, Hub};
use mqtt_policy_host::embedded::{self, EmbeddedCa};
use mqtt_policy_host::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

const KEY: &[u8] = b"device key of d1: thirty-two b..";
const KEY_B64: &str = "ZGV2aWNlIGtleSBvZiBkMTogdGhpcnR5LXR3byBiLi4=";
const TOKEN: &[u8] = b"d-token-7Qv!m2Xp9Lz4";
const RULE: &str = "[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${device.id}/#\"]\n";

/// Devices proving themselves with a token (two hash schemes) or a SAS token.
fn secrets_rules() -> String {
    let token = hub_rules::credentials::hash_secret(TOKEN, &[7; 16], 500).unwrap();
    let mosquitto = hub_rules::credentials::hash_secret(TOKEN, &[7; 16], 101).unwrap();
    format!(
        "[sas]\nhostname = \"hub.test\"\n\
         [[device]]\nid = \"tok\"\ntoken-hash = \"{token}\"\n\
         [[device]]\nid = \"tok101\"\ntoken-hash = \"{mosquitto}\"\n\
         [[device]]\nid = \"sas\"\nsas-key = \"{KEY_B64}\"\n{RULE}"
    )
}

/// A device identified by its certificate's CN, which a tenant CA must have verified.
fn certificate_rules(ca_pem: &str) -> String {
    format!(
        "[hub]\nrequire-mtls = true\n[identity]\nfrom = \"certificate\"\n\
         [[ca]]\nname = \"bench-ca\"\npem = \"\"\"\n{ca_pem}\"\"\"\n\
         [[device]]\nid = \"press-1\"\n{RULE}"
    )
}

/// A registered device admitted without any proof: the floor of an `authenticate` call.
fn open_rules() -> String {
    format!("[identity]\nauthentication = \"none\"\n[[device]]\nid = \"open\"\n{RULE}")
}

/// A CA and a client certificate (DER) for `press-1` signed by it, as rcgen makes them (ECDSA P-256).
fn pki() -> (String, Vec<u8>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, "press-1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let der = leaf.signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key)).unwrap().der().to_vec();
    (ca_pem, der)
}

struct NoHost;

impl HostApi for NoHost {
    fn counter_add(&self, _: &str, delta: i64, _: u64) -> i64 {
        delta
    }
    fn connection_count(&self) -> u32 {
        0
    }
    fn info(&self, _: &str) {}
    fn now_millis(&self) -> u64 {
        1_796_083_200_000
    }
}

fn native_certificate(c: cert::Certificate) -> mqtt_policy_guest::Certificate {
    mqtt_policy_guest::Certificate {
        subject_cn: c.subject_cn,
        subject: c.subject,
        issuer: c.issuer,
        serial: c.serial,
        sha256: c.sha256,
        not_before: c.not_before,
        not_after: c.not_after,
        dns_names: c.dns_names,
        uris: c.uris,
        authority_key_id: c.authority_key_id,
        subject_key_id: c.subject_key_id,
        chain_verified_by: c.chain_verified_by,
    }
}

fn native(c: &Connect) -> mqtt_policy_guest::Connect {
    mqtt_policy_guest::Connect {
        tenant: c.tenant.clone(),
        client_id: c.client_id.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
        clean_start: true,
        keep_alive: 60,
        protocol: mqtt_policy_guest::Protocol::Mqtt5,
        tls: c.tls,
        certificate: c.certificate.clone().map(native_certificate),
        peer: c.peer.clone(),
        resumed: false,
    }
}

/// One proof: the policy (as a component and as a native `Hub`) and the connect presenting it.
struct Case {
    name: &'static str,
    policy: usize,
    connect: Connect,
    /// The client certificate the host verifies first, for the certificate proof.
    der: Option<Vec<u8>>,
}

fn cases(certificate: Vec<u8>) -> Vec<Case> {
    let token = |id: &str, secret: &[u8]| {
        let mut c = Connect::new("bench", id);
        c.username = Some("use-token-auth".into());
        c.password = Some(secret.to_vec());
        c
    };
    let mut sas = Connect::new("bench", "sas");
    sas.username = Some("hub.test/sas/?api-version=2021-04-12".into());
    sas.password = Some(hub_rules::sas::sign("hub.test%2Fdevices%2Fsas", KEY, 4_102_444_800, None).into_bytes());
    let mut cert = Connect::new("bench", "press-1");
    cert.tls = true;
    let case = |name, policy, connect| Case { name, policy, connect, der: None };
    vec![
        case("token pbkdf2-sha512 500", 0, token("tok", TOKEN)),
        case("wrong token pbkdf2-sha512 500", 0, token("tok", b"d-token-7Qv!m2Xp9Lz5")),
        case("token mosquitto $7$ 101", 0, token("tok101", TOKEN)),
        case("sas hmac-sha256", 0, sas),
        Case { name: "certificate ecdsa-p256", policy: 1, connect: cert, der: Some(certificate) },
        case("no proof (authentication = none)", 2, Connect::new("bench", "open")),
    ]
}

fn bench(c: &mut Criterion) {
    let (ca_pem, der) = pki();
    let documents = [secrets_rules(), certificate_rules(&ca_pem), open_rules()];
    let engine = Engine::new(Limits::default()).unwrap();
    let cas = [EmbeddedCa { name: "bench-ca".into(), pem: ca_pem.clone() }];
    let modules: Vec<PolicyModule> = documents
        .iter()
        .map(|text| {
            let wasm = embedded::embed_all(guest_artifacts::HUB_RULES_WASM, text, &cas).unwrap();
            engine.load_bytes("proofs", &wasm, None).unwrap()
        })
        .collect();
    let mut policies: Vec<Policy> = modules.iter().map(|m| m.instantiate(Tenant::new("bench"))).collect();
    let hubs: Vec<Hub> = documents.iter().map(|t| Hub::compile(t).unwrap()).collect();

    let mut group = c.benchmark_group("proofs");
    group.bench_function("host/certificate: parse + verify", |b| {
        b.iter(|| black_box(modules[1].verify_certificate(black_box(&der)).unwrap()))
    });
    for case in cases(der.clone()) {
        let (module, hub) = (&modules[case.policy], &hubs[case.policy]);
        let policy = &mut policies[case.policy];
        // The connect as the policy sees it: with the certificate verified by the host.
        let with_certificate = |connect: &Connect| {
            let mut connect = connect.clone();
            if let Some(der) = &case.der {
                connect.certificate = Some(module.verify_certificate(der).unwrap());
            }
            connect
        };
        // Each proof is checked to do what it says before it is measured.
        let expect_accept = !case.name.starts_with("wrong");
        let d = policy.authenticate(&with_certificate(&case.connect));
        assert_eq!(matches!(d, ConnectDecision::Accept(..)), expect_accept, "{}: {d:?}", case.name);
        if let ConnectDecision::Accept(s, _) = d {
            policy.end_session(s);
        }
        assert_eq!(hub.authenticate(&native(&with_certificate(&case.connect)), &NoHost).is_ok(), expect_accept);

        group.bench_function(format!("component/{}", case.name), |b| {
            b.iter(|| {
                let connect = with_certificate(black_box(&case.connect));
                if let ConnectDecision::Accept(s, _) = policy.authenticate(&connect) {
                    policy.end_session(s);
                }
            })
        });
        group.bench_function(format!("native/{}", case.name), |b| {
            b.iter(|| {
                let connect = native(&with_certificate(black_box(&case.connect)));
                black_box(hub.authenticate(&connect, &NoHost).is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
