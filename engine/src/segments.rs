//! The log's segment files: naming, creation (header written and synced before
//! any record), sealing, and the per-segment byte accounting compaction reads.
//!
//! Invariants:
//! - a segment file exists under its final name only once its header is
//!   durable, so a crash can leave an empty segment but never one whose header
//!   is torn while records follow it;
//! - a sealed segment is immutable, fully synced, and its file ends at the
//!   first 4096-byte boundary after its last record (zero padded);
//! - `dead_bytes <= record_bytes`: dead bytes are records no index entry
//!   points to any more.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::io::{Storage, StorageFile};
use crate::record::{SegmentHeader, SEGMENT_HEADER_LEN};

/// Prefill writes zeros in pieces of this size.
const PREFILL_CHUNK_BYTES: usize = 1 << 20;
/// The block size the log aligns its writes to.
pub(crate) const BLOCK: u64 = 4096;

/// The file name of segment `id`.
pub(crate) fn file_name(id: u32) -> String {
    format!("seg-{id:08}.log")
}

/// The segment id in a file name made by [`file_name`].
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK) * BLOCK
}

pub(crate) fn align_down(v: u64) -> u64 {
    v / BLOCK * BLOCK
}

/// One segment file and its accounting.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    pub id: u32,
    pub file: Rc<F>,
    /// The bytes records may use up to (header included).
    pub capacity: u64,
    /// The first byte after the last record.
    pub end: Cell<u64>,
    pub record_bytes: Cell<u64>,
    pub dead_bytes: Cell<u64>,
    pub file_bytes: Cell<u64>,
    pub sealed: Cell<bool>,
    /// The latest expiry of any record in it (0 if some never expire), and the
    /// bytes of records with an expiry: once the clock passes it, those bytes
    /// are dead too.
    pub expiry_ms_max: Cell<u64>,
    pub expiring_bytes: Cell<u64>,
}

impl<F: StorageFile> Segment<F> {
    pub fn new(id: u32, file: F, capacity: u64, end: u64, file_bytes: u64) -> Self {
        Self {
            id,
            file: Rc::new(file),
            capacity,
            end: Cell::new(end),
            record_bytes: Cell::new(0),
            dead_bytes: Cell::new(0),
            file_bytes: Cell::new(file_bytes),
            sealed: Cell::new(false),
            expiry_ms_max: Cell::new(0),
            expiring_bytes: Cell::new(0),
        }
    }

    /// Counts a record of `len` bytes written (or found) in this segment.
    pub fn add_record(&self, len: u64, expiry_ms: u64) {
        self.record_bytes.set(self.record_bytes.get() + len);
        if expiry_ms != 0 {
            self.expiring_bytes.set(self.expiring_bytes.get() + len);
            self.expiry_ms_max.set(self.expiry_ms_max.get().max(expiry_ms));
        }
    }

    /// Counts `len` bytes of this segment as no longer referenced.
    pub fn add_dead(&self, len: u64) {
        let dead = (self.dead_bytes.get() + len).min(self.record_bytes.get());
        self.dead_bytes.set(dead);
    }

    /// The share of the records that is garbage at `now_ms`, expired values included.
    pub fn garbage_ratio(&self, now_ms: u64) -> f64 {
        let total = self.record_bytes.get();
        if total == 0 {
            return 1.0;
        }
        let mut dead = self.dead_bytes.get();
        if self.expiry_ms_max.get() != 0 && self.expiry_ms_max.get() <= now_ms {
            dead += self.expiring_bytes.get();
        }
        (dead.min(total)) as f64 / total as f64
    }

    pub fn remaining(&self) -> u64 {
        self.capacity.saturating_sub(self.end.get())
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Creates segment `id` with room for `capacity` bytes: writes and syncs its
/// header (and zeros over the rest when `prefill`), then syncs the directory.
pub(crate) async fn create<S: Storage>(
    storage: &S,
    id: u32,
    capacity: u64,
    prefill: bool,
) -> io::Result<Segment<S::File>> {
    let name = file_name(id);
    let file = storage.open(&name, true).await?;
    let result = write_new(storage, &file, id, capacity, prefill).await;
    if let Err(e) = result {
        // Nothing was ever acknowledged from it: leave no half-made segment.
        drop(file);
        let _ = storage.remove(&name).await;
        return Err(e);
    }
    let file_bytes = if prefill { capacity } else { SEGMENT_HEADER_LEN as u64 };
    Ok(Segment::new(id, file, capacity, SEGMENT_HEADER_LEN as u64, file_bytes))
}

async fn write_new<S: Storage>(storage: &S, file: &S::File, id: u32, capacity: u64, prefill: bool) -> io::Result<()> {
    let mut header = storage.alloc_buf(SEGMENT_HEADER_LEN);
    SegmentHeader { segment_id: id, created_unix_ms: now_ms(), capacity_bytes: capacity }.encode_into(&mut header);
    file.write_at(0, header).await?;
    if prefill {
        let mut pos = SEGMENT_HEADER_LEN as u64;
        while pos < capacity {
            let len = (capacity - pos).min(PREFILL_CHUNK_BYTES as u64) as usize;
            file.write_at(pos, storage.alloc_buf(len)).await?;
            pos += len as u64;
        }
    }
    file.sync().await?;
    storage.sync_dir().await
}

/// Seals `seg`: zero-pads its last block, cuts the file after it and syncs.
/// `tail` is the content of the last partial block from its start.
pub(crate) async fn seal<S: Storage>(storage: &S, seg: &Segment<S::File>, tail: &[u8]) -> io::Result<()> {
    let end = seg.end.get();
    let file_len = align_up(end);
    if end % BLOCK != 0 {
        // Rewrite the partial block so whatever lay after `end` is zero.
        let mut buf = storage.alloc_buf(BLOCK as usize);
        buf[..tail.len()].copy_from_slice(tail);
        seg.file.write_at(align_down(end), buf).await?;
    }
    seg.file.set_len(file_len).await?;
    seg.file.sync().await?;
    seg.file_bytes.set(file_len);
    seg.sealed.set(true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_reject_others() {
        assert_eq!(file_name(7), "seg-00000007.log");
        assert_eq!(parse_file_name("seg-00000007.log"), Some(7));
        assert_eq!(parse_file_name(&file_name(16_777_215)), Some(16_777_215));
        for bad in ["seg-7.log", "seg-0000000x.log", "index.map", "seg-00000007.log.tmp", ""] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_down(8191), 4096);
    }
}
