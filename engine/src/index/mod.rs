//! The engine's index: a persistent hash table in one mmap'd file, mapping a
//! key's 64-bit [`fingerprint`] to where the key's latest record lives in the
//! log ([`Loc`]), with its version and a tombstone bit.
//!
//! It is a recoverable cache of the log: keys are not stored (the engine
//! checks the key by reading the record, so several entries may share a
//! fingerprint and [`Index::lookup`] yields them all), and whenever the file is
//! missing, corrupt or was not shut down cleanly the engine may rebuild it
//! from the log.
//!
//! # Shape
//! The fingerprint space is split into *partitions* by prefix (extendible
//! hashing: an in-memory directory indexed by the top `global_depth` bits
//! names each fingerprint's partition). A partition is a Robin Hood
//! linear-probing table (`table.rs`) over up to [`PART_CHUNKS_MAX`] chunks of
//! eight 4 KiB pages, each page holding 170 24-byte slots. A partition grows
//! on its own, by one eighth (at least one chunk), when its load would pass
//! [`LOAD_MAX_PERCENT`]; past [`PART_CHUNKS_MAX`] chunks it splits in two by
//! the next fingerprint bit. So one growth rehashes at most 21 760 slots
//! (about a millisecond at worst), and once partitions have 8 chunks or more
//! (from about 10 000 keys) a growth or split leaves a load of at least about
//! 82.7 % (93 % * 8/9), which keeps file plus heap under 30 bytes per key
//! (29.6 at worst, 27.3 at 1M keys). Chunks are allocated lowest-free-first,
//! and chunks freed by relocation are filled by moving the last chunks down,
//! so the file never holds more than a few free chunks and is truncated when
//! it shrinks.
//! Because partitions are prefix ranges, [`Index::range`] lists a fingerprint
//! range in order by visiting only the partitions that overlap it.
//! Dropping an `Index` does not flush it: the engine flushes with
//! `clean_shutdown` at shutdown.
//!
//! # Durability (see docs/engine-format.md, "## Index file")
//! Slots are written in place through the mapping; the header (page 0) and
//! the partition descriptors are written only by [`Index::flush`], after the
//! body was synced, with `pwrite`, never through the mapping (the kernel may
//! write a dirty mapped page back at any moment, and a header must never
//! reach the disk before the body it describes).
//! - A file whose header says `clean_shutdown` is exactly the state of the
//!   last flush, and that flush was the last change.
//! - Otherwise (a crash) pages may be any mix of old and new: [`Index::open`]
//!   validates the geometry (never a panic, never undefined behaviour, every
//!   loop bounded), but entries may be missing, stale or duplicated. The
//!   engine must not trust an unclean index for completeness.
//!
//! Invariants kept here (checked by [`Index::verify`]): every chunk belongs to
//! exactly one partition, the meta list, or the free set; the directory names
//! the partition covering each prefix; each partition has fewer entries than
//! slots; the cached entry counts match the slots.

mod file;
mod image;
mod layout;
mod table;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions, RemapOptions};

use layout::{
    chunk_offset, encode_header, meta_chunks_for, Descriptor, HeaderFields, CHUNKS_MAX, DESCS_PER_META_CHUNK,
    DESC_BYTES, FINGERPRINT_SEED, FLAG_CLEAN, HEADER_BYTES, INLINE_DESCS, LOC_LEN_SHIFT, LOC_OFFSET_BITS,
    LOC_OFFSET_SHIFT, LOC_SEGMENT_BITS, LOC_SEGMENT_SHIFT, LOC_TOMBSTONE_SHIFT,
};
pub use layout::{
    CHUNK_BYTES, DIR_DEPTH_MAX, LOC_LEN_CODE_MAX, LOC_LEN_MANTISSA_BITS, LOC_LEN_UNIT_BYTES, LOC_OFFSET_ALIGN,
    PAGE_BYTES, PARTITIONS_MAX, PART_CHUNKS_MAX, SLOTS_PER_CHUNK, SLOT_BYTES,
};
use table::{read_item, slot_offset, Item, Probe};

use crate::limits::{SEGMENT_ID_MAX, SEGMENT_LEN_MAX};

/// A partition grows when an insert would push its load past this percentage.
/// High enough for the 32-bytes-per-key budget, low enough that Robin Hood
/// probes stay a few slots long.
pub const LOAD_MAX_PERCENT: usize = 93;
/// A partition of `n` chunks grows to `n + max(1, n / GROWTH_DIVISOR)`.
pub const GROWTH_DIVISOR: usize = 8;
/// Split halves and shrunk partitions are sized for at most this load. The
/// halves of a full partition land near 82.7 % (93 % * 16/18); the slack up
/// to 85 % absorbs an uneven split (4 standard deviations) without taking a
/// tenth chunk, so neither needs to grow again soon.
pub const LOAD_FIT_PERCENT: usize = 85;
/// A partition shrinks (on remove or retain) once its load falls below this.
pub const LOAD_SHRINK_PERCENT: usize = 40;

/// The most entries a partition of `chunks` chunks holds before it grows.
fn max_entries(chunks: usize) -> usize {
    chunks * SLOTS_PER_CHUNK * LOAD_MAX_PERCENT / 100
}

/// The chunk count a partition of `chunks` chunks grows to so that it can
/// hold `entries`; more than [`PART_CHUNKS_MAX`] means "split".
fn grow_chunks(chunks: usize, entries: usize) -> usize {
    let mut m = chunks;
    loop {
        m += (m / GROWTH_DIVISOR).max(1);
        if max_entries(m) >= entries || m > PART_CHUNKS_MAX {
            return m;
        }
    }
}

/// The fewest chunks that hold `entries` at no more than
/// [`LOAD_FIT_PERCENT`]: used for split halves and shrinking.
fn fit_chunks(entries: usize) -> usize {
    (entries * 100).div_ceil(SLOTS_PER_CHUNK * LOAD_FIT_PERCENT)
}

/// Below this many entries a partition of `chunks` chunks shrinks.
fn shrink_below(chunks: usize) -> usize {
    chunks * SLOTS_PER_CHUNK * LOAD_SHRINK_PERCENT / 100
}

/// `owner` value of a chunk nobody uses.
const OWNER_FREE: u32 = u32::MAX;
/// `owner` value of a chunk holding descriptors.
const OWNER_META: u32 = u32::MAX - 1;

/// The key fingerprint the index is keyed by: xxh3-64 with a fixed seed,
/// never 0 (0 marks an empty slot, so it is mapped to 1). Stored on disk:
/// this function must never change (the file records the seed).
pub fn fingerprint(key: &[u8]) -> u64 {
    match xxhash_rust::xxh3::xxh3_64_with_seed(key, FINGERPRINT_SEED) {
        0 => 1,
        fp => fp,
    }
}

/// Where a record lives in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    /// Segment id, at most [`SEGMENT_ID_MAX`] (24 bits).
    pub segment: u32,
    /// Byte offset in the segment: a multiple of [`LOC_OFFSET_ALIGN`], below
    /// [`SEGMENT_LEN_MAX`] (2^30).
    pub offset: u32,
    /// The record's length as a 12-bit code (see [`Loc::len_bytes`]): exact
    /// below 1 KiB, rounded up by at most 1/64 above.
    pub len_code: u16,
}

impl Loc {
    /// A location, checked against the packing's limits.
    pub fn new(segment: u32, offset: u32, len_code: u16) -> Result<Loc, IndexError> {
        let loc = Loc { segment, offset, len_code };
        if loc.is_valid() {
            Ok(loc)
        } else {
            Err(IndexError::InvalidLoc { segment, offset, len_code })
        }
    }

    /// The location of a record of `len` bytes at `offset` of `segment`.
    /// Out-of-range values are not checked here: [`Index::insert`] refuses
    /// them, so callers building a `Loc` from log positions need not.
    pub fn for_record(segment: u32, offset: u64, len: u64) -> Loc {
        Loc { segment, offset: u32::try_from(offset).unwrap_or(u32::MAX), len_code: Loc::len_code_for(len) }
    }

    /// The record's length, from its code: exact for records below 1 KiB
    /// (128 units of 8 bytes), otherwise rounded up by at most 1/64. Reads use
    /// it as the length to read (the decoder ignores what follows the record)
    /// and byte accounting uses it on both sides, live and dead.
    pub fn len_bytes(&self) -> u64 {
        let exponent = u32::from(self.len_code >> LOC_LEN_MANTISSA_BITS);
        let mantissa = u64::from(self.len_code & ((1 << LOC_LEN_MANTISSA_BITS) - 1));
        (mantissa << exponent) * LOC_LEN_UNIT_BYTES
    }

    /// The smallest code whose length is at least `len` bytes (saturating
    /// far beyond any record: 127 × 2^31 units of 8 bytes).
    pub fn len_code_for(len: u64) -> u16 {
        let units = len.div_ceil(LOC_LEN_UNIT_BYTES);
        let mantissa_end = 1u64 << LOC_LEN_MANTISSA_BITS;
        let exponent_max = u32::from(LOC_LEN_CODE_MAX >> LOC_LEN_MANTISSA_BITS);
        let mut exponent = (u64::BITS - units.leading_zeros()).saturating_sub(LOC_LEN_MANTISSA_BITS);
        while exponent <= exponent_max {
            let mantissa = units.div_ceil(1 << exponent);
            if mantissa < mantissa_end {
                return ((exponent << LOC_LEN_MANTISSA_BITS) as u16) | mantissa as u16;
            }
            exponent += 1;
        }
        LOC_LEN_CODE_MAX
    }

    /// Whether every field fits its bits in the packed form.
    pub fn is_valid(&self) -> bool {
        self.segment <= SEGMENT_ID_MAX
            && self.offset & (LOC_OFFSET_ALIGN - 1) == 0
            && u64::from(self.offset) < SEGMENT_LEN_MAX
            && self.len_code <= LOC_LEN_CODE_MAX
    }

    /// The slot's third word; the caller checked [`Loc::is_valid`].
    fn pack(&self, tombstone: bool) -> u64 {
        (u64::from(self.segment) << LOC_SEGMENT_SHIFT)
            | (u64::from(self.offset / LOC_OFFSET_ALIGN) << LOC_OFFSET_SHIFT)
            | (u64::from(self.len_code) << LOC_LEN_SHIFT)
            | (u64::from(tombstone) << LOC_TOMBSTONE_SHIFT)
    }

    /// Decodes a slot's third word; every value decodes to a valid `Loc`.
    fn unpack(bits: u64) -> (Loc, bool) {
        let segment = (bits >> LOC_SEGMENT_SHIFT) & ((1 << LOC_SEGMENT_BITS) - 1);
        let offset8 = (bits >> LOC_OFFSET_SHIFT) & ((1 << LOC_OFFSET_BITS) - 1);
        let len_code = (bits >> LOC_LEN_SHIFT) & u64::from(LOC_LEN_CODE_MAX);
        let loc = Loc { segment: segment as u32, offset: offset8 as u32 * LOC_OFFSET_ALIGN, len_code: len_code as u16 };
        (loc, bits & (1 << LOC_TOMBSTONE_SHIFT) != 0)
    }
}

/// What the index knows about one key: its latest record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The record's version (last writer wins).
    pub version: u64,
    /// Where the record is.
    pub loc: Loc,
    /// The record is a delete; kept so an older put arriving later loses.
    pub tombstone: bool,
}

impl Entry {
    fn to_item(self, fp: u64) -> Item {
        Item { fp, version: self.version, loc: self.loc.pack(self.tombstone) }
    }

    fn from_item(item: &Item) -> Entry {
        let (loc, tombstone) = Loc::unpack(item.loc);
        Entry { version: item.version, loc, tombstone }
    }
}

/// A position in the log: every record before it is reflected in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Segment id.
    pub segment: u32,
    /// Byte offset in that segment.
    pub offset: u64,
}

/// What [`Index::open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexOpen {
    /// The file was flushed with `clean_shutdown` and not changed since: its
    /// content is exactly that flush's. Otherwise it may be any mix of pages.
    pub clean_shutdown: bool,
    /// The checkpoint of the last flush.
    pub checkpoint: Checkpoint,
}

/// A handle on one slot found by [`Index::lookup`]. It stays valid until the
/// next [`Index::insert`], [`Index::remove`] or [`Index::retain`] (which may
/// move entries); using it after that panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRef {
    part: u32,
    pos: u32,
    epoch: u32,
}

/// What [`Index::check_image`] found in a valid image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    /// Length of the image.
    pub file_bytes: u64,
    /// Entries, as the header counts them.
    pub entry_count: u64,
    /// Partitions.
    pub partition_count: u32,
    /// Chunks after the header page.
    pub chunk_count: u32,
    /// Chunks no partition or meta list uses.
    pub free_chunk_count: u32,
    /// The deepest partition prefix.
    pub global_depth: u8,
    /// The clean-shutdown flag.
    pub clean_shutdown: bool,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// Everything that can go wrong with the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A system call on the index file failed (disk full is `ENOSPC` here).
    #[error("index file {path}: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The index file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid index; the engine rebuilds it from the log.
    #[error("index file is corrupt: {reason}")]
    Corrupt {
        /// What was found, and what was expected.
        reason: String,
    },
    /// Another process (or another `Index`) holds the file's lock.
    #[error("index file {path} is locked by another user")]
    Locked {
        /// The index file.
        path: PathBuf,
    },
    /// A [`Loc`] that does not fit the packed form.
    #[error("location out of range: segment {segment}, offset {offset}, length code {len_code}")]
    InvalidLoc {
        /// The segment given.
        segment: u32,
        /// The offset given.
        offset: u32,
        /// The length code given.
        len_code: u16,
    },
    /// Fingerprint 0 marks empty slots; use [`fingerprint`].
    #[error("fingerprint 0 is reserved for empty slots")]
    ZeroFingerprint,
    /// A structural limit of the file was reached.
    #[error("index is full: {what} would exceed {limit}")]
    Full {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// So many entries share a fingerprint (or a 22-bit prefix of one) that
    /// their partition cannot split: only a broken or hostile hash does this.
    #[error("{entries} entries crowd fingerprint {fingerprint:#018x}: the partition cannot split further")]
    TooManyCollisions {
        /// One of the crowding fingerprints.
        fingerprint: u64,
        /// How many entries the partition would hold.
        entries: u64,
    },
    /// An earlier header write failed during a call that cannot report
    /// errors; the on-disk state is unknown until the next successful flush.
    #[error("an earlier write to the index header failed: {reason}")]
    Poisoned {
        /// The earlier failure.
        reason: String,
    },
}

/// A partition to be laid out by [`Index::install`].
struct Leaf {
    prefix: u64,
    depth: u8,
    chunk_count: usize,
    items: Vec<Item>,
}

/// The index of one shard. Single-threaded: the engine owns it.
pub struct Index {
    /// The file's path, for error messages.
    path: PathBuf,
    /// The open file: locked, and used for growth, header writes and syncs.
    file: File,
    /// The whole file, mapped. Its length is always the file's length.
    map: MmapMut,
    /// The partitions, by id (the id is the descriptor's position on disk).
    parts: Vec<Descriptor>,
    /// Partition id for each `global_depth`-bit fingerprint prefix.
    dir: Vec<u32>,
    /// Prefix length the directory is indexed by.
    global_depth: u8,
    /// `63 - global_depth`: `(fp >> 1) >> dir_shift` is the directory index
    /// for every depth including 0, without a branch.
    dir_shift: u32,
    /// Who uses each chunk: a partition id, [`OWNER_META`] or [`OWNER_FREE`].
    owner: Vec<u32>,
    /// Free chunks, so the lowest can be taken first and the file stays dense.
    free: BTreeSet<u32>,
    /// Chunks holding descriptors past the inline ones, in descriptor order.
    meta_chunks: Vec<u32>,
    /// Entries in all partitions.
    entry_count: u64,
    /// The checkpoint the next flush records.
    checkpoint: Checkpoint,
    /// The clean flag the next flush records; any change clears it.
    clean_pending: bool,
    /// Whether the on-disk header may say "clean": then the first change
    /// must rewrite it as unclean before touching a slot.
    on_disk_clean: Cell<bool>,
    /// The meta chunks' crc as last written (the header repeats it).
    meta_crc: Cell<u32>,
    /// Set when marking the header unclean failed inside a call that cannot
    /// return an error; flushes fail until a new index is made.
    poisoned: Option<String>,
    /// Bumped whenever entries may move; stamps [`SlotRef`]s.
    epoch: u32,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .field("entries", &self.entry_count)
            .field("partitions", &self.parts.len())
            .field("chunks", &self.owner.len())
            .field("free_chunks", &self.free.len())
            .field("global_depth", &self.global_depth)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

/// The entries [`Index::lookup`] finds.
pub struct Lookup<'a> {
    probe: Option<Probe<'a>>,
    part: u32,
    epoch: u32,
}

impl fmt::Debug for Lookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookup").field("part", &self.part).finish_non_exhaustive()
    }
}

impl Iterator for Lookup<'_> {
    type Item = (SlotRef, Entry);

    #[inline]
    fn next(&mut self) -> Option<(SlotRef, Entry)> {
        let (pos, item) = self.probe.as_mut()?.next_match()?;
        Some((SlotRef { part: self.part, pos, epoch: self.epoch }, Entry::from_item(&item)))
    }
}

/// Every entry, partition by partition ([`Index::iter`]).
pub struct Iter<'a> {
    map: &'a [u8],
    parts: &'a [Descriptor],
    part: usize,
    pos: u32,
}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("part", &self.part).field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl Iterator for Iter<'_> {
    type Item = (u64, Entry);

    fn next(&mut self) -> Option<(u64, Entry)> {
        while let Some(part) = self.parts.get(self.part) {
            if self.pos >= part.slot_count() {
                self.part += 1;
                self.pos = 0;
                continue;
            }
            let item = read_item(self.map, slot_offset(part, self.pos));
            self.pos += 1;
            if item.fp != 0 {
                return Some((item.fp, Entry::from_item(&item)));
            }
        }
        None
    }
}

/// The entries of a fingerprint range, in fingerprint order ([`Index::range`]).
pub struct FpRange<'a> {
    index: &'a Index,
    /// The range, inclusive at both ends (so it can reach `u64::MAX`).
    first: u64,
    last: u64,
    /// The directory slot of the next partition to visit; `None` once the
    /// partition holding `last` was visited (or the range is empty).
    next_slot: Option<usize>,
    /// The current partition's entries in range, sorted by fingerprint.
    buf: Vec<(u64, Entry)>,
    /// The next entry of `buf` to yield.
    pos: usize,
    /// Partitions scanned so far.
    visited: usize,
}

impl FpRange<'_> {
    /// How many partitions have been scanned so far: what the range has cost.
    pub fn partitions_visited(&self) -> usize {
        self.visited
    }

    /// Scans the partition at directory slot `slot` into `buf` and notes the
    /// slot after the partition's last one as the next to visit.
    fn load(&mut self, slot: usize) {
        let index = self.index;
        let part = &index.parts[index.dir[slot] as usize];
        let (start, len) = dir_range(part.prefix, part.depth, index.global_depth);
        let after = start + len;
        self.next_slot = (after <= index.dir_slot(self.last)).then_some(after);
        self.visited += 1;
        self.buf.clear();
        self.pos = 0;
        for pos in 0..part.slot_count() {
            let item = read_item(&index.map, slot_offset(part, pos));
            // `covers`: an unclean file may hold an entry in the wrong
            // partition, which lookups cannot find either; listing it would
            // break the order.
            if item.fp != 0 && (self.first..=self.last).contains(&item.fp) && part.covers(item.fp) {
                self.buf.push((item.fp, Entry::from_item(&item)));
            }
        }
        self.buf.sort_unstable_by_key(|&(fp, _)| fp);
    }
}

impl fmt::Debug for FpRange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FpRange")
            .field("first", &self.first)
            .field("last", &self.last)
            .field("next_slot", &self.next_slot)
            .field("visited", &self.visited)
            .finish_non_exhaustive()
    }
}

impl Iterator for FpRange<'_> {
    type Item = (u64, Entry);

    fn next(&mut self) -> Option<(u64, Entry)> {
        loop {
            if let Some(&found) = self.buf.get(self.pos) {
                self.pos += 1;
                return Some(found);
            }
            let slot = self.next_slot?;
            self.load(slot);
        }
    }
}

impl Index {
    /// Opens the index at `path`, creating an empty one if the file is absent.
    /// A file that fails validation is `Err(Corrupt)`: the engine then calls
    /// [`Index::create`] and rebuilds from the log. Before returning, the
    /// on-disk header is rewritten as unclean and synced, so a crash from now
    /// on is seen as one.
    pub fn open(path: &Path) -> Result<(Index, IndexOpen), IndexError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let index = Index::create(path)?;
                return Ok((index, IndexOpen { clean_shutdown: false, checkpoint: Checkpoint::default() }));
            }
            Err(e) => return Err(io_error("opening", path, e)),
        };
        lock(&file, path)?;
        let len = file.metadata().map_err(|e| io_error("reading the length", path, e))?.len();
        if len < HEADER_BYTES as u64 {
            return Err(IndexError::Corrupt {
                reason: format!("file is {len} bytes, shorter than its {HEADER_BYTES}-byte header"),
            });
        }
        let Ok(map_len) = usize::try_from(len) else {
            return Err(IndexError::Corrupt { reason: format!("file is {len} bytes, more than memory can map") });
        };
        // SAFETY: the mapping covers exactly the file's current length, and we
        // hold the file's exclusive lock: by contract nobody else writes or
        // truncates an index file while an engine has it open (truncation by
        // another process would raise SIGBUS, which no mapping can prevent).
        let map =
            unsafe { MmapOptions::new().len(map_len).map_mut(&file) }.map_err(|e| io_error("mapping", path, e))?;
        let parsed = image::parse(&map)?;
        let opened = IndexOpen { clean_shutdown: parsed.clean(), checkpoint: parsed.checkpoint() };
        let index = Index::from_parsed(path, file, map, parsed);
        index.write_header(false)?;
        index.on_disk_clean.set(false);
        Ok((index, opened))
    }

    /// A fresh, empty index at `path`, replacing any file there.
    pub fn create(path: &Path) -> Result<Index, IndexError> {
        // Not `truncate(true)`: a file another engine has locked must not be
        // emptied before we know we own it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_error("creating", path, e))?;
        lock(&file, path)?;
        file.set_len(0).map_err(|e| io_error("truncating", path, e))?;
        file::grow(&file, 0, HEADER_BYTES as u64).map_err(|e| io_error("reserving the header", path, e))?;
        // SAFETY: as in `open`: the file is exactly HEADER_BYTES long and locked.
        let map =
            unsafe { MmapOptions::new().len(HEADER_BYTES).map_mut(&file) }.map_err(|e| io_error("mapping", path, e))?;
        let index = Index {
            path: path.to_path_buf(),
            file,
            map,
            parts: vec![Descriptor::EMPTY_ROOT],
            dir: vec![0],
            global_depth: 0,
            dir_shift: 63,
            owner: Vec::new(),
            free: BTreeSet::new(),
            meta_chunks: Vec::new(),
            entry_count: 0,
            checkpoint: Checkpoint::default(),
            clean_pending: false,
            on_disk_clean: Cell::new(false),
            meta_crc: Cell::new(0),
            poisoned: None,
            epoch: 0,
        };
        index.write_header(false)?;
        Ok(index)
    }

    fn from_parsed(path: &Path, file: File, map: MmapMut, parsed: image::Parsed) -> Index {
        let chunk_count = parsed.header.chunk_count as usize;
        let mut owner = vec![OWNER_FREE; chunk_count];
        for &c in &parsed.header.meta_chunks {
            owner[c as usize] = OWNER_META;
        }
        for (id, d) in parsed.parts.iter().enumerate() {
            for &c in &d.chunks[..usize::from(d.chunk_count)] {
                owner[c as usize] = id as u32;
            }
        }
        let global_depth = parsed.global_depth;
        let mut dir = vec![0u32; 1usize << global_depth];
        for (id, d) in parsed.parts.iter().enumerate() {
            let (start, len) = dir_range(d.prefix, d.depth, global_depth);
            dir[start..start + len].fill(id as u32);
        }
        Index {
            path: path.to_path_buf(),
            file,
            map,
            dir,
            global_depth,
            dir_shift: 63 - u32::from(global_depth),
            owner,
            free: parsed.free_chunks.iter().copied().collect(),
            meta_chunks: parsed.header.meta_chunks.clone(),
            entry_count: parsed.header.entry_count,
            checkpoint: parsed.checkpoint(),
            clean_pending: false,
            on_disk_clean: Cell::new(parsed.clean()),
            meta_crc: Cell::new(parsed.header.meta_crc),
            poisoned: None,
            epoch: 0,
            parts: parsed.parts,
        }
    }

    /// Checks a whole index file image exactly as [`Index::open`] does,
    /// without touching any file. Never panics, whatever the bytes.
    pub fn check_image(bytes: &[u8]) -> Result<ImageSummary, IndexError> {
        let parsed = image::parse(bytes)?;
        Ok(ImageSummary {
            file_bytes: bytes.len() as u64,
            entry_count: parsed.header.entry_count,
            partition_count: parsed.header.partition_count,
            chunk_count: parsed.header.chunk_count,
            free_chunk_count: parsed.free_chunks.len() as u32,
            global_depth: parsed.global_depth,
            clean_shutdown: parsed.clean(),
            checkpoint: parsed.checkpoint(),
        })
    }

    /// The directory slot of `fp`: its top `global_depth` bits.
    #[inline]
    fn dir_slot(&self, fp: u64) -> usize {
        ((fp >> 1) >> self.dir_shift) as usize
    }

    /// The partition `fp` belongs to.
    #[inline]
    fn part_of(&self, fp: u64) -> usize {
        self.dir[self.dir_slot(fp)] as usize
    }

    /// The entries whose fingerprint is in `fps`, ascending by fingerprint
    /// (entries sharing one come out next to each other, in no set order).
    /// Lazy: it visits only the partitions whose prefix range overlaps `fps`,
    /// one at a time in prefix order, and only as far as it is consumed, so a
    /// caller taking a page of entries reads only the partitions that page
    /// needs. Each visited partition is scanned whole and its matching entries
    /// sorted: Robin Hood order is by home slot, and entries that wrapped
    /// around the table's end sit at its start.
    pub fn range(&self, fps: impl RangeBounds<u64>) -> FpRange<'_> {
        let first = match fps.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let last = match fps.end_bound() {
            Bound::Included(&e) => Some(e),
            Bound::Excluded(&e) => e.checked_sub(1),
            Bound::Unbounded => Some(u64::MAX),
        };
        let (first, last, next_slot) = match (first, last) {
            (Some(first), Some(last)) if first <= last => (first, last, Some(self.dir_slot(first))),
            _ => (1, 0, None),
        };
        FpRange { index: self, first, last, next_slot, buf: Vec::new(), pos: 0, visited: 0 }
    }

    /// Every entry stored under `fp` (normally none or one).
    #[inline]
    pub fn lookup(&self, fp: u64) -> Lookup<'_> {
        let p = self.part_of(fp);
        let probe = (fp != 0).then(|| Probe::new(&self.map, &self.parts[p], fp));
        Lookup { probe, part: p as u32, epoch: self.epoch }
    }

    /// Starts loading the memory a [`Index::lookup`] of `fp` will read first,
    /// without waiting for it. A lookup costs about one cache miss, and misses
    /// of consecutive lookups do not overlap (each ends in a data-dependent
    /// branch); a batch get that prefetches all its keys first, then looks
    /// them up, overlaps the misses instead.
    #[inline]
    pub fn prefetch(&self, fp: u64) {
        let part = &self.parts[self.part_of(fp)];
        let slots = part.slot_count();
        if slots == 0 {
            return;
        }
        let off = slot_offset(part, table::home(fp, part, slots));
        prefetch_read(self.map[off..].as_ptr());
    }

    /// Adds an entry under `fp` (an existing entry with the same fingerprint
    /// stays: use [`Index::replace`] to update a key). May grow the file;
    /// on error (disk full, a limit) nothing changed.
    pub fn insert(&mut self, fp: u64, entry: Entry) -> Result<(), IndexError> {
        if fp == 0 {
            return Err(IndexError::ZeroFingerprint);
        }
        if !entry.loc.is_valid() {
            let Loc { segment, offset, len_code } = entry.loc;
            return Err(IndexError::InvalidLoc { segment, offset, len_code });
        }
        self.unseal()?;
        let item = entry.to_item(fp);
        let p = self.part_of(fp);
        let part = self.parts[p];
        let placed = if (part.entry_count as usize) < max_entries(usize::from(part.chunk_count)) {
            table::insert(&mut self.map, &part, item)
        } else {
            Err(item)
        };
        match placed {
            Ok(()) => {
                self.parts[p].entry_count += 1;
                self.entry_count += 1;
            }
            Err(carried) => self.grow(p, carried)?,
        }
        self.epoch = self.epoch.wrapping_add(1);
        Ok(())
    }

    /// Overwrites the version, location and tombstone of the entry at `slot`
    /// (its fingerprint stays).
    ///
    /// # Panics
    /// If `slot` is stale (an insert, remove or retain came after the lookup
    /// that returned it) or `entry.loc` is not [`Loc::is_valid`]: both are
    /// bugs in the caller, and going on would corrupt another key's entry.
    pub fn replace(&mut self, slot: SlotRef, entry: Entry) {
        let part = self.check_slot(slot);
        assert!(entry.loc.is_valid(), "index: replace with an out-of-range location {:?}", entry.loc);
        self.unseal_or_poison();
        let off = slot_offset(&part, slot.pos);
        let fp = table::read_fp(&self.map, off);
        table::write_item(&mut self.map, off, &entry.to_item(fp));
    }

    /// Removes the entry at `slot`. May shrink its partition.
    ///
    /// # Panics
    /// If `slot` is stale (see [`Index::replace`]).
    pub fn remove(&mut self, slot: SlotRef) {
        let part = self.check_slot(slot);
        self.unseal_or_poison();
        table::remove_at(&mut self.map, &part, slot.pos);
        let p = slot.part as usize;
        self.parts[p].entry_count = self.parts[p].entry_count.saturating_sub(1);
        self.entry_count = self.entry_count.saturating_sub(1);
        self.epoch = self.epoch.wrapping_add(1);
        let count = self.parts[p].entry_count as usize;
        let chunks = usize::from(self.parts[p].chunk_count);
        if count < shrink_below(chunks) && fit_chunks(count) < chunks {
            let mut items = Vec::with_capacity(count);
            table::collect(&self.map, &self.parts[p], &mut items);
            self.relayout(p, items);
        }
    }

    fn check_slot(&self, slot: SlotRef) -> Descriptor {
        assert_eq!(slot.epoch, self.epoch, "index: stale SlotRef (entries moved since the lookup)");
        let part = self.parts[slot.part as usize];
        assert!(slot.pos < part.slot_count(), "index: SlotRef outside its partition");
        part
    }

    /// Entries stored.
    pub fn len(&self) -> u64 {
        self.entry_count
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }

    /// Every `(fingerprint, entry)`, in no particular order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { map: &self.map, parts: &self.parts, part: 0, pos: 0 }
    }

    /// Keeps only the entries for which `f` says true (`f` sees each entry
    /// once). Partitions that lost entries are rebuilt, and shrunk if they
    /// became sparse.
    pub fn retain(&mut self, mut f: impl FnMut(u64, &Entry) -> bool) {
        let mut kept = Vec::new();
        for p in 0..self.parts.len() {
            let part = self.parts[p];
            kept.clear();
            let mut dropped = false;
            for pos in 0..part.slot_count() {
                let item = read_item(&self.map, slot_offset(&part, pos));
                if item.fp == 0 {
                    continue;
                }
                if f(item.fp, &Entry::from_item(&item)) {
                    kept.push(item);
                } else {
                    dropped = true;
                }
            }
            if !dropped {
                continue;
            }
            self.unseal_or_poison();
            self.relayout(p, std::mem::take(&mut kept));
        }
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Records the checkpoint and clean flag the next [`Index::flush`] writes.
    /// Kept in memory until then: see the module docs for why the header is
    /// never written through the mapping.
    pub fn set_checkpoint(&mut self, cp: Checkpoint, clean_shutdown: bool) {
        self.checkpoint = cp;
        self.clean_pending = clean_shutdown;
    }

    /// The checkpoint the next flush records.
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Makes the current state durable: writes the descriptors, syncs the
    /// body, then writes and syncs the header (last, so a header on disk
    /// never describes a body that is not there yet).
    pub fn flush(&self) -> Result<(), IndexError> {
        if let Some(reason) = &self.poisoned {
            return Err(IndexError::Poisoned { reason: reason.clone() });
        }
        let crc = self.write_meta()?;
        self.meta_crc.set(crc);
        let body = self.map.len() - HEADER_BYTES;
        if body > 0 {
            self.map.flush_range(HEADER_BYTES, body).map_err(|e| self.io("syncing the body", e))?;
        }
        let clean = self.clean_pending;
        match self.write_header(clean) {
            Ok(()) => {
                self.on_disk_clean.set(clean);
                Ok(())
            }
            Err(e) => {
                // A torn write may have left a clean header behind.
                self.on_disk_clean.set(self.on_disk_clean.get() || clean);
                Err(e)
            }
        }
    }

    /// A consistent image of the whole index file as of now, with the current
    /// checkpoint and marked unclean: the bytes a [`Index::flush`] would leave
    /// on disk, without touching the file. The engine writes it elsewhere as
    /// the crash-safe snapshot, because the mapped file itself can be caught
    /// half-way through a change by a crash. Costs one copy of the mapping.
    pub fn snapshot_image(&self) -> Vec<u8> {
        let mut image = self.map[..].to_vec();
        let mut hasher = crc32fast::Hasher::new();
        for (m, &chunk) in self.meta_chunks.iter().enumerate() {
            let first = INLINE_DESCS + m * DESCS_PER_META_CHUNK;
            let last = self.parts.len().min(first + DESCS_PER_META_CHUNK);
            let at = chunk_offset(chunk);
            let meta = &mut image[at..at + (last - first) * DESC_BYTES];
            for (i, d) in self.parts[first..last].iter().enumerate() {
                d.encode(&mut meta[i * DESC_BYTES..(i + 1) * DESC_BYTES]);
            }
            hasher.update(meta);
        }
        let fields = HeaderFields {
            flags: 0,
            checkpoint_segment: self.checkpoint.segment,
            checkpoint_offset: self.checkpoint.offset,
            entry_count: self.entry_count,
            chunk_count: self.owner.len() as u32,
            partition_count: self.parts.len() as u32,
            meta_crc: if self.meta_chunks.is_empty() { 0 } else { hasher.finalize() },
            meta_chunks: self.meta_chunks.clone(),
        };
        let page = encode_header(&fields, &self.parts[..self.parts.len().min(INLINE_DESCS)]);
        image[..page.len()].copy_from_slice(&page);
        image
    }

    /// Rewrites the on-disk header as unclean now, if it may say clean. Every
    /// change does this itself; call it to get the error early.
    pub fn mark_unclean(&mut self) -> Result<(), IndexError> {
        self.unseal()
    }

    /// Size of the mapped file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// Heap bytes held besides the mapping (directory, descriptors, chunk
    /// bookkeeping): with [`Index::file_bytes`], the index's whole footprint.
    pub fn memory_bytes(&self) -> u64 {
        let heap = self.dir.capacity() * size_of::<u32>()
            + self.parts.capacity() * size_of::<Descriptor>()
            + self.owner.capacity() * size_of::<u32>()
            // A B-tree spends about this much per key, node overhead included.
            + self.free.len() * 2 * size_of::<u32>()
            + self.meta_chunks.capacity() * size_of::<u32>();
        (heap + size_of::<Index>()) as u64
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> usize {
        self.parts.len()
    }

    // ---- growth and layout -------------------------------------------------

    /// Rebuilds partition `p` with `carried` added: bigger, or split.
    fn grow(&mut self, p: usize, carried: Item) -> Result<(), IndexError> {
        let part = self.parts[p];
        let mut items = Vec::with_capacity(part.entry_count as usize + 1);
        table::collect(&self.map, &part, &mut items);
        let before = items.len();
        // Only an unclean file can hold entries that belong elsewhere.
        items.retain(|it| part.covers(it.fp));
        if items.len() != before {
            tracing::warn!(partition = p, dropped = before - items.len(), "index: dropped misplaced entries");
        }
        items.push(carried);
        let chunks = grow_chunks(usize::from(part.chunk_count), items.len());
        let leaves = if chunks <= PART_CHUNKS_MAX {
            vec![Leaf { prefix: part.prefix, depth: part.depth, chunk_count: chunks, items }]
        } else {
            split(part.prefix, part.depth, items)?
        };
        self.install(p, leaves)
    }

    /// Rebuilds partition `p` in place from `items` (after entries left it),
    /// smaller if it became sparse. Cannot need new space, so cannot fail.
    fn relayout(&mut self, p: usize, items: Vec<Item>) {
        let part = self.parts[p];
        let chunks = usize::from(part.chunk_count);
        let fit = if items.len() < shrink_below(chunks) { fit_chunks(items.len()).min(chunks) } else { chunks };
        let leaf = Leaf { prefix: part.prefix, depth: part.depth, chunk_count: fit, items };
        if let Err(e) = self.install(p, vec![leaf]) {
            // Unreachable: the leaf needs no more chunks than `p` frees.
            tracing::error!(partition = p, error = %e, "index: relayout failed");
        }
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Replaces partition `p` by `leaves` (the first keeps id `p`). Space is
    /// reserved first, so on error nothing has changed.
    fn install(&mut self, p: usize, leaves: Vec<Leaf>) -> Result<(), IndexError> {
        let old = self.parts[p];
        let part_count = self.parts.len() - 1 + leaves.len();
        if part_count > PARTITIONS_MAX {
            return Err(IndexError::Full { what: "partitions", limit: PARTITIONS_MAX as u64 });
        }
        let meta_needed = meta_chunks_for(part_count).saturating_sub(self.meta_chunks.len());
        let needed = leaves.iter().map(|l| l.chunk_count).sum::<usize>() + meta_needed;
        let available = self.free.len() + usize::from(old.chunk_count);
        if needed > available {
            self.extend(needed - available)?;
        }
        // Nothing below can fail.
        for &c in &old.chunks[..usize::from(old.chunk_count)] {
            self.owner[c as usize] = OWNER_FREE;
            self.free.insert(c);
        }
        for _ in 0..meta_needed {
            let c = self.take_chunk(OWNER_META);
            let off = chunk_offset(c);
            self.map[off..off + CHUNK_BYTES].fill(0);
            self.meta_chunks.push(c);
        }
        let depth = leaves.iter().map(|l| l.depth).max().unwrap_or(0);
        while self.global_depth < depth {
            self.dir = self.dir.iter().flat_map(|&id| [id, id]).collect();
            self.global_depth += 1;
            self.dir_shift = 63 - u32::from(self.global_depth);
        }
        let mut stored = 0u64;
        for (i, leaf) in leaves.into_iter().enumerate() {
            let id = if i == 0 { p } else { self.parts.len() };
            let mut d = Descriptor {
                prefix: leaf.prefix,
                depth: leaf.depth,
                chunk_count: leaf.chunk_count as u8,
                entry_count: 0,
                chunks: [0; PART_CHUNKS_MAX],
            };
            for j in 0..leaf.chunk_count {
                d.chunks[j] = self.take_chunk(id as u32);
            }
            table::clear(&mut self.map, &d);
            let mut items = leaf.items;
            // Nearly sorted already (collected in table order, which wraps
            // once): a stable merge sort finishes it in about linear time.
            items.sort_by_key(|it| it.fp);
            let lost = table::build(&mut self.map, &d, &items);
            if !lost.is_empty() {
                // Unreachable: leaves are sized below their slot count.
                tracing::error!(partition = id, lost = lost.len(), "index: entries lost in a rebuild");
            }
            d.entry_count = (items.len() - lost.len()) as u32;
            stored += u64::from(d.entry_count);
            if i == 0 {
                self.parts[p] = d;
            } else {
                self.parts.push(d);
            }
            let (start, len) = dir_range(d.prefix, d.depth, self.global_depth);
            self.dir[start..start + len].fill(id as u32);
        }
        self.entry_count = (self.entry_count + stored).saturating_sub(u64::from(old.entry_count));
        self.compact();
        Ok(())
    }

    /// Takes the lowest free chunk for `owner`; the caller made sure one exists.
    fn take_chunk(&mut self, owner: u32) -> u32 {
        let c = self.free.pop_first().unwrap_or_else(|| unreachable!("index: no free chunk after reserving"));
        self.owner[c as usize] = owner;
        c
    }

    /// Adds `count` free chunks at the end of the file, blocks reserved.
    fn extend(&mut self, count: usize) -> Result<(), IndexError> {
        let old_chunks = self.owner.len();
        let new_chunks = old_chunks + count;
        if new_chunks > CHUNKS_MAX {
            return Err(IndexError::Full { what: "chunks", limit: CHUNKS_MAX as u64 });
        }
        let old_len = self.map.len();
        let new_len = HEADER_BYTES + new_chunks * CHUNK_BYTES;
        file::grow(&self.file, old_len as u64, new_len as u64).map_err(|e| self.io("growing", e))?;
        // SAFETY: the file is now `new_len` bytes long, so the whole enlarged
        // mapping is backed; `&mut self` guarantees no slice into the old
        // mapping is alive while it moves.
        if let Err(e) = unsafe { self.map.remap(new_len, RemapOptions::new().may_move(true)) } {
            let _ = self.file.set_len(old_len as u64);
            return Err(self.io("remapping", e));
        }
        self.owner.resize(new_chunks, OWNER_FREE);
        self.free.extend(old_chunks as u32..new_chunks as u32);
        Ok(())
    }

    /// Moves the last chunks down into free ones and truncates the file, so
    /// space freed by relocations never lingers.
    fn compact(&mut self) {
        let mut end = self.owner.len();
        loop {
            while end > 0 && self.owner[end - 1] == OWNER_FREE {
                end -= 1;
            }
            let Some(&low) = self.free.first() else { break };
            if low as usize >= end {
                break;
            }
            self.move_chunk(end as u32 - 1, low);
        }
        if end < self.owner.len() {
            self.truncate_chunks(end);
        }
    }

    /// Copies chunk `src` (in use) to `dst` (free) and repoints its owner.
    fn move_chunk(&mut self, src: u32, dst: u32) {
        let who = self.owner[src as usize];
        let from = chunk_offset(src);
        self.map.copy_within(from..from + CHUNK_BYTES, chunk_offset(dst));
        let list: &mut [u32] = if who == OWNER_META {
            &mut self.meta_chunks
        } else {
            let d = &mut self.parts[who as usize];
            &mut d.chunks[..usize::from(d.chunk_count)]
        };
        if let Some(slot) = list.iter_mut().find(|c| **c == src) {
            *slot = dst;
        }
        self.owner[dst as usize] = who;
        self.owner[src as usize] = OWNER_FREE;
        self.free.remove(&dst);
        self.free.insert(src);
    }

    /// Shrinks the file to `chunks` chunks (all chunks past it are free). A
    /// failure leaves them as free chunks of a longer file.
    fn truncate_chunks(&mut self, chunks: usize) {
        let old_len = self.map.len();
        let new_len = HEADER_BYTES + chunks * CHUNK_BYTES;
        // SAFETY: shrinking only drops free chunks, which nothing refers to;
        // `&mut self` guarantees no slice into the mapping is alive.
        if let Err(e) = unsafe { self.map.remap(new_len, RemapOptions::new()) } {
            tracing::warn!(error = %e, "index: could not shrink the mapping");
            return;
        }
        if let Err(e) = self.file.set_len(new_len as u64) {
            tracing::warn!(error = %e, "index: could not truncate the file");
            // SAFETY: the file still has its old length, so mapping it all
            // again is backed.
            if let Err(e) = unsafe { self.map.remap(old_len, RemapOptions::new().may_move(true)) } {
                // The file is now longer than the header will say: the next
                // open rejects it and the engine rebuilds. Say so now.
                self.poisoned = Some(format!("index file and mapping disagree after a failed truncate: {e}"));
            }
            return;
        }
        self.owner.truncate(chunks);
        let _ = self.free.split_off(&(chunks as u32));
    }

    // ---- header ------------------------------------------------------------

    /// Writes the descriptors past the inline ones into their meta chunks
    /// (through the file, like the header) and returns their crc.
    fn write_meta(&self) -> Result<u32, IndexError> {
        if self.meta_chunks.is_empty() {
            return Ok(0);
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = Vec::new();
        for (m, &chunk) in self.meta_chunks.iter().enumerate() {
            let first = INLINE_DESCS + m * DESCS_PER_META_CHUNK;
            let last = self.parts.len().min(first + DESCS_PER_META_CHUNK);
            buf.clear();
            buf.resize((last - first) * DESC_BYTES, 0);
            for (i, d) in self.parts[first..last].iter().enumerate() {
                d.encode(&mut buf[i * DESC_BYTES..(i + 1) * DESC_BYTES]);
            }
            hasher.update(&buf);
            self.file.write_all_at(&buf, chunk_offset(chunk) as u64).map_err(|e| self.io("writing descriptors", e))?;
        }
        Ok(hasher.finalize())
    }

    /// Writes and syncs the header page describing the current geometry.
    fn write_header(&self, clean: bool) -> Result<(), IndexError> {
        let fields = HeaderFields {
            flags: if clean { FLAG_CLEAN } else { 0 },
            checkpoint_segment: self.checkpoint.segment,
            checkpoint_offset: self.checkpoint.offset,
            entry_count: self.entry_count,
            chunk_count: self.owner.len() as u32,
            partition_count: self.parts.len() as u32,
            meta_crc: self.meta_crc.get(),
            meta_chunks: self.meta_chunks.clone(),
        };
        let inline = &self.parts[..self.parts.len().min(INLINE_DESCS)];
        let page = encode_header(&fields, inline);
        self.file.write_all_at(&page, 0).map_err(|e| self.io("writing the header", e))?;
        self.map.flush_range(0, HEADER_BYTES).map_err(|e| self.io("syncing the header", e))
    }

    /// Before the first change after a clean flush: the header on disk must
    /// stop saying clean before any slot changes.
    fn unseal(&mut self) -> Result<(), IndexError> {
        if let Some(reason) = &self.poisoned {
            return Err(IndexError::Poisoned { reason: reason.clone() });
        }
        self.clean_pending = false;
        if self.on_disk_clean.get() {
            self.write_header(false)?;
            self.on_disk_clean.set(false);
        }
        Ok(())
    }

    /// [`Index::unseal`] for calls that cannot return an error.
    fn unseal_or_poison(&mut self) {
        if self.poisoned.is_none() {
            if let Err(e) = self.unseal() {
                tracing::error!(error = %e, "index: could not mark the header unclean");
                self.poisoned = Some(e.to_string());
            }
        }
    }

    fn io(&self, op: &'static str, source: std::io::Error) -> IndexError {
        io_error(op, &self.path, source)
    }

    // ---- checking ----------------------------------------------------------

    /// Checks every invariant, reading every slot: counts, prefixes, the
    /// probe order (every entry findable), directory and chunk bookkeeping.
    /// For tests and offline checks; a clean file always passes.
    pub fn verify(&self) -> Result<(), IndexError> {
        let bad = |reason: String| Err(IndexError::Corrupt { reason });
        let mut total = 0u64;
        let mut owners = vec![OWNER_FREE; self.owner.len()];
        for &c in &self.meta_chunks {
            owners[c as usize] = OWNER_META;
        }
        for (id, part) in self.parts.iter().enumerate() {
            for &c in &part.chunks[..usize::from(part.chunk_count)] {
                owners[c as usize] = id as u32;
            }
            let slots = part.slot_count();
            let mut count = 0u32;
            for pos in 0..slots {
                let item = read_item(&self.map, slot_offset(part, pos));
                if item.fp == 0 {
                    continue;
                }
                count += 1;
                if !part.covers(item.fp) {
                    return bad(format!("partition {id}: fingerprint {:#x} outside its prefix", item.fp));
                }
                let prev_pos = if pos == 0 { slots - 1 } else { pos - 1 };
                let prev = table::read_fp(&self.map, slot_offset(part, prev_pos));
                let d = table::distance(pos, table::home(item.fp, part, slots), slots);
                if prev == 0 {
                    if d != 0 {
                        return bad(format!("partition {id}: slot {pos} is {d} from home after an empty slot"));
                    }
                } else {
                    let pd = table::distance(prev_pos, table::home(prev, part, slots), slots);
                    if d > pd + 1 || (d == pd + 1 && item.fp < prev) {
                        return bad(format!("partition {id}: slot {pos} out of probe order"));
                    }
                }
                if !Probe::new(&self.map, part, item.fp).any_match_at(pos) {
                    return bad(format!("partition {id}: slot {pos} is not found by a lookup"));
                }
            }
            if count != part.entry_count || (slots > 0 && count >= slots) {
                return bad(format!("partition {id}: {count} entries stored, {} counted", part.entry_count));
            }
            total += u64::from(count);
        }
        if total != self.entry_count {
            return bad(format!("{total} entries stored, {} counted", self.entry_count));
        }
        if owners != self.owner {
            return bad("chunk owners disagree with the descriptors".to_string());
        }
        let free: BTreeSet<u32> = (0..owners.len() as u32).filter(|&c| owners[c as usize] == OWNER_FREE).collect();
        if free != self.free {
            return bad("free set disagrees with the owners".to_string());
        }
        if self.meta_chunks.len() != meta_chunks_for(self.parts.len()) {
            return bad(format!("{} meta chunks for {} partitions", self.meta_chunks.len(), self.parts.len()));
        }
        for (i, &id) in self.dir.iter().enumerate() {
            let prefix = if self.global_depth == 0 { 0 } else { (i as u64) << (64 - u32::from(self.global_depth)) };
            if !self.parts[id as usize].covers(prefix) || self.parts[id as usize].depth > self.global_depth {
                return bad(format!("directory entry {i} names partition {id}, which does not cover it"));
            }
        }
        Ok(())
    }
}

/// Splits the partition `(prefix, depth)` holding `items` by the next
/// fingerprint bit, again while a half is too big for one partition.
fn split(prefix: u64, depth: u8, items: Vec<Item>) -> Result<Vec<Leaf>, IndexError> {
    if let Some(first) = items.first() {
        if items.iter().all(|it| it.fp == first.fp) {
            return Err(IndexError::TooManyCollisions { fingerprint: first.fp, entries: items.len() as u64 });
        }
    }
    let mut leaves = Vec::new();
    // Depth-first, left half first, so leaves come out in prefix order.
    let mut todo = vec![(prefix, depth, items, true)];
    while let Some((prefix, depth, items, must_split)) = todo.pop() {
        let chunks = fit_chunks(items.len());
        if !must_split && chunks <= PART_CHUNKS_MAX {
            leaves.push(Leaf { prefix, depth, chunk_count: chunks, items });
            continue;
        }
        if depth >= DIR_DEPTH_MAX {
            let fingerprint = items.first().map_or(prefix, |it| it.fp);
            return Err(IndexError::TooManyCollisions { fingerprint, entries: items.len() as u64 });
        }
        let bit = 1u64 << (63 - u32::from(depth));
        let (left, right): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|it| it.fp & bit == 0);
        todo.push((prefix | bit, depth + 1, right, false));
        todo.push((prefix, depth + 1, left, false));
    }
    Ok(leaves)
}

/// The directory entries of partition `(prefix, depth)` at `global_depth`.
fn dir_range(prefix: u64, depth: u8, global_depth: u8) -> (usize, usize) {
    let start = if global_depth == 0 { 0 } else { (prefix >> (64 - u32::from(global_depth))) as usize };
    (start, 1usize << (global_depth - depth))
}

/// A hint to load the cache line at `p`; no-op where we have no intrinsic.
#[inline(always)]
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults and reads nothing architecturally;
        // `p` points into the live mapping anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn lock(file: &File, path: &Path) -> Result<(), IndexError> {
    match file::lock_exclusive(file) {
        Ok(true) => Ok(()),
        Ok(false) => Err(IndexError::Locked { path: path.to_path_buf() }),
        Err(e) => Err(io_error("locking", path, e)),
    }
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> IndexError {
    IndexError::Io { op, path: path.to_path_buf(), source }
}
