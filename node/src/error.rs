//! The node's error type and its one mapping to gRPC status codes.
//!
//! The mapping follows the public contract's status table (api.md), so a
//! coordinator can pass a node's status through unchanged:
//! bad key or namespace, a stream without its key or cut short → INVALID_ARGUMENT;
//! a value, batch or stream over its limit, a full disk → RESOURCE_EXHAUSTED;
//! Update on a missing key → NOT_FOUND; a stale expected_version →
//! FAILED_PRECONDITION; a node that is recovering, draining or lost a shard →
//! UNAVAILABLE (the coordinator tries another replica).

use opticache_engine::error::EngineError;
use tonic::{Code, Status};

use crate::keys::KeyError;

/// Why a node call failed. A failed call wrote nothing visible.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("value of {len} bytes is over max_value_bytes ({max}); stream larger values")]
    ValueTooLarge { len: u64, max: u64 },
    #[error("batch of {len} entries is over the limit of {max}")]
    BatchTooLong { len: usize, max: usize },
    #[error("batch of {bytes} bytes is over the limit of {max} bytes")]
    BatchTooLarge { bytes: u64, max: u64 },
    #[error("the node is {0}, not serving")]
    NotServing(&'static str),
    #[error("shard {0} has stopped")]
    ShardStopped(u32),
    #[error("a shard has not answered for {waited_ms} ms")]
    ShardUnresponsive { waited_ms: u64 },
    #[error("cannot read the shards' figures: {0}")]
    ShardFigures(String),
    #[error("no live value to update")]
    UpdateNotFound,
    #[error("no live value to read")]
    StreamNotFound,
    #[error("expected version {expected} but the stored version is {stored}")]
    VersionMismatch { expected: u64, stored: u64 },
    #[error("version {version} is not newer than the stored version {stored}")]
    StaleUpdate { version: u64, stored: u64 },
    #[error(
        "coordinator epoch {epoch} is older than epoch {highest}, which this node has seen: a newer primary took over"
    )]
    StaleEpoch { epoch: u64, highest: u64 },
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    #[error("{0}")]
    BadRequest(String),
    /// A read of a key whose newer write this node refused (its disk budget
    /// was reached): another replica holds the current value.
    #[error("{0}; read another replica")]
    RefusedNewer(&'static str),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What can be wrong with a streamed write.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    #[error("the stream carried no chunk")]
    Empty,
    #[error("the first chunk carries no key")]
    FirstChunkWithoutKey,
    #[error("a later chunk names another key than the first")]
    KeyChanged,
    #[error("the stream ended after {received} of {announced} bytes")]
    Short { announced: u64, received: u64 },
    #[error("the stream sent more than its total_size of {announced} bytes")]
    Overflow { announced: u64 },
    #[error("total_size of {total} bytes is over the limit of {max} bytes")]
    TotalTooLarge { total: u64, max: u64 },
    #[error("a chunk is over the gRPC message limit: {0}")]
    ChunkOverMessageLimit(String),
    #[error("the client's stream failed: {0}")]
    Client(String),
}

/// The start of the message tonic gives a message over the decoding limit
/// (tonic `codec/decode.rs`), with code OUT_OF_RANGE.
const DECODE_LIMIT_MESSAGE: &str = "Error, decoded message length too large";

/// Whether `status` is tonic refusing a request message over the node's gRPC
/// message limit. The contract answers that with RESOURCE_EXHAUSTED (a value
/// or batch over its limit), not tonic's OUT_OF_RANGE.
pub fn is_over_message_limit(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().starts_with(DECODE_LIMIT_MESSAGE)
}

impl StreamError {
    /// What a failed read of the client's stream means: a chunk over the
    /// message limit is bad input (tonic reports it on the stream, not as the
    /// client's failure); anything else is the client's stream breaking.
    pub fn from_client(status: &Status) -> StreamError {
        if is_over_message_limit(status) {
            StreamError::ChunkOverMessageLimit(status.message().to_string())
        } else {
            StreamError::Client(status.message().to_string())
        }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match &e {
            NodeError::Key(_) | NodeError::BadRequest(_) => Code::InvalidArgument,
            NodeError::ValueTooLarge { .. } | NodeError::BatchTooLong { .. } | NodeError::BatchTooLarge { .. } => {
                Code::ResourceExhausted
            }
            NodeError::NotServing(_)
            | NodeError::ShardStopped(_)
            | NodeError::ShardUnresponsive { .. }
            | NodeError::ShardFigures(_)
            | NodeError::RefusedNewer(_) => Code::Unavailable,
            NodeError::UpdateNotFound | NodeError::StreamNotFound => Code::NotFound,
            NodeError::VersionMismatch { .. } | NodeError::StaleEpoch { .. } => Code::FailedPrecondition,
            NodeError::StaleUpdate { .. } => Code::Aborted,
            NodeError::Stream(s) => match s {
                StreamError::Overflow { .. }
                | StreamError::TotalTooLarge { .. }
                | StreamError::ChunkOverMessageLimit(_) => Code::ResourceExhausted,
                StreamError::Client(_) => Code::Cancelled,
                _ => Code::InvalidArgument,
            },
            NodeError::Engine(engine) => engine_code(engine),
        };
        let mut status = Status::new(code, e.to_string());
        if let NodeError::StaleEpoch { highest, .. } = e {
            opticache_proto::fencing::mark(&mut status, highest);
        }
        status
    }
}

fn engine_code(e: &EngineError) -> Code {
    match e {
        EngineError::InvalidKey { .. } | EngineError::ChunkedLengthMismatch { .. } => Code::InvalidArgument,
        EngineError::ValueTooLarge { .. } | EngineError::DiskFull { .. } => Code::ResourceExhausted,
        // The record is never served; another replica may hold a good copy.
        EngineError::Corruption { .. } => Code::DataLoss,
        EngineError::Closed(_) => Code::Unavailable,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_status_table() {
        let code = |e: NodeError| Status::from(e).code();
        assert_eq!(code(KeyError::EmptyKey.into()), Code::InvalidArgument);
        assert_eq!(code(KeyError::NamespaceNotUtf8.into()), Code::InvalidArgument);
        assert_eq!(code(NodeError::ValueTooLarge { len: 2, max: 1 }), Code::ResourceExhausted);
        assert_eq!(code(NodeError::BatchTooLong { len: 2, max: 1 }), Code::ResourceExhausted);
        assert_eq!(code(NodeError::BatchTooLarge { bytes: 2, max: 1 }), Code::ResourceExhausted);
        assert_eq!(code(StreamError::Overflow { announced: 1 }.into()), Code::ResourceExhausted);
        let over_limit = Status::out_of_range(format!("{DECODE_LIMIT_MESSAGE}: found 2 bytes, the limit is: 1 bytes"));
        assert_eq!(code(StreamError::from_client(&over_limit).into()), Code::ResourceExhausted);
        assert_eq!(code(StreamError::from_client(&Status::cancelled("gone")).into()), Code::Cancelled);
        assert_eq!(code(StreamError::Short { announced: 2, received: 1 }.into()), Code::InvalidArgument);
        assert_eq!(code(StreamError::FirstChunkWithoutKey.into()), Code::InvalidArgument);
        assert_eq!(code(NodeError::UpdateNotFound), Code::NotFound);
        assert_eq!(code(NodeError::VersionMismatch { expected: 1, stored: 2 }), Code::FailedPrecondition);
        assert_eq!(code(NodeError::NotServing("recovering")), Code::Unavailable);
        assert_eq!(code(EngineError::DiskFull { used_bytes: 2, budget_bytes: 1 }.into()), Code::ResourceExhausted);
    }

    #[test]
    fn only_a_fencing_refusal_names_the_epoch_that_fenced_it() {
        use opticache_proto::fencing::fenced_by;
        let fenced = Status::from(NodeError::StaleEpoch { epoch: 3, highest: 5 });
        assert_eq!((fenced.code(), fenced_by(&fenced)), (Code::FailedPrecondition, Some(5)));
        assert_eq!(fenced_by(&Status::from(NodeError::VersionMismatch { expected: 1, stored: 2 })), None);
    }
}
