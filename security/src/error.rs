//! The one error type of this crate: what stops a process from setting up
//! TLS or its token table, naming the file at fault.

use std::path::PathBuf;

use opticache_common::ConfigError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A certificate or key file could not be read.
    #[error("security.tls.{key}: cannot read {}: {source}", .path.display())]
    ReadPem {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but holds no PEM block of the kind wanted.
    #[error("security.tls.{key}: {} holds no PEM {wanted}", .path.display())]
    NotPem { key: &'static str, path: PathBuf, wanted: &'static str },
    /// rustls refused the certificates or key (e.g. a key that does not match its certificate).
    #[error("TLS set-up (security.tls) with {} and {}: {reason}", .cert.display(), .key.display())]
    Tls { cert: PathBuf, key: PathBuf, reason: String },
    /// The cluster token cannot be sent as a header (the config checks its
    /// text, so this means a check was bypassed).
    #[error("security.cluster_token: {0}")]
    ClusterToken(String),
    /// A tokens file or cluster token file is missing or malformed.
    #[error(transparent)]
    Tokens(#[from] ConfigError),
    /// Certificate generation failed (`dev-certs`).
    #[error("generating certificates: {0}")]
    Generate(String),
    /// Writing generated certificates failed.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
