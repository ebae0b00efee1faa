//! A coordinator's life: bind, first heartbeat round (health NOT_SERVING
//! until every node answered or missed once, so no request meets a cluster
//! where every node still counts as down), serve the public API, the peer
//! service, health and reflection; stop gracefully on SIGTERM/SIGINT (a
//! second signal exits at once).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use opticache_common::process::{wait_true, watch_signals};
use opticache_common::version::{VersionClock, ORIGIN_PRIMARY_COORDINATOR, ORIGIN_SECONDARY_COORDINATOR};
use opticache_common::{ClusterConfig, HostPort};
use opticache_proto::coordinator::v1::peer_server::PeerServer;
use opticache_proto::v1::opti_cache_server::OptiCacheServer;
use opticache_security::{SecurityError, ServerSecurity};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Code, Status};
use tonic_health::ServingStatus;

use crate::cluster::{Cluster, NODE_MESSAGE_BYTES_MAX};
use crate::failover::Failover;
use crate::service::CoordinatorService;

/// How long in-flight calls may take to finish after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub use opticache_common::process::EXIT_CODE_FORCED;

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordStartError {
    #[error("{file}: {address} is neither coordinator.primary nor coordinator.secondary")]
    NotACoordinator { file: String, address: String },
    #[error("cannot listen on {address}: {reason}")]
    Bind { address: String, reason: String },
    #[error("{0}")]
    Cluster(String),
    #[error("gRPC server: {0}")]
    Serve(String),
    #[error(transparent)]
    Security(#[from] SecurityError),
}

/// Where a coordinator serves metrics unless told: its port + this.
pub const METRICS_PORT_OFFSET: u16 = 1000;

/// The default metrics address of the coordinator at `address`.
pub fn default_metrics_address(address: &str) -> Option<String> {
    let hp: HostPort = address.parse().ok()?;
    let port = hp.port().checked_add(METRICS_PORT_OFFSET)?;
    Some(hp.with_port(port).to_string())
}

/// Runs the coordinator at `address` (one of the config's two) until a stop signal.
pub async fn run(config: ClusterConfig, address: String, metrics_address: String) -> Result<(), CoordStartError> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(watch_signals(stop_tx, "nothing is lost: the coordinator keeps no data"));
    run_until(config, address, metrics_address, stop).await
}

/// Like [`run`], stopping when `stop` turns true.
pub async fn run_until(
    config: ClusterConfig,
    address: String,
    metrics_address: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(), CoordStartError> {
    let primary = config.coordinator.primary.to_string();
    let secondary = config.coordinator.secondary.as_ref().map(HostPort::to_string);
    let configured_primary = address == primary;
    if !configured_primary && secondary.as_deref() != Some(address.as_str()) {
        return Err(CoordStartError::NotACoordinator { file: config.file.display().to_string(), address });
    }
    let peer_address = if configured_primary { secondary.clone() } else { Some(primary.clone()) };
    // Credentials are read before anything binds: a bad certificate or token file stops the start.
    let security = ServerSecurity::load(&config.security)?;
    let listener = TcpListener::bind(&address).await.map_err(|e| CoordStartError::Bind {
        address: address.clone(),
        reason: if e.kind() == std::io::ErrorKind::AddrInUse {
            "the port is in use by another process".into()
        } else {
            e.to_string()
        },
    })?;
    let local =
        listener.local_addr().map_err(|e| CoordStartError::Bind { address: address.clone(), reason: e.to_string() })?;
    let metrics_listener = TcpListener::bind(&metrics_address).await.map_err(|e| CoordStartError::Bind {
        address: metrics_address.clone(),
        reason: if e.kind() == std::io::ErrorKind::AddrInUse {
            "the metrics port is in use by another process".into()
        } else {
            e.to_string()
        },
    })?;
    let metrics_local = metrics_listener
        .local_addr()
        .map_err(|e| CoordStartError::Bind { address: metrics_address.clone(), reason: e.to_string() })?;

    let nodes: Vec<String> = config.cache_nodes.iter().map(|n| n.address.to_string()).collect();
    let link = security.cluster_link()?;
    let cluster = Arc::new(
        Cluster::new(
            &nodes,
            config.replication_factor as usize,
            config.write_quorum as usize,
            config.heartbeat_misses,
            &link,
        )
        .map_err(CoordStartError::Cluster)?,
    );
    let origin = if configured_primary { ORIGIN_PRIMARY_COORDINATOR } else { ORIGIN_SECONDARY_COORDINATOR };
    let clock = Arc::new(VersionClock::new(origin));
    let failover = Arc::new(Mutex::new(Failover::new(
        opticache_common::version::unix_ms(),
        config.coordinator.failover_after_ms,
        configured_primary,
        0,
    )));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let service = CoordinatorService {
        cluster: cluster.clone(),
        clock,
        failover: failover.clone(),
        max_value_bytes: config.node.max_value_bytes,
        metrics: metrics.clone(),
    };
    tracing::info!(address = %local, metrics = %metrics_local, primary = %primary, nodes = ?nodes, "starting");
    if let Ok(address) = address.parse() {
        opticache_security::warn_if_exposed(&address, &config.security, "coordinator");
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_not_serving::<OptiCacheServer<CoordinatorService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(opticache_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CoordStartError::Serve(e.to_string()))?;
    let message_limit = (config.node.max_value_bytes as usize).max(64 << 20) + (2 << 20);
    let api = ContractCodes(
        OptiCacheServer::new(service)
            .max_decoding_message_size(message_limit)
            .max_encoding_message_size(message_limit.min(NODE_MESSAGE_BYTES_MAX)),
    );
    let peer_service = PeerServer::new(crate::peer::PeerService {
        failover: failover.clone(),
        cluster: cluster.clone(),
        address: address.clone(),
    });

    let incoming = futures_lite::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let (drained_tx, drained) = watch::channel(false);
    let server = tokio::spawn(
        security
            .server()?
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .layer(security.guard_layer())
            .add_service(health_service)
            .add_service(reflection)
            .add_service(peer_service)
            .add_service(api)
            .serve_with_incoming_shutdown(incoming, wait_true(drained)),
    );

    let interval = Duration::from_millis(config.heartbeat_interval_ms);
    let (first_round_tx, mut first_round) = watch::channel(false);
    let heartbeats =
        tokio::spawn(crate::heartbeat::run(cluster.clone(), failover.clone(), interval, first_round_tx, stop.clone()));
    let peers = tokio::spawn(crate::peer::run(
        failover.clone(),
        cluster.clone(),
        address.clone(),
        peer_address,
        link,
        stop.clone(),
    ));
    let metrics_server = tokio::spawn(crate::metrics::serve(
        metrics,
        failover.clone(),
        cluster.clone(),
        metrics_listener,
        wait_true(stop.clone()),
    ));

    let ready = tokio::select! {
        _ = first_round.wait_for(|r| *r) => true,
        _ = stop.wait_for(|s| *s) => false,
    };
    if ready {
        health.set_service_status("", ServingStatus::Serving).await;
        health.set_serving::<OptiCacheServer<CoordinatorService>>().await;
        tracing::info!(address = %local, "serving");
        let _ = stop.wait_for(|s| *s).await;
    }
    tracing::info!("stopping: draining in-flight calls");
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_not_serving::<OptiCacheServer<CoordinatorService>>().await;
    let _ = drained_tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
        Err(_) => tracing::warn!("in-flight calls did not finish in time"),
    }
    let _ = heartbeats.await;
    let _ = peers.await;
    let _ = metrics_server.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The public service, with tonic's own refusals mapped to the contract's
/// codes: a message over the size limit → RESOURCE_EXHAUSTED (tonic says
/// OUT_OF_RANGE), a namespace that is not UTF-8 → INVALID_ARGUMENT (prost's
/// string decode error, which tonic reports as INTERNAL).
#[derive(Clone, Debug)]
struct ContractCodes<S>(S);

impl<S: NamedService> NamedService for ContractCodes<S> {
    const NAME: &'static str = S::NAME;
}

/// The start of tonic's message for a message over the decode limit.
const DECODE_LIMIT_MESSAGE: &str = "Error, decoded message length too large";

fn contract_status(s: &Status) -> Option<Status> {
    if s.code() == Code::OutOfRange && s.message().starts_with(DECODE_LIMIT_MESSAGE) {
        return Some(Status::resource_exhausted(s.message()));
    }
    if s.code() == Code::Internal && s.message().contains("not UTF-8") {
        return Some(Status::invalid_argument(format!("namespace is not valid UTF-8 ({})", s.message())));
    }
    None
}

impl<S> Service<http::Request<Body>> for ContractCodes<S>
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
            Ok(match response.extensions().get::<Status>().and_then(contract_status) {
                Some(s) => s.into_http(),
                None => response,
            })
        })
    }
}
