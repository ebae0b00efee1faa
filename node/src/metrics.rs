//! Prometheus metrics (OpenMetrics text over HTTP, `GET /metrics`).
//!
//! Two sources: the front records every RPC's latency and outcome as it
//! happens (histograms with fixed buckets, per RPC); the shards' own counters
//! (ops, bytes, keys, segments, compaction, cache, fsync latency, queue depth)
//! are read from each shard at scrape time, so they cost nothing between
//! scrapes. Names carry their units (`_seconds`, `_bytes`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use opticache_engine::stats::{EngineStats, FSYNC_BUCKETS};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::core::NodeCore;

/// The RPCs of the node API, as metric labels.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values read like the RPC names")]
pub enum Rpc {
    Put,
    Get,
    Update,
    Delete,
    BatchPut,
    BatchGet,
    PutStream,
    GetStream,
    Heartbeat,
    Stats,
    ListKeys,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: Rpc,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcErrorLabels {
    rpc: Rpc,
    code: String,
}

/// The smallest latency bucket: 10 µs; 20 buckets doubling reach ~5 s.
const LATENCY_BUCKET_START_SECONDS: f64 = 10e-6;
const LATENCY_BUCKETS: u16 = 20;

/// The front's metrics; the shard figures are read per scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc_latency: Family<RpcLabels, Histogram>,
    rpc_errors: Family<RpcErrorLabels, Counter>,
    shard_call_latency: Family<ShardLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("opticache_node");
        let rpc_latency = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(LATENCY_BUCKET_START_SECONDS, 2.0, LATENCY_BUCKETS))
        });
        let rpc_errors = Family::<RpcErrorLabels, Counter>::default();
        registry.register(
            "rpc_latency_seconds",
            "Time from a node RPC's arrival to its answer, per RPC (streams: until the last chunk is handed over)",
            rpc_latency.clone(),
        );
        registry.register("rpc_errors", "Node RPCs answered with an error, by RPC and gRPC code", rpc_errors.clone());
        let shard_call_latency = Family::<ShardLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(LATENCY_BUCKET_START_SECONDS, 2.0, LATENCY_BUCKETS))
        });
        registry.register(
            "shard_call_latency_seconds",
            "Time from handing a request to a shard's queue to its answer, per shard (queueing included)",
            shard_call_latency.clone(),
        );
        Self { registry, rpc_latency, rpc_errors, shard_call_latency }
    }

    /// Records one RPC: its latency, and its error code if it failed.
    pub fn observe_rpc(&self, rpc: Rpc, error: Option<tonic::Code>, took: Duration) {
        self.rpc_latency.get_or_create(&RpcLabels { rpc }).observe(took.as_secs_f64());
        if let Some(code) = error {
            self.rpc_errors.get_or_create(&RpcErrorLabels { rpc, code: format!("{code:?}") }).inc();
        }
    }

    /// Records one request's time on shard `shard`, queueing included.
    pub fn observe_shard_call(&self, shard: u32, took: Duration) {
        self.shard_call_latency.get_or_create(&ShardLabels { shard }).observe(took.as_secs_f64());
    }

    /// The whole exposition: the front's metrics, then each shard's.
    pub fn render(&self, state: &str, shards: &[(EngineStats, u64)]) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).expect("writing to a String");
        write_state(&mut out, state);
        write_shards(&mut out, shards);
        prometheus_client::encoding::text::encode_eof(&mut out).expect("writing to a String");
        out
    }
}

fn write_state(out: &mut String, state: &str) {
    let _ = writeln!(
        out,
        "# HELP opticache_node_serving 1 when the node serves data calls, 0 while recovering or draining."
    );
    let _ = writeln!(out, "# TYPE opticache_node_serving gauge");
    let _ = writeln!(out, "opticache_node_serving{{state=\"{state}\"}} {}", u8::from(state == "serving"));
}

/// One family per figure, a sample per shard.
fn write_shards(out: &mut String, shards: &[(EngineStats, u64)]) {
    type Figure = (&'static str, &'static str, &'static str, fn(&EngineStats) -> u64);
    const FIGURES: &[Figure] = &[
        ("puts", "counter", "Puts applied or refused as stale", |s| s.puts),
        ("put_bytes", "counter", "Value bytes written by puts", |s| s.put_bytes),
        ("gets", "counter", "Point reads", |s| s.gets),
        ("get_hits", "counter", "Point reads that found a live value", |s| s.get_hits),
        ("get_bytes", "counter", "Value bytes returned by reads", |s| s.get_bytes),
        ("deletes", "counter", "Deletes", |s| s.deletes),
        ("stale_writes", "counter", "Writes ignored because a newer version was stored", |s| s.stale_writes),
        ("expired_reads", "counter", "Reads that found only an expired value", |s| s.expired_reads),
        ("corrupt_records", "counter", "Records that failed their checksum", |s| s.corrupt_records),
        ("disk_full_rejections", "counter", "Writes refused because the disk budget was reached", |s| {
            s.disk_full_rejections
        }),
        ("commits", "counter", "Group commits (one write and one fdatasync each)", |s| s.commits),
        ("committed_records", "counter", "Records written by group commits", |s| s.committed_records),
        ("compaction_runs", "counter", "Segments compacted", |s| s.compaction_runs),
        ("compaction_reclaimed_bytes", "counter", "Disk bytes compaction gave back", |s| s.compaction_bytes_reclaimed),
        ("compaction_moved_records", "counter", "Live records compaction copied", |s| s.compaction_records_moved),
        ("segments_dropped", "counter", "Segments dropped by the disk budget in cache mode", |s| s.segments_dropped),
        ("checkpoints", "counter", "Index checkpoints written", |s| s.checkpoints),
        ("cache_hits", "counter", "Reads served from the hot-value cache", |s| s.cache.hits),
        ("cache_misses", "counter", "Reads the hot-value cache could not serve", |s| s.cache.misses),
        ("cache_evictions", "counter", "Values the hot-value cache evicted", |s| s.cache.evictions),
        ("keys", "gauge", "Keys in the index (live values and tombstones)", |s| s.keys),
        ("disk_bytes", "gauge", "Bytes the shard's log uses on disk", |s| s.disk_bytes),
        ("index_file_bytes", "gauge", "Bytes of the shard's index file", |s| s.index_file_bytes),
        ("segments", "gauge", "Segment files of the shard's log", |s| s.segments.len() as u64),
        ("cache_bytes", "gauge", "Bytes held by the hot-value cache", |s| s.cache.bytes),
        ("cache_budget_bytes", "gauge", "The hot-value cache's budget", |s| s.cache.budget_bytes),
    ];
    for (name, kind, help, get) in FIGURES {
        let _ = writeln!(out, "# HELP opticache_shard_{name} {help}.");
        let _ = writeln!(out, "# TYPE opticache_shard_{name} {kind}");
        let suffix = if *kind == "counter" { "_total" } else { "" };
        for (shard, (stats, _)) in shards.iter().enumerate() {
            let _ = writeln!(out, "opticache_shard_{name}{suffix}{{shard=\"{shard}\"}} {}", get(stats));
        }
    }
    let _ = writeln!(out, "# HELP opticache_shard_queue_depth Requests queued for or running on the shard.");
    let _ = writeln!(out, "# TYPE opticache_shard_queue_depth gauge");
    for (shard, (_, depth)) in shards.iter().enumerate() {
        let _ = writeln!(out, "opticache_shard_queue_depth{{shard=\"{shard}\"}} {depth}");
    }
    let _ = writeln!(out, "# HELP opticache_shard_fsync_seconds Latency of the log's fdatasync calls.");
    let _ = writeln!(out, "# TYPE opticache_shard_fsync_seconds histogram");
    for (shard, (stats, _)) in shards.iter().enumerate() {
        // Engine bucket b counts latencies below 2^b µs (the last one: all above).
        let mut cumulative = 0u64;
        for (b, count) in stats.fsync_us_buckets.iter().enumerate().take(FSYNC_BUCKETS - 1) {
            cumulative += count;
            let le_seconds = (1u64 << b) as f64 / 1e6;
            let _ = writeln!(
                out,
                "opticache_shard_fsync_seconds_bucket{{shard=\"{shard}\",le=\"{le_seconds}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "opticache_shard_fsync_seconds_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {}", stats.fsyncs);
        let _ = writeln!(
            out,
            "opticache_shard_fsync_seconds_sum{{shard=\"{shard}\"}} {}",
            stats.fsync_us_total as f64 / 1e6
        );
        let _ = writeln!(out, "opticache_shard_fsync_seconds_count{{shard=\"{shard}\"}} {}", stats.fsyncs);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    core: Arc<NodeCore>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let core = core.clone();
            async move {
                // A recovering shard answers only once open: report the state alone.
                let shards = match core.check_serving() {
                    Ok(()) => match core.shard_stats().await {
                        Ok(stats) => stats.into_iter().zip(core.shards.iter().map(|s| s.queue_depth())).collect(),
                        Err(_) => Vec::new(),
                    },
                    Err(_) => Vec::new(),
                };
                let state = core.state().as_str_name().to_ascii_lowercase();
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    core.metrics.render(&state, &shards),
                )
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
