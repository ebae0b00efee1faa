//! The cost of the hop between the tonic front (tokio) and a shard's glommio
//! executor, measured three ways in one run:
//! - `ping`: a request that does nothing, there and back: the hop alone;
//! - `get_via_shard`: a hot 4 KiB get sent through the hop;
//! - `get_in_executor`: the same get called directly on the executor,
//!   no hop (the floor the hop adds to).
//!
//! `get_via_shard - get_in_executor` and `ping` are the figures docs/node.md
//! quotes. One request at a time, so each is a latency, not a throughput.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use opticache_engine::config::EngineConfig;
use opticache_engine::engine::Engine;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::limits::EXECUTOR_IO_MEMORY_BYTES;
use opticache_node::shard::{self, ShardRequest, ShardSpec, INDEX_FILE_NAME};

const VALUE_BYTES: usize = 4 << 10;
const KEY: &[u8] = b"\x00hop-bench-key";

fn config() -> EngineConfig {
    EngineConfig { segment_bytes: 8 << 20, ..EngineConfig::default() }
}

fn bench_hop(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut started =
        shard::start(ShardSpec { shard: 0, dir: dir.path().join("shard-000"), engine: config(), cpu: None })
            .expect("shard starts");
    let handle = started.handle.clone();
    runtime.block_on(async {
        (&mut started.ready).await.expect("ready sent").expect("shard opens");
        let value = Bytes::from(vec![7u8; VALUE_BYTES]);
        let entry = shard::PutEntry { key: Bytes::from_static(KEY), value, version: 1, expiry_ms: 0 };
        handle.call(|reply| ShardRequest::Put { entry, reply }).await.expect("answer").expect("put");
    });

    let mut group = c.benchmark_group("hop");
    group.bench_function("ping", |b| {
        b.to_async(&runtime).iter(|| async { handle.call(|reply| ShardRequest::Ping { reply }).await.expect("pong") })
    });
    group.bench_function("get_via_shard", |b| {
        b.to_async(&runtime).iter(|| async {
            let key = Bytes::from_static(KEY);
            let v = handle.call(|reply| ShardRequest::Get { key, reply }).await.expect("answer").expect("get");
            assert_eq!(v.expect("hot key").value.len(), VALUE_BYTES);
        })
    });
    group.bench_function("get_in_executor", |b| b.iter_custom(in_executor_gets));
    group.finish();

    runtime.block_on(async {
        handle.call(|reply| ShardRequest::Shutdown { reply }).await.expect("answer").expect("clean close");
    });
    started.thread.join().expect("shard thread");
}

/// Times `iters` hot gets made on an executor of their own, with no hop.
fn in_executor_gets(iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench dir");
    let path = dir.path().join("direct");
    let (tx, rx) = std_mpsc::channel();
    glommio::LocalExecutorBuilder::default()
        .io_memory(EXECUTOR_IO_MEMORY_BYTES)
        .spawn(move || async move {
            let storage = DmaStorage::open_dir(&path).await.expect("storage");
            let engine = Engine::open(storage, &path.join(INDEX_FILE_NAME), config()).await.expect("engine");
            engine.put(KEY, Bytes::from(vec![7u8; VALUE_BYTES]), 1, 0).await.expect("put");
            let start = Instant::now();
            for _ in 0..iters {
                let v = engine.get(KEY).await.expect("get").expect("hot key");
                assert_eq!(v.value.len(), VALUE_BYTES);
            }
            let took = start.elapsed();
            engine.close().await.expect("close");
            tx.send(took).expect("send");
        })
        .expect("executor")
        .join()
        .expect("join");
    rx.recv().expect("timing")
}

criterion_group!(benches, bench_hop);
criterion_main!(benches);
