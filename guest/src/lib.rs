//! Write mqtt-policy policies in Rust.
//!
//! Implement [`Policy`] and export it with [`export_policy!`]; build with
//! `cargo build --target wasm32-wasip2 --profile wasm` (the profile is in the policy's own
//! `Cargo.toml`; `mqtt-policy new NAME` writes one). The SDK keeps each accepted client's
//! session for you and hands it to every later check. [`settings`] parses typed settings;
//! natively, [`testing`] makes `host` calls work with fakes and runs cases files.
//!
//! ```ignore
//! use mqtt_policy_guest::*;
//!
//! struct Hello;
//! impl Policy for Hello {
//!     type Session = String;
//!     fn new(_settings: &str) -> Result<Self, String> { Ok(Hello) }
//!     fn authenticate(&self, c: &Connect) -> Auth<String> {
//!         Auth::Accept(SessionInfo::device(&c.client_id), c.client_id.clone())
//!     }
//!     fn authorize_publish(&self, id: &mut String, p: &Publish) -> PublishDecision {
//!         if topic::matches(&format!("devices/{id}/#"), &p.topic) { PublishDecision::Allow }
//!         else { PublishDecision::Deny(Denial::new(ReasonCode::NotAuthorized, format!("unauthorized topic {}", p.topic))) }
//!     }
//!     fn authorize_subscribe(&self, _: &mut String, s: &Subscribe) -> SubscribeDecision { SubscribeDecision::Grant(0) }
//! }
//! export_policy!(Hello);
//! ```
#![deny(missing_docs)]

pub mod collections;
pub mod host;
pub mod settings;
pub mod template;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod topic;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "mqtt_policy_guest::bindings",
    });
}

pub use bindings::mqtt_policy::policy::types::{
    Certificate, Connect, ConnectDecision, Delivery, DeliveryDecision, Denial, Protocol, Publish, PublishDecision,
    PublishRewrite, ReasonCode, SessionId, SessionInfo, Subscribe, SubscribeDecision,
};

/// The outcome of [`Policy::authenticate`].
pub enum Auth<S> {
    /// Let the client in, remembering `S` for its later checks.
    Accept(SessionInfo, S),
    /// Refuse the connection.
    Reject(Denial),
    /// Not this policy's call: the broker asks the next authenticator.
    Defer,
}

/// A policy. One value is created per instance from the settings; its methods must be
/// cheap (they run for every message) and must not panic on any input (a panic is
/// answered as a deny, and the instance is thrown away).
pub trait Policy: Sized + 'static {
    /// What the policy remembers about an accepted client.
    type Session: 'static;

    /// Parses and checks the settings. The error names the line or field at fault.
    fn new(settings: &str) -> Result<Self, String>;

    /// Decides a connection. `connect.resumed` is true when the host re-establishes a
    /// session it did not just see connect (after a reload, or a session the broker restored
    /// after a restart, which comes without credentials and with an empty `peer`; see the
    /// WIT's `connect.resumed`): do not count it again.
    fn authenticate(&self, connect: &Connect) -> Auth<Self::Session>;

    /// Checks a publish.
    fn authorize_publish(&self, session: &mut Self::Session, publish: &Publish) -> PublishDecision;

    /// Checks a subscription.
    fn authorize_subscribe(&self, session: &mut Self::Session, subscribe: &Subscribe) -> SubscribeDecision;

    /// Checks a delivery to a subscriber. Defaults to allowing it only while the session may
    /// subscribe to the topic itself (`authorize_subscribe` with the topic as filter, QoS 0), so a
    /// reload that takes a right away stops deliveries on subscriptions made before.
    fn authorize_delivery(&self, session: &mut Self::Session, delivery: &Delivery) -> DeliveryDecision {
        // A subscription granted under earlier rules (before a reload, or in a session the
        // client took over) must not keep receiving what the current rules refuse.
        let subscribe = Subscribe { filter: delivery.topic.clone(), qos: 0 };
        match self.authorize_subscribe(session, &subscribe) {
            SubscribeDecision::Grant(_) => DeliveryDecision::Allow,
            SubscribeDecision::Deny(d) => DeliveryDecision::Deny(d),
            SubscribeDecision::Defer => DeliveryDecision::Defer,
        }
    }

    /// The client disconnected.
    fn end_session(&self, _session: Self::Session) {}
}

// The numbers, names and parsing are `mqtt-policy-reasons`' (one list for the host and the SDK);
// each variant of the WIT's `reason-code` must be there, or its match is not exhaustive.
mqtt_policy_reasons::reason_code_methods!(ReasonCode);

impl Denial {
    /// A denial that answers with a negative acknowledgement and keeps the connection.
    pub fn new(reason: ReasonCode, message: impl Into<String>) -> Denial {
        Denial { reason, message: message.into(), disconnect: false }
    }

    /// The same denial, closing the connection too.
    pub fn and_disconnect(mut self) -> Denial {
        self.disconnect = true;
        self
    }
}

impl SessionInfo {
    /// Session info naming just the device.
    pub fn device(device_id: &str) -> SessionInfo {
        SessionInfo { device_id: device_id.to_owned(), attributes: Vec::new(), expires_at_ms: None }
    }

    /// The same session info, expiring at `ms` (milliseconds since the Unix epoch): the host
    /// then disconnects the client, as a hub does when a token expires.
    pub fn expiring_at(mut self, ms: u64) -> SessionInfo {
        self.expires_at_ms = Some(ms);
        self
    }

    /// Adds an attribute shown in events.
    pub fn with(mut self, key: &str, value: &str) -> SessionInfo {
        self.attributes.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// Plumbing for [`export_policy!`]; not part of the API.
#[doc(hidden)]
pub mod __rt {
    use super::*;
    use crate::collections::HashMap;

    /// Everything an instance keeps: the policy and its sessions.
    pub struct State<P: Policy> {
        policy: P,
        sessions: HashMap<u64, P::Session>,
    }

    pub type Slot<P> = core::cell::RefCell<Option<State<P>>>;

    fn not_ready() -> Denial {
        Denial::new(ReasonCode::ImplementationSpecificError, "policy has no valid settings").and_disconnect()
    }

    fn unknown_session() -> Denial {
        Denial::new(ReasonCode::NotAuthorized, "unknown session: the client is not authenticated").and_disconnect()
    }

    pub fn validate_settings<P: Policy>(slot: &Slot<P>, settings: String) -> Result<(), String> {
        let policy = P::new(&settings)?;
        *slot.borrow_mut() = Some(State { policy, sessions: HashMap::default() });
        Ok(())
    }

    pub fn authenticate<P: Policy>(slot: &Slot<P>, id: u64, c: Connect) -> ConnectDecision {
        let mut guard = slot.borrow_mut();
        let Some(state) = guard.as_mut() else { return ConnectDecision::Reject(not_ready()) };
        match state.policy.authenticate(&c) {
            Auth::Accept(info, session) => {
                state.sessions.insert(id, session);
                ConnectDecision::Accept(info)
            }
            Auth::Reject(d) => ConnectDecision::Reject(d),
            Auth::Defer => ConnectDecision::Defer,
        }
    }

    /// Runs `f` with the policy and the session `id`, or answers `missing`.
    pub fn with_session<P: Policy, R>(
        slot: &Slot<P>,
        id: u64,
        missing: impl FnOnce(Denial) -> R,
        f: impl FnOnce(&P, &mut P::Session) -> R,
    ) -> R {
        let mut guard = slot.borrow_mut();
        let Some(state) = guard.as_mut() else { return missing(not_ready()) };
        match state.sessions.get_mut(&id) {
            Some(session) => f(&state.policy, session),
            None => missing(unknown_session()),
        }
    }

    pub fn end_session<P: Policy>(slot: &Slot<P>, id: u64) {
        let mut guard = slot.borrow_mut();
        if let Some(state) = guard.as_mut()
            && let Some(session) = state.sessions.remove(&id)
        {
            state.policy.end_session(session);
        }
    }
}

/// Exports a [`Policy`] implementation as the component's `policy` world.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            use $crate::__rt;
            use $crate::bindings::mqtt_policy::policy::types as t;

            thread_local! {
                static STATE: __rt::Slot<$policy> = const { ::core::cell::RefCell::new(None) };
            }

            struct Export;

            impl $crate::bindings::Guest for Export {
                fn validate_settings(settings: String) -> Result<(), String> {
                    STATE.with(|s| __rt::validate_settings(s, settings))
                }
                fn authenticate(id: u64, c: t::Connect) -> t::ConnectDecision {
                    STATE.with(|s| __rt::authenticate(s, id, c))
                }
                fn authorize_publish(id: u64, p: t::Publish) -> t::PublishDecision {
                    STATE.with(|s| {
                        __rt::with_session(s, id, t::PublishDecision::Deny, |pol, ses| {
                            <$policy as $crate::Policy>::authorize_publish(pol, ses, &p)
                        })
                    })
                }
                fn authorize_subscribe(id: u64, sub: t::Subscribe) -> t::SubscribeDecision {
                    STATE.with(|s| {
                        __rt::with_session(s, id, t::SubscribeDecision::Deny, |pol, ses| {
                            <$policy as $crate::Policy>::authorize_subscribe(pol, ses, &sub)
                        })
                    })
                }
                fn authorize_delivery(id: u64, d: t::Delivery) -> t::DeliveryDecision {
                    STATE.with(|s| {
                        __rt::with_session(s, id, t::DeliveryDecision::Deny, |pol, ses| {
                            <$policy as $crate::Policy>::authorize_delivery(pol, ses, &d)
                        })
                    })
                }
                fn end_session(id: u64) {
                    STATE.with(|s| __rt::end_session(s, id))
                }
            }

    $crate::bindings::__export_policy_world!(Export with_types_in $crate::bindings);
        };
    };
}
