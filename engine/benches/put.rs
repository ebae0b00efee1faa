//! Durable puts, OptiCache against fjall in the same run:
//! - 4 KiB values, 64 concurrent writers on one shard (64 glommio tasks on
//!   one executor; 64 OS threads for fjall), every put acknowledged only
//!   once it is on stable storage;
//! - 1 MiB values, [`LARGE_WRITERS`] concurrent writers, same durability.
//!
//! OptiCache runs with `Durability::Sync` (group commit: one write and one
//! fdatasync per batch of queued puts). fjall runs each put as a one-item
//! write batch committed with `PersistMode::SyncAll`; fjall holds its journal
//! lock across that fsync, so its concurrent durable writers are serialized.
//! Every put writes a new key (no read before write in either engine).

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use opticache_engine::config::{Durability, EngineConfig};
use opticache_engine::engine::{Engine, PutOutcome};
use opticache_engine::io::dma::DmaStorage;

use common::{
    bench_dir, close_engine, close_fjall, executor, fjall_put_sync, key, open_engine, open_fjall, report, timed_tasks,
    timed_threads, value,
};

/// Concurrent writers of the small-put benchmark (the figure). The
/// environment variable [`SMALL_WRITERS_VAR`] (a comma-separated list)
/// overrides it, to sweep the concurrency.
const SMALL_WRITERS: usize = 64;
const SMALL_WRITERS_VAR: &str = "OPTICACHE_BENCH_SMALL_WRITERS";
/// The small value.
const SMALL_VALUE_BYTES: usize = 4 << 10;
/// Concurrent writers of the large-put benchmark: a group commit takes at
/// most ~4 MiB (three 1 MiB records), so eight writers keep the next batch
/// queued while the current one is written and synced. The environment
/// variable [`LARGE_WRITERS_VAR`] (a comma-separated list) overrides it, to
/// sweep the concurrency.
const LARGE_WRITERS: usize = 8;
const LARGE_WRITERS_VAR: &str = "OPTICACHE_BENCH_LARGE_WRITERS";
/// The large value.
const LARGE_VALUE_BYTES: usize = 1 << 20;

/// One benchmark's engine, created on first use and closed after the group.
struct OptiState {
    dir: tempfile::TempDir,
    engine: Rc<Engine<DmaStorage>>,
    next_key: Rc<Cell<u64>>,
}

fn bench_durable_puts(c: &mut Criterion, group_name: &str, value_bytes: usize, writers: usize, bytes_throughput: bool) {
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(if bytes_throughput { Throughput::Bytes(value_bytes as u64) } else { Throughput::Elements(1) });
    let payload = value(value_bytes, 7);
    let param = format!("{writers}w");

    // Both OptiCache variants: the default config, and (large values only)
    // without pre-filled segments, to show what the zero-fill costs.
    let mut variants = vec![("opticache", EngineConfig { durability: Durability::Sync, ..EngineConfig::default() })];
    if bytes_throughput {
        variants.push((
            "opticache-noprefill",
            EngineConfig { durability: Durability::Sync, prefill_segments: false, ..EngineConfig::default() },
        ));
    }
    for (name, config) in variants {
        let ex = executor();
        let mut state: Option<OptiState> = None;
        group.bench_function(BenchmarkId::new(name, &param), |b| {
            let st = state.get_or_insert_with(|| {
                let dir = bench_dir("put");
                let engine = Rc::new(ex.run(open_engine(dir.path(), config.clone())));
                OptiState { dir, engine, next_key: Rc::new(Cell::new(0)) }
            });
            b.iter_custom(|iters| {
                let engine = st.engine.clone();
                let next_key = st.next_key.clone();
                let payload = payload.clone();
                ex.run(timed_tasks(writers, iters, move |_, n| {
                    let (engine, next_key, payload) = (engine.clone(), next_key.clone(), payload.clone());
                    async move {
                        for _ in 0..n {
                            let i = next_key.get();
                            next_key.set(i + 1);
                            let out = engine.put(&key(i), payload.clone(), 1, 0).await.expect("put");
                            assert!(matches!(out, PutOutcome::Applied { .. }), "{out:?}");
                        }
                    }
                }))
            });
        });
        if let Some(st) = state {
            let s = st.engine.stats();
            report(
                &format!("{group_name}/{name}/{param} records per group commit"),
                format!(
                    "{:.1} ({} puts, {} fsyncs, mean fdatasync {} us)",
                    s.committed_records as f64 / s.commits.max(1) as f64,
                    s.puts,
                    s.fsyncs,
                    s.fsync_us_total / s.fsyncs.max(1)
                ),
            );
            ex.run(close_engine(st.engine));
            drop(st.dir);
        }
    }

    let mut fjall_state: Option<(tempfile::TempDir, fjall::Database, fjall::Keyspace, AtomicU64)> = None;
    group.bench_function(BenchmarkId::new("fjall", &param), |b| {
        let (_, db, ks, next_key) = fjall_state.get_or_insert_with(|| {
            let dir = bench_dir("put-fjall");
            let (db, ks) = open_fjall(dir.path(), None, None);
            (dir, db, ks, AtomicU64::new(0))
        });
        b.iter_custom(|iters| {
            timed_threads(writers, iters, |_, n| {
                for _ in 0..n {
                    let i = next_key.fetch_add(1, Ordering::Relaxed);
                    fjall_put_sync(db, ks, &key(i), &payload);
                }
            })
        });
    });
    if let Some((dir, db, ks, _)) = fjall_state {
        close_fjall(dir, db, ks);
    }
    group.finish();
}

/// The writer counts to run: `default`, or the list in the variable `var`.
fn writer_counts(var: &str, default: usize) -> Vec<usize> {
    match std::env::var(var) {
        Ok(list) => list.split(',').map(|w| w.trim().parse().expect(var)).collect(),
        Err(_) => vec![default],
    }
}

fn puts(c: &mut Criterion) {
    for writers in writer_counts(SMALL_WRITERS_VAR, SMALL_WRITERS) {
        bench_durable_puts(c, "put_4KiB_sync", SMALL_VALUE_BYTES, writers, false);
    }
    for writers in writer_counts(LARGE_WRITERS_VAR, LARGE_WRITERS) {
        bench_durable_puts(c, "put_1MiB_sync", LARGE_VALUE_BYTES, writers, true);
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = puts
}
criterion_main!(benches);
