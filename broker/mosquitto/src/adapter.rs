//! The broker-thread side of the plugin, free of FFI: it takes what the broker saw, asks
//! the tenant's policy, and answers with the Mosquitto return code to give back.
//!
//! `lib.rs` turns callbacks into calls here; tests drive it directly.

use rustc_hash::FxHashMap as HashMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use mqtt_policy_host::events::{Action, Event, EventSink, Severity};
use mqtt_policy_host::{
    Connect, ConnectDecision, Delivery, DeliveryDecision, Denial, Engine, Policy, Protocol, Publish, PublishDecision,
    ReasonCode, SessionId, Subscribe, SubscribeDecision,
};

use crate::config::{Config, FailMode};
use crate::directory::{Loaded, Tenants};
use crate::ffi::{access, err};
use crate::tenancy::TenantSource;

/// What the broker knows of a connecting client.
#[derive(Debug, Clone, Default)]
pub struct ClientHello<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// User name, if sent.
    pub username: Option<&'a str>,
    /// Password, if sent.
    pub password: Option<&'a [u8]>,
    /// Clean session / clean start.
    pub clean_start: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Protocol level: 3, 4 or 5.
    pub protocol_version: i32,
    /// The client certificate as DER, if one was presented.
    pub certificate: Option<Vec<u8>>,
    /// Peer address.
    pub peer: &'a str,
}

/// The answer to a connect: the return code, and the user name to set on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOutcome {
    /// `MOSQ_ERR_SUCCESS`, `MOSQ_ERR_AUTH` or `MOSQ_ERR_PLUGIN_DEFER`.
    pub rc: c_int,
    /// The device id, to become the broker's user name for this client.
    pub username: Option<String>,
}

struct ClientState {
    tenant: String,
    /// The tenant's topic prefix (`plugin_opt_tenant_prefix`), if any.
    prefix: Option<String>,
    /// `None` when the client was let through in fail-open mode: the broker's own rules apply.
    session: Option<SessionId>,
    client_id: String,
    /// The retain flag decided by the last write check, applied by the MESSAGE event that
    /// follows it for the same stored message (identified by its topic pointer).
    rewrite: Option<(usize, bool)>,
}

/// Monitoring messages waiting to be published on the broker thread.
#[derive(Default)]
pub struct MonitorQueue {
    items: Mutex<Vec<(String, String)>>,
    nonempty: AtomicBool,
}

impl MonitorQueue {
    /// Queues one message.
    pub fn push(&self, topic: String, payload: String) {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).push((topic, payload));
        self.nonempty.store(true, Ordering::Release);
    }

    /// Takes everything queued (cheap when empty).
    pub fn drain(&self) -> Vec<(String, String)> {
        if !take_flag(&self.nonempty) {
            return Vec::new();
        }
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Clears `flag` and says whether it was set. Asked on every callback and almost always
/// unset, so a plain load comes first: the common case stays a read of a shared cache line.
fn take_flag(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::Acquire)
}

/// One plugin instance's decisions on the broker thread.
pub struct Adapter {
    config: Config,
    tenants: Arc<Tenants>,
    policies: HashMap<String, Policy>,
    clients: HashMap<usize, ClientState>,
    updates: Receiver<Loaded>,
    pending: Arc<AtomicBool>,
    engine: Engine,
}

impl Adapter {
    /// An adapter with the policies loaded so far; later ones arrive on `updates`.
    pub fn new(
        config: Config,
        engine: Engine,
        tenants: Arc<Tenants>,
        initial: Vec<Loaded>,
        updates: Receiver<Loaded>,
        pending: Arc<AtomicBool>,
    ) -> Adapter {
        let mut a = Adapter {
            config,
            tenants,
            policies: HashMap::default(),
            clients: HashMap::default(),
            updates,
            pending,
            engine,
        };
        for l in initial {
            a.install(l);
        }
        a
    }

    /// The engine policies run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Tenants with a policy loaded.
    pub fn loaded_tenants(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.policies.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// Number of clients currently tracked.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Swaps in policies the watcher has loaded. Cheap when there are none: one atomic load.
    pub fn apply_updates(&mut self) {
        if !take_flag(&self.pending) {
            return;
        }
        while let Ok(l) = self.updates.try_recv() {
            self.install(l);
        }
    }

    fn install(&mut self, loaded: Loaded) {
        match self.policies.get_mut(&loaded.tenant) {
            Some(p) => p.replace(loaded.module),
            None => {
                let tenant = self.tenants.get(&loaded.tenant);
                let mut policy = loaded.module.instantiate(tenant);
                policy.set_caching(self.config.decision_cache);
                self.policies.insert(loaded.tenant, policy);
            }
        }
    }

    fn resolve_tenant(&self, hello: &ClientHello<'_>) -> Result<String, Denial> {
        let refuse = |message: String| Denial { reason: ReasonCode::NotAuthorized, message, disconnect: true };
        match &self.config.tenant {
            TenantSource::Fixed(t) => Ok(t.clone()),
            TenantSource::ClientId(p) => p
                .extract(hello.client_id)
                .map(str::to_owned)
                .ok_or_else(|| refuse(format!("client id does not match the tenant pattern {p}"))),
            TenantSource::Username(p) => hello
                .username
                .and_then(|u| p.extract(u))
                .map(str::to_owned)
                .ok_or_else(|| refuse(format!("user name does not match the tenant pattern {p}"))),
            TenantSource::Certificate => {
                let Some(der) = &hello.certificate else {
                    return Err(refuse("a client certificate is required to find the tenant".into()));
                };
                let mut names: Vec<&String> = self.policies.keys().collect();
                names.sort();
                for name in names {
                    if let Ok(c) = self.policies[name].module().verify_certificate(der) {
                        if c.chain_verified_by.is_some() {
                            return Ok(name.clone());
                        }
                    }
                }
                Err(refuse("client certificate was not issued by any tenant's CA".into()))
            }
        }
    }

    /// BASIC_AUTH: decides a connection.
    pub fn connect(&mut self, key: usize, hello: &ClientHello<'_>) -> ConnectOutcome {
        self.apply_updates();
        // A client id reconnecting on the same connection object must not keep old state.
        self.forget(key);
        let reject = |this: &Self, tenant: &str, denial: Denial| {
            let mut e = Event::denial(tenant, Action::Connect, "reject", &denial);
            e.client_id = Some(hello.client_id.to_owned());
            this.tenants.get(tenant).events().emit(e);
            ConnectOutcome { rc: err::AUTH, username: None }
        };
        let tenant = match self.resolve_tenant(hello) {
            Ok(t) => t,
            Err(d) => return reject(self, "*", d),
        };
        let Some(policy) = self.policies.get_mut(&tenant) else {
            return match self.config.fail_mode {
                FailMode::Closed => reject(
                    self,
                    &tenant,
                    Denial {
                        reason: ReasonCode::ServerUnavailable,
                        message: format!("no policy is loaded for tenant {tenant}"),
                        disconnect: true,
                    },
                ),
                FailMode::Open => {
                    let e = Event::new(
                        &tenant,
                        Action::Connect,
                        Severity::Warn,
                        "defer",
                        format!("no policy is loaded for tenant {tenant}; fail_mode open defers to the broker"),
                    );
                    self.tenants.get(&tenant).events().emit(e);
                    self.clients.insert(
                        key,
                        ClientState {
                            prefix: self.config.tenant_prefix.as_ref().map(|p| p.replace("{tenant}", &tenant)),
                            tenant,
                            session: None,
                            client_id: hello.client_id.to_owned(),
                            rewrite: None,
                        },
                    );
                    ConnectOutcome { rc: err::PLUGIN_DEFER, username: None }
                }
            };
        };
        let certificate = match &hello.certificate {
            None => None,
            Some(der) => match policy.module().verify_certificate(der) {
                Ok(c) => Some(c),
                Err(e) => {
                    let d = Denial { reason: ReasonCode::NotAuthorized, message: e.to_string(), disconnect: true };
                    return reject(self, &tenant, d);
                }
            },
        };
        let connect = Connect {
            tenant: tenant.clone(),
            client_id: hello.client_id.to_owned(),
            username: hello.username.map(str::to_owned),
            password: hello.password.map(<[u8]>::to_vec),
            clean_start: hello.clean_start,
            keep_alive: hello.keep_alive,
            protocol: match hello.protocol_version {
                3 => Protocol::Mqtt31,
                4 => Protocol::Mqtt311,
                _ => Protocol::Mqtt5,
            },
            tls: certificate.is_some(),
            certificate,
            peer: hello.peer.to_owned(),
        };
        match policy.authenticate(&connect) {
            ConnectDecision::Accept(session, info) => {
                let mut e = Event::new(
                    &tenant,
                    Action::Connect,
                    Severity::Info,
                    "accept",
                    format!("device {} connected from {}", info.device_id, hello.peer),
                );
                e.client_id = Some(hello.client_id.to_owned());
                e.device_id = Some(info.device_id.clone());
                e.policy = Some(policy.module().short_digest().to_owned());
                self.tenants.get(&tenant).events().emit(e);
                let username = (!info.device_id.is_empty()).then(|| info.device_id.clone());
                self.clients.insert(
                    key,
                    ClientState {
                        prefix: self.config.tenant_prefix.as_ref().map(|p| p.replace("{tenant}", &tenant)),
                        tenant,
                        session: Some(session),
                        client_id: hello.client_id.to_owned(),
                        rewrite: None,
                    },
                );
                ConnectOutcome { rc: err::SUCCESS, username }
            }
            // The policy already emitted the reject event.
            ConnectDecision::Reject(_) => ConnectOutcome { rc: err::AUTH, username: None },
            ConnectDecision::Defer => ConnectOutcome { rc: err::PLUGIN_DEFER, username: None },
        }
    }

    /// ACL_CHECK: decides a publish (write), subscription, unsubscription or delivery (read).
    /// `topic` is `Err` when the broker handed over bytes that are not UTF-8.
    /// `topic_key` identifies the stored message, to match the MESSAGE event that follows.
    #[allow(clippy::too_many_arguments)]
    pub fn acl(
        &mut self,
        key: usize,
        access: c_int,
        topic: Result<&str, ()>,
        topic_key: usize,
        qos: u8,
        retain: bool,
        payload_size: u32,
    ) -> c_int {
        self.apply_updates();
        if access == access::UNSUBSCRIBE {
            return err::SUCCESS;
        }
        let Some(client) = self.clients.get_mut(&key) else {
            // BASIC_AUTH did not run for this client (e.g. `use_identity_as_username`): fail closed.
            return err::ACL_DENIED;
        };
        let Some(session) = client.session else { return err::PLUGIN_DEFER };
        let Some(policy) = self.policies.get_mut(&client.tenant) else { return err::ACL_DENIED };
        let topic = match (topic, client.prefix.as_deref()) {
            (Ok(t), None) => t,
            (Ok(t), Some(prefix)) => match t.strip_prefix(prefix) {
                Some(rest) => rest,
                None => {
                    let d = Denial {
                        reason: ReasonCode::NotAuthorized,
                        message: format!("topic {t} is outside the tenant's topic space {prefix}"),
                        disconnect: false,
                    };
                    let action = match access {
                        access::WRITE => Action::Publish,
                        access::SUBSCRIBE => Action::Subscribe,
                        _ => Action::Delivery,
                    };
                    // Deliveries from elsewhere are skipped quietly: they are other tenants' traffic.
                    if access != access::READ {
                        let mut e = Event::denial(&client.tenant, action, "deny", &d);
                        e.client_id = Some(client.client_id.clone());
                        e.topic = Some(t.to_owned());
                        policy.tenant().events().emit(e);
                    }
                    return err::ACL_DENIED;
                }
            },
            (Err(()), _) => {
                let d = Denial {
                    reason: ReasonCode::TopicNameInvalid,
                    message: "topic is not valid UTF-8".into(),
                    disconnect: false,
                };
                let mut e = Event::denial(&client.tenant, Action::Publish, "deny", &d);
                e.client_id = Some(client.client_id.clone());
                policy.tenant().events().emit(e);
                return err::ACL_DENIED;
            }
        };
        match access {
            access::WRITE => {
                let p = Publish { topic, qos, retain, payload_size };
                match policy.authorize_publish(session, &p) {
                    PublishDecision::Allow | PublishDecision::Defer => {
                        client.rewrite = None;
                        err::SUCCESS
                    }
                    PublishDecision::Rewrite(r) => {
                        // QoS cannot be changed by a Mosquitto 2.0 plugin; retain can (MESSAGE event).
                        client.rewrite = Some((topic_key, r.retain));
                        err::SUCCESS
                    }
                    PublishDecision::Deny(d) => {
                        client.rewrite = None;
                        denial_rc(&d)
                    }
                }
            }
            access::SUBSCRIBE => {
                let s = Subscribe { filter: topic, qos };
                match policy.authorize_subscribe(session, &s) {
                    SubscribeDecision::Grant(granted) if granted >= qos => err::SUCCESS,
                    SubscribeDecision::Grant(granted) => {
                        // Mosquitto 2.0 cannot lower the QoS it grants from a plugin: refuse
                        // rather than grant more than the policy allows.
                        let d = Denial {
                            reason: ReasonCode::QosNotSupported,
                            message: format!(
                                "subscription at QoS {qos} allowed only at QoS {granted}; Mosquitto cannot downgrade it, so it is refused"
                            ),
                            disconnect: false,
                        };
                        let mut e = Event::denial(&client.tenant, Action::Subscribe, "deny", &d);
                        e.client_id = Some(client.client_id.clone());
                        e.topic = Some(topic.to_owned());
                        policy.tenant().events().emit(e);
                        err::ACL_DENIED
                    }
                    SubscribeDecision::Defer => err::SUCCESS,
                    SubscribeDecision::Deny(d) => denial_rc(&d),
                }
            }
            access::READ => {
                let d = Delivery { topic, qos, retain, payload_size };
                match policy.authorize_delivery(session, &d) {
                    DeliveryDecision::Allow | DeliveryDecision::Defer => err::SUCCESS,
                    // A read check cannot end the session without disturbing the other
                    // subscribers' deliveries: a refused delivery is only skipped.
                    DeliveryDecision::Deny(_) => err::ACL_DENIED,
                }
            }
            _ => err::ACL_DENIED,
        }
    }

    /// MESSAGE: the retain flag to store, if the write check rewrote it.
    pub fn message(&mut self, key: usize, topic_key: usize) -> Option<bool> {
        let client = self.clients.get_mut(&key)?;
        match client.rewrite.take() {
            Some((k, retain)) if k == topic_key => Some(retain),
            _ => None,
        }
    }

    /// DISCONNECT: the client is gone.
    pub fn disconnect(&mut self, key: usize) {
        self.apply_updates();
        if let Some(c) = self.clients.get(&key) {
            let mut e = Event::new(&c.tenant, Action::Connect, Severity::Info, "disconnect", "client disconnected");
            e.client_id = Some(c.client_id.clone());
            if let (Some(session), Some(p)) = (c.session, self.policies.get(&c.tenant)) {
                e.device_id = p.session_info(session).map(|i| i.device_id.clone());
            }
            self.tenants.get(&c.tenant).events().emit(e);
        }
        self.forget(key);
    }

    fn forget(&mut self, key: usize) {
        if let Some(c) = self.clients.remove(&key) {
            if let (Some(session), Some(p)) = (c.session, self.policies.get_mut(&c.tenant)) {
                p.end_session(session);
            }
        }
    }
}

/// The Mosquitto return code for a denial: a negative acknowledgement (PUBACK/SUBACK 0x87),
/// or, when the policy asks to disconnect, the error Mosquitto turns into a DISCONNECT with
/// the closest reason code it can send.
pub fn denial_rc(d: &Denial) -> c_int {
    if !d.disconnect {
        return err::ACL_DENIED;
    }
    match d.reason {
        ReasonCode::RetainNotSupported => err::RETAIN_NOT_SUPPORTED,
        ReasonCode::QosNotSupported => err::QOS_NOT_SUPPORTED,
        ReasonCode::ProtocolError => err::PROTOCOL,
        _ => err::UNKNOWN,
    }
}

/// Event sinks for one tenant: JSON lines, plus the monitoring topic if configured.
pub struct TenantSink {
    /// Where JSON lines go (shared by all tenants).
    pub lines: Option<Arc<dyn EventSink>>,
    /// Monitoring topic of this tenant, with the queue the broker thread publishes from.
    pub monitor: Option<(String, Arc<MonitorQueue>)>,
}

impl EventSink for TenantSink {
    fn emit(&self, event: Event) {
        if let Some((topic, queue)) = &self.monitor {
            queue.push(topic.clone(), event.to_json());
        }
        if let Some(lines) = &self.lines {
            lines.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnecting_denials_map_to_the_errors_mosquitto_turns_into_disconnect_codes() {
        let d = |reason, disconnect| Denial { reason, message: String::new(), disconnect };
        assert_eq!(denial_rc(&d(ReasonCode::NotAuthorized, false)), err::ACL_DENIED);
        assert_eq!(denial_rc(&d(ReasonCode::RetainNotSupported, false)), err::ACL_DENIED);
        assert_eq!(denial_rc(&d(ReasonCode::RetainNotSupported, true)), err::RETAIN_NOT_SUPPORTED);
        assert_eq!(denial_rc(&d(ReasonCode::QosNotSupported, true)), err::QOS_NOT_SUPPORTED);
        assert_eq!(denial_rc(&d(ReasonCode::ProtocolError, true)), err::PROTOCOL);
        assert_eq!(denial_rc(&d(ReasonCode::QuotaExceeded, true)), err::UNKNOWN);
    }

    #[test]
    fn monitor_queue_drains_once() {
        let q = MonitorQueue::default();
        assert!(q.drain().is_empty());
        q.push("m/acme".into(), "{}".into());
        assert_eq!(q.drain(), vec![("m/acme".to_owned(), "{}".to_owned())]);
        assert!(q.drain().is_empty());
    }
}
