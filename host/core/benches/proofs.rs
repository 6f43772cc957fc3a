//! What each proof of identity costs at connect: hub-rules' `authenticate` with a device token
//! (PBKDF2-SHA512, the default 500 rounds and Mosquitto's 101), a SAS token (HMAC-SHA256), a
//! certificate (as parsed and verified by the host: no hash in the policy) and no proof, through
//! the component and on the native `Hub` (the same code compiled for the host).
//!
//! `cargo bench -p mqtt-policy-host --bench proofs`
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hub_rules::hub::{HostApi, Hub};
use mqtt_policy_host::*;

const KEY: &[u8] = b"device key of d1: thirty-two b..";
const KEY_B64: &str = "ZGV2aWNlIGtleSBvZiBkMTogdGhpcnR5LXR3byBiLi4=";

fn rules() -> String {
    let token = hub_rules::credentials::hash_secret(b"d-token-7Qv!m2Xp9Lz4", &[7; 16], 500).unwrap();
    let mosquitto = hub_rules::credentials::hash_secret(b"d-token-7Qv!m2Xp9Lz4", &[7; 16], 101).unwrap();
    format!(
        "[sas]\nhostname = \"hub.test\"\n\
         [[device]]\nid = \"tok\"\ntoken-hash = \"{token}\"\n\
         [[device]]\nid = \"tok101\"\ntoken-hash = \"{mosquitto}\"\n\
         [[device]]\nid = \"sas\"\nsas-key = \"{KEY_B64}\"\n\
         [[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${{device.id}}/#\"]\n"
    )
}

fn connects() -> Vec<(&'static str, Connect)> {
    let token = |id: &str| {
        let mut c = Connect::new("bench", id);
        c.username = Some("use-token-auth".into());
        c.password = Some(b"d-token-7Qv!m2Xp9Lz4".to_vec());
        c
    };
    let mut sas = Connect::new("bench", "sas");
    sas.username = Some("hub.test/sas/?api-version=2021-04-12".into());
    sas.password = Some(hub_rules::sas::sign("hub.test%2Fdevices%2Fsas", KEY, 4_102_444_800, None).into_bytes());
    let mut wrong = token("tok");
    wrong.password = Some(b"d-token-7Qv!m2Xp9Lz5".to_vec());
    vec![
        ("token pbkdf2-sha512 500", token("tok")),
        ("wrong token pbkdf2-sha512 500", wrong),
        ("token mosquitto $7$ 101", token("tok101")),
        ("sas hmac-sha256", sas),
    ]
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

fn native(c: &Connect) -> mqtt_policy_guest::Connect {
    mqtt_policy_guest::Connect {
        tenant: c.tenant.clone(),
        client_id: c.client_id.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
        clean_start: true,
        keep_alive: 60,
        protocol: mqtt_policy_guest::Protocol::Mqtt5,
        tls: false,
        certificate: None,
        peer: c.peer.clone(),
        resumed: false,
    }
}

fn bench(c: &mut Criterion) {
    let text = rules();
    let engine = Engine::new(Limits::default()).unwrap();
    let wasm = std::fs::read(guest_artifacts::HUB_RULES).unwrap();
    let module = engine.load_bytes("proofs", &wasm, Some(&text)).unwrap();
    let mut policy = module.instantiate(Tenant::new("bench"));
    let hub = Hub::compile(&text).unwrap();
    let mut group = c.benchmark_group("proofs");
    for (name, connect) in connects() {
        group.bench_function(format!("component/{name}"), |b| {
            b.iter(|| {
                let d = policy.authenticate(black_box(&connect));
                if let ConnectDecision::Accept(s, _) = d {
                    policy.end_session(s);
                }
            })
        });
        let n = native(&connect);
        group.bench_function(format!("native/{name}"), |b| b.iter(|| black_box(hub.authenticate(&n, &NoHost).is_ok())));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
