//! A live policy for one tenant on one thread: sessions, deadlines, fail-closed faults,
//! and hot replacement.

use rustc_hash::FxHashMap as HashMap;

use crate::bindings::wit;
use crate::cache::DecisionCache;
use crate::check::Check;
use crate::convert;
use crate::error::Error;
use crate::events::{Action, Event, now_ms};
use crate::fault;
use crate::instance::{Answer, Instance};
use crate::module::PolicyModule;
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
    live: Option<Instance>,
    /// Bumped whenever `live` is replaced, so sessions know whether the current instance knows them.
    generation: u64,
    sessions: HashMap<u64, Session>,
    /// (expires-at-ms, session id) of the sessions whose proof expires, so that the broker's
    /// periodic [`Policy::expired_sessions`] looks at the expired ones only, not every session.
    expiring: std::collections::BTreeSet<(u64, u64)>,
    next_session: u64,
    /// Whether decisions the policy marks cacheable are reused (on by default).
    caching: bool,
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
    /// Whether the client is connected (counted in the tenant's connection count); a
    /// persistent session whose client is away is not.
    connected: bool,
}

/// A failed call: the denial to answer with.
type Fault = Denial;

impl PolicyModule {
    /// Creates a callable instance for `tenant`. The wasm instance itself is created on
    /// first use and re-created after a trap or a timeout.
    pub fn instantiate(&self, tenant: Tenant) -> Policy {
        Policy::new(self.clone(), tenant)
    }
}

impl Policy {
    fn new(module: PolicyModule, tenant: Tenant) -> Policy {
        Policy {
            module,
            tenant,
            live: None,
            generation: 0,
            sessions: HashMap::default(),
            expiring: std::collections::BTreeSet::new(),
            next_session: 1,
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
        self.sessions.values().map(|s| s.cache.len()).sum()
    }

    /// The device identity a session was accepted as.
    pub fn session_info(&self, session: SessionId) -> Option<&SessionInfo> {
        self.sessions.get(&session.0).map(|s| &s.info)
    }

    /// Sessions whose proof expired as of `now_ms` (see `expires-at-ms` in the WIT), in id
    /// order, for the broker to disconnect (Mosquitto: `mosquitto_kick_client_by_clientid`).
    /// Each is reported once with an `expired` event; every check of it is denied from now on.
    pub fn expired_sessions(&mut self, now_ms: u64) -> Vec<SessionId> {
        let mut ids: Vec<u64> = self.expiring.range(..=(now_ms, u64::MAX)).map(|&(_, id)| id).collect();
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
            self.live = Some(Instance::start(&self.module, self.tenant.clone())?);
            self.generation += 1;
        }
        Ok(())
    }

    /// Decides a connection. On accept, the returned session id is what later checks take.
    /// A connection always has a peer (`unknown` stands in for an empty one): an empty peer
    /// tells the policy the session has no connection (see [`Policy::restore`]).
    pub fn authenticate(&mut self, connect: &Connect) -> ConnectDecision {
        if connect.peer.is_empty() {
            let connect = Connect { peer: "unknown".to_owned(), ..connect.clone() };
            return self.admit(&connect, false);
        }
        self.admit(connect, false)
    }

    /// Re-establishes a session the broker restored from its own persistence after a restart,
    /// which this host never saw connect: `authenticate` with `resumed = true` and only what
    /// the broker kept (the connect's password, certificate and peer are dropped, `tls` is
    /// false). The session is not a connection: it does not count in the connection count, and
    /// the policy decides what it may do (hub-rules: deliveries into its offline queue only).
    pub fn restore(&mut self, connect: &Connect) -> ConnectDecision {
        let connect = Connect { password: None, certificate: None, tls: false, peer: String::new(), ..connect.clone() };
        self.admit(&connect, true)
    }

    /// `authenticate` for a connection, or (`restored`) for a session without one.
    fn admit(&mut self, connect: &Connect, restored: bool) -> ConnectDecision {
        let id = self.next_session;
        self.next_session += 1;
        let decision = match self.call(Action::Connect, None, |i| i.authenticate(id, connect, restored)) {
            Ok(Answer { value: wit::ConnectDecision::Accept(info), .. }) => {
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
                        connected: !restored,
                    },
                );
                if let Some(at) = info.expires_at_ms {
                    self.expiring.insert((at, id));
                }
                if !restored {
                    self.tenant.connected();
                }
                return ConnectDecision::Accept(SessionId(id), info);
            }
            Ok(Answer { value: wit::ConnectDecision::Reject(d), .. }) => convert::denial(d),
            Ok(Answer { value: wit::ConnectDecision::Defer, .. }) => return ConnectDecision::Defer,
            Err(fault) => fault,
        };
        let outcome = if restored { "restore-refused" } else { "reject" };
        let mut event = Event::denial(self.tenant.name(), Action::Connect, outcome, &decision);
        event.client_id = Some(connect.client_id.clone());
        self.emit(event);
        ConnectDecision::Reject(decision)
    }

    /// Checks a publish (the broker's write check).
    pub fn authorize_publish(&mut self, session: SessionId, publish: &Publish<'_>) -> PublishDecision {
        self.check(session, publish)
    }

    /// Checks a subscription request for one filter.
    pub fn authorize_subscribe(&mut self, session: SessionId, subscribe: &Subscribe<'_>) -> SubscribeDecision {
        self.check(session, subscribe)
    }

    /// Checks a delivery to a subscriber (the broker's read check, per message).
    pub fn authorize_delivery(&mut self, session: SessionId, delivery: &Delivery<'_>) -> DeliveryDecision {
        self.check(session, delivery)
    }

    /// Marks a session's client as connected or away (a persistent session outlives its
    /// connection): only connected clients count in the tenant's connection count. The session
    /// and its checks are otherwise unchanged.
    pub fn set_connected(&mut self, session: SessionId, connected: bool) {
        let Some(s) = self.sessions.get_mut(&session.0) else { return };
        if s.connected != connected {
            s.connected = connected;
            if connected { self.tenant.connected() } else { self.tenant.disconnected() }
        }
    }

    /// The client is gone: the policy forgets the session. Unknown ids are ignored.
    pub fn end_session(&mut self, session: SessionId) {
        let Some(s) = self.sessions.remove(&session.0) else { return };
        if let Some(at) = s.info.expires_at_ms {
            self.expiring.remove(&(at, session.0));
        }
        if s.connected {
            self.tenant.disconnected();
        }
        if s.generation == self.generation && self.live.is_some() {
            // A fault here has no decision to deny; the instance is discarded like any other fault.
            let _ = self.call(Action::Connect, None, |i| i.end_session(session.0));
        }
    }

    /// Every per-message check: a reusable decision if the session holds one, else the
    /// policy's answer (denied if it is not admissible, kept if the policy allows); then the
    /// decision's event, whichever way it was reached.
    fn check<C: Check>(&mut self, session: SessionId, input: &C) -> C::Decision {
        if let Some(d) = self.expiry(C::ACTION, session, now_ms()) {
            return C::deny(d);
        }
        let key = input.key();
        let cached = match self.sessions.get(&session.0) {
            Some(s) if self.caching => C::entries(&s.cache).lookup(&key),
            _ => None,
        };
        let decision = match cached {
            Some(d) => d,
            None => self.decide(session, input),
        };
        if let Some(event) = C::event(self.tenant.name(), &decision) {
            self.emit_for(session, event, key.topic);
        }
        decision
    }

    fn decide<C: Check>(&mut self, session: SessionId, input: &C) -> C::Decision {
        let answer = match self.call_session(C::ACTION, session, |i, id| input.ask(i, id)) {
            Ok(answer) => answer,
            Err(fault) => return C::deny(fault),
        };
        if let Some(why) = input.inadmissible(&answer.value) {
            // The instance is kept, since nothing inside it went wrong.
            return C::deny(self.report_fault(C::ACTION, Some(session.0), &Error::InvalidDecision(why)));
        }
        if let (Some(bound), true, Some(s)) = (answer.cacheable, self.caching, self.sessions.get_mut(&session.0)) {
            C::entries_mut(&mut s.cache).remember(&input.key(), bound, answer.value.clone());
        }
        answer.value
    }

    /// The denial a fault stands for, after emitting its event (naming the session's client,
    /// if the fault happened in a check of one).
    fn report_fault(&self, action: Action, session: Option<u64>, error: &Error) -> Denial {
        let denial = fault::denial(error);
        let mut event = fault::event(self.tenant.name(), action, error, &denial);
        if let Some(s) = session.and_then(|id| self.sessions.get(&id)) {
            event.client_id = Some(s.connect.client_id.clone());
            event.device_id = Some(s.info.device_id.clone());
        }
        self.emit(event);
        denial
    }

    /// Runs `f` on the live instance of the session, re-establishing the session first
    /// if this instance has not seen it.
    fn call_session<R>(
        &mut self,
        action: Action,
        session: SessionId,
        f: impl FnOnce(&mut Instance, u64) -> Result<Answer<R>, Error>,
    ) -> Result<Answer<R>, Fault> {
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
        self.call(action, Some(session.0), |i| f(i, session.0))
    }

    fn resume(&mut self, action: Action, id: u64) -> Result<(), Fault> {
        self.ensure_live(action)?;
        let connect = self.sessions[&id].connect.clone();
        let generation = self.generation;
        let decision = self.call(action, Some(id), |i| i.authenticate(id, &connect, true))?.value;
        let session = self.sessions.get_mut(&id).expect("session checked by caller");
        match decision {
            wit::ConnectDecision::Accept(info) => {
                let info = convert::session_info(info);
                if session.info.expires_at_ms != info.expires_at_ms {
                    if let Some(at) = session.info.expires_at_ms {
                        self.expiring.remove(&(at, id));
                    }
                    if let Some(at) = info.expires_at_ms {
                        self.expiring.insert((at, id));
                    }
                }
                session.info = info;
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

    /// Calls into the live instance, for `session`'s check if it is one (its client is named
    /// in a fault's event). Any error poisons the instance and becomes a denial with an event.
    fn call<R>(
        &mut self,
        action: Action,
        session: Option<u64>,
        f: impl FnOnce(&mut Instance) -> Result<Answer<R>, Error>,
    ) -> Result<Answer<R>, Fault> {
        self.ensure_live(action)?;
        let live = self.live.as_mut().expect("ensured above");
        match f(live) {
            Ok(answer) => Ok(answer),
            Err(error) => {
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
