//! The coordinator's errors and their one mapping to gRPC status codes, the
//! public contract's status table (api.md).

use tonic::{Code, Status};

/// The public API's key limits.
pub const KEY_LEN_MAX: usize = 1024;
pub const NAMESPACE_LEN_MAX: usize = 255;

/// Why a public API call failed. A failed call leaves no partial value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("no live value to update")]
    NotFound,
    #[error("{0}")]
    VersionConflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// A node's answer that passes through as it is (e.g. RESOURCE_EXHAUSTED
    /// for a full disk).
    #[error("node {node}: {status}")]
    Node { node: String, status: Status },
}

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Status {
        match e {
            CoordError::InvalidArgument(m) => Status::invalid_argument(m),
            CoordError::TooLarge(m) => Status::resource_exhausted(m),
            CoordError::NotFound => Status::not_found("no live value to update"),
            CoordError::VersionConflict(m) => Status::failed_precondition(m),
            CoordError::Unavailable(m) => Status::unavailable(m),
            CoordError::Node { node, status } => {
                Status::new(status.code(), format!("node {node}: {}", status.message()))
            }
        }
    }
}

/// Checks a namespace and key against the contract's limits.
pub fn check_key(namespace: &str, key: &[u8]) -> Result<(), CoordError> {
    if key.is_empty() {
        return Err(CoordError::InvalidArgument("key is empty".into()));
    }
    if key.len() > KEY_LEN_MAX {
        return Err(CoordError::InvalidArgument(format!(
            "key is {} bytes, over the limit of {KEY_LEN_MAX}",
            key.len()
        )));
    }
    if namespace.len() > NAMESPACE_LEN_MAX {
        return Err(CoordError::InvalidArgument(format!(
            "namespace is {} bytes, over the limit of {NAMESPACE_LEN_MAX}",
            namespace.len()
        )));
    }
    Ok(())
}

/// Whether a node's failure means "try another replica" (the node is gone,
/// not serving, or could not read its copy) rather than an answer. A fenced
/// write is an answer: the node is fine, this coordinator's epoch is not.
pub fn is_replica_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::DataLoss | Code::Internal | Code::Unknown | Code::Cancelled
    ) && opticache_proto::fencing::fenced_by(status).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_status_table() {
        let code = |e: CoordError| Status::from(e).code();
        assert_eq!(code(check_key("", b"").unwrap_err()), Code::InvalidArgument);
        assert_eq!(code(check_key("", &[b'k'; KEY_LEN_MAX + 1]).unwrap_err()), Code::InvalidArgument);
        assert!(check_key(&"n".repeat(NAMESPACE_LEN_MAX), &[b'k'; KEY_LEN_MAX]).is_ok());
        assert_eq!(code(check_key(&"n".repeat(NAMESPACE_LEN_MAX + 1), b"k").unwrap_err()), Code::InvalidArgument);
        assert_eq!(code(CoordError::TooLarge(String::new())), Code::ResourceExhausted);
        assert_eq!(code(CoordError::NotFound), Code::NotFound);
        assert_eq!(code(CoordError::VersionConflict(String::new())), Code::FailedPrecondition);
        assert_eq!(code(CoordError::Unavailable(String::new())), Code::Unavailable);
        let full = Status::resource_exhausted("disk budget reached");
        assert_eq!(code(CoordError::Node { node: "n".into(), status: full }), Code::ResourceExhausted);
    }

    #[test]
    fn replica_failures_are_told_apart_from_answers() {
        assert!(is_replica_failure(&Status::unavailable("recovering")));
        assert!(is_replica_failure(&Status::data_loss("crc")));
        assert!(!is_replica_failure(&Status::not_found("")));
        assert!(!is_replica_failure(&Status::resource_exhausted("")));
        assert!(!is_replica_failure(&Status::invalid_argument("")));
        let mut fenced = Status::unavailable("deposed");
        opticache_proto::fencing::mark(&mut fenced, 2);
        assert!(!is_replica_failure(&fenced));
    }
}
