//! The one error type of the gateway; each variant names what was refused or failed.

use std::path::PathBuf;

/// Why a gateway could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant name that cannot also be a policy file name.
    #[error("`{name}` is not a tenant name: use 1-64 of A-Z a-z 0-9 _ . -, not starting with . or -")]
    TenantName {
        /// The refused name.
        name: String,
    },
    /// A tenant pattern without exactly one `{tenant}`.
    #[error("pattern `{pattern}` must contain {{tenant}} exactly once")]
    TenantPattern {
        /// The refused pattern.
        pattern: String,
    },
    /// A tenant source that is none of the known forms.
    #[error("`{text}` is not client-id:PATTERN, username:PATTERN or certificate")]
    TenantSource {
        /// The refused text.
        text: String,
    },
    /// A tenant topic prefix that could not give every tenant its own topic space.
    #[error("`{prefix}` must contain {{tenant}} once, end with / and have no wildcards, e.g. {{tenant}}/")]
    TopicPrefix {
        /// The refused prefix.
        prefix: String,
    },
    /// A monitoring topic that is not a topic name.
    #[error("`{topic}` must be a topic name (no wildcards), e.g. monitor/{{tenant}}/events")]
    MonitorTopic {
        /// The refused topic.
        topic: String,
    },
    /// A file of the operator's tenant CA map that cannot be used.
    #[error("tenant CA file {path}: {message}")]
    TenantCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Certificate tenancy without the operator's CA map: a policy would decide which
    /// tenant a certificate belongs to.
    #[error(
        "finding the tenant from the client certificate needs the operator's map of tenant CAs: a tenant's policy must not decide which devices are its own"
    )]
    NoTenantCas,
    /// The events file could not be opened for appending.
    #[error("cannot open {path}: {source}")]
    EventsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The monitoring state file could not be read or written.
    #[error("monitoring state file {path}: {source}")]
    MonitoringState {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policy engine could not be created with the configured limits.
    #[error("creating the policy engine: {0}")]
    Engine(#[source] mqtt_policy_host::Error),
    /// The policy directory watcher thread could not be started.
    #[error("starting the policy directory watcher: {0}")]
    Watcher(#[source] std::io::Error),
}

/// A gateway result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
