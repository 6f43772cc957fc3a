//! The broker-neutral half of every mqtt-policy broker integration: everything between what
//! a broker sees and the policies of [`mqtt_policy_host`], with no broker's types or codes.
//!
//! - [`Gateway`] (shared by all threads): the [`Config`], the engine, the tenants, the policy
//!   directory with its watcher thread (hot reload, last good policy kept, events), and the
//!   monitor queue.
//! - [`Worker`] (one per thread that answers checks, since policy instances are not `Sync`):
//!   resolves a connection's tenant ([`TenantSource`]; by certificate through the operator's
//!   [`TenantCas`]), applies fail mode
//!   and the tenant topic prefix, holds the sessions, and answers typed [`Hello`] and
//!   [`Check`] inputs with [`ConnectOutcome`] and [`CheckOutcome`].
//!
//! ```no_run
//! use mqtt_policy_gateway::{Access, Check, CheckOutcome, Config, ConnectOutcome, Gateway, Hello, TenantSource, Worker};
//! # fn main() -> Result<(), mqtt_policy_gateway::Error> {
//! let gateway = Gateway::start(Config::new("/etc/mqtt-policy", TenantSource::fixed("acme")?))?;
//! let mut worker: Worker<u64> = Worker::new(gateway.clone()); // one per thread
//! if let ConnectOutcome::Accept { .. } = worker.connect(1, &Hello::new("sensor-1")) {
//!     let outcome = worker.check(&1, &Check::new(Access::Publish, "devices/sensor-1/temp", 1));
//!     assert!(matches!(outcome, CheckOutcome::Allow | CheckOutcome::Deny(_)));
//! }
//! # Ok(()) }
//! ```
//!
//! A broker adapter maps the outcomes to its own codes and nothing else.

#![deny(missing_docs)]

mod client_ids;
pub mod config;
pub mod directory;
mod error;
pub mod events;
mod gateway;
pub mod monitoring;
mod notify;
pub mod tenancy;
pub mod trust;
mod types;
mod worker;

pub use client_ids::ClientIds;
pub use config::{Config, EventTarget, FailMode, Monitor, Threads};
pub use error::{Error, Result};
pub use gateway::Gateway;
pub use monitoring::BrokerClose;
pub use tenancy::TenantSource;
pub use trust::TenantCas;
pub use types::{Access, Adjusted, AdmittedAs, Check, CheckOutcome, ClientFacts, ConnectOutcome, Hello, Restored};
pub use worker::{MAX_OFFLINE_SESSIONS, Worker};
