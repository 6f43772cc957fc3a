//! The one error type of the host library; each variant names the stage that failed.

use std::path::PathBuf;

/// Why a policy could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy file could not be read.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly component wasmtime can compile.
    #[error("{source_name} is not a valid policy component: {message}")]
    Compile {
        /// File name or other label of the policy.
        source_name: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// Compiling the policy went past a bound of [`crate::Limits`] (`compile_time` or
    /// `compile_memory`) in the compiling child process.
    #[error("{source_name} cannot be compiled within its bounds: {message}")]
    CompileLimit {
        /// File name or other label of the policy.
        source_name: String,
        /// Which bound, and its value.
        message: String,
    },
    /// The compiling child process could not be started, or ended without an answer.
    #[error("{source_name} could not be compiled: {message}")]
    Compiler {
        /// File name or other label of the policy.
        source_name: String,
        /// What happened to the child.
        message: String,
    },
    /// The component speaks another version of the policy world.
    #[error("{source_name} was built for {found}; this host speaks {expected}")]
    WorldVersion {
        /// File name or other label of the policy.
        source_name: String,
        /// The interface the component was built against.
        found: String,
        /// The interface this host provides.
        expected: String,
    },
    /// The component needs something the host does not provide, or lacks an export.
    #[error("{source_name} cannot be linked: {message}")]
    Link {
        /// File name or other label of the policy.
        source_name: String,
        /// What is missing or mismatched.
        message: String,
    },
    /// Creating an instance failed (a trap in start-up code, or a limit).
    #[error("{source_name} could not be instantiated: {message}")]
    Instantiate {
        /// File name or other label of the policy.
        source_name: String,
        /// The cause.
        message: String,
    },
    /// The host refused a policy that compiled and validated (e.g. it embeds a CA the
    /// operator assigned to another tenant).
    #[error("{source_name} refused: {message}")]
    Refused {
        /// File name or other label of the policy.
        source_name: String,
        /// Why.
        message: String,
    },
    /// The policy refused its settings (its own `validate-settings` said why).
    #[error("{source_name}: invalid settings: {message}")]
    InvalidSettings {
        /// File name or other label of the policy.
        source_name: String,
        /// The policy's message, naming the field at fault.
        message: String,
    },
    /// The policy trapped (panic, unreachable, out-of-bounds access...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The policy ran past its deadline and was interrupted.
    #[error("policy exceeded its deadline of {0:?}")]
    Timeout(std::time::Duration),
    /// The policy tried to grow its memory past the cap.
    #[error("policy exceeded its memory limit of {0} bytes")]
    OutOfMemory(usize),
    /// The policy answered with a decision the check does not admit (a QoS above 2 or above
    /// the one asked for, a rewrite that adds the retain flag).
    #[error("policy returned an invalid decision: {0}")]
    InvalidDecision(String),
    /// The policy asked the host to keep more than a bound of [`Limits`](crate::Limits)
    /// allows (a counter name too long, too many counter bytes); the call trapped.
    #[error("policy exceeded a host limit: {0}")]
    LimitExceeded(String),
    /// A certificate could not be parsed.
    #[error(transparent)]
    Certificate(#[from] crate::cert::CertError),
    /// The engine could not be configured.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
