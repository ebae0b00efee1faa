//! Reads, OptiCache against fjall in the same run:
//! - hot: 100 B values that are all in memory, read by one task (one shard)
//!   or one thread (fjall, whose values then sit in its memtable);
//! - cold: 4 KiB values with OptiCache's cache off (`memory_budget_bytes` 0),
//!   many keys read in random order by [`COLD_READERS`] concurrent tasks, so
//!   every get is a random O_DIRECT read; fjall with a 1 MiB block cache and
//!   its files dropped from the page cache before every measured batch.
//!
//! Cold reads walk one random permutation of the keys, continuing across
//! batches, so a key is read again only after all the others were.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use opticache_engine::config::{Durability, EngineConfig};
use opticache_engine::engine::Engine;
use opticache_engine::io::dma::DmaStorage;

use common::{
    bench_dir, close_engine, close_fjall, evict_page_cache, executor, key, open_engine, open_fjall, report, scaled,
    shuffled, timed_tasks, timed_threads, value,
};

/// Keys of the hot-read benchmark (smoke mode: [`HOT_KEYS_SMOKE`]).
const HOT_KEYS: u64 = 100_000;
const HOT_KEYS_SMOKE: u64 = 1_000;
const HOT_VALUE_BYTES: usize = 100;

/// Keys of the cold-read benchmark: 1 GiB of values (smoke: 8 MiB), well
/// past what a device or host cache would serve from its own memory quickly.
const COLD_KEYS: u64 = 256 << 10;
const COLD_KEYS_SMOKE: u64 = 2 << 10;
const COLD_VALUE_BYTES: usize = 4 << 10;
/// Concurrent readers: the queue depth fio's random-read limit is measured
/// at. The environment variable [`COLD_READERS_VAR`] overrides it.
const COLD_READERS: usize = 32;
const COLD_READERS_VAR: &str = "OPTICACHE_BENCH_COLD_READERS";
/// Writers that load the data sets (not measured).
const LOAD_WRITERS: usize = 64;

/// fjall's block cache for cold reads: small, so data blocks come from disk.
const FJALL_COLD_CACHE_BYTES: u64 = 1 << 20;

/// Puts keys `0..keys` with `value_bytes` values through `LOAD_WRITERS` tasks.
async fn load(engine: &Rc<Engine<DmaStorage>>, keys: u64, value_bytes: usize) {
    let next = Rc::new(Cell::new(0u64));
    timed_tasks(LOAD_WRITERS, keys, |_, n| {
        let (engine, next) = (engine.clone(), next.clone());
        async move {
            for _ in 0..n {
                let i = next.get();
                next.set(i + 1);
                engine.put(&key(i), value(value_bytes, i), 1, 0).await.expect("load put");
            }
        }
    })
    .await;
}

struct OptiState {
    dir: tempfile::TempDir,
    engine: Rc<Engine<DmaStorage>>,
    order: Rc<Vec<u64>>,
    cursor: Rc<Cell<usize>>,
}

fn hot_gets(c: &mut Criterion) {
    let keys = scaled(HOT_KEYS, HOT_KEYS_SMOKE);
    let mut group = c.benchmark_group("get_100B_hot");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));

    let ex = executor();
    let mut state: Option<OptiState> = None;
    group.bench_function(BenchmarkId::new("opticache", "1task"), |b| {
        let st = state.get_or_insert_with(|| {
            let dir = bench_dir("get-hot");
            let engine = Rc::new(ex.run(open_engine(dir.path(), EngineConfig::default())));
            ex.run(load(&engine, keys, HOT_VALUE_BYTES));
            let order = Rc::new(shuffled(keys, 11).into_iter().collect());
            OptiState { dir, engine, order, cursor: Rc::new(Cell::new(0)) }
        });
        b.iter_custom(|iters| {
            let (engine, order, cursor) = (st.engine.clone(), st.order.clone(), st.cursor.clone());
            ex.run(async move {
                let start = std::time::Instant::now();
                let mut at = cursor.get();
                for _ in 0..iters {
                    let k = key(order[at]);
                    at = if at + 1 == order.len() { 0 } else { at + 1 };
                    let v = engine.get(&k).await.expect("get");
                    assert!(v.is_some_and(|v| v.value.len() == HOT_VALUE_BYTES));
                }
                cursor.set(at);
                start.elapsed()
            })
        });
    });
    if let Some(st) = state {
        let s = st.engine.stats().cache;
        report("get_100B_hot/opticache cache hits, misses", format!("{} {}", s.hits, s.misses));
        ex.run(close_engine(st.engine));
        drop(st.dir);
    }
    drop(ex);

    let mut fjall_state = None;
    group.bench_function(BenchmarkId::new("fjall", "1thread"), |b| {
        let (_, _, ks, order, cursor) = fjall_state.get_or_insert_with(|| {
            let dir = bench_dir("get-hot-fjall");
            let (db, ks) = open_fjall(dir.path(), None, None);
            for i in 0..keys {
                ks.insert(&key(i)[..], &value(HOT_VALUE_BYTES, i)[..]).expect("fjall load");
            }
            (dir, db, ks, shuffled(keys, 11), 0usize)
        });
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                let k = key(order[*cursor]);
                *cursor = if *cursor + 1 == order.len() { 0 } else { *cursor + 1 };
                let v = ks.get(k).expect("fjall get");
                assert!(v.is_some_and(|v| v.len() == HOT_VALUE_BYTES));
            }
            start.elapsed()
        });
    });
    if let Some((dir, db, ks, _, _)) = fjall_state {
        close_fjall(dir, db, ks);
    }
    group.finish();
}

fn cold_gets(c: &mut Criterion) {
    let keys = scaled(COLD_KEYS, COLD_KEYS_SMOKE);
    let mut group = c.benchmark_group("get_4KiB_cold");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    let readers = std::env::var(COLD_READERS_VAR).map_or(COLD_READERS, |v| v.trim().parse().expect(COLD_READERS_VAR));
    let param = format!("{readers}r");

    let ex = executor();
    let mut state: Option<OptiState> = None;
    group.bench_function(BenchmarkId::new("opticache", &param), |b| {
        let st = state.get_or_insert_with(|| {
            let dir = bench_dir("get-cold");
            let config =
                EngineConfig { memory_budget_bytes: 0, durability: Durability::None, ..EngineConfig::default() };
            let engine = Rc::new(ex.run(open_engine(dir.path(), config)));
            ex.run(load(&engine, keys, COLD_VALUE_BYTES));
            let order = Rc::new(shuffled(keys, 13));
            OptiState { dir, engine, order, cursor: Rc::new(Cell::new(0)) }
        });
        b.iter_custom(|iters| {
            let (engine, order, cursor) = (st.engine.clone(), st.order.clone(), st.cursor.clone());
            ex.run(timed_tasks(readers, iters, move |_, n| {
                let (engine, order, cursor) = (engine.clone(), order.clone(), cursor.clone());
                async move {
                    for _ in 0..n {
                        let at = cursor.get();
                        cursor.set(if at + 1 == order.len() { 0 } else { at + 1 });
                        let v = engine.get(&key(order[at])).await.expect("get");
                        assert!(v.is_some_and(|v| v.value.len() == COLD_VALUE_BYTES));
                    }
                }
            }))
        });
    });
    if let Some(st) = state {
        let s = st.engine.stats().cache;
        report("get_4KiB_cold/opticache cache hits, misses", format!("{} {}", s.hits, s.misses));
        ex.run(close_engine(st.engine));
        drop(st.dir);
    }
    drop(ex);

    let mut fjall_state = None;
    group.bench_function(BenchmarkId::new("fjall", format!("{readers}t")), |b| {
        let (dir, _, ks, order, cursor) = fjall_state.get_or_insert_with(|| {
            let dir = bench_dir("get-cold-fjall");
            let db =
                fjall::Database::builder(dir.path()).cache_size(FJALL_COLD_CACHE_BYTES).open().expect("open fjall");
            let ks = db.keyspace("bench", fjall::KeyspaceCreateOptions::default).expect("fjall keyspace");
            for i in 0..keys {
                ks.insert(&key(i)[..], &value(COLD_VALUE_BYTES, i)[..]).expect("fjall load");
            }
            ks.rotate_memtable_and_wait().expect("fjall flush");
            (dir, db, ks, shuffled(keys, 13), AtomicU64::new(0))
        });
        b.iter_custom(|iters| {
            evict_page_cache(dir.path());
            timed_threads(readers, iters, |_, n| {
                for _ in 0..n {
                    let at = cursor.fetch_add(1, Ordering::Relaxed) % order.len() as u64;
                    let v = ks.get(key(order[at as usize])).expect("fjall get");
                    assert!(v.is_some_and(|v| v.len() == COLD_VALUE_BYTES));
                }
            })
        });
    });
    if let Some((dir, db, ks, _, _)) = fjall_state {
        close_fjall(dir, db, ks);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = hot_gets, cold_gets
}
criterion_main!(benches);
