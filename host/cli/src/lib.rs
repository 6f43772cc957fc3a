//! The pieces of the `mqtt-policy` command, usable from tests and other tools: the cases
//! file format and runner, and the hub-rules build.

pub mod cases;
pub mod compile;
pub mod run;
