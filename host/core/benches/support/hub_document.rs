//! The rules document the hub-rules measurements share (the `hub_rules` bench, the
//! `check_counts` example, `mqtt-policy-serve`'s `decisions` example): included with `#[path]`,
//! as it needs nothing but `std`.

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
