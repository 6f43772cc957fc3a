//! What the hub-rules bench and the `check_counts` example share: the rules document, and the
//! native `Hub`'s side of a check (a host that counts nothing, the SDK's connect).
//! Included with `#[path]`: a file directly in `benches/` would be a bench target of its own.

/// A rules document with `devices` registered devices and per-device topic rules.
pub fn rules(devices: usize) -> String {
    let mut s = String::from(
        "[hub]\nmax-payload = 131072\n\n[identity]\nauthentication = \"none\"\n\n\
         [[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${device.id}/telemetry/#\"]\n\n\
         [[rule]]\neffect = \"deny\"\nactions = [\"publish\"]\ntopics = [\"devices/+/telemetry/private/#\"]\n\n\
         [[rule]]\neffect = \"allow\"\nactions = [\"subscribe\", \"delivery\"]\ntopics = [\"devices/${device.id}/commands/#\", \"broadcast/#\"]\n\n",
    );
    for i in 0..devices {
        s.push_str(&format!("[[device]]\nid = \"dev-{i}\"\ntype = \"sensor\"\ngroups = [\"g{}\"]\n", i % 10));
    }
    s
}

/// A host for the native `Hub` that counts nothing and logs nothing.
pub struct NoHost;

impl hub_rules::hub::HostApi for NoHost {
    fn counter_add(&self, _: &str, delta: i64, _: u64) -> i64 {
        delta
    }
    fn connection_count(&self) -> u32 {
        0
    }
    fn info(&self, _: &str) {}
    fn now_millis(&self) -> u64 {
        0
    }
}

/// The SDK's connect of `client_id` in `tenant`, as the host would pass it.
pub fn guest_connect(tenant: &str, client_id: &str) -> mqtt_policy_guest::Connect {
    mqtt_policy_guest::Connect {
        tenant: tenant.into(),
        client_id: client_id.into(),
        username: None,
        password: None,
        clean_start: true,
        keep_alive: 60,
        protocol: mqtt_policy_guest::Protocol::Mqtt5,
        tls: false,
        certificate: None,
        peer: "127.0.0.1:0".into(),
        resumed: false,
    }
}
