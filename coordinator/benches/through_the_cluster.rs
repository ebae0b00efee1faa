//! The cluster against one of its own nodes, in the same run: the local
//! cluster of the end-to-end tests (three nodes with production engine
//! settings, two coordinators, replication_factor 2, write_quorum 1), driven
//! through the primary coordinator's public API and, for comparison,
//! directly at node 0's internal API (node-stamped versions, no replication).
//! Issue 4's targets: throughput through the cluster at least half of
//! node-direct, p99 under 2 ms for 4 KiB at 50 clients, and 1 MiB writes and
//! reads with p50 under 2 ms and 1 ms.
//!
//! Workloads: `write_4KiB` and `read_4KiB` (preloaded keys) with
//! `OPTICACHE_BENCH_CLIENTS` (default 50) closed-loop clients for
//! `OPTICACHE_BENCH_SECONDS` (default 10) after a 2 s warm-up; `write_1MiB`
//! and `read_1MiB`: one client, one call at a time, for the same time, which
//! is the latency a model server sees for one parameter. Every read checks
//! the bytes it gets.
//!
//! `cargo bench -p opticache-coordinator --bench through_the_cluster` runs it;
//! `cargo test --bench through_the_cluster` (which `make test` runs) does a
//! one-second smoke of each workload and target and fails on any error.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{value_of, Cluster, Settings};
use hdrhistogram::Histogram;
use opticache_proto::node::v1 as node;
use opticache_proto::v1 as pb;

const KEYS_4K: u64 = 10_000;
const KEYS_1M: u64 = 64;
const SMOKE_KEYS: u64 = 64;
const WARMUP: Duration = Duration::from_secs(2);
const NAMESPACE: &str = "bench";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Cluster,
    NodeDirect,
}

#[derive(Clone, Copy, Debug)]
struct Workload {
    name: &'static str,
    write: bool,
    value_bytes: usize,
    keys: u64,
    /// Clients at once; `None`: the configured count.
    clients: Option<usize>,
}

const WORKLOADS: [Workload; 4] = [
    Workload { name: "write_4KiB", write: true, value_bytes: 4 << 10, keys: KEYS_4K, clients: None },
    Workload { name: "read_4KiB", write: false, value_bytes: 4 << 10, keys: KEYS_4K, clients: None },
    Workload { name: "write_1MiB", write: true, value_bytes: 1 << 20, keys: KEYS_1M, clients: Some(1) },
    Workload { name: "read_1MiB", write: false, value_bytes: 1 << 20, keys: KEYS_1M, clients: Some(1) },
];

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key:{i:012}"))
}

/// The value of key `i`: distinct per key, so a read of the wrong key fails.
fn value(i: u64, len: usize) -> Bytes {
    value_of(i, len)
}

/// One call against `target`; a read checks the bytes.
async fn call(cluster: &Cluster, target: Target, write: bool, i: u64, len: usize) -> Result<(), String> {
    match (target, write) {
        (Target::Cluster, true) => {
            let req = pb::WriteRequest { namespace: NAMESPACE.into(), key: key(i), value: value(i, len), ttl_ms: 0 };
            cluster.client(0).write_cache(req).await.map(|_| ()).map_err(|s| s.to_string())
        }
        (Target::Cluster, false) => {
            let req = pb::ReadRequest { namespace: NAMESPACE.into(), key: key(i) };
            let got = cluster.client(0).read_cache(req).await.map_err(|s| s.to_string())?.into_inner();
            check(got.found, &got.value, i, len)
        }
        (Target::NodeDirect, true) => {
            let req = node::PutRequest {
                namespace: Bytes::from_static(NAMESPACE.as_bytes()),
                key: key(i),
                value: value(i, len),
                ..Default::default()
            };
            cluster.node_client(0).put(req).await.map(|_| ()).map_err(|s| s.to_string())
        }
        (Target::NodeDirect, false) => {
            let req = node::GetRequest { namespace: Bytes::from_static(NAMESPACE.as_bytes()), key: key(i) };
            let got = cluster.node_client(0).get(req).await.map_err(|s| s.to_string())?.into_inner();
            check(got.found, &got.value, i, len)
        }
    }
}

fn check(found: bool, got: &Bytes, i: u64, len: usize) -> Result<(), String> {
    if !found {
        return Err(format!("key {i} missing"));
    }
    if *got != value(i, len) {
        return Err(format!("key {i}: wrong bytes ({} of {len})", got.len()));
    }
    Ok(())
}

struct Outcome {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    histogram: Histogram<u64>,
}

async fn run(cluster: &Arc<Cluster>, target: Target, w: Workload, clients: usize, measure: Duration) -> Outcome {
    if !w.write {
        preload(cluster, target, w).await;
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (cluster, measuring, stop) = (cluster.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let started = Instant::now();
                let result = call(&cluster, target, w.write, rng % w.keys, w.value_bytes).await;
                if measuring.load(Ordering::Relaxed) {
                    let _ = hist.record(started.elapsed().as_micros().max(1) as u64);
                    ops += 1;
                    if let Err(e) = result {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (ops, errors, first_error, hist)
        }));
    }
    tokio::time::sleep(WARMUP.min(measure)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome {
        ops: 0,
        errors: 0,
        first_error: None,
        seconds,
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    };
    for t in tasks {
        let (ops, errors, first_error, hist) = t.await.expect("client task");
        out.ops += ops;
        out.errors += errors;
        out.first_error = out.first_error.or(first_error);
        out.histogram.add(hist).expect("same bounds");
    }
    out
}

/// Writes every key of the workload once through `target`, so reads hit.
async fn preload(cluster: &Arc<Cluster>, target: Target, w: Workload) {
    const PRELOADERS: u64 = 16;
    let mut tasks = Vec::new();
    for p in 0..PRELOADERS {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            for i in (p..w.keys).step_by(PRELOADERS as usize) {
                call(&cluster, target, true, i, w.value_bytes).await.expect("preload");
            }
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // Smoke under `cargo test --bench` / `cargo bench -- --test` (no `--bench` argument).
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (clients, measure) = if smoke {
        (4, Duration::from_secs(1))
    } else {
        (env_or("OPTICACHE_BENCH_CLIENTS", 50usize), Duration::from_secs(env_or("OPTICACHE_BENCH_SECONDS", 10u64)))
    };
    let cluster =
        Arc::new(runtime.block_on(Cluster::start_with(Settings { production_nodes: true, ..Settings::default() })));
    println!("| workload | target | clients | ops/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for w in WORKLOADS {
        // The smoke preloads a few keys only: it checks the paths, not the speed.
        let w = if smoke { Workload { keys: w.keys.min(SMOKE_KEYS), ..w } } else { w };
        let clients = w.clients.unwrap_or(clients);
        let mut throughput = [0.0f64; 2];
        for (t, target) in [Target::NodeDirect, Target::Cluster].into_iter().enumerate() {
            let out = runtime.block_on(run(&cluster, target, w, clients, measure));
            assert!(
                !smoke || (out.ops > 0 && out.errors == 0),
                "smoke {} {target:?}: {} ops, {} errors {:?}",
                w.name,
                out.ops,
                out.errors,
                out.first_error
            );
            let ops_s = out.ops as f64 / out.seconds;
            throughput[t] = ops_s;
            let ms = |q: f64| out.histogram.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "| {} | {target:?} | {clients} | {ops_s:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {}{} |",
                w.name,
                ops_s * w.value_bytes as f64 / 1e6,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                out.histogram.max() as f64 / 1000.0,
                out.errors,
                out.first_error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
        ratios.push((w.name, throughput[1] / throughput[0].max(1e-9)));
    }
    println!();
    for (name, ratio) in ratios {
        println!("{name}: cluster / node-direct throughput = {ratio:.2}x");
    }
}
