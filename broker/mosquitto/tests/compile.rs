//! Policies compiled in the bounded child process (`plugin_opt_compiler`, the
//! `mqtt-policy-compile` binary): they load and answer as usual; a compile bomb dropped into the
//! policy directory is stopped by the time bound with one `load-failed` event naming it, and the
//! last good policy keeps answering.

use mqtt_policy_testkit as support;

use support::client::{Mqtt, Opts, Proto};
use support::{Broker, Setup, deploy, field};

#[test]
fn policies_compile_in_the_bounded_child_and_a_compile_bomb_is_one_event() {
    let hello = std::fs::read(guest_artifacts::HELLO).unwrap();
    let compiler = support::compiler_path();
    let setup =
        Setup::tenant("acme", hello).option("compiler", compiler.to_str().unwrap()).option("compile_time_ms", "1000");
    let mut b = Broker::start("compile", setup).unwrap();
    let loaded = b.wait_event("loaded", |ev| field(ev, "outcome") == "loaded");
    assert_eq!(field(&loaded, "tenant"), "acme");
    let mut c = Mqtt::connected(&Opts::new(b.port, Proto::V5, "sensor-1"));
    assert!(matches!(c.publish("devices/sensor-1/temp", 1, false, b"21"), Some(0 | 0x10)));
    assert_eq!(c.publish("devices/sensor-2/temp", 1, false, b"21"), Some(0x87));

    deploy(&b.policy_dir, "acme", &std::fs::read(guest_artifacts::COMPILE_BOMB).unwrap());
    let failed = b.wait_event("load-failed", |ev| field(ev, "outcome") == "load-failed");
    assert_eq!(field(&failed, "tenant"), "acme");
    let message = field(&failed, "message");
    assert!(message.contains("acme.wasm cannot be compiled within its bounds"), "{failed}");
    assert!(message.contains("compiling took longer than 1000 ms (compile_time)"), "{failed}");

    assert!(matches!(c.publish("devices/sensor-1/temp", 1, false, b"22"), Some(0 | 0x10)), "the last good policy");
    assert_eq!(c.publish("devices/sensor-2/temp", 1, false, b"22"), Some(0x87));
    Mqtt::connected(&Opts::new(b.port, Proto::V311, "sensor-3")).disconnect();
    assert!(c.is_alive());
    assert!(b.alive(), "{}", b.log());
    let failures = b.events().iter().filter(|ev| field(ev, "outcome") == "load-failed").count();
    assert_eq!(failures, 1, "one event for the file");
}
