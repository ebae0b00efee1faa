//! The engine's behaviour through its public API on real files (io_uring,
//! O_DIRECT): limits at and beyond, last-writer-wins, TTL, disk budgets in
//! both modes, compaction under concurrent load, chunked values, and I/O
//! faults injected at the storage trait.

use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use opticache_engine::config::{DiskFullPolicy, Durability, EngineConfig};
use opticache_engine::engine::{DeleteOutcome, Engine, PutOutcome, UpdateOutcome};
use opticache_engine::error::EngineError;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::io::faulty::{FaultOp, FaultPlan, FaultyStorage};
use opticache_engine::limits::{CHUNK_LEN_MAX, KEY_LEN_MAX};

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("join");
}

fn small_config() -> EngineConfig {
    EngineConfig {
        segment_bytes: 1 << 20,
        checkpoint_interval_bytes: 256 << 10,
        compaction_interval_ms: 3_600_000,
        ..EngineConfig::default()
    }
}

async fn open(dir: &Path, config: EngineConfig) -> Engine<DmaStorage> {
    let storage = DmaStorage::open_dir(&dir.join("log")).await.expect("storage");
    Engine::open(storage, &dir.join("index.map"), config).await.expect("open")
}

fn value(seed: u64, len: usize) -> Bytes {
    (0..len).map(|i| (i as u64 ^ seed.wrapping_mul(0x9e37_79b9)) as u8).collect()
}

#[test]
fn key_and_value_limits_at_and_beyond() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { max_value_bytes: 64 << 10, ..small_config() };
        let e = open(dir.path(), config).await;
        let max_key = vec![b'k'; KEY_LEN_MAX];
        e.put(&max_key, value(1, 10), 1, 0).await.expect("longest key");
        assert_eq!(e.get(&max_key).await.unwrap().unwrap().value, value(1, 10));
        for bad in [vec![], vec![b'k'; KEY_LEN_MAX + 1]] {
            let err = e.put(&bad, value(1, 1), 2, 0).await.unwrap_err();
            assert!(matches!(err, EngineError::InvalidKey { .. }), "{err}");
            assert!(matches!(e.get(&bad).await.unwrap_err(), EngineError::InvalidKey { .. }));
            assert!(matches!(e.delete(&bad, 3).await.unwrap_err(), EngineError::InvalidKey { .. }));
        }
        e.put(b"big", value(2, 64 << 10), 4, 0).await.expect("value at the limit");
        let err = e.put(b"big", value(3, (64 << 10) + 1), 5, 0).await.unwrap_err();
        assert!(matches!(err, EngineError::ValueTooLarge { len, max } if len == (64 << 10) + 1 && max == 64 << 10));
        // The rejected write left the stored value alone.
        let v = e.get(b"big").await.unwrap().unwrap();
        assert_eq!((v.value, v.version), (value(2, 64 << 10), 4));
        e.put(b"empty", Bytes::new(), 6, 0).await.expect("empty value");
        assert_eq!(e.get(b"empty").await.unwrap().unwrap().value, Bytes::new());
        e.close().await.unwrap();
    });
}

#[test]
fn last_writer_wins_by_version_for_puts_and_deletes() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), small_config()).await;
        assert_eq!(e.put(b"k", value(1, 100), 10, 0).await.unwrap(), PutOutcome::Applied { previous_version: None });
        assert_eq!(e.put(b"k", value(2, 100), 9, 0).await.unwrap(), PutOutcome::Stale { stored_version: 10 });
        assert_eq!(e.put(b"k", value(2, 100), 10, 0).await.unwrap(), PutOutcome::Stale { stored_version: 10 });
        assert_eq!(e.get(b"k").await.unwrap().unwrap().value, value(1, 100));
        assert_eq!(e.delete(b"k", 5).await.unwrap(), DeleteOutcome::Stale { stored_version: 10 });
        assert_eq!(e.delete(b"k", 11).await.unwrap(), DeleteOutcome::Deleted { previous_version: 10 });
        assert_eq!(e.get(b"k").await.unwrap(), None);
        // The tombstone keeps its version: an older put arriving late is ignored.
        assert_eq!(e.put(b"k", value(3, 100), 10, 0).await.unwrap(), PutOutcome::Stale { stored_version: 11 });
        assert_eq!(e.delete(b"absent", 1).await.unwrap(), DeleteOutcome::Absent);
        assert_eq!(e.put(b"absent", value(4, 1), 1, 0).await.unwrap(), PutOutcome::Stale { stored_version: 1 });
        assert_eq!(e.put(b"k", value(5, 100), 12, 0).await.unwrap(), PutOutcome::Applied { previous_version: None });
        // Compare-and-set.
        assert_eq!(e.update(b"nope", value(6, 1), 20, 0, 0).await.unwrap(), UpdateOutcome::NotFound);
        assert_eq!(
            e.update(b"k", value(6, 1), 20, 11, 0).await.unwrap(),
            UpdateOutcome::VersionMismatch { stored_version: 12 }
        );
        assert_eq!(
            e.update(b"k", value(6, 1), 20, 12, 0).await.unwrap(),
            UpdateOutcome::Updated { previous_version: 12 }
        );
        assert_eq!(
            e.update(b"k", value(7, 1), 21, 0, 0).await.unwrap(),
            UpdateOutcome::Updated { previous_version: 20 }
        );
        assert_eq!(e.get(b"k").await.unwrap().unwrap().version, 21);
        e.close().await.unwrap();
        // All of it survives a clean restart.
        let e = open(dir.path(), small_config()).await;
        assert!(e.recovery_report().clean);
        assert_eq!(e.get(b"k").await.unwrap().unwrap().value, value(7, 1));
        assert_eq!(e.put(b"absent", value(4, 1), 1, 0).await.unwrap(), PutOutcome::Stale { stored_version: 1 });
        e.close().await.unwrap();
    });
}

#[test]
fn expired_values_are_never_returned_and_compaction_reclaims_them() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), EngineConfig { compaction_garbage_ratio: 0.5, ..small_config() }).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        e.put(b"past", value(1, 10), 1, now - 1).await.unwrap();
        e.put(b"future", value(2, 10), 2, now + 3_600_000).await.unwrap();
        assert_eq!(e.get(b"past").await.unwrap(), None);
        assert_eq!(e.get(b"future").await.unwrap().unwrap().expiry_ms, now + 3_600_000);
        // Fill segments with values that expire at once, then compact.
        for i in 0..400u64 {
            e.put(format!("ttl-{i}").as_bytes(), value(i, 8 << 10), 10 + i, now - 1).await.unwrap();
        }
        e.put(b"keep", value(9, 100), 1000, 0).await.unwrap();
        let before = e.stats().disk_bytes;
        let reclaimed = e.compact_now().await.unwrap();
        assert!(reclaimed >= 2, "reclaimed {reclaimed} segments");
        assert!(e.stats().disk_bytes < before);
        for i in 0..400u64 {
            assert_eq!(e.get(format!("ttl-{i}").as_bytes()).await.unwrap(), None);
        }
        assert_eq!(e.get(b"keep").await.unwrap().unwrap().value, value(9, 100));
        assert_eq!(e.get(b"future").await.unwrap().unwrap().value, value(2, 10));
        e.close().await.unwrap();
    });
}

#[test]
fn store_mode_disk_budget_refuses_writes_and_keeps_reads() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config =
            EngineConfig { disk_budget_bytes: 4 << 20, disk_full_policy: DiskFullPolicy::Store, ..small_config() };
        let e = open(dir.path(), config).await;
        let mut stored = 0u64;
        let err = loop {
            match e.put(format!("k{stored}").as_bytes(), value(stored, 32 << 10), stored + 1, 0).await {
                Ok(_) => stored += 1,
                Err(err) => break err,
            }
            assert!(stored < 1000, "the budget never bit");
        };
        assert!(matches!(err, EngineError::DiskFull { budget_bytes, .. } if budget_bytes == 4 << 20), "{err}");
        assert!(stored > 50, "only {stored} writes fit in 4 MiB");
        assert!(e.stats().disk_bytes <= 4 << 20);
        for i in 0..stored {
            assert_eq!(e.get(format!("k{i}").as_bytes()).await.unwrap().unwrap().value, value(i, 32 << 10), "key {i}");
        }
        // The refused key was not written.
        assert_eq!(e.get(format!("k{stored}").as_bytes()).await.unwrap(), None);
        e.close().await.unwrap();
    });
}

#[test]
fn without_prefill_the_disk_bytes_follow_the_writes_and_the_budget_still_bites() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            prefill_segments: false,
            disk_budget_bytes: 4 << 20,
            disk_full_policy: DiskFullPolicy::Store,
            ..small_config()
        };
        let e = open(dir.path(), config).await;
        e.put(b"first", value(0, 64 << 10), 1, 0).await.unwrap();
        assert!(e.stats().disk_bytes >= 64 << 10, "disk bytes {} after a 64 KiB put", e.stats().disk_bytes);
        let mut stored = 1u64;
        let err = loop {
            match e.put(format!("k{stored}").as_bytes(), value(stored, 32 << 10), stored + 1, 0).await {
                Ok(_) => stored += 1,
                Err(err) => break err,
            }
            assert!(stored < 1000, "the budget never bit without prefill");
        };
        assert!(matches!(err, EngineError::DiskFull { .. }), "{err}");
        let on_disk: u64 = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .filter_map(|d| d.ok())
            .filter(|d| d.file_name().to_string_lossy().starts_with("seg-"))
            .map(|d| d.metadata().unwrap().len())
            .sum();
        assert_eq!(e.stats().disk_bytes, on_disk, "the stats say what the files hold");
        assert!(on_disk <= 4 << 20, "{on_disk} bytes on disk over a 4 MiB budget");
        e.close().await.unwrap();
    });
}

#[test]
fn cache_mode_disk_budget_drops_the_oldest_segments() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config =
            EngineConfig { disk_budget_bytes: 4 << 20, disk_full_policy: DiskFullPolicy::Cache, ..small_config() };
        let e = open(dir.path(), config).await;
        let n = 400u64;
        for i in 0..n {
            e.put(format!("k{i}").as_bytes(), value(i, 32 << 10), i + 1, 0).await.expect("cache mode never refuses");
        }
        let s = e.stats();
        assert!(s.disk_bytes <= 4 << 20, "{} bytes on disk", s.disk_bytes);
        assert!(s.segments_dropped > 0);
        // The newest keys are there; the oldest are gone, never wrong.
        assert_eq!(e.get(format!("k{}", n - 1).as_bytes()).await.unwrap().unwrap().value, value(n - 1, 32 << 10));
        assert_eq!(e.get(b"k0").await.unwrap(), None);
        let mut present = 0;
        for i in 0..n {
            if let Some(v) = e.get(format!("k{i}").as_bytes()).await.unwrap() {
                assert_eq!(v.value, value(i, 32 << 10));
                present += 1;
            }
        }
        assert!(present > 40 && present < n, "{present} present");
        e.close().await.unwrap();
    });
}

#[test]
fn compaction_under_concurrent_reads_and_writes_keeps_every_live_value() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { compaction_garbage_ratio: 0.3, memory_budget_bytes: 64 << 10, ..small_config() };
        let e = Rc::new(open(dir.path(), config).await);
        // Keys written once stay live in the oldest segments, among keys
        // overwritten round after round: compaction must move the first.
        let (fixed, hot) = (48u64, 16u64);
        let mut version = 1u64;
        let rounds = 36u64;
        for round in 0..rounds {
            for k in 0..hot {
                version += 1;
                e.put(format!("hot{k}").as_bytes(), value(version, 4000), version, 0).await.unwrap();
            }
            for k in (round * fixed / rounds)..((round + 1) * fixed / rounds) {
                e.put(format!("fixed{k}").as_bytes(), value(k, 4000), 1, 0).await.unwrap();
            }
        }
        let writer = {
            let e = e.clone();
            glommio::spawn_local(async move {
                for i in 0..300u64 {
                    let v = 1_000_000 + i;
                    e.put(format!("hot{}", i % hot).as_bytes(), value(v, 4000), v, 0).await.unwrap();
                }
            })
        };
        let reader = {
            let e = e.clone();
            glommio::spawn_local(async move {
                for i in 0..600u64 {
                    let k = i % fixed;
                    let got = e.get(format!("fixed{k}").as_bytes()).await.unwrap().expect("fixed keys stay");
                    assert_eq!((got.value, got.version), (value(k, 4000), 1), "fixed key {k}");
                    let got = e.get(format!("hot{}", i % hot).as_bytes()).await.unwrap().expect("hot keys stay");
                    // Whatever version is read, its bytes are the ones written with it.
                    assert_eq!(got.value, value(got.version, 4000), "hot key version {}", got.version);
                }
            })
        };
        let mut reclaimed = 0;
        for _ in 0..5 {
            reclaimed += e.compact_now().await.unwrap();
        }
        writer.await;
        reader.await;
        assert!(reclaimed > 0, "compaction reclaimed nothing");
        assert!(e.stats().compaction_records_moved > 0, "no live record was moved");
        let e = Rc::try_unwrap(e).expect("tasks done");
        let mut before = Vec::new();
        for k in 0..fixed {
            before.push(e.get(format!("fixed{k}").as_bytes()).await.unwrap().expect("fixed key"));
        }
        for k in 0..hot {
            let v = e.get(format!("hot{k}").as_bytes()).await.unwrap().expect("hot key");
            assert!(v.version >= 1_000_000, "hot key {k} lost its last write");
            before.push(v);
        }
        e.close().await.unwrap();
        let e = open(dir.path(), small_config()).await;
        assert!(e.recovery_report().clean);
        let keys = (0..fixed).map(|k| format!("fixed{k}")).chain((0..hot).map(|k| format!("hot{k}")));
        for (key, want) in keys.zip(&before) {
            assert_eq!(e.get(key.as_bytes()).await.unwrap().as_ref(), Some(want), "{key} after reopen");
        }
        e.close().await.unwrap();
    });
}

#[test]
fn chunked_values_become_visible_only_when_complete() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), small_config()).await;
        let total = 3 * CHUNK_LEN_MAX as u64 + 12345;
        // An abandoned upload leaves nothing visible.
        let mut w = e.put_chunked(b"big", total, 5, 0).await.unwrap();
        w.append(&value(1, CHUNK_LEN_MAX + 7)).await.unwrap();
        drop(w);
        assert_eq!(e.get(b"big").await.unwrap(), None);
        assert!(e.get_chunked(b"big").await.unwrap().is_none());
        // Too many bytes and too few are both refused.
        let mut w = e.put_chunked(b"big", 10, 6, 0).await.unwrap();
        assert!(matches!(w.append(&[0; 11]).await.unwrap_err(), EngineError::ChunkedLengthMismatch { .. }));
        drop(w);
        let mut w = e.put_chunked(b"big", 10, 7, 0).await.unwrap();
        w.append(&[0; 9]).await.unwrap();
        assert!(matches!(w.commit().await.unwrap_err(), EngineError::ChunkedLengthMismatch { .. }));
        assert_eq!(e.get(b"big").await.unwrap(), None);
        // A complete one reads back whole, in pieces and in one get.
        let data = value(2, total as usize);
        let mut w = e.put_chunked(b"big", total, 8, 0).await.unwrap();
        for piece in data.chunks(1 << 20) {
            w.append(piece).await.unwrap();
        }
        assert_eq!(w.commit().await.unwrap(), PutOutcome::Applied { previous_version: None });
        let mut r = e.get_chunked(b"big").await.unwrap().expect("visible");
        assert_eq!((r.total_len(), r.version()), (total, 8));
        let mut back = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            assert!(c.len() <= CHUNK_LEN_MAX);
            back.extend_from_slice(&c);
        }
        assert_eq!(back, data);
        assert_eq!(e.get(b"big").await.unwrap().unwrap().value, data);
        // An open reader keeps the shard's files open: drop it before reopening.
        drop(r);
        e.close().await.unwrap();
        let e = open(dir.path(), small_config()).await;
        assert_eq!(e.get(b"big").await.unwrap().unwrap().value, data);
        e.close().await.unwrap();
    });
}

/// Peak resident memory of this process, from /proc.
fn vm_hwm_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn one_gib_chunked_put_and_read_with_bounded_memory() {
    /// Piece `i` of the value: a fill byte and its own number, cheap to make
    /// and to compare (memset, memcmp) so the test measures the engine.
    fn piece(i: u64, len: usize) -> Vec<u8> {
        let mut p = vec![(i % 251) as u8; len];
        p[..8].copy_from_slice(&i.to_le_bytes());
        p
    }
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { segment_bytes: 256 << 20, durability: Durability::Sync, ..EngineConfig::default() };
        let e = open(dir.path(), config).await;
        let total: u64 = 1 << 30;
        let piece_len = 1 << 20;
        let pieces = total / piece_len as u64;
        let before = vm_hwm_bytes();
        let mut w = e.put_chunked(b"gib", total, 1, 0).await.unwrap();
        for i in 0..pieces {
            w.append(&piece(i, piece_len)).await.unwrap();
        }
        w.commit().await.unwrap();
        let mut r = e.get_chunked(b"gib").await.unwrap().unwrap();
        assert_eq!(r.total_len(), total);
        let mut back = Vec::with_capacity(piece_len);
        let mut next = 0u64;
        while let Some(c) = r.next_chunk().await.unwrap() {
            back.extend_from_slice(&c);
            while back.len() >= piece_len {
                assert!(back[..piece_len] == piece(next, piece_len)[..], "piece {next} differs");
                back.drain(..piece_len);
                next += 1;
            }
        }
        assert_eq!((next, back.len()), (pieces, 0), "pieces read back");
        drop(r);
        let growth = vm_hwm_bytes().saturating_sub(before);
        assert!(growth < 128 << 20, "peak RSS grew by {} MiB for a 1 GiB value", growth >> 20);
        e.close().await.unwrap();
    });
}

#[test]
fn a_failed_log_write_fences_writes_keeps_reads_and_loses_nothing_acknowledged() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = DmaStorage::open_dir(&dir.path().join("log")).await.unwrap();
        let faulty = FaultyStorage::new(log);
        let handle = faulty.handle();
        // No background segment preparation: the Nth call must be the write path's.
        let config = EngineConfig { prefill_segments: false, ..small_config() };
        let e = Engine::open(faulty, &dir.path().join("index.map"), config).await.unwrap();
        for i in 0..20u64 {
            e.put(format!("k{i}").as_bytes(), value(i, 500), i + 1, 0).await.unwrap();
        }
        handle.arm(FaultPlan::nth(1).only(FaultOp::WriteAt));
        let err = e.put(b"doomed", value(99, 500), 100, 0).await.unwrap_err();
        assert!(matches!(err, EngineError::Closed(_)), "{err}");
        // Fenced: later writes are refused too, reads go on.
        assert!(e.put(b"later", value(98, 5), 101, 0).await.is_err());
        assert_eq!(e.get(b"k3").await.unwrap().unwrap().value, value(3, 500));
        e.abandon().await;
        let e = open(dir.path(), small_config()).await;
        for i in 0..20u64 {
            assert_eq!(e.get(format!("k{i}").as_bytes()).await.unwrap().unwrap().value, value(i, 500));
        }
        assert_eq!(e.get(b"later").await.unwrap(), None);
        e.close().await.unwrap();
    });
}

#[test]
fn a_failed_fsync_is_never_acknowledged() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = DmaStorage::open_dir(&dir.path().join("log")).await.unwrap();
        let faulty = FaultyStorage::new(log);
        let handle = faulty.handle();
        // No background segment preparation: the Nth call must be the write path's.
        let config = EngineConfig { prefill_segments: false, ..small_config() };
        let e = Engine::open(faulty, &dir.path().join("index.map"), config).await.unwrap();
        e.put(b"before", value(1, 10), 1, 0).await.unwrap();
        handle.arm(FaultPlan::nth(1).only(FaultOp::Sync));
        assert!(e.put(b"during", value(2, 10), 2, 0).await.is_err());
        assert_eq!(e.get(b"during").await.unwrap(), None, "an unacknowledged write is not served");
        drop(e);
        let e = open(dir.path(), small_config()).await;
        assert_eq!(e.get(b"before").await.unwrap().unwrap().value, value(1, 10));
        e.close().await.unwrap();
    });
}

/// Waits (yielding to the executor, never sleeping blindly) until `done`
/// holds, failing after `deadline`.
async fn wait_until(what: &str, deadline: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[test]
fn interval_durability_acknowledges_before_fsync_and_syncs_on_its_timer() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { durability: Durability::Interval { interval_ms: 20 }, ..small_config() };
        let e = open(dir.path(), config).await;
        let syncs_at_start = e.stats().fsyncs;
        for i in 0..50u64 {
            e.put(format!("k{i}").as_bytes(), value(i, 1000), i + 1, 0).await.unwrap();
        }
        // Acknowledged without one fdatasync each...
        assert!(e.stats().fsyncs - syncs_at_start < 50, "{} fsyncs for 50 puts", e.stats().fsyncs);
        // ...and the timer syncs them soon after.
        let before = e.stats().fsyncs;
        wait_until("the interval fsync", std::time::Duration::from_secs(10), || e.stats().fsyncs > before).await;
        e.abandon().await;
        let e = open(dir.path(), small_config()).await;
        for i in 0..50u64 {
            assert_eq!(e.get(format!("k{i}").as_bytes()).await.unwrap().unwrap().value, value(i, 1000));
        }
        e.close().await.unwrap();
    });
}

#[test]
fn none_durability_never_fsyncs_a_write_and_survives_a_process_stop() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { durability: Durability::None, ..small_config() };
        let e = open(dir.path(), config).await;
        let syncs_at_start = e.stats().fsyncs;
        for i in 0..50u64 {
            e.put(format!("k{i}").as_bytes(), value(i, 1000), i + 1, 0).await.unwrap();
        }
        assert_eq!(e.stats().fsyncs, syncs_at_start, "no write waited for an fsync");
        // A process that stops without closing loses nothing the kernel has:
        // O_DIRECT writes reached the device.
        e.abandon().await;
        let e = open(dir.path(), small_config()).await;
        assert!(!e.recovery_report().clean);
        for i in 0..50u64 {
            assert_eq!(e.get(format!("k{i}").as_bytes()).await.unwrap().unwrap().value, value(i, 1000));
        }
        e.close().await.unwrap();
    });
}

#[test]
fn a_bad_configuration_is_refused_with_the_field_named() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(EngineConfig, &str); 5] = [
            (EngineConfig { segment_bytes: 1000, ..small_config() }, "segment_bytes"),
            (EngineConfig { segment_bytes: (1 << 30) + 4096, ..small_config() }, "segment_bytes"),
            (EngineConfig { max_value_bytes: usize::MAX, ..small_config() }, "max_value_bytes"),
            (EngineConfig { compaction_garbage_ratio: 1.5, ..small_config() }, "compaction_garbage_ratio"),
            (EngineConfig { durability: Durability::Interval { interval_ms: 0 }, ..small_config() }, "interval_ms"),
        ];
        for (config, field) in cases {
            let storage = DmaStorage::open_dir(&dir.path().join("log")).await.unwrap();
            let err = Engine::open(storage, &dir.path().join("index.map"), config).await.unwrap_err();
            assert!(matches!(&err, EngineError::Config(m) if m.contains(field)), "{err}");
        }
    });
}

#[test]
fn chunked_value_length_limit_at_and_beyond() {
    use opticache_engine::limits::CHUNKED_VALUE_LEN_MAX;
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), small_config()).await;
        let w = e.put_chunked(b"huge", CHUNKED_VALUE_LEN_MAX, 1, 0).await.expect("at the limit");
        drop(w);
        let err = e.put_chunked(b"huge", CHUNKED_VALUE_LEN_MAX + 1, 2, 0).await.unwrap_err();
        assert!(matches!(err, EngineError::ValueTooLarge { len, .. } if len == CHUNKED_VALUE_LEN_MAX + 1), "{err}");
        assert_eq!(e.get(b"huge").await.unwrap(), None);
        e.close().await.unwrap();
    });
}

/// Found by the model test: compaction reclaimed an expired value by dropping
/// its index entry, so the key forgot its version and an older write arriving
/// late was accepted (replicas would diverge). An expired value must become a
/// tombstone of the same version.
#[test]
fn regression_an_expired_value_reclaimed_by_compaction_keeps_its_version() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), EngineConfig { compaction_garbage_ratio: 0.1, ..small_config() }).await;
        e.put(b"expired", value(1, 100), 10, 1).await.unwrap();
        // Fill and seal segments so the expired record's segment is compacted.
        for i in 0..300u64 {
            e.put(format!("filler{}", i % 20).as_bytes(), value(i, 8000), 100 + i, 0).await.unwrap();
        }
        assert!(e.compact_now().await.unwrap() > 0, "the expired value's segment was compacted");
        assert_eq!(e.get(b"expired").await.unwrap(), None);
        assert_eq!(e.put(b"expired", value(2, 100), 5, 0).await.unwrap(), PutOutcome::Stale { stored_version: 10 });
        assert_eq!(
            e.put(b"expired", value(3, 100), 11, 0).await.unwrap(),
            PutOutcome::Applied { previous_version: None }
        );
        e.close().await.unwrap();
    });
}
