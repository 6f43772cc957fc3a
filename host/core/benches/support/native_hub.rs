//! What the hub-rules bench and the `check_counts` example share beside the rules document
//! (`hub_document.rs`): the native `Hub`'s side of a check (a host that counts nothing, the
//! SDK's connect). Included with `#[path]`: a file directly in `benches/` would be a bench
//! target of its own.

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
