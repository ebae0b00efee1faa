//! Restart time, OptiCache against fjall in the same run, and OptiCache's
//! index memory per key:
//! - clean reopen of a shard holding [`REOPEN_KEYS`] keys (closed cleanly:
//!   the index is mapped and no log is read); fjall reopens the same keys
//!   after they were flushed into its tables;
//! - crash recovery replaying [`CRASH_LOG_BYTES`] of log: the shard is left
//!   with `abandon()` (no clean checkpoint) after writing that much log, with
//!   segments and the checkpoint interval large enough that all of it must be
//!   replayed; fjall replays a journal of the same size (its memtable and
//!   journal limits raised so nothing was flushed to tables).
//!
//! Every measured open is preceded (untimed) by evicting fjall's files from
//! the page cache, so both engines read from the disk; OptiCache reads with
//! O_DIRECT anyway.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use opticache_engine::config::{Durability, EngineConfig};
use opticache_engine::engine::Engine;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::record::encoded_len;

use common::{
    bench_dir, close_engine, evict_page_cache, executor, key, open_engine, open_fjall, report, scaled, timed_tasks,
    value, KEY_LEN,
};

/// Keys of the clean-reopen shard (smoke mode: [`REOPEN_KEYS_SMOKE`]).
const REOPEN_KEYS: u64 = 1_000_000;
const REOPEN_KEYS_SMOKE: u64 = 10_000;
const REOPEN_VALUE_BYTES: usize = 100;

/// Log the crash-recovery benchmark replays (smoke mode: [`CRASH_LOG_BYTES_SMOKE`]).
const CRASH_LOG_BYTES: u64 = 256 << 20;
const CRASH_LOG_BYTES_SMOKE: u64 = 4 << 20;
const CRASH_VALUE_BYTES: usize = 4 << 10;
/// Segment size for the crash benchmark: larger than the log it writes, so no
/// segment roll (which checkpoints the index) shortens the replay.
const CRASH_SEGMENT_BYTES: u64 = 512 << 20;
/// fjall's memtable and journal limits for the crash benchmark: above the
/// journal written, so all of it stays in the journal.
const FJALL_CRASH_MEMTABLE_BYTES: u64 = 512 << 20;
const FJALL_CRASH_JOURNAL_BYTES: u64 = 1 << 30;

/// Writers that load the data sets (not measured).
const LOAD_WRITERS: usize = 64;
/// Items per fjall write batch when loading (not measured).
const FJALL_LOAD_BATCH: u64 = 1_000;

/// Puts keys `0..keys` with `value_bytes` values through `LOAD_WRITERS` tasks.
async fn load(engine: &Rc<Engine<DmaStorage>>, keys: u64, value_bytes: usize) {
    let next = Rc::new(Cell::new(0u64));
    let payload = value(value_bytes, 3);
    timed_tasks(LOAD_WRITERS, keys, |_, n| {
        let (engine, next, payload) = (engine.clone(), next.clone(), payload.clone());
        async move {
            for _ in 0..n {
                let i = next.get();
                next.set(i + 1);
                engine.put(&key(i), payload.clone(), 1, 0).await.expect("load put");
            }
        }
    })
    .await;
}

fn fjall_load(db: &fjall::Database, ks: &fjall::Keyspace, keys: u64, value_bytes: usize) {
    let payload = value(value_bytes, 3);
    let mut i = 0;
    while i < keys {
        let mut batch = db.batch();
        for k in i..(i + FJALL_LOAD_BATCH).min(keys) {
            batch.insert(ks, &key(k)[..], &payload[..]);
        }
        batch.commit().expect("fjall load");
        i += FJALL_LOAD_BATCH;
    }
    db.persist(fjall::PersistMode::SyncAll).expect("fjall persist");
}

fn clean_reopen(c: &mut Criterion) {
    let keys = scaled(REOPEN_KEYS, REOPEN_KEYS_SMOKE);
    let mut group = c.benchmark_group("reopen_clean");
    group.sampling_mode(SamplingMode::Flat);
    let param = format!("{keys}keys");
    let config = EngineConfig { durability: Durability::None, ..EngineConfig::default() };

    let ex = executor();
    let mut dir = None;
    group.bench_function(BenchmarkId::new("opticache", &param), |b| {
        let dir = dir.get_or_insert_with(|| {
            let dir = bench_dir("reopen");
            ex.run(async {
                let engine = Rc::new(open_engine(dir.path(), config.clone()).await);
                load(&engine, keys, REOPEN_VALUE_BYTES).await;
                let s = engine.stats();
                assert_eq!(s.keys, keys);
                report(
                    &format!("index_bytes_per_key/opticache/{keys}keys"),
                    format!(
                        "{:.2} (index_file_bytes {} / keys {}, key {KEY_LEN} B, value {REOPEN_VALUE_BYTES} B)",
                        s.index_file_bytes as f64 / s.keys as f64,
                        s.index_file_bytes,
                        s.keys
                    ),
                );
                close_engine(engine).await;
            });
            dir
        });
        b.iter_custom(|iters| {
            ex.run(async {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let engine = open_engine(dir.path(), config.clone()).await;
                    took += start.elapsed();
                    assert!(engine.recovery_report().clean, "{:?}", engine.recovery_report());
                    assert_eq!(engine.stats().keys, keys);
                    engine.close().await.expect("close");
                }
                took
            })
        });
    });
    drop(dir);
    drop(ex);

    let mut fjall_dir = None;
    group.bench_function(BenchmarkId::new("fjall", &param), |b| {
        let dir = fjall_dir.get_or_insert_with(|| {
            let dir = bench_dir("reopen-fjall");
            let (db, ks) = open_fjall(dir.path(), None, None);
            fjall_load(&db, &ks, keys, REOPEN_VALUE_BYTES);
            ks.rotate_memtable_and_wait().expect("fjall flush");
            dir
        });
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                evict_page_cache(dir.path());
                let start = Instant::now();
                let (db, ks) = open_fjall(dir.path(), None, None);
                took += start.elapsed();
                assert!(ks.contains_key(key(keys - 1)).expect("fjall get"));
                drop((ks, db));
            }
            took
        });
    });
    drop(fjall_dir);
    group.finish();
}

fn crash_recovery(c: &mut Criterion) {
    let log_bytes = scaled(CRASH_LOG_BYTES, CRASH_LOG_BYTES_SMOKE);
    let record_bytes = encoded_len(KEY_LEN, CRASH_VALUE_BYTES) as u64;
    let puts = log_bytes.div_ceil(record_bytes);
    let mut group = c.benchmark_group("recovery_crash");
    group.sampling_mode(SamplingMode::Flat);
    let param = format!("{}MiB", log_bytes >> 20);
    let config = EngineConfig {
        durability: Durability::None,
        segment_bytes: CRASH_SEGMENT_BYTES,
        checkpoint_interval_bytes: 2 * CRASH_SEGMENT_BYTES,
        ..EngineConfig::default()
    };

    let ex = executor();
    let replayed = Cell::new(0u64);
    group.bench_function(BenchmarkId::new("opticache", &param), |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh crashed shard per measured open: recovery
                    // checkpoints, so a second open would replay nothing.
                    let dir = bench_dir("crash");
                    let engine = Rc::new(open_engine(dir.path(), config.clone()).await);
                    load(&engine, puts, CRASH_VALUE_BYTES).await;
                    Rc::try_unwrap(engine).expect("loaders done").abandon().await;

                    let start = Instant::now();
                    let engine = open_engine(dir.path(), config.clone()).await;
                    took += start.elapsed();
                    let r = engine.recovery_report();
                    assert!(!r.clean && r.replayed_records >= puts, "{r:?}");
                    replayed.set(r.replayed_records);
                    engine.abandon().await;
                }
                took
            })
        });
    });
    if replayed.get() > 0 {
        report(
            &format!("recovery_crash/opticache/{param} records replayed"),
            format!("{} ({puts} written, {record_bytes} B each)", replayed.get()),
        );
    }
    drop(ex);

    let mut fjall_dir = None;
    group.bench_function(BenchmarkId::new("fjall", &param), |b| {
        let dir = fjall_dir.get_or_insert_with(|| {
            let dir = bench_dir("crash-fjall");
            let (db, ks) = open_fjall(dir.path(), Some(FJALL_CRASH_MEMTABLE_BYTES), Some(FJALL_CRASH_JOURNAL_BYTES));
            fjall_load(&db, &ks, puts, CRASH_VALUE_BYTES);
            report(&format!("recovery_crash/fjall/{param} journal bytes"), db.journal_disk_space().unwrap_or(0));
            // Dropping a fjall database does not flush its memtables, so
            // the next open replays the whole journal, as after a crash.
            dir
        });
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                evict_page_cache(dir.path());
                let start = Instant::now();
                let (db, ks) =
                    open_fjall(dir.path(), Some(FJALL_CRASH_MEMTABLE_BYTES), Some(FJALL_CRASH_JOURNAL_BYTES));
                took += start.elapsed();
                assert_eq!(ks.approximate_len() as u64, puts, "the whole journal was replayed");
                drop((ks, db));
            }
            took
        });
    });
    drop(fjall_dir);
    group.finish();
}

/// A crash on a shard that already held data: [`REOPEN_KEYS`] keys closed
/// cleanly, reopened, then [`CRASH_LOG_BYTES`] of new 4 KiB keys and a crash.
/// Only the new log is after the checkpoint, so only it should be replayed.
/// The set-up is too slow to repeat for criterion's ten samples, so this runs
/// once per `cargo bench` (skipped in smoke mode and when a filter excludes
/// it) and prints its figures.
fn crash_on_loaded_shard(_: &mut Criterion) {
    const NAME: &str = "recovery_crash_loaded";
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if common::smoke_mode() || filter.is_some_and(|f| !NAME.contains(&f) && !f.contains(NAME)) {
        return;
    }
    let config = EngineConfig {
        durability: Durability::None,
        segment_bytes: opticache_engine::limits::SEGMENT_LEN_MAX,
        checkpoint_interval_bytes: 2 * opticache_engine::limits::SEGMENT_LEN_MAX,
        ..EngineConfig::default()
    };
    let record_bytes = encoded_len(KEY_LEN, CRASH_VALUE_BYTES) as u64;
    let puts = CRASH_LOG_BYTES.div_ceil(record_bytes);
    let ex = executor();
    let dir = bench_dir("crash-loaded");
    ex.run(async {
        let engine = Rc::new(open_engine(dir.path(), config.clone()).await);
        load(&engine, REOPEN_KEYS, REOPEN_VALUE_BYTES).await;
        close_engine(engine).await;

        let engine = Rc::new(open_engine(dir.path(), config.clone()).await);
        let next = Rc::new(Cell::new(REOPEN_KEYS));
        let payload = value(CRASH_VALUE_BYTES, 5);
        timed_tasks(LOAD_WRITERS, puts, |_, n| {
            let (engine, next, payload) = (engine.clone(), next.clone(), payload.clone());
            async move {
                for _ in 0..n {
                    let i = next.get();
                    next.set(i + 1);
                    engine.put(&key(i), payload.clone(), 1, 0).await.expect("put");
                }
            }
        })
        .await;
        Rc::try_unwrap(engine).expect("writers done").abandon().await;

        let start = Instant::now();
        let engine = open_engine(dir.path(), config.clone()).await;
        let took = start.elapsed();
        let r = engine.recovery_report().clone();
        assert_eq!(engine.stats().keys, REOPEN_KEYS + puts);
        engine.close().await.expect("close");
        report(
            &format!("{NAME}/opticache/{}keys+{}MiB", REOPEN_KEYS, CRASH_LOG_BYTES >> 20),
            format!(
                "open {:.1} ms, records replayed {} (written after the checkpoint: {puts}), index rebuilt {}",
                took.as_secs_f64() * 1e3,
                r.replayed_records,
                r.index_rebuilt
            ),
        );
    });
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = clean_reopen, crash_recovery, crash_on_loaded_shard
}
criterion_main!(benches);
