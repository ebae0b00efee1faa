//! The key listing (`Engine::list_keys`) through the public API on real files
//! (io_uring, O_DIRECT), as the node's `ListKeys` RPC uses it to repair a
//! replica: every key listed exactly once with its version, tombstone flag and
//! expiry, whatever the page size and however the fingerprint space is split;
//! across compactions that move records between pages and during a page's
//! reads; empty ranges; the limit refused at 0 and clamped above its maximum;
//! the read-byte budget ending a page of large values early; and a record that
//! fails its crc skipped and counted, never listed.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use opticache_engine::config::{Durability, EngineConfig};
use opticache_engine::engine::{DeleteOutcome, Engine, PutOutcome};
use opticache_engine::error::EngineError;
use opticache_engine::index::fingerprint;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::limits::{CHUNK_LEN_MAX, EXECUTOR_IO_MEMORY_BYTES, LIST_PAGE_LEN_MAX, LIST_PAGE_READ_BYTES_MAX};
use opticache_engine::listing::{KeyListing, ListedKey, LIST_TO_END};

/// A listing that has not ended after this many pages is looping.
const PAGES_MAX: usize = 100_000;

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .io_memory(EXECUTOR_IO_MEMORY_BYTES)
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("join");
}

/// Small segments so a few hundred keys span several; no compaction behind
/// the tests' back; no fdatasync per write (durability is not under test).
fn config() -> EngineConfig {
    EngineConfig {
        segment_bytes: 1 << 20,
        compaction_interval_ms: 3_600_000,
        durability: Durability::None,
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

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Whether `fp` is in the listing range `[start, end)` (`end == LIST_TO_END`
/// reaching `u64::MAX` itself).
fn in_range(fp: u64, start: u64, end: u64) -> bool {
    fp >= start && (end == LIST_TO_END || fp < end)
}

/// Checks what every page must be: at most `limit` entries (no two test keys
/// share a fingerprint), ascending, inside the range, fingerprints that are
/// their keys', and a next start past the page and inside the range.
fn check_page(page: &KeyListing, start: u64, end: u64, limit: usize) {
    assert!(page.entries.len() <= limit, "{} entries for a limit of {limit}", page.entries.len());
    for k in &page.entries {
        assert_eq!(k.fingerprint, fingerprint(&k.key), "{:?}: fingerprint", k.key);
        assert!(in_range(k.fingerprint, start, end), "{:?} outside [{start:#x}, {end:#x})", k.key);
    }
    assert!(page.entries.windows(2).all(|w| (w[0].fingerprint, &w[0].key) < (w[1].fingerprint, &w[1].key)));
    if let Some(next) = page.next_fingerprint {
        assert!(in_range(next, start, end), "next {next:#x} outside [{start:#x}, {end:#x})");
        if let Some(last) = page.entries.last() {
            assert!(next > last.fingerprint, "next {next:#x} does not pass the page's last {:#x}", last.fingerprint);
        }
    }
}

/// Every page of `[start, end)` with `limit`, checked, concatenated.
async fn list_all(e: &Engine<DmaStorage>, start: u64, end: u64, limit: usize) -> Vec<ListedKey> {
    let mut all = Vec::new();
    let mut at = start;
    for _ in 0..PAGES_MAX {
        let page = e.list_keys(at, end, limit).await.expect("list_keys");
        check_page(&page, start, end, limit);
        all.extend(page.entries);
        match page.next_fingerprint {
            Some(next) => at = next,
            None => return all,
        }
    }
    panic!("listing of [{start:#x}, {end:#x}) by {limit} did not end");
}

/// The listing as a map by key, asserting that no key came twice.
fn by_key(listed: Vec<ListedKey>) -> BTreeMap<Bytes, ListedKey> {
    let mut map = BTreeMap::new();
    for k in listed {
        let key = k.key.clone();
        assert!(map.insert(key.clone(), k).is_none(), "{key:?} listed twice");
    }
    map
}

/// What a key should be listed as; a tombstone's expiry (when compaction may
/// forget it) is set by the engine's clock, so only its range is known.
#[derive(Clone, Copy, Debug)]
struct Want {
    version: u64,
    tombstone: bool,
    expiry_ms: u64,
}

fn check_against(listed: &BTreeMap<Bytes, ListedKey>, model: &BTreeMap<Bytes, Want>, written_from_ms: u64) {
    assert_eq!(listed.len(), model.len(), "keys listed");
    for (key, want) in model {
        let got = listed.get(key).unwrap_or_else(|| panic!("{key:?} not listed"));
        assert_eq!((got.version, got.tombstone), (want.version, want.tombstone), "{key:?}");
        if want.tombstone {
            // The default retention is a day: forget-at is far ahead.
            assert!(got.expiry_ms > written_from_ms, "{key:?}: tombstone retention {}", got.expiry_ms);
        } else {
            assert_eq!(got.expiry_ms, want.expiry_ms, "{key:?}: expiry");
        }
    }
}

#[test]
fn every_key_is_listed_once_with_its_version_tombstone_and_expiry() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), config()).await;
        let now = now_ms();
        let mut model: BTreeMap<Bytes, Want> = BTreeMap::new();
        for i in 0..600u64 {
            let key = Bytes::from(format!("key-{i:04}"));
            let expiry_ms = match i {
                _ if i % 11 == 0 => now - 1, // expired: listed, the caller decides
                _ if i % 7 == 0 => now + 3_600_000,
                _ => 0,
            };
            let version = 1000 + i * 3;
            e.put(&key, value(i, 100 + (i as usize % 300)), version, expiry_ms).await.unwrap();
            let mut want = Want { version, tombstone: false, expiry_ms };
            if i % 5 == 0 {
                // (Absent for an expired value: a tombstone either way.)
                assert!(!matches!(e.delete(&key, version + 1).await.unwrap(), DeleteOutcome::Stale { .. }));
                want = Want { version: version + 1, tombstone: true, expiry_ms: 0 };
            } else if i % 13 == 0 {
                e.put(&key, value(i + 1, 50), version + 2, 0).await.unwrap();
                want = Want { version: version + 2, tombstone: false, expiry_ms: 0 };
            }
            model.insert(key, want);
        }
        // A delete of a key never written leaves a tombstone holding its version.
        assert_eq!(e.delete(b"ghost", 7).await.unwrap(), DeleteOutcome::Absent);
        model.insert(Bytes::from_static(b"ghost"), Want { version: 7, tombstone: true, expiry_ms: 0 });
        // A chunked value is one key (its manifest), whatever its chunks.
        let total = 2 * CHUNK_LEN_MAX as u64 + 4321;
        let mut w = e.put_chunked(b"chunked", total, 77, now + 60_000).await.unwrap();
        w.append(&value(9, total as usize)).await.unwrap();
        assert_eq!(w.commit().await.unwrap(), PutOutcome::Applied { previous_version: None });
        model.insert(Bytes::from_static(b"chunked"), Want { version: 77, tombstone: false, expiry_ms: now + 60_000 });
        assert!(e.stats().segments.len() >= 3, "the keys span several segments");

        let full = list_all(&e, 0, LIST_TO_END, 4096).await;
        assert_eq!(full.len(), model.len());
        check_against(&by_key(full.clone()), &model, now);
        for limit in [1, 3, 64, 601, 1000] {
            assert_eq!(list_all(&e, 0, LIST_TO_END, limit).await, full, "pages of {limit}");
        }
        // Ranges split at arbitrary points (mid-partition) and at prefix
        // boundaries tile the space: together they are the full listing.
        let mid = full[full.len() / 2].fingerprint;
        let mut splits = vec![0, 1 << 62, mid, mid + 1, 1 << 63, 3 << 62, LIST_TO_END];
        splits.sort_unstable();
        splits.dedup();
        let mut tiled = Vec::new();
        for w in splits.windows(2) {
            tiled.extend(list_all(&e, w[0], w[1], 50).await);
        }
        assert_eq!(tiled, full, "ranges tile the listing");
        assert_eq!(list_all(&e, mid, mid + 1, 10).await, [full[full.len() / 2].clone()]);
        assert_eq!(e.stats().corrupt_records, 0);

        // The same after a clean reopen (the index is mapped, not rebuilt).
        e.close().await.unwrap();
        let e = open(dir.path(), config()).await;
        assert!(e.recovery_report().clean);
        assert_eq!(list_all(&e, 0, LIST_TO_END, 97).await, full);
        e.close().await.unwrap();
    });
}

#[test]
fn a_listing_across_compactions_lists_every_key_once() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = Rc::new(open(dir.path(), EngineConfig { compaction_garbage_ratio: 0.3, ..config() }).await);
        // Keys written once stay live among keys overwritten round after
        // round, so compaction moves them, between pages and during them.
        let (fixed, hot, rounds) = (120u64, 16u64, 30u64);
        let mut version = 1u64;
        for round in 0..rounds {
            for k in 0..hot {
                version += 1;
                e.put(format!("hot{k}").as_bytes(), value(version, 4000), version, 0).await.unwrap();
            }
            for k in (round * fixed / rounds)..((round + 1) * fixed / rounds) {
                e.put(format!("fixed{k}").as_bytes(), value(k, 4000), 1 + k, 0).await.unwrap();
            }
        }
        let hot_before: Vec<u64> = {
            let mut v = Vec::new();
            for k in 0..hot {
                v.push(e.get(format!("hot{k}").as_bytes()).await.unwrap().unwrap().version);
            }
            v
        };
        let check_fixed = |listed: &BTreeMap<Bytes, ListedKey>| {
            for k in 0..fixed {
                let got = listed.get(format!("fixed{k}").as_bytes()).unwrap_or_else(|| panic!("fixed{k} not listed"));
                assert_eq!((got.version, got.tombstone), (1 + k, false), "fixed{k}");
            }
        };

        // Quiet: a compaction between every two pages.
        let mut listed = Vec::new();
        let mut at = 0;
        let mut reclaimed = 0;
        loop {
            let page = e.list_keys(at, LIST_TO_END, 7).await.unwrap();
            check_page(&page, 0, LIST_TO_END, 7);
            listed.extend(page.entries);
            reclaimed += e.compact_now().await.unwrap();
            match page.next_fingerprint {
                Some(next) => at = next,
                None => break,
            }
        }
        assert!(reclaimed > 0, "compaction reclaimed nothing");
        assert!(e.stats().compaction_records_moved > 0, "no live record moved");
        let listed = by_key(listed);
        assert_eq!(listed.len() as u64, fixed + hot);
        check_fixed(&listed);
        for k in 0..hot {
            assert_eq!(listed[format!("hot{k}").as_bytes()].version, hot_before[k as usize], "hot{k}");
        }

        // Busy: hot keys overwritten and compaction running while pages are
        // read. Unchanged keys are listed exactly once; overwritten ones at
        // most once, with a version they held during the listing.
        let moved_before = e.stats().compaction_records_moved;
        let writer = {
            let e = e.clone();
            glommio::spawn_local(async move {
                for i in 0..400u64 {
                    let v = 1_000_000 + i;
                    e.put(format!("hot{}", i % hot).as_bytes(), value(v, 4000), v, 0).await.unwrap();
                    if i % 50 == 0 {
                        e.compact_now().await.unwrap();
                    }
                }
            })
        };
        let listed = by_key(list_all(&e, 0, LIST_TO_END, 3).await);
        writer.await;
        assert!(e.stats().compaction_records_moved > moved_before, "nothing moved during the listing");
        check_fixed(&listed);
        for k in 0..hot {
            if let Some(got) = listed.get(format!("hot{k}").as_bytes()) {
                let last = e.get(format!("hot{k}").as_bytes()).await.unwrap().unwrap().version;
                assert!((hot_before[k as usize]..=last).contains(&got.version), "hot{k} at {}", got.version);
            }
        }
        assert_eq!(listed.len() as u64, fixed + listed.keys().filter(|k| k.starts_with(b"hot")).count() as u64);
        // Quiet again: everything, with the last versions.
        let listed = by_key(list_all(&e, 0, LIST_TO_END, 4096).await);
        assert_eq!(listed.len() as u64, fixed + hot);
        check_fixed(&listed);
        assert_eq!(e.stats().corrupt_records, 0);
        Rc::try_unwrap(e).expect("tasks done").close().await.unwrap();
    });
}

#[test]
fn empty_ranges_and_an_empty_shard_list_nothing() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), config()).await;
        assert_eq!(e.list_keys(0, LIST_TO_END, 10).await.unwrap(), KeyListing::default());
        for i in 0..20u64 {
            e.put(format!("k{i}").as_bytes(), value(i, 10), 1, 0).await.unwrap();
        }
        let mut fps: Vec<u64> = (0..20u64).map(|i| fingerprint(format!("k{i}").as_bytes())).collect();
        fps.sort_unstable();
        let (a, b) = (fps[3], fps[4]);
        let empty = KeyListing::default();
        // No fingerprint between two neighbours, a range of zero width, a
        // reversed range, and the last fingerprint alone.
        assert_eq!(e.list_keys(a + 1, b, 10).await.unwrap(), empty);
        assert_eq!(e.list_keys(a, a, 10).await.unwrap(), empty);
        assert_eq!(e.list_keys(b, a, 10).await.unwrap(), empty);
        assert_eq!(e.list_keys(u64::MAX, LIST_TO_END, 10).await.unwrap(), empty);
        assert_eq!(e.list_keys(fps[19] + 1, LIST_TO_END, 10).await.unwrap(), empty);
        // One fingerprint's range holds exactly its key.
        let one = e.list_keys(a, a + 1, 10).await.unwrap();
        assert_eq!(one.entries.iter().map(|k| k.fingerprint).collect::<Vec<_>>(), [a]);
        assert_eq!(one.next_fingerprint, None);
        // A page that ends just before a key says where the next starts.
        let page = e.list_keys(a, LIST_TO_END, 1).await.unwrap();
        assert_eq!((page.entries.len(), page.next_fingerprint), (1, Some(b)));
        e.close().await.unwrap();
    });
}

#[test]
fn a_limit_of_zero_is_refused_and_limits_above_the_maximum_are_clamped() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), config()).await;
        let err = e.list_keys(0, LIST_TO_END, 0).await.unwrap_err();
        assert!(matches!(err, EngineError::InvalidListLimit { limit: 0 }), "{err}");
        let keys = LIST_PAGE_LEN_MAX + 100;
        for i in 0..keys {
            e.put(format!("k{i}").as_bytes(), value(i as u64, 8), 1, 0).await.unwrap();
        }
        for limit in [LIST_PAGE_LEN_MAX, LIST_PAGE_LEN_MAX + 1, usize::MAX] {
            let first = e.list_keys(0, LIST_TO_END, limit).await.unwrap();
            assert_eq!(first.entries.len(), LIST_PAGE_LEN_MAX, "limit {limit}");
            let next = first.next_fingerprint.expect("more keys");
            let second = e.list_keys(next, LIST_TO_END, limit).await.unwrap();
            assert_eq!((second.entries.len(), second.next_fingerprint), (100, None), "limit {limit}");
        }
        // Limit 1 is the smallest accepted.
        assert_eq!(e.list_keys(0, LIST_TO_END, 1).await.unwrap().entries.len(), 1);
        e.close().await.unwrap();
    });
}

#[test]
fn a_page_of_large_values_ends_at_its_read_byte_budget() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), EngineConfig { segment_bytes: 16 << 20, ..config() }).await;
        const VALUE_LEN: u64 = 1 << 20;
        let keys = (LIST_PAGE_READ_BYTES_MAX / VALUE_LEN) as usize + 8;
        for i in 0..keys {
            e.put(format!("big{i}").as_bytes(), value(i as u64, VALUE_LEN as usize), 1, 0).await.unwrap();
        }
        let page = e.list_keys(0, LIST_TO_END, LIST_PAGE_LEN_MAX).await.unwrap();
        let n = page.entries.len() as u64;
        assert!(page.next_fingerprint.is_some(), "one page of {n} took all {keys} keys");
        // Each record is a little over 1 MiB (header, key, the length code's
        // rounding of at most 1/64): the budget, not the limit, ended the page.
        assert!(n * VALUE_LEN <= LIST_PAGE_READ_BYTES_MAX, "{n} records read");
        assert!((n + 1) * (VALUE_LEN + VALUE_LEN / 64 + 64) > LIST_PAGE_READ_BYTES_MAX, "only {n} records read");
        let all = by_key(list_all(&e, 0, LIST_TO_END, LIST_PAGE_LEN_MAX).await);
        assert_eq!(all.len(), keys);
        e.close().await.unwrap();
    });
}

/// Where `needle` is in the shard's segment files: (file, offset) of each.
fn find_in_log(dir: &Path, needle: &[u8]) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir.join("log")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for (at, w) in bytes.windows(needle.len()).enumerate() {
            if w == needle {
                found.push((path.clone(), at as u64));
            }
        }
    }
    found
}

#[test]
fn a_record_that_fails_its_crc_is_skipped_and_counted() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), config()).await;
        let marked = |i: u64| Bytes::from(format!("<value of key {i:03}>").repeat(20));
        for i in 0..20u64 {
            e.put(format!("k{i}").as_bytes(), marked(i), 10 + i, 0).await.unwrap();
        }
        e.close().await.unwrap();
        // Flip one value byte of key 7's only record; the clean reopen trusts
        // the index and reads no log, so the listing is first to read it.
        let at = find_in_log(dir.path(), b"<value of key 007>");
        assert_eq!(at.len(), 20, "key 7's record holds its marker 20 times, once in the log");
        let (path, offset) = &at[10];
        let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
        f.write_all_at(b"#", *offset).unwrap();
        drop(f);
        let e = open(dir.path(), config()).await;
        assert!(e.recovery_report().clean);
        let listed = by_key(list_all(&e, 0, LIST_TO_END, 6).await);
        assert_eq!(listed.len(), 19);
        assert!(!listed.contains_key(b"k7".as_slice()), "the damaged record was listed");
        for i in (0..20u64).filter(|&i| i != 7) {
            assert_eq!(listed[format!("k{i}").as_bytes()].version, 10 + i, "k{i}");
        }
        assert_eq!(e.stats().corrupt_records, 1);
        // A get reports it too, and never serves it.
        assert!(matches!(e.get(b"k7").await.unwrap_err(), EngineError::Corruption { .. }));
        e.close().await.unwrap();
    });
}
