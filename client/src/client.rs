//! [`Client`]: typed calls of `opticache.v1` with fail-over between
//! coordinators, retries and deadlines.
//!
//! Every call runs through [`Client::call`], which picks the coordinator that
//! answered last, runs one attempt under its deadline, and on a fail-over
//! failure moves to the next coordinator if [`retry`](crate::retry) says the
//! call may be repeated. The methods only build requests and read answers.
//!
//! Invariants:
//! - Construction never touches the network: channels connect lazily, on the
//!   first call, so a coordinator that is down does not fail `connect`.
//! - Exactly one attempt is in flight per call; a repeated attempt starts only
//!   after the previous one has ended (or was dropped at its deadline).
//! - The coordinator that answered last, success or not, is tried first by
//!   the next call: a fail-over costs one failed attempt, not one per call.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opticache_proto::v1::opti_cache_client::OptiCacheClient;
use opticache_proto::v1::{
    BatchReadRequest, BatchWriteRequest, ClusterStatusRequest, DeleteRequest, KeyValue, ReadRequest, UpdateRequest,
    WriteChunk, WriteRequest,
};
use opticache_security::tls::uri;
use opticache_security::{AuthedChannel, BearerToken, ClientTls};
use prost::Message;
use tokio::io::AsyncRead;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Response, Status};

use crate::config::ClientConfig;
use crate::error::{map_status, ClientError, Result};
use crate::limits::{CONNECTION_WINDOW_BYTES, MESSAGE_BYTES_MAX, STREAM_WINDOW_BYTES, TTL_MS_MAX};
use crate::retry::{self, AttemptFailure, CallKind, Failure, RetryPolicy, Stop};
use crate::status::ClusterStatus;
use crate::stream::{upload_body, ChunkSource, ReadStream, UploadState};

/// A stored value and the version the cluster gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes as written.
    pub value: Bytes,
    /// The version of the write that stored them.
    pub version: u64,
}

/// A handle on the cluster. Cheap to clone; clones share connections and the
/// memory of which coordinator answered last.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    coordinators: Vec<Coordinator>,
    /// Index of the coordinator that answered last: where the next call
    /// starts, so that after a fail-over calls stay on the one that works.
    preferred: AtomicUsize,
    policy: RetryPolicy,
}

struct Coordinator {
    address: String,
    rpc: OptiCacheClient<AuthedChannel>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("coordinators", &self.coordinators().collect::<Vec<_>>())
            .field("preferred", &self.inner.preferred.load(Ordering::Relaxed))
            .field("policy", &self.inner.policy)
            .finish()
    }
}

/// What one attempt gets to work with.
pub(crate) struct Attempt {
    /// The coordinator's gRPC client (a clone: calls need `&mut`).
    pub rpc: OptiCacheClient<AuthedChannel>,
    /// When this attempt must have an answer.
    pub deadline: Instant,
    /// Longest a stream may go without progress.
    pub idle: Duration,
}

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// gRPC failed: maybe another coordinator will do.
    Status {
        status: Status,
        /// Whether a stream had handed data to gRPC (it cannot be replayed).
        data_sent: bool,
    },
    /// The client itself failed (bad input, contract broken): final.
    Local(ClientError),
}

impl From<Status> for AttemptError {
    fn from(status: Status) -> Self {
        AttemptError::Status { status, data_sent: false }
    }
}

impl Client {
    /// A client for the coordinators in `config`. Connects lazily: nothing
    /// is dialled until the first call, so a coordinator that is down does
    /// not fail construction. Async because the channels start their
    /// background tasks on the current Tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let tls = match &config.tls_ca_cert {
            Some(path) => Some(ClientTls::trusting(path).map_err(|e| ClientError::InvalidConfig(e.to_string()))?),
            None => None,
        };
        let token = match &config.token {
            Some(t) => BearerToken::new(t.expose()).map_err(ClientError::InvalidConfig)?,
            None => BearerToken::none(),
        };
        let coordinators = config
            .coordinators
            .iter()
            .map(|address| {
                let channel = endpoint(address, connect_timeout, tls.as_ref())?.connect_lazy();
                let rpc = OptiCacheClient::new(InterceptedService::new(channel, token.clone()))
                    .max_decoding_message_size(MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(MESSAGE_BYTES_MAX);
                Ok(Coordinator { address: address.clone(), rpc })
            })
            .collect::<Result<Vec<_>>>()?;
        let policy = config.retry_policy();
        Ok(Self { inner: Arc::new(Inner { coordinators, preferred: AtomicUsize::new(0), policy }) })
    }

    /// The configured coordinator addresses, in fail-over order.
    pub fn coordinators(&self) -> impl Iterator<Item = &str> {
        self.inner.coordinators.iter().map(|c| c.address.as_str())
    }

    /// Stores `value` under `key` (WriteCache) and returns its version.
    /// `ttl`: `None` never expires. The value must fit in one message
    /// ([`MESSAGE_BYTES_MAX`]); use [`Client::put_stream`] beyond.
    pub async fn put(
        &self,
        namespace: &str,
        key: impl Into<Bytes>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        let msg = WriteRequest { namespace: namespace.to_owned(), key: key.into(), value, ttl_ms: ttl_ms(ttl)? };
        check_size("WriteCache", &msg)?;
        self.call(CallKind::Idempotent, |mut a| {
            let msg = msg.clone();
            async move { unary(a.deadline, a.rpc.write_cache(request(msg, a.deadline))).await.map(|r| r.version) }
        })
        .await
    }

    /// Reads `key` (ReadCache); `None` on a miss.
    pub async fn get(&self, namespace: &str, key: impl Into<Bytes>) -> Result<Option<Value>> {
        let msg = ReadRequest { namespace: namespace.to_owned(), key: key.into() };
        let found = self
            .call(CallKind::Idempotent, |mut a| {
                let msg = msg.clone();
                async move { unary(a.deadline, a.rpc.read_cache(request(msg, a.deadline))).await }
            })
            .await?;
        Ok(found.found.then_some(Value { value: found.value, version: found.version }))
    }

    /// Replaces the value of an existing `key` (UpdateCache) and returns the
    /// new version. `expected_version`: `None` replaces any version, `Some(v)`
    /// only version `v` ([`ClientError::VersionConflict`] otherwise). A
    /// missing key is [`ClientError::NotFound`].
    pub async fn update(
        &self,
        namespace: &str,
        key: impl Into<Bytes>,
        value: Bytes,
        expected_version: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        if expected_version == Some(0) {
            // 0 means "any version" on the wire; versions start at 1.
            return Err(ClientError::InvalidArgument(
                "expected version 0 does not exist; pass None to accept any version".into(),
            ));
        }
        let msg = UpdateRequest {
            namespace: namespace.to_owned(),
            key: key.into(),
            value,
            expected_version: expected_version.unwrap_or(0),
            ttl_ms: ttl_ms(ttl)?,
        };
        check_size("UpdateCache", &msg)?;
        self.call(CallKind::CompareAndSet, |mut a| {
            let msg = msg.clone();
            async move { unary(a.deadline, a.rpc.update_cache(request(msg, a.deadline))).await.map(|r| r.version) }
        })
        .await
    }

    /// Deletes `key` (DeleteCache): `true` if it existed. After a retried
    /// attempt the answer may be `false` although this call deleted it.
    pub async fn delete(&self, namespace: &str, key: impl Into<Bytes>) -> Result<bool> {
        let msg = DeleteRequest { namespace: namespace.to_owned(), key: key.into() };
        self.call(CallKind::Idempotent, |mut a| {
            let msg = msg.clone();
            async move { unary(a.deadline, a.rpc.delete_cache(request(msg, a.deadline))).await.map(|r| r.deleted) }
        })
        .await
    }

    /// Stores many `(key, value, ttl)` entries in one call (BatchWrite);
    /// versions in entry order.
    pub async fn put_many(&self, namespace: &str, entries: Vec<(Bytes, Bytes, Option<Duration>)>) -> Result<Vec<u64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let count = entries.len();
        let entries = entries
            .into_iter()
            .map(|(key, value, ttl)| Ok(KeyValue { key, value, ttl_ms: ttl_ms(ttl)? }))
            .collect::<Result<Vec<_>>>()?;
        let msg = BatchWriteRequest { namespace: namespace.to_owned(), entries };
        check_size("BatchWrite", &msg)?;
        let versions = self
            .call(CallKind::Idempotent, |mut a| {
                let msg = msg.clone();
                async move { unary(a.deadline, a.rpc.batch_write(request(msg, a.deadline))).await.map(|r| r.versions) }
            })
            .await?;
        if versions.len() != count {
            return Err(ClientError::Protocol(format!(
                "BatchWrite of {count} entries returned {} versions",
                versions.len()
            )));
        }
        Ok(versions)
    }

    /// Reads many keys in one call (BatchRead); results in key order, `None`
    /// for a miss.
    pub async fn get_many<K: Into<Bytes>>(
        &self,
        namespace: &str,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Value>>> {
        let keys: Vec<Bytes> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let count = keys.len();
        let msg = BatchReadRequest { namespace: namespace.to_owned(), keys };
        check_size("BatchRead", &msg)?;
        let results = self
            .call(CallKind::Idempotent, |mut a| {
                let msg = msg.clone();
                async move { unary(a.deadline, a.rpc.batch_read(request(msg, a.deadline))).await.map(|r| r.results) }
            })
            .await?;
        if results.len() != count {
            return Err(ClientError::Protocol(format!("BatchRead of {count} keys returned {} results", results.len())));
        }
        Ok(results.into_iter().map(|r| r.found.then_some(Value { value: r.value, version: r.version })).collect())
    }

    /// Stores a value of exactly `total_size` bytes read from `data`
    /// (WriteStream), in chunks of at most
    /// [`STREAM_CHUNK_BYTES`](crate::STREAM_CHUNK_BYTES): memory stays one
    /// chunk whatever the size. A `data` shorter or longer than `total_size`
    /// fails with [`ClientError::InvalidArgument`] and stores nothing.
    ///
    /// Retried on another coordinator only if the failure came before the
    /// first chunk was sent. Once data flows there is no overall deadline,
    /// only a stall deadline: the stream fails when no chunk moves for the
    /// configured timeout.
    pub async fn put_stream<R>(
        &self,
        namespace: &str,
        key: impl Into<Bytes>,
        total_size: u64,
        ttl: Option<Duration>,
        data: R,
    ) -> Result<u64>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let ttl_ms = ttl_ms(ttl)?;
        let mut source = ChunkSource::new(data, total_size);
        // The first chunk carries the header, so it is read before the first
        // attempt and kept for a repeat (a cheap `Bytes` clone).
        let first_data = source.next_chunk().await?.unwrap_or_default();
        let first =
            WriteChunk { namespace: namespace.to_owned(), key: key.into(), ttl_ms, total_size, data: first_data };
        let source = Arc::new(Mutex::new(source));
        self.call(CallKind::Stream, |mut a| {
            let first = first.clone();
            let source = Arc::clone(&source);
            async move {
                let state = UploadState::new();
                let body = upload_body(first, source, Arc::clone(&state));
                let outcome = tokio::select! {
                    answer = a.rpc.write_stream(body) => Some(answer),
                    () = state.stalled(a.idle) => None,
                };
                if let Some(failure) = state.take_failure() {
                    return Err(AttemptError::Local(failure));
                }
                let data_sent = state.data_sent.load(Ordering::Relaxed);
                match outcome {
                    Some(Ok(answer)) => Ok(answer.into_inner().version),
                    Some(Err(status)) => Err(AttemptError::Status { status, data_sent }),
                    None => {
                        let status = Status::deadline_exceeded(format!(
                            "WriteStream made no progress for {} ms",
                            a.idle.as_millis()
                        ));
                        Err(AttemptError::Status { status, data_sent })
                    }
                }
            }
        })
        .await
    }

    /// Opens `key` for reading chunk by chunk (ReadStream); `None` on a miss.
    /// Opening (up to the first chunk, which carries the version and size)
    /// is retried like any read; the chunks after it are not.
    pub async fn get_stream(&self, namespace: &str, key: impl Into<Bytes>) -> Result<Option<ReadStream>> {
        let msg = ReadRequest { namespace: namespace.to_owned(), key: key.into() };
        self.call(CallKind::Idempotent, |mut a| {
            let msg = msg.clone();
            async move {
                // No grpc-timeout header: it would cut off a long transfer.
                // The attempt deadline covers the opening only.
                let open = async {
                    let mut chunks = a.rpc.read_stream(Request::new(msg)).await?.into_inner();
                    let first = chunks.message().await?;
                    Ok::<_, Status>((chunks, first))
                };
                match tokio::time::timeout_at(a.deadline, open).await {
                    Err(_elapsed) => Err(attempt_timed_out().into()),
                    Ok(Err(status)) if is_miss(&status) => Ok(None),
                    Ok(Err(status)) => Err(status.into()),
                    Ok(Ok((_, None))) => Err(AttemptError::Local(ClientError::Protocol(
                        "ReadStream ended before its first chunk".into(),
                    ))),
                    Ok(Ok((chunks, Some(first)))) => {
                        ReadStream::new(first, chunks, a.idle).map(Some).map_err(AttemptError::Local)
                    }
                }
            }
        })
        .await
    }

    /// Who is primary, at which epoch, and the state of every cache node.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        self.call(CallKind::Idempotent, |mut a| async move {
            unary(a.deadline, a.rpc.cluster_status(request(ClusterStatusRequest {}, a.deadline))).await
        })
        .await
        .map(ClusterStatus::from)
    }

    /// Runs `op` against the coordinators until it succeeds, gets an answer
    /// that is not a fail-over reason, or the retry policy says stop.
    pub(crate) async fn call<T, F, Fut>(&self, kind: CallKind, mut op: F) -> Result<T>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let inner = &*self.inner;
        let policy = inner.policy;
        let call_deadline = policy.call_deadline(Instant::now());
        let first = inner.preferred.load(Ordering::Relaxed);
        let mut failures: Vec<AttemptFailure> = Vec::new();
        let mut attempt: u32 = 0;
        loop {
            let index = retry::coordinator_for(first, attempt, inner.coordinators.len());
            let coordinator = &inner.coordinators[index];
            let Some(deadline) = policy.attempt_deadline(Instant::now(), call_deadline) else {
                return Err(retry::give_up(&failures, Stop::Deadline));
            };
            let attempt_of = Attempt { rpc: coordinator.rpc.clone(), deadline, idle: policy.attempt_timeout };
            let (status, data_sent) = match op(attempt_of).await {
                Ok(value) => {
                    inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(AttemptError::Local(err)) => return Err(err),
                Err(AttemptError::Status { status, data_sent }) => (status, data_sent),
            };
            let failed = AttemptFailure::new(&coordinator.address, &status);
            if failed.failure == Failure::Answer {
                // The coordinator is alive and this is the cluster's answer.
                inner.preferred.store(index, Ordering::Relaxed);
                return Err(map_status(&status));
            }
            let again = retry::should_retry(kind, failed.failure, data_sent);
            tracing::debug!(coordinator = %coordinator.address, attempt, ?failed.failure, detail = %failed.detail, again, "attempt failed");
            failures.push(failed);
            if !again {
                return Err(retry::give_up(&failures, Stop::Unsafe(kind)));
            }
            attempt += 1;
            if attempt >= policy.attempts {
                return Err(retry::give_up(&failures, Stop::Exhausted));
            }
            match policy.pause_before(attempt, Instant::now(), call_deadline) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(retry::give_up(&failures, Stop::Deadline)),
            }
        }
    }
}

/// The endpoint of one coordinator, tuned for values from 100 bytes to
/// hundreds of MiB.
fn endpoint(address: &str, connect_timeout: Duration, tls: Option<&ClientTls>) -> Result<Endpoint> {
    let bad = |why: String| ClientError::InvalidConfig(format!("coordinator address {address:?}: {why}"));
    let endpoint =
        Endpoint::from_shared(uri(address, tls.is_some())).map_err(|e| bad(format!("not host:port ({e})")))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(bad("no port (expected host:port)".into()));
    }
    let endpoint = match tls {
        Some(tls) => endpoint.tls_config(tls.config()).map_err(|e| bad(format!("TLS: {e}")))?,
        None => endpoint,
    };
    Ok(endpoint
        // Small requests (a 100-byte embedding row) must not wait for Nagle.
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .connect_timeout(connect_timeout))
}

/// The wire form of a TTL: 0 for none; sub-millisecond TTLs round up, since
/// rounding down to 0 would turn "expire soon" into "never expire".
pub(crate) fn ttl_ms(ttl: Option<Duration>) -> Result<u64> {
    let Some(ttl) = ttl else { return Ok(0) };
    if ttl.is_zero() {
        return Err(ClientError::InvalidArgument("a TTL of zero expires at once; pass None to never expire".into()));
    }
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    match u64::try_from(ms) {
        Ok(ms) if ms <= TTL_MS_MAX => Ok(ms),
        _ => Err(ClientError::InvalidArgument(format!("TTL of {ms} ms is over the limit of {TTL_MS_MAX} ms"))),
    }
}

/// Refuses a request gRPC would refuse to encode, with the API's code for it
/// instead of gRPC's OUT_OF_RANGE.
fn check_size(rpc: &str, msg: &impl Message) -> Result<()> {
    let len = msg.encoded_len();
    if len > MESSAGE_BYTES_MAX {
        return Err(ClientError::TooLarge(format!(
            "{rpc} request of {len} bytes is over the {MESSAGE_BYTES_MAX}-byte message limit; stream large values"
        )));
    }
    Ok(())
}

/// A request that tells the coordinator when we stop waiting, so it can
/// drop work nobody will read.
fn request<M>(msg: M, deadline: Instant) -> Request<M> {
    let mut request = Request::new(msg);
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}

/// Runs one unary attempt under its deadline.
async fn unary<T>(
    deadline: Instant,
    call: impl Future<Output = std::result::Result<Response<T>, Status>>,
) -> Result<T, AttemptError> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(answer) => answer.map(Response::into_inner).map_err(AttemptError::from),
        Err(_elapsed) => Err(attempt_timed_out().into()),
    }
}

fn attempt_timed_out() -> Status {
    Status::deadline_exceeded("the attempt's deadline passed before the coordinator answered")
}

/// NOT_FOUND from the coordinator (not a local error) on a read: a miss.
fn is_miss(status: &Status) -> bool {
    status.code() == Code::NotFound && retry::classify(status) == Failure::Answer
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// Addresses nothing listens on: bound to learn a free port, then closed.
    fn closed_ports(n: usize) -> Vec<String> {
        let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        listeners.iter().map(|l| l.local_addr().expect("addr").to_string()).collect()
    }

    fn config(coordinators: Vec<String>, retries: u32) -> ClientConfig {
        ClientConfig {
            coordinators,
            timeout_ms: 1_000,
            retries,
            connect_timeout_ms: 500,
            deadline_ms: None,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn two_unreachable_coordinators_fail_with_unavailable_naming_both_within_the_deadline() {
        let addresses = closed_ports(2);
        let cfg = config(addresses.clone(), 3);
        let deadline = cfg.retry_policy().deadline;
        let client = Client::connect(cfg).await.expect("lazy connect never fails on a dead address");
        let started = std::time::Instant::now();
        let err = client.get("ns", "k").await.expect_err("nothing listens");
        let elapsed = started.elapsed();
        let ClientError::Unavailable(message) = &err else { panic!("expected Unavailable, got {err:?}") };
        for address in &addresses {
            assert!(message.contains(address.as_str()), "{message:?} names {address}");
        }
        // Three attempts: a, b, a.
        assert_eq!(message.matches(addresses[0].as_str()).count(), 2, "{message}");
        assert_eq!(message.matches(addresses[1].as_str()).count(), 1, "{message}");
        assert!(elapsed < deadline, "took {elapsed:?}, deadline {deadline:?}");
    }

    #[tokio::test]
    async fn an_update_fails_over_after_connect_errors_since_nothing_was_sent() {
        let addresses = closed_ports(2);
        let client = Client::connect(config(addresses.clone(), 2)).await.expect("connect");
        let err = client.update("", "k", Bytes::from_static(b"v"), None, None).await.expect_err("nothing listens");
        let ClientError::Unavailable(message) = &err else { panic!("expected Unavailable, got {err:?}") };
        assert!(message.contains(&addresses[0]) && message.contains(&addresses[1]), "{message}");
        assert!(!message.contains("not retried"), "connect errors are retried: {message}");
    }

    #[tokio::test]
    async fn bad_addresses_are_configuration_errors() {
        for bad in ["127.0.0.1", "no spaces:1 2", ""] {
            let err = Client::connect(ClientConfig::new([bad])).await.expect_err(bad);
            assert!(matches!(err, ClientError::InvalidConfig(_)), "{bad:?} -> {err:?}");
        }
        let ok = Client::connect(ClientConfig::new(["http://localhost:7", "10.1.2.3:50051"])).await.expect("valid");
        assert_eq!(ok.coordinators().collect::<Vec<_>>(), vec!["http://localhost:7", "10.1.2.3:50051"]);
    }

    #[test]
    fn ttl_goes_on_the_wire_in_whole_milliseconds_rounded_up() {
        assert_eq!(ttl_ms(None).expect("none"), 0);
        assert_eq!(ttl_ms(Some(Duration::from_nanos(1))).expect("tiny"), 1);
        assert_eq!(ttl_ms(Some(Duration::from_micros(1_500))).expect("1.5 ms"), 2);
        assert_eq!(ttl_ms(Some(Duration::from_secs(10))).expect("10 s"), 10_000);
        assert_eq!(ttl_ms(Some(Duration::from_millis(TTL_MS_MAX))).expect("max"), TTL_MS_MAX);
        assert!(matches!(ttl_ms(Some(Duration::ZERO)), Err(ClientError::InvalidArgument(_))));
        assert!(matches!(ttl_ms(Some(Duration::from_millis(TTL_MS_MAX + 1))), Err(ClientError::InvalidArgument(_))));
        assert!(matches!(ttl_ms(Some(Duration::MAX)), Err(ClientError::InvalidArgument(_))));
    }

    #[test]
    fn over_limit_requests_are_too_large_before_sending() {
        let at_limit = WriteRequest { value: Bytes::from(vec![0u8; MESSAGE_BYTES_MAX - 5]), ..Default::default() };
        // Field tag (1 byte) + length varint (4 bytes) + value.
        assert_eq!(at_limit.encoded_len(), MESSAGE_BYTES_MAX);
        check_size("WriteCache", &at_limit).expect("at the limit");
        let over = WriteRequest { key: Bytes::from_static(b"k"), ..at_limit };
        assert!(matches!(check_size("WriteCache", &over), Err(ClientError::TooLarge(_))));
    }

    #[tokio::test]
    async fn expected_version_zero_is_refused_locally() {
        let client = Client::connect(ClientConfig::new(closed_ports(1))).await.expect("connect");
        let err = client.update("", "k", Bytes::new(), Some(0), None).await.expect_err("zero");
        assert!(matches!(err, ClientError::InvalidArgument(_)), "{err:?}");
    }

    // The retry loop, driven by scripted attempts instead of a server: each
    // attempt records which coordinator it went to and fails as scripted.

    struct Script {
        outcomes: StdMutex<Vec<std::result::Result<u64, AttemptError>>>,
        /// Each attempt's deadline: its start plus the attempt timeout.
        seen: StdMutex<Vec<Instant>>,
    }

    async fn scripted(
        client: &Client,
        kind: CallKind,
        outcomes: Vec<std::result::Result<u64, AttemptError>>,
    ) -> (Result<u64>, Vec<Instant>) {
        let script = Script { outcomes: StdMutex::new(outcomes), seen: StdMutex::new(Vec::new()) };
        let result = client
            .call(kind, |a| {
                script.seen.lock().expect("lock").push(a.deadline);
                let next = script.outcomes.lock().expect("lock").remove(0);
                async move { next }
            })
            .await;
        (result, script.seen.into_inner().expect("lock"))
    }

    fn connect_status() -> AttemptError {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Status::from_error(Box::new(tonic::ConnectError(Box::new(io)))).into()
    }

    #[tokio::test(start_paused = true)]
    async fn failover_moves_on_and_the_next_call_starts_where_the_last_answer_came_from() {
        let client = Client::connect(config(vec!["a:1".into(), "b:2".into()], 3)).await.expect("connect");
        let (result, attempts) =
            scripted(&client, CallKind::Idempotent, vec![Err(Status::unavailable("down").into()), Ok(7)]).await;
        assert_eq!(result.expect("second attempt answers"), 7);
        assert_eq!(attempts.len(), 2);
        // The pause between the attempts is the first backoff step.
        assert_eq!(attempts[1] - attempts[0], Duration::from_millis(retry::BACKOFF_INITIAL_MS));
        assert_eq!(client.inner.preferred.load(Ordering::Relaxed), 1, "b answered");
        let (result, attempts) = scripted(&client, CallKind::Idempotent, vec![Ok(8)]).await;
        assert_eq!((result.expect("answer"), attempts.len()), (8, 1));
        assert_eq!(client.inner.preferred.load(Ordering::Relaxed), 1, "still b");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_returned_without_retrying() {
        let client = Client::connect(config(vec!["a:1".into(), "b:2".into()], 3)).await.expect("connect");
        let (result, attempts) =
            scripted(&client, CallKind::Idempotent, vec![Err(Status::failed_precondition("stale").into())]).await;
        assert!(matches!(result, Err(ClientError::VersionConflict { .. })), "{result:?}");
        assert_eq!(attempts.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_is_not_repeated_after_it_may_have_been_applied() {
        let client = Client::connect(config(vec!["a:1".into(), "b:2".into()], 3)).await.expect("connect");
        let (result, attempts) =
            scripted(&client, CallKind::CompareAndSet, vec![Err(Status::unavailable("no quorum").into())]).await;
        let Err(ClientError::Unavailable(message)) = result else { panic!("{result:?}") };
        assert_eq!(
            message,
            "no coordinator could serve the call; tried a:1 (no quorum); \
             not retried: the update may already have been applied"
        );
        assert_eq!(attempts.len(), 1);
        let (result, attempts) = scripted(&client, CallKind::CompareAndSet, vec![Err(connect_status()), Ok(3)]).await;
        assert_eq!((result.expect("retried after connect error"), attempts.len()), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_not_repeated_once_data_was_sent() {
        let client = Client::connect(config(vec!["a:1".into(), "b:2".into()], 3)).await.expect("connect");
        let sent = AttemptError::Status { status: Status::unavailable("reset"), data_sent: true };
        let (result, attempts) = scripted(&client, CallKind::Stream, vec![Err(sent)]).await;
        assert!(matches!(result, Err(ClientError::Unavailable(_))), "{result:?}");
        assert_eq!(attempts.len(), 1);
        let unsent = AttemptError::Status { status: Status::unavailable("busy"), data_sent: false };
        let (result, attempts) = scripted(&client, CallKind::Stream, vec![Err(unsent), Ok(4)]).await;
        assert_eq!((result.expect("retried before data"), attempts.len()), (4, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn local_errors_end_the_call_at_once() {
        let client = Client::connect(config(vec!["a:1".into(), "b:2".into()], 3)).await.expect("connect");
        let local = AttemptError::Local(ClientError::Protocol("bad".into()));
        let (result, attempts) = scripted(&client, CallKind::Idempotent, vec![Err(local)]).await;
        assert!(matches!(result, Err(ClientError::Protocol(_))), "{result:?}");
        assert_eq!(attempts.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_overall_deadline_cuts_the_last_attempt_short_and_stops_retrying() {
        let cfg = ClientConfig { deadline_ms: Some(1_500), ..config(vec!["a:1".into(), "b:2".into()], 3) };
        let client = Client::connect(cfg).await.expect("connect");
        let started = Instant::now();
        let result = client
            .call(CallKind::Idempotent, |a| async move {
                // Each attempt hangs until its deadline.
                tokio::time::sleep_until(a.deadline).await;
                Err::<(), _>(attempt_timed_out().into())
            })
            .await;
        assert!(matches!(result, Err(ClientError::DeadlineExceeded)), "{result:?}");
        // 1000 ms attempt, 25 ms pause, then the rest up to 1500 ms; no third.
        assert_eq!(started.elapsed(), Duration::from_millis(1_500));
    }
}
