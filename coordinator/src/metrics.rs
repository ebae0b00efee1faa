//! Prometheus metrics of a coordinator (OpenMetrics text, `GET /metrics`):
//! per-RPC latency histograms (their counts are the request rates) and
//! errors by gRPC code, recorded as calls finish; role, epoch and each
//! node's state, read at scrape time.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::Cluster;
use crate::failover::{Failover, Role};
use crate::health::NodeState;

/// The public API's RPCs, as metric labels.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Rpc {
    WriteCache,
    ReadCache,
    UpdateCache,
    DeleteCache,
    BatchWrite,
    BatchRead,
    WriteStream,
    ReadStream,
    ClusterStatus,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: Rpc,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcErrorLabels {
    rpc: Rpc,
    code: String,
}

/// 20 doubling buckets from 50 µs: up to ~26 s.
const LATENCY_BUCKET_START_SECONDS: f64 = 50e-6;
const LATENCY_BUCKETS: u16 = 20;

/// The coordinator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    latency: Family<RpcLabels, Histogram>,
    errors: Family<RpcErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("opticache_coordinator");
        let latency = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(LATENCY_BUCKET_START_SECONDS, 2.0, LATENCY_BUCKETS))
        });
        let errors = Family::<RpcErrorLabels, Counter>::default();
        registry.register(
            "rpc_latency_seconds",
            "Time from a public RPC's arrival to its answer, per RPC (the count is the request count)",
            latency.clone(),
        );
        registry.register("rpc_errors", "Public RPCs answered with an error, by RPC and gRPC code", errors.clone());
        Self { registry, latency, errors }
    }

    /// Records one call.
    pub fn observe(&self, rpc: Rpc, error: Option<tonic::Code>, took: Duration) {
        self.latency.get_or_create(&RpcLabels { rpc }).observe(took.as_secs_f64());
        if let Some(code) = error {
            self.errors.get_or_create(&RpcErrorLabels { rpc, code: format!("{code:?}") }).inc();
        }
    }

    /// The exposition: the RPC metrics, then role, epoch and node states.
    pub fn render(&self, failover: &Mutex<Failover>, cluster: &Cluster) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).expect("writing to a String");
        let (role, epoch) = {
            let f = failover.lock().expect("failover lock");
            (f.role(), f.epoch())
        };
        let _ = writeln!(out, "# HELP opticache_coordinator_primary 1 while this coordinator is the primary.");
        let _ = writeln!(out, "# TYPE opticache_coordinator_primary gauge");
        let _ = writeln!(out, "opticache_coordinator_primary {}", u8::from(role == Role::Primary));
        let _ = writeln!(out, "# HELP opticache_coordinator_epoch The epoch this coordinator is in.");
        let _ = writeln!(out, "# TYPE opticache_coordinator_epoch gauge");
        let _ = writeln!(out, "opticache_coordinator_epoch {epoch}");
        let _ = writeln!(out, "# HELP opticache_coordinator_node_state 1 for each node's current state.");
        let _ = writeln!(out, "# TYPE opticache_coordinator_node_state gauge");
        for m in &cluster.members {
            let current = m.state();
            for state in [NodeState::Up, NodeState::Suspect, NodeState::Down, NodeState::Recovering] {
                let name = format!("{state:?}").to_ascii_lowercase();
                let _ = writeln!(
                    out,
                    "opticache_coordinator_node_state{{node=\"{}\",state=\"{name}\"}} {}",
                    m.address,
                    u8::from(current == state)
                );
            }
        }
        prometheus_client::encoding::text::encode_eof(&mut out).expect("writing to a String");
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    metrics: Arc<Metrics>,
    failover: Arc<Mutex<Failover>>,
    cluster: Arc<Cluster>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&failover, &cluster);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
