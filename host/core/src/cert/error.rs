//! The errors of reading certificates and tenant CAs.

/// Why a certificate or a tenant CA could not be used; each variant names the stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The PEM text is malformed or holds no certificate.
    #[error("PEM text holds no usable certificate: {0}")]
    Pem(String),
    /// The client certificate's bytes are not one DER X.509 certificate.
    #[error("client certificate is not valid DER: {0}")]
    Der(String),
    /// A field policies read cannot be extracted without guessing.
    #[error("client certificate has an unusable {field}: {reason}")]
    Field {
        /// Which field or extension.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tenant CA's PEM or DER does not parse.
    #[error("tenant CA `{name}` cannot be read: {reason}")]
    CaUnreadable {
        /// The CA's configured name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// A certificate configured as a tenant CA may not sign certificates.
    #[error("tenant CA `{name}` ({subject}) is not a CA certificate: {reason}")]
    NotACa {
        /// The CA's configured name.
        name: String,
        /// The certificate's subject.
        subject: String,
        /// Which constraint it fails.
        reason: &'static str,
    },
    /// A tenant CA's validity period is over: every device it issued would come out unverified,
    /// so it is refused at load.
    #[error("tenant CA `{name}` ({subject}) expired at {not_after}")]
    CaExpired {
        /// The CA's configured name.
        name: String,
        /// The certificate's subject.
        subject: String,
        /// The end of its validity period.
        not_after: String,
    },
    /// A tenant CA's validity period has not begun yet; refused at load like an expired one.
    #[error("tenant CA `{name}` ({subject}) is not valid before {not_before}")]
    CaNotYetValid {
        /// The CA's configured name.
        name: String,
        /// The certificate's subject.
        subject: String,
        /// The start of its validity period.
        not_before: String,
    },
    /// A tenant CA's key could never verify a signature here, so every device would silently
    /// come out unverified; refused at load instead.
    #[error(
        "tenant CA `{name}` ({subject}) has a {key} key, which cannot verify client certificates \
         (supported: RSA 2048-8192 bits, ECDSA P-256 or P-384, Ed25519)"
    )]
    UnsupportedCaKey {
        /// The CA's configured name.
        name: String,
        /// The certificate's subject.
        subject: String,
        /// The key type found.
        key: String,
    },
}
