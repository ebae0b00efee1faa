//! The `opticache://HOST:PORT[,HOST:PORT]` target: the coordinators' public
//! API through the `opticache-client` crate, which a model server would use,
//! fail-over and retries included.
//!
//! Invariants: one [`Client`] per connection (so per client task), each with
//! its own channels; since a `Client` connects lazily, the connector probes
//! the cluster once (ClusterStatus) under [`PROBE_DEADLINE_MS`], so an
//! unreachable cluster fails before the run with every address in the
//! message; a miss is `None` from `get`/`get_many`/`get_stream` and
//! NOT_FOUND from `update`, never an error.

use std::io::Cursor;

use bytes::Bytes;
use opticache_client::{Client, ClientConfig, ClientError};

use super::{code_name, Collector, Connector, OpError, Reply, Request, CONNECT_TIMEOUT_MS};
use crate::access::Access;
use crate::error::{LoadgenError, Result};
use crate::profile::Transfer;

/// How long the probe of the coordinators may take, retries included.
pub const PROBE_DEADLINE_MS: u64 = 5_000;
/// The key the probe reads (outside the key space: `key_name` never makes it).
const PROBE_KEY: &str = "loadgen:probe";

/// Makes one client per connection.
#[derive(Debug)]
pub struct OptiCacheConnector {
    config: ClientConfig,
    namespace: String,
}

/// One client of the cluster.
#[derive(Debug)]
pub struct OptiCacheConnection {
    client: Client,
    namespace: String,
}

impl OptiCacheConnector {
    /// Checks that a coordinator answers, then keeps the configuration for
    /// [`Connector::connect`]. `timeout_ms` bounds each call (all its
    /// attempts).
    pub async fn new(coordinators: Vec<String>, namespace: &str, timeout_ms: u64, access: &Access) -> Result<Self> {
        let target = format!("opticache://{}", coordinators.join(","));
        let unreachable = |why: String| LoadgenError::Unreachable { target: target.clone(), why };
        let attempts = u32::try_from(coordinators.len()).unwrap_or(u32::MAX).max(1);
        let probe = ClientConfig {
            coordinators: coordinators.clone(),
            timeout_ms: CONNECT_TIMEOUT_MS.min(PROBE_DEADLINE_MS),
            retries: attempts,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            deadline_ms: Some(PROBE_DEADLINE_MS),
            token: access.token.clone(),
            tls_ca_cert: access.ca_cert.clone(),
        };
        let client = Client::connect(probe).await.map_err(|e| unreachable(e.to_string()))?;
        // A read, which every token's role may make (ClusterStatus needs admin).
        client.get(namespace, PROBE_KEY).await.map_err(|e| unreachable(format!("a probe read failed: {e}")))?;
        let config = ClientConfig {
            coordinators,
            timeout_ms,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            deadline_ms: Some(timeout_ms),
            token: access.token.clone(),
            tls_ca_cert: access.ca_cert.clone(),
            ..ClientConfig::default()
        };
        Ok(OptiCacheConnector { config, namespace: namespace.to_owned() })
    }
}

impl Connector for OptiCacheConnector {
    type Conn = OptiCacheConnection;

    async fn connect(&self) -> Result<OptiCacheConnection> {
        let unreachable = |e: opticache_client::ClientError| LoadgenError::Unreachable {
            target: format!("opticache://{}", self.config.coordinators.join(",")),
            why: e.to_string(),
        };
        let client = Client::connect(self.config.clone()).await.map_err(unreachable)?;
        // The client connects lazily: one cheap call now, so the first
        // measured call does not pay for the TCP and HTTP/2 handshakes. A
        // read, which every token's role may make.
        client.get(&self.namespace, PROBE_KEY).await.map_err(unreachable)?;
        Ok(OptiCacheConnection { client, namespace: self.namespace.clone() })
    }
}

impl super::Connection for OptiCacheConnection {
    async fn call(&mut self, request: Request) -> Result<Reply, OpError> {
        let ns = self.namespace.as_str();
        let client = &self.client;
        match request {
            Request::Read { key, transfer: Transfer::Unary } => {
                let found = client.get(ns, key).await.map_err(client_error)?;
                Ok(Reply::Value(found.map(|v| v.value)))
            }
            Request::Read { key, transfer: Transfer::Stream } => {
                let Some(mut stream) = client.get_stream(ns, key).await.map_err(client_error)? else {
                    return Ok(Reply::Value(None));
                };
                let mut value = Collector::new(stream.total_size())?;
                while let Some(chunk) = stream.next_chunk().await.map_err(client_error)? {
                    value.push(&chunk)?;
                }
                value.finish().map(|v| Reply::Value(Some(v)))
            }
            Request::Write { key, value, transfer: Transfer::Unary } => {
                client.put(ns, key, value, None).await.map_err(client_error)?;
                Ok(Reply::Done)
            }
            Request::Write { key, value, transfer: Transfer::Stream } => {
                let total = value.len() as u64;
                client.put_stream(ns, key, total, None, Cursor::new(value)).await.map_err(client_error)?;
                Ok(Reply::Done)
            }
            Request::Update { key, value } => match client.update(ns, key, value, None, None).await {
                Ok(_) => Ok(Reply::Done),
                Err(ClientError::NotFound) => Ok(Reply::Absent),
                Err(e) => Err(client_error(e)),
            },
            Request::Delete { key } => {
                let deleted = client.delete(ns, key).await.map_err(client_error)?;
                Ok(if deleted { Reply::Done } else { Reply::Absent })
            }
            Request::BatchRead { keys } => {
                let found = client.get_many(ns, keys).await.map_err(client_error)?;
                Ok(Reply::Values(found.into_iter().map(|v| v.map(|v| v.value)).collect()))
            }
            Request::BatchWrite { entries } => {
                let entries: Vec<(Bytes, Bytes, _)> = entries.into_iter().map(|(k, v)| (k, v, None)).collect();
                client.put_many(ns, entries).await.map_err(client_error)?;
                Ok(Reply::Done)
            }
        }
    }
}

/// The client's error as an error kind: the API's code name where the
/// cluster answered, the client's own category otherwise.
fn client_error(error: ClientError) -> OpError {
    let kind = match &error {
        ClientError::InvalidArgument(_) => "INVALID_ARGUMENT",
        ClientError::TooLarge(_) => "RESOURCE_EXHAUSTED",
        ClientError::NotFound => "NOT_FOUND",
        ClientError::VersionConflict { .. } => "FAILED_PRECONDITION",
        ClientError::Unavailable(_) => "UNAVAILABLE",
        ClientError::Unauthenticated => "UNAUTHENTICATED",
        ClientError::PermissionDenied(_) => "PERMISSION_DENIED",
        ClientError::DeadlineExceeded => "DEADLINE_EXCEEDED",
        ClientError::Other { code, .. } => code_name(*code),
        ClientError::InvalidConfig(_) => "client-config",
        ClientError::Protocol(_) => "protocol",
        ClientError::Input(_) => "client-input",
        _ => "client",
    };
    OpError::new(kind, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_grouped_by_the_api_code() {
        assert_eq!(client_error(ClientError::Unavailable("x".into())).kind, "UNAVAILABLE");
        assert_eq!(client_error(ClientError::TooLarge("x".into())).kind, "RESOURCE_EXHAUSTED");
        let other = ClientError::Other { code: tonic::Code::Internal, message: "boom".into() };
        let err = client_error(other);
        assert_eq!((err.kind.as_str(), err.message.contains("boom")), ("INTERNAL", true));
        assert_eq!(client_error(ClientError::Protocol("x".into())).kind, "protocol");
    }
}
