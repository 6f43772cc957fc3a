//! `mqtt-policy serve`: an HTTP decision service for brokers that ask an external service for
//! authentication and authorization (clustered brokers: every node asks a service beside it),
//! answering with the same per-tenant `.wasm` policies as the Mosquitto plugin.
//!
//! It is a thin adapter on [`mqtt_policy_gateway`], like the plugin: the gateway loads and
//! hot-reloads `TENANT.wasm` files, resolves tenants, holds sessions and applies fail-closed
//! faults, limits and events; this crate only speaks HTTP and maps each broker's requests
//! ([`rabbitmq`], [`emqx`], [`vernemq`]) to the gateway's inputs and its outcomes to the
//! broker's answers. Each dialect module is translation only; sessions over these stateless
//! protocols (created at a login, keyed by (the broker's scope of client ids, client id),
//! re-established with `resumed = true` when unknown, ended when idle or at a disconnect
//! hook) are the pool's.
//!
//! - A pool of worker threads ([`Options::workers`]), each owning one
//!   [`mqtt_policy_gateway::Worker`] (policy instances are not `Sync`), so checks run in
//!   parallel. A client's requests always go to the same worker (by client id), which holds
//!   its session.
//! - HTTP/1.1 with keep-alive on tokio and hyper, loopback by default, with bounded request
//!   headers, bodies, time and connections. Anything the service cannot read is answered
//!   with a 4xx status and the body `deny`; an overloaded or timed-out check with 503 and
//!   `deny`: never an allow.
//! - `/healthz` and `/metrics` (Prometheus text format, [`metrics`]).
#![deny(missing_docs)]

pub mod emqx;
pub mod metrics;
mod pool;
pub mod rabbitmq;
mod server;
pub mod vernemq;

pub use server::{DEFAULT_LISTEN, Options, Service};

use std::net::SocketAddr;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway (policy directory, engine, events file) could not start.
    #[error("{0}")]
    Gateway(#[from] mqtt_policy_gateway::Error),
    /// The listening socket could not be opened.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Unix socket could not be opened.
    #[error("listening on {}: {source}", path.display())]
    ListenUnix {
        /// Its path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A thread or the async runtime could not be started.
    #[error("starting the service's threads: {0}")]
    Threads(#[source] std::io::Error),
    /// The options are inconsistent.
    #[error("{0}")]
    Options(String),
}

/// A request the service cannot read; answered with a deny (4xx for RabbitMQ and VerneMQ, a 200
/// `deny` for EMQX, which takes any other status as `ignore`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Garbage(pub String);

/// The answer of a JSON dialect (EMQX, VerneMQ) to one request, with what metrics need.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Whether it allows (anything but a refusal; a rewrite or downgrade allows).
    pub allow: bool,
    /// The metrics kind: `connect`, `publish`, `subscribe` or `disconnect`.
    pub kind: &'static str,
    /// The tenant label (`*` when unknown).
    pub tenant: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// The fields of a JSON object body, for the JSON dialects.
pub(crate) fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Garbage> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Garbage("the body is not a JSON object".into())),
        Err(e) => Err(Garbage(format!("the body is not JSON: {e}"))),
    }
}
