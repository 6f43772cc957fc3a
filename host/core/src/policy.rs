//! A live policy for one tenant on one thread: sessions, deadlines, fail-closed faults, the
//! circuit breaker, and hot replacement.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

use crate::bindings::wit;
use crate::breaker::{Backoff, Breaker, Transition};
use crate::cache::{DecisionCache, Key, Pool};
use crate::check::Check;
use crate::convert;
use crate::error::Error;
use crate::events::{Action, Event, Severity, now_ms};
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
///
/// A policy that keeps timing out, or cannot be instantiated, costs a bounded share of the
/// calling thread: after [`crate::Limits::breaker_timeouts`] timeouts its circuit opens and its
/// checks are denied (0x83, never allowed) without calling it until a trial check succeeds, and
/// failed instantiations are retried only after a doubling wait (see [`crate::breaker`]).
/// Decisions the policy let the host cache are still reused meanwhile.
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
    /// The bytes every session's cached decisions hold together (bounded).
    cache_pool: Pool,
    /// Stops calling a policy that keeps timing out (see [`crate::breaker`]).
    breaker: Breaker,
    /// Spaces out attempts to instantiate a policy that failed to instantiate.
    backoff: Backoff,
    /// Why the last instantiation failed, while attempts back off.
    instantiate_error: Option<String>,
    /// Checks denied by the open circuit since its last event: counted, not reported one by
    /// one (a looping tenant's clients would otherwise flood the events), and given in the
    /// next `circuit-open` or `circuit-closed` event.
    denied_open: u64,
    /// Set when the latest call was denied by the open circuit: its check emits no event.
    quiet: bool,
    /// What the latest `authenticate` asked about monitoring ([`Policy::take_monitor`]).
    monitor: Option<MonitorSubject>,
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
        let limits = module.engine().limits();
        Policy {
            module,
            tenant,
            live: None,
            generation: 0,
            sessions: HashMap::default(),
            expiring: std::collections::BTreeSet::new(),
            next_session: 1,
            caching: true,
            cache_pool: Pool::default(),
            breaker: Breaker::new(&limits),
            backoff: Backoff::new(&limits),
            instantiate_error: None,
            denied_open: 0,
            quiet: false,
            monitor: None,
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
    /// Each is returned and reported (an `expired` event) once; every check of it is denied
    /// from now on, so the cost of a call grows with the sessions that expired since the last.
    pub fn expired_sessions(&mut self, now_ms: u64) -> Vec<SessionId> {
        let due: Vec<(u64, u64)> = self.expiring.range(..=(now_ms, u64::MAX)).copied().collect();
        let mut ids = Vec::with_capacity(due.len());
        for entry in due {
            self.expiring.remove(&entry);
            self.expiry(Action::Connect, SessionId(entry.1), now_ms);
            ids.push(entry.1);
        }
        ids.sort_unstable();
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
    /// re-establishes each one (`resumed = true`) on its next check and may refuse it. The new
    /// policy starts with a closed circuit and no instantiation backoff.
    pub fn replace(&mut self, module: PolicyModule) {
        self.module = module;
        self.drop_instance();
        for s in self.sessions.values_mut() {
            s.revoked = None;
            s.cache.clear();
        }
        self.backoff.succeeded();
        self.instantiate_error = None;
        if self.breaker.reset() {
            let denied = self.denied_while_open();
            let event = Event::new(
                self.tenant.name(),
                Action::Load,
                Severity::Info,
                "circuit-closed",
                format!("a new policy was loaded: circuit closed, checks call the policy again{denied}"),
            );
            self.emit(event);
        }
    }

    /// Creates the wasm instance now (instantiation and `validate-settings`), so the first
    /// check does not pay for it. Checks do this themselves when needed, no sooner than
    /// [`crate::Limits::instantiate_backoff`] (doubling) after a failed attempt; this call
    /// tries at once.
    pub fn prepare(&mut self) -> Result<(), Error> {
        if self.live.is_none() {
            match Instance::start(&self.module, self.tenant.clone()) {
                Ok(instance) => {
                    self.live = Some(instance);
                    self.generation += 1;
                    self.backoff.succeeded();
                    self.instantiate_error = None;
                }
                Err(e) => {
                    self.backoff.failed(Instant::now());
                    self.instantiate_error = Some(e.to_string());
                    return Err(e);
                }
            }
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

    /// How the policy asked the connection of the last [`Policy::authenticate`] or
    /// [`Policy::restore`] to be reported in monitoring messages (`monitor-device` /
    /// `monitor-application`), accepted or rejected; taken once.
    pub fn take_monitor(&mut self) -> Option<MonitorSubject> {
        self.monitor.take()
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
        self.monitor = None;
        let decision = match self.call(Action::Connect, None, |i| i.authenticate(id, connect, restored)) {
            Ok(Answer { value: wit::ConnectDecision::Accept(info), monitor, .. }) => {
                self.monitor = monitor;
                let info = convert::session_info(info);
                self.sessions.insert(
                    id,
                    Session {
                        connect: connect.clone(),
                        info: info.clone(),
                        generation: self.generation,
                        revoked: None,
                        expiry_reported: false,
                        cache: DecisionCache::new(&self.cache_pool),
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
            Ok(Answer { value: wit::ConnectDecision::Reject(d), monitor, .. }) => {
                self.monitor = monitor;
                convert::denial(d)
            }
            Ok(Answer { value: wit::ConnectDecision::Defer, .. }) => return ConnectDecision::Defer,
            Err(fault) => fault,
        };
        if std::mem::take(&mut self.quiet) {
            return ConnectDecision::Reject(decision);
        }
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

    /// Whether `session` holds a reusable allow for publishing `topic` with these flags: what
    /// [`Policy::authorize_publish`] would answer from its cache, with no call and no event.
    /// For a broker's hot path, which may ask before it has checked that the topic is UTF-8
    /// (only valid topics' decisions are kept); `false` means: ask `authorize_publish`.
    pub fn reuses_publish_allow(&self, session: SessionId, topic: &[u8], qos: u8, retain: bool, size: u32) -> bool {
        let key = Key { topic, qos, retain, payload_size: size };
        self.reusable(session, |c| c.publish.lookup(&key)).is_some_and(|d| *d == PublishDecision::Allow)
    }

    /// As [`Policy::reuses_publish_allow`], for a delivery ([`Policy::authorize_delivery`]).
    pub fn reuses_delivery_allow(&self, session: SessionId, topic: &[u8], qos: u8, retain: bool, size: u32) -> bool {
        let key = Key { topic, qos, retain, payload_size: size };
        self.reusable(session, |c| c.delivery.lookup(&key)).is_some_and(|d| *d == DeliveryDecision::Allow)
    }

    /// The decision `lookup` finds in the session's cache, where [`Policy::check`] would reuse
    /// one without looking further: caching on, a proof that does not expire.
    #[inline]
    fn reusable<'a, D>(
        &'a self,
        session: SessionId,
        lookup: impl FnOnce(&'a DecisionCache) -> Option<&'a D>,
    ) -> Option<&'a D> {
        let s = self.sessions.get(&session.0).filter(|s| self.caching && s.info.expires_at_ms.is_none())?;
        lookup(&s.cache)
    }

    /// Marks a session's client as connected or away (a persistent session outlives its
    /// connection): only connected clients count in the tenant's connection count. The session
    /// and its checks are otherwise unchanged.
    pub fn set_connected(&mut self, session: SessionId, connected: bool) {
        let Some(s) = self.sessions.get_mut(&session.0) else { return };
        if !connected {
            // Away, the session is only asked about deliveries.
            s.cache.clear_actions();
        }
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
        // The hot path: a reused decision that deserves no event, for a session whose proof
        // does not expire, is answered here and nothing else is touched. Returning the
        // borrowed decision's clone straight away (instead of carrying an `Option` of it
        // through the general path) also keeps the decision from being copied around the
        // stack, which cost a third of a cached check (BENCHMARKS.md, "Cached checks").
        if self.caching
            && let Some(s) = self.sessions.get(&session.0)
            && s.info.expires_at_ms.is_none()
            && let Some(d) = C::entries(&s.cache).lookup(&input.key())
            && C::event_free(d)
        {
            return d.clone();
        }
        self.check_in_full(session, input)
    }

    /// [`Policy::check`] for everything but an eventless reused decision: the expiry of the
    /// session's proof, the cache, the call, the event.
    #[inline(never)]
    fn check_in_full<C: Check>(&mut self, session: SessionId, input: &C) -> C::Decision {
        // The clock is read only for sessions whose proof expires: most have none, and a read
        // costs more than a cached decision.
        let key = input.key();
        let (expires, cached) = match self.sessions.get(&session.0) {
            Some(s) => (
                s.info.expires_at_ms.is_some(),
                if self.caching { C::entries(&s.cache).lookup(&key).cloned() } else { None },
            ),
            None => (false, None),
        };
        if let Some(d) = expires.then(|| self.expiry(C::ACTION, session, now_ms())).flatten() {
            return C::deny(d);
        }
        let decision = match cached {
            Some(d) => d,
            None => self.decide(session, input),
        };
        if std::mem::take(&mut self.quiet) {
            return decision;
        }
        if let Some(event) = C::event(self.tenant.name(), &decision) {
            self.emit_for(session, event, input.topic());
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
            s.cache.remember(C::entries_mut, &input.key(), bound, answer.value.clone());
        }
        answer.value
    }

    /// The denial a fault stands for, after emitting its event (naming the session's client,
    /// if the fault happened in a check of one).
    fn report_fault(&self, action: Action, session: Option<u64>, error: &Error) -> Denial {
        self.report(action, session, error, fault::denial(error))
    }

    /// Emits the event of a fault answered with `denial`; returns the denial.
    fn report(&self, action: Action, session: Option<u64>, error: &Error, denial: Denial) -> Denial {
        let mut event = fault::event(self.tenant.name(), action, error, &denial);
        self.name_client(&mut event, session);
        self.emit(event);
        denial
    }

    fn name_client(&self, event: &mut Event, session: Option<u64>) {
        if let Some(s) = session.and_then(|id| self.sessions.get(&id)) {
            event.client_id = Some(s.connect.client_id.clone());
            event.device_id = Some(s.info.device_id.clone());
        }
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
        let connect = self.sessions[&id].connect.clone();
        // Not the end of a trial: the check this resumption is for is.
        let decision = self.call_with(action, Some(id), false, |i| i.authenticate(id, &connect, true))?.value;
        // The instance that answered is the live one (a fault would have discarded it).
        let generation = self.generation;
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
                // Its reusable decisions were the old instance's, given to a session this one refuses.
                session.cache.clear();
                let mut event = Event::denial(self.tenant.name(), Action::Connect, "revoke", &denial);
                event.client_id = Some(session.connect.client_id.clone());
                event.device_id = Some(session.info.device_id.clone());
                self.emit(event);
                Err(denial)
            }
        }
    }

    /// A live instance, instantiated now if there is none, unless a failed instantiation is
    /// still backing off: then the check is denied without trying (its denial carries the
    /// event). A failed attempt is an `instantiate-failed` event naming the next attempt.
    fn ensure_live(&mut self, action: Action) -> Result<(), Fault> {
        if self.live.is_some() {
            return Ok(());
        }
        if let Some(wait) = self.backoff.wait(Instant::now()) {
            let why = self.instantiate_error.as_deref().unwrap_or("the policy could not be instantiated");
            return Err(Denial {
                reason: ReasonCode::ImplementationSpecificError,
                message: format!("{why}; not retried for another {}", millis(wait)),
                disconnect: false,
            });
        }
        let error = match self.prepare() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let wait = self.backoff.last_wait();
        let mut denial = fault::denial(&error);
        denial.message = format!("{}; next attempt in {}", denial.message, millis(wait));
        Err(self.report(action, None, &error, denial))
    }

    /// Calls into the live instance, for `session`'s check if it is one (its client is named
    /// in a fault's event). Any error poisons the instance and becomes a denial with an event;
    /// while the circuit breaker is open, the call is denied without reaching the policy.
    fn call<R>(
        &mut self,
        action: Action,
        session: Option<u64>,
        f: impl FnOnce(&mut Instance) -> Result<Answer<R>, Error>,
    ) -> Result<Answer<R>, Fault> {
        self.call_with(action, session, true, f)
    }

    /// [`Policy::call`]; `settles` says whether this call ending within its deadline ends a
    /// circuit breaker trial (a session's resumption does not: the check after it does).
    fn call_with<R>(
        &mut self,
        action: Action,
        session: Option<u64>,
        settles: bool,
        f: impl FnOnce(&mut Instance) -> Result<Answer<R>, Error>,
    ) -> Result<Answer<R>, Fault> {
        if let Err(wait) = self.breaker.admit(Instant::now) {
            self.denied_open += 1;
            self.quiet = true;
            return Err(Denial {
                reason: ReasonCode::ImplementationSpecificError,
                message: format!(
                    "the policy of tenant {} is suspended after repeated timeouts (circuit open): denied \
                     without calling it; one check tries it again in {}",
                    self.tenant.name(),
                    millis(wait)
                ),
                disconnect: false,
            });
        }
        self.ensure_live(action)?;
        let live = self.live.as_mut().expect("ensured above");
        match f(live) {
            Ok(answer) => {
                if settles && let Some(t) = self.breaker.answered(Instant::now) {
                    self.report_transition(action, session, t);
                }
                Ok(answer)
            }
            Err(error) => {
                let denial = self.report_fault(action, session, &error);
                self.drop_instance();
                let transition = match error {
                    Error::Timeout(_) => self.breaker.timed_out(Instant::now()),
                    // Any other fault ends within the deadline: a trial that traps closes the circuit.
                    _ => self.breaker.answered(Instant::now),
                };
                if let Some(t) = transition {
                    self.report_transition(action, session, t);
                }
                Err(denial)
            }
        }
    }

    /// The checks denied by the open circuit since the last report, for an event's message.
    fn denied_while_open(&mut self) -> String {
        match std::mem::take(&mut self.denied_open) {
            0 => String::new(),
            1 => " (1 check denied while it was open)".to_owned(),
            n => format!(" ({n} checks denied while it was open)"),
        }
    }

    /// The event of a circuit breaker transition: `circuit-open` or `circuit-closed`.
    fn report_transition(&mut self, action: Action, session: Option<u64>, transition: Transition) {
        let (severity, outcome, message) = match transition {
            Transition::Opened { timeouts, window, open_for } => (
                Severity::Error,
                "circuit-open",
                format!(
                    "the policy timed out {timeouts} times within {}: circuit open, its checks are denied \
                     without calling it for {}, then one check tries it again",
                    millis(window),
                    millis(open_for)
                ),
            ),
            Transition::Reopened { open_for } => (
                Severity::Error,
                "circuit-open",
                format!(
                    "the trial check timed out too: circuit open again, checks are denied for {}{}",
                    millis(open_for),
                    self.denied_while_open()
                ),
            ),
            Transition::Closed => (
                Severity::Info,
                "circuit-closed",
                format!(
                    "the trial check ended within its deadline: circuit closed, checks call the policy again{}",
                    self.denied_while_open()
                ),
            ),
        };
        let mut event = Event::new(self.tenant.name(), action, severity, outcome, message);
        if transition != Transition::Closed {
            event = event.with_reason(ReasonCode::ImplementationSpecificError);
        }
        self.name_client(&mut event, session);
        self.emit(event);
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

/// A duration as whole milliseconds, for messages.
fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
