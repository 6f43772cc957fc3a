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
    Connect, ConnectDecision, Delivery, DeliveryDecision, Denial, MonitorSubject, Policy, Protocol, Publish,
    PublishDecision, ReasonCode, SessionId, Subscribe, SubscribeDecision, Tenant, events::NullSink, same_bytes,
};

use crate::client_ids::ClientIds;
use crate::config::FailMode;
use crate::directory::{Latest, candidate_of};
use crate::gateway::Gateway;
use crate::monitoring::{self, BrokerClose, Closing, Facts, Traffic};
use crate::tenancy::{TenantSource, check_name};
use crate::types::{Access, Adjusted, AdmittedAs, Check, CheckOutcome, ClientFacts, ConnectOutcome, Hello, Restored};

/// What a worker holds for one broker session.
struct Session {
    tenant: String,
    /// The tenant's topic prefix, if prefixes are configured.
    prefix: Option<String>,
    /// `None` when the client was let through in fail-open mode: the broker's own rules apply.
    policy_session: Option<SessionId>,
    /// Where the tenant's policy is in [`Worker::policies`], when `policy_session` is set: the
    /// hot path reaches it without hashing the tenant's name.
    slot: Option<usize>,
    client_id: String,
    /// The identity the policy admitted; a takeover of this session must prove the same one.
    device_id: String,
    /// The broker may keep the session after the connection (see [`persists`]).
    persistent: bool,
    /// When it last went offline, in [`Worker::offline`]'s sequence (0: never).
    offline_since: u64,
    state: Lifetime,
    /// This session's claim of its client id in the process's [`ClientIds`].
    claim: Option<u64>,
    /// The user name the broker holds for the client: the device id the gateway asked it to
    /// set, or the one the client sent. A check whose client says otherwise is not this one.
    username: Option<String>,
    /// Its connection as monitoring messages report it, if they do.
    watch: Option<Box<Watched>>,
    /// Its session in the tenant's candidate policy (monitor mode), if one was loaded when it
    /// connected and admitted it.
    candidate_session: Option<SessionId>,
}

impl Session {
    /// Whether the broker's client `c` is this session's: the same client id and user name
    /// (bytes, as the broker holds them). Mosquitto may give a freed client's address to the
    /// next connection, which is then not this session.
    fn is_of(&self, c: &ClientFacts<'_>) -> bool {
        let held = self.username.as_deref().map(str::as_bytes);
        same_bytes(c.client_id, self.client_id.as_bytes())
            && c.username.is_some() == held.is_some()
            && same_bytes(c.username.unwrap_or_default(), held.unwrap_or_default())
    }

    /// Whether `at` is this session's place in the offline queue (see [`Worker::offline`]).
    fn offline_at(&self, at: u64) -> bool {
        self.state == Lifetime::Offline && self.offline_since == at
    }
}

/// A connection reported in monitoring messages ([`crate::monitoring`]).
struct Watched {
    /// Its monitoring topic (under the tenant prefix).
    topic: String,
    application: bool,
    facts: Facts,
    traffic: Traffic,
    /// Set when the gateway itself ended the connection (a disconnecting denial, an expired
    /// proof): that is the closing reported, whatever the broker says.
    closing: Option<Closing>,
    /// Its `Disconnect` was sent (a takeover sends it before the new connection's `Connect`).
    reported: bool,
}

/// A downgrade a policy asked for, for [`Worker::check_lowering`].
enum Lower {
    Publish(mqtt_policy_host::PublishRewrite),
    Subscribe(u8),
}

/// Whether the broker may keep a session after its connection closes. MQTT 3.1.1: clean
/// session 0. MQTT 5: a session expiry interval above 0, which brokers do not report to
/// plugins (Mosquitto 2.0.11 has no call for it), with either clean start; so every MQTT 5
/// session is kept, bounded like other offline sessions, rather than losing a Last Will with a
/// delay or messages queued for a client that asked for them.
fn persists(hello: &Hello<'_>) -> bool {
    !hello.clean_start || hello.protocol == Protocol::Mqtt5
}

/// Where a session is in its life. The broker keeps asking about a session after its
/// connection closed (its Last Will right after, messages queued for it while it is offline),
/// so a closed connection does not end the session at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifetime {
    /// Connected.
    Online,
    /// A persistent session whose client is away; queued messages are still checked.
    Offline,
    /// Over (clean session closed, or taken over): ended at the next connect or tick, once the
    /// broker has sent its will and finished with it.
    Ending,
}

/// Most offline persistent sessions a worker remembers; past it the oldest is ended (its queued
/// messages are then refused), so clients cannot grow the broker without bound.
pub const MAX_OFFLINE_SESSIONS: usize = 100_000;

/// One thread's view of a gateway. `K` identifies a connection the way the broker does (a
/// client pointer in Mosquitto, (tenant, client id) for a stateless HTTP protocol); `S` is the
/// hasher of the session map: FxHash suits keys clients cannot choose, use
/// `std::hash::RandomState` for keys they can.
pub struct Worker<K, S = FxBuildHasher> {
    gateway: Arc<Gateway>,
    /// The gateway's, held here so the check on every callback is one pointer away.
    latest: Arc<Latest>,
    policies: Policies,
    /// Candidate policies by tenant (`TENANT.next.wasm`): asked the same questions, answering
    /// none of them; where they differ from the enforced policy, a `would-allow` or
    /// `would-deny` event. Each has a tenant of its own (counters, no events).
    candidates: HashMap<String, Policy, FxBuildHasher>,
    sessions: HashMap<K, Session, S>,
    /// The session of this worker holding each client id, to hand it over on a takeover.
    by_client_id: HashMap<String, K>,
    /// Which identity holds each client id in the whole broker process (all workers).
    client_ids: ClientIds,
    /// Sessions to end at the next connect or tick.
    ending: Vec<K>,
    /// Offline sessions, oldest first, each with its place in the sequence of goings offline:
    /// an entry whose session came back, ended or went offline again later (a key the broker
    /// reused, a session that reconnected) is stale and skipped.
    offline: std::collections::VecDeque<(K, u64)>,
    /// The last number given in `offline`'s sequence.
    offline_seq: u64,
    /// Sessions in [`Lifetime::Offline`] (the live entries of `offline`).
    offline_live: usize,
    /// Broker-restored sessions the policy (or tenancy) refused to re-establish, with the
    /// refusal their checks get; retried after a reload.
    unrestorable: HashMap<K, Denial, S>,
    /// The generation of `latest` this worker's policies are at.
    seen: u64,
    /// When [`Worker::tick`] looks for expired proofs next.
    next_sweep: Option<Instant>,
}

/// How often [`Worker::tick`] looks for sessions whose proof expired. Mosquitto ticks its
/// plugins on every turn of its event loop, tens of thousands of times a second under load;
/// an expired session is denied at its next check anyway, the sweep only disconnects it.
const EXPIRY_SWEEP: std::time::Duration = std::time::Duration::from_millis(100);

impl<K: Hash + Eq + Clone, S: BuildHasher + Default> Worker<K, S> {
    /// A worker with every policy the gateway has loaded so far, and a client-id registry
    /// of its own.
    pub fn new(gateway: Arc<Gateway>) -> Worker<K, S> {
        Worker::sharing(gateway, ClientIds::new())
    }

    /// A worker sharing `client_ids` with the other workers of the broker process (several
    /// listeners, each with a gateway of its own, or several threads): a client id then
    /// belongs to one identity across all of them.
    pub fn sharing(gateway: Arc<Gateway>, client_ids: ClientIds) -> Worker<K, S> {
        let latest = gateway.latest().clone();
        let mut w = Worker {
            gateway,
            latest,
            policies: Policies::default(),
            candidates: HashMap::default(),
            sessions: HashMap::default(),
            by_client_id: HashMap::default(),
            client_ids,
            ending: Vec::new(),
            next_sweep: None,
            offline: std::collections::VecDeque::new(),
            offline_seq: 0,
            offline_live: 0,
            unrestorable: HashMap::default(),
            seen: 0,
        };
        w.sync();
        w
    }

    /// The gateway this worker belongs to.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Tenants with a policy instance in this worker, sorted.
    pub fn loaded_tenants(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.policies.names().collect();
        v.sort();
        v
    }

    /// Number of sessions held (connected, offline persistent, and ending).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of offline persistent sessions held.
    pub fn offline_count(&self) -> usize {
        debug_assert_eq!(self.offline_live, self.sessions.values().filter(|s| s.state == Lifetime::Offline).count());
        self.offline_live
    }

    /// Whether sessions wait to be ended by the next [`Worker::tick`] (or connect). A broker
    /// adapter that skips ticks must not skip one then: the broker may give the key to a new
    /// connection it lets in without asking, which would otherwise meet the ending session.
    pub fn has_sessions_to_end(&self) -> bool {
        !self.ending.is_empty()
    }

    /// Time-based work, called periodically by the broker: applies reloaded policies (for a
    /// broker whose clients are quiet) and ends sessions whose broker session is over.
    ///
    /// Returns the client ids of connected sessions whose proof expired (a SAS token's `se`):
    /// the broker disconnects them (each is reported once, with an `expired` event, and every
    /// later check of it is denied). Expired proofs are looked for every 100 ms at most.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        self.sync();
        self.end_pending();
        if self.next_sweep.is_some_and(|at| now < at) {
            return Vec::new();
        }
        self.next_sweep = Some(now + EXPIRY_SWEEP);
        let now_ms = mqtt_policy_host::events::now_ms();
        let mut expired = Vec::new();
        for policy in self.policies.iter_mut() {
            for session in policy.expired_sessions(now_ms) {
                expired.push(session);
            }
        }
        if expired.is_empty() {
            return Vec::new();
        }
        let expired: std::collections::HashSet<SessionId> = expired.into_iter().collect();
        self.sessions
            .values_mut()
            .filter(|s| s.state == Lifetime::Online && s.policy_session.is_some_and(|id| expired.contains(&id)))
            .map(|s| {
                if let Some(w) = s.watch.as_deref_mut() {
                    w.closing.get_or_insert(Closing {
                        code: 180,
                        detail: Some("the credentials this client connected with expired".into()),
                    });
                }
                s.client_id.clone()
            })
            .collect()
    }

    /// Ends the sessions marked [`Lifetime::Ending`]. Not done in the disconnect itself: the
    /// broker checks the Last Will (and a takeover's queued messages) after telling us.
    fn end_pending(&mut self) {
        // Asked at every tick, which Mosquitto makes once per turn of its loop (about once per
        // message): nothing to do is the common case.
        if self.ending.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.ending) {
            if self.sessions.get(&key).is_some_and(|s| s.state == Lifetime::Ending) {
                self.forget(&key);
            }
        }
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
        // New rules may admit restored sessions the old ones refused.
        self.unrestorable.clear();
        for (name, module) in changed {
            if let Some(tenant) = candidate_of(&name) {
                let tenant = tenant.to_owned();
                match module {
                    Some(module) => match self.candidates.get_mut(&tenant) {
                        Some(p) => p.replace(module),
                        None => {
                            // Its own counters (a quota it counts must not use up the enforced
                            // policy's) and no events of its own: only the differences are told.
                            let mut policy = module.instantiate(Tenant::with_events(&name, Arc::new(NullSink)));
                            policy.set_caching(self.gateway.config().decision_cache);
                            self.candidates.insert(tenant, policy);
                        }
                    },
                    None => {
                        self.candidates.remove(&tenant);
                        for s in self.sessions.values_mut().filter(|s| s.tenant == tenant) {
                            s.candidate_session = None;
                        }
                    }
                }
                continue;
            }
            let Some(module) = module else { continue };
            match self.policies.get_mut(&name) {
                Some(p) => p.replace(module),
                None => {
                    let mut policy = module.instantiate(self.gateway.tenant(&name));
                    policy.set_caching(self.gateway.config().decision_cache);
                    self.policies.insert(name, policy);
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
                // The operator's map decides, never the CAs policies embed.
                self.gateway.config().tenant_cas.tenant_of(der).map(str::to_owned).map_err(refuse)
            }
        }
    }

    /// Decides a connection. A key that already has a session (a broker reusing its
    /// connection object) loses it first.
    pub fn connect(&mut self, key: K, hello: &Hello<'_>) -> ConnectOutcome {
        self.sync();
        self.end_pending();
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
        let slot = self.policies.slot(&tenant);
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
                    let claim = match self.client_ids.claim(hello.client_id, &tenant, "", None) {
                        Ok(claim) => claim,
                        Err(holder) => return reject(self, &tenant, taken(hello.client_id, &holder, "this client")),
                    };
                    self.gateway.tenant(&tenant).events().emit(e);
                    let session = Session {
                        prefix,
                        tenant,
                        policy_session: None,
                        slot: None,
                        client_id: hello.client_id.to_owned(),
                        device_id: String::new(),
                        persistent: persists(hello),
                        offline_since: 0,
                        state: Lifetime::Online,
                        claim: Some(claim),
                        username: hello.username.map(str::to_owned),
                        watch: None,
                        candidate_session: None,
                    };
                    self.sessions.insert(key.clone(), session);
                    self.by_client_id.insert(hello.client_id.to_owned(), key);
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
        let facts = self.gateway.monitoring().is_some().then(|| Facts {
            client_addr: hello.peer.to_owned(),
            client_id: hello.client_id.to_owned(),
            port: hello.port.unwrap_or(0),
            secure: certificate.is_some(),
            protocol: monitoring::protocol_name(hello.protocol, hello.websockets),
            user: hello.username.map(str::to_owned),
            certname: certificate.as_ref().and_then(|c| c.subject_cn.clone()),
            connect_ms: None,
        });
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
        let decision = policy.authenticate(&connect);
        let subject = policy.take_monitor();
        let failed = |this: &Self, denial: &Denial| {
            if let (Some(facts), Some(subject)) = (&facts, &subject) {
                this.failed_connect(&tenant, prefix.as_deref(), subject, facts, denial);
            }
        };
        match decision {
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
                e.attributes = info.attributes.clone();
                let owner = hello.client_id.to_owned();
                let claim = match self.client_ids.claim(&owner, &tenant, &info.device_id, principal_of(&info)) {
                    Ok(claim) => claim,
                    Err(holder) => {
                        // The broker would hand this connection the session (subscriptions,
                        // queued messages) of another identity, or close that identity's
                        // connection: on any listener of the process.
                        policy.end_session(session);
                        let denial = taken(hello.client_id, &holder, &info.device_id);
                        failed(self, &denial);
                        return reject(self, &tenant, denial);
                    }
                };
                policy.tenant().events().emit(e);
                if let Some(old) = self.by_client_id.get(&owner).cloned()
                    && let Some(s) = self.sessions.get_mut(&old)
                {
                    // The same identity takes its session over: the broker sends the old one's
                    // will, moves its queue to the new connection and drops it.
                    if s.state == Lifetime::Online {
                        let mut e = Event::new(
                            &s.tenant,
                            Action::Connect,
                            Severity::Info,
                            "takeover",
                            "connection closed on new connection: the same device connected again",
                        );
                        e.client_id = Some(s.client_id.clone());
                        e.device_id = Some(s.device_id.clone());
                        self.gateway.tenant(&s.tenant).events().emit(e);
                        // Its Disconnect (288) goes before the new Connect, so the last retained
                        // status is the new connection's.
                        if let (Some(w), Some(m)) = (s.watch.as_deref_mut(), self.gateway.monitoring()) {
                            w.closing = Some(BrokerClose::Takeover.closing());
                            report_disconnect(m, w, BrokerClose::Takeover);
                        }
                    }
                    if s.state == Lifetime::Offline {
                        self.offline_live -= 1;
                    }
                    s.state = Lifetime::Ending;
                    self.ending.push(old);
                }
                let watch = match (facts, subject, self.gateway.monitoring()) {
                    (Some(mut facts), Some(subject), Some(m)) => {
                        let now = mqtt_policy_host::events::now_ms();
                        facts.connect_ms = Some(now);
                        let application = matches!(subject, MonitorSubject::Application { .. });
                        let topic = monitoring::topic_of(&subject, prefix.as_deref());
                        m.connect(topic.clone(), monitoring::message("Connect", now, &facts, None, None), true);
                        Some(Box::new(Watched {
                            topic,
                            application,
                            facts,
                            traffic: Traffic::default(),
                            closing: None,
                            reported: false,
                        }))
                    }
                    _ => None,
                };
                let username = (!info.device_id.is_empty()).then(|| info.device_id.clone());
                let candidate_session = self.shadow_connect(&tenant, &connect, None);
                let session = Session {
                    candidate_session,
                    prefix,
                    tenant,
                    policy_session: Some(session),
                    slot,
                    client_id: hello.client_id.to_owned(),
                    device_id: info.device_id.clone(),
                    persistent: persists(hello),
                    offline_since: 0,
                    state: Lifetime::Online,
                    claim: Some(claim),
                    username: username.clone().or_else(|| hello.username.map(str::to_owned)),
                    watch,
                };
                self.sessions.insert(key.clone(), session);
                self.by_client_id.insert(owner, key);
                ConnectOutcome::Accept { username }
            }
            // The policy already emitted the reject event.
            ConnectDecision::Reject(d) => {
                failed(self, &d);
                self.shadow_connect(&tenant, &connect, Some(&d));
                ConnectOutcome::Reject(d)
            }
            ConnectDecision::Defer => ConnectOutcome::Defer,
        }
    }

    /// Asks the tenant's candidate policy, if any, about a connection the enforced one accepted
    /// (`refused` is `None`) or refused; tells where they differ. Returns the candidate's session
    /// of an accepted connection.
    fn shadow_connect(&mut self, tenant: &str, connect: &Connect, refused: Option<&Denial>) -> Option<SessionId> {
        let candidate = self.candidates.get_mut(tenant)?;
        let (theirs, session) = match candidate.authenticate(connect) {
            ConnectDecision::Accept(session, _) => (Ok(()), Some(session)),
            ConnectDecision::Reject(d) => (Err(d), None),
            ConnectDecision::Defer => (Ok(()), None),
        };
        let differs = match (refused, &theirs) {
            (None, Err(d)) => Some(("would-deny", format!("the candidate policy would refuse: {}", d.message))),
            (Some(d), Ok(())) => {
                Some(("would-allow", format!("the candidate policy would accept; enforced: {}", d.message)))
            }
            _ => None,
        };
        if let Some((outcome, message)) = differs {
            let mut e = Event::new(tenant, Action::Connect, Severity::Info, outcome, message);
            e.client_id = Some(connect.client_id.clone());
            self.gateway.tenant(tenant).events().emit(e);
        }
        match (refused, session) {
            (None, session) => session,
            (Some(_), Some(session)) => {
                candidate_end(&mut self.candidates, tenant, session);
                None
            }
            (Some(_), None) => None,
        }
    }

    /// Asks the candidate policy of `key`'s tenant the check the enforced one answered with
    /// `enforced`; tells where they differ.
    fn shadow_check(&mut self, key: &K, check: &Check<'_>, lowering: bool, enforced: &CheckOutcome) {
        let Some(s) = self.sessions.get(key) else { return };
        if s.candidate_session.is_none() || !self.candidates.contains_key(&s.tenant) {
            return;
        }
        let (tenant, client_id) = (s.tenant.clone(), s.client_id.clone());
        let action = match check.access {
            Access::Publish => Action::Publish,
            Access::Subscribe => Action::Subscribe,
            Access::Delivery => Action::Delivery,
            Access::Unsubscribe => return,
        };
        let theirs = match self.decide_as(key, check, lowering, true) {
            Ok(o) => o,
            // A downgrade the broker would carry out: allowed.
            Err(_) => CheckOutcome::Allow,
        };
        let refused = |o: &CheckOutcome| match o {
            CheckOutcome::Deny(d) => Some(d.message.clone()),
            _ => None,
        };
        let topic = String::from_utf8_lossy(check.topic);
        let (outcome, message) = match (refused(enforced), refused(&theirs)) {
            (None, Some(why)) => ("would-deny", format!("the candidate policy would refuse: {why}")),
            (Some(why), None) => ("would-allow", format!("the candidate policy would allow; enforced: {why}")),
            _ => return,
        };
        let mut e = Event::new(&tenant, action, Severity::Info, outcome, message);
        e.client_id = Some(client_id);
        e.topic = Some(topic.into_owned());
        self.gateway.tenant(&tenant).events().emit(e);
    }

    /// A `FailedConnect` for a refused connection the policy named.
    fn failed_connect(
        &self,
        tenant: &str,
        prefix: Option<&str>,
        subject: &MonitorSubject,
        facts: &Facts,
        denial: &Denial,
    ) {
        let Some(m) = self.gateway.monitoring() else { return };
        let now = mqtt_policy_host::events::now_ms();
        let closing = Closing::of_denial(denial.reason, &denial.message);
        let payload = monitoring::message("FailedConnect", now, facts, Some(&closing), None);
        m.failed(tenant, monitoring::topic_of(subject, prefix), payload, now);
    }

    /// Decides a publish, subscription, unsubscription or delivery of a connected client.
    pub fn check(&mut self, key: &K, check: &Check<'_>) -> CheckOutcome {
        match self.check_lowering_as(key, check, false) {
            Adjusted::As(outcome) => outcome,
            // Only asked for below.
            Adjusted::Lowered { .. } => unreachable!("a check that may not lower was lowered"),
        }
    }

    /// As [`Worker::check`], for a broker that restores sessions from its own persistence
    /// (see [`Worker::restore`]): a check about a key this worker has never seen first asks
    /// `persisted` for the session the broker restored under it, if any. The common case, a
    /// reused allow, costs no extra lookup.
    pub fn check_or_restore<'r>(
        &mut self,
        key: &K,
        check: &Check<'_>,
        persisted: impl FnOnce() -> Option<Restored<'r>>,
    ) -> CheckOutcome {
        if self.reused_allow(key, check) {
            return CheckOutcome::Allow;
        }
        if !self.knows(key)
            && let Some(restored) = persisted()
        {
            self.restore(key.clone(), &restored);
        }
        match self.check_in_full(key, check, false) {
            Adjusted::As(outcome) => outcome,
            Adjusted::Lowered { .. } => unreachable!("a check that may not lower was lowered"),
        }
    }

    /// As [`Worker::check`], for a broker that can lower the QoS of a publish or a
    /// subscription on the service's word (VerneMQ's webhook modifiers and per-topic SUBACK
    /// QoS): a policy's QoS downgrade becomes [`Adjusted::Lowered`] instead of a refusal.
    pub fn check_lowering(&mut self, key: &K, check: &Check<'_>) -> Adjusted {
        self.check_lowering_as(key, check, true)
    }

    /// The device a session was admitted as, with its tenant and when its proof expires; `None`
    /// for a key without a session a policy admitted (see [`Worker::admitted`]).
    pub fn admitted_as(&self, key: &K) -> Option<AdmittedAs<'_>> {
        let s = self.sessions.get(key).filter(|s| s.state != Lifetime::Ending)?;
        let info = self.policies.get(&s.tenant)?.session_info(s.policy_session?)?;
        Some(AdmittedAs { tenant: &s.tenant, device_id: &s.device_id, expires_at_ms: info.expires_at_ms })
    }

    fn check_lowering_as(&mut self, key: &K, check: &Check<'_>, lowering: bool) -> Adjusted {
        if self.reused_allow(key, check) {
            return Adjusted::As(CheckOutcome::Allow);
        }
        self.check_in_full(key, check, lowering)
    }

    /// A check the hot path ([`Worker::reused_allow`]) did not answer.
    fn check_in_full(&mut self, key: &K, check: &Check<'_>, lowering: bool) -> Adjusted {
        let adjusted = self.decide(key, check, lowering);
        let outcome = match &adjusted {
            Adjusted::As(o) => o.clone(),
            Adjusted::Lowered { retain, .. } if check.retain && !retain => CheckOutcome::AllowRetainCleared,
            Adjusted::Lowered { .. } => CheckOutcome::Allow,
        };
        if !self.candidates.is_empty() {
            self.shadow_check(key, check, lowering, &outcome);
        }
        if self.gateway.monitoring().is_some()
            && let Some(w) = self.sessions.get_mut(key).and_then(|s| s.watch.as_deref_mut())
        {
            let size = u64::from(check.payload_size);
            match (check.access, &outcome) {
                (Access::Publish, _) => {
                    w.traffic.read_msgs += 1;
                    w.traffic.read_bytes += size;
                }
                (Access::Delivery, CheckOutcome::Allow | CheckOutcome::AllowRetainCleared) => {
                    w.traffic.write_msgs += 1;
                    w.traffic.write_bytes += size;
                }
                _ => {}
            }
            if let CheckOutcome::Deny(d) = &outcome
                && d.disconnect
                && check.access != Access::Delivery
                && w.closing.is_none()
            {
                // The broker closes the connection for this denial.
                w.closing = Some(Closing::of_denial(d.reason, &d.message));
            }
        }
        adjusted
    }

    /// The hot path of the per-message checks: a publish or delivery its session's policy
    /// allowed before with the same flags, answered from the policy's decision cache when
    /// nothing else is to be done. Anything more (a reload to swap in, candidate policies to
    /// ask, monitoring's counters and reserved topics, a session that is not this client's,
    /// a cached denial or rewrite, a proof that expires) takes the full path, which answers a
    /// cached allow the same way. Compares bytes: the topic is checked to be UTF-8 only if
    /// no decision was kept for it (only valid topics' are).
    #[inline]
    fn reused_allow(&self, key: &K, check: &Check<'_>) -> bool {
        let publish = match check.access {
            Access::Publish => true,
            Access::Delivery => false,
            Access::Subscribe | Access::Unsubscribe => return false,
        };
        if self.latest.generation() != self.seen || !self.candidates.is_empty() || self.gateway.monitoring().is_some() {
            return false;
        }
        let Some(s) = self.sessions.get(key) else { return false };
        if check.client.as_ref().is_some_and(|c| !s.is_of(c)) {
            return false;
        }
        let (Some(session), Some(slot)) = (s.policy_session, s.slot) else { return false };
        let policy = self.policies.at(slot);
        let topic = match s.prefix.as_deref() {
            None => check.topic,
            Some(prefix) => match check.topic.strip_prefix(prefix.as_bytes()) {
                Some(rest) => rest,
                None => return false,
            },
        };
        let (qos, retain, size) = (check.qos, check.retain, check.payload_size);
        if publish {
            policy.reuses_publish_allow(session, topic, qos, retain, size)
        } else {
            policy.reuses_delivery_allow(session, topic, qos, retain, size)
        }
    }

    fn decide(&mut self, key: &K, check: &Check<'_>, lowering: bool) -> Adjusted {
        let (qos, retain) = (check.qos, check.retain);
        match self.decide_as(key, check, lowering, false) {
            Ok(outcome) => Adjusted::As(outcome),
            Err(Lower::Publish(r)) => Adjusted::Lowered { qos: r.qos.min(qos), retain: retain && r.retain },
            Err(Lower::Subscribe(granted)) => Adjusted::Lowered { qos: granted, retain: false },
        }
    }

    /// The outcome, or (only when `lowering`) the downgrade the policy asked for.
    /// With `candidate`, the tenant's candidate policy is asked instead (its events go nowhere).
    fn decide_as(
        &mut self,
        key: &K,
        check: &Check<'_>,
        lowering: bool,
        candidate: bool,
    ) -> Result<CheckOutcome, Lower> {
        self.sync();
        if check.access == Access::Unsubscribe {
            return Ok(CheckOutcome::Allow);
        }
        let Some(client) = self.sessions.get(key) else { return Ok(self.unknown(key)) };
        let stale = check.client.as_ref().is_some_and(|c| !client.is_of(c))
            // An away client subscribes to nothing: a connected one took the key.
            || (check.access == Access::Subscribe && client.state != Lifetime::Online);
        if stale {
            self.forget(key);
            return Ok(self.unknown(key));
        }
        let session = if candidate { client.candidate_session } else { client.policy_session };
        let Some(session) = session else { return Ok(CheckOutcome::Defer) };
        // The broker checks a Last Will after telling us the connection closed.
        let will = client.state != Lifetime::Online;
        let policy =
            if candidate { self.candidates.get_mut(&client.tenant) } else { self.policies.get_mut(&client.tenant) };
        let Some(policy) = policy else {
            return Ok(CheckOutcome::Deny(Denial {
                reason: ReasonCode::ServerUnavailable,
                message: format!("no policy is loaded for tenant {}", client.tenant),
                disconnect: false,
            }));
        };
        let deny = |policy: &Policy, action: Action, topic: Option<&str>, d: Denial| {
            let mut e = Event::denial(&client.tenant, action, "deny", &d);
            e.client_id = Some(client.client_id.clone());
            e.topic = topic.map(str::to_owned);
            policy.tenant().events().emit(e);
            CheckOutcome::Deny(d)
        };
        let Some(topic) = utf8(check.topic) else {
            let d = Denial {
                reason: ReasonCode::TopicNameInvalid,
                message: "topic is not valid UTF-8".into(),
                disconnect: false,
            };
            return Ok(deny(policy, Action::Publish, None, d));
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
                    return Ok(match check.access {
                        // Deliveries from elsewhere are skipped quietly: they are other tenants' traffic.
                        Access::Delivery => CheckOutcome::Deny(d),
                        Access::Subscribe => deny(policy, Action::Subscribe, Some(topic), d),
                        _ => deny(policy, Action::Publish, Some(topic), d),
                    });
                }
            },
        };
        if check.access == Access::Publish && self.gateway.config().monitoring && monitoring::is_monitoring_topic(topic)
        {
            // Only the gateway reports connections there: a client's message would be a forgery.
            let d = Denial {
                reason: ReasonCode::NotAuthorized,
                message: format!("unauthorized topic {topic}: monitoring messages are published by the broker only"),
                disconnect: false,
            };
            return Ok(deny(policy, Action::Publish, Some(topic), d));
        }
        let (qos, retain, payload_size) = (check.qos, check.retain, check.payload_size);
        Ok(match check.access {
            Access::Publish => match policy.authorize_publish(session, &Publish { topic, qos, retain, payload_size }) {
                // A policy's defer on a check is taken as allow (SECURITY.md known gaps).
                PublishDecision::Allow | PublishDecision::Defer => CheckOutcome::Allow,
                // The host refuses a rewrite that raises QoS; a broker that can lower it (and
                // clear the retained flag, a will's too) gets the rewrite as asked.
                PublishDecision::Rewrite(r) if lowering && (r.qos < qos || (retain && !r.retain)) => {
                    return Err(Lower::Publish(r));
                }
                // Otherwise only the retained flag can be acted on.
                PublishDecision::Rewrite(r) if retain && !r.retain && will => {
                    // A broker sends a will without the message hook that clears the flag.
                    let d = Denial {
                        reason: ReasonCode::RetainNotSupported,
                        message: format!(
                            "retained Last Will refused: {}; the broker cannot clear a will's retained flag",
                            r.message
                        ),
                        disconnect: false,
                    };
                    deny(policy, Action::Publish, Some(topic), d)
                }
                PublishDecision::Rewrite(r) if retain && !r.retain => CheckOutcome::AllowRetainCleared,
                PublishDecision::Rewrite(_) => CheckOutcome::Allow,
                PublishDecision::Deny(d) => CheckOutcome::Deny(d),
            },
            Access::Subscribe => match policy.authorize_subscribe(session, &Subscribe { filter: topic, qos }) {
                SubscribeDecision::Grant(granted) if granted >= qos => CheckOutcome::Allow,
                SubscribeDecision::Grant(granted) if lowering => return Err(Lower::Subscribe(granted)),
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
        })
    }

    /// The client's network connection closed: emits `disconnect`. A persistent session stays
    /// (offline) for the messages the broker queues for it; a clean one ends at the next
    /// connect or tick, after the broker has checked its Last Will.
    ///
    /// The broker did not say how the connection closed: see [`Worker::closed`].
    pub fn disconnect(&mut self, key: &K) {
        self.closed(key, BrokerClose::Unknown);
    }

    /// As [`Worker::disconnect`], with how the broker says the connection closed, for the
    /// connection's `Disconnect` monitoring message (unless the gateway itself ended it: a
    /// disconnecting denial or an expired proof is reported as such).
    pub fn closed(&mut self, key: &K, how: BrokerClose) {
        self.sync();
        self.unrestorable.remove(key);
        let Some(c) = self.sessions.get_mut(key) else { return };
        if c.state != Lifetime::Online {
            return;
        }
        if let (Some(w), Some(m)) = (c.watch.as_deref_mut(), self.gateway.monitoring()) {
            report_disconnect(m, w, how);
        }
        let mut e = Event::new(&c.tenant, Action::Connect, Severity::Info, "disconnect", "client disconnected");
        e.client_id = Some(c.client_id.clone());
        e.device_id = (!c.device_id.is_empty()).then(|| c.device_id.clone());
        self.gateway.tenant(&c.tenant).events().emit(e);
        if c.persistent {
            c.state = Lifetime::Offline;
            if let (Some(session), Some(p)) = (c.policy_session, self.policies.get_mut(&c.tenant)) {
                p.set_connected(session, false);
            }
            self.offline_seq += 1;
            self.offline_live += 1;
            c.offline_since = self.offline_seq;
            self.offline.push_back((key.clone(), self.offline_seq));
            self.bound_offline();
        } else {
            c.state = Lifetime::Ending;
            self.ending.push(key.clone());
        }
    }

    /// Ends the session of `key` now, whatever its state (a restored or offline one too), after
    /// [`Worker::disconnect`] if it was connected. For brokers that never report a disconnect
    /// and stop asking about a session: an HTTP adapter ends its idle sessions so.
    pub fn end(&mut self, key: &K) {
        self.disconnect(key);
        self.forget(key);
    }

    /// Keeps at most [`MAX_OFFLINE_SESSIONS`] offline sessions, ending the longest away.
    fn bound_offline(&mut self) {
        while self.offline_live > MAX_OFFLINE_SESSIONS {
            let Some((k, at)) = self.offline.pop_front() else { break };
            if self.sessions.get(&k).is_some_and(|s| s.offline_at(at)) {
                self.forget(&k);
            }
        }
        // Entries of sessions that came back or ended are dropped once they are as many as the
        // live ones (and a few): each disconnect costs O(1) amortised, never a scan of them all.
        if self.offline.len() > 2 * self.offline_live + 1024 {
            self.offline.retain(|(k, at)| self.sessions.get(k).is_some_and(|s| s.offline_at(*at)));
        }
    }

    /// Ends the session of `key`, if any.
    fn forget(&mut self, key: &K) {
        self.unrestorable.remove(key);
        if let Some(c) = self.sessions.remove(key) {
            if c.state == Lifetime::Offline {
                self.offline_live -= 1;
            }
            if self.by_client_id.get(&c.client_id) == Some(key) {
                self.by_client_id.remove(&c.client_id);
            }
            if let Some(claim) = c.claim {
                self.client_ids.release(&c.client_id, claim);
            }
            if let (Some(session), Some(p)) = (c.policy_session, self.policies.get_mut(&c.tenant)) {
                p.end_session(session);
            }
            if let Some(session) = c.candidate_session {
                candidate_end(&mut self.candidates, &c.tenant, session);
            }
        }
    }

    /// Whether this worker holds anything for `key`: a session (connected, offline or ending)
    /// or a refused restore. A broker adapter asks before [`Worker::restore`].
    pub fn knows(&self, key: &K) -> bool {
        self.sessions.contains_key(key) || self.unrestorable.contains_key(key)
    }

    /// Whether `key` has a session a policy admitted (connected, offline or restored): not one
    /// let through by fail-open mode, not a refused restore. For brokers that ask about
    /// operations outside the policy's world (RabbitMQ's queue and exchange checks) and only
    /// need to know the client is one the gateway let in.
    pub fn admitted(&self, key: &K) -> bool {
        self.sessions.get(key).is_some_and(|s| s.policy_session.is_some() && s.state != Lifetime::Ending)
    }

    /// Re-establishes, lazily, a session the broker restored from its own persistence after a
    /// restart, at the first check the broker asks about it (a message published for it while
    /// its client is away). Call it only for a key the broker says has no connection and that
    /// was never seen connecting (Mosquitto: a restored context, which has no address), never
    /// for a connected client the broker let in without asking: that one stays unknown and
    /// denied. A key this worker knows is left as it is.
    ///
    /// The tenant is resolved as for a connect from what the broker kept (a certificate is not
    /// kept: `tenant_from certificate` cannot restore), and the policy is asked with
    /// `resumed = true` and no credentials ([`mqtt_policy_host::Policy::restore`]). An admitted
    /// session is offline (no connection: connection quotas do not count it) and owns its
    /// client id: a client connecting with that id must be admitted as the same identity, or
    /// is refused with 0x85 before the broker hands it the session. A refusal is one
    /// `restore-refused` event; the session's checks are then denied with it (until a reload).
    /// Returns whether the session is now known.
    pub fn restore(&mut self, key: K, restored: &Restored<'_>) -> bool {
        self.sync();
        if self.knows(&key) {
            return self.sessions.contains_key(&key);
        }
        // No password, no certificate, no peer: only what the broker kept.
        let hello = Hello {
            username: restored.username,
            clean_start: false,
            protocol: restored.protocol,
            tenant: restored.tenant,
            ..Hello::new(restored.client_id)
        };
        let tenant = match self.resolve_tenant(&hello) {
            Ok(t) => t,
            Err(d) => return self.refuse_restore(key, "*", restored.client_id, d.message),
        };
        if self.by_client_id.get(restored.client_id).is_some_and(|k| self.sessions.contains_key(k)) {
            // A broker holds one session per client id: the worker's is the one it knows.
            let message = format!("client identifier {} already has a session here", restored.client_id);
            return self.refuse_restore(key, &tenant, restored.client_id, message);
        }
        let prefix = self.gateway.config().prefix_for(&tenant);
        let slot = self.policies.slot(&tenant);
        let session = |tenant: String, policy_session: Option<SessionId>, device_id: String| Session {
            tenant,
            prefix,
            slot: policy_session.and(slot),
            policy_session,
            client_id: restored.client_id.to_owned(),
            device_id,
            persistent: true,
            offline_since: 0,
            state: Lifetime::Offline,
            claim: None,
            username: restored.username.map(str::to_owned),
            watch: None,
            candidate_session: None,
        };
        let Some(policy) = self.policies.get_mut(&tenant) else {
            return match self.gateway.config().fail_mode {
                FailMode::Closed => {
                    let message = format!("no policy is loaded for tenant {tenant}");
                    self.refuse_restore(key, &tenant, restored.client_id, message)
                }
                // As for a connect: the broker's own rules decide.
                FailMode::Open => {
                    let s = session(tenant, None, String::new());
                    self.keep_restored(key, s)
                }
            };
        };
        let connect = Connect {
            tenant: tenant.clone(),
            client_id: restored.client_id.to_owned(),
            username: restored.username.map(str::to_owned),
            password: None,
            clean_start: false,
            keep_alive: hello.keep_alive,
            protocol: restored.protocol,
            tls: false,
            certificate: None,
            peer: String::new(),
        };
        let decision = policy.restore(&connect);
        // A restored session is no connection: it is not reported.
        let _ = policy.take_monitor();
        match decision {
            ConnectDecision::Accept(id, info) => {
                let mut e = Event::new(
                    &tenant,
                    Action::Connect,
                    Severity::Info,
                    "restore",
                    format!(
                        "session of device {} restored from the broker's persistence, offline: messages for it are \
                         checked against it until its client connects and proves itself again",
                        info.device_id
                    ),
                );
                e.client_id = Some(restored.client_id.to_owned());
                e.device_id = Some(info.device_id.clone());
                e.policy = Some(policy.module().short_digest().to_owned());
                policy.tenant().events().emit(e);
                let s = session(tenant, Some(id), info.device_id);
                self.keep_restored(key, s)
            }
            // The policy emitted the `restore-refused` event.
            ConnectDecision::Reject(d) => {
                self.remember_unrestorable(key, d);
                false
            }
            ConnectDecision::Defer => {
                let message = "the policy deferred it, and a restored session has no broker authentication".to_owned();
                self.refuse_restore(key, &tenant, restored.client_id, message)
            }
        }
    }

    /// Holds an admitted restored session: offline, owning its client id (refused if the
    /// process already gave that id to another identity).
    fn keep_restored(&mut self, key: K, mut session: Session) -> bool {
        match self.client_ids.claim(&session.client_id, &session.tenant, &session.device_id, None) {
            Ok(claim) => session.claim = Some(claim),
            Err(holder) => {
                let why = format!("client identifier {} is held by {holder}", session.client_id);
                let (tenant, client_id) = (session.tenant.clone(), session.client_id.clone());
                if let (Some(id), Some(p)) = (session.policy_session, self.policies.get_mut(&tenant)) {
                    p.end_session(id);
                }
                return self.refuse_restore(key, &tenant, &client_id, why);
            }
        }
        self.offline_seq += 1;
        self.offline_live += 1;
        session.offline_since = self.offline_seq;
        self.by_client_id.insert(session.client_id.clone(), key.clone());
        self.sessions.insert(key.clone(), session);
        self.offline.push_back((key, self.offline_seq));
        self.bound_offline();
        true
    }

    /// A restore the gateway refuses: one `restore-refused` event, then its checks are denied.
    fn refuse_restore(&mut self, key: K, tenant: &str, client_id: &str, why: String) -> bool {
        let denial = Denial {
            reason: ReasonCode::NotAuthorized,
            message: format!("session restored from the broker's persistence not re-established: {why}"),
            disconnect: false,
        };
        let mut e = Event::denial(tenant, Action::Connect, "restore-refused", &denial);
        e.client_id = Some(client_id.to_owned());
        self.gateway.tenant(tenant).events().emit(e);
        self.remember_unrestorable(key, denial);
        false
    }

    /// Remembers a refused restore (bounded like offline sessions; past the bound it is simply
    /// retried at its next check).
    fn remember_unrestorable(&mut self, key: K, denial: Denial) {
        if self.unrestorable.len() < MAX_OFFLINE_SESSIONS {
            self.unrestorable.insert(key, denial);
        }
    }

    /// The answer for a key without a session: a refused restore's denial, or (the broker let a
    /// client in without asking, e.g. Mosquitto's `use_identity_as_username` skips
    /// authentication) fail closed.
    fn unknown(&self, key: &K) -> CheckOutcome {
        if let Some(d) = self.unrestorable.get(key) {
            return CheckOutcome::Deny(d.clone());
        }
        CheckOutcome::Deny(Denial {
            reason: ReasonCode::NotAuthorized,
            message: "the client was never authenticated by the gateway".into(),
            disconnect: false,
        })
    }
}

/// Sends a watched connection's `Disconnect`, once: for a device retained (its status), for an
/// application not retained and its retained `Connect` cleared (seed 004).
fn report_disconnect(m: &monitoring::Monitoring, w: &mut Watched, how: BrokerClose) {
    if std::mem::replace(&mut w.reported, true) {
        return;
    }
    let closing = w.closing.clone().unwrap_or_else(|| how.closing());
    let now = mqtt_policy_host::events::now_ms();
    let payload = monitoring::message("Disconnect", now, &w.facts, Some(&closing), Some(w.traffic));
    if w.application {
        m.disconnect(w.topic.clone(), payload, false);
        m.clear(w.topic.clone());
    } else {
        m.disconnect(w.topic.clone(), payload, true);
    }
}

/// The refusal of a connect whose client id another identity holds (0x85, as for an invalid
/// client identifier: the broker would otherwise hand it that identity's session).
fn taken(client_id: &str, holder: &str, claimant: &str) -> Denial {
    Denial {
        reason: ReasonCode::ClientIdentifierNotValid,
        message: format!(
            "client identifier {client_id} belongs to the session of another device ({holder}); {claimant} may not take it over"
        ),
        disconnect: true,
    }
}

/// The `principal` attribute a policy adds when more than the device id tells a session's
/// holders apart (hub-rules: an application's API key, since several keys may connect as the
/// same application id); takeovers compare it too.
fn principal_of(info: &mqtt_policy_host::SessionInfo) -> Option<&str> {
    info.attributes.iter().find(|(k, _)| k == "principal").map(|(_, p)| p.as_str())
}

/// A worker's enforced policies, one per tenant, each in a slot of its own for the life of
/// the worker (a reload replaces the policy's module in place; a tenant's policy is never
/// removed), so a session can keep its policy's slot.
#[derive(Default)]
struct Policies {
    list: Vec<Policy>,
    slots: HashMap<String, usize, FxBuildHasher>,
}

impl Policies {
    fn slot(&self, tenant: &str) -> Option<usize> {
        self.slots.get(tenant).copied()
    }

    /// The policy in `slot`, which [`Policies::slot`] gave.
    fn at(&self, slot: usize) -> &Policy {
        &self.list[slot]
    }

    fn get(&self, tenant: &str) -> Option<&Policy> {
        self.slot(tenant).map(|i| &self.list[i])
    }

    fn get_mut(&mut self, tenant: &str) -> Option<&mut Policy> {
        self.slot(tenant).map(|i| &mut self.list[i])
    }

    fn insert(&mut self, tenant: String, policy: Policy) {
        match self.slots.get(&tenant) {
            Some(&i) => self.list[i] = policy,
            None => {
                self.slots.insert(tenant, self.list.len());
                self.list.push(policy);
            }
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Policy> {
        self.list.iter_mut()
    }
}

/// Ends `session` in `tenant`'s candidate policy, if it still has one.
fn candidate_end(candidates: &mut HashMap<String, Policy, FxBuildHasher>, tenant: &str, session: SessionId) {
    if let Some(p) = candidates.get_mut(tenant) {
        p.end_session(session);
    }
}

/// `bytes` as text, if they are UTF-8. Asked at every check: most topics are ASCII, which
/// `is_ascii` tells a word at a time, where the general validation goes byte by byte (it was
/// a third of a cached check's instructions inside Mosquitto, BENCHMARKS.md).
fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}
