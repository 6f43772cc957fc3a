//! Which identity holds each client id, across every worker of a broker process.
//!
//! A broker's client ids are one namespace, whatever listener or tenant a client comes from:
//! Mosquitto hands a connection with a known client id (and clean session 0) the session of
//! that id, subscriptions and queued messages included, and closes the connection holding it.
//! With `per_listener_settings true` every listener has its own plugin instance, gateway and
//! worker, so a worker alone cannot see that a client id is another listener's device. This
//! registry, shared by all of them, can: a client id belongs to one (tenant, identity) until
//! the session holding it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Who holds a client id, and which claim of it is current.
#[derive(Debug)]
struct Holder {
    tenant: String,
    device_id: String,
    /// What tells holders of one device id apart, if the policy named it (never shown).
    principal: Option<String>,
    claim: u64,
}

/// The client ids held by sessions, shared by the workers of one broker process. Clones share
/// the registry. Workers made with [`crate::Worker::new`] have one of their own; give every
/// worker of a process the same one ([`crate::Worker::sharing`]) when a broker runs several.
#[derive(Debug, Clone, Default)]
pub struct ClientIds {
    held: Arc<Mutex<HashMap<String, Holder>>>,
    next: Arc<AtomicU64>,
}

impl ClientIds {
    /// An empty registry.
    pub fn new() -> ClientIds {
        ClientIds::default()
    }

    /// Claims `client_id` for (`tenant`, `device_id`, `principal`): granted (with the claim's
    /// number, for [`ClientIds::release`]) when nobody holds it or the same identity does (a
    /// reconnect, possibly through another listener); refused otherwise, with the holder's
    /// device id (never its principal, nor another tenant's names).
    pub(crate) fn claim(
        &self,
        client_id: &str,
        tenant: &str,
        device_id: &str,
        principal: Option<&str>,
    ) -> Result<u64, String> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = held.get(client_id)
            && (h.tenant != tenant || h.device_id != device_id || h.principal.as_deref() != principal)
        {
            return Err(if h.tenant == tenant { h.device_id.clone() } else { "a device of another tenant".to_owned() });
        }
        let claim = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let holder = Holder {
            tenant: tenant.to_owned(),
            device_id: device_id.to_owned(),
            principal: principal.map(str::to_owned),
            claim,
        };
        held.insert(client_id.to_owned(), holder);
        Ok(claim)
    }

    /// Gives `client_id` up if `claim` is still the current claim of it (a newer connection of
    /// the same identity keeps it).
    pub(crate) fn release(&self, client_id: &str, claim: u64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.get(client_id).is_some_and(|h| h.claim == claim) {
            held.remove(client_id);
        }
    }

    /// Number of client ids held.
    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no client id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_belongs_to_one_identity_until_released() {
        let ids = ClientIds::new();
        let first = ids.claim("c1", "acme", "d1", None).unwrap();
        assert_eq!(ids.claim("c1", "acme", "d2", None), Err("d1".into()));
        assert_eq!(
            ids.claim("c1", "globex", "d1", None),
            Err("a device of another tenant".into()),
            "no tenant's names leak"
        );
        let again = ids.claim("c1", "acme", "d1", None).unwrap();
        ids.release("c1", first);
        assert_eq!(ids.claim("c1", "acme", "d2", None), Err("d1".into()), "the newer claim still holds it");
        ids.release("c1", again);
        assert!(ids.claim("c1", "acme", "d2", None).is_ok());
        assert_eq!(ids.len(), 1);
    }
}
