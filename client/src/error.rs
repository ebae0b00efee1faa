//! The client's error type and the one place where a gRPC status becomes it.
//!
//! [`map_status`] follows the status table of the public API
//! (`opticache.v1`): every code the coordinator documents has its own
//! variant, anything else lands in [`ClientError::Other`] with its code kept.
//! Errors the client finds on its own (bad configuration, a coordinator that
//! breaks the contract, input that cannot be read) have variants of their own
//! so that they are never mistaken for an answer from the cluster.

use std::io;

use tonic::{Code, Status};

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// INVALID_ARGUMENT: empty or over-long key, bad namespace, a stream that
    /// ended short; or an argument the client rejects before sending.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// RESOURCE_EXHAUSTED: value, batch or message over a limit, or a node
    /// disk (budget) full.
    #[error("too large or out of space: {0}")]
    TooLarge(String),
    /// NOT_FOUND: UpdateCache on a missing key. Reads report a miss as
    /// `Ok(None)`, never as this.
    #[error("not found")]
    NotFound,
    /// FAILED_PRECONDITION: UpdateCache whose expected version is stale.
    #[error("version conflict: {message}")]
    VersionConflict {
        /// The coordinator's explanation (it usually names the stored version).
        message: String,
    },
    /// UNAVAILABLE from the cluster (no live replica), or no coordinator
    /// could be reached: the message names every address tried and why it
    /// failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// UNAUTHENTICATED: missing or wrong auth token.
    #[error("unauthenticated")]
    Unauthenticated,
    /// PERMISSION_DENIED: the token's role may not make this call (a read
    /// token writing, a write token asking for ClusterStatus).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// DEADLINE_EXCEEDED, reported by the coordinator or by our own
    /// per-attempt or overall deadline.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// Any other status code; kept so that nothing is lost.
    #[error("{code:?}: {message}")]
    Other {
        /// The gRPC code as received.
        code: Code,
        /// The status message as received.
        message: String,
    },
    /// The [`ClientConfig`](crate::ClientConfig) cannot work (no
    /// coordinators, an address that is not `host:port`, zero attempts).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// A coordinator answered in a way the contract forbids (a batch with the
    /// wrong number of results, a stream longer or shorter than its
    /// total_size). The call's outcome is unknown.
    #[error("coordinator broke the protocol: {0}")]
    Protocol(String),
    /// Reading the value to upload failed; nothing was stored.
    #[error("reading the value failed: {0}")]
    Input(#[source] io::Error),
}

/// Shorthand for results of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Maps a status to the variant of the API's status table. The only place
/// where codes are interpreted for the caller; fail-over decisions look at
/// codes separately, in [`retry`](crate::retry).
pub fn map_status(status: &Status) -> ClientError {
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument => ClientError::InvalidArgument(message),
        Code::ResourceExhausted => ClientError::TooLarge(message),
        Code::NotFound => ClientError::NotFound,
        Code::FailedPrecondition => ClientError::VersionConflict { message },
        Code::Unavailable => ClientError::Unavailable(message),
        Code::Unauthenticated => ClientError::Unauthenticated,
        Code::PermissionDenied => ClientError::PermissionDenied(message),
        Code::DeadlineExceeded => ClientError::DeadlineExceeded,
        code => ClientError::Other { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(code: Code) -> ClientError {
        map_status(&Status::new(code, "why"))
    }

    // One test per row of the API's status table.

    #[test]
    fn invalid_argument_keeps_its_message() {
        let err = mapped(Code::InvalidArgument);
        assert!(matches!(&err, ClientError::InvalidArgument(m) if m == "why"), "{err:?}");
    }

    #[test]
    fn resource_exhausted_is_too_large() {
        let err = mapped(Code::ResourceExhausted);
        assert!(matches!(&err, ClientError::TooLarge(m) if m == "why"), "{err:?}");
    }

    #[test]
    fn not_found_is_not_found() {
        assert!(matches!(mapped(Code::NotFound), ClientError::NotFound));
    }

    #[test]
    fn failed_precondition_is_a_version_conflict() {
        let err = mapped(Code::FailedPrecondition);
        assert!(matches!(&err, ClientError::VersionConflict { message } if message == "why"), "{err:?}");
    }

    #[test]
    fn unavailable_keeps_its_message() {
        let err = mapped(Code::Unavailable);
        assert!(matches!(&err, ClientError::Unavailable(m) if m == "why"), "{err:?}");
    }

    #[test]
    fn unauthenticated_is_unauthenticated() {
        assert!(matches!(mapped(Code::Unauthenticated), ClientError::Unauthenticated));
    }

    #[test]
    fn permission_denied_keeps_its_message() {
        let err = mapped(Code::PermissionDenied);
        assert!(matches!(&err, ClientError::PermissionDenied(m) if m == "why"), "{err:?}");
    }

    #[test]
    fn deadline_exceeded_is_deadline_exceeded() {
        assert!(matches!(mapped(Code::DeadlineExceeded), ClientError::DeadlineExceeded));
    }

    #[test]
    fn every_other_code_is_kept_in_other() {
        for code in [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::AlreadyExists,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::DataLoss,
        ] {
            let err = mapped(code);
            assert!(
                matches!(&err, ClientError::Other { code: c, message } if *c == code && message == "why"),
                "{code:?} -> {err:?}"
            );
        }
    }

    #[test]
    fn display_names_the_case() {
        assert_eq!(mapped(Code::NotFound).to_string(), "not found");
        assert_eq!(mapped(Code::FailedPrecondition).to_string(), "version conflict: why");
        assert_eq!(mapped(Code::Internal).to_string(), "Internal: why");
    }
}
