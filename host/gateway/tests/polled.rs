//! The policy directory watched without a thread ([`PolledWatcher`], what the Mosquitto plugin
//! uses with a compiler): changed files compile one at a time in child processes, a file removed
//! while it compiles never comes into force, a touched but unchanged file is not loaded again,
//! and a rescan leaves a running compile of an unchanged file alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_policy_gateway::TenantCas;
use mqtt_policy_gateway::directory::{Latest, PolledWatcher, Scanner, Tenants};
use mqtt_policy_host::events::{EventSink, MemorySink};
use mqtt_policy_host::{Engine, Limits, Ticking};

/// `mqtt-policy-compile`, built beside the test binaries by `cargo test --workspace`.
fn compiler() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join("mqtt-policy-compile");
    assert!(p.exists(), "{} not found: cargo build --workspace --bins", p.display());
    p
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mqtt-policy-polled-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, tenant: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{tenant}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{tenant}.wasm"))).unwrap();
}

fn watcher(dir: &Path) -> (PolledWatcher, Arc<Latest>, Arc<MemorySink>) {
    let engine = Engine::configured(Limits::default(), Some(&compiler()), Ticking::Thread).unwrap();
    let events = Arc::new(MemorySink::new());
    let e = events.clone();
    let tenants = Arc::new(Tenants::new(Arc::new(move |_: &str| -> Arc<dyn EventSink> { e.clone() }), events.clone()));
    let scanner = Scanner::new(dir, None, engine, tenants, TenantCas::new());
    let latest = Arc::new(Latest::default());
    (PolledWatcher::new(scanner, Duration::from_millis(10), latest.clone()), latest, events)
}

/// The tests count this process's compiler children: one test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Compiler children of this process now.
fn compiling_children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
            stat.contains("(mqtt-policy-com") && after.split(' ').nth(1) == Some(me.as_str())
        })
        .count()
}

fn outcomes(events: &MemorySink, outcome: &str) -> Vec<String> {
    events.take().into_iter().filter(|e| e.outcome == outcome).map(|e| e.tenant).collect()
}

/// Polls until `done` or 60 s.
fn pump(w: &mut PolledWatcher, mut done: impl FnMut(&PolledWatcher) -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done(w) {
        assert!(Instant::now() < until, "not done within 60 s");
        w.poll(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn changed_files_compile_one_at_a_time_and_each_is_published() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = dir("sequential");
    let hello = std::fs::read(guest_artifacts::HELLO).unwrap();
    let misbehave = std::fs::read(guest_artifacts::MISBEHAVE).unwrap();
    write(&d, "acme", &hello);
    write(&d, "globex", &misbehave);
    let (mut w, latest, events) = watcher(&d);
    w.poll(Instant::now() + Duration::from_secs(1));
    assert!(w.loading());
    assert_eq!(compiling_children(), 1, "one compile at a time, the other file waits");
    pump(&mut w, |w| !w.loading());
    let mut loaded = outcomes(&events, "loaded");
    loaded.sort();
    assert_eq!(loaded, ["acme", "globex"]);
    assert_eq!(latest.tenants(), ["acme", "globex"]);

    // Touched, not changed: not loaded (nor validated) again. A rescan loads it.
    let g = latest.generation();
    write(&d, "acme", &hello);
    w.poll(Instant::now() + Duration::from_secs(2));
    pump(&mut w, |w| !w.loading());
    assert_eq!((latest.generation(), outcomes(&events, "loaded").len()), (g, 0), "same bytes");
    w.rescan();
    w.poll(Instant::now());
    pump(&mut w, |w| !w.loading());
    assert_eq!(outcomes(&events, "loaded").len(), 2, "a rescan reads every file");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_file_removed_while_it_compiles_does_not_come_into_force_and_a_rescan_keeps_a_compile_running() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = dir("removed");
    let hello = std::fs::read(guest_artifacts::HELLO).unwrap();
    let (mut w, latest, events) = watcher(&d);
    write(&d, "acme", &hello);
    w.poll(Instant::now() + Duration::from_secs(1));
    assert!(w.loading(), "its compile started");
    // A rescan of the unchanged file leaves that compile running (it would otherwise start
    // over at every SIGHUP).
    w.rescan();
    w.poll(Instant::now());
    assert_eq!(compiling_children(), 1);
    std::fs::remove_file(d.join("acme.wasm")).unwrap();
    w.poll(Instant::now() + Duration::from_secs(2));
    assert!(!w.loading(), "the load of the removed file was dropped");
    assert_eq!(compiling_children(), 0, "its compiler was killed (and reaped)");
    for _ in 0..20 {
        w.poll(Instant::now());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(latest.generation(), 0, "nothing was published");
    assert_eq!(outcomes(&events, "file-removed"), ["acme"]);
    std::fs::remove_dir_all(&d).unwrap();
}
