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
//! segment sizes from `stats().segments`, the record boundaries by decoding
//! each segment file with the engine's own `record::decode`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use opticache_engine::config::{Durability, EngineConfig};
use opticache_engine::engine::Engine;
use opticache_engine::error::EngineError;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::record::{self, DecodeError, SegmentHeader, FIRST_RECORD_OFFSET, SEGMENT_HEADER_LEN};

/// Small segments: a few dozen records make a multi-segment log.
const SEGMENT_BYTES: u64 = 64 << 10;
/// The block size the log writes in; torn writes happen at its boundaries.
const BLOCK_BYTES: u64 = 4096;
/// 9-byte key + 32-byte header + 3001 = 3042 bytes, padded to 3048: every
/// record has 6 padding bytes, so damage there is exercised too.
const VALUE_LEN: usize = 3001;
/// The every-byte tests' log: three large records fill segment 1, the fourth
/// opens segment 2, a filler places the last record (`VALUE_LEN` bytes)
/// across a 4 KiB block boundary. Few records keep the per-offset check cheap.
const TAIL_LAYOUT: [usize; 6] = [20_000, 20_000, 20_000, 20_000, 3_463, VALUE_LEN];
/// Records in the corruption tests: at least three segments.
const MIDDLE_RECORDS: usize = 60;
/// Records in the torn-header test.
const HEADER_RECORDS: usize = 30;
/// Offsets of the every-byte tests are shared out among this many concurrent
/// tasks (one engine each) so the fsyncs of one overlap the work of others.
const WORKERS: usize = 6;
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
    format!("key-{i:05}").into_bytes()
}

/// Key `i`'s value of `len` bytes: no other key has it, so a value served
/// under the wrong key is caught.
fn value(i: usize, len: usize) -> Bytes {
    let mut x = (i as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
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

impl OnDisk {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A shard written by [`Pristine::write`]: key `i` holds `value(i, lens[i])`
/// at version 1, and is found on disk at `on_disk[i]`.
struct Pristine {
    dir: tempfile::TempDir,
    lens: Vec<usize>,
    on_disk: BTreeMap<usize, OnDisk>,
}

impl Pristine {
    /// Writes one key per entry of `lens` into a fresh shard, then closes it
    /// cleanly (`clean`) or abandons it as a crash would.
    async fn write(lens: &[usize], clean: bool) -> Pristine {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(dir.path()).await.expect("open a fresh shard");
        for (i, &len) in lens.iter().enumerate() {
            e.put(&key(i), value(i, len), 1, 0).await.expect("put");
        }
        let stats = e.stats();
        if clean {
            e.close().await.expect("close");
        } else {
            e.abandon().await;
        }
        let on_disk = find_records(dir.path(), lens);
        // The engine's own accounting agrees with what the files hold.
        for seg in stats.segments {
            let mine: u64 = on_disk.values().filter(|r| r.segment == seg.id).map(|r| r.len).sum();
            assert_eq!(seg.record_bytes, mine, "record bytes of segment {}", seg.id);
        }
        Pristine { dir, lens: lens.to_vec(), on_disk }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Checks every key but `skip` by version and value.
    async fn check_others(&self, e: &Engine<DmaStorage>, skip: usize, case: &str) {
        for (i, &len) in self.lens.iter().enumerate().filter(|&(i, _)| i != skip) {
            let got = e.get(&key(i)).await.unwrap_or_else(|err| panic!("{case}: get key {i}: {err}"));
            let got = got.unwrap_or_else(|| panic!("{case}: key {i} lost"));
            assert_eq!((got.version, &got.value), (1, &value(i, len)), "{case}: key {i}");
        }
    }
}

/// Decodes every record of every segment in `dir` (an undamaged log), keyed
/// by key number; checks each record's value and that every key of `lens`
/// appears exactly once.
fn find_records(dir: &Path, lens: &[usize]) -> BTreeMap<usize, OnDisk> {
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
            assert_eq!(rec.value, &value(n, lens[n])[..], "pristine record of key {n}");
            let unpadded_len = (record::RECORD_HEADER_LEN + rec.key.len() + rec.value.len()) as u64;
            let here = OnDisk { segment: id, offset: at as u64, len: rec.encoded_len as u64, unpadded_len };
            assert!(found.insert(n, here).is_none(), "key {n} written twice");
            at += rec.encoded_len;
        }
    }
    assert_eq!(found.len(), lens.len(), "records found on disk");
    found
}

/// Replaces `to` with a copy of the shard at `from`: every file, the index
/// and whatever the engine keeps beside it included.
fn copy_shard(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("clear scratch dir");
    }
    copy_tree(from, to);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

/// Deletes the index and anything the engine keeps to restore it (files
/// named after it), so the next open must rebuild it from the log.
fn delete_index(dir: &Path) {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).expect("read shard dir") {
        let entry = entry.expect("dir entry");
        if entry.file_name().to_string_lossy().starts_with(INDEX_FILE) {
            std::fs::remove_file(entry.path()).expect("remove index file");
            removed += 1;
        }
    }
    assert!(removed > 0, "no index file in {}", dir.display());
}

// Damage is done through the page cache without a sync: the engine's
// O_DIRECT reads see it (the kernel writes dirty cached pages back before a
// direct read of their range), and the test has no power loss to survive.

/// Overwrites `bytes` at `offset` in `path`.
fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).expect("open for damage");
    f.write_all_at(bytes, offset).expect("damage");
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).expect("open for flip");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read byte");
    f.write_all_at(&[b[0] ^ 0xFF], offset).expect("flip");
}

/// After recovery the shard takes writes, and they survive a clean restart
/// along with the keys `kept` of `p`.
async fn check_writable(p: &Pristine, dir: &Path, e: Engine<DmaStorage>, kept: &[usize], case: &str) {
    let fresh = b"written-after-recovery";
    e.put(fresh, value(usize::MAX, 100), 1, 0).await.unwrap_or_else(|err| panic!("{case}: put after recovery: {err}"));
    e.close().await.unwrap_or_else(|err| panic!("{case}: close after recovery: {err}"));
    let e = open(dir).await.unwrap_or_else(|err| panic!("{case}: second open: {err}"));
    assert!(e.recovery_report().clean, "{case}: second open not clean: {:?}", e.recovery_report());
    let got = e.get(fresh).await.unwrap_or_else(|err| panic!("{case}: get after restart: {err}"));
    assert_eq!(got.map(|v| v.value), Some(value(usize::MAX, 100)), "{case}: write after recovery");
    for &i in kept {
        let got = e.get(&key(i)).await.unwrap_or_else(|err| panic!("{case}: get key {i} after restart: {err}"));
        assert_eq!(got.map(|v| v.value), Some(value(i, p.lens[i])), "{case}: key {i} after restart");
    }
    e.close().await.unwrap_or_else(|err| panic!("{case}: close after restart: {err}"));
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

/// One every-byte test: the shard, the record under test, and what to do.
struct TailCase {
    pristine: Pristine,
    last_key: usize,
    last: OnDisk,
    /// Zeroing from here on changes nothing: every later byte of the record
    /// (its padding, and a value's trailing zeros) is zero already.
    zero_from: u64,
    /// The record's first non-zero byte: zeroing from after it leaves a
    /// header that is neither a record nor the end of the log.
    first_non_zero: u64,
    damage: TailDamage,
    keep_index: bool,
}

impl TailCase {
    /// Whether the cut at `at` also gets the write-and-restart check: the
    /// offsets where behaviour changes (record start, header end, padding,
    /// record end, block boundary) and a sample in between. Every offset
    /// gets the recovery checks.
    fn restart_checked(&self, at: u64) -> bool {
        let (start, end) = (self.last.offset, self.last.end());
        let header_end = start + record::RECORD_HEADER_LEN as u64;
        let padding = start + self.last.unpadded_len;
        let block = start.next_multiple_of(BLOCK_BYTES);
        [start, start + 1, header_end - 1, header_end, padding - 1, padding, block - 1, block, end - 1, end]
            .contains(&at)
            || (at - start).is_multiple_of(97)
    }

    /// Damages a fresh copy of the shard in `dir` from `at` on, reopens it,
    /// and checks what survived.
    async fn check_cut_at(&self, at: u64, dir: &Path) {
        let (damage, keep_index, last, last_key) = (self.damage, self.keep_index, self.last, self.last_key);
        let end = last.end();
        let case = format!("{damage:?} at {at} (record {}..{end}), keep_index {keep_index}", last.offset);
        // Whether the record is still all there after the damage.
        let whole = match damage {
            TailDamage::Truncate => at >= end,
            TailDamage::Zero => at >= self.zero_from,
        };
        copy_shard(self.pristine.path(), dir);
        let seg = segment_path(dir, last.segment);
        match damage {
            TailDamage::Truncate => {
                let f = OpenOptions::new().write(true).open(&seg).expect("open segment");
                f.set_len(at).expect("truncate");
            }
            TailDamage::Zero => write_bytes(&seg, at, &vec![0u8; (end - at) as usize]),
        }
        if !keep_index {
            delete_index(dir);
        }
        let e = open(dir).await.unwrap_or_else(|err| panic!("{case}: open failed: {err}"));
        let report = e.recovery_report().clone();
        assert!(report.corrupt.is_empty(), "{case}: a torn tail is not corruption: {report:?}");
        if whole {
            assert_eq!(report.torn_tail, None, "{case}: {report:?}");
        } else if let Some(torn) = report.torn_tail {
            assert_eq!(torn, (last.segment, last.offset), "{case}: torn tail cut elsewhere: {report:?}");
        }
        // Once a replay meets bytes that are neither a record nor the end of
        // the log (a whole header cut short, or a header with some of its
        // bytes written), it must cut them off as a torn tail.
        let torn = match damage {
            TailDamage::Truncate => at >= last.offset + record::RECORD_HEADER_LEN as u64,
            TailDamage::Zero => at > self.first_non_zero,
        };
        if !whole && !keep_index && torn {
            assert_eq!(report.torn_tail, Some((last.segment, last.offset)), "{case}: {report:?}");
        }
        self.pristine.check_others(&e, last_key, &case).await;
        let got = e.get(&key(last_key)).await.unwrap_or_else(|err| panic!("{case}: get of the last key: {err}"));
        if whole {
            let got = got.unwrap_or_else(|| panic!("{case}: the last record is whole but lost"));
            assert_eq!((got.version, &got.value), (1, &value(last_key, VALUE_LEN)), "{case}");
        } else {
            assert_eq!(got.map(|v| v.value.len()), None, "{case}: a damaged last record was served");
        }
        if self.restart_checked(at) {
            let kept: Vec<usize> = (0..last_key).chain(whole.then_some(last_key)).collect();
            check_writable(&self.pristine, dir, e, &kept, &case).await;
        } else {
            e.abandon().await;
        }
    }
}

/// Damages the last record from every offset between its first byte and its
/// end (inclusive), reopens, and checks that exactly the records before it
/// survive, plus the last one when the damage starts at or after its end.
///
/// With `keep_index` the index stays: after a clean close (`Truncate`) its
/// checkpoint lies past the cut; after an abandon (`Zero`, as a crash would
/// leave it) it is unclean, and what the log holds after its checkpoint is
/// replayed. Without it, the index is rebuilt from the whole log.
async fn damage_every_byte_of_the_last_record(damage: TailDamage, keep_index: bool) {
    // A torn write happens before a crash, never after a clean close, so the
    // zeroed tail is tested on a shard that was abandoned.
    let clean = damage == TailDamage::Truncate;
    let pristine = Pristine::write(&TAIL_LAYOUT, clean).await;
    let last_key = TAIL_LAYOUT.len() - 1;
    let last = pristine.on_disk[&last_key];
    assert!(pristine.on_disk.values().all(|r| (r.segment, r.offset) <= (last.segment, last.offset)), "last record");
    assert!(last.segment > pristine.on_disk[&0].segment, "the log spans more than one segment");
    assert_ne!(last.offset / BLOCK_BYTES, (last.end() - 1) / BLOCK_BYTES, "the last record crosses a block boundary");
    assert!(last.len > last.unpadded_len, "the last record has padding");

    let bytes = std::fs::read(segment_path(pristine.path(), last.segment)).expect("read segment");
    let record = &bytes[last.offset as usize..last.end() as usize];
    let zero_from = last.offset + record.iter().rposition(|&b| b != 0).expect("a record is not all zero") as u64 + 1;
    assert!(zero_from < last.end(), "the record ends in zero padding");
    let first_non_zero = last.offset + record.iter().position(|&b| b != 0).expect("non-zero") as u64;
    let case = Rc::new(TailCase { pristine, last_key, last, zero_from, first_non_zero, damage, keep_index });
    let scratch = tempfile::tempdir().expect("tempdir");
    let offsets: Vec<u64> = (last.offset..=last.end()).collect();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mine: Vec<u64> = offsets.iter().copied().skip(w).step_by(WORKERS).collect();
        let (case, dir) = (case.clone(), scratch.path().join(format!("worker-{w}")));
        workers.push(glommio::spawn_local(async move {
            for &at in &mine {
                case.check_cut_at(at, &dir).await;
            }
            mine.len()
        }));
    }
    let mut checked = 0;
    for w in workers {
        checked += w.await;
    }
    assert_eq!(checked, offsets.len(), "every offset checked");
    assert_eq!(checked as u64, last.len + 1);
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
        ("value middle", r.unpadded_len - VALUE_LEN as u64 / 2),
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
async fn flip_a_byte_in(pristine: &Pristine, victim: usize) {
    let r = pristine.on_disk[&victim];
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("case");
    for (field, pos) in flip_positions(&r) {
        for keep_index in [false, true] {
            let case =
                format!("key {victim} at {}:{}, {field} byte flipped, keep_index {keep_index}", r.segment, r.offset);
            copy_shard(pristine.path(), &dir);
            flip_byte(&segment_path(&dir, r.segment), r.offset + pos);
            if !keep_index {
                delete_index(&dir);
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
            pristine.check_others(&e, victim, &case).await;
            e.close().await.unwrap_or_else(|err| panic!("{case}: close: {err}"));
        }
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_skipped_and_never_served() {
    run(|| async {
        let pristine = Pristine::write(&[VALUE_LEN; MIDDLE_RECORDS], true).await;
        let on_disk = &pristine.on_disk;
        let first = on_disk[&0].segment;
        let newest = on_disk.values().map(|r| r.segment).max().unwrap();
        assert!(newest >= first + 2, "want at least three segments, have {first}..={newest}");
        // The middle record of the first segment: sealed, records on both sides.
        let in_first: Vec<usize> = on_disk.iter().filter(|(_, r)| r.segment == first).map(|(&k, _)| k).collect();
        let victim = in_first[in_first.len() / 2];
        assert!(victim > 0 && victim + 1 < in_first.len());
        flip_a_byte_in(&pristine, victim).await;
    });
}

#[test]
fn a_flipped_byte_in_the_last_record_of_a_segment_followed_by_others_is_corruption_not_a_torn_tail() {
    run(|| async {
        let pristine = Pristine::write(&[VALUE_LEN; MIDDLE_RECORDS], true).await;
        let on_disk = &pristine.on_disk;
        let newest = on_disk.values().map(|r| r.segment).max().unwrap();
        // The last record of the segment before the newest one: nothing valid
        // follows it in its own segment, valid records follow in the next.
        let before_newest = newest - 1;
        let victim = on_disk.iter().filter(|(_, r)| r.segment == before_newest).map(|(&k, _)| k).max().unwrap();
        assert!(on_disk.values().any(|r| r.segment == newest), "a later segment holds valid records");
        flip_a_byte_in(&pristine, victim).await;
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
        let pristine = Pristine::write(&[VALUE_LEN; HEADER_RECORDS], true).await;
        let newest = *segment_ids(pristine.path()).last().unwrap();
        let newest_with_records = pristine.on_disk.values().map(|r| r.segment).max().unwrap();
        // The torn file is either a new one after all the others, or the
        // prepared spare (a segment holding no records) if the shard has one:
        // the creation a crash interrupts is the spare's.
        let mut torn_ids = vec![newest + 1];
        if newest > newest_with_records {
            torn_ids.push(newest);
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let dir = scratch.path().join("case");
        for torn_id in torn_ids {
            for kind in [TornHeader::GarbageFullFile, TornHeader::GarbageHeaderOnly, TornHeader::PartialHeader] {
                for keep_index in [true, false] {
                    let case = format!("{kind:?} on segment {torn_id}, keep_index {keep_index}");
                    copy_shard(pristine.path(), &dir);
                    let torn = segment_path(&dir, torn_id);
                    std::fs::write(&torn, torn_header_file(kind, torn_id)).expect("write torn segment");
                    if !keep_index {
                        delete_index(&dir);
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
                    pristine.check_others(&e, usize::MAX, &case).await;
                    check_writable(&pristine, &dir, e, &(0..HEADER_RECORDS).collect::<Vec<_>>(), &case).await;
                }
            }
        }
    });
}

/// Found by `truncating_the_last_record_at_every_byte_with_the_clean_index_kept`:
/// when the log ends before a cleanly closed index's checkpoint, recovery
/// decides to rebuild the index, but creates the new index file while it
/// still holds the old one open and locked, so `Engine::open` fails with
/// `index file ... is locked by another user` instead of recovering.
#[test]
fn regression_index_locked_when_rebuilding_after_the_log_was_cut_behind_a_clean_checkpoint() {
    run(|| async {
        let pristine = Pristine::write(&[100, 100], true).await;
        let second = pristine.on_disk[&1];
        let scratch = tempfile::tempdir().expect("tempdir");
        let dir = scratch.path().join("case");
        copy_shard(pristine.path(), &dir);
        let f = OpenOptions::new().write(true).open(segment_path(&dir, second.segment)).expect("open segment");
        f.set_len(second.offset).expect("truncate");
        drop(f);
        let e = open(&dir).await.unwrap_or_else(|err| panic!("open after the cut failed: {err}"));
        pristine.check_others(&e, 1, "after the cut").await;
        assert_eq!(e.get(&key(1)).await.expect("get of the cut key").map(|v| v.version), None);
        e.close().await.expect("close");
    });
}
