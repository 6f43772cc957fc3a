//! A live policy for one tenant on one thread: sessions, deadlines, fail-closed faults,
//! and hot replacement.

use rustc_hash::FxHashMap as HashMap;

use wasmtime::Store;

use crate::bindings::{HostState, wit};
use crate::convert;
use crate::engine::Engine;
use crate::error::Error;
use crate::events::{Action, Event, Severity, now_ms};
use crate::module::{Live, PolicyModule};
use crate::tenant::Tenant;
use crate::types::*;

/// A callable policy instance for one tenant. Not `Sync`: keep one per calling thread.
///
/// A trap, timeout or memory overrun in the policy never escapes as an allow: the check
/// that faulted is denied with reason 0x83 and an event, the instance is discarded, and
/// the next check runs on a fresh one. Connected clients are re-established on a new
/// instance (after a fault or [`Policy::replace`]) by re-running `authenticate` with
/// `resumed = true`.
pub struct Policy {
    module: PolicyModule,
    tenant: Tenant,
    live: Option<Live>,
    /// Bumped whenever `live` is replaced, so sessions know whether the current instance knows them.
    generation: u64,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    /// What the last successful call allowed to cache (`cache-decision`), if anything.
    last_grant: Option<u32>,
    /// Whether decisions the policy marks cacheable are reused (on by default).
    caching: bool,
}

/// Most decisions kept per session and kind of check; a full map is emptied, so a client
/// cycling through endless topics costs memory only up to this bound.
pub const MAX_CACHED_PER_SESSION: usize = 256;

/// A decision the policy allowed the host to reuse (see `cache-decision` in the WIT).
#[derive(Debug, Clone)]
struct Cached<D> {
    qos: u8,
    retain: bool,
    max_payload: u32,
    decision: D,
}

/// Reusable decisions of one session, by topic or filter.
#[derive(Debug, Default)]
struct DecisionCache {
    publish: HashMap<Box<str>, Cached<PublishDecision>>,
    subscribe: HashMap<Box<str>, Cached<SubscribeDecision>>,
    delivery: HashMap<Box<str>, Cached<DeliveryDecision>>,
}

impl DecisionCache {
    fn clear(&mut self) {
        self.publish.clear();
        self.subscribe.clear();
        self.delivery.clear();
    }
}

fn lookup<D: Clone>(map: &HashMap<Box<str>, Cached<D>>, topic: &str, qos: u8, retain: bool, size: u32) -> Option<D> {
    let c = map.get(topic)?;
    (c.qos == qos && c.retain == retain && size <= c.max_payload).then(|| c.decision.clone())
}

fn remember<D>(
    map: &mut HashMap<Box<str>, Cached<D>>,
    topic: &str,
    qos: u8,
    retain: bool,
    max_payload: u32,
    decision: D,
) {
    if map.len() >= MAX_CACHED_PER_SESSION {
        map.clear();
    }
    map.insert(topic.into(), Cached { qos, retain, max_payload, decision });
}

struct Session {
    connect: Connect,
    info: SessionInfo,
    /// The instance generation that accepted this session.
    generation: u64,
    /// Set when a new instance refused to resume the session: every later check is denied.
    revoked: Option<Denial>,
    /// Whether the session's expiry (`SessionInfo::expires_at_ms`) has been reported.
    expiry_reported: bool,
    /// Decisions the policy let the host reuse; emptied when the policy is replaced.
    cache: DecisionCache,
}

/// A failed call: the denial to answer with.
type Fault = Denial;

impl Policy {
    pub(crate) fn new(module: PolicyModule, tenant: Tenant) -> Policy {
        Policy {
            module,
            tenant,
            live: None,
            generation: 0,
            sessions: HashMap::default(),
            next_session: 1,
            last_grant: None,
            caching: true,
        }
    }

    /// The module this policy runs.
    pub fn module(&self) -> &PolicyModule {
        &self.module
    }

    /// The tenant this policy decides for.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Number of sessions held (accepted and not yet ended).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Turns reuse of cacheable decisions on (the default) or off; off empties the cache.
    /// Off is for measuring and for comparing a policy's answers with and without the cache.
    pub fn set_caching(&mut self, on: bool) {
        self.caching = on;
        if !on {
            for s in self.sessions.values_mut() {
                s.cache.clear();
            }
        }
    }

    /// Decisions held for reuse across all sessions (see `cache-decision` in the WIT).
    pub fn cached_decisions(&self) -> usize {
        self.sessions.values().map(|s| s.cache.publish.len() + s.cache.subscribe.len() + s.cache.delivery.len()).sum()
    }

    /// The device identity a session was accepted as.
    pub fn session_info(&self, session: SessionId) -> Option<&SessionInfo> {
        self.sessions.get(&session.0).map(|s| &s.info)
    }

    /// Sessions whose proof expired as of `now_ms` (see `expires-at-ms` in the WIT), in id
    /// order, for the broker to disconnect (Mosquitto: `mosquitto_kick_client_by_clientid`).
    /// Each is reported once with an `expired` event; every check of it is denied from now on.
    pub fn expired_sessions(&mut self, now_ms: u64) -> Vec<SessionId> {
        let mut ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.info.expires_at_ms.is_some_and(|at| at <= now_ms))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in &ids {
            self.expiry(Action::Connect, SessionId(*id), now_ms);
        }
        ids.into_iter().map(SessionId).collect()
    }

    /// The denial for a check of `session` if its proof expired as of `now_ms`; the first time,
    /// also an `expired` event in the style of IoT Hub's 401003 IoTHubUnauthorized.
    fn expiry(&mut self, action: Action, session: SessionId, now_ms: u64) -> Option<Denial> {
        let s = self.sessions.get_mut(&session.0)?;
        let at = s.info.expires_at_ms.filter(|at| *at <= now_ms)?;
        let denial = Denial {
            reason: ReasonCode::NotAuthorized,
            message: format!(
                "IoTHubUnauthorized: the credentials this client connected with expired at {at} ms \
                 since the epoch; renew the token and reconnect"
            ),
            disconnect: true,
        };
        if !s.expiry_reported {
            s.expiry_reported = true;
            s.cache.clear();
            let mut event = Event::denial(self.tenant.name(), action, "expired", &denial);
            event.client_id = Some(s.connect.client_id.clone());
            event.device_id = Some(s.info.device_id.clone());
            self.emit(event);
        }
        Some(denial)
    }

    /// Swaps in another module (a reload). Connected sessions stay; the new policy
    /// re-establishes each one (`resumed = true`) on its next check and may refuse it.
    pub fn replace(&mut self, module: PolicyModule) {
        self.module = module;
        self.drop_instance();
        for s in self.sessions.values_mut() {
            s.revoked = None;
            s.cache.clear();
        }
    }

    /// Creates the wasm instance now (instantiation and `validate-settings`), so the first
    /// check does not pay for it. Checks do this themselves when needed.
    pub fn prepare(&mut self) -> Result<(), Error> {
        if self.live.is_none() {
            self.live = Some(self.module.live(self.tenant.clone())?);
            self.generation += 1;
        }
        Ok(())
    }

    /// Decides a connection. On accept, the returned session id is what later checks take.
    pub fn authenticate(&mut self, connect: &Connect) -> ConnectDecision {
        let id = self.next_session;
        self.next_session += 1;
        let decision = match self.call(Action::Connect, None, |live| call_authenticate(live, id, connect, false)) {
            Ok(wit::ConnectDecision::Accept(info)) => {
                let info = convert::session_info(info);
                self.sessions.insert(
                    id,
                    Session {
                        connect: connect.clone(),
                        info: info.clone(),
                        generation: self.generation,
                        revoked: None,
                        expiry_reported: false,
                        cache: DecisionCache::default(),
                    },
                );
                self.tenant.connected();
                return ConnectDecision::Accept(SessionId(id), info);
            }
            Ok(wit::ConnectDecision::Reject(d)) => convert::denial(d),
            Ok(wit::ConnectDecision::Defer) => return ConnectDecision::Defer,
            Err(fault) => fault,
        };
        let mut event = Event::denial(self.tenant.name(), Action::Connect, "reject", &decision);
        event.client_id = Some(connect.client_id.clone());
        self.emit(event);
        ConnectDecision::Reject(decision)
    }

    /// Checks a publish (the broker's write check).
    pub fn authorize_publish(&mut self, session: SessionId, publish: &Publish<'_>) -> PublishDecision {
        if let Some(d) = self.expiry(Action::Publish, session, now_ms()) {
            return PublishDecision::Deny(d);
        }
        let cached =
            self.sessions.get(&session.0).filter(|_| self.caching).and_then(|s| {
                lookup(&s.cache.publish, publish.topic, publish.qos, publish.retain, publish.payload_size)
            });
        let decision = match cached {
            Some(d) => d,
            None => self.call_publish(session, publish),
        };
        match &decision {
            PublishDecision::Deny(d) => {
                self.emit_for(session, Event::denial(self.tenant.name(), Action::Publish, "deny", d), publish.topic)
            }
            PublishDecision::Rewrite(r) => {
                let event =
                    Event::new(self.tenant.name(), Action::Publish, Severity::Info, "rewrite", r.message.clone());
                self.emit_for(session, event, publish.topic)
            }
            _ => {}
        }
        decision
    }

    fn call_publish(&mut self, session: SessionId, publish: &Publish<'_>) -> PublishDecision {
        let p = wit::Publish {
            topic: publish.topic,
            qos: publish.qos,
            retain: publish.retain,
            payload_size: publish.payload_size,
        };
        match self.call_session(Action::Publish, session, |live, id| {
            live.exports.call_authorize_publish(&mut live.store, id, p)
        }) {
            Ok(d) => {
                let d = convert::publish_decision(d);
                if let Some(why) = invalid_publish(publish, &d) {
                    return PublishDecision::Deny(self.invalid_decision(Action::Publish, session, why));
                }
                if let (Some(bound), Some(s)) = (self.last_grant, self.sessions.get_mut(&session.0)) {
                    let c = &mut s.cache.publish;
                    remember(c, publish.topic, publish.qos, publish.retain, bound, d.clone());
                }
                d
            }
            Err(fault) => PublishDecision::Deny(fault),
        }
    }

    /// Checks a subscription request for one filter.
    pub fn authorize_subscribe(&mut self, session: SessionId, subscribe: &Subscribe<'_>) -> SubscribeDecision {
        if let Some(d) = self.expiry(Action::Subscribe, session, now_ms()) {
            return SubscribeDecision::Deny(d);
        }
        let cached = self
            .sessions
            .get(&session.0)
            .filter(|_| self.caching)
            .and_then(|s| lookup(&s.cache.subscribe, subscribe.filter, subscribe.qos, false, 0));
        let decision = match cached {
            Some(d) => d,
            None => {
                let s = wit::Subscribe { filter: subscribe.filter, qos: subscribe.qos };
                match self.call_session(Action::Subscribe, session, |live, id| {
                    live.exports.call_authorize_subscribe(&mut live.store, id, s)
                }) {
                    Ok(d) => {
                        let d = convert::subscribe_decision(d);
                        if let Some(why) = invalid_grant(subscribe, &d) {
                            SubscribeDecision::Deny(self.invalid_decision(Action::Subscribe, session, why))
                        } else {
                            if let (Some(_), Some(s)) = (self.last_grant, self.sessions.get_mut(&session.0)) {
                                remember(&mut s.cache.subscribe, subscribe.filter, subscribe.qos, false, 0, d.clone());
                            }
                            d
                        }
                    }
                    Err(fault) => SubscribeDecision::Deny(fault),
                }
            }
        };
        if let SubscribeDecision::Deny(d) = &decision {
            self.emit_for(session, Event::denial(self.tenant.name(), Action::Subscribe, "deny", d), subscribe.filter);
        }
        decision
    }

    /// A well-formed answer the check does not admit: denied like a fault, with its own event.
    /// The instance is kept, since nothing inside it went wrong.
    fn invalid_decision(&mut self, action: Action, session: SessionId, why: String) -> Denial {
        self.last_grant = None;
        self.report_fault(action, Some(session.0), &Error::InvalidDecision(why))
    }

    /// The denial a fault stands for, after emitting its event (naming the session's client,
    /// if the fault happened in a check of one).
    fn report_fault(&self, action: Action, session: Option<u64>, error: &Error) -> Denial {
        let denial = fault_denial(error);
        let mut event = fault_event(self.tenant.name(), action, error, &denial);
        if let Some(s) = session.and_then(|id| self.sessions.get(&id)) {
            event.client_id = Some(s.connect.client_id.clone());
            event.device_id = Some(s.info.device_id.clone());
        }
        self.emit(event);
        denial
    }

    /// Checks a delivery to a subscriber (the broker's read check, per message).
    pub fn authorize_delivery(&mut self, session: SessionId, delivery: &Delivery<'_>) -> DeliveryDecision {
        if let Some(d) = self.expiry(Action::Delivery, session, now_ms()) {
            return DeliveryDecision::Deny(d);
        }
        let cached = self.sessions.get(&session.0).filter(|_| self.caching).and_then(|s| {
            lookup(&s.cache.delivery, delivery.topic, delivery.qos, delivery.retain, delivery.payload_size)
        });
        let decision = match cached {
            Some(d) => d,
            None => {
                let d = wit::Delivery {
                    topic: delivery.topic,
                    qos: delivery.qos,
                    retain: delivery.retain,
                    payload_size: delivery.payload_size,
                };
                match self.call_session(Action::Delivery, session, |live, id| {
                    live.exports.call_authorize_delivery(&mut live.store, id, d)
                }) {
                    Ok(d) => {
                        let d = convert::delivery_decision(d);
                        if let (Some(bound), Some(s)) = (self.last_grant, self.sessions.get_mut(&session.0)) {
                            let (topic, qos, retain) = (delivery.topic, delivery.qos, delivery.retain);
                            remember(&mut s.cache.delivery, topic, qos, retain, bound, d.clone());
                        }
                        d
                    }
                    Err(fault) => DeliveryDecision::Deny(fault),
                }
            }
        };
        if let DeliveryDecision::Deny(d) = &decision {
            self.emit_for(session, Event::denial(self.tenant.name(), Action::Delivery, "deny", d), delivery.topic);
        }
        decision
    }

    /// The client is gone: the policy forgets the session. Unknown ids are ignored.
    pub fn end_session(&mut self, session: SessionId) {
        let Some(s) = self.sessions.remove(&session.0) else { return };
        self.tenant.disconnected();
        if s.generation == self.generation && self.live.is_some() {
            // A fault here has no decision to deny; the instance is discarded like any other fault.
            let _ = self.call(Action::Connect, None, |live| live.exports.call_end_session(&mut live.store, session.0));
        }
    }

    /// Runs `f` on the live instance of the session, re-establishing the session first
    /// if this instance has not seen it.
    fn call_session<R>(
        &mut self,
        action: Action,
        session: SessionId,
        f: impl FnOnce(&mut Live, u64) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let Some(s) = self.sessions.get(&session.0) else {
            return Err(Denial {
                reason: ReasonCode::NotAuthorized,
                message: "unknown session: the client is not authenticated".to_owned(),
                disconnect: true,
            });
        };
        if let Some(denial) = &s.revoked {
            return Err(denial.clone());
        }
        if s.generation != self.generation || self.live.is_none() {
            self.resume(action, session.0)?;
        }
        self.call(action, Some(session.0), |live| f(live, session.0))
    }

    fn resume(&mut self, action: Action, id: u64) -> Result<(), Fault> {
        self.ensure_live(action)?;
        let connect = self.sessions[&id].connect.clone();
        let generation = self.generation;
        let decision = self.call(action, Some(id), |live| call_authenticate(live, id, &connect, true))?;
        let session = self.sessions.get_mut(&id).expect("session checked by caller");
        match decision {
            wit::ConnectDecision::Accept(info) => {
                session.info = convert::session_info(info);
                session.generation = generation;
                Ok(())
            }
            wit::ConnectDecision::Defer => {
                session.generation = generation;
                Ok(())
            }
            wit::ConnectDecision::Reject(d) => {
                let mut denial = convert::denial(d);
                // The client is connected under rules that no longer admit it.
                denial.disconnect = true;
                session.revoked = Some(denial.clone());
                let mut event = Event::denial(self.tenant.name(), Action::Connect, "revoke", &denial);
                event.client_id = Some(session.connect.client_id.clone());
                event.device_id = Some(session.info.device_id.clone());
                self.emit(event);
                Err(denial)
            }
        }
    }

    fn ensure_live(&mut self, action: Action) -> Result<(), Fault> {
        self.prepare().map_err(|e| self.report_fault(action, None, &e))
    }

    /// Calls into the live instance under the per-check deadline, for `session`'s check if it is
    /// one (its client is named in a fault's event). Any error poisons the
    /// instance and becomes a denial with an event.
    fn call<R>(
        &mut self,
        action: Action,
        session: Option<u64>,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.ensure_live(action)?;
        let live = self.live.as_mut().expect("ensured above");
        live.store.set_epoch_deadline(self.module.engine().call_ticks());
        live.store.data_mut().begin_call();
        self.last_grant = None;
        match f(live) {
            Ok(r) => {
                self.last_grant = live.store.data().cache_grant.filter(|_| self.caching);
                Ok(r)
            }
            Err(e) => {
                let error = describe_fault(self.module.engine(), &live.store, &e);
                let denial = self.report_fault(action, session, &error);
                self.drop_instance();
                Err(denial)
            }
        }
    }

    fn drop_instance(&mut self) {
        if self.live.take().is_some() {
            self.generation += 1;
        }
    }

    fn emit(&self, mut event: Event) {
        event.policy = Some(self.module.short_digest().to_owned());
        self.tenant.events().emit(event);
    }

    fn emit_for(&self, session: SessionId, mut event: Event, topic: &str) {
        if let Some(s) = self.sessions.get(&session.0) {
            event.client_id = Some(s.connect.client_id.clone());
            event.device_id = Some(s.info.device_id.clone());
        }
        event.topic = Some(topic.to_owned());
        self.emit(event);
    }
}

fn call_authenticate(live: &mut Live, id: u64, c: &Connect, resumed: bool) -> wasmtime::Result<wit::ConnectDecision> {
    let cert = c.certificate.as_ref();
    let dns: Vec<&str> = cert.map(|c| c.dns_names.iter().map(String::as_str).collect()).unwrap_or_default();
    let uris: Vec<&str> = cert.map(|c| c.uris.iter().map(String::as_str).collect()).unwrap_or_default();
    let certificate = cert.map(|c| wit::Certificate {
        subject_cn: c.subject_cn.as_deref(),
        subject: &c.subject,
        issuer: &c.issuer,
        serial: &c.serial,
        sha256: &c.sha256,
        not_before: c.not_before,
        not_after: c.not_after,
        dns_names: &dns,
        uris: &uris,
        authority_key_id: c.authority_key_id.as_deref(),
        subject_key_id: c.subject_key_id.as_deref(),
        chain_verified_by: c.chain_verified_by.as_deref(),
    });
    let connect = wit::Connect {
        tenant: &c.tenant,
        client_id: &c.client_id,
        username: c.username.as_deref(),
        password: c.password.as_deref(),
        clean_start: c.clean_start,
        keep_alive: c.keep_alive,
        protocol: convert::protocol(c.protocol),
        tls: c.tls,
        certificate,
        peer: &c.peer,
        resumed,
    };
    live.exports.call_authenticate(&mut live.store, id, connect)
}

/// Turns a wasmtime error from a policy call into the stage that failed.
pub(crate) fn describe_fault(engine: &Engine, store: &Store<HostState>, e: &wasmtime::Error) -> Error {
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return Error::Timeout(engine.limits().deadline);
    }
    let text = format!("{e:#}");
    if text.contains("growing memory") || text.contains("memory growth failure") {
        return Error::OutOfMemory(engine.limits().memory);
    }
    let trap = e.downcast_ref::<wasmtime::Trap>().map(|t| t.to_string()).unwrap_or_else(|| first_line(&text));
    match panic_message(&store.data().stderr_text()) {
        Some(panic) => Error::Trap(format!("{trap}: {panic}")),
        None => Error::Trap(trap),
    }
}

/// The last panic in a guest's stderr as one line: `panicked at FILE:LINE:COL: MESSAGE`.
/// std prints the location on one line and the message on the next.
fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines.iter().rposition(|l| l.contains("panicked at"))?;
    let location = &lines[at][lines[at].find("panicked at")?..];
    let message = lines.get(at + 1).map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with("note:"));
    Some(match message {
        Some(m) => format!("{} {m}", location.trim()),
        None => location.trim().to_owned(),
    })
}

/// Why a publish decision is not admissible for `p`, if it is not: a rewrite may only soften
/// (lower the QoS, drop the retain flag), never ask for more than the client sent.
fn invalid_publish(p: &Publish<'_>, d: &PublishDecision) -> Option<String> {
    let PublishDecision::Rewrite(r) = d else { return None };
    if r.qos > 2 {
        return Some(format!("rewrite to QoS {} (QoS is 0, 1 or 2)", r.qos));
    }
    if r.qos > p.qos {
        return Some(format!("rewrite raises QoS {} to {}", p.qos, r.qos));
    }
    if r.retain && !p.retain {
        return Some("rewrite adds the retain flag".to_owned());
    }
    None
}

/// Why a subscribe decision is not admissible: a grant above QoS 2 or above the requested QoS.
fn invalid_grant(s: &Subscribe<'_>, d: &SubscribeDecision) -> Option<String> {
    match d {
        SubscribeDecision::Grant(q) if *q > 2 => Some(format!("grant of QoS {q} (QoS is 0, 1 or 2)")),
        SubscribeDecision::Grant(q) if *q > s.qos => Some(format!("grant of QoS {q} above the requested {}", s.qos)),
        _ => None,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

fn fault_denial(e: &Error) -> Denial {
    Denial { reason: ReasonCode::ImplementationSpecificError, message: e.to_string(), disconnect: false }
}

fn fault_event(tenant: &str, action: Action, e: &Error, denial: &Denial) -> Event {
    let outcome = match e {
        Error::Timeout(_) => "timeout",
        Error::OutOfMemory(_) => "out-of-memory",
        Error::Trap(_) => "trap",
        Error::InvalidDecision(_) => "invalid-decision",
        _ => "instantiate-failed",
    };
    Event::new(tenant, action, Severity::Error, outcome, denial.message.clone()).with_reason(denial.reason)
}
