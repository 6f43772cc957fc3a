//! The hub-rules policy: its settings are a hub rules document (TOML, see the README's
//! rules reference) compiled at load into hash maps and topic tries.

pub mod config;
pub mod credentials;
pub mod hub;
pub mod identity;
pub mod sas;
#[cfg(test)]
mod tests;

use hub::{HostApi, Hub, Monitored, Session};
use mqtt_policy_guest::{
    Auth, Connect, Delivery, DeliveryDecision, Publish, PublishDecision, Subscribe, SubscribeDecision, export_policy,
    host,
};

/// The policy: one compiled hub.
pub struct HubRules(Hub);

/// The real host; remembers whether a counter was read, which makes a decision uncacheable.
#[derive(Default)]
struct Host {
    counted: std::cell::Cell<bool>,
}

impl HostApi for Host {
    fn counter_add(&self, name: &str, delta: i64, window_ms: u64) -> i64 {
        self.counted.set(true);
        host::counter_add(name, delta, window_ms)
    }
    fn connection_count(&self) -> u32 {
        host::connection_count()
    }
    fn info(&self, message: &str) {
        host::log(host::Level::Info, message);
    }
    fn now_millis(&self) -> u64 {
        host::now_millis()
    }
}

impl mqtt_policy_guest::Policy for HubRules {
    type Session = Session;

    fn new(settings: &str) -> Result<Self, String> {
        Hub::compile(settings).map(HubRules)
    }

    fn authenticate(&self, c: &Connect) -> Auth<Session> {
        let outcome = self.0.authenticate(c, &Host::default());
        match self.0.monitored(c, outcome.as_ref().ok().map(|(_, s)| s)) {
            Some(Monitored::Device { device_type, id }) => host::monitor_device(&device_type, &id),
            Some(Monitored::Application { app }) => host::monitor_application(&app),
            None => {}
        }
        match outcome {
            Ok((info, session)) => Auth::Accept(info, session),
            Err(d) => Auth::Reject(d),
        }
    }

    fn authorize_publish(&self, s: &mut Session, p: &Publish) -> PublishDecision {
        let host = Host::default();
        let decision = self.0.authorize_publish(s, p, &host);
        if let Some(bound) = self.0.publish_cache_bound(p, host.counted.get()) {
            host::cache_decision(bound);
        }
        decision
    }

    // Subscriptions and deliveries depend only on the session, the topic and the rules.
    fn authorize_subscribe(&self, s: &mut Session, sub: &Subscribe) -> SubscribeDecision {
        host::cache_decision(u32::MAX);
        self.0.authorize_subscribe(s, sub)
    }

    fn authorize_delivery(&self, s: &mut Session, d: &Delivery) -> DeliveryDecision {
        host::cache_decision(u32::MAX);
        self.0.authorize_delivery(s, d)
    }
}

export_policy!(HubRules);
