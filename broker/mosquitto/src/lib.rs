//! A Mosquitto 2.x plugin (plugin API v5) that enforces mqtt-policy WebAssembly policies.
//!
//! Build it with `cargo build --release -p mqtt-policy-mosquitto` and load
//! `target/release/libmqtt_policy_mosquitto.so` with `plugin` in mosquitto.conf; see
//! [`config`] for the `plugin_opt_*` options and the README for the reason-code mapping.
//!
//! This crate is only the translation: Mosquitto's callbacks ([`ffi`]) become calls to one
//! [`mqtt_policy_gateway::Worker`], `plugin_opt_*` lines become its [`config`], and its
//! outcomes become Mosquitto return codes ([`mapping`]). Everything else (tenants, policy
//! directory and hot reload, sessions, fail mode, prefix, events) is the gateway's.
//!
//! Every callback runs on the broker's single thread. Nothing slow happens there: policies
//! are compiled and validated by the gateway's watcher thread and swapped in at the next
//! callback. No panic crosses the FFI boundary: one is caught and answered with a denial.

#![deny(missing_docs)]

pub mod config;
pub mod ffi;
pub mod mapping;

use std::ffi::{CStr, CString, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use mqtt_policy_gateway::{
    Access, Check, ClientFacts, ClientIds, ConnectOutcome, Gateway, Hello, Restored, TenantSource, Threads, Worker,
};

use ffi::{Broker, Callback, Client, EvtAclCheck, EvtBasicAuth, EvtDisconnect, EvtMessage, Opt, PluginId, err, event};
use mapping::RetainRewrites;

/// Everything one loaded plugin instance owns (one per `plugin` line, or per listener with
/// `per_listener_settings true`). Dropping it drops the worker, then the gateway, whose
/// watcher thread stops.
struct Instance {
    broker: Broker,
    id: *mut PluginId,
    /// Keyed by the client pointer, which Mosquitto keeps for the life of the connection.
    worker: Worker<usize>,
    rewrites: RetainRewrites,
    /// When the next tick does its work ([`TICK_EVERY_MS`]), on the coarse monotonic clock.
    next_tick_ms: u64,
    /// Held while this instance publishes monitoring messages in the broker's unprefixed topics.
    _monitoring_space: Option<UnprefixedMonitoring>,
}

/// The tenant whose monitoring messages use the broker's topics without a prefix, and how many
/// plugin instances (listeners) publish them: Mosquitto has one topic space, so with
/// `per_listener_settings true` two listeners of different tenants, both with `monitoring ibm`
/// and no `tenant_prefix`, would write each other's devices' retained status.
static UNPREFIXED_MONITORING: std::sync::Mutex<Option<(String, usize)>> = std::sync::Mutex::new(None);

/// A claim on [`UNPREFIXED_MONITORING`], given back when the instance is unloaded.
struct UnprefixedMonitoring;

impl UnprefixedMonitoring {
    fn claim(tenant: &str) -> Result<UnprefixedMonitoring, String> {
        let mut held = UNPREFIXED_MONITORING.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *held {
            Some((other, _)) if other != tenant => Err(format!(
                "plugin_opt_monitoring ibm: tenant {tenant} would publish its monitoring messages in the same \
                 topics as tenant {other} (another listener, no plugin_opt_tenant_prefix), and each could \
                 overwrite the other's device status: give these listeners plugin_opt_tenant_prefix"
            )),
            Some((_, n)) => {
                *n += 1;
                Ok(UnprefixedMonitoring)
            }
            None => {
                *held = Some((tenant.to_owned(), 1));
                Ok(UnprefixedMonitoring)
            }
        }
    }
}

impl Drop for UnprefixedMonitoring {
    fn drop(&mut self) {
        let mut held = UNPREFIXED_MONITORING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = &mut *held {
            *n -= 1;
            if *n == 0 {
                *held = None;
            }
        }
    }
}

/// MESSAGE is registered at init although it is needed only to clear retained flags (and
/// costs Mosquitto about 50 instructions per publish once registered, BENCHMARKS.md):
/// registered later, it would run after the MESSAGE callbacks of the plugins loaded after this
/// one, which may replace the topic by which it finds the publish whose flag it clears.
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
    let mut config = config::parse(pairs).map_err(|e| e.to_string())?;
    // No thread of ours in the broker's process where Mosquitto drives the watcher (TICK) and
    // a compiler keeps compiles off its thread: any second thread makes glibc take its
    // multi-threaded paths at every malloc and system call of the broker's (BENCHMARKS.md).
    let per_listener = unsafe { ffi::per_listener(id) };
    config.threads = if config.compiler.is_some() && !per_listener { Threads::None } else { Threads::Own };
    // Several tenants on one listener need a prefix already (config::parse); this is about
    // fixed tenants on several listeners.
    let monitoring_space = match &config.tenant {
        TenantSource::Fixed(tenant) if config.monitoring && config.tenant_prefix.is_none() => {
            Some(UnprefixedMonitoring::claim(tenant)?)
        }
        _ => None,
    };
    if config.monitoring && config.monitoring_state.is_none() {
        broker.log(
            ffi::log::WARNING,
            "plugin_opt_monitoring ibm without plugin_opt_monitoring_state: Mosquitto reports no \
             disconnects when it stops, so devices connected then keep a retained Connect status until \
             they connect again; set plugin_opt_monitoring_state FILE for the Disconnect (93) at the next start",
        );
    }
    if !config.policy_dir.is_dir() {
        broker.log(
            ffi::log::WARNING,
            &format!("policy directory {} is not readable yet; watching it", config.policy_dir.display()),
        );
    }
    let gateway = Gateway::start(config).map_err(|e| match e {
        e @ mqtt_policy_gateway::Error::EventsFile { .. } => format!("plugin_opt_events: {e}"),
        e => e.to_string(),
    })?;
    if gateway.ticking() != mqtt_policy_host::Ticking::Signal && gateway.config().threads == Threads::None {
        broker.log(ffi::log::WARNING, "no free real-time signal or timer for deadlines: ticking them with a thread");
    }
    if gateway.config().threads == Threads::Own {
        broker.log(
            ffi::log::INFO,
            if per_listener {
                "per_listener_settings true: Mosquitto sends no TICK, so the policy directory is watched by a thread"
            } else {
                "no plugin_opt_compiler: policies compile on a watcher thread (with a compiler the plugin runs no thread)"
            },
        );
    }
    let loaded = gateway.loaded_tenants();
    broker.log(
        ffi::log::NOTICE,
        &format!(
            "{} polic{} loaded from {} ({})",
            loaded.len(),
            if loaded.len() == 1 { "y" } else { "ies" },
            gateway.config().policy_dir.display(),
            loaded.join(", ")
        ),
    );
    Ok(Box::new(Instance {
        broker,
        id,
        worker: Worker::sharing(gateway, process_client_ids()),
        rewrites: RetainRewrites::default(),
        next_tick_ms: 0,
        _monitoring_space: monitoring_space,
    }))
}

/// Runs a callback body with panics caught: a panic answers `on_panic` (a denial).
fn guarded(userdata: *mut c_void, on_panic: c_int, f: impl FnOnce(&mut Instance) -> c_int) -> c_int {
    if userdata.is_null() {
        return on_panic;
    }
    // Safety: userdata is the Instance registered with this callback; the broker calls
    // callbacks on its one thread only, so this is the only reference.
    let instance = unsafe { &mut *userdata.cast::<Instance>() };
    match catch_unwind(AssertUnwindSafe(|| f(instance))) {
        Ok(rc) => rc,
        Err(_) => {
            instance.broker.log(ffi::log::ERR, "a check panicked; answered with a denial");
            on_panic
        }
    }
}

/// Publishes the queued monitoring messages. Never called from an ACL check: Mosquitto
/// checks the deliveries of plugin-published messages while it drains its queue of them, so
/// publishing from there could feed that queue while it is being drained.
fn flush_monitor(userdata: *mut c_void) {
    if userdata.is_null() {
        return;
    }
    // Safety: as in `guarded`; no other reference is alive once the callback body returned.
    let instance = unsafe { &*userdata.cast::<Instance>() };
    for m in instance.worker.gateway().drain_monitor() {
        let (Ok(topic), Ok(len)) = (CString::new(m.topic), c_int::try_from(m.payload.len())) else { continue };
        // From no client: no write check, so it cannot be refused or feed more checks; the
        // deliveries to subscribers are checked (and counted) like any other.
        unsafe {
            (instance.broker.broker_publish_copy)(
                std::ptr::null(),
                topic.as_ptr(),
                len,
                m.payload.as_ptr().cast(),
                0,
                m.retain,
                std::ptr::null_mut(),
            )
        };
    }
}

unsafe extern "C" fn on_basic_auth(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    let rc = guarded(userdata, err::AUTH, |inst| {
        let evt = unsafe { &*data.cast::<EvtBasicAuth>() };
        let b = inst.broker;
        let client = evt.client;
        let client_id = unsafe { ffi::str_or_none((b.client_id)(client)) }.unwrap_or("");
        let username = unsafe { ffi::str_or_none(evt.username) };
        let password = (!evt.password.is_null()).then(|| unsafe { CStr::from_ptr(evt.password) }.to_bytes());
        let peer = unsafe { ffi::str_or_none((b.client_address)(client)) }.unwrap_or("");
        let hello = Hello {
            client_id,
            username,
            password,
            clean_start: unsafe { (b.client_clean_session)(client) },
            keep_alive: u16::try_from(unsafe { (b.client_keepalive)(client) }).unwrap_or(u16::MAX),
            protocol: mapping::protocol_of(unsafe { (b.client_protocol_version)(client) }),
            certificate: unsafe { b.certificate_der(client) },
            peer,
            websockets: unsafe { (b.client_protocol)(client) } == ffi::MP_WEBSOCKETS,
            // The listener's port, from the client's socket (see `Broker::internals`); only
            // monitoring messages report it, so nothing is read from the broker's struct otherwise.
            port: if inst.worker.gateway().config().monitoring {
                unsafe { b.internals(client) }.and_then(|i| i.sock).and_then(ffi::socket_addresses).map(|a| a.1)
            } else {
                None
            },
            // A listener's fixed tenant is the gateway's configured source.
            tenant: None,
        };
        inst.rewrites.forget(client as usize);
        let outcome = inst.worker.connect(client as usize, &hello);
        if let ConnectOutcome::Accept { username: Some(name) } = &outcome
            && let Ok(name) = CString::new(name.as_str())
        {
            // The device id becomes the broker's user name, so its logs and later checks show it.
            unsafe { (b.set_username)(client, name.as_ptr()) };
        }
        mapping::connect_rc(&outcome)
    });
    flush_monitor(userdata);
    rc
}

/// The client ids of the whole broker: with `per_listener_settings true` Mosquitto loads
/// one plugin instance per listener, but its client ids (and session takeover) are global.
fn process_client_ids() -> ClientIds {
    static IDS: std::sync::OnceLock<ClientIds> = std::sync::OnceLock::new();
    IDS.get_or_init(ClientIds::new).clone()
}

unsafe extern "C" fn on_acl_check(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::ACL_DENIED, |inst| {
        let evt = unsafe { &*data.cast::<EvtAclCheck>() };
        if evt.topic.is_null() {
            return err::ACL_DENIED;
        }
        let Some(access) = mapping::access_of(evt.access) else { return err::ACL_DENIED };
        // Borrowed: a copy of the table of broker functions was 16 instructions of every check.
        let b = &inst.broker;
        // Mosquitto frees a client object when its session ends and may hand the address to
        // the next connection: these tell a new client from the session held for the address.
        let client_id = unsafe { ffi::bytes_or_none((b.client_id)(evt.client)) }.unwrap_or(b"");
        let username = unsafe { ffi::bytes_or_none((b.client_username)(evt.client)) };
        let check = Check {
            access,
            topic: unsafe { CStr::from_ptr(evt.topic) }.to_bytes(),
            qos: evt.qos,
            retain: evt.retain,
            payload_size: evt.payloadlen,
            client: Some(ClientFacts { client_id, username }),
        };
        // Safety: the client of this callback, alive for its duration.
        let client = unsafe { &*evt.client };
        let outcome = inst.worker.check_or_restore(&(evt.client as usize), &check, || unsafe { persisted(b, client) });
        if access == Access::Publish {
            inst.rewrites.checked(evt.client as usize, evt.topic as usize, &outcome);
        }
        mapping::check_rc(access, &outcome)
    })
}

/// The session Mosquitto restored under `client`, for a check about a client the worker has
/// never seen, if that is what it is. Mosquitto 2.0.11 restores the sessions
/// of its persistence file at start as client objects without a socket
/// (`persist__find_or_add_context` in `src/persist_read.c`: `context__init(INVALID_SOCKET)`,
/// clean session 0, the persisted user name), so their address is NULL until the client
/// connects on a new object. Every connected client has an address (`context__init` and the
/// websockets accept refuse a socket without one), including one Mosquitto let in without
/// BASIC_AUTH (`use_identity_as_username`): that one is not restored and stays denied.
///
/// # Safety
/// `client` is the client of the current callback; what is returned borrows its strings.
unsafe fn persisted<'a>(b: &Broker, client: &'a Client) -> Option<Restored<'a>> {
    let client = std::ptr::from_ref(client).cast_mut();
    if !unsafe { (b.client_address)(client) }.is_null() || unsafe { (b.client_clean_session)(client) } {
        return None;
    }
    let client_id = unsafe { ffi::str_or_none((b.client_id)(client)) }?;
    // The persistence file's user name is not validated by Mosquitto (a certificate's CN with
    // `use_identity_as_username` is kept as its raw bytes), and every check compares the broker's
    // bytes with the session's (`ClientFacts`): a user name that is not UTF-8 could never match a
    // restored session, which would be restored again, and forgotten, at every check. It stays
    // unknown instead, and denied.
    let raw = unsafe { ffi::bytes_or_none((b.client_username)(client)) };
    let username = raw.map(std::str::from_utf8).transpose().ok()?;
    Some(Restored {
        client_id,
        // The device id the plugin set with `mosquitto_set_username` before the restart.
        username,
        // Not persisted by 2.0.11 (0 for a restored client): mapped like any unknown level.
        protocol: mapping::protocol_of(unsafe { (b.client_protocol_version)(client) }),
        tenant: None,
    })
}

unsafe extern "C" fn on_message(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    guarded(userdata, err::ACL_DENIED, |inst| {
        let evt = unsafe { &mut *data.cast::<EvtMessage>() };
        if let Some(retain) = inst.rewrites.take(evt.client as usize, evt.topic as usize) {
            evt.retain = retain;
        }
        err::SUCCESS
    })
}

unsafe extern "C" fn on_disconnect(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    let rc = guarded(userdata, err::SUCCESS, |inst| {
        let evt = unsafe { &*data.cast::<EvtDisconnect>() };
        inst.rewrites.forget(evt.client as usize);
        let b = inst.broker;
        let monitoring = inst.worker.gateway().config().monitoring;
        let how = mapping::broker_close(
            if monitoring { unsafe { b.internals(evt.client) } } else { None },
            unsafe { (b.client_keepalive)(evt.client) },
            ffi::monotonic_seconds(),
            ffi::peer_closed,
        );
        inst.worker.closed(&(evt.client as usize), how);
        err::SUCCESS
    });
    flush_monitor(userdata);
    rc
}

unsafe extern "C" fn on_reload(_event: c_int, _data: *mut c_void, userdata: *mut c_void) -> c_int {
    let rc = guarded(userdata, err::SUCCESS, |inst| {
        inst.broker.log(ffi::log::NOTICE, "reload requested: re-reading every policy file");
        inst.worker.gateway().rescan();
        err::SUCCESS
    });
    flush_monitor(userdata);
    rc
}

/// Mosquitto ticks its plugins at every turn of its event loop, about once per message under
/// load. Swapping in reloaded policies and the 100 ms expiry sweep need no finer grain than
/// this, so a tick in between only reads the coarse clock (they were about 2 % of the broker's
/// instructions per message, BENCHMARKS.md), unless sessions wait to be ended (Mosquitto frees
/// a closed client at the next turn, and its address may then serve a new connection) or
/// monitoring messages wait to be published (the queue is bounded).
const TICK_EVERY_MS: u64 = 10;

unsafe extern "C" fn on_tick(_event: c_int, _data: *mut c_void, userdata: *mut c_void) -> c_int {
    if userdata.is_null() {
        return err::SUCCESS;
    }
    let now = ffi::coarse_monotonic_ms();
    {
        // Safety: as in `guarded`; this reference ends before `guarded` takes its own.
        let instance = unsafe { &mut *userdata.cast::<Instance>() };
        let worker = &instance.worker;
        if now < instance.next_tick_ms && !worker.has_sessions_to_end() && !worker.gateway().monitor_pending() {
            return err::SUCCESS;
        }
        instance.next_tick_ms = now + TICK_EVERY_MS;
    }
    let mut expired = Vec::new();
    let rc = guarded(userdata, err::SUCCESS, |inst| {
        let now = Instant::now();
        inst.worker.gateway().poll_directory(now);
        expired = inst.worker.tick(now);
        err::SUCCESS
    });
    // Kicked once the instance is no longer borrowed: Mosquitto runs the client's DISCONNECT
    // callback, and its will's ACL check, inside the call.
    // Safety: userdata is the Instance (not null, checked above); the broker is copied out.
    let broker = unsafe { (*userdata.cast::<Instance>()).broker };
    for client_id in expired {
        // The session's proof expired (IoT Hub's 401003): close the connection, will included.
        if let Ok(id) = CString::new(client_id) {
            unsafe { (broker.kick_client_by_clientid)(id.as_ptr(), true) };
        }
    }
    flush_monitor(userdata);
    rc
}
