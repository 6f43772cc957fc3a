//! The slice of Mosquitto's plugin API (v5, `mosquitto_broker.h` / `mosquitto_plugin.h` of
//! 2.0.x) this plugin uses, declared by hand.
//!
//! Broker functions are looked up with `dlsym` when the plugin is initialised instead of
//! being linked: the library then loads into any 2.x broker that has them (2.1 keeps these
//! symbols), a missing one is a clear init error rather than a loader failure, and the
//! crate's tests link without a broker. `tests/layout.rs` compiles the real headers and
//! checks every struct here against them.

use std::ffi::{CStr, c_char, c_int, c_long, c_void};

/// `MOSQ_PLUGIN_VERSION`: the plugin interface this library implements.
pub const PLUGIN_VERSION: c_int = 5;

/// `enum mosquitto_plugin_event`.
pub mod event {
    use std::ffi::c_int;
    /// `MOSQ_EVT_RELOAD`.
    pub const RELOAD: c_int = 1;
    /// `MOSQ_EVT_ACL_CHECK`.
    pub const ACL_CHECK: c_int = 2;
    /// `MOSQ_EVT_BASIC_AUTH`.
    pub const BASIC_AUTH: c_int = 3;
    /// `MOSQ_EVT_MESSAGE`.
    pub const MESSAGE: c_int = 7;
    /// `MOSQ_EVT_TICK`.
    pub const TICK: c_int = 9;
    /// `MOSQ_EVT_DISCONNECT`.
    pub const DISCONNECT: c_int = 10;
}

/// `MOSQ_ACL_*` access bits in an ACL check.
pub mod access {
    use std::ffi::c_int;
    /// `MOSQ_ACL_READ`.
    pub const READ: c_int = 0x01;
    /// `MOSQ_ACL_WRITE`.
    pub const WRITE: c_int = 0x02;
    /// `MOSQ_ACL_SUBSCRIBE`.
    pub const SUBSCRIBE: c_int = 0x04;
    /// `MOSQ_ACL_UNSUBSCRIBE`.
    pub const UNSUBSCRIBE: c_int = 0x08;
}

/// `enum mosq_err_t` values a callback returns.
pub mod err {
    use std::ffi::c_int;
    /// `MOSQ_ERR_SUCCESS`.
    pub const SUCCESS: c_int = 0;
    /// `MOSQ_ERR_NOMEM`.
    pub const NOMEM: c_int = 1;
    /// `MOSQ_ERR_PROTOCOL`.
    pub const PROTOCOL: c_int = 2;
    /// `MOSQ_ERR_INVAL`.
    pub const INVAL: c_int = 3;
    /// `MOSQ_ERR_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: c_int = 10;
    /// `MOSQ_ERR_AUTH`.
    pub const AUTH: c_int = 11;
    /// `MOSQ_ERR_ACL_DENIED`.
    pub const ACL_DENIED: c_int = 12;
    /// `MOSQ_ERR_UNKNOWN`.
    pub const UNKNOWN: c_int = 13;
    /// `MOSQ_ERR_PLUGIN_DEFER`.
    pub const PLUGIN_DEFER: c_int = 17;
    /// `MOSQ_ERR_QOS_NOT_SUPPORTED`.
    pub const QOS_NOT_SUPPORTED: c_int = 24;
    /// `MOSQ_ERR_RETAIN_NOT_SUPPORTED`.
    pub const RETAIN_NOT_SUPPORTED: c_int = 28;
}

/// `MOSQ_LOG_*` levels for `mosquitto_log_printf`.
pub mod log {
    use std::ffi::c_int;
    /// `MOSQ_LOG_INFO`.
    pub const INFO: c_int = 0x01;
    /// `MOSQ_LOG_NOTICE`.
    pub const NOTICE: c_int = 0x02;
    /// `MOSQ_LOG_WARNING`.
    pub const WARNING: c_int = 0x04;
    /// `MOSQ_LOG_ERR`.
    pub const ERR: c_int = 0x08;
}

/// `struct mosquitto` (a connected client): opaque.
#[repr(C)]
pub struct Client {
    _private: [u8; 0],
}

/// `mosquitto_plugin_id_t`: opaque but for [`per_listener`].
#[repr(C)]
pub struct PluginId {
    _private: [u8; 0],
}

/// Whether Mosquitto loaded this plugin instance for one listener (`per_listener_settings
/// true`), where it sends no TICK (`plugin__handle_tick` in `src/plugin.c` of 2.0.11 skips
/// per-listener callbacks). In 2.0.11 `mosquitto_plugin_id_t` is one field, the listener, NULL
/// for the broker-wide options (`src/mosquitto_broker_internal.h`, set in `plugin__load_v5`):
/// a layout of the version this plugin is built and tested against, like [`Internals`].
///
/// # Safety
/// `id` is the identifier Mosquitto passed to `mosquitto_plugin_init`.
pub unsafe fn per_listener(id: *mut PluginId) -> bool {
    !id.is_null() && !unsafe { *id.cast::<*const c_void>() }.is_null()
}

/// `struct mosquitto_opt`: one `plugin_opt_KEY VALUE` line.
#[repr(C)]
pub struct Opt {
    /// Option name without `plugin_opt_`.
    pub key: *mut c_char,
    /// Option value.
    pub value: *mut c_char,
}

/// `struct mosquitto_evt_reload`.
#[repr(C)]
pub struct EvtReload {
    /// Reserved by Mosquitto.
    pub future: *mut c_void,
    /// The plugin options after the reload.
    pub options: *mut Opt,
    /// Number of `options`.
    pub option_count: c_int,
    /// Reserved by Mosquitto.
    pub future2: [*mut c_void; 4],
}

/// `struct mosquitto_evt_acl_check`.
#[repr(C)]
pub struct EvtAclCheck {
    /// Reserved by Mosquitto.
    pub future: *mut c_void,
    /// The client the event is about.
    pub client: *mut Client,
    /// Topic name (or filter for subscribe checks).
    pub topic: *const c_char,
    /// Message payload.
    pub payload: *const c_void,
    /// MQTT v5 properties.
    pub properties: *mut c_void,
    /// `MOSQ_ACL_*` access asked about.
    pub access: c_int,
    /// Payload length in bytes.
    pub payloadlen: u32,
    /// QoS of the message.
    pub qos: u8,
    /// Retained flag of the message.
    pub retain: bool,
    /// Reserved by Mosquitto.
    pub future2: [*mut c_void; 4],
}

/// `struct mosquitto_evt_basic_auth`.
#[repr(C)]
pub struct EvtBasicAuth {
    /// Reserved by Mosquitto.
    pub future: *mut c_void,
    /// The client the event is about.
    pub client: *mut Client,
    /// User name from CONNECT, or null.
    pub username: *mut c_char,
    /// Password from CONNECT, or null.
    pub password: *mut c_char,
    /// Reserved by Mosquitto.
    pub future2: [*mut c_void; 4],
}

/// `struct mosquitto_evt_message`: the broker applies changes to topic, payload and retain.
#[repr(C)]
pub struct EvtMessage {
    /// Reserved by Mosquitto.
    pub future: *mut c_void,
    /// The client the event is about.
    pub client: *mut Client,
    /// Topic name (or filter for subscribe checks).
    pub topic: *mut c_char,
    /// Message payload.
    pub payload: *mut c_void,
    /// MQTT v5 properties.
    pub properties: *mut c_void,
    /// MQTT v5 reason string.
    pub reason_string: *mut c_char,
    /// Payload length in bytes.
    pub payloadlen: u32,
    /// QoS of the message.
    pub qos: u8,
    /// MQTT v5 reason code.
    pub reason_code: u8,
    /// Retained flag of the message.
    pub retain: bool,
    /// Reserved by Mosquitto.
    pub future2: [*mut c_void; 4],
}

/// `struct mosquitto_evt_tick`.
#[repr(C)]
pub struct EvtTick {
    /// Reserved by Mosquitto.
    pub future: *mut c_void,
    /// Nanoseconds part of now.
    pub now_ns: c_long,
    /// Nanoseconds part of the next tick.
    pub next_ns: c_long,
    /// Seconds part of now.
    pub now_s: libc::time_t,
    /// Seconds part of the next tick.
    pub next_s: libc::time_t,
    /// Reserved by Mosquitto.
    pub future2: [*mut c_void; 4],
}

/// `struct mosquitto_evt_disconnect`.
#[repr(C)]
pub struct EvtDisconnect {
    /// Reserved by Mosquitto.
    pub future: *mut c_void,
    /// The client the event is about.
    pub client: *mut Client,
    /// Why the client disconnected.
    pub reason: c_int,
    /// Reserved by Mosquitto.
    pub future2: [*mut c_void; 4],
}

/// `MOSQ_FUNC_generic_callback`.
pub type Callback = unsafe extern "C" fn(event: c_int, event_data: *mut c_void, userdata: *mut c_void) -> c_int;

/// The broker (and libcrypto) functions the plugin calls, resolved from the running broker.
#[derive(Clone, Copy)]
pub struct Broker {
    /// `mosquitto_callback_register`.
    pub callback_register: unsafe extern "C" fn(
        id: *mut PluginId,
        event: c_int,
        cb: Callback,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int,
    /// `mosquitto_callback_unregister`.
    pub callback_unregister:
        unsafe extern "C" fn(id: *mut PluginId, event: c_int, cb: Callback, event_data: *const c_void) -> c_int,
    /// `mosquitto_log_printf`.
    pub log_printf: unsafe extern "C" fn(level: c_int, fmt: *const c_char, ...),
    /// `mosquitto_client_address`.
    pub client_address: unsafe extern "C" fn(client: *const Client) -> *const c_char,
    /// `mosquitto_client_clean_session`.
    pub client_clean_session: unsafe extern "C" fn(client: *const Client) -> bool,
    /// `mosquitto_client_id`.
    pub client_id: unsafe extern "C" fn(client: *const Client) -> *const c_char,
    /// `mosquitto_client_keepalive`.
    pub client_keepalive: unsafe extern "C" fn(client: *const Client) -> c_int,
    /// `mosquitto_client_certificate`.
    pub client_certificate: unsafe extern "C" fn(client: *const Client) -> *mut c_void,
    /// `mosquitto_client_protocol`: `mp_websockets` (2) for MQTT over websockets.
    pub client_protocol: unsafe extern "C" fn(client: *const Client) -> c_int,
    /// `mosquitto_client_protocol_version`.
    pub client_protocol_version: unsafe extern "C" fn(client: *const Client) -> c_int,
    /// `mosquitto_client_username`.
    pub client_username: unsafe extern "C" fn(client: *const Client) -> *const c_char,
    /// `mosquitto_set_username`.
    pub set_username: unsafe extern "C" fn(client: *mut Client, username: *const c_char) -> c_int,
    /// `mosquitto_broker_publish_copy`.
    pub broker_publish_copy: unsafe extern "C" fn(
        clientid: *const c_char,
        topic: *const c_char,
        payloadlen: c_int,
        payload: *const c_void,
        qos: c_int,
        retain: bool,
        properties: *mut c_void,
    ) -> c_int,
    /// `mosquitto_kick_client_by_clientid` (2.0.11 has it): ends a client's connection.
    pub kick_client_by_clientid: unsafe extern "C" fn(clientid: *const c_char, with_will: bool) -> c_int,
    /// libcrypto's `i2d_X509`: the broker hands out an `X509*`, policies get DER.
    pub i2d_x509: unsafe extern "C" fn(x: *mut c_void, out: *mut *mut u8) -> c_int,
    /// libcrypto's `X509_free`: `mosquitto_client_certificate` returns a new reference.
    pub x509_free: unsafe extern "C" fn(x: *mut c_void),
}

impl Broker {
    /// Looks every function up in the running process.
    ///
    /// # Safety
    /// Must run inside a Mosquitto 2.x process: each symbol found is assumed to have the
    /// signature declared above.
    pub unsafe fn resolve() -> Result<Broker, String> {
        unsafe fn sym(name: &CStr) -> Result<*mut c_void, String> {
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            if p.is_null() {
                Err(format!("symbol {} not found in the broker process", name.to_string_lossy()))
            } else {
                Ok(p)
            }
        }
        // The target type of each transmute is the field's declared signature above, stated once.
        macro_rules! get {
            ($name:literal) => {{
                #[allow(clippy::missing_transmute_annotations)]
                let f = unsafe { std::mem::transmute::<*mut c_void, _>(sym($name)?) };
                f
            }};
        }
        Ok(Broker {
            callback_register: get!(c"mosquitto_callback_register"),
            callback_unregister: get!(c"mosquitto_callback_unregister"),
            log_printf: get!(c"mosquitto_log_printf"),
            client_address: get!(c"mosquitto_client_address"),
            client_clean_session: get!(c"mosquitto_client_clean_session"),
            client_id: get!(c"mosquitto_client_id"),
            client_keepalive: get!(c"mosquitto_client_keepalive"),
            client_certificate: get!(c"mosquitto_client_certificate"),
            client_protocol: get!(c"mosquitto_client_protocol"),
            client_protocol_version: get!(c"mosquitto_client_protocol_version"),
            client_username: get!(c"mosquitto_client_username"),
            set_username: get!(c"mosquitto_set_username"),
            broker_publish_copy: get!(c"mosquitto_broker_publish_copy"),
            kick_client_by_clientid: get!(c"mosquitto_kick_client_by_clientid"),
            i2d_x509: get!(c"i2d_X509"),
            x509_free: get!(c"X509_free"),
        })
    }

    /// Writes a line to the broker's log.
    pub fn log(&self, level: c_int, message: &str) {
        let line =
            std::ffi::CString::new(format!("mqtt-policy: {message}").replace('\0', " ")).expect("NULs were replaced");
        unsafe { (self.log_printf)(level, c"%s".as_ptr(), line.as_ptr()) };
    }

    /// The client's certificate as DER, if it presented one.
    ///
    /// # Safety
    /// `client` must be a client the broker handed to the running callback.
    pub unsafe fn certificate_der(&self, client: *const Client) -> Option<Vec<u8>> {
        let x509 = unsafe { (self.client_certificate)(client) };
        if x509.is_null() {
            return None;
        }
        let len = unsafe { (self.i2d_x509)(x509, std::ptr::null_mut()) };
        let der = if len > 0 {
            let mut buf = vec![0u8; len as usize];
            let mut p = buf.as_mut_ptr();
            let written = unsafe { (self.i2d_x509)(x509, &mut p) };
            (written == len).then_some(buf)
        } else {
            None
        };
        unsafe { (self.x509_free)(x509) };
        // An unencodable certificate is presented as empty DER, which the host refuses.
        Some(der.unwrap_or_default())
    }
}

/// Borrows a C string the broker owns for the duration of a callback.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives `'a`.
pub unsafe fn str_or_none<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        None
    } else {
        // Mosquitto validates topics and client ids as UTF-8; anything else is passed lossily
        // upstream by the caller's own conversion.
        unsafe { CStr::from_ptr(p) }.to_str().ok()
    }
}

/// Borrows a C string the broker owns for the duration of a callback, as bytes: for values
/// only compared, which need no UTF-8 validation (the per-check client id and user name).
///
/// # Safety
/// As [`str_or_none`].
pub unsafe fn bytes_or_none<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() { None } else { Some(unsafe { CStr::from_ptr(p) }.to_bytes()) }
}

/// `mp_websockets` of `enum mosquitto_protocol` (`include/mosquitto_broker.h`).
pub const MP_WEBSOCKETS: c_int = 2;

/// `enum mosquitto_client_state` values (`lib/mosquitto_internal.h` of 2.0.11) that say how a
/// connection is closing.
pub mod state {
    use std::ffi::c_int;
    /// `mosq_cs_disconnecting`: the client sent DISCONNECT (or the broker kicked it without its will).
    pub const DISCONNECTING: c_int = 2;
    /// `mosq_cs_active`: closing without a DISCONNECT (socket closed, keep-alive, protocol error).
    pub const ACTIVE: c_int = 3;
    /// `mosq_cs_disconnect_ws`: a websockets connection closing, for whatever reason.
    pub const DISCONNECT_WS: c_int = 6;
    /// `mosq_cs_duplicate`: taken over by a new connection with the same client id.
    pub const DUPLICATE: c_int = 17;
    /// `mosq_cs_disconnect_with_will`: DISCONNECT with reason 0x04 (send the will).
    pub const DISCONNECT_WITH_WILL: c_int = 18;
}

/// What Mosquitto 2.0.x keeps at the head of `struct mosquitto` and does not hand a plugin:
/// its socket, its state and when it last received a packet. 2.0.11 calls MOSQ_EVT_DISCONNECT
/// with `reason` always -1 (`context__disconnect` in `src/context.c`), so this is how the
/// plugin learns how a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Internals {
    /// `state` (see [`state`]).
    pub state: c_int,
    /// `last_msg_in`, seconds of `CLOCK_MONOTONIC` (`mosquitto_time`).
    pub last_msg_in: i64,
    /// `sock`, if it was found and is the client's connected socket.
    pub sock: Option<c_int>,
}

impl Broker {
    /// Reads [`Internals`] from the head of `struct mosquitto`, where 2.0.x declares
    /// `[ident,] sock, maximum_packet_size, [adns,] protocol, address, id, username,
    /// password, keepalive, last_mid, state, last_msg_in`. The layout differs with build
    /// options (`WITH_EPOLL` adds `ident`, `WITH_ADNS` adds `adns`), so each candidate place
    /// is accepted only if the fields there are the ones the public accessors return: the
    /// `address`, `id` and `username` pointers and the keep-alive. Nothing found: `None`, and
    /// closings are reported as unknown.
    ///
    /// # Safety
    /// `client` must be a client the broker handed to the running callback.
    pub unsafe fn internals(&self, client: *const Client) -> Option<Internals> {
        let id = unsafe { (self.client_id)(client) };
        let address = unsafe { (self.client_address)(client) };
        if id.is_null() || address.is_null() {
            return None;
        }
        let username = unsafe { (self.client_username)(client) };
        let keepalive = unsafe { (self.client_keepalive)(client) };
        let base = client.cast::<u8>();
        // Offsets of `address` on LP64: 16 (neither option, or ident only), 24 (adns only),
        // 32 (ident and adns). Every read stays well inside the struct (hundreds of bytes).
        for offset in [16usize, 24, 32] {
            let ptr = |o: usize| unsafe { std::ptr::read_unaligned(base.add(o).cast::<*const c_char>()) };
            if ptr(offset) != address || ptr(offset + 8) != id || ptr(offset + 16) != username {
                continue;
            }
            let ka = unsafe { std::ptr::read_unaligned(base.add(offset + 32).cast::<u16>()) };
            if c_int::from(ka) != keepalive {
                continue;
            }
            let state = unsafe { std::ptr::read_unaligned(base.add(offset + 36).cast::<c_int>()) };
            let last_msg_in = unsafe { std::ptr::read_unaligned(base.add(offset + 40).cast::<i64>()) };
            let peer = unsafe { CStr::from_ptr(address) }.to_str().ok();
            // `sock` is the first field, or the second after `ident`: whichever is the socket
            // connected to the client's address.
            let sock =
                [0usize, 4].into_iter().map(|o| unsafe { std::ptr::read_unaligned(base.add(o).cast::<c_int>()) }).find(
                    |&fd| fd >= 0 && peer.is_some_and(|p| socket_addresses(fd).is_some_and(|(remote, _)| remote == p)),
                );
            return Some(Internals { state, last_msg_in, sock });
        }
        None
    }
}

/// The peer's IP (as Mosquitto prints it) and the local port of a connected socket.
pub fn socket_addresses(fd: c_int) -> Option<(String, u16)> {
    fn addr(storage: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
        match c_int::from(storage.ss_family) {
            libc::AF_INET => {
                let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(std::net::SocketAddr::from((ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(std::net::SocketAddr::from((ip, u16::from_be(a.sin6_port))))
            }
            _ => None,
        }
    }
    let get = |f: unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> c_int| {
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let rc = unsafe { f(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) };
        (rc == 0).then(|| addr(&storage)).flatten()
    };
    let remote = get(libc::getpeername)?;
    let local = get(libc::getsockname)?;
    Some((remote.ip().to_string(), local.port()))
}

/// Whether the peer of a connected socket has closed its side (or reset it): a read would
/// return end of file or an error. `false` while it is still open with nothing to read.
pub fn peer_closed(fd: c_int) -> bool {
    let mut byte = 0u8;
    let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => {
            let e = std::io::Error::last_os_error().raw_os_error();
            !matches!(e, Some(libc::EAGAIN) | Some(libc::EINTR))
        }
    }
}

/// Seconds of `CLOCK_MONOTONIC`, the clock of Mosquitto's `last_msg_in`.
pub fn monotonic_seconds() -> i64 {
    let mut tp = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut tp) };
    tp.tv_sec
}

/// Milliseconds of `CLOCK_MONOTONIC_COARSE`: the clock read at every tick, where a few
/// milliseconds of resolution do and the precise clock's cost would not.
pub fn coarse_monotonic_ms() -> u64 {
    let mut tp = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut tp) };
    (tp.tv_sec as u64) * 1000 + (tp.tv_nsec as u64) / 1_000_000
}
