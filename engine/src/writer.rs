//! Group commit: every write of a shard goes through one queue and one
//! committer task, so concurrent writes share one write and one fdatasync.
//!
//! Invariants:
//! - only the committer appends to the log, in queue order;
//! - an index entry is changed only after its record is written (and, when
//!   the write asked for it, synced), so in `sync` mode the index never points
//!   at a record a crash could lose;
//! - a write's fingerprint lock (see `engine::FpGuard`) is held until its
//!   record is applied, so writes to one key apply in the order they resolved;
//! - after a failed write or sync the engine is fenced: it refuses writes
//!   (reads go on) until it is reopened and recovery decides what is durable.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use crate::engine::{FpGuard, Inner};
use crate::error::{io_err, EngineError, Result};
use crate::index::{fingerprint, Checkpoint, Entry, Loc};
use crate::io::{Storage, StorageFile};
use crate::limits::{COMMIT_BATCH_BYTES_MAX, COMMIT_BATCH_LEN_MAX};
use crate::record::{encode_into, encoded_len, RecordKind, SEGMENT_HEADER_LEN};
use crate::segments::{self, align_down, align_up, Segment};
use crate::stats::bump;

/// A one-shot slot a waiting writer parks on until the committer fills it.
#[derive(Debug)]
pub(crate) struct Completion<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Default for Completion<T> {
    fn default() -> Self {
        Self { value: RefCell::new(None), waker: RefCell::new(None) }
    }
}

impl<T> Completion<T> {
    pub fn complete(&self, v: T) {
        *self.value.borrow_mut() = Some(v);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub async fn wait(&self) -> T {
        poll_fn(|cx| match self.value.borrow_mut().take() {
            Some(v) => Poll::Ready(v),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// What a queued write is for, which decides how it is applied.
#[derive(Debug)]
pub(crate) enum Purpose {
    /// A put, delete or chunked-put manifest: replaces the key's entry that
    /// the guard resolved (or inserts one).
    Client(FpGuard),
    /// Compaction's copy of a live record: moves the entry only if it still
    /// points at `old` and no client write to the key is in flight.
    Relocate { old: Loc },
    /// A piece of a chunked value: no index entry of its own.
    Chunk,
}

/// One record waiting to be committed.
#[derive(Debug)]
pub(crate) struct WriteOp {
    pub kind: RecordKind,
    pub key: Bytes,
    pub value: Bytes,
    pub version: u64,
    pub expiry_ms: u64,
    /// Acknowledge only after fdatasync.
    pub sync: bool,
    pub purpose: Purpose,
    pub done: Rc<Completion<Result<Applied>>>,
}

impl WriteOp {
    fn encoded_len(&self) -> u64 {
        encoded_len(self.key.len(), self.value.len()) as u64
    }
}

/// Batches written but not yet applied, at most: the writer writes the next
/// batch while the apply stage syncs the previous ones.
const PIPELINE_BATCHES_MAX: usize = 2;

/// A batch in the log, waiting for its fdatasync (if any) and its apply.
#[derive(Debug)]
pub(crate) struct Written<F> {
    ops: Vec<WriteOp>,
    locs: Vec<Loc>,
    /// The log position after the batch's last record.
    end: Checkpoint,
    /// The segment the batch ended in: syncing it makes the batch durable
    /// (a roll synced the segments before it).
    segment: Rc<Segment<F>>,
}

fn fail_all(ops: Vec<WriteOp>, reason: &str) {
    for op in ops {
        op.done.complete(Err(EngineError::Closed(reason.to_string())));
    }
}

/// Where a committed record landed, and whether the index took it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Applied {
    pub loc: Loc,
    /// False for a relocation that lost its race (the copy is garbage).
    pub indexed: bool,
}

/// The log's write position: the active segment and the bytes of its last,
/// partial block (rewritten whole by the next batch, as O_DIRECT needs).
#[derive(Debug, Default)]
pub(crate) struct LogTail {
    pub active: u32,
    pub tail: Vec<u8>,
    pub bytes_since_checkpoint: u64,
    /// Writes since the last fdatasync of the active segment (interval/none modes).
    pub unsynced: bool,
    /// The end of the last record applied to the index: what a checkpoint
    /// may claim (records written but not yet applied are after it).
    pub applied: Checkpoint,
}

impl<S: Storage> Inner<S> {
    /// Queues `op` and waits for the committer to apply it.
    pub(crate) async fn submit(self: &Rc<Self>, op: WriteOp) -> Result<Applied> {
        // After close() the committer is gone: a chunked writer that outlived
        // the engine must not wait forever.
        self.writable()?;
        let done = op.done.clone();
        self.queue.borrow_mut().push_back(op);
        if let Some(w) = self.committer_waker.borrow_mut().take() {
            w.wake();
        }
        done.wait().await
    }

    /// The committer task: takes batches off the queue until the engine closes
    /// and the queue is empty.
    pub(crate) async fn commit_loop(self: Rc<Self>) {
        loop {
            let batch = poll_fn(|cx| {
                let mut q = self.queue.borrow_mut();
                if q.is_empty() {
                    if self.closing.get() {
                        return Poll::Ready(None);
                    }
                    *self.committer_waker.borrow_mut() = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let mut batch = Vec::new();
                let mut bytes = 0u64;
                while let Some(op) = q.front() {
                    let len = op.encoded_len();
                    if !batch.is_empty()
                        && (batch.len() >= COMMIT_BATCH_LEN_MAX || bytes + len > COMMIT_BATCH_BYTES_MAX as u64)
                    {
                        break;
                    }
                    bytes += len;
                    batch.extend(q.pop_front());
                }
                Poll::Ready(Some(batch))
            })
            .await;
            let Some(batch) = batch else { break };
            self.write_stage(batch).await;
            // Backpressure: a bounded number of batches between write and apply.
            poll_fn(|cx| {
                if self.written.borrow().len() < PIPELINE_BATCHES_MAX {
                    return Poll::Ready(());
                }
                *self.writer_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
        self.writer_done.set(true);
        if let Some(w) = self.applier_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Writes one batch and hands it to the apply stage.
    async fn write_stage(self: &Rc<Self>, batch: Vec<WriteOp>) {
        if let Some(reason) = self.fenced.borrow().clone() {
            fail_all(batch, &reason);
            return;
        }
        match self.write_batch(&batch).await {
            Ok(locs) => {
                let segment = self.active_segment();
                let end = Checkpoint { segment: segment.id, offset: segment.end.get() };
                self.written.borrow_mut().push_back(Written { ops: batch, locs, end, segment });
                if let Some(w) = self.applier_waker.borrow_mut().take() {
                    w.wake();
                }
            }
            Err(e) => {
                self.fence(format!("log write failed: {e}"));
                fail_all(batch, &e.to_string());
            }
        }
    }

    /// The apply stage: takes every written batch, makes them durable with
    /// one fdatasync (when any asked for it), then applies them in log order
    /// and acknowledges them. It runs while the writer writes the next batch,
    /// so a write and an fdatasync overlap; an acknowledgement still waits for
    /// an fdatasync that started after its batch's write completed.
    pub(crate) async fn apply_loop(self: Rc<Self>) {
        loop {
            let group = poll_fn(|cx| {
                let mut written = self.written.borrow_mut();
                if written.is_empty() {
                    if self.writer_done.get() {
                        return Poll::Ready(None);
                    }
                    *self.applier_waker.borrow_mut() = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(Some(written.drain(..).collect::<Vec<_>>()))
            })
            .await;
            let Some(group) = group else { break };
            if let Some(w) = self.writer_waker.borrow_mut().take() {
                w.wake();
            }
            // After a failed write or sync nothing later may be acknowledged:
            // recovery could find a hole before it.
            if let Some(reason) = self.fenced.borrow().clone() {
                group.into_iter().for_each(|w| fail_all(w.ops, &reason));
                continue;
            }
            if group.iter().any(|w| w.ops.iter().any(|op| op.sync)) {
                let last = group.last().map(|w| w.segment.clone()).expect("a group is never empty");
                if let Err(e) = self.sync_active(&last).await {
                    self.fence(format!("log fdatasync failed: {e}"));
                    let msg = e.to_string();
                    group.into_iter().for_each(|w| fail_all(w.ops, &msg));
                    continue;
                }
            }
            for w in group {
                bump(&self.counters.commits, 1);
                bump(&self.counters.committed_records, w.ops.len() as u64);
                for (op, loc) in w.ops.into_iter().zip(w.locs) {
                    let result = self.apply(&op, loc);
                    if let Err(e) = &result {
                        self.fence(format!("index update failed: {e}"));
                    }
                    op.done.complete(result);
                }
                // Every record up to the batch's end is applied: a position
                // a checkpoint may claim.
                self.log.borrow_mut().applied = w.end;
            }
            self.maybe_checkpoint();
        }
    }

    /// Refuses all later writes; reads go on.
    pub(crate) fn fence(&self, reason: String) {
        tracing::error!(reason = %reason, "engine fenced: writes refused until reopen");
        let mut f = self.fenced.borrow_mut();
        if f.is_none() {
            *f = Some(reason);
        }
    }

    /// Writes the batch into the log, rolling segments as needed, and returns
    /// where each record landed.
    async fn write_batch(self: &Rc<Self>, ops: &[WriteOp]) -> Result<Vec<Loc>> {
        let mut locs = Vec::with_capacity(ops.len());
        let mut i = 0;
        while i < ops.len() {
            let active = self.active_segment();
            let start = active.end.get();
            let mut end = start;
            let mut j = i;
            while j < ops.len() && end + ops[j].encoded_len() <= active.capacity {
                end += ops[j].encoded_len();
                j += 1;
            }
            if j == i {
                self.roll(ops[i].encoded_len()).await?;
                continue;
            }
            let base = align_down(start);
            let mut buf = self.storage.alloc_buf((align_up(end) - base) as usize);
            let mut pos = start;
            {
                let log = self.log.borrow();
                buf[..log.tail.len()].copy_from_slice(&log.tail);
            }
            for op in &ops[i..j] {
                let at = (pos - base) as usize;
                let n = encode_into(&mut buf[at..], op.kind, &op.key, &op.value, op.version, op.expiry_ms);
                // Written bytes are counted exactly; dead bytes later come from
                // the index's length code (exact below 1 KiB, at most 1/64 over).
                active.add_record(n as u64, op.expiry_ms);
                locs.push(Loc::for_record(active.id, pos, n as u64));
                pos += n as u64;
            }
            let new_tail = buf[(align_down(end) - base) as usize..(end - base) as usize].to_vec();
            active.file.write_at(base, buf).await.map_err(io_err("write log"))?;
            active.end.set(end);
            // Without prefill the file grows with each write: the disk budget
            // and the stats must see it grow (sealing sets the final size).
            active.file_bytes.set(active.file_bytes.get().max(align_up(end)));
            {
                let mut log = self.log.borrow_mut();
                log.tail = new_tail;
                log.bytes_since_checkpoint += end - start;
                log.unsynced = true;
            }
            i = j;
        }
        Ok(locs)
    }

    /// fdatasync of the active segment, timed.
    pub(crate) async fn sync_active(&self, active: &Segment<S::File>) -> Result<()> {
        let t = Instant::now();
        self.log.borrow_mut().unsynced = false;
        active.file.sync().await.map_err(io_err("fdatasync log"))?;
        self.counters.record_fsync(t.elapsed());
        Ok(())
    }

    /// Seals the active segment and makes the next one active, big enough for
    /// a record of `record_len` bytes.
    pub(crate) async fn roll(self: &Rc<Self>, record_len: u64) -> Result<()> {
        let active = self.active_segment();
        let tail = self.log.borrow().tail.clone();
        segments::seal(&self.storage, &active, &tail).await.map_err(io_err("seal segment"))?;
        let next_id = active.id + 1;
        if next_id > crate::limits::SEGMENT_ID_MAX {
            return Err(EngineError::Closed("segment ids exhausted".into()));
        }
        let needed = align_up(SEGMENT_HEADER_LEN as u64 + record_len);
        let capacity = self.config.segment_bytes.max(needed);
        let spare = self.take_spare().await;
        let seg = match spare {
            Some(seg) if seg.id == next_id && seg.capacity >= needed => seg,
            other => {
                if let Some(seg) = other {
                    let name = segments::file_name(seg.id);
                    drop(seg);
                    let _ = self.storage.remove(&name).await;
                }
                self.create_segment(next_id, capacity).await?
            }
        };
        self.segments.borrow_mut().insert(next_id, Rc::new(seg));
        {
            let mut log = self.log.borrow_mut();
            log.active = next_id;
            log.tail.clear();
            log.unsynced = false;
        }
        self.checkpoint_in_background();
        self.start_spare();
        Ok(())
    }

    async fn create_segment(&self, id: u32, capacity: u64) -> Result<Segment<S::File>> {
        segments::create(&self.storage, id, capacity, self.config.prefill_segments).await.map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                    EngineError::DiskFull { used_bytes: self.disk_bytes(), budget_bytes: self.config.disk_budget_bytes }
                }
                _ => EngineError::Io { op: "create segment", source: e },
            }
        })
    }

    /// Waits for the spare segment being prepared, if any.
    async fn take_spare(&self) -> Option<Segment<S::File>> {
        let task = self.spare.borrow_mut().take()?;
        match task.await {
            Ok(seg) => Some(seg),
            Err(e) => {
                tracing::warn!(error = %e, "preparing the spare segment failed; creating it now");
                None
            }
        }
    }

    /// Starts preparing the next segment in the background, so a roll does not
    /// wait for its header sync and prefill.
    pub(crate) fn start_spare(self: &Rc<Self>) {
        if !self.config.prefill_segments || self.closing.get() {
            return;
        }
        let this = self.clone();
        let id = self.log.borrow().active + 1;
        let task = glommio::spawn_local_into(
            async move {
                let r = segments::create(&this.storage, id, this.config.segment_bytes, true).await;
                drop(this);
                r
            },
            self.background_queue,
        );
        match task {
            Ok(t) => *self.spare.borrow_mut() = Some(t),
            Err(e) => tracing::warn!(error = %e, "cannot spawn the spare segment task"),
        }
    }

    /// Applies one committed record to the index and the cache.
    fn apply(&self, op: &WriteOp, loc: Loc) -> Result<Applied> {
        let fp = fingerprint(&op.key);
        let mut index = self.index.borrow_mut();
        match &op.purpose {
            Purpose::Client(guard) => {
                let entry = Entry { version: op.version, loc, tombstone: op.kind == RecordKind::Delete };
                let target = guard.target.get();
                let slot = target.and_then(|t| index.lookup(fp).find(|(_, e)| e.loc == t));
                match slot {
                    Some((slot, old)) => {
                        index.replace(slot, entry);
                        self.mark_dead(old.loc);
                    }
                    None => index.insert(fp, entry)?,
                }
                drop(index);
                let mut cache = self.cache.borrow_mut();
                if op.kind == RecordKind::Put {
                    cache.insert(
                        &op.key,
                        crate::cache::CachedValue {
                            value: op.value.clone(),
                            version: op.version,
                            expiry_ms: op.expiry_ms,
                        },
                    );
                } else {
                    cache.remove(&op.key);
                }
                Ok(Applied { loc, indexed: true })
            }
            Purpose::Relocate { old } => {
                let busy = self.inflight.borrow().contains_key(&fp);
                let slot = if busy { None } else { index.lookup(fp).find(|(_, e)| e.loc == *old) };
                match slot {
                    Some((slot, e)) => {
                        // A copy may turn an expired value into a tombstone.
                        index.replace(slot, Entry { loc, tombstone: op.kind == RecordKind::Delete, ..e });
                        self.mark_dead(*old);
                        Ok(Applied { loc, indexed: true })
                    }
                    None => {
                        self.mark_dead(loc);
                        Ok(Applied { loc, indexed: false })
                    }
                }
            }
            Purpose::Chunk => Ok(Applied { loc, indexed: false }),
        }
    }

    /// Counts the record at `loc` as garbage in its segment.
    pub(crate) fn mark_dead(&self, loc: Loc) {
        if let Some(seg) = self.segments.borrow().get(&loc.segment) {
            seg.add_dead(loc.len_bytes());
        }
    }

    /// Checkpoints the index when enough log has been written since the last.
    fn maybe_checkpoint(self: &Rc<Self>) {
        if self.log.borrow().bytes_since_checkpoint >= self.config.checkpoint_interval_bytes {
            self.checkpoint_in_background();
        }
    }
}
