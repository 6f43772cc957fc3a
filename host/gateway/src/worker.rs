//! The per-thread side of a gateway: owns the policy instances (which are not `Sync`) and
//! the sessions of the connections it answers for, and turns what the broker saw into
//! typed outcomes.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxBuildHasher;

use mqtt_policy_host::events::{Action, Event, Severity};
use mqtt_policy_host::{
    Connect, ConnectDecision, Delivery, DeliveryDecision, Denial, Policy, Publish, PublishDecision, ReasonCode,
    SessionId, Subscribe, SubscribeDecision,
};

use crate::config::FailMode;
use crate::directory::Latest;
use crate::gateway::Gateway;
use crate::tenancy::{TenantSource, check_name};
use crate::types::{Access, Check, CheckOutcome, ConnectOutcome, Hello};

/// What a worker holds for one connection.
struct Session {
    tenant: String,
    /// The tenant's topic prefix, if prefixes are configured.
    prefix: Option<String>,
    /// `None` when the client was let through in fail-open mode: the broker's own rules apply.
    policy_session: Option<SessionId>,
    client_id: String,
}

/// One thread's view of a gateway. `K` identifies a connection the way the broker does (a
/// client pointer in Mosquitto, (tenant, client id) for a stateless HTTP protocol); `S` is the
/// hasher of the session map: FxHash suits keys clients cannot choose, use
/// `std::hash::RandomState` for keys they can.
pub struct Worker<K, S = FxBuildHasher> {
    gateway: Arc<Gateway>,
    /// The gateway's, held here so the check on every callback is one pointer away.
    latest: Arc<Latest>,
    policies: HashMap<String, Policy, FxBuildHasher>,
    sessions: HashMap<K, Session, S>,
    /// The generation of `latest` this worker's policies are at.
    seen: u64,
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Default> Worker<K, S> {
    /// A worker with every policy the gateway has loaded so far.
    pub fn new(gateway: Arc<Gateway>) -> Worker<K, S> {
        let latest = gateway.latest().clone();
        let mut w = Worker { gateway, latest, policies: HashMap::default(), sessions: HashMap::default(), seen: 0 };
        w.sync();
        w
    }

    /// The gateway this worker belongs to.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Tenants with a policy instance in this worker, sorted.
    pub fn loaded_tenants(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.policies.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// Number of sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Time-based work, called periodically by the broker: applies reloaded policies (for a
    /// broker whose clients are quiet) and is where session expiry will run.
    pub fn tick(&mut self, _now: Instant) {
        self.sync();
    }

    /// Swaps in policies the watcher has published since the last call. Cheap when there are
    /// none: one relaxed atomic load.
    #[inline]
    fn sync(&mut self) {
        if self.latest.generation() != self.seen {
            self.swap_in();
        }
    }

    #[cold]
    fn swap_in(&mut self) {
        let (generation, changed) = self.latest.since(self.seen);
        self.seen = generation;
        for (tenant, module) in changed {
            match self.policies.get_mut(&tenant) {
                Some(p) => p.replace(module),
                None => {
                    let mut policy = module.instantiate(self.gateway.tenant(&tenant));
                    policy.set_caching(self.gateway.config().decision_cache);
                    self.policies.insert(tenant, policy);
                }
            }
        }
    }

    fn resolve_tenant(&self, hello: &Hello<'_>) -> Result<String, Denial> {
        let refuse = |message: String| Denial { reason: ReasonCode::NotAuthorized, message, disconnect: true };
        if let Some(t) = hello.tenant {
            return check_name(t).map(|()| t.to_owned()).map_err(|e| refuse(e.to_string()));
        }
        match &self.gateway.config().tenant {
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

    /// Decides a connection. A key that already has a session (a broker reusing its
    /// connection object) loses it first.
    pub fn connect(&mut self, key: K, hello: &Hello<'_>) -> ConnectOutcome {
        self.sync();
        self.forget(&key);
        let reject = |this: &Self, tenant: &str, denial: Denial| {
            let mut e = Event::denial(tenant, Action::Connect, "reject", &denial);
            e.client_id = Some(hello.client_id.to_owned());
            this.gateway.tenant(tenant).events().emit(e);
            ConnectOutcome::Reject(denial)
        };
        let tenant = match self.resolve_tenant(hello) {
            Ok(t) => t,
            Err(d) => return reject(self, "*", d),
        };
        let prefix = self.gateway.config().prefix_for(&tenant);
        let Some(policy) = self.policies.get_mut(&tenant) else {
            return match self.gateway.config().fail_mode {
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
                    self.gateway.tenant(&tenant).events().emit(e);
                    let session =
                        Session { prefix, tenant, policy_session: None, client_id: hello.client_id.to_owned() };
                    self.sessions.insert(key, session);
                    ConnectOutcome::Defer
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
            protocol: hello.protocol,
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
                policy.tenant().events().emit(e);
                let username = (!info.device_id.is_empty()).then(|| info.device_id.clone());
                let session =
                    Session { prefix, tenant, policy_session: Some(session), client_id: hello.client_id.to_owned() };
                self.sessions.insert(key, session);
                ConnectOutcome::Accept { username }
            }
            // The policy already emitted the reject event.
            ConnectDecision::Reject(d) => ConnectOutcome::Reject(d),
            ConnectDecision::Defer => ConnectOutcome::Defer,
        }
    }

    /// Decides a publish, subscription, unsubscription or delivery of a connected client.
    pub fn check(&mut self, key: &K, check: &Check<'_>) -> CheckOutcome {
        self.sync();
        if check.access == Access::Unsubscribe {
            return CheckOutcome::Allow;
        }
        let Some(client) = self.sessions.get(key) else {
            // The broker let a client in without asking (e.g. Mosquitto's
            // `use_identity_as_username` skips authentication): fail closed.
            return CheckOutcome::Deny(Denial {
                reason: ReasonCode::NotAuthorized,
                message: "the client was never authenticated by the gateway".into(),
                disconnect: false,
            });
        };
        let Some(session) = client.policy_session else { return CheckOutcome::Defer };
        let Some(policy) = self.policies.get_mut(&client.tenant) else {
            return CheckOutcome::Deny(Denial {
                reason: ReasonCode::ServerUnavailable,
                message: format!("no policy is loaded for tenant {}", client.tenant),
                disconnect: false,
            });
        };
        let deny = |policy: &Policy, action: Action, topic: Option<&str>, d: Denial| {
            let mut e = Event::denial(&client.tenant, action, "deny", &d);
            e.client_id = Some(client.client_id.clone());
            e.topic = topic.map(str::to_owned);
            policy.tenant().events().emit(e);
            CheckOutcome::Deny(d)
        };
        let Ok(topic) = std::str::from_utf8(check.topic) else {
            let d = Denial {
                reason: ReasonCode::TopicNameInvalid,
                message: "topic is not valid UTF-8".into(),
                disconnect: false,
            };
            return deny(policy, Action::Publish, None, d);
        };
        let topic = match client.prefix.as_deref() {
            None => topic,
            Some(prefix) => match topic.strip_prefix(prefix) {
                Some(rest) => rest,
                None => {
                    let d = Denial {
                        reason: ReasonCode::NotAuthorized,
                        message: format!("topic {topic} is outside the tenant's topic space {prefix}"),
                        disconnect: false,
                    };
                    return match check.access {
                        // Deliveries from elsewhere are skipped quietly: they are other tenants' traffic.
                        Access::Delivery => CheckOutcome::Deny(d),
                        Access::Subscribe => deny(policy, Action::Subscribe, Some(topic), d),
                        _ => deny(policy, Action::Publish, Some(topic), d),
                    };
                }
            },
        };
        let (qos, retain, payload_size) = (check.qos, check.retain, check.payload_size);
        match check.access {
            Access::Publish => match policy.authorize_publish(session, &Publish { topic, qos, retain, payload_size }) {
                // A policy's defer on a check is taken as allow (SECURITY.md known gaps).
                PublishDecision::Allow | PublishDecision::Defer => CheckOutcome::Allow,
                // Only the retained flag can be acted on: the host refuses a rewrite that raises
                // QoS, and no broker integration lowers it yet.
                PublishDecision::Rewrite(r) if retain && !r.retain => CheckOutcome::AllowRetainCleared,
                PublishDecision::Rewrite(_) => CheckOutcome::Allow,
                PublishDecision::Deny(d) => CheckOutcome::Deny(d),
            },
            Access::Subscribe => match policy.authorize_subscribe(session, &Subscribe { filter: topic, qos }) {
                SubscribeDecision::Grant(granted) if granted >= qos => CheckOutcome::Allow,
                SubscribeDecision::Grant(granted) => {
                    // Refuse rather than grant more than the policy allows: brokers such as
                    // Mosquitto 2.0 cannot lower the QoS a plugin grants.
                    let d = Denial {
                        reason: ReasonCode::QosNotSupported,
                        message: format!(
                            "subscription at QoS {qos} allowed only at QoS {granted}; the broker cannot downgrade it, so it is refused"
                        ),
                        disconnect: false,
                    };
                    deny(policy, Action::Subscribe, Some(topic), d)
                }
                SubscribeDecision::Defer => CheckOutcome::Allow,
                SubscribeDecision::Deny(d) => CheckOutcome::Deny(d),
            },
            Access::Delivery => {
                match policy.authorize_delivery(session, &Delivery { topic, qos, retain, payload_size }) {
                    DeliveryDecision::Allow | DeliveryDecision::Defer => CheckOutcome::Allow,
                    DeliveryDecision::Deny(d) => CheckOutcome::Deny(d),
                }
            }
            Access::Unsubscribe => CheckOutcome::Allow,
        }
    }

    /// The client's network connection closed: emits `disconnect` and ends its session.
    pub fn disconnect(&mut self, key: &K) {
        self.sync();
        if let Some(c) = self.sessions.get(key) {
            let mut e = Event::new(&c.tenant, Action::Connect, Severity::Info, "disconnect", "client disconnected");
            e.client_id = Some(c.client_id.clone());
            if let (Some(session), Some(p)) = (c.policy_session, self.policies.get(&c.tenant)) {
                e.device_id = p.session_info(session).map(|i| i.device_id.clone());
            }
            self.gateway.tenant(&c.tenant).events().emit(e);
        }
        self.forget(key);
    }

    /// Ends the session of `key`, if any.
    fn forget(&mut self, key: &K) {
        if let Some(c) = self.sessions.remove(key) {
            if let (Some(session), Some(p)) = (c.policy_session, self.policies.get_mut(&c.tenant)) {
                p.end_session(session);
            }
        }
    }
}
