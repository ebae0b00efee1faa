//! Reclaiming space: compaction copies the live records out of sealed
//! segments whose garbage ratio passes the threshold, then deletes them; in
//! cache mode the disk budget drops the oldest segments whole.
//!
//! Runs in the background task queue (fewer shares than the foreground), and
//! writes through the same group-commit queue as clients, so it never needs
//! a lock of its own.
//!
//! Invariants:
//! - a segment is deleted only after every live record in it has a durable
//!   copy, the index points at the copies, and the index is flushed, so no
//!   index state that can survive a crash points into a deleted segment;
//! - a copy only moves an entry that still points at the original and whose
//!   key no client write holds (see `writer::Purpose::Relocate`); otherwise
//!   the copy is garbage and the segment is kept for a later pass;
//! - a segment with a corrupt record is not deleted (it stays reported).

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::chunked::{decode_manifest, encode_manifest, ChunkRef};
use crate::engine::Inner;
use crate::error::{io_err, Result};
use crate::index::{fingerprint, Loc};
use crate::io::Storage;
use crate::record::{RecordKind, SEGMENT_HEADER_LEN};
use crate::recovery::{ScanStep, Scanned, Scanner};
use crate::segments::{self, now_ms, Segment};
use crate::stats::bump;
use crate::writer::{Applied, Completion, Purpose, WriteOp};

/// Segments one pass compacts at most.
const SEGMENTS_PER_PASS_MAX: usize = 4;
/// Copies queued before compaction waits for them, bounding its memory.
const COPIES_IN_FLIGHT_BYTES_MAX: u64 = 16 << 20;

/// A copy queued by compaction, and what it copied.
struct Copy {
    old: Loc,
    fp: u64,
    done: Rc<Completion<Result<Applied>>>,
}

impl<S: Storage> Inner<S> {
    pub(crate) async fn compaction_loop(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.compaction_interval_ms);
        loop {
            glommio::timer::sleep(interval).await;
            if self.closing.get() {
                break;
            }
            if let Err(e) = self.compact_once().await {
                tracing::warn!(error = %e, "compaction pass failed");
            }
        }
    }

    /// One pass: compacts the sealed segments with the most garbage.
    pub(crate) async fn compact_once(self: &Rc<Self>) -> Result<usize> {
        if self.fenced.borrow().is_some() {
            return Ok(0);
        }
        let now = now_ms();
        let threshold = self.config.compaction_garbage_ratio;
        let mut victims: Vec<(f64, Rc<Segment<S::File>>)> = self
            .segments
            .borrow()
            .values()
            .filter(|s| s.sealed.get())
            .map(|s| (s.garbage_ratio(now), s.clone()))
            .filter(|(r, _)| *r >= threshold)
            .collect();
        victims.sort_by(|a, b| b.0.total_cmp(&a.0));
        victims.truncate(SEGMENTS_PER_PASS_MAX);
        let mut reclaimed = 0;
        for (_, seg) in victims {
            if self.compact_segment(&seg).await? {
                reclaimed += 1;
            }
        }
        Ok(reclaimed)
    }

    /// Copies the live records of `seg` and deletes it; false if it had to be kept.
    async fn compact_segment(self: &Rc<Self>, seg: &Rc<Segment<S::File>>) -> Result<bool> {
        bump(&self.counters.compaction_runs, 1);
        let now = now_ms();
        let mut scanner = Scanner::new(&*seg.file, seg.id, SEGMENT_HEADER_LEN as u64, seg.file_bytes.get());
        let mut copies: Vec<Copy> = Vec::new();
        let mut in_flight = 0u64;
        let mut keep = false;
        let mut chunked_done: HashSet<Loc> = HashSet::new();
        loop {
            let r = match scanner.next(true).await.map_err(io_err("compaction read"))? {
                ScanStep::Record(r) => r,
                ScanStep::End { .. } => break,
                ScanStep::Bad { at, error } => {
                    tracing::error!(segment = seg.id, offset = at, error = %error, "corrupt record; segment kept");
                    keep = true;
                    if scanner.resync(at).await.map_err(io_err("compaction read"))?.is_none() {
                        break;
                    }
                    continue;
                }
            };
            let fp = fingerprint(&r.key);
            match r.kind {
                RecordKind::Put | RecordKind::Delete => {
                    let live = self.index.borrow().lookup(fp).any(|(_, e)| e.loc == r.loc);
                    if !live {
                        continue;
                    }
                    let expired = r.expiry_ms != 0 && r.expiry_ms <= now;
                    if expired && r.kind == RecordKind::Delete {
                        // The tombstone's retention is over: forget it.
                        self.forget_entry(fp, &r);
                        continue;
                    }
                    if expired {
                        // An expired value keeps its version as a tombstone,
                        // so an older write arriving late stays ignored.
                        let tombstone = Scanned {
                            kind: RecordKind::Delete,
                            expiry_ms: now.saturating_add(self.config.tombstone_retention_ms),
                            value: None,
                            key: r.key.clone(),
                            ..r
                        };
                        self.cache.borrow_mut().remove(&r.key);
                        copies.push(self.queue_copy(&tombstone, Bytes::new(), Purpose::Relocate { old: r.loc }));
                        continue;
                    }
                    in_flight += r.loc.len_bytes();
                    copies.push(self.queue_copy(
                        &r,
                        r.value.clone().unwrap_or_default(),
                        Purpose::Relocate { old: r.loc },
                    ));
                }
                RecordKind::ChunkedPut => {
                    let live = self.index.borrow().lookup(fp).any(|(_, e)| e.loc == r.loc);
                    if live && chunked_done.insert(r.loc) {
                        match self.copy_chunked(&r).await? {
                            Some(c) => copies.push(c),
                            None => keep = true,
                        }
                    }
                }
                RecordKind::Chunk => {
                    if let Some((manifest_rec, mloc)) = self.owner_manifest(&r).await? {
                        if chunked_done.insert(mloc) {
                            match self.copy_chunked(&manifest_rec).await? {
                                Some(c) => copies.push(c),
                                None => keep = true,
                            }
                        }
                    }
                }
            }
            if in_flight >= COPIES_IN_FLIGHT_BYTES_MAX {
                keep |= !self.settle(&mut copies).await?;
                in_flight = 0;
            }
        }
        keep |= !self.settle(&mut copies).await?;
        if keep {
            return Ok(false);
        }
        // Copies are durable (the active segment is synced below; a roll
        // synced any earlier one); flush the index before the delete.
        let active = self.active_segment();
        self.sync_active(&active).await?;
        self.checkpoint(false).await?;
        self.remove_segment(seg).await?;
        bump(&self.counters.compaction_bytes_reclaimed, seg.file_bytes.get());
        Ok(true)
    }

    fn queue_copy(self: &Rc<Self>, r: &Scanned, value: Bytes, purpose: Purpose) -> Copy {
        let done = Rc::new(Completion::default());
        let op = WriteOp {
            kind: r.kind,
            key: r.key.clone(),
            value,
            version: r.version,
            expiry_ms: r.expiry_ms,
            sync: false,
            purpose,
            done: done.clone(),
        };
        self.queue.borrow_mut().push_back(op);
        if let Some(w) = self.committer_waker.borrow_mut().take() {
            w.wake();
        }
        Copy { old: r.loc, fp: fingerprint(&r.key), done }
    }

    /// Waits for queued copies; false if some entry still points at an original.
    async fn settle(&self, copies: &mut Vec<Copy>) -> Result<bool> {
        let mut all_moved = true;
        for c in copies.drain(..) {
            let applied = c.done.wait().await?;
            if !applied.indexed && self.index.borrow().lookup(c.fp).any(|(_, e)| e.loc == c.old) {
                all_moved = false;
            }
            bump(&self.counters.compaction_records_moved, applied.indexed as u64);
        }
        Ok(all_moved)
    }

    /// Removes the entry whose tombstone retention is over (unless a write
    /// to the key is in flight: then the next pass tries again).
    fn forget_entry(&self, fp: u64, r: &Scanned) {
        if self.inflight.borrow().contains_key(&fp) {
            return;
        }
        let mut index = self.index.borrow_mut();
        if let Some((slot, _)) = index.lookup(fp).find(|(_, e)| e.loc == r.loc) {
            index.remove(slot);
            drop(index);
            self.mark_dead(r.loc);
        }
    }

    /// The live manifest that lists the chunk `r`, if any.
    async fn owner_manifest(&self, r: &Scanned) -> Result<Option<(Scanned, Loc)>> {
        let fp = fingerprint(&r.key);
        let candidates: Vec<_> =
            self.index.borrow().lookup(fp).map(|(_, e)| e).filter(|e| !e.tombstone && e.version == r.version).collect();
        for e in candidates {
            let Some(rec) = self.read_record(e.loc, &r.key).await? else {
                continue;
            };
            if rec.kind != RecordKind::ChunkedPut || !rec.key_matches {
                continue;
            }
            let Some((_, chunks)) = decode_manifest(&rec.value) else {
                continue;
            };
            if chunks.iter().any(|c| c.loc == r.loc) {
                let m = Scanned {
                    loc: e.loc,
                    kind: RecordKind::ChunkedPut,
                    key: r.key.clone(),
                    version: rec.version,
                    expiry_ms: rec.expiry_ms,
                    value: Some(rec.value),
                };
                return Ok(Some((m, e.loc)));
            }
        }
        Ok(None)
    }

    /// Copies a whole chunked value (chunks, then a new manifest moved in
    /// place of the old). `None` if its chunks could not be read.
    async fn copy_chunked(self: &Rc<Self>, manifest: &Scanned) -> Result<Option<Copy>> {
        let Some((total, chunks)) = manifest.value.as_deref().and_then(decode_manifest) else {
            return Ok(None);
        };
        let mut moved = Vec::with_capacity(chunks.len());
        for c in &chunks {
            let Some(rec) = self.read_record(c.loc, &manifest.key).await? else {
                return Ok(None);
            };
            let chunk = Scanned {
                loc: c.loc,
                kind: RecordKind::Chunk,
                key: manifest.key.clone(),
                version: manifest.version,
                expiry_ms: manifest.expiry_ms,
                value: None,
            };
            let copy = self.queue_copy(&chunk, rec.value, Purpose::Chunk);
            let applied = copy.done.wait().await?;
            moved.push(ChunkRef { loc: applied.loc, data_len: c.data_len });
        }
        let value = encode_manifest(total, &moved);
        Ok(Some(self.queue_copy(manifest, value, Purpose::Relocate { old: manifest.loc })))
    }

    /// Cache mode: drops the oldest sealed segment and every index entry in it.
    /// False if there is none to drop.
    pub(crate) async fn drop_oldest_segment(&self) -> Result<bool> {
        let oldest = self.segments.borrow().values().find(|s| s.sealed.get()).cloned();
        let Some(seg) = oldest else { return Ok(false) };
        let id = seg.id;
        self.index.borrow_mut().retain(|_, e| e.loc.segment != id);
        // Flush first: no index state that survives a crash may point into it.
        self.checkpoint(false).await?;
        self.remove_segment(&seg).await?;
        bump(&self.counters.segments_dropped, 1);
        tracing::info!(segment = id, "disk budget reached: oldest segment dropped");
        Ok(true)
    }

    async fn remove_segment(&self, seg: &Segment<S::File>) -> Result<()> {
        self.segments.borrow_mut().remove(&seg.id);
        self.storage.remove(&segments::file_name(seg.id)).await.map_err(io_err("remove segment"))?;
        self.storage.sync_dir().await.map_err(io_err("sync data dir"))
    }
}
