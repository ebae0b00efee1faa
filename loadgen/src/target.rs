//! What loadgen talks to: the [`Connector`]/[`Connection`] traits the driver
//! runs against, the requests and replies they exchange, and the three real
//! targets behind one enum ([`AnyConnector`]):
//!
//! - `opticache://HOST:PORT[,HOST:PORT]`: the coordinators' public API,
//!   through the `opticache-client` crate ([`opticache`]);
//! - `node://HOST:PORT`: one cache node's internal API ([`node`]);
//! - `redis://HOST:PORT`: Redis over redis-rs ([`redis`]).
//!
//! Invariants: a [`Connection`] is one channel (one TCP connection, or one
//! `Client` for the cluster) used by one client task only; connecting fails
//! within [`CONNECT_TIMEOUT_MS`] (plus the probe's own deadline) with the
//! target's address in the message; a call never panics on whatever the
//! target answers: a reply that breaks the target's contract is an
//! [`OpError`] of kind `protocol`.

pub mod node;
pub mod opticache;
pub mod redis;

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::error::Result;
use crate::profile::Transfer;
use crate::units::{GIB, MIB};

/// How long establishing one connection may take: an unreachable target
/// must fail the run in seconds, not hang it.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Largest value sent in one message to the cluster or a node: the default
/// `max_value_bytes` of `config/config.yaml`. Beyond it values are streamed.
pub const UNARY_VALUE_BYTES_MAX: u64 = 64 * MIB;
/// Largest streamed value: each client holds the value it writes or reads
/// in memory, so this bounds loadgen's memory to concurrency × 1 GiB.
pub const STREAM_VALUE_BYTES_MAX: u64 = GIB;
/// Redis's own limit on one bulk string (`proto-max-bulk-len` default).
pub const REDIS_VALUE_BYTES_MAX: u64 = 512 * MIB;
/// Keys in one batch call: the node's and coordinator's `BATCH_LEN_MAX`.
pub const BATCH_LEN_MAX: u32 = 4096;
/// Bytes of values in one batch call: the node's `BATCH_BYTES_MAX`.
pub const BATCH_BYTES_MAX: u64 = 64 * MIB;
/// Longest namespace the API accepts.
pub const NAMESPACE_BYTES_MAX: usize = 255;

/// Where to send the load, as given by `--target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum TargetSpec {
    /// The coordinators, in fail-over order.
    OptiCache { coordinators: Vec<String> },
    /// One cache node.
    Node { address: String },
    /// One Redis server.
    Redis { address: String },
}

impl TargetSpec {
    /// Largest value this target takes with `transfer`.
    pub fn value_bytes_max(&self, transfer: Transfer) -> u64 {
        match (self, transfer) {
            (TargetSpec::Redis { .. }, _) => REDIS_VALUE_BYTES_MAX,
            (_, Transfer::Unary) => UNARY_VALUE_BYTES_MAX,
            (_, Transfer::Stream) => STREAM_VALUE_BYTES_MAX,
        }
    }

    /// Whether the target has a chunked transfer of its own.
    pub fn can_stream(&self) -> bool {
        !matches!(self, TargetSpec::Redis { .. })
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::OptiCache { coordinators } => write!(f, "opticache://{}", coordinators.join(",")),
            TargetSpec::Node { address } => write!(f, "node://{address}"),
            TargetSpec::Redis { address } => write!(f, "redis://{address}"),
        }
    }
}

impl From<TargetSpec> for String {
    fn from(spec: TargetSpec) -> String {
        spec.to_string()
    }
}

impl TryFrom<String> for TargetSpec {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "{text:?} has no scheme (use opticache://HOST:PORT[,HOST:PORT], node://HOST:PORT or redis://HOST:PORT)"
            ));
        };
        let addresses: Vec<&str> = rest.split(',').map(str::trim).collect();
        for address in &addresses {
            check_host_port(address).map_err(|why| format!("{text:?}: address {address:?} {why}"))?;
        }
        let single = |kind: &str| match addresses.as_slice() {
            [one] => Ok((*one).to_owned()),
            _ => Err(format!("{text:?}: a {kind} target is one HOST:PORT")),
        };
        match scheme {
            "opticache" => {
                Ok(TargetSpec::OptiCache { coordinators: addresses.iter().map(|a| (*a).to_owned()).collect() })
            }
            "node" => Ok(TargetSpec::Node { address: single("node")? }),
            "redis" => Ok(TargetSpec::Redis { address: single("redis")? }),
            other => Err(format!("{text:?}: unknown scheme {other:?} (use opticache, node or redis)")),
        }
    }
}

/// `HOST:PORT` with a non-empty host and a port in 1..=65535.
fn check_host_port(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else { return Err("is not HOST:PORT".into()) };
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err("has no valid host".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("has no valid port ({port:?} is not in 1..=65535)")),
    }
}

/// One request of the workload, with the keys already named and the values
/// already made (so that making them is not timed).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Read { key: Bytes, transfer: Transfer },
    Write { key: Bytes, value: Bytes, transfer: Transfer },
    Update { key: Bytes, value: Bytes },
    Delete { key: Bytes },
    BatchRead { keys: Vec<Bytes> },
    BatchWrite { entries: Vec<(Bytes, Bytes)> },
}

/// A target's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A read: the value, or `None` on a miss.
    Value(Option<Bytes>),
    /// A batch read: one result per key, in request order.
    Values(Vec<Option<Bytes>>),
    /// A write, batch write, update or delete was applied.
    Done,
    /// An update or a delete found no value under the key.
    Absent,
}

/// A failed call, by kind (a gRPC code name like `UNAVAILABLE`, `timeout`,
/// `protocol`, `redis:IoError`, ...) and the target's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// What the report groups errors by.
    pub kind: String,
    /// The first of these is kept per kind, as an example.
    pub message: String,
}

impl OpError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        OpError { kind: kind.into(), message: message.into() }
    }

    /// A reply the target's contract does not allow.
    pub fn protocol(message: impl Into<String>) -> Self {
        OpError::new("protocol", message)
    }
}

/// Makes connections to one target.
pub trait Connector: Send + Sync + 'static {
    /// One client task's connection.
    type Conn: Connection;

    /// Opens one connection; fails fast, naming the target, if it is
    /// unreachable.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn>> + Send;
}

/// One client task's connection to the target.
pub trait Connection: Send + 'static {
    /// Sends one request and waits for its answer. The driver bounds the
    /// wait with `--timeout`.
    fn call(&mut self, request: Request) -> impl Future<Output = Result<Reply, OpError>> + Send;
}

/// The three real targets behind one type, so the driver is compiled once
/// for them.
#[derive(Debug)]
pub enum AnyConnector {
    OptiCache(opticache::OptiCacheConnector),
    Node(node::NodeConnector),
    /// Boxed: redis-rs's client and config are several times the others' size.
    Redis(Box<redis::RedisConnector>),
}

/// A connection of any real target.
#[derive(Debug)]
pub enum AnyConnection {
    OptiCache(opticache::OptiCacheConnection),
    Node(node::NodeConnection),
    Redis(redis::RedisConnection),
}

impl AnyConnector {
    /// The connector for `spec`. For the cluster this probes the
    /// coordinators once (ClusterStatus), since its client connects lazily.
    pub async fn new(spec: &TargetSpec, namespace: &str, timeout_ms: u64, access: &Access) -> Result<Self> {
        Ok(match spec {
            TargetSpec::OptiCache { coordinators } => AnyConnector::OptiCache(
                opticache::OptiCacheConnector::new(coordinators.clone(), namespace, timeout_ms, access).await?,
            ),
            TargetSpec::Node { address } => AnyConnector::Node(node::NodeConnector::new(address, namespace, access)?),
            TargetSpec::Redis { address } => {
                AnyConnector::Redis(Box::new(redis::RedisConnector::new(address, namespace, timeout_ms)?))
            }
        })
    }
}

impl Connector for AnyConnector {
    type Conn = AnyConnection;

    async fn connect(&self) -> Result<AnyConnection> {
        Ok(match self {
            AnyConnector::OptiCache(c) => AnyConnection::OptiCache(c.connect().await?),
            AnyConnector::Node(c) => AnyConnection::Node(c.connect().await?),
            AnyConnector::Redis(c) => AnyConnection::Redis(c.connect().await?),
        })
    }
}

impl Connection for AnyConnection {
    async fn call(&mut self, request: Request) -> Result<Reply, OpError> {
        match self {
            AnyConnection::OptiCache(c) => c.call(request).await,
            AnyConnection::Node(c) => c.call(request).await,
            AnyConnection::Redis(c) => c.call(request).await,
        }
    }
}

/// The SCREAMING_CASE name of a gRPC code, as the API's status table writes
/// it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Appends every chunk of a streamed read, refusing more than the stream
/// announced or than [`STREAM_VALUE_BYTES_MAX`].
pub(crate) struct Collector {
    buf: Vec<u8>,
    total: u64,
}

impl Collector {
    pub(crate) fn new(total: u64) -> Result<Self, OpError> {
        if total > STREAM_VALUE_BYTES_MAX {
            return Err(OpError::protocol(format!(
                "stream announces {total} bytes, over loadgen's {STREAM_VALUE_BYTES_MAX}-byte limit"
            )));
        }
        // `total` is at most 1 GiB here, so it fits in usize on 64-bit hosts.
        Ok(Collector { buf: Vec::with_capacity(usize::try_from(total).unwrap_or(0)), total })
    }

    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), OpError> {
        if self.buf.len() as u64 + data.len() as u64 > self.total {
            return Err(OpError::protocol(format!("stream sent more than the {} bytes it announced", self.total)));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<Bytes, OpError> {
        if self.buf.len() as u64 != self.total {
            return Err(OpError::protocol(format!(
                "stream ended after {} of the {} bytes it announced",
                self.buf.len(),
                self.total
            )));
        }
        Ok(Bytes::from(self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for text in ["opticache://127.0.0.1:50051,127.0.0.1:50052", "node://localhost:6001", "redis://10.0.0.1:6379"] {
            let spec: TargetSpec = text.parse().expect(text);
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "opticache://a:1".parse::<TargetSpec>(),
            Ok(TargetSpec::OptiCache { coordinators: vec!["a:1".into()] })
        );
        assert_eq!("node://[::1]:6001".parse::<TargetSpec>(), Ok(TargetSpec::Node { address: "[::1]:6001".into() }));
    }

    #[test]
    fn bad_targets_say_why() {
        for (bad, why) in [
            ("127.0.0.1:6001", "no scheme"),
            ("http://127.0.0.1:6001", "unknown scheme \"http\""),
            ("node://127.0.0.1", "not HOST:PORT"),
            ("node://127.0.0.1:0", "no valid port"),
            ("node://127.0.0.1:70000", "no valid port"),
            ("node://:6001", "no valid host"),
            ("node://a:1,b:2", "one HOST:PORT"),
            ("redis://a:1,b:2", "one HOST:PORT"),
            ("opticache://a:1,", "not HOST:PORT"),
            ("opticache://", "not HOST:PORT"),
        ] {
            let err = bad.parse::<TargetSpec>().expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err:?} should say {why:?}");
        }
    }

    #[test]
    fn value_limits_per_target_and_transfer() {
        let node = TargetSpec::Node { address: "a:1".into() };
        let redis = TargetSpec::Redis { address: "a:1".into() };
        assert_eq!(node.value_bytes_max(Transfer::Unary), 64 * MIB);
        assert_eq!(node.value_bytes_max(Transfer::Stream), GIB);
        assert_eq!(redis.value_bytes_max(Transfer::Unary), 512 * MIB);
        assert!(node.can_stream() && !redis.can_stream());
    }

    #[test]
    fn a_collector_takes_exactly_the_announced_bytes() {
        let mut c = Collector::new(4).expect("small");
        c.push(b"ab").expect("fits");
        c.push(b"cd").expect("fits");
        assert_eq!(c.finish().expect("complete"), Bytes::from_static(b"abcd"));
        let mut over = Collector::new(3).expect("small");
        assert_eq!(over.push(b"abcd").expect_err("too long").kind, "protocol");
        let mut short = Collector::new(3).expect("small");
        short.push(b"ab").expect("fits");
        assert_eq!(short.finish().expect_err("short").kind, "protocol");
        assert!(Collector::new(STREAM_VALUE_BYTES_MAX + 1).is_err());
    }
}
