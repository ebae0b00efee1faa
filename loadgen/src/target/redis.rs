//! The `redis://HOST:PORT` target: Redis over redis-rs, so OptiCache can be
//! measured side by side with it under the same workload.
//!
//! Mapping: read → GET, write → SET, update → SET XX, delete → DEL, batch
//! read → MGET, batch write → MSET. Redis has no namespaces: the namespace
//! becomes a key prefix (`NAMESPACE/lg:...`), so runs with different
//! namespaces do not share keys, as on OptiCache. Redis has no chunked
//! transfer either: a plan resolves to unary transfers for this target.
//!
//! Invariants: one multiplexed connection per client task (one TCP
//! connection, used by that task alone, one request at a time); connecting
//! fails within [`CONNECT_TIMEOUT_MS`] naming the address; a miss is a nil
//! reply (GET, MGET, SET XX) or DEL's 0, never an error.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};

use super::{Connector, OpError, Reply, Request, CONNECT_TIMEOUT_MS};
use crate::error::{LoadgenError, Result};

/// Connects to one Redis server.
#[derive(Debug)]
pub struct RedisConnector {
    address: String,
    client: Client,
    config: AsyncConnectionConfig,
    prefix: Bytes,
}

/// One connection to Redis.
pub struct RedisConnection {
    conn: MultiplexedConnection,
    prefix: Bytes,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisConnector {
    /// A connector for `address`; `timeout_ms` bounds each reply.
    pub fn new(address: &str, namespace: &str, timeout_ms: u64) -> Result<Self> {
        let client = Client::open(format!("redis://{address}/")).map_err(|e| LoadgenError::Unreachable {
            target: format!("redis://{address}"),
            why: format!("not a valid address: {e}"),
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
            .set_response_timeout(Some(Duration::from_millis(timeout_ms)));
        let prefix = if namespace.is_empty() { Bytes::new() } else { Bytes::from(format!("{namespace}/")) };
        Ok(RedisConnector { address: address.to_owned(), client, config, prefix })
    }
}

impl Connector for RedisConnector {
    type Conn = RedisConnection;

    async fn connect(&self) -> Result<RedisConnection> {
        let unreachable = |why: String| LoadgenError::Unreachable { target: format!("redis://{}", self.address), why };
        let connecting = self.client.get_multiplexed_async_connection_with_config(&self.config);
        let conn = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connecting)
            .await
            .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT_MS} ms")))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(RedisConnection { conn, prefix: self.prefix.clone() })
    }
}

impl RedisConnection {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full
    }
}

impl super::Connection for RedisConnection {
    async fn call(&mut self, request: Request) -> Result<Reply, OpError> {
        match request {
            // No chunked transfer in Redis: plans resolve to unary for it.
            Request::Read { key, .. } => {
                let value: Option<Vec<u8>> =
                    redis::cmd("GET").arg(self.key(&key)).query_async(&mut self.conn).await.map_err(redis_error)?;
                Ok(Reply::Value(value.map(Bytes::from)))
            }
            Request::Write { key, value, .. } => {
                let _: () = redis::cmd("SET")
                    .arg(self.key(&key))
                    .arg(&value[..])
                    .query_async(&mut self.conn)
                    .await
                    .map_err(redis_error)?;
                Ok(Reply::Done)
            }
            Request::Update { key, value } => {
                // SET XX answers OK when it replaced a value, nil when the key was absent.
                let set: Option<String> = redis::cmd("SET")
                    .arg(self.key(&key))
                    .arg(&value[..])
                    .arg("XX")
                    .query_async(&mut self.conn)
                    .await
                    .map_err(redis_error)?;
                Ok(if set.is_some() { Reply::Done } else { Reply::Absent })
            }
            Request::Delete { key } => {
                let deleted: i64 =
                    redis::cmd("DEL").arg(self.key(&key)).query_async(&mut self.conn).await.map_err(redis_error)?;
                Ok(if deleted > 0 { Reply::Done } else { Reply::Absent })
            }
            Request::BatchRead { keys } => {
                let mut cmd = redis::cmd("MGET");
                for key in &keys {
                    cmd.arg(self.key(key));
                }
                let values: Vec<Option<Vec<u8>>> = cmd.query_async(&mut self.conn).await.map_err(redis_error)?;
                if values.len() != keys.len() {
                    return Err(OpError::protocol(format!("MGET of {} keys returned {}", keys.len(), values.len())));
                }
                Ok(Reply::Values(values.into_iter().map(|v| v.map(Bytes::from)).collect()))
            }
            Request::BatchWrite { entries } => {
                let mut cmd = redis::cmd("MSET");
                for (key, value) in &entries {
                    cmd.arg(self.key(key)).arg(&value[..]);
                }
                let _: () = cmd.query_async(&mut self.conn).await.map_err(redis_error)?;
                Ok(Reply::Done)
            }
        }
    }
}

fn redis_error(error: RedisError) -> OpError {
    if error.is_timeout() {
        return OpError::new("timeout", error.to_string());
    }
    OpError::new(format!("redis:{:?}", error.kind()), error.to_string())
}
