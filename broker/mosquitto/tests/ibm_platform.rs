//! The IBM-style example on a listener shared by organizations (tenant from the client id),
//! over the wire: what is allowed arrives, what is refused never does.

use mqtt_policy_testkit as support;
use support::proofs;

use std::time::Duration;

use support::client::{Mqtt, Proto};
use support::{Broker, Setup, field};

const RULES: &str = include_str!("../../../policies/examples/ibm-platform/rules.toml");
const SHORT: Duration = Duration::from_millis(500);

fn broker() -> Broker {
    let setup = Setup {
        options: vec![("tenant_from".into(), "client-id:*:{tenant}:*".into())],
        policies: vec![("acme".into(), support::hub_policy(RULES, &[]))],
        tls: None,
        ..Default::default()
    };
    Broker::start("ibm", setup).unwrap()
}

fn evt(device: &str, event: &str) -> String {
    format!("iot-2/type/sensor/id/{device}/evt/{event}/fmt/json")
}

#[test]
fn allowed_events_arrive_and_refused_ones_never_do() {
    let b = broker();
    for (i, proto) in [Proto::V5, Proto::V311].into_iter().enumerate() {
        let mut app = Mqtt::connected(&proofs::ibm(b.port, proto, &format!("a:acme:dash{i}")));
        assert_eq!(app.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", 1), 1);
        let device = format!("s{i}");
        let mut dev = Mqtt::connected(&proofs::ibm(b.port, proto, &format!("d:acme:sensor:{device}")));
        let ok = dev.publish(&evt(&device, "temp"), 1, false, b"{\"t\":21}");
        let other = dev.publish(&evt("someone-else", "temp"), 1, false, b"{\"t\":99}");
        let big = dev.publish(&evt(&device, "blob"), 1, false, &vec![b'x'; 131_073]);
        if proto == Proto::V5 {
            assert_eq!((ok, other, big), (Some(0), Some(0x87), Some(0x87)));
        }
        let got = app.drain(SHORT);
        assert_eq!(got.len(), 1, "only the allowed event arrives: {got:?}");
        assert_eq!(got[0].0, evt(&device, "temp"));
        b.wait_event("oversize", |e| {
            field(e, "client_id") == format!("d:acme:sensor:{device}") && e["reason_code"] == 0x95
        });
        // The daily quota is 3 messages; only allowed ones count: one so far.
        assert_eq!(dev.publish(&evt(&device, "temp"), 0, false, b"2"), None);
        assert_eq!(dev.publish(&evt(&device, "temp"), 0, false, b"3"), None);
        let fourth = dev.publish(&evt(&device, "temp"), 1, false, b"4");
        if proto == Proto::V5 {
            assert_eq!(fourth, Some(0x87));
        }
        let got = app.drain(SHORT);
        assert_eq!(got.iter().map(|m| m.1.clone()).collect::<Vec<_>>(), vec![b"2".to_vec(), b"3".to_vec()]);
        b.wait_event("quota", |e| {
            field(e, "client_id") == format!("d:acme:sensor:{device}") && e["reason_code"] == 0x97
        });
        dev.disconnect();
        app.disconnect();
    }
}

#[test]
fn retained_flag_is_overridden_live_subscribers_get_it_later_ones_do_not() {
    let b = broker();
    let mut live = Mqtt::connected(&proofs::ibm(b.port, Proto::V5, "a:acme:live"));
    assert_eq!(live.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", 0), 0);
    let mut dev = Mqtt::connected(&proofs::ibm(b.port, Proto::V5, "d:acme:sensor:r1"));
    assert_eq!(dev.publish(&evt("r1", "state"), 1, true, b"on"), Some(0));
    let got = live.drain(SHORT);
    assert_eq!(got.len(), 1, "the live subscriber gets the message");
    b.wait_event("rewrite", |e| field(e, "outcome") == "rewrite" && field(e, "client_id") == "d:acme:sensor:r1");
    let mut later = Mqtt::connected(&proofs::ibm(b.port, Proto::V311, "a:acme:later"));
    assert_eq!(later.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", 0), 0);
    assert!(later.drain(SHORT).is_empty(), "no retained copy was stored");
}

#[test]
fn unknown_organization_is_refused_fail_closed() {
    let b = broker();
    let (_c, code) = Mqtt::connect(&proofs::ibm(b.port, Proto::V5, "d:globex:sensor:1"));
    assert_eq!(code, 0x87);
    b.wait_event("no policy", |e| field(e, "message") == "no policy is loaded for tenant globex");
    let (_c, code) = Mqtt::connect(&proofs::ibm(b.port, Proto::V311, "no-org-here"));
    assert_eq!(code, 5);
    b.wait_event("pattern", |e| field(e, "message").starts_with("client id does not match the tenant pattern"));
}
