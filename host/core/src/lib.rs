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

mod bindings;
pub mod cert;
mod convert;
pub mod embedded;
mod engine;
mod error;
pub mod events;
mod module;
mod policy;
mod tenant;
mod types;

pub use engine::{Engine, Limits};
pub use error::{Error, Result};
pub use module::PolicyModule;
pub use policy::Policy;
pub use tenant::Tenant;
pub use types::*;

/// The WIT package and version this host speaks.
pub const WORLD: &str = "mqtt-policy:policy@0.2.0";
