//! A node's life: start-up checks, parallel shard recovery behind a
//! NOT_SERVING health status, serving, and graceful shutdown.
//!
//! Order and why:
//! 1. memlock, data dir (created, writable, locked, shard count), both ports
//!    bound: every start-up error a user can fix is reported before any
//!    thread starts, each with what to do about it;
//! 2. the gRPC server starts at once, with health NOT_SERVING and data calls
//!    answering UNAVAILABLE, while every shard recovers on its own thread;
//! 3. only when all shards are open do health and data calls turn SERVING:
//!    the node never serves a partial view;
//! 4. on SIGTERM/SIGINT: DRAINING (health NOT_SERVING, new data calls
//!    refused), the server stops accepting and in-flight calls finish (up to
//!    [`DRAIN_TIMEOUT`]), then each shard finishes its queue and closes its
//!    engine (flush, index checkpoint), and the process exits 0. A second
//!    signal exits at once: durability never depends on a clean stop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use opticache_common::process::{wait_true, watch_signals};
use opticache_common::SecurityConfig;
use opticache_engine::config::EngineConfig;
use opticache_engine::io::dma::check_memlock;
use opticache_proto::node::v1::node_server::NodeServer;
use opticache_proto::node::v1::ServingState;
use opticache_security::{SecurityError, ServerSecurity};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;
use tonic_health::ServingStatus;

use crate::core::NodeCore;
use crate::datadir::{DataDir, DataDirError};
use crate::error::is_over_message_limit;
use crate::service::{NodeService, BATCH_BYTES_MAX};
use crate::shard::{self, ShardError, ShardRequest, ShardSpec, StartedShard};

/// How long in-flight calls may take to finish after a stop signal before
/// the shards are closed anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Room above the largest value for the rest of a message (key, namespace,
/// framing of up to a batch's entries).
pub const MESSAGE_OVERHEAD_BYTES: usize = 2 << 20;
/// HTTP/2 flow-control windows: large enough that a 1 MiB value crosses
/// loopback without waiting for window updates.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
pub use opticache_common::process::EXIT_CODE_FORCED;

/// Everything a node runs with, resolved from the config file and flags.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub address: String,
    pub metrics_address: String,
    pub disk_path: PathBuf,
    /// Resolved: never 0.
    pub shards: u32,
    /// Pin shard i to CPU i (mod the CPU count).
    pub pin_shards: bool,
    pub engine: EngineConfig,
    /// TLS and the cluster token; default: off.
    pub security: SecurityConfig,
}

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeStartError {
    #[error("{0}")]
    Memlock(String),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot listen on {address} ({what}): {reason}")]
    Bind { address: String, what: &'static str, reason: String },
    #[error("{0} (io_uring must be available: Linux 5.8 or later, not disabled by seccomp or sysctl)")]
    Shard(#[from] ShardError),
    #[error("shard {0} stopped during recovery without saying why")]
    ShardVanished(u32),
    #[error("gRPC server: {0}")]
    Serve(String),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("closing shard {shard}: {reason}")]
    Close { shard: u32, reason: String },
}

/// Runs a node until a stop signal; returns once it has stopped cleanly.
pub async fn run(options: NodeOptions) -> Result<(), NodeStartError> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(watch_signals(stop_tx, "the next start recovers from the log"));
    run_until(options, stop).await
}

/// Like [`run`], stopping when `stop` turns true (tests and benches drive it).
pub async fn run_until(options: NodeOptions, mut stop: watch::Receiver<bool>) -> Result<(), NodeStartError> {
    check_memlock().map_err(|e| NodeStartError::Memlock(e.to_string()))?;
    let security = ServerSecurity::load(&options.security)?;
    let data_dir = DataDir::open(&options.disk_path, options.shards)?;
    let listener = bind(&options.address, "node API").await?;
    let metrics_listener = bind(&options.metrics_address, "metrics").await?;
    let local = listener.local_addr().map_err(|e| bind_error(&options.address, "node API", &e))?;
    let metrics_local =
        metrics_listener.local_addr().map_err(|e| bind_error(&options.metrics_address, "metrics", &e))?;
    // The bound addresses (a configured port 0 becomes a real one), which
    // tests and scripts read from this line.
    tracing::info!(
        address = %local,
        metrics = %metrics_local,
        disk_path = %options.disk_path.display(),
        shards = options.shards,
        node_id = %data_dir.node_id,
        "starting; shards recovering"
    );
    if let Ok(address) = options.address.parse() {
        opticache_security::warn_if_exposed(&address, &options.security, "node");
        opticache_security::warn_if_node_open(&address, &options.security);
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut started = Vec::new();
    for i in 0..options.shards {
        let spec = ShardSpec {
            shard: i,
            dir: shard::shard_dir(&data_dir.path, i),
            engine: options.engine.clone(),
            cpu: options.pin_shards.then_some(i as usize % cpus),
        };
        started.push(shard::start(spec)?);
    }
    let handles = started.iter().map(|s| s.handle.clone()).collect();
    let max_value_bytes = options.engine.max_value_bytes as u64;
    let core = Arc::new(NodeCore::new(data_dir.node_id.clone(), handles, max_value_bytes));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_not_serving::<NodeServer<NodeService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opticache_proto::NODE_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeStartError::Serve(e.to_string()))?;
    let message_limit = (options.engine.max_value_bytes).max(BATCH_BYTES_MAX as usize) + MESSAGE_OVERHEAD_BYTES;
    let node_service = MessageLimitCode(
        NodeServer::new(NodeService::new(core.clone()))
            .max_decoding_message_size(message_limit)
            .max_encoding_message_size(message_limit),
    );

    let (drained_tx, drained) = watch::channel(false);
    // The builder's tcp_nodelay applies only to listeners tonic binds itself;
    // ours is bound early (to report a port in use before start-up), so its
    // connections get TCP_NODELAY here. Without it, Nagle's algorithm and
    // delayed ACKs hold small responses back for ~40 ms.
    let incoming = futures_lite::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
        if let Ok(stream) = &conn {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        }
        conn
    });
    let server = security
        .server()?
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .layer(security.guard_layer())
        .add_service(health_service)
        .add_service(reflection)
        .add_service(node_service)
        .serve_with_incoming_shutdown(incoming, wait_true(drained));
    let server = tokio::spawn(server);
    let metrics = tokio::spawn(crate::metrics::serve(core.clone(), metrics_listener, wait_true(stop.clone())));

    // Recovery: every shard in parallel, on its own thread.
    let recovered = tokio::select! {
        r = wait_ready(&mut started) => r,
        _ = stop.wait_for(|s| *s) => {
            tracing::info!("stop signal during recovery");
            Ok(())
        }
    };
    let stopping_early = *stop.borrow();
    if let Err(e) = &recovered {
        tracing::error!(error = %e, "recovery failed; stopping");
    } else if !stopping_early {
        core.set_state(ServingState::Serving);
        health.set_service_status("", ServingStatus::Serving).await;
        health.set_serving::<NodeServer<NodeService>>().await;
        tracing::info!(address = %local, "serving");
        let _ = stop.wait_for(|s| *s).await;
    }

    // Drain.
    tracing::info!("stopping: draining in-flight calls");
    core.set_state(ServingState::Draining);
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_not_serving::<NodeServer<NodeService>>().await;
    let _ = drained_tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
        Err(_) => tracing::warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "in-flight calls did not finish in time"),
    }
    let _ = metrics.await;
    let closed = close_shards(&core, started).await;
    drop(data_dir);
    recovered?;
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Waits for every shard's engine to open; the first failure wins.
async fn wait_ready(started: &mut [StartedShard]) -> Result<(), NodeStartError> {
    let waits = started.iter_mut().map(|s| {
        let shard = s.handle.shard;
        let ready = &mut s.ready;
        async move {
            match ready.await {
                Ok(Ok(r)) => {
                    tracing::info!(
                        shard = r.shard,
                        clean = r.clean,
                        replayed_records = r.replayed_records,
                        keys = r.keys,
                        "shard ready"
                    );
                    Ok(())
                }
                Ok(Err(e)) => Err(NodeStartError::Shard(e)),
                Err(_) => Err(NodeStartError::ShardVanished(shard)),
            }
        }
    });
    for result in opticache_common::join::join_all(waits).await {
        result?;
    }
    Ok(())
}

/// Asks each shard to finish its queue and close its engine, then joins its thread.
async fn close_shards(core: &NodeCore, started: Vec<StartedShard>) -> Result<(), NodeStartError> {
    let mut first_error = None;
    for s in started {
        let shard = s.handle.shard;
        // A shard that failed to open has already ended: nothing answers.
        if let Ok(Err(e)) = core.call(&s.handle, |reply| ShardRequest::Shutdown { reply }).await {
            first_error.get_or_insert(NodeStartError::Close { shard, reason: e.to_string() });
        }
        let thread = s.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(NodeStartError::Close { shard, reason: e.to_string() });
            }
            Err(e) => {
                first_error.get_or_insert(NodeStartError::Close { shard, reason: e.to_string() });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn bind(address: &str, what: &'static str) -> Result<TcpListener, NodeStartError> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(address).await.map_err(|e| bind_error(address, what, &e))?.collect();
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let e =
        last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address"));
    Err(bind_error(address, what, &e))
}

fn bind_error(address: &str, what: &'static str, e: &std::io::Error) -> NodeStartError {
    let reason = if e.kind() == std::io::ErrorKind::AddrInUse {
        "the port is in use by another process".to_string()
    } else {
        e.to_string()
    };
    NodeStartError::Bind { address: address.to_string(), what, reason }
}

/// The node service, answering a request message over the gRPC message limit
/// with RESOURCE_EXHAUSTED.
///
/// Why: tonic refuses such a message with OUT_OF_RANGE before the handler
/// runs, but the contract (api.md) answers a value or batch over its limit
/// with RESOURCE_EXHAUSTED on every path, including when "gRPC itself"
/// rejects it; a coordinator passing the code through must not see another.
/// tonic puts the `Status` of such an answer in the response's extensions,
/// which is how this one is recognised; every other response passes as it is.
/// (Streamed chunks over the limit reach the handler: `StreamError::from_client`.)
#[derive(Clone, Debug)]
struct MessageLimitCode<S>(S);

impl<S: NamedService> NamedService for MessageLimitCode<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for MessageLimitCode<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match response.extensions().get::<Status>() {
                Some(s) if is_over_message_limit(s) => Status::resource_exhausted(s.message()).into_http(),
                _ => response,
            })
        })
    }
}
