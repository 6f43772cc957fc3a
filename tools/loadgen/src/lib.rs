//! `mqtt-loadgen`: an MQTT 3.1.1 load generator for benchmarking a broker on loopback.
//!
//! It speaks the protocol itself ([`codec`]) rather than through a client library so that the
//! client stays cheap next to the broker it measures on a small machine. [`run::run`] performs
//! one run and returns a [`report::Summary`]; [`storm::run`] runs a connect storm and returns a
//! [`report::StormSummary`]. The binary is a thin wrapper around both.
#![deny(missing_docs)]

pub mod codec;
pub mod report;
pub mod run;
pub mod storm;

pub use report::{StormSummary, Summary};
pub use run::{Options, run_blocking};
