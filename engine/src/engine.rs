//! The engine's public face: put, get, delete, update (compare-and-set), key
//! listing ([`crate::listing`]), stats and close, for one shard on one glommio
//! executor.
//!
//! Invariants:
//! - last-writer-wins by version: a put or delete whose version is not newer
//!   than the stored one (live or tombstone) changes nothing and says so;
//! - writes to one key fingerprint are serialized from resolution to apply
//!   ([`FpGuard`]), so resolving which index entry is the key's, by reading
//!   the record's key, cannot race another write of that key;
//! - a read never returns another key's value (the record's key is compared),
//!   a record that fails its crc, or an expired value;
//! - a cache hit is served only while the index still holds that version.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Waker;

use bytes::Bytes;
use glommio::Task;
use glommio::TaskQueueHandle;

use crate::cache::{CachedValue, HotCache};
use crate::config::{DiskFullPolicy, Durability, EngineConfig};
use crate::error::{io_err, EngineError, Result};
use crate::index::{fingerprint, Entry, Index, Loc};
use crate::io::wake_guard::WakeGuard;
use crate::io::{Storage, StorageFile};
use crate::limits::KEY_LEN_MAX;
use crate::listing::KeyListing;
use crate::record::{self, encoded_len, RecordKind, RECORD_HEADER_LEN};
use crate::recovery::RecoveryReport;
use crate::segments::{now_ms, Segment};
use crate::stats::{bump, Counters, EngineStats, SegmentStats};
use crate::writer::{Completion, LogTail, Purpose, WriteOp};

/// How often a read or a key resolution starts over when compaction removed
/// the segment it was reading between the index lookup and the read.
pub(crate) const RESOLVE_ATTEMPTS_MAX: usize = 8;

/// A value as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: Bytes,
    pub version: u64,
    /// Unix ms after which the value is gone; 0 = never.
    pub expiry_ms: u64,
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored; `previous_version` is the live value it replaced, if any.
    Applied { previous_version: Option<u64> },
    /// Ignored: the key holds `stored_version`, which is not older.
    Stale { stored_version: u64 },
}

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// A live value was deleted.
    Deleted { previous_version: u64 },
    /// There was no live value; a tombstone now holds the version so an older
    /// put that arrives later is ignored.
    Absent,
    /// Ignored: the key holds `stored_version`, which is not older.
    Stale { stored_version: u64 },
}

/// What a compare-and-set update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated {
        previous_version: u64,
    },
    /// No live value to update.
    NotFound,
    /// `expected_version` was set and the stored version differs.
    VersionMismatch {
        stored_version: u64,
    },
    /// The new version is not newer than the stored one.
    Stale {
        stored_version: u64,
    },
}

/// The key's current index entry, as resolved by reading its record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Existing {
    pub entry: Entry,
    pub expiry_ms: u64,
}

impl Existing {
    fn is_live(&self, now_ms: u64) -> bool {
        !self.entry.tombstone && (self.expiry_ms == 0 || self.expiry_ms > now_ms)
    }
}

/// Held by a write from key resolution until its record is applied: no other
/// write of the same fingerprint resolves meanwhile.
#[derive(Debug)]
pub(crate) struct FpGuard {
    fp: u64,
    locks: crate::fplock::LockTable,
    /// The index entry (by location) that is this key's, if it has one.
    pub target: Cell<Option<Loc>>,
}

impl Drop for FpGuard {
    fn drop(&mut self) {
        crate::fplock::release(&self.locks, self.fp);
    }
}

/// The background task preparing the next segment.
pub(crate) type SpareTask<S> = Task<std::io::Result<Segment<<S as Storage>::File>>>;

/// The shared state of one engine: owned by [`Engine`] and its tasks.
pub(crate) struct Inner<S: Storage> {
    pub storage: S,
    pub config: EngineConfig,
    pub index: RefCell<Index>,
    pub cache: RefCell<HotCache>,
    pub segments: RefCell<BTreeMap<u32, Rc<Segment<S::File>>>>,
    pub log: RefCell<LogTail>,
    pub queue: RefCell<VecDeque<WriteOp>>,
    pub committer_waker: RefCell<Option<Waker>>,
    /// Batches written, waiting for their fdatasync and apply.
    pub written: RefCell<VecDeque<crate::writer::Written<S::File>>>,
    pub applier_waker: RefCell<Option<Waker>>,
    pub writer_waker: RefCell<Option<Waker>>,
    pub writer_done: Cell<bool>,
    /// Per-fingerprint write locks ([`crate::fplock`]).
    pub inflight: crate::fplock::LockTable,
    pub spare: RefCell<Option<SpareTask<S>>>,
    pub background_queue: TaskQueueHandle,
    pub closing: Cell<bool>,
    pub fenced: RefCell<Option<String>>,
    pub counters: Counters,
    /// The index file; its crash-safe snapshot is [`snapshot_path`] of it.
    pub index_path: PathBuf,
    /// One checkpoint at a time, so snapshots land in order.
    pub checkpoint_lock: glommio::sync::Semaphore,
    /// The background checkpoint queued or running, if any.
    pub checkpoint_task: RefCell<Option<Task<()>>>,
}

impl<S: Storage> std::fmt::Debug for Inner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("active", &self.log.borrow().active)
            .field("segments", &self.segments.borrow().len())
            .field("closing", &self.closing.get())
            .finish_non_exhaustive()
    }
}

/// One shard's store. Must be used on the glommio executor that opened it.
#[derive(Debug)]
pub struct Engine<S: Storage> {
    inner: Rc<Inner<S>>,
    report: RecoveryReport,
    committer: Option<Task<()>>,
    applier: Option<Task<()>>,
    compactor: Option<Task<()>>,
    syncer: Option<Task<()>>,
    /// Keeps this executor thread nudged out of glommio's lost wake-ups
    /// while the engine lives, whatever its storage: the engine waits on
    /// glommio's blocking threads (index checkpoints) even over in-memory
    /// test storage ([`crate::io::wake_guard`]).
    _wake_guard: WakeGuard,
}

impl<S: Storage> Engine<S> {
    /// Opens (or creates) the shard whose log lives in `storage` and whose
    /// index file is `index_path`, recovering from whatever a crash left.
    pub async fn open(storage: S, index_path: &Path, config: EngineConfig) -> Result<Self> {
        config.validate().map_err(EngineError::Config)?;
        let _wake_guard = WakeGuard::for_this_thread().map_err(io_err("start the wake-up guard"))?;
        let background_queue = background_queue(config.compaction_shares);
        let (inner, report) = crate::recovery::open(storage, index_path, config, background_queue).await?;
        let inner = Rc::new(inner);
        inner.start_spare();
        if report.clean {
            // The last snapshot predates the clean close: refresh it so a
            // crash soon after this open replays only what follows it.
            inner.checkpoint_in_background();
        }
        let committer = Some(glommio::spawn_local(inner.clone().commit_loop()));
        let applier = Some(glommio::spawn_local(inner.clone().apply_loop()));
        let compactor = glommio::spawn_local_into(inner.clone().compaction_loop(), background_queue)
            .map_err(|e| EngineError::Config(format!("cannot spawn the compactor: {e}")))?;
        let syncer = match inner.config.durability {
            Durability::Interval { interval_ms } => {
                Some(glommio::spawn_local(inner.clone().interval_sync_loop(interval_ms)))
            }
            _ => None,
        };
        Ok(Self { inner, report, committer, applier, compactor: Some(compactor), syncer, _wake_guard })
    }

    /// What recovery found and did when this engine opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Stores `value` under `key` with `version` unless a version at least as
    /// new is stored. `expiry_ms` is a Unix time in ms, 0 = never.
    pub async fn put(&self, key: &[u8], value: Bytes, version: u64, expiry_ms: u64) -> Result<PutOutcome> {
        let inner = &self.inner;
        bump(&inner.counters.puts, 1);
        let (guard, existing) = inner.begin_write(key, value.len()).await?;
        if let Some(e) = existing {
            if version <= e.entry.version {
                bump(&inner.counters.stale_writes, 1);
                return Ok(PutOutcome::Stale { stored_version: e.entry.version });
            }
        }
        let now = now_ms();
        let previous_version = existing.filter(|e| e.is_live(now)).map(|e| e.entry.version);
        guard.target.set(existing.map(|e| e.entry.loc));
        let len = value.len() as u64;
        inner.write_record(RecordKind::Put, key, value, version, expiry_ms, guard).await?;
        bump(&inner.counters.put_bytes, len);
        Ok(PutOutcome::Applied { previous_version })
    }

    /// Reads the live value of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        check_key(key)?;
        let inner = &self.inner;
        bump(&inner.counters.gets, 1);
        let found = inner.get(key).await?;
        if let Some(v) = &found {
            bump(&inner.counters.get_hits, 1);
            bump(&inner.counters.get_bytes, v.value.len() as u64);
        }
        Ok(found)
    }

    /// Deletes `key` as of `version` (a tombstone keeps the version).
    pub async fn delete(&self, key: &[u8], version: u64) -> Result<DeleteOutcome> {
        let inner = &self.inner;
        bump(&inner.counters.deletes, 1);
        let (guard, existing) = inner.begin_write(key, 0).await?;
        if let Some(e) = existing {
            if version <= e.entry.version {
                bump(&inner.counters.stale_writes, 1);
                return Ok(DeleteOutcome::Stale { stored_version: e.entry.version });
            }
        }
        let now = now_ms();
        let outcome = match existing.filter(|e| e.is_live(now)) {
            Some(e) => DeleteOutcome::Deleted { previous_version: e.entry.version },
            None => DeleteOutcome::Absent,
        };
        guard.target.set(existing.map(|e| e.entry.loc));
        // A tombstone's expiry is when compaction may forget it.
        let forget_at_ms = now.saturating_add(inner.config.tombstone_retention_ms);
        inner.write_record(RecordKind::Delete, key, Bytes::new(), version, forget_at_ms, guard).await?;
        Ok(outcome)
    }

    /// Replaces the live value of `key` if it exists and, when
    /// `expected_version` is not 0, if its version is `expected_version`.
    pub async fn update(
        &self,
        key: &[u8],
        value: Bytes,
        version: u64,
        expected_version: u64,
        expiry_ms: u64,
    ) -> Result<UpdateOutcome> {
        let inner = &self.inner;
        bump(&inner.counters.puts, 1);
        let (guard, existing) = inner.begin_write(key, value.len()).await?;
        let Some(existing) = existing.filter(|e| e.is_live(now_ms())) else {
            return Ok(UpdateOutcome::NotFound);
        };
        let stored_version = existing.entry.version;
        if expected_version != 0 && expected_version != stored_version {
            return Ok(UpdateOutcome::VersionMismatch { stored_version });
        }
        if version <= stored_version {
            bump(&inner.counters.stale_writes, 1);
            return Ok(UpdateOutcome::Stale { stored_version });
        }
        guard.target.set(Some(existing.entry.loc));
        let len = value.len() as u64;
        inner.write_record(RecordKind::Put, key, value, version, expiry_ms, guard).await?;
        bump(&inner.counters.put_bytes, len);
        Ok(UpdateOutcome::Updated { previous_version: stored_version })
    }

    /// Starts a value written in pieces (see [`crate::chunked`]).
    pub async fn put_chunked(
        &self,
        key: &[u8],
        total_len: u64,
        version: u64,
        expiry_ms: u64,
    ) -> Result<crate::chunked::ChunkedWriter<S>> {
        crate::chunked::ChunkedWriter::start(self.inner.clone(), key, total_len, version, expiry_ms).await
    }

    /// Opens the live value of `key` for reading in pieces.
    pub async fn get_chunked(&self, key: &[u8]) -> Result<Option<crate::chunked::ChunkedReader<S>>> {
        check_key(key)?;
        crate::chunked::ChunkedReader::open(self.inner.clone(), key).await
    }

    /// One page of the keys whose fingerprints are in
    /// `[start_fingerprint, end_fingerprint)`, with their versions, tombstone
    /// flags and expiries, in ascending fingerprint order: what a coordinator
    /// compares between replicas to repair one (anti-entropy).
    ///
    /// `end_fingerprint` is exclusive, except that
    /// [`LIST_TO_END`](crate::listing::LIST_TO_END) (`u64::MAX`)
    /// means "to the end of the space", fingerprint `u64::MAX` included: split
    /// points `0 = b0 < b1 < ... < bn = LIST_TO_END` thus cover every
    /// fingerprint exactly once. A range with `start >= end` (other than
    /// `[u64::MAX, LIST_TO_END)`) is empty.
    ///
    /// A page holds at most `limit` entries (clamped to
    /// [`crate::limits::LIST_PAGE_LEN_MAX`]; 0 is
    /// [`EngineError::InvalidListLimit`]) and reads at most
    /// [`crate::limits::LIST_PAGE_READ_BYTES_MAX`] of records; the entries
    /// of one fingerprint always share a page, so a page goes past these only
    /// when its first fingerprint alone does. Resume with
    /// `start_fingerprint = next_fingerprint` until it is `None`; a page may
    /// be short, even empty, before then (records that fail their checks are
    /// skipped and counted in `corrupt_records`, never returned). Details and
    /// the guarantee under concurrent writes: [`crate::listing`].
    pub async fn list_keys(&self, start_fingerprint: u64, end_fingerprint: u64, limit: usize) -> Result<KeyListing> {
        self.inner.list_keys(start_fingerprint, end_fingerprint, limit).await
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> EngineStats {
        self.inner.stats()
    }

    /// Runs one compaction pass now, whatever the timer says; returns how many
    /// segments it reclaimed.
    pub async fn compact_now(&self) -> Result<usize> {
        self.inner.compact_once().await
    }

    /// The shared state, for the crate's own tests of internal paths.
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Rc<Inner<S>> {
        &self.inner
    }

    /// Stops the background tasks, syncs, and checkpoints the index as clean,
    /// so the next open reads no log.
    pub async fn close(mut self) -> Result<()> {
        let inner = self.stop_tasks().await;
        if let Some(reason) = inner.fenced.borrow().clone() {
            return Err(EngineError::Closed(reason));
        }
        let active = inner.active_segment();
        inner.sync_active(&active).await?;
        // Two owners are this call's and `self`'s; more are chunked readers or
        // writers still open, which keep the shard's files (and the index
        // lock) until they are dropped.
        let holders = Rc::strong_count(&inner) - 2;
        if holders > 0 {
            tracing::warn!(holders, "engine closed with chunked readers or writers still open");
        }
        inner.checkpoint(true).await
    }

    /// Stops at once without the clean-close checkpoint, as a crash would
    /// (but after the writes already queued): the next open recovers from the
    /// log. Returns once the background tasks have let go of the shard, so it
    /// can be reopened in this process.
    pub async fn abandon(mut self) {
        self.inner.fence("engine abandoned".into());
        let inner = self.stop_tasks().await;
        drop(inner);
    }

    async fn stop_tasks(&mut self) -> Rc<Inner<S>> {
        let inner = self.inner.clone();
        if let Some(t) = self.compactor.take() {
            t.cancel().await;
        }
        if let Some(t) = self.syncer.take() {
            t.cancel().await;
        }
        inner.closing.set(true);
        if let Some(w) = inner.committer_waker.borrow_mut().take() {
            w.wake();
        }
        if let Some(t) = self.committer.take() {
            t.await;
        }
        if let Some(t) = self.applier.take() {
            t.await;
        }
        let spare = inner.spare.borrow_mut().take();
        if let Some(t) = spare {
            let _ = t.await;
        }
        let checkpoint = inner.checkpoint_task.borrow_mut().take();
        if let Some(t) = checkpoint {
            t.await;
        }
        inner
    }
}

impl<S: Storage> Drop for Engine<S> {
    fn drop(&mut self) {
        // Without close(): stop the committer once the queue drains; dropping
        // the task handles cancels the others. Durability never depends on a
        // clean stop.
        self.inner.closing.set(true);
        if let Some(w) = self.inner.committer_waker.borrow_mut().take() {
            w.wake();
        }
        if let Some(t) = self.committer.take() {
            t.detach();
        }
        if let Some(t) = self.applier.take() {
            t.detach();
        }
        // Cancel the background work that would open or write files after
        // the caller may have removed the directory.
        drop(self.inner.spare.borrow_mut().take());
        drop(self.inner.checkpoint_task.borrow_mut().take());
    }
}

/// Where the crash-safe copy of the index at `index_path` lives.
pub(crate) fn snapshot_path(index_path: &Path) -> PathBuf {
    let mut name = index_path.as_os_str().to_owned();
    name.push(".snap");
    PathBuf::from(name)
}

/// Writes `image` to `path` atomically and durably: a temporary file, synced,
/// renamed over the old snapshot, and the directory synced.
fn write_snapshot(path: &Path, image: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(image)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

thread_local! {
    /// The background task queue per (executor, shares): queues live as long
    /// as their executor, so engines reopened on one executor share one.
    static BACKGROUND_QUEUES: RefCell<HashMap<(usize, usize), TaskQueueHandle>> = RefCell::new(HashMap::new());
}

/// The low-priority queue compaction and segment preparation run in.
fn background_queue(shares: usize) -> TaskQueueHandle {
    let key = (glommio::executor().id(), shares);
    BACKGROUND_QUEUES.with(|q| {
        *q.borrow_mut().entry(key).or_insert_with(|| {
            glommio::executor().create_task_queue(
                glommio::Shares::Static(shares),
                glommio::Latency::NotImportant,
                "opticache-background",
            )
        })
    })
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > KEY_LEN_MAX {
        return Err(EngineError::InvalidKey { len: key.len(), max: KEY_LEN_MAX });
    }
    Ok(())
}

/// A record read back and checked.
pub(crate) struct ReadRecord {
    pub kind: RecordKind,
    pub key_matches: bool,
    pub version: u64,
    pub expiry_ms: u64,
    pub value: Bytes,
}

impl<S: Storage> Inner<S> {
    pub(crate) fn active_segment(&self) -> Rc<Segment<S::File>> {
        let id = self.log.borrow().active;
        self.segments.borrow().get(&id).cloned().expect("the active segment is always in the map")
    }

    pub(crate) fn segment(&self, id: u32) -> Option<Rc<Segment<S::File>>> {
        self.segments.borrow().get(&id).cloned()
    }

    /// Bytes the log takes on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.segments.borrow().values().map(|s| s.file_bytes.get()).sum()
    }

    pub(crate) fn writable(&self) -> Result<()> {
        if let Some(reason) = self.fenced.borrow().as_ref() {
            return Err(EngineError::Closed(reason.clone()));
        }
        if self.closing.get() {
            return Err(EngineError::Closed("engine is closing".into()));
        }
        Ok(())
    }

    /// Makes sure a record of `len` bytes fits the disk budget: in store mode
    /// by refusing, in cache mode by dropping the oldest sealed segments.
    pub(crate) async fn ensure_room(&self, len: u64) -> Result<()> {
        let budget = self.config.disk_budget_bytes;
        if budget == 0 {
            return Ok(());
        }
        loop {
            let used = self.disk_bytes();
            // The active segment is pre-allocated: a record that fits in it
            // costs no new disk. Otherwise a roll adds a segment.
            let active = self.active_segment();
            let extra = if active.remaining() >= len { 0 } else { self.config.segment_bytes.max(len) };
            if used + extra <= budget {
                return Ok(());
            }
            if self.config.disk_full_policy == DiskFullPolicy::Cache && self.drop_oldest_segment().await? {
                continue;
            }
            bump(&self.counters.disk_full_rejections, 1);
            return Err(EngineError::DiskFull { used_bytes: used, budget_bytes: budget });
        }
    }

    /// What every single-record write does first: check the key, the value
    /// length and the disk budget, take the key's fingerprint lock and find
    /// its current entry. Nothing is written yet.
    async fn begin_write(&self, key: &[u8], value_len: usize) -> Result<(FpGuard, Option<Existing>)> {
        check_key(key)?;
        let max = self.config.max_value_bytes;
        if value_len > max {
            return Err(EngineError::ValueTooLarge { len: value_len as u64, max: max as u64 });
        }
        self.writable()?;
        self.ensure_room(encoded_len(key.len(), value_len) as u64).await?;
        let guard = self.lock_fp(fingerprint(key)).await;
        let existing = self.resolve(key).await?;
        Ok((guard, existing))
    }

    pub(crate) async fn lock_fp(&self, fp: u64) -> FpGuard {
        crate::fplock::acquire(&self.inflight, fp).await;
        FpGuard { fp, locks: self.inflight.clone(), target: Cell::new(None) }
    }

    /// Appends one client record through group commit and waits for it.
    pub(crate) async fn write_record(
        self: &Rc<Self>,
        kind: RecordKind,
        key: &[u8],
        value: Bytes,
        version: u64,
        expiry_ms: u64,
        guard: FpGuard,
    ) -> Result<()> {
        let op = WriteOp {
            kind,
            key: Bytes::copy_from_slice(key),
            value,
            version,
            expiry_ms,
            sync: self.config.durability == Durability::Sync,
            purpose: Purpose::Client(guard),
            done: Rc::new(Completion::default()),
        };
        self.submit(op).await.map(|_| ())
    }

    /// Finds the key's index entry (live or tombstone) by reading the keys of
    /// the records its fingerprint points at. Caller holds the key's FpGuard.
    pub(crate) async fn resolve(&self, key: &[u8]) -> Result<Option<Existing>> {
        let fp = fingerprint(key);
        for _ in 0..RESOLVE_ATTEMPTS_MAX {
            let candidates: Vec<Entry> = self.index.borrow().lookup(fp).map(|(_, e)| e).collect();
            if candidates.is_empty() {
                return Ok(None);
            }
            // A cached value is the key's live entry if its version is there.
            // Only the version and expiry are needed: peek, no clone, no hit counted.
            let cached = self.cache.borrow().peek(key).map(|cv| (cv.version, cv.expiry_ms));
            if let Some((version, expiry_ms)) = cached {
                let mut matching = candidates.iter().filter(|e| !e.tombstone && e.version == version);
                if let (Some(e), None) = (matching.next(), matching.next()) {
                    return Ok(Some(Existing { entry: *e, expiry_ms }));
                }
            }
            let mut segment_gone = false;
            for e in &candidates {
                match self.read_key_header(e.loc, key).await? {
                    None => {
                        segment_gone = true;
                        break;
                    }
                    Some((true, expiry_ms)) => return Ok(Some(Existing { entry: *e, expiry_ms })),
                    Some((false, _)) => {}
                }
            }
            if !segment_gone {
                return Ok(None);
            }
        }
        Err(EngineError::Closed("key resolution kept racing compaction".into()))
    }

    /// Reads the header and key of the record at `loc`: whether its key is
    /// `key`, and its expiry. `None` when the segment is gone.
    async fn read_key_header(&self, loc: Loc, key: &[u8]) -> Result<Option<(bool, u64)>> {
        let Some(seg) = self.segment(loc.segment) else {
            return Ok(None);
        };
        let want = RECORD_HEADER_LEN + key.len();
        let buf = seg.file.read_at(loc.offset as u64, want).await.map_err(io_err("read record key"))?;
        let header = record::decode_header(&buf).map_err(|source| self.corruption(loc, source))?;
        let rkey = buf.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.key_len as usize);
        Ok(Some((rkey == Some(key), header.expiry_ms)))
    }

    pub(crate) fn corruption(&self, loc: Loc, source: record::DecodeError) -> EngineError {
        bump(&self.counters.corrupt_records, 1);
        tracing::error!(segment = loc.segment, offset = loc.offset, error = %source, "corrupt record");
        EngineError::Corruption { segment: loc.segment, offset: loc.offset as u64, source }
    }

    /// Reads and fully checks the record at `loc`. `None` when the segment is gone.
    pub(crate) async fn read_record(&self, loc: Loc, key: &[u8]) -> Result<Option<ReadRecord>> {
        self.read_checked(loc, |rec| ReadRecord {
            kind: rec.header.kind,
            key_matches: rec.key == key,
            version: rec.header.version,
            expiry_ms: rec.header.expiry_ms,
            value: Bytes::copy_from_slice(rec.value),
        })
        .await
    }

    /// Reads the record at `loc` whole, checks it (crc included) and hands it
    /// to `take`, which copies out what its caller needs before the read
    /// buffer goes back to the executor. `None` when the segment is gone; a
    /// record that fails its checks is [`EngineError::Corruption`], counted.
    pub(crate) async fn read_checked<T>(
        &self,
        loc: Loc,
        take: impl FnOnce(record::Record<'_>) -> T,
    ) -> Result<Option<T>> {
        let Some(seg) = self.segment(loc.segment) else {
            return Ok(None);
        };
        let buf = seg.file.read_at(loc.offset as u64, loc.len_bytes() as usize).await.map_err(io_err("read record"))?;
        let rec = record::decode(&buf).map_err(|source| self.corruption(loc, source))?;
        Ok(Some(take(rec)))
    }

    /// The live value of `key`, from the cache or the log.
    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let fp = fingerprint(key);
        let cached = self.cache.borrow_mut().get(key);
        if let Some(cv) = cached {
            let current = self.index.borrow().lookup(fp).any(|(_, e)| !e.tombstone && e.version == cv.version);
            if current {
                // The clock is read only for values that can expire.
                if cv.expiry_ms != 0 && cv.expiry_ms <= now_ms() {
                    bump(&self.counters.expired_reads, 1);
                    return Ok(None);
                }
                return Ok(Some(Value { value: cv.value, version: cv.version, expiry_ms: cv.expiry_ms }));
            }
            self.cache.borrow_mut().remove(key);
        }
        let Some((loc, rec)) = self.find_live_record(key).await? else { return Ok(None) };
        let value = match rec.kind {
            RecordKind::ChunkedPut => {
                crate::chunked::assemble(self, key, &rec.value, rec.version, self.config.max_value_bytes).await?
            }
            _ => rec.value,
        };
        // Cache it only if no write replaced it while we read.
        let still = self.index.borrow().lookup(fp).any(|(_, x)| x.loc == loc);
        if still && rec.kind == RecordKind::Put {
            self.cache
                .borrow_mut()
                .insert(key, CachedValue { value: value.clone(), version: rec.version, expiry_ms: rec.expiry_ms });
        }
        Ok(Some(Value { value, version: rec.version, expiry_ms: rec.expiry_ms }))
    }

    /// The live record (Put or ChunkedPut) of `key` read from the log, with
    /// where it is; `None` if the key has none or it expired. Starts over when
    /// compaction removed a segment between the index lookup and the read.
    pub(crate) async fn find_live_record(&self, key: &[u8]) -> Result<Option<(Loc, ReadRecord)>> {
        let fp = fingerprint(key);
        let now = now_ms();
        for _ in 0..RESOLVE_ATTEMPTS_MAX {
            let candidates: Vec<Entry> = self.index.borrow().lookup(fp).map(|(_, e)| e).collect();
            let mut segment_gone = false;
            for e in candidates.iter().filter(|e| !e.tombstone) {
                let Some(rec) = self.read_record(e.loc, key).await? else {
                    segment_gone = true;
                    break;
                };
                if !rec.key_matches {
                    continue;
                }
                if rec.expiry_ms != 0 && rec.expiry_ms <= now {
                    bump(&self.counters.expired_reads, 1);
                    return Ok(None);
                }
                if !matches!(rec.kind, RecordKind::Put | RecordKind::ChunkedPut) {
                    return Err(self.corruption(e.loc, record::DecodeError::BadKind(rec.kind as u8)));
                }
                return Ok(Some((e.loc, rec)));
            }
            if !segment_gone {
                return Ok(None);
            }
        }
        Err(EngineError::Closed("read kept racing compaction".into()))
    }

    /// Records the log position the index reflects, durably. When `clean`
    /// (close), the index file itself is flushed and marked clean, so the next
    /// open reads no log. Otherwise a consistent copy of the index is written
    /// to its snapshot file: a crash can catch the mapped file half-way through
    /// a change, so an unclean open starts from the snapshot and replays the
    /// log after its checkpoint.
    pub(crate) async fn checkpoint(&self, clean: bool) -> Result<()> {
        let _turn = self.checkpoint_lock.acquire_permit(1).await.map_err(|e| EngineError::Closed(e.to_string()))?;
        let cp = self.log.borrow().applied;
        if clean {
            let mut index = self.index.borrow_mut();
            index.set_checkpoint(cp, true);
            index.flush()?;
        } else {
            // Position and image are taken together, with no await between.
            let image = {
                let mut index = self.index.borrow_mut();
                index.set_checkpoint(cp, false);
                index.snapshot_image()
            };
            let path = snapshot_path(&self.index_path);
            glommio::executor()
                .spawn_blocking(move || write_snapshot(&path, &image))
                .await
                .map_err(io_err("write index snapshot"))?;
        }
        self.log.borrow_mut().bytes_since_checkpoint = 0;
        bump(&self.counters.checkpoints, 1);
        Ok(())
    }

    /// A checkpoint that the caller does not wait for: it only bounds how much
    /// log a crash replays. At most one is queued.
    pub(crate) fn checkpoint_in_background(self: &Rc<Self>) {
        if self.checkpoint_task.borrow().is_some() || self.closing.get() {
            return;
        }
        let this = self.clone();
        let task = glommio::spawn_local_into(
            async move {
                if let Err(e) = this.checkpoint(false).await {
                    tracing::warn!(error = %e, "background checkpoint failed; replay after a crash will be longer");
                }
                // Done: let go of our own handle (detached, not cancelled).
                let own = this.checkpoint_task.borrow_mut().take();
                if let Some(t) = own {
                    drop(t.detach());
                }
            },
            self.background_queue,
        );
        match task {
            Ok(t) => *self.checkpoint_task.borrow_mut() = Some(t),
            Err(e) => tracing::warn!(error = %e, "cannot spawn a background checkpoint"),
        }
    }

    async fn interval_sync_loop(self: Rc<Self>, interval_ms: u64) {
        loop {
            glommio::timer::sleep(std::time::Duration::from_millis(interval_ms)).await;
            if self.log.borrow().unsynced {
                let active = self.active_segment();
                if let Err(e) = self.sync_active(&active).await {
                    self.fence(format!("interval fdatasync failed: {e}"));
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> EngineStats {
        let mut s = EngineStats::default();
        self.counters.fill(&mut s);
        let index = self.index.borrow();
        s.keys = index.len();
        s.index_file_bytes = index.file_bytes();
        s.cache = self.cache.borrow().stats();
        s.segments = self
            .segments
            .borrow()
            .values()
            .map(|seg| SegmentStats {
                id: seg.id,
                record_bytes: seg.record_bytes.get(),
                dead_bytes: seg.dead_bytes.get(),
                file_bytes: seg.file_bytes.get(),
                sealed: seg.sealed.get(),
            })
            .collect();
        s.disk_bytes = s.segments.iter().map(|x| x.file_bytes).sum();
        s
    }
}
