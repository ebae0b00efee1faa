//! A cache node against Redis, driven by the same client harness in the same
//! run: concurrent clients (one connection each), each sending one request
//! at a time for a fixed duration after a warm-up, latencies in HDR
//! histograms. Workloads (issue 3's targets):
//! - `set_4KiB`: durable writes of 4 KiB values (node `sync` durability,
//!   Redis `appendonly yes` + `appendfsync always`);
//! - `get_4KiB`: reads of preloaded 4 KiB values;
//! - `set_1MiB`: durable writes of 1 MiB values.
//!
//! Redis is driven over RESP written by hand (SET/GET, the same framing
//! redis-benchmark sends), the node over its gRPC API with node-stamped
//! versions. Both servers start fresh in a temporary dir under the target dir.
//!
//! `cargo bench -p opticache-node --bench node_vs_redis` runs the full
//! comparison (`OPTICACHE_BENCH_SECONDS`, `OPTICACHE_BENCH_CLIENTS` override
//! the 10 s and 50 clients; `OPTICACHE_BENCH_ONLY=get_4KiB` runs one
//! workload, `OPTICACHE_BENCH_TARGETS=node` one target, for profiling;
//! `OPTICACHE_BENCH_NODE_SHARDS` the node's shards, default one per core); `-- --test` (as `make test` runs every bench)
//! runs a one-second smoke against the node only and checks it did work (so
//! does `cargo test --bench`, which `make test` runs).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use opticache_proto::node::v1::node_client::NodeClient;
use opticache_proto::node::v1::{GetRequest, PutRequest};
use opticache_testsupport::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

const KEYS_4K: u64 = 100_000;
const KEYS_1M: u64 = 256;
const WARMUP: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Op {
    Set,
    Get,
}

#[derive(Clone, Copy, Debug)]
struct Workload {
    name: &'static str,
    op: Op,
    value_bytes: usize,
    keys: u64,
}

const WORKLOADS: [Workload; 3] = [
    Workload { name: "set_4KiB", op: Op::Set, value_bytes: 4 << 10, keys: KEYS_4K },
    Workload { name: "get_4KiB", op: Op::Get, value_bytes: 4 << 10, keys: KEYS_4K },
    Workload { name: "set_1MiB", op: Op::Set, value_bytes: 1 << 20, keys: KEYS_1M },
];

/// One connection of one target.
enum Conn {
    Node(NodeClient<Channel>),
    Redis(AsyncBufReader<TcpStream>, Vec<u8>),
}

impl Conn {
    async fn set(&mut self, key: &[u8], value: &Bytes) -> Result<(), String> {
        match self {
            Conn::Node(c) => {
                let req = PutRequest { key: Bytes::copy_from_slice(key), value: value.clone(), ..Default::default() };
                c.put(req).await.map(|_| ()).map_err(|s| s.to_string())
            }
            Conn::Redis(stream, buf) => {
                buf.clear();
                buf.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n", key.len()).as_bytes());
                buf.extend_from_slice(key);
                buf.extend_from_slice(format!("\r\n${}\r\n", value.len()).as_bytes());
                buf.extend_from_slice(value);
                buf.extend_from_slice(b"\r\n");
                stream.get_mut().write_all(buf).await.map_err(|e| e.to_string())?;
                let mut line = String::new();
                stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
                if line != "+OK\r\n" {
                    return Err(format!("SET answered {line:?}"));
                }
                Ok(())
            }
        }
    }

    /// Reads `key`; the value's length must be `expected_len`.
    async fn get(&mut self, key: &[u8], expected_len: usize) -> Result<(), String> {
        let len = match self {
            Conn::Node(c) => {
                let req = GetRequest { key: Bytes::copy_from_slice(key), ..Default::default() };
                let r = c.get(req).await.map_err(|s| s.to_string())?.into_inner();
                if !r.found {
                    return Err("miss".into());
                }
                r.value.len()
            }
            Conn::Redis(stream, buf) => {
                buf.clear();
                buf.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n", key.len()).as_bytes());
                buf.extend_from_slice(key);
                buf.extend_from_slice(b"\r\n");
                stream.get_mut().write_all(buf).await.map_err(|e| e.to_string())?;
                let mut line = String::new();
                stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
                let len: i64 = line.trim_end().strip_prefix('$').and_then(|n| n.parse().ok()).ok_or("bad reply")?;
                if len < 0 {
                    return Err("miss".into());
                }
                buf.resize(len as usize + 2, 0);
                stream.read_exact(buf).await.map_err(|e| e.to_string())?;
                len as usize
            }
        };
        if len != expected_len {
            return Err(format!("value of {len} bytes, expected {expected_len}"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Node,
    Redis,
}

async fn connect(target: Target, address: &str) -> Conn {
    match target {
        Target::Node => {
            let channel = Endpoint::from_shared(format!("http://{address}"))
                .expect("endpoint")
                .tcp_nodelay(true)
                .initial_stream_window_size(8 << 20)
                .initial_connection_window_size(32 << 20)
                .connect()
                .await
                .expect("connect to the node");
            Conn::Node(NodeClient::new(channel).max_decoding_message_size(80 << 20).max_encoding_message_size(80 << 20))
        }
        Target::Redis => {
            let stream = TcpStream::connect(address).await.expect("connect to redis");
            stream.set_nodelay(true).expect("nodelay");
            Conn::Redis(AsyncBufReader::with_capacity(64 << 10, stream), Vec::new())
        }
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

/// A xorshift step: cheap, and the same sequence in every run.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

struct Outcome {
    /// CPU seconds the server used during the measured window.
    server_cpu_seconds: f64,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    histogram: Histogram<u64>,
}

/// Runs `workload` with `clients` connections for `measure` after `WARMUP`.
async fn run_workload(
    target: Target,
    address: &str,
    server_pid: u32,
    workload: Workload,
    clients: usize,
    measure: Duration,
) -> Outcome {
    let value = Bytes::from((0..workload.value_bytes).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
    if let Op::Get = workload.op {
        preload(target, address, workload, &value, clients).await;
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut conn = connect(target, address).await;
        let (value, measuring, stop) = (value.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let k = key(next_random(&mut rng) % workload.keys);
                let started = Instant::now();
                let result = match workload.op {
                    Op::Set => conn.set(&k, &value).await,
                    Op::Get => conn.get(&k, value.len()).await,
                };
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
    tokio::time::sleep(WARMUP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before = cpu_seconds(server_pid);
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu_seconds = cpu_seconds(server_pid) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome {
        server_cpu_seconds,
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

/// Writes every key of the workload once, so reads hit.
async fn preload(target: Target, address: &str, workload: Workload, value: &Bytes, clients: usize) {
    let mut tasks = Vec::new();
    for c in 0..clients as u64 {
        let mut conn = connect(target, address).await;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < workload.keys {
                conn.set(&key(i), &value).await.expect("preload");
                i += clients as u64;
            }
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
}

fn start_node() -> Server {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "coordinator:\n  primary: 127.0.0.1:1\ncache_nodes:\n  - address: 127.0.0.1:0\n    disk_path: {}\n    metrics_address: 127.0.0.1:0\nreplication_factor: 1\nnode:\n  durability: sync\n  shards: {}\n",
        dir.path().join("data").display(),
        env_or("OPTICACHE_BENCH_NODE_SHARDS", 0u32)
    );
    std::fs::write(&config, yaml).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_opticache-node"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,opticache_node::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start opticache-node");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let deadline = Instant::now() + DEADLINE;
    let mut address = None;
    for line in lines.by_ref() {
        let line = line.expect("node log");
        if let Some(rest) = line.split("address=").nth(1) {
            address.get_or_insert_with(|| rest.split_whitespace().next().unwrap_or_default().to_string());
        }
        if line.contains(" serving ") || line.ends_with("serving") {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not start");
    }
    // Keep draining the log so the pipe never fills.
    std::thread::spawn(move || for _ in lines {});
    Server { child, address: address.expect("the node logged its address"), dir }
}

fn start_redis() -> Option<Server> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(Instant::now() < deadline, "redis did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server { child, address, dir })
}

/// CPU seconds (user + system) the process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start past ')'.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // Smoke under `cargo bench -- --test` and `cargo test --bench` (no `--bench` argument).
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if smoke {
        let node = start_node();
        let w = Workload { name: "set_4KiB", op: Op::Set, value_bytes: 4 << 10, keys: 1000 };
        let out =
            runtime.block_on(run_workload(Target::Node, &node.address, node.child.id(), w, 4, Duration::from_secs(1)));
        assert!(out.ops > 0 && out.errors == 0, "smoke: {} ops, {} errors {:?}", out.ops, out.errors, out.first_error);
        println!("node_vs_redis smoke: {} node puts in 1 s, no errors", out.ops);
        return;
    }
    let clients = env_or("OPTICACHE_BENCH_CLIENTS", 50usize);
    let seconds = env_or("OPTICACHE_BENCH_SECONDS", 10u64);
    let measure = Duration::from_secs(seconds);
    println!("| workload | target | ops/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU µs/op | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let only = std::env::var("OPTICACHE_BENCH_ONLY").ok();
    let targets = std::env::var("OPTICACHE_BENCH_TARGETS").unwrap_or_else(|_| "node,redis".into());
    for w in WORKLOADS.into_iter().filter(|w| only.as_deref().is_none_or(|o| o == w.name)) {
        let mut throughput = [0.0f64; 2];
        for (i, target) in [Target::Node, Target::Redis].into_iter().enumerate() {
            if !targets.split(',').any(|t| t.eq_ignore_ascii_case(&format!("{target:?}"))) {
                continue;
            }
            // A fresh server per workload: no workload runs on another's garbage.
            let server = match target {
                Target::Node => start_node(),
                Target::Redis => match start_redis() {
                    Some(s) => s,
                    None => {
                        println!("| {} | redis | not run: redis-server not found | | | | | | | |", w.name);
                        continue;
                    }
                },
            };
            let out = runtime.block_on(run_workload(target, &server.address, server.child.id(), w, clients, measure));
            let ops_s = out.ops as f64 / out.seconds;
            throughput[i] = ops_s;
            let ms = |q: f64| out.histogram.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "| {} | {:?} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {}{} |",
                w.name,
                target,
                ops_s,
                ops_s * w.value_bytes as f64 / 1e6,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                out.histogram.max() as f64 / 1000.0,
                out.server_cpu_seconds * 1e6 / out.ops.max(1) as f64,
                out.errors,
                out.first_error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
        if throughput[1] > 0.0 {
            ratios.push((w.name, throughput[0] / throughput[1]));
        }
    }
    println!();
    for (name, ratio) in ratios {
        println!("{name}: node/redis throughput = {ratio:.2}x");
    }
}
