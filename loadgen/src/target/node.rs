//! The `node://HOST:PORT` target: one cache node's internal API
//! (`opticache.node.v1`), as a coordinator would call it but with version 0
//! everywhere, so the node stamps versions from its own clock.
//!
//! Invariants: one HTTP/2 channel per connection, dialled eagerly so that an
//! unreachable node fails [`NodeConnector::connect`] within
//! [`CONNECT_TIMEOUT_MS`]; a miss is `found = false` (Get, BatchGet) or
//! NOT_FOUND (GetStream, Update), never an error; streamed values go in
//! chunks of at most [`STREAM_CHUNK_BYTES`], sliced from the value without
//! copying.

use std::time::Duration;

use bytes::Bytes;
use opticache_client::limits::{CONNECTION_WINDOW_BYTES, MESSAGE_BYTES_MAX, STREAM_WINDOW_BYTES};
use opticache_client::STREAM_CHUNK_BYTES;
use opticache_proto::node::v1::node_client::NodeClient;
use opticache_proto::node::v1::{
    BatchGetRequest, BatchPutRequest, DeleteRequest, GetRequest, PutChunk, PutRequest, UpdateRequest,
};
use opticache_security::{AuthedChannel, ClusterLink};
use tonic::{Code, Status};

use super::{code_name, Collector, Connector, OpError, Reply, Request, CONNECT_TIMEOUT_MS};
use crate::access::Access;
use crate::error::{LoadgenError, Result};
use crate::profile::Transfer;

/// Connects to one node.
#[derive(Debug)]
pub struct NodeConnector {
    address: String,
    namespace: Bytes,
    /// TLS and the cluster token, if the node demands them.
    link: ClusterLink,
}

/// One channel to the node.
#[derive(Debug)]
pub struct NodeConnection {
    rpc: NodeClient<AuthedChannel>,
    namespace: Bytes,
}

impl NodeConnector {
    /// Reads `access`'s certificates; fails on a file that is not one.
    pub fn new(address: &str, namespace: &str, access: &Access) -> Result<Self> {
        Ok(NodeConnector {
            address: address.to_owned(),
            namespace: Bytes::copy_from_slice(namespace.as_bytes()),
            link: access.node_link()?,
        })
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> LoadgenError {
        LoadgenError::Unreachable { target: format!("node://{}", self.address), why: why.to_string() }
    }
}

impl Connector for NodeConnector {
    type Conn = NodeConnection;

    async fn connect(&self) -> Result<NodeConnection> {
        let endpoint = self
            .link
            .endpoint(&self.address)
            .map_err(|e| self.unreachable(format!("not a valid address: {e}")))?
            // Small requests must not wait for Nagle.
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
        // The endpoint's timeout covers the TCP connect; this one the whole
        // HTTP/2 handshake too (a listener that never answers).
        let channel = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), endpoint.connect())
            .await
            .map_err(|_| self.unreachable(format!("no connection within {CONNECT_TIMEOUT_MS} ms")))?
            .map_err(|e| self.unreachable(error_chain(&e)))?;
        let rpc = NodeClient::new(self.link.authed(channel))
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        Ok(NodeConnection { rpc, namespace: self.namespace.clone() })
    }
}

impl super::Connection for NodeConnection {
    async fn call(&mut self, request: Request) -> Result<Reply, OpError> {
        let namespace = self.namespace.clone();
        match request {
            Request::Read { key, transfer: Transfer::Unary } => {
                let r = self.rpc.get(GetRequest { namespace, key }).await.map_err(status)?.into_inner();
                Ok(Reply::Value(r.found.then_some(r.value)))
            }
            Request::Read { key, transfer: Transfer::Stream } => self.get_stream(GetRequest { namespace, key }).await,
            Request::Write { key, value, transfer: Transfer::Unary } => {
                let put = PutRequest { namespace, key, value, ..Default::default() };
                self.rpc.put(put).await.map_err(status)?;
                Ok(Reply::Done)
            }
            Request::Write { key, value, transfer: Transfer::Stream } => {
                self.rpc.put_stream(tokio_stream::iter(chunks(namespace, key, value))).await.map_err(status)?;
                Ok(Reply::Done)
            }
            Request::Update { key, value } => {
                match self.rpc.update(UpdateRequest { namespace, key, value, ..Default::default() }).await {
                    Ok(_) => Ok(Reply::Done),
                    Err(s) if s.code() == Code::NotFound => Ok(Reply::Absent),
                    Err(s) => Err(status(s)),
                }
            }
            Request::Delete { key } => {
                let r =
                    self.rpc.delete(DeleteRequest { namespace, key, ..Default::default() }).await.map_err(status)?;
                Ok(if r.into_inner().deleted { Reply::Done } else { Reply::Absent })
            }
            Request::BatchRead { keys } => {
                let count = keys.len();
                let keys = keys.into_iter().map(|key| GetRequest { namespace: namespace.clone(), key }).collect();
                let results = self.rpc.batch_get(BatchGetRequest { keys }).await.map_err(status)?.into_inner().results;
                if results.len() != count {
                    return Err(OpError::protocol(format!("BatchGet of {count} keys returned {}", results.len())));
                }
                Ok(Reply::Values(results.into_iter().map(|r| r.found.then_some(r.value)).collect()))
            }
            Request::BatchWrite { entries } => {
                let count = entries.len();
                let entries = entries
                    .into_iter()
                    .map(|(key, value)| PutRequest { namespace: namespace.clone(), key, value, ..Default::default() })
                    .collect();
                let results =
                    self.rpc.batch_put(BatchPutRequest { entries }).await.map_err(status)?.into_inner().results;
                if results.len() != count {
                    return Err(OpError::protocol(format!("BatchPut of {count} entries returned {}", results.len())));
                }
                Ok(Reply::Done)
            }
        }
    }
}

impl NodeConnection {
    async fn get_stream(&mut self, request: GetRequest) -> Result<Reply, OpError> {
        let mut chunks = match self.rpc.get_stream(request).await {
            Ok(response) => response.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(Reply::Value(None)),
            Err(s) => return Err(status(s)),
        };
        let first = match chunks.message().await {
            Ok(Some(first)) => first,
            Ok(None) => return Err(OpError::protocol("GetStream ended before its first chunk")),
            Err(s) if s.code() == Code::NotFound => return Ok(Reply::Value(None)),
            Err(s) => return Err(status(s)),
        };
        let mut value = Collector::new(first.total_size)?;
        value.push(&first.data)?;
        while let Some(chunk) = chunks.message().await.map_err(status)? {
            value.push(&chunk.data)?;
        }
        value.finish().map(|v| Reply::Value(Some(v)))
    }
}

/// The PutStream chunks of `value`: the first carries the header, each at
/// most [`STREAM_CHUNK_BYTES`] of data (slices of `value`, not copies). An
/// empty value is one chunk with no data.
fn chunks(namespace: Bytes, key: Bytes, value: Bytes) -> Vec<PutChunk> {
    let total_size = value.len() as u64;
    let mut out = Vec::with_capacity(value.len().div_ceil(STREAM_CHUNK_BYTES).max(1));
    let mut offset = 0;
    loop {
        let end = (offset + STREAM_CHUNK_BYTES).min(value.len());
        let data = value.slice(offset..end);
        out.push(if offset == 0 {
            PutChunk { namespace: namespace.clone(), key: key.clone(), total_size, data, ..Default::default() }
        } else {
            PutChunk { data, ..Default::default() }
        });
        offset = end;
        if offset >= value.len() {
            return out;
        }
    }
}

fn status(s: Status) -> OpError {
    OpError::new(code_name(s.code()), s.message())
}

/// An error with its sources, which is where tonic keeps "connection
/// refused".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_slice_the_value_and_only_the_first_has_the_header() {
        let value = Bytes::from(vec![7u8; 2 * STREAM_CHUNK_BYTES + 5]);
        let out = chunks(Bytes::from_static(b"ns"), Bytes::from_static(b"k"), value.clone());
        assert_eq!(out.iter().map(|c| c.data.len()).collect::<Vec<_>>(), [STREAM_CHUNK_BYTES, STREAM_CHUNK_BYTES, 5]);
        assert_eq!(
            (out[0].key.as_ref(), out[0].namespace.as_ref(), out[0].total_size),
            (&b"k"[..], &b"ns"[..], value.len() as u64)
        );
        assert!(out[1..].iter().all(|c| c.key.is_empty() && c.total_size == 0));
        let joined: Vec<u8> = out.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(joined, value);
        let exact = chunks(Bytes::new(), Bytes::from_static(b"k"), Bytes::from(vec![1u8; STREAM_CHUNK_BYTES]));
        assert_eq!(exact.len(), 1);
        let empty = chunks(Bytes::new(), Bytes::from_static(b"k"), Bytes::new());
        assert_eq!((empty.len(), empty[0].data.len()), (1, 0));
    }
}
