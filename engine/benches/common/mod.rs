//! What every OptiCache-versus-fjall benchmark shares: the criterion settings,
//! the smoke mode (`cargo bench -- --test`, run by `make test`), the glommio
//! executor the engine runs on, key and value makers, and the fjall set-up.
//!
//! Invariants the benchmarks keep:
//! - both engines run in the same process, in the same run, on real files in
//!   a tempdir under [`BENCH_DIR_PARENT`] (one disk for both);
//! - values are pseudo-random bytes, so fjall's LZ4 cannot shrink them;
//! - a write benchmark never overwrites a key (every put appends a new key),
//!   so neither engine has to look anything up before writing;
//! - an expensive set-up runs only when its benchmark is selected, and
//!   shrinks in smoke mode so `make test` stays fast.

#![allow(dead_code, reason = "each bench target compiles this module and uses a different part of it")]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use glommio::{LocalExecutor, LocalExecutorBuilder};
use opticache_engine::config::EngineConfig;
use opticache_engine::engine::Engine;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::limits::EXECUTOR_IO_MEMORY_BYTES;

/// Where benchmark data lives: the root file system, the disk the physical
/// limits in docs/benchmarks.md are measured on.
pub const BENCH_DIR_PARENT: &str = "/tmp";

/// Samples per benchmark: criterion's minimum, so `cargo bench` stays within
/// a few minutes on this 2-core machine.
pub const SAMPLES: usize = 10;
/// Warm-up before the samples of one benchmark.
pub const WARM_UP: Duration = Duration::from_millis(500);
/// The time criterion aims at for the samples of one benchmark.
pub const MEASUREMENT: Duration = Duration::from_secs(2);

/// Bytes of every benchmark key: the same for both engines.
pub const KEY_LEN: usize = 16;

/// True when criterion runs each benchmark once, unmeasured: under
/// `cargo bench -- --test`, and under `cargo test --bench` (which `make
/// test` uses: it reuses the test build instead of an optimised one, and
/// passes no `--bench`). Set-ups then shrink to a smoke test.
pub fn smoke_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

/// `full` normally, `smoke` in smoke mode.
pub fn scaled(full: u64, smoke: u64) -> u64 {
    if smoke_mode() {
        smoke
    } else {
        full
    }
}

/// The criterion settings all benchmark targets use.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .without_plots()
        .configure_from_args()
}

/// A fresh directory for one benchmark, removed when dropped.
pub fn bench_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("opticache-bench-{name}-"))
        .tempdir_in(BENCH_DIR_PARENT)
        .expect("bench tempdir")
}

/// A glommio executor on the calling thread, with the DMA memory the engine
/// asks an executor to reserve. Benchmarks call `run` on it once per measured
/// batch; the engine and its background tasks live on between batches.
pub fn executor() -> LocalExecutor {
    LocalExecutorBuilder::default().io_memory(EXECUTOR_IO_MEMORY_BYTES).make().expect("glommio executor")
}

/// The engine's files inside a benchmark directory.
pub fn engine_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("log"), dir.join("index.map"))
}

/// Opens (or creates) the engine stored in `dir`. Runs inside the executor.
pub async fn open_engine(dir: &Path, config: EngineConfig) -> Engine<DmaStorage> {
    let (log, index) = engine_paths(dir);
    let storage = DmaStorage::open_dir(&log).await.expect("open storage");
    Engine::open(storage, &index, config).await.expect("open engine")
}

/// Closes an engine shared with tasks that have all finished.
pub async fn close_engine(engine: Rc<Engine<DmaStorage>>) {
    let engine = Rc::try_unwrap(engine).expect("no task still holds the engine");
    engine.close().await.expect("close engine");
}

/// The key of item `i`: a fixed prefix and `i`, big-endian, [`KEY_LEN`] bytes.
pub fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(b"benchkey");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A small, fast pseudo-random generator (xorshift64*): reproducible orders
/// and incompressible values without another dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform index below `n` (n > 0; the modulo bias is negligible here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `len` incompressible bytes.
pub fn value(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// The numbers `0..n` in a reproducible random order (Fisher-Yates).
pub fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// How many of `total` operations worker `worker` of `workers` does.
pub fn share(total: u64, workers: usize, worker: usize) -> u64 {
    let workers = workers as u64;
    let worker = worker as u64;
    total / workers + u64::from(worker < total % workers)
}

/// Runs `workers` glommio tasks on the current executor, task `w` running
/// `body(w, share)`, and returns the wall time from the first spawn to the
/// last completion.
pub async fn timed_tasks<F, Fut>(workers: usize, total: u64, body: F) -> Duration
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers).map(|w| glommio::spawn_local(body(w, share(total, workers, w)))).collect();
    for t in tasks {
        t.await;
    }
    start.elapsed()
}

/// Runs `workers` OS threads, thread `w` running `body(w, share)`, and returns
/// the wall time from the first spawn to the last join.
pub fn timed_threads<F>(workers: usize, total: u64, body: F) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let body = &body;
            let n = share(total, workers, w);
            s.spawn(move || body(w, n));
        }
    });
    start.elapsed()
}

/// Opens a fjall database with one keyspace `bench` in `dir`, with default
/// settings unless `memtable_bytes` and `journal_bytes` say otherwise.
pub fn open_fjall(
    dir: &Path,
    memtable_bytes: Option<u64>,
    journal_bytes: Option<u64>,
) -> (fjall::Database, fjall::Keyspace) {
    let mut builder = fjall::Database::builder(dir);
    if let Some(bytes) = journal_bytes {
        builder = builder.max_journaling_size(bytes);
    }
    let db = builder.open().expect("open fjall");
    let ks = db
        .keyspace("bench", || {
            let opts = fjall::KeyspaceCreateOptions::default();
            match memtable_bytes {
                Some(bytes) => opts.max_memtable_size(bytes),
                None => opts,
            }
        })
        .expect("open fjall keyspace");
    (db, ks)
}

/// Closes a fjall database, then removes its directory: the directory must
/// outlive the database, whose background threads may still write into it.
pub fn close_fjall(dir: tempfile::TempDir, db: fjall::Database, ks: fjall::Keyspace) {
    drop(ks);
    drop(db);
    drop(dir);
}

/// One durable fjall write: a one-item batch committed with
/// `PersistMode::SyncAll` (the journal is written and fsynced before the
/// call returns), fjall's closest setting to OptiCache's `Durability::Sync`.
pub fn fjall_put_sync(db: &fjall::Database, ks: &fjall::Keyspace, key: &[u8], value: &[u8]) {
    let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncAll));
    batch.insert(ks, key, value);
    batch.commit().expect("fjall durable put");
}

/// Drops the page cache of every file under `dir` (posix_fadvise DONTNEED,
/// after an fsync so no page is dirty), so fjall's buffered reads that follow
/// go to the disk, as OptiCache's O_DIRECT reads always do.
pub fn evict_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            evict_page_cache(&path);
            continue;
        }
        let Ok(file) = std::fs::File::open(&path) else { continue };
        // Not every file is fjall's to sync (a lock file may be read-only); a
        // failed sync only means its pages may stay cached.
        let _ = file.sync_all();
        // SAFETY: the descriptor is open for the duration of the call; the
        // advice only drops clean cached pages of this file.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        debug_assert_eq!(rc, 0, "posix_fadvise on {}", path.display());
    }
}

/// Prints one figure that is not a criterion measurement (memory per key,
/// records replayed) so the run's log holds it next to the timings.
pub fn report(name: &str, figure: impl std::fmt::Display) {
    println!("FIGURE {name}: {figure}");
}
