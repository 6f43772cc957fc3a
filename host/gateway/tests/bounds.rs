//! What clients can make a gateway keep is bounded: tenant names a client makes up (through a
//! client-id pattern) create no lasting tenant and share one event budget; offline sessions are
//! bounded, the longest away ended first.

use std::sync::Arc;
use std::time::Instant;

use mqtt_policy_gateway::events::MAX_EVENTS_PER_SECOND;
use mqtt_policy_gateway::{
    Config, ConnectOutcome, FailMode, Gateway, Hello, MAX_OFFLINE_SESSIONS, TenantSource, Worker,
};
use mqtt_policy_host::ReasonCode;
use mqtt_policy_host::events::MemorySink;

const RULES: &str = "[identity]\nauthentication = \"none\"\n\n[[rule]]\neffect = \"allow\"\nactions = [\"publish\"]\ntopics = [\"devices/${device.id}/#\"]\n";

/// A policy directory holding `acme.wasm`, removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("mqtt-policy-gateway-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = mqtt_policy_host::embedded::embed_all(guest_artifacts::HUB_RULES_WASM, RULES, &[]).unwrap();
        std::fs::write(dir.join("acme.wasm"), wasm).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gateway(dir: &Dir, fail_mode: FailMode) -> (Arc<Gateway>, Arc<MemorySink>) {
    let mut config = Config::new(&dir.0, TenantSource::parse("client-id:d:{tenant}:*").unwrap());
    config.fail_mode = fail_mode;
    let events = Arc::new(MemorySink::new());
    (Gateway::with_sink(config, Some(events.clone())).unwrap(), events)
}

#[test]
fn tenants_named_by_clients_create_no_lasting_state() {
    let dir = Dir::new("unknown-tenants");
    let (gw, events) = gateway(&dir, FailMode::Closed);
    let mut w: Worker<u32> = Worker::new(gw.clone());
    let kept = gw.tenant_count();
    assert_eq!(kept, 1, "acme, from its file");
    let started = Instant::now();
    let clients = 5_000u32;
    for i in 0..clients {
        let id = format!("d:made-up-{i}:x");
        match w.connect(i, &Hello::new(&id)) {
            ConnectOutcome::Reject(d) => {
                assert_eq!(d.reason, ReasonCode::ServerUnavailable);
                assert_eq!(d.message, format!("no policy is loaded for tenant made-up-{i}"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(gw.tenant_count(), kept, "no tenant was kept for a made-up name");
    let seen = events.take();
    let rejects: Vec<_> = seen.iter().filter(|e| e.outcome == "reject").collect();
    assert_eq!(rejects[0].tenant, "made-up-0", "events still name the tenant the client asked for");
    // One budget for all made-up names: a client cannot multiply it by inventing tenants.
    let seconds = started.elapsed().as_secs() + 2;
    assert!(rejects.len() as u64 <= seconds * u64::from(MAX_EVENTS_PER_SECOND), "{} in {seconds} s", rejects.len());
    if started.elapsed().as_millis() < 900 {
        assert!(rejects.len() < clients as usize, "cut at the shared budget");
    }
    // The tenant with a file still answers, with its own budget.
    assert!(matches!(w.connect(clients, &Hello::new("d:acme:d1")), ConnectOutcome::Accept { .. }));
    assert_eq!(gw.tenant("acme").connection_count(), 1, "the kept tenant is the one its policy counts in");
}

#[test]
fn fail_open_clients_of_made_up_tenants_leave_nothing_behind() {
    let dir = Dir::new("unknown-open");
    let (gw, events) = gateway(&dir, FailMode::Open);
    let mut w: Worker<u32> = Worker::new(gw.clone());
    for i in 0..1000u32 {
        let id = format!("d:open-{i}:x");
        // MQTT 3.1.1 clean sessions: the broker ends them with the connection (MQTT 5
        // sessions are kept offline, bounded, since the broker does not say when they expire).
        let hello = Hello { protocol: mqtt_policy_host::Protocol::Mqtt311, ..Hello::new(&id) };
        assert_eq!(w.connect(i, &hello), ConnectOutcome::Defer);
        w.disconnect(&i);
    }
    w.tick(Instant::now());
    assert_eq!(w.session_count(), 0);
    assert_eq!(gw.tenant_count(), 1);
    let seen = events.take();
    assert!(seen.iter().any(|e| e.tenant == "open-0" && e.outcome == "defer"), "events are still written");
}

fn persistent(client_id: &str) -> Hello<'_> {
    Hello { clean_start: false, ..Hello::new(client_id) }
}

#[test]
fn the_offline_bound_ends_the_longest_away_session_not_one_that_came_back() {
    let dir = Dir::new("offline-bound");
    let (gw, _) = gateway(&dir, FailMode::Open);
    let mut w: Worker<u32> = Worker::new(gw);
    // The device of key 0 goes away, comes back on the same key (an HTTP adapter's key is
    // the client id), and after every other session has gone away, goes away again: it is
    // then the most recently away, and the sessions are exactly at the bound.
    let device = "d:open:device";
    assert!(matches!(w.connect(0, &persistent(device)), ConnectOutcome::Defer));
    w.disconnect(&0);
    assert!(matches!(w.connect(0, &persistent(device)), ConnectOutcome::Defer));
    for i in 1..MAX_OFFLINE_SESSIONS as u32 {
        assert!(matches!(w.connect(i, &persistent(&format!("d:open:{i}"))), ConnectOutcome::Defer));
        w.disconnect(&i);
    }
    w.disconnect(&0);
    assert_eq!(w.offline_count(), MAX_OFFLINE_SESSIONS, "none was ended: the bound is not passed");
    assert!(w.knows(&0), "the session that went away last is kept");
    // One more: the longest away (key 1) is ended, and only it.
    let last = MAX_OFFLINE_SESSIONS as u32;
    assert!(matches!(w.connect(last, &persistent("d:open:last")), ConnectOutcome::Defer));
    w.disconnect(&last);
    assert_eq!(w.offline_count(), MAX_OFFLINE_SESSIONS);
    assert!(w.knows(&0) && w.knows(&2) && w.knows(&last));
    assert!(!w.knows(&1), "the longest away is ended");
}
