//! Recovery on real files (io_uring, O_DIRECT through `DmaStorage`), with the
//! log damaged on disk between a close and the next open, the way a crash, a
//! torn write or a bad sector leaves it:
//!
//! - the log cut at every byte offset of its last record, with the index kept
//!   (closed cleanly, so its checkpoint lies past the cut) and with the index
//!   deleted (so the whole log is replayed);
//! - the same record zeroed from every offset on instead of cut, as a torn
//!   write into pre-zeroed space leaves it;
//! - a flipped byte in a record in the middle of a sealed segment, and in the
//!   last record of a segment that later segments follow: both are corruption
//!   (reported with segment and offset, never served), not a torn tail;
//! - a torn segment header on the newest segment file (a crash while creating
//!   it): the file is dropped and nothing else is lost.
//!
//! Why: the log is the source of truth, and `docs/engine-format.md` ("Recovery
//! policy") promises that a torn tail loses only the unacknowledged record it
//! held, that damage anywhere else is reported and skipped, and that a read
//! never returns bytes that fail their checks. Each case checks every key by
//! value, so a lost record, a resurrected one or a wrong value fails the test.
//!
//! Where the records are is learned from the engine's own information: the
//! segment ids and sizes from `stats().segments`, the record boundaries by
//! decoding each segment file with the engine's own `record::decode`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use opticache_engine::config::{Durability, EngineConfig};
use opticache_engine::engine::Engine;
use opticache_engine::error::EngineError;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::record::{self, DecodeError, SegmentHeader, FIRST_RECORD_OFFSET, SEGMENT_HEADER_LEN};

/// Small segments: a few dozen records make a multi-segment log.
const SEGMENT_BYTES: u64 = 64 << 10;
/// 8-byte key + 32-byte header + 3001 = 3041 bytes, padded to 3048: every
/// record has 7 padding bytes, so damage there is exercised too.
const VALUE_LEN: usize = 3001;
/// Records in the every-byte tests: two segments' worth, so the last record
/// lives in a segment that follows a sealed one.
const TAIL_RECORDS: usize = 30;
/// Records in the corruption tests: at least three segments.
const MIDDLE_RECORDS: usize = 60;
const LOG_DIR: &str = "log";
const INDEX_FILE: &str = "index.map";

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("join");
}

fn config() -> EngineConfig {
    EngineConfig {
        durability: Durability::Sync,
        segment_bytes: SEGMENT_BYTES,
        // No compaction behind the test's back: it would move records.
        compaction_interval_ms: 3_600_000,
        ..EngineConfig::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// A value no other key has, so a value served under the wrong key is caught.
fn value(i: usize) -> Bytes {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..VALUE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn open(dir: &Path) -> Result<Engine<DmaStorage>, EngineError> {
    let storage = DmaStorage::open_dir(&dir.join(LOG_DIR)).await.expect("open the log directory");
    Engine::open(storage, &dir.join(INDEX_FILE), config()).await
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(LOG_DIR).join(format!("seg-{id:08}.log"))
}

/// The segment ids present in `dir`'s log directory, ascending.
fn segment_ids(dir: &Path) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(dir.join(LOG_DIR))
        .expect("read log dir")
        .map(|e| e.expect("dir entry").file_name().into_string().expect("utf-8 name"))
        .filter_map(|n| n.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// One record as found on disk.
#[derive(Clone, Copy, Debug)]
struct OnDisk {
    segment: u32,
    offset: u64,
    /// `encoded_len`: header, key, value and padding.
    len: u64,
    /// `32 + key_len + value_len`: where the padding starts.
    unpadded_len: u64,
}

/// Decodes every record of every segment in `dir` (an undamaged log), keyed
/// by key number; checks that each written key appears exactly once.
fn layout(dir: &Path, written: usize) -> BTreeMap<usize, OnDisk> {
    let mut found = BTreeMap::new();
    for id in segment_ids(dir) {
        let bytes = std::fs::read(segment_path(dir, id)).expect("read segment");
        let mut at = FIRST_RECORD_OFFSET as usize;
        loop {
            let rec = match record::decode(bytes.get(at..).unwrap_or(&[])) {
                Ok(rec) => rec,
                Err(DecodeError::Empty) => break,
                // Less than a header of zeros left before the end of the file.
                Err(DecodeError::Truncated { .. }) if bytes[at..].iter().all(|&b| b == 0) => break,
                Err(e) => panic!("pristine segment {id} has a bad record at {at}: {e}"),
            };
            let n: usize = std::str::from_utf8(rec.key).unwrap().strip_prefix("key-").unwrap().parse().unwrap();
            assert_eq!(rec.value, &value(n)[..], "pristine record of key {n}");
            let unpadded_len = (record::RECORD_HEADER_LEN + rec.key.len() + rec.value.len()) as u64;
            let here = OnDisk { segment: id, offset: at as u64, len: rec.encoded_len as u64, unpadded_len };
            assert!(found.insert(n, here).is_none(), "key {n} written twice");
            at += rec.encoded_len;
        }
    }
    assert_eq!(found.len(), written, "records found on disk");
    found
}

/// Writes keys `0..n` into a fresh shard at `dir` and closes it cleanly
/// (`clean`) or abandons it as a crash would; returns where each record is.
async fn write_pristine(dir: &Path, n: usize, clean: bool) -> BTreeMap<usize, OnDisk> {
    let e = open(dir).await.expect("open a fresh shard");
    for i in 0..n {
        e.put(&key(i), value(i), 1, 0).await.expect("put");
    }
    let stats = e.stats();
    if clean {
        e.close().await.expect("close");
    } else {
        e.abandon().await;
    }
    let on_disk = layout(dir, n);
    // The engine's own accounting agrees with what the files hold.
    for seg in stats.segments {
        let mine: u64 = on_disk.values().filter(|r| r.segment == seg.id).map(|r| r.len).sum();
        assert_eq!(seg.record_bytes, mine, "record bytes of segment {}", seg.id);
    }
    on_disk
}

/// Replaces `to` with a copy of the shard at `from`.
fn copy_shard(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("clear scratch dir");
    }
    std::fs::create_dir_all(to.join(LOG_DIR)).expect("scratch dir");
    std::fs::copy(from.join(INDEX_FILE), to.join(INDEX_FILE)).expect("copy index");
    for entry in std::fs::read_dir(from.join(LOG_DIR)).expect("read log dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(LOG_DIR).join(entry.file_name())).expect("copy segment");
    }
}

/// Overwrites `bytes` at `offset` in `path` and makes it durable.
fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).expect("open for damage");
    f.write_all_at(bytes, offset).expect("damage");
    f.sync_all().expect("sync damage");
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).expect("open for flip");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read byte");
    f.write_all_at(&[b[0] ^ 0xFF], offset).expect("flip");
    f.sync_all().expect("sync flip");
}

/// Checks every key `0..n` but `skip` by value.
async fn check_others(e: &Engine<DmaStorage>, n: usize, skip: usize, case: &str) {
    for i in (0..n).filter(|&i| i != skip) {
        let got = e.get(&key(i)).await.unwrap_or_else(|err| panic!("{case}: get key {i}: {err}"));
        let got = got.unwrap_or_else(|| panic!("{case}: key {i} lost"));
        assert_eq!((got.version, &got.value), (1, &value(i)), "{case}: key {i}");
    }
}

/// After recovery the shard takes writes, and they survive a clean restart
/// along with everything recovery kept.
async fn check_writable(dir: &Path, e: Engine<DmaStorage>, kept: &[usize], case: &str) {
    let fresh = b"written-after-recovery";
    e.put(fresh, value(9999), 1, 0).await.unwrap_or_else(|err| panic!("{case}: put after recovery: {err}"));
    e.close().await.unwrap_or_else(|err| panic!("{case}: close after recovery: {err}"));
    let e = open(dir).await.unwrap_or_else(|err| panic!("{case}: second open: {err}"));
    assert!(e.recovery_report().clean, "{case}: second open not clean: {:?}", e.recovery_report());
    assert_eq!(e.get(fresh).await.unwrap().map(|v| v.value), Some(value(9999)), "{case}: write after recovery");
    for &i in kept {
        assert_eq!(e.get(&key(i)).await.unwrap().map(|v| v.value), Some(value(i)), "{case}: key {i} after restart");
    }
    e.close().await.unwrap();
}

/// How the last record is damaged in the every-byte tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TailDamage {
    /// The segment file ends at the offset.
    Truncate,
    /// The file keeps its length; every byte from the offset to the record's
    /// end is zero.
    Zero,
}

/// Damages the last record from every offset between its first byte and its
/// end (inclusive), reopens, and checks that exactly the records before it
/// survive, plus the last one when the damage starts at or after its end.
///
/// With `keep_index` the index stays: after a clean close (`Truncate`) its
/// checkpoint lies past the cut; after an abandon (`Zero`, as a crash would
/// leave it) it holds entries for records the damage took. Without it, the
/// index is rebuilt from the whole log.
async fn damage_every_byte_of_the_last_record(damage: TailDamage, keep_index: bool) {
    let pristine = tempfile::tempdir().expect("tempdir");
    // A torn write happens before a crash, never after a clean close, so the
    // zeroed tail is tested on a shard that was abandoned.
    let clean = damage == TailDamage::Truncate;
    let on_disk = write_pristine(pristine.path(), TAIL_RECORDS, clean).await;
    let last_key = TAIL_RECORDS - 1;
    let last = on_disk[&last_key];
    let newest_with_records = on_disk.values().map(|r| r.segment).max().unwrap();
    assert_eq!(last.segment, newest_with_records, "the last record is in the newest segment holding records");
    assert!(on_disk.values().all(|r| (r.segment, r.offset) <= (last.segment, last.offset)));
    assert!(last.segment > on_disk[&0].segment, "the log spans more than one segment");
    let end = last.offset + last.len;

    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("case");
    let seg = segment_path(&dir, last.segment);
    let kept: Vec<usize> = (0..last_key).collect();
    for at in last.offset..=end {
        let case = format!("{damage:?} at {at} (record {}..{end}), keep_index {keep_index}", last.offset);
        copy_shard(pristine.path(), &dir);
        match damage {
            TailDamage::Truncate => {
                let f = OpenOptions::new().write(true).open(&seg).expect("open segment");
                f.set_len(at).expect("truncate");
                f.sync_all().expect("sync truncate");
            }
            TailDamage::Zero => write_bytes(&seg, at, &vec![0u8; (end - at) as usize]),
        }
        if !keep_index {
            std::fs::remove_file(dir.join(INDEX_FILE)).expect("remove index");
        }
        let e = open(&dir).await.unwrap_or_else(|err| panic!("{case}: open failed: {err}"));
        let report = e.recovery_report().clone();
        assert!(report.corrupt.is_empty(), "{case}: a torn tail is not corruption: {report:?}");
        let whole = at >= end;
        if whole {
            assert_eq!(report.torn_tail, None, "{case}: {report:?}");
        } else if let Some(torn) = report.torn_tail {
            assert_eq!(torn, (last.segment, last.offset), "{case}: torn tail cut elsewhere: {report:?}");
        }
        // From a whole header on, the damaged bytes cannot be taken for the
        // end of the log: recovery must have cut them off as a torn tail.
        if !whole && !keep_index && at >= last.offset + record::RECORD_HEADER_LEN as u64 {
            assert_eq!(report.torn_tail, Some((last.segment, last.offset)), "{case}: {report:?}");
        }
        check_others(&e, TAIL_RECORDS, last_key, &case).await;
        let got = e.get(&key(last_key)).await.unwrap_or_else(|err| panic!("{case}: get of the last key: {err}"));
        if whole {
            let got = got.unwrap_or_else(|| panic!("{case}: the last record is whole but lost"));
            assert_eq!((got.version, &got.value), (1, &value(last_key)), "{case}");
        } else {
            assert_eq!(got.map(|v| v.value.len()), None, "{case}: a damaged last record was served");
        }
        let mut kept = kept.clone();
        if whole {
            kept.push(last_key);
        }
        check_writable(&dir, e, &kept, &case).await;
    }
}

#[test]
fn truncating_the_last_record_at_every_byte_with_the_clean_index_kept() {
    run(|| damage_every_byte_of_the_last_record(TailDamage::Truncate, true));
}

#[test]
fn truncating_the_last_record_at_every_byte_with_the_index_deleted() {
    run(|| damage_every_byte_of_the_last_record(TailDamage::Truncate, false));
}

#[test]
fn zeroing_the_last_record_from_every_byte_with_the_crash_index_kept() {
    run(|| damage_every_byte_of_the_last_record(TailDamage::Zero, true));
}

#[test]
fn zeroing_the_last_record_from_every_byte_with_the_index_deleted() {
    run(|| damage_every_byte_of_the_last_record(TailDamage::Zero, false));
}

/// Byte positions inside a record to flip, one per field the decoder checks:
/// crc, magic, format version, kind, key length, value length, version,
/// expiry, key, value (middle and last byte), padding.
fn flip_positions(r: &OnDisk) -> Vec<(&'static str, u64)> {
    vec![
        ("crc", 0),
        ("magic", 4),
        ("format version", 6),
        ("kind", 7),
        ("key length", 8),
        ("value length", 13),
        ("version", 16),
        ("expiry", 24),
        ("key", 32),
        ("value middle", 32 + 8 + VALUE_LEN as u64 / 2),
        ("value last byte", r.unpadded_len - 1),
        ("padding", r.len - 1),
    ]
}

/// Flips one byte of `victim`'s record at each position of
/// [`flip_positions`], on a copy of a cleanly closed shard, and checks:
/// - index deleted (the log is replayed): recovery reports exactly that
///   record as corrupt, at its segment and offset, and no torn tail; the key
///   reads as absent;
/// - index kept (clean: the open reads no log): a get of the key fails with
///   `Corruption` naming the record's segment and offset;
///
/// and in both cases every other key, before and after it, reads back whole.
async fn flip_a_byte_in(pristine: &Path, on_disk: &BTreeMap<usize, OnDisk>, victim: usize) {
    let n = on_disk.len();
    let r = on_disk[&victim];
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("case");
    for (field, pos) in flip_positions(&r) {
        for keep_index in [false, true] {
            let case =
                format!("key {victim} at {}:{}, {field} byte flipped, keep_index {keep_index}", r.segment, r.offset);
            copy_shard(pristine, &dir);
            flip_byte(&segment_path(&dir, r.segment), r.offset + pos);
            if !keep_index {
                std::fs::remove_file(dir.join(INDEX_FILE)).expect("remove index");
            }
            let e = open(&dir).await.unwrap_or_else(|err| panic!("{case}: open failed: {err}"));
            let report = e.recovery_report().clone();
            if keep_index {
                assert!(report.clean, "{case}: {report:?}");
                match e.get(&key(victim)).await {
                    Err(EngineError::Corruption { segment, offset, .. }) => {
                        assert_eq!((segment, offset), (r.segment, r.offset), "{case}: corruption reported elsewhere")
                    }
                    other => panic!("{case}: get of the damaged record gave {other:?}, not Corruption"),
                }
            } else {
                let at: Vec<(u32, u64)> = report.corrupt.iter().map(|c| (c.0, c.1)).collect();
                assert_eq!(at, [(r.segment, r.offset)], "{case}: corrupt records reported: {report:?}");
                assert_eq!(report.torn_tail, None, "{case}: corruption taken for a torn tail: {report:?}");
                assert!(e.stats().corrupt_records >= 1, "{case}: corrupt_records counter");
                let got = e.get(&key(victim)).await.unwrap_or_else(|err| panic!("{case}: get: {err}"));
                assert_eq!(got.map(|v| v.value.len()), None, "{case}: the damaged record was served");
            }
            check_others(&e, n, victim, &case).await;
            e.close().await.unwrap_or_else(|err| panic!("{case}: close: {err}"));
        }
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_skipped_and_never_served() {
    run(|| async {
        let pristine = tempfile::tempdir().expect("tempdir");
        let on_disk = write_pristine(pristine.path(), MIDDLE_RECORDS, true).await;
        let first = on_disk[&0].segment;
        let newest = on_disk.values().map(|r| r.segment).max().unwrap();
        assert!(newest >= first + 2, "want at least three segments, have {first}..={newest}");
        // The middle record of the first segment: sealed, records on both sides.
        let in_first: Vec<usize> = on_disk.iter().filter(|(_, r)| r.segment == first).map(|(&k, _)| k).collect();
        let victim = in_first[in_first.len() / 2];
        assert!(victim > 0 && victim + 1 < in_first.len());
        flip_a_byte_in(pristine.path(), &on_disk, victim).await;
    });
}

#[test]
fn a_flipped_byte_in_the_last_record_of_a_segment_followed_by_others_is_corruption_not_a_torn_tail() {
    run(|| async {
        let pristine = tempfile::tempdir().expect("tempdir");
        let on_disk = write_pristine(pristine.path(), MIDDLE_RECORDS, true).await;
        let newest = on_disk.values().map(|r| r.segment).max().unwrap();
        // The last record of the segment before the newest one: nothing valid
        // follows it in its own segment, valid records follow in the next.
        let before_newest = newest - 1;
        let victim = on_disk.iter().filter(|(_, r)| r.segment == before_newest).map(|(&k, _)| k).max().unwrap();
        assert!(on_disk.values().any(|r| r.segment == newest), "a later segment holds valid records");
        flip_a_byte_in(pristine.path(), &on_disk, victim).await;
    });
}

/// How a crash during segment creation can leave the newest segment file.
#[derive(Clone, Copy, Debug)]
enum TornHeader {
    /// A full-size file whose 4096 header bytes are garbage, the rest zero.
    GarbageFullFile,
    /// Only the header block exists, all garbage (created without prefill).
    GarbageHeaderOnly,
    /// A full-size file with the first 20 bytes of a valid header written,
    /// the rest zero (its crc fails).
    PartialHeader,
}

fn torn_header_file(kind: TornHeader, id: u32) -> Vec<u8> {
    let mut garbage = vec![0u8; SEGMENT_HEADER_LEN];
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ id as u64;
    for b in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x as u8) | 1;
    }
    match kind {
        TornHeader::GarbageFullFile => {
            garbage.resize(SEGMENT_BYTES as usize, 0);
            garbage
        }
        TornHeader::GarbageHeaderOnly => garbage,
        TornHeader::PartialHeader => {
            let header = SegmentHeader { segment_id: id, created_unix_ms: 1, capacity_bytes: SEGMENT_BYTES }.encode();
            let mut file = vec![0u8; SEGMENT_BYTES as usize];
            file[..20].copy_from_slice(&header[..20]);
            file
        }
    }
}

#[test]
fn a_torn_header_on_the_newest_segment_file_is_dropped_and_nothing_is_lost() {
    run(|| async {
        let pristine = tempfile::tempdir().expect("tempdir");
        let n = TAIL_RECORDS;
        write_pristine(pristine.path(), n, true).await;
        let newest = *segment_ids(pristine.path()).last().unwrap();
        let torn_id = newest + 1;
        let scratch = tempfile::tempdir().expect("tempdir");
        let dir = scratch.path().join("case");
        for kind in [TornHeader::GarbageFullFile, TornHeader::GarbageHeaderOnly, TornHeader::PartialHeader] {
            for keep_index in [true, false] {
                let case = format!("{kind:?} on segment {torn_id}, keep_index {keep_index}");
                copy_shard(pristine.path(), &dir);
                let torn = segment_path(&dir, torn_id);
                std::fs::write(&torn, torn_header_file(kind, torn_id)).expect("write torn segment");
                if !keep_index {
                    std::fs::remove_file(dir.join(INDEX_FILE)).expect("remove index");
                }
                let e = open(&dir).await.unwrap_or_else(|err| panic!("{case}: open failed: {err}"));
                let report = e.recovery_report().clone();
                assert!(report.corrupt.is_empty(), "{case}: a half-made segment is not corruption: {report:?}");
                assert_eq!(report.torn_tail, None, "{case}: {report:?}");
                // Dropped: gone, or made again by the engine with a valid header.
                if let Ok(bytes) = std::fs::read(&torn) {
                    let h = SegmentHeader::decode(&bytes)
                        .unwrap_or_else(|err| panic!("{case}: the torn segment file is still there: {err}"));
                    assert_eq!(h.segment_id, torn_id, "{case}");
                }
                check_others(&e, n, usize::MAX, &case).await;
                check_writable(&dir, e, &(0..n).collect::<Vec<_>>(), &case).await;
            }
        }
    });
}
