//! The mqtt-policy host: loads WebAssembly policy components with wasmtime and asks
//! them for decisions on connects, publishes, subscriptions and deliveries.
//!
//! ```no_run
//! use mqtt_policy_host::{Engine, Limits, Tenant, Connect, Publish, ConnectDecision};
//! # fn main() -> Result<(), mqtt_policy_host::Error> {
//! let engine = Engine::new(Limits::default())?;
//! let module = engine.load_file("policy.wasm".as_ref(), None)?;
//! let mut policy = module.instantiate(Tenant::new("acme"));
//! if let ConnectDecision::Accept(session, _) = policy.authenticate(&Connect::new("acme", "dev-1")) {
//!     let publish = Publish { topic: "devices/dev-1/temp", qos: 1, retain: false, payload_size: 4 };
//!     println!("{:?}", policy.authorize_publish(session, &publish));
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

// Each module uses only modules of the lines before its own (no cycle):
//   hex, limits, wasm        leaves
//   output                   the ring behind a guest's stdout and stderr
//   breaker                  when to stop calling a failing policy (knows only the limits)
//   cert, types, events, tenant, error, embedded, cache
//   bindings                 the WIT world and the store state
//   compiler                 compiling in a bounded child process, and that child's main
//   engine                   wasmtime, the linker, compilation (knows no policy)
//   convert, fault           WIT <-> domain types; what a failed call was
//   module                   a loaded, validated policy (and the `Engine::load_*` shorthands)
//   instance                 a live store and the calls into it
//   check                    publish, subscribe and delivery described once each
//   policy                   sessions, the one check path, faults as denials, hot replacement
mod bindings;
mod breaker;
mod bytes;
mod cache;
pub mod cert;
mod check;
pub mod compiler;
mod convert;
mod deadline;
pub mod embedded;
mod engine;
mod error;
pub mod events;
mod fault;
mod hex;
mod instance;
mod limits;
mod module;
mod output;
mod policy;
mod tenant;
mod types;
mod wasm;

pub use bindings::WORLD;
pub use bytes::same_bytes;
pub use deadline::Ticking;
pub use engine::Engine;
pub use error::{Error, Result};
pub use limits::Limits;
pub use module::{Loading, PolicyModule, policy_digest};
pub use policy::Policy;
pub use tenant::{CounterRefused, Tenant};
pub use types::*;
