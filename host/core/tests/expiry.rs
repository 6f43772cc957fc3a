//! Sessions whose proof expires (WIT `session-info.expires-at-ms`): hub-rules sets it from a
//! SAS token's `se`; after it every check is denied with a disconnecting denial and one event.

use std::sync::Arc;
use std::time::Duration;

use mqtt_policy_host::events::{MemorySink, now_ms};
use mqtt_policy_host::*;

const KEY: &[u8] = b"device key of d1: thirty-two b..";

fn rules() -> String {
    let key = "ZGV2aWNlIGtleSBvZiBkMTogdGhpcnR5LXR3byBiLi4="; // base64 of KEY
    format!(
        "[sas]\nhostname = \"hub.test\"\n[[device]]\nid = \"d1\"\nsas-key = \"{key}\"\n\
         [[rule]]\neffect = \"allow\"\nactions = [\"publish\", \"subscribe\"]\ntopics = [\"devices/${{device.id}}/#\"]\n"
    )
}

fn connect(expiry_s: u64) -> Connect {
    let mut c = Connect::new("acme", "d1");
    c.username = Some("hub.test/d1/?api-version=2021-04-12".into());
    c.password = Some(hub_rules::sas::sign("hub.test%2Fdevices%2Fd1", KEY, expiry_s, None).into_bytes());
    c
}

#[test]
fn an_expired_session_is_denied_and_disconnected_with_one_event() {
    let engine = Engine::new(Limits::default()).unwrap();
    let module = engine.load_file(guest_artifacts::HUB_RULES.as_ref(), Some(&rules())).unwrap();
    let events = Arc::new(MemorySink::new());
    let mut policy = module.instantiate(Tenant::with_events("acme", events.clone()));

    let expiry_s = now_ms() / 1000 + 2;
    let ConnectDecision::Accept(session, info) = policy.authenticate(&connect(expiry_s)) else {
        panic!("a fresh token is accepted: {:?}", events.take())
    };
    assert_eq!(info.expires_at_ms, Some(expiry_s * 1000));
    assert!(
        format!("{:?}", connect(expiry_s)).contains("password: Some(\"<redacted>\")"),
        "a connect's Debug output never shows the password"
    );
    let publish = Publish { topic: "devices/d1/t", qos: 1, retain: false, payload_size: 1 };
    assert_eq!(policy.authorize_publish(session, &publish), PublishDecision::Allow);
    assert_eq!(policy.authorize_publish(session, &publish), PublishDecision::Allow, "now from the decision cache");
    assert!(policy.expired_sessions(now_ms()).is_empty());
    assert!(events.take().is_empty());

    // The broker's tick asks for expired sessions: reported once, with an event.
    assert_eq!(policy.expired_sessions(expiry_s * 1000), vec![session]);
    // Once: a broker ticking many times a second must not pay again for every session that
    // expired before (its later checks are denied, and disconnect it, anyway).
    assert!(policy.expired_sessions(expiry_s * 1000 + 1).is_empty(), "reported once");
    let reported = events.take();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].outcome, "expired");
    assert_eq!(reported[0].client_id.as_deref(), Some("d1"));
    assert!(reported[0].message.starts_with("IoTHubUnauthorized:"), "{}", reported[0].message);

    // Once the clock passes `se`, every check (cached or not) is a disconnecting denial.
    while now_ms() < expiry_s * 1000 {
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..2 {
        let d = policy.authorize_publish(session, &publish);
        let denial = d.denial().expect("denied after expiry");
        assert!(denial.disconnect && denial.reason == ReasonCode::NotAuthorized, "{denial:?}");
        assert!(denial.message.contains("renew the token and reconnect"), "{}", denial.message);
    }
    let sub = policy.authorize_subscribe(session, &Subscribe { filter: "devices/d1/c", qos: 0 });
    assert!(sub.denial().is_some_and(|d| d.disconnect));
    assert!(events.take().is_empty(), "the expiry was reported already");

    policy.end_session(session);
    assert!(policy.expired_sessions(u64::MAX).is_empty());
    // The reconnect with a fresh token is admitted; an expired one is refused at connect.
    assert!(matches!(policy.authenticate(&connect(now_ms() / 1000 + 3600)), ConnectDecision::Accept(..)));
    let ConnectDecision::Reject(d) = policy.authenticate(&connect(expiry_s)) else { panic!("expired token accepted") };
    assert!(d.message.starts_with("shared access signature expired at se="), "{}", d.message);
}
