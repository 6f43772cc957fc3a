//! A Mosquitto 2.x plugin (plugin API v5) that enforces mqtt-policy WebAssembly policies.
//!
//! Build it with `cargo build --release -p mqtt-policy-mosquitto` and load
//! `target/release/libmqtt_policy_mosquitto.so` with `plugin` in mosquitto.conf; see
//! [`config`] for the `plugin_opt_*` options and the README for the reason-code mapping.
//!
//! Every callback runs on the broker's single thread. Nothing slow happens there: policies
//! are compiled and validated by a watcher thread ([`directory`]) and swapped in at the next
//! callback. No panic crosses the FFI boundary: one is caught and answered with a denial.

pub mod adapter;
pub mod config;
pub mod directory;
pub mod ffi;
pub mod notify;
pub mod tenancy;

use std::ffi::{CStr, CString, c_int, c_void};
use std::fs::OpenOptions;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use mqtt_policy_host::events::{EventSink, JsonLinesSink};
use mqtt_policy_host::{Engine, Limits};

use adapter::{Adapter, ClientHello, MonitorQueue, TenantSink};
use config::{Config, EventTarget};
use directory::{Scanner, Tenants, Watcher};
use ffi::{Broker, Callback, EvtAclCheck, EvtBasicAuth, EvtDisconnect, EvtMessage, Opt, PluginId, err, event};

/// Everything one loaded plugin instance owns (one per `plugin` line, or per listener with
/// `per_listener_settings true`).
struct Instance {
    broker: Broker,
    id: *mut PluginId,
    adapter: Adapter,
    monitor: Arc<MonitorQueue>,
    // Dropped last: stops the watcher thread.
    watcher: Watcher,
}

const CALLBACKS: &[(c_int, Callback)] = &[
    (event::BASIC_AUTH, on_basic_auth),
    (event::ACL_CHECK, on_acl_check),
    (event::MESSAGE, on_message),
    (event::DISCONNECT, on_disconnect),
    (event::RELOAD, on_reload),
    (event::TICK, on_tick),
];

/// Mosquitto asks which plugin interface this library speaks.
///
/// # Safety
/// Called by Mosquitto with a valid array of `count` versions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_version(count: c_int, versions: *const c_int) -> c_int {
    if versions.is_null() || count <= 0 {
        return -1;
    }
    let versions = unsafe { std::slice::from_raw_parts(versions, count as usize) };
    if versions.contains(&ffi::PLUGIN_VERSION) { ffi::PLUGIN_VERSION } else { -1 }
}

/// Mosquitto loads the plugin: parse options, load every policy, start the watcher,
/// register the callbacks.
///
/// # Safety
/// Called by Mosquitto with valid pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut PluginId,
    userdata: *mut *mut c_void,
    options: *mut Opt,
    option_count: c_int,
) -> c_int {
    let broker = match unsafe { Broker::resolve() } {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mqtt-policy: {e}");
            return err::NOT_SUPPORTED;
        }
    };
    let result = catch_unwind(AssertUnwindSafe(|| unsafe { init(broker, identifier, options, option_count) }));
    match result {
        Ok(Ok(instance)) => {
            let ptr = Box::into_raw(instance);
            for &(ev, cb) in CALLBACKS {
                let rc = unsafe { (broker.callback_register)(identifier, ev, cb, std::ptr::null(), ptr.cast()) };
                if rc != err::SUCCESS {
                    broker.log(ffi::log::ERR, &format!("registering callback for event {ev} failed ({rc})"));
                    unsafe { unregister(&broker, identifier) };
                    drop(unsafe { Box::from_raw(ptr) });
                    return rc;
                }
            }
            unsafe { *userdata = ptr.cast() };
            err::SUCCESS
        }
        Ok(Err(message)) => {
            broker.log(ffi::log::ERR, &message);
            err::INVAL
        }
        Err(_) => {
            broker.log(ffi::log::ERR, "initialisation panicked");
            err::UNKNOWN
        }
    }
}

/// Mosquitto unloads the plugin.
///
/// # Safety
/// `userdata` is what `mosquitto_plugin_init` stored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(userdata: *mut c_void, _options: *mut Opt, _count: c_int) -> c_int {
    if userdata.is_null() {
        return err::SUCCESS;
    }
    let instance = unsafe { Box::from_raw(userdata.cast::<Instance>()) };
    unsafe { unregister(&instance.broker, instance.id) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
    err::SUCCESS
}

unsafe fn unregister(broker: &Broker, id: *mut PluginId) {
    for &(ev, cb) in CALLBACKS {
        unsafe { (broker.callback_unregister)(id, ev, cb, std::ptr::null()) };
    }
}

unsafe fn init(broker: Broker, id: *mut PluginId, options: *mut Opt, count: c_int) -> Result<Box<Instance>, String> {
    let mut pairs = Vec::new();
    if !options.is_null() {
        for o in unsafe { std::slice::from_raw_parts(options, count.max(0) as usize) } {
            let key = unsafe { ffi::str_or_none(o.key) }.unwrap_or("");
            let value = unsafe { ffi::str_or_none(o.value) }.unwrap_or("");
            pairs.push((key, value));
        }
    }
    let config = Config::parse(pairs).map_err(|e| e.to_string())?;
    let engine = Engine::new(Limits {
        deadline: config.deadline,
        setup_deadline: config.setup_deadline,
        memory: config.memory_bytes,
    })
    .map_err(|e| e.to_string())?;

    let lines: Option<Arc<dyn EventSink>> = match &config.events {
        EventTarget::Stderr => Some(Arc::new(JsonLinesSink::new(std::io::stderr()))),
        EventTarget::None => None,
        EventTarget::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("plugin_opt_events: cannot open {}: {e}", path.display()))?;
            Some(Arc::new(JsonLinesSink::new(file)))
        }
    };
    let monitor = Arc::new(MonitorQueue::default());
    let monitor_config = config.monitor.clone();
    let queue = monitor.clone();
    let tenants = Arc::new(Tenants::new(Arc::new(move |name: &str| -> Arc<dyn EventSink> {
        let monitor = monitor_config.as_ref().and_then(|m| m.topic_for(name)).map(|t| (t, queue.clone()));
        Arc::new(TenantSink { lines: lines.clone(), monitor })
    })));

    let only = match &config.tenant {
        tenancy::TenantSource::Fixed(t) => Some(t.clone()),
        _ => None,
    };
    if !config.policy_dir.is_dir() {
        broker.log(
            ffi::log::WARNING,
            &format!("policy directory {} is not readable yet; watching it", config.policy_dir.display()),
        );
    }
    let mut scanner = Scanner::new(&config.policy_dir, only, engine.clone(), tenants.clone());
    let initial = scanner.scan(false);
    broker.log(
        ffi::log::NOTICE,
        &format!(
            "{} polic{} loaded from {} ({})",
            initial.len(),
            if initial.len() == 1 { "y" } else { "ies" },
            config.policy_dir.display(),
            initial.iter().map(|l| l.tenant.as_str()).collect::<Vec<_>>().join(", ")
        ),
    );
    let pending = Arc::new(AtomicBool::new(false));
    let (watcher, updates) = Watcher::spawn(scanner, config.reload_poll, pending.clone());
    let adapter = Adapter::new(config, engine, tenants, initial, updates, pending);
    Ok(Box::new(Instance { broker, id, adapter, monitor, watcher }))
}

/// Runs a callback body with panics caught: a panic answers `on_panic` (a denial).
fn guarded(userdata: *mut c_void, on_panic: c_int, f: impl FnOnce(&mut Instance) -> c_int) -> c_int {
    if userdata.is_null() {
        return on_panic;
    }
    // Safety: userdata is the Instance registered with this callback; the broker calls
    // callbacks on its one thread only, so this is the only reference.
    let instance = unsafe { &mut *userdata.cast::<Instance>() };
    let rc = match catch_unwind(AssertUnwindSafe(|| f(instance))) {
        Ok(rc) => rc,
        Err(_) => {
            instance.broker.log(ffi::log::ERR, "a check panicked; answered with a denial");
            on_panic
        }
    };
    flush_monitor(instance);
    rc
}

fn flush_monitor(instance: &Instance) {
    for (topic, payload) in instance.monitor.drain() {
        let (Ok(topic), Ok(len)) = (CString::new(topic), c_int::try_from(payload.len())) else { continue };
        unsafe {
            (instance.broker.broker_publish_copy)(
                std::ptr::null(),
                topic.as_ptr(),
                len,
                payload.as_ptr().cast(),
                0,
                false,
                std::ptr::null_mut(),
            )
        };
    }
}

unsafe extern "C" fn on_basic_auth(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::AUTH, |inst| {
        let evt = unsafe { &*data.cast::<EvtBasicAuth>() };
        let b = inst.broker;
        let client = evt.client;
        let client_id = unsafe { ffi::str_or_none((b.client_id)(client)) }.unwrap_or("");
        let username = unsafe { ffi::str_or_none(evt.username) };
        let password = (!evt.password.is_null()).then(|| unsafe { CStr::from_ptr(evt.password) }.to_bytes());
        let peer = unsafe { ffi::str_or_none((b.client_address)(client)) }.unwrap_or("");
        let hello = ClientHello {
            client_id,
            username,
            password,
            clean_start: unsafe { (b.client_clean_session)(client) },
            keep_alive: u16::try_from(unsafe { (b.client_keepalive)(client) }).unwrap_or(u16::MAX),
            protocol_version: unsafe { (b.client_protocol_version)(client) },
            certificate: b.certificate_der(client),
            peer,
        };
        let outcome = inst.adapter.connect(client as usize, &hello);
        if outcome.rc == err::SUCCESS {
            if let Some(name) = outcome.username.and_then(|u| CString::new(u).ok()) {
                // The device id becomes the broker's user name, so its logs and later checks show it.
                unsafe { (b.set_username)(client, name.as_ptr()) };
            }
        }
        outcome.rc
    })
}

unsafe extern "C" fn on_acl_check(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::ACL_DENIED, |inst| {
        let evt = unsafe { &*data.cast::<EvtAclCheck>() };
        if evt.topic.is_null() {
            return err::ACL_DENIED;
        }
        let topic = unsafe { CStr::from_ptr(evt.topic) }.to_str().map_err(|_| ());
        inst.adapter.acl(
            evt.client as usize,
            evt.access,
            topic,
            evt.topic as usize,
            evt.qos,
            evt.retain,
            evt.payloadlen,
        )
    })
}

unsafe extern "C" fn on_message(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::ACL_DENIED, |inst| {
        let evt = unsafe { &mut *data.cast::<EvtMessage>() };
        if let Some(retain) = inst.adapter.message(evt.client as usize, evt.topic as usize) {
            evt.retain = retain;
        }
        err::SUCCESS
    })
}

unsafe extern "C" fn on_disconnect(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::SUCCESS, |inst| {
        let evt = unsafe { &*data.cast::<EvtDisconnect>() };
        inst.adapter.disconnect(evt.client as usize);
        err::SUCCESS
    })
}

unsafe extern "C" fn on_reload(_event: c_int, _data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::SUCCESS, |inst| {
        inst.broker.log(ffi::log::NOTICE, "reload requested: re-reading every policy file");
        inst.watcher.rescan();
        err::SUCCESS
    })
}

unsafe extern "C" fn on_tick(_event: c_int, _data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::SUCCESS, |inst| {
        inst.adapter.apply_updates();
        err::SUCCESS
    })
}
