//! A live instance of a policy module and its store: the calls into the guest, each under
//! the per-check deadline, with the domain types translated to the WIT ones and back.

use wasmtime::Store;

use crate::bindings::{self, HostState, wit};
use crate::convert;
use crate::error::Error;
use crate::fault;
use crate::module::PolicyModule;
use crate::tenant::Tenant;
use crate::types::*;

/// What a successful call returned, the payload bound up to which the policy let the host
/// reuse the answer (`cache-decision`), if it did, and (authenticate only) how it asked the
/// connection to be monitored.
pub(crate) struct Answer<R> {
    pub(crate) value: R,
    pub(crate) cacheable: Option<u32>,
    pub(crate) monitor: Option<MonitorSubject>,
}

/// An instantiated policy with its settings applied.
pub(crate) struct Instance {
    module: PolicyModule,
    store: Store<HostState>,
    exports: bindings::Policy,
}

impl Instance {
    /// Instantiates `module` for `tenant` and applies its settings.
    pub(crate) fn start(module: &PolicyModule, tenant: Tenant) -> Result<Instance, Error> {
        let (store, exports) = module.start(tenant)?;
        Ok(Instance { module: module.clone(), store, exports })
    }

    /// Runs `f` under the per-check deadline. A failure is classified (see [`crate::fault`]);
    /// the instance must not be called again after one.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>, &bindings::Policy) -> wasmtime::Result<R>,
    ) -> Result<Answer<R>, Error> {
        let deadline = self.module.engine().limits().deadline;
        self.call_within(deadline, f)
    }

    /// Runs `f` under `deadline` (see [`crate::deadline`]).
    fn call_within<R>(
        &mut self,
        deadline: std::time::Duration,
        f: impl FnOnce(&mut Store<HostState>, &bindings::Policy) -> wasmtime::Result<R>,
    ) -> Result<Answer<R>, Error> {
        let limits = self.module.engine().limits();
        let ticks = self.store.data_mut().deadline.start(deadline);
        let _running = self.module.engine().running();
        self.store.set_epoch_deadline(ticks);
        self.store.data_mut().begin_call();
        match f(&mut self.store, &self.exports) {
            Ok(value) => {
                let data = self.store.data_mut();
                data.authenticating = false;
                Ok(Answer { value, cacheable: data.cache_grant, monitor: data.monitor.take() })
            }
            Err(e) => Err(match fault::classify(&limits, self.store.data(), &e) {
                Error::Timeout(_) => Error::Timeout(deadline),
                other => other,
            }),
        }
    }

    /// `authenticate`, for a new connection or (`resumed`) one this instance has not seen.
    pub(crate) fn authenticate(
        &mut self,
        session: u64,
        c: &Connect,
        resumed: bool,
    ) -> Result<Answer<wit::ConnectDecision>, Error> {
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
        let deadline = self.module.engine().limits().connect_deadline;
        self.call_within(deadline, |store, exports| {
            store.data_mut().authenticating = true;
            exports.call_authenticate(store, session, connect)
        })
    }

    /// `authorize-publish` for `session`.
    pub(crate) fn publish(&mut self, session: u64, p: &Publish<'_>) -> Result<Answer<PublishDecision>, Error> {
        let p = wit::Publish { topic: p.topic, qos: p.qos, retain: p.retain, payload_size: p.payload_size };
        let answer = self.call(|store, exports| exports.call_authorize_publish(store, session, p))?;
        Ok(Answer { value: convert::publish_decision(answer.value), cacheable: answer.cacheable, monitor: None })
    }

    /// `authorize-subscribe` for `session`.
    pub(crate) fn subscribe(&mut self, session: u64, s: &Subscribe<'_>) -> Result<Answer<SubscribeDecision>, Error> {
        let s = wit::Subscribe { filter: s.filter, qos: s.qos };
        let answer = self.call(|store, exports| exports.call_authorize_subscribe(store, session, s))?;
        Ok(Answer { value: convert::subscribe_decision(answer.value), cacheable: answer.cacheable, monitor: None })
    }

    /// `authorize-delivery` for `session`.
    pub(crate) fn delivery(&mut self, session: u64, d: &Delivery<'_>) -> Result<Answer<DeliveryDecision>, Error> {
        let d = wit::Delivery { topic: d.topic, qos: d.qos, retain: d.retain, payload_size: d.payload_size };
        let answer = self.call(|store, exports| exports.call_authorize_delivery(store, session, d))?;
        Ok(Answer { value: convert::delivery_decision(answer.value), cacheable: answer.cacheable, monitor: None })
    }

    /// `end-session`: the client is gone.
    pub(crate) fn end_session(&mut self, session: u64) -> Result<Answer<()>, Error> {
        self.call(|store, exports| exports.call_end_session(store, session))
    }
}
