//! Opening a shard: finding its segments, trusting the index when it was
//! closed cleanly, and otherwise replaying the log after the index's
//! checkpoint (policy: tolerate a corrupt tail).
//!
//! Invariants:
//! - a clean open reads no log: the index's checkpoint is the write position;
//! - replay applies records in log order by last-writer-wins, the later of
//!   two records with one version winning (compaction's copies), so replaying
//!   a record twice is harmless;
//! - in the last segment holding records, a bad record that no valid record
//!   follows is a torn tail: the segment is cut there and sealed, and writing
//!   goes on in a new segment; any other bad record is corruption: reported
//!   (segment, offset), counted, skipped, never served;
//! - if, after replay, any index entry points where no record can be (a
//!   missing segment, past a segment's end), the index is rebuilt from the
//!   whole log: the log is the source of truth.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::TaskQueueHandle;

use crate::cache::HotCache;
use crate::config::EngineConfig;
use crate::engine::{snapshot_path, Inner};
use crate::error::{io_err, EngineError, Result};
use crate::index::{fingerprint, Checkpoint, Entry, Index, IndexError, IndexOpen, Loc};
use crate::io::{Storage, StorageFile};
use crate::record::{self, DecodeError, RecordKind, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::segments::{self, align_down, Segment};
use crate::stats::{bump, Counters};
use crate::writer::LogTail;

/// The scanner reads the log in windows of this size.
const SCAN_WINDOW_BYTES: usize = 8 << 20;
/// A second, independent key hash: during replay it tells whether an entry
/// made by this replay is the same key, without reading the key back.
const REPLAY_KEY_SEED: u64 = 0x6f70_7469_6361_6368;

/// What opening a shard found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The index was closed cleanly and trusted without reading the log.
    pub clean: bool,
    /// The index was unusable or inconsistent and was rebuilt from the log.
    pub index_rebuilt: bool,
    pub replayed_records: u64,
    pub replayed_bytes: u64,
    /// Where a torn tail was cut: (segment, offset).
    pub torn_tail: Option<(u32, u64)>,
    /// Corrupt records found and skipped: (segment, offset, what was wrong).
    pub corrupt: Vec<(u32, u64, String)>,
    pub segments: usize,
}

/// One record found by a [`Scanner`].
#[derive(Debug)]
pub(crate) struct Scanned {
    pub loc: Loc,
    pub kind: RecordKind,
    pub key: Bytes,
    pub version: u64,
    pub expiry_ms: u64,
    /// The value, when the scan asked for values.
    pub value: Option<Bytes>,
}

/// What a scanner found next.
#[derive(Debug)]
pub(crate) enum ScanStep {
    Record(Scanned),
    /// No more records: unwritten (zero) space or the end of the file.
    End {
        at: u64,
    },
    /// A record that fails its checks starts at `at`.
    Bad {
        at: u64,
        error: DecodeError,
    },
}

/// Reads one segment's records in order, in large windows.
pub(crate) struct Scanner<'a, F: StorageFile> {
    file: &'a F,
    segment: u32,
    pos: u64,
    file_len: u64,
    window: Option<F::ReadBuf>,
    window_start: u64,
}

impl<'a, F: StorageFile> Scanner<'a, F> {
    pub fn new(file: &'a F, segment: u32, start: u64, file_len: u64) -> Self {
        Self { file, segment, pos: start, file_len, window: None, window_start: 0 }
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The bytes `[at, at + len)` if the current window holds them.
    fn in_window(&self, at: u64, len: usize) -> Option<&[u8]> {
        let w = self.window.as_ref()?;
        let from = at.checked_sub(self.window_start)? as usize;
        w.get(from..from + len)
    }

    /// Makes the window hold `[at, at + len)` (or up to the end of the file).
    async fn fill(&mut self, at: u64, len: usize) -> std::io::Result<()> {
        if self.in_window(at, len).is_some() {
            return Ok(());
        }
        let start = align_down(at);
        let want = ((at - start) as usize + len).max(SCAN_WINDOW_BYTES);
        let want = want.min(self.file_len.saturating_sub(start) as usize);
        self.window = Some(self.file.read_at(start, want).await?);
        self.window_start = start;
        Ok(())
    }

    /// The available bytes from `at`, at most `len`.
    fn avail(&self, at: u64, len: usize) -> &[u8] {
        let Some(w) = self.window.as_ref() else {
            return &[];
        };
        let Some(from) = at.checked_sub(self.window_start) else {
            return &[];
        };
        let from = (from as usize).min(w.len());
        &w[from..(from + len).min(w.len())]
    }

    /// Decodes the record at `at` without moving: its encoded length, or why not.
    async fn probe(&mut self, at: u64) -> std::io::Result<Result<usize, DecodeError>> {
        if at + RECORD_HEADER_LEN as u64 > self.file_len {
            return Ok(Err(DecodeError::Empty));
        }
        self.fill(at, RECORD_HEADER_LEN).await?;
        let header = match record::decode_header(self.avail(at, RECORD_HEADER_LEN)) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let len = record::encoded_len(header.key_len as usize, header.value_len as usize);
        self.fill(at, len).await?;
        Ok(record::decode(self.avail(at, len)).map(|r| r.encoded_len))
    }

    /// The next record, or where and why the records end.
    pub async fn next(&mut self, with_value: bool) -> std::io::Result<ScanStep> {
        let at = self.pos;
        match self.probe(at).await? {
            Err(DecodeError::Empty) => Ok(ScanStep::End { at }),
            Err(error) => Ok(ScanStep::Bad { at, error }),
            Ok(len) => {
                let rec = record::decode(self.avail(at, len)).expect("probe decoded it");
                let scanned = Scanned {
                    loc: Loc::for_record(self.segment, at, len as u64),
                    kind: rec.header.kind,
                    key: Bytes::copy_from_slice(rec.key),
                    version: rec.header.version,
                    expiry_ms: rec.header.expiry_ms,
                    value: with_value.then(|| Bytes::copy_from_slice(rec.value)),
                };
                self.pos = at + len as u64;
                Ok(ScanStep::Record(scanned))
            }
        }
    }

    /// Looks for the next position after `from` where a whole valid record
    /// starts, 8 bytes at a time; moves there if found.
    pub async fn resync(&mut self, from: u64) -> std::io::Result<Option<u64>> {
        let mut at = from + 8;
        while at + RECORD_HEADER_LEN as u64 <= self.file_len {
            self.fill(at, RECORD_HEADER_LEN).await?;
            let plausible = record::decode_header(self.avail(at, RECORD_HEADER_LEN)).is_ok();
            if plausible && self.probe(at).await?.is_ok() {
                self.pos = at;
                return Ok(Some(at));
            }
            at += 8;
        }
        Ok(None)
    }
}

/// A segment found on disk at open.
struct Found<F> {
    id: u32,
    file: F,
    file_len: u64,
    capacity: u64,
}

/// Opens the shard: see the module documentation for the policy.
pub(crate) async fn open<S: Storage>(
    storage: S,
    index_path: &Path,
    config: EngineConfig,
    background_queue: TaskQueueHandle,
) -> Result<(Inner<S>, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let mut ids: Vec<u32> = storage
        .list()
        .await
        .map_err(io_err("list data dir"))?
        .iter()
        .filter_map(|n| segments::parse_file_name(n))
        .collect();
    ids.sort_unstable();

    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let name = segments::file_name(id);
        let file = storage.open(&name, false).await.map_err(io_err("open segment"))?;
        let file_len = file.len().await.map_err(io_err("segment size"))?;
        let head = file.read_at(0, SEGMENT_HEADER_LEN).await.map_err(io_err("read segment header"))?;
        match SegmentHeader::decode(&head) {
            Ok(h) if h.segment_id == id => {
                found.push(Found { id, file, file_len, capacity: h.capacity_bytes.max(file_len) })
            }
            bad => {
                // Headers are synced before a segment holds any record, so a
                // bad header on an otherwise empty file is a creation that a
                // crash interrupted: remove it. Anything else is corruption.
                let empty = file_len <= SEGMENT_HEADER_LEN as u64 || is_unwritten(&file, file_len).await?;
                if empty {
                    drop(file);
                    storage.remove(&name).await.map_err(io_err("remove half-made segment"))?;
                    continue;
                }
                let why = match bad {
                    Ok(h) => format!("header names segment {}", h.segment_id),
                    Err(e) => e.to_string(),
                };
                tracing::error!(segment = id, error = %why, "corrupt segment header; scanning its records anyway");
                report.corrupt.push((id, 0, format!("segment header: {why}")));
                found.push(Found { id, file, file_len, capacity: file_len });
            }
        }
    }

    let (mut index, index_state) = open_index_when_free(index_path, &mut report).await?;

    let counters = Counters::default();
    let last_id = found.last().map(|f| f.id);
    let clean_start = match (&index_state, last_id) {
        (Some(st), Some(_)) if st.clean_shutdown => found
            .iter()
            .find(|f| f.id == st.checkpoint.segment)
            .filter(|f| st.checkpoint.offset >= SEGMENT_HEADER_LEN as u64 && st.checkpoint.offset <= f.file_len)
            .map(|_| st.checkpoint),
        _ => None,
    };

    // Where each segment's records end, whether the tail was torn, and which
    // segment holds the last records.
    let (ends, torn, tail_id) = match clean_start {
        Some(cp) => {
            report.clean = true;
            (HashMap::from([(cp.segment, cp.offset)]), false, Some(cp.segment))
        }
        None => {
            // Replay from the checkpoint if it names a place in the log we
            // have; otherwise (the log was cut or lost behind the index's
            // back) trust nothing in the index.
            let from = match &index_state {
                Some(st)
                    if found.iter().any(|f| f.id == st.checkpoint.segment && st.checkpoint.offset <= f.file_len) =>
                {
                    st.checkpoint
                }
                _ => {
                    if !report.index_rebuilt && !index.is_empty() {
                        // The old index holds the file's lock: let go first.
                        drop(index);
                        index = Index::create(index_path)?;
                        report.index_rebuilt = true;
                    }
                    Checkpoint::default()
                }
            };
            let mut outcome = replay(&found, &mut index, from, &mut report).await?;
            if !index_consistent(&index, &found, &outcome.ends) {
                tracing::warn!("index points past the log after replay; rebuilding it from the whole log");
                drop(index);
                index = Index::create(index_path)?;
                report.index_rebuilt = true;
                report.corrupt.clear();
                outcome = replay(&found, &mut index, Checkpoint::default(), &mut report).await?;
            }
            (outcome.ends, outcome.torn, outcome.tail_id)
        }
    };

    // Decide the active segment: the tail, unless it is sealed or torn.
    let mut segs: BTreeMap<u32, Rc<Segment<S::File>>> = BTreeMap::new();
    let mut spare = None;
    let mut active: Option<u32> = None;
    for f in found {
        let is_tail = Some(f.id) == tail_id;
        if tail_id.is_none_or(|t| f.id > t) {
            // Segments after the tail hold no records: the first becomes the
            // active one (if the tail cannot take writes) or the spare;
            // further ones are left-over spares.
            let seg = Segment::new(f.id, f.file, f.capacity, SEGMENT_HEADER_LEN as u64, f.file_len);
            if active.is_none() {
                active = Some(f.id);
                segs.insert(f.id, Rc::new(seg));
            } else if spare.is_none() {
                spare = Some(seg);
            } else {
                drop(seg);
                storage.remove(&segments::file_name(f.id)).await.map_err(io_err("remove spare segment"))?;
            }
            continue;
        }
        let end = ends.get(&f.id).copied().unwrap_or(f.file_len);
        let seg = Segment::new(f.id, f.file, f.capacity, end, f.file_len);
        seg.record_bytes.set(end.saturating_sub(SEGMENT_HEADER_LEN as u64));
        // A segment cut short of its capacity was sealed; the tail may still be open.
        let sealed = !is_tail || f.file_len < f.capacity || torn;
        if is_tail && torn {
            let tail_bytes = read_tail(&seg, end).await?;
            segments::seal(&storage, &seg, &tail_bytes).await.map_err(io_err("cut torn tail"))?;
            report.torn_tail = Some((f.id, end));
            tracing::warn!(segment = f.id, offset = end, "torn tail cut");
        }
        seg.sealed.set(sealed);
        if is_tail && !sealed {
            active = Some(f.id);
        }
        segs.insert(f.id, Rc::new(seg));
    }
    let active_id = match active {
        Some(id) => id,
        None => {
            let id = segs.keys().next_back().map_or(1, |last| last + 1);
            let capacity = config.segment_bytes;
            let seg = segments::create(&storage, id, capacity, config.prefill_segments)
                .await
                .map_err(io_err("create segment"))?;
            segs.insert(id, Rc::new(seg));
            id
        }
    };
    if spare.as_ref().is_some_and(|s| s.id != active_id + 1) {
        let s = spare.take().expect("checked");
        let name = segments::file_name(s.id);
        drop(s);
        storage.remove(&name).await.map_err(io_err("remove spare segment"))?;
    }

    // Live bytes per segment come from the index; the rest of a segment's
    // records are dead.
    // One pass over the index on every open: a plain array indexed by
    // segment id keeps it a sequential scan (segment ids are dense).
    let first_id = segs.keys().next().copied().unwrap_or(0);
    let span = segs.keys().next_back().map_or(0, |last| (last - first_id) as usize + 1);
    let mut live = vec![0u64; span];
    for (_, e) in index.iter() {
        if let Some(l) = e.loc.segment.checked_sub(first_id).and_then(|i| live.get_mut(i as usize)) {
            *l += e.loc.len_bytes();
        }
    }
    for seg in segs.values() {
        let l = live[(seg.id - first_id) as usize].min(seg.record_bytes.get());
        seg.dead_bytes.set(seg.record_bytes.get() - l);
    }
    let active_seg = segs.get(&active_id).cloned().expect("inserted above");
    let tail = read_tail(&active_seg, active_seg.end.get()).await?;
    report.segments = segs.len();

    let inner = Inner {
        storage,
        cache: RefCell::new(HotCache::new(config.memory_budget_bytes)),
        config,
        index: RefCell::new(index),
        segments: RefCell::new(segs),
        log: RefCell::new(LogTail {
            active: active_id,
            tail,
            bytes_since_checkpoint: 0,
            unsynced: false,
            applied: Checkpoint { segment: active_id, offset: active_seg.end.get() },
        }),
        queue: RefCell::new(VecDeque::new()),
        committer_waker: RefCell::new(None),
        written: RefCell::new(VecDeque::new()),
        applier_waker: RefCell::new(None),
        writer_waker: RefCell::new(None),
        writer_done: Cell::new(false),
        inflight: Rc::new(RefCell::new(HashMap::new())),
        spare: RefCell::new(spare.map(|s| glommio::spawn_local(async move { Ok(s) }))),
        background_queue,
        closing: Cell::new(false),
        fenced: RefCell::new(None),
        counters,
        index_path: index_path.to_path_buf(),
        checkpoint_lock: glommio::sync::Semaphore::new(1),
        checkpoint_task: RefCell::new(None),
    };
    bump(&inner.counters.corrupt_records, report.corrupt.len() as u64);
    if !report.clean {
        inner.checkpoint(false).await?;
    }
    Ok((inner, report))
}

/// How long open waits for the index lock: an engine of this process that
/// was dropped without `close` lets go of it once its tasks have run.
const INDEX_LOCK_WAIT_MS: u64 = 500;

/// [`open_index`], waiting a bounded time while the index is locked.
async fn open_index_when_free(index_path: &Path, report: &mut RecoveryReport) -> Result<(Index, Option<IndexOpen>)> {
    let start = std::time::Instant::now();
    loop {
        match open_index(index_path, report) {
            Err(EngineError::Index(IndexError::Locked { .. }))
                if start.elapsed() < std::time::Duration::from_millis(INDEX_LOCK_WAIT_MS) =>
            {
                glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
            }
            other => return other,
        }
    }
}

/// The index to start from, and what it reflects (`None`: empty, rebuild
/// from the whole log). A cleanly closed index file is used as it is. After a
/// crash the mapped file may be caught half-way through a change, so it is
/// replaced by the last snapshot, whose checkpoint says where replay starts.
fn open_index(index_path: &Path, report: &mut RecoveryReport) -> Result<(Index, Option<IndexOpen>)> {
    let existed = index_path.exists();
    match Index::open(index_path) {
        Ok((index, st)) if st.clean_shutdown => return Ok((index, Some(st))),
        Ok(_) | Err(IndexError::Corrupt { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let snapshot = snapshot_path(index_path);
    if snapshot.exists() {
        std::fs::copy(&snapshot, index_path).map_err(io_err("restore index snapshot"))?;
        match Index::open(index_path) {
            Ok((index, st)) => return Ok((index, Some(st))),
            Err(IndexError::Corrupt { reason }) => {
                tracing::warn!(reason = %reason, "index snapshot unusable; rebuilding the index from the log");
            }
            Err(e) => return Err(e.into()),
        }
    }
    report.index_rebuilt = existed;
    Ok((Index::create(index_path)?, None))
}

/// True when the file holds nothing but zeros after its first block.
async fn is_unwritten<F: StorageFile>(file: &F, file_len: u64) -> Result<bool> {
    let probe = file
        .read_at(SEGMENT_HEADER_LEN as u64, (file_len - SEGMENT_HEADER_LEN as u64).min(1 << 20) as usize)
        .await
        .map_err(io_err("read segment"))?;
    Ok(probe.iter().all(|&b| b == 0))
}

/// The bytes of the last partial block before `end`.
async fn read_tail<F: StorageFile>(seg: &Segment<F>, end: u64) -> Result<Vec<u8>> {
    let start = align_down(end);
    if start == end {
        return Ok(Vec::new());
    }
    let buf = seg.file.read_at(start, (end - start) as usize).await.map_err(io_err("read log tail"))?;
    Ok(buf.to_vec())
}

struct ReplayOutcome {
    ends: HashMap<u32, u64>,
    torn: bool,
    tail_id: Option<u32>,
}

/// Replays every record from `from` on into the index.
async fn replay<F: StorageFile>(
    found: &[Found<F>],
    index: &mut Index,
    from: Checkpoint,
    report: &mut RecoveryReport,
) -> Result<ReplayOutcome> {
    let mut ends = HashMap::new();
    let mut torn = false;
    let mut tail_id = None;
    let mut replay_keys: HashMap<Loc, u64> = HashMap::new();
    let files: HashMap<u32, &F> = found.iter().map(|f| (f.id, &f.file)).collect();
    for (n, f) in found.iter().enumerate() {
        if f.id < from.segment {
            continue;
        }
        let start =
            if f.id == from.segment { from.offset.max(SEGMENT_HEADER_LEN as u64) } else { SEGMENT_HEADER_LEN as u64 };
        let mut scanner = Scanner::new(&f.file, f.id, start, f.file_len);
        let mut saw_record = start > SEGMENT_HEADER_LEN as u64;
        let end = loop {
            match scanner.next(false).await.map_err(io_err("replay read"))? {
                ScanStep::Record(r) => {
                    saw_record = true;
                    report.replayed_records += 1;
                    report.replayed_bytes += r.loc.len_bytes();
                    apply_replayed(index, &files, &mut replay_keys, &r).await?;
                }
                ScanStep::End { at } => break at,
                ScanStep::Bad { at, error } => match scanner.resync(at).await.map_err(io_err("replay read"))? {
                    Some(next) => {
                        tracing::error!(segment = f.id, offset = at, error = %error, "corrupt record skipped");
                        report.corrupt.push((f.id, at, error.to_string()));
                        debug_assert_eq!(scanner.position(), next);
                    }
                    None => {
                        let later_records = has_records_after(&found[n + 1..]).await?;
                        if later_records {
                            tracing::error!(segment = f.id, offset = at, error = %error, "corrupt end of segment");
                            report.corrupt.push((f.id, at, error.to_string()));
                        } else {
                            torn = true;
                            tail_id = Some(f.id);
                        }
                        break at;
                    }
                },
            }
        };
        ends.insert(f.id, end);
        if torn {
            break;
        }
        if saw_record || end > SEGMENT_HEADER_LEN as u64 {
            tail_id = Some(f.id);
        }
    }
    if tail_id.is_none() {
        // No records at all after the checkpoint: the checkpoint's segment is the tail.
        tail_id = found.iter().find(|f| f.id == from.segment).map(|f| f.id);
    }
    Ok(ReplayOutcome { ends, torn, tail_id })
}

/// Whether any of these segments holds a valid first record.
async fn has_records_after<F: StorageFile>(rest: &[Found<F>]) -> Result<bool> {
    for f in rest {
        let mut s = Scanner::new(&f.file, f.id, SEGMENT_HEADER_LEN as u64, f.file_len);
        if let ScanStep::Record(_) = s.next(false).await.map_err(io_err("replay read"))? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn replay_key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, REPLAY_KEY_SEED)
}

/// Applies one replayed record by last-writer-wins.
async fn apply_replayed<F: StorageFile>(
    index: &mut Index,
    files: &HashMap<u32, &F>,
    replay_keys: &mut HashMap<Loc, u64>,
    r: &Scanned,
) -> Result<()> {
    let tombstone = match r.kind {
        RecordKind::Put | RecordKind::ChunkedPut => false,
        RecordKind::Delete => true,
        // Chunks are reached through their manifest.
        RecordKind::Chunk => return Ok(()),
    };
    let fp = fingerprint(&r.key);
    let h2 = replay_key_hash(&r.key);
    let candidates: Vec<Entry> = index.lookup(fp).map(|(_, e)| e).collect();
    let mut mine = None;
    for e in candidates {
        if e.loc == r.loc {
            return Ok(()); // already reflected
        }
        let same = match replay_keys.get(&e.loc) {
            Some(h) => *h == h2,
            None => key_at(files, e.loc).await?.is_some_and(|k| k == r.key),
        };
        if same {
            mine = Some(e);
            break;
        }
    }
    let entry = Entry { version: r.version, loc: r.loc, tombstone };
    match mine {
        // Later in the log wins a tie: compaction's copy of the same version.
        Some(old) if r.version >= old.version => {
            let slot = index.lookup(fp).find(|(_, e)| e.loc == old.loc).map(|(s, _)| s).expect("just found");
            index.replace(slot, entry);
            replay_keys.remove(&old.loc);
            replay_keys.insert(r.loc, h2);
        }
        Some(_) => {}
        None => {
            index.insert(fp, entry)?;
            replay_keys.insert(r.loc, h2);
        }
    }
    Ok(())
}

/// The key of the record at `loc`, if the segment and a plausible header are there.
async fn key_at<F: StorageFile>(files: &HashMap<u32, &F>, loc: Loc) -> Result<Option<Bytes>> {
    let Some(file) = files.get(&loc.segment) else {
        return Ok(None);
    };
    let head = file.read_at(loc.offset as u64, RECORD_HEADER_LEN).await.map_err(io_err("read record key"))?;
    let Ok(h) = record::decode_header(&head) else {
        return Ok(None);
    };
    let buf = file
        .read_at(loc.offset as u64 + RECORD_HEADER_LEN as u64, h.key_len as usize)
        .await
        .map_err(io_err("read record key"))?;
    Ok(Some(Bytes::copy_from_slice(&buf)))
}

/// Every entry points inside a segment we have and before its records' end.
fn index_consistent<F>(index: &Index, found: &[Found<F>], ends: &HashMap<u32, u64>) -> bool {
    let lens: HashMap<u32, u64> = found.iter().map(|f| (f.id, f.file_len)).collect();
    index.iter().all(|(_, e)| {
        let Some(&file_len) = lens.get(&e.loc.segment) else {
            return false;
        };
        let limit = ends.get(&e.loc.segment).copied().unwrap_or(file_len);
        e.loc.offset as u64 >= SEGMENT_HEADER_LEN as u64 && (e.loc.offset as u64) < limit
    })
}
