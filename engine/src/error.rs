//! The engine's error type: one enum for every way an engine call can fail,
//! carrying what was found, so the node can map each case to one gRPC status
//! in one place.

use std::io;

use crate::record::DecodeError;

/// Why an engine call failed. A failed write has changed nothing visible.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The key is empty or longer than [`crate::limits::KEY_LEN_MAX`].
    #[error("key length {len} is outside 1..={max}")]
    InvalidKey { len: usize, max: usize },
    /// The value is larger than the configured single-put limit.
    #[error("value of {len} bytes is over the limit of {max} bytes")]
    ValueTooLarge { len: u64, max: u64 },
    /// A chunked put received more or fewer bytes than it announced.
    #[error("chunked value announced {announced} bytes but received {received}")]
    ChunkedLengthMismatch { announced: u64, received: u64 },
    /// The disk budget (store mode) or the disk itself is full; reads still work.
    #[error("disk budget reached: {used_bytes} of {budget_bytes} bytes used")]
    DiskFull { used_bytes: u64, budget_bytes: u64 },
    /// A record failed its checks where the log said a valid one must be.
    #[error("corrupt record in segment {segment} at offset {offset}: {source}")]
    Corruption {
        segment: u32,
        offset: u64,
        #[source]
        source: DecodeError,
    },
    /// A key listing was asked for pages of no keys; the limit must be at
    /// least 1 (limits above [`crate::limits::LIST_PAGE_LEN_MAX`] are clamped).
    #[error("key listing limit {limit} is below 1")]
    InvalidListLimit { limit: usize },
    /// The configuration is not usable.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The index file could not be used or grown.
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
    /// An I/O call failed; `op` says which.
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The engine is closing or a previous write failure fenced it.
    #[error("engine is closed: {0}")]
    Closed(String),
}

/// Wraps an `io::Error` with the operation that failed.
pub(crate) fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> EngineError {
    move |source| EngineError::Io { op, source }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
