//! The byte layout of the index file, as derived constants, and the pure
//! encode/decode of its three structures: the header page, the partition
//! descriptors and the 24-byte slots. `docs/engine-format.md` ("## Index
//! file") draws the same layout; the tests at the bottom pin every offset so
//! the two cannot drift apart silently.
//!
//! Invariants kept here:
//! - every on-disk integer is fixed-width little-endian;
//! - no slot straddles a page (170 slots and 16 bytes of zero padding per
//!   page), so a torn page write can never produce half a slot;
//! - decoding never panics: callers hand in slices of the exact size.

use crate::limits::{SEGMENT_ID_MAX, SEGMENT_LEN_MAX};

/// The unit the kernel writes back atomically at best, and the unit no slot
/// crosses.
pub const PAGE_BYTES: usize = 4096;
/// One slot: fingerprint, version, packed location.
pub const SLOT_BYTES: usize = 24;
/// Slots per page; the remaining bytes of a page are zero padding.
pub const SLOTS_PER_PAGE: usize = PAGE_BYTES / SLOT_BYTES;
/// Zero padding at the end of every slot page.
pub const PAGE_PAD_BYTES: usize = PAGE_BYTES - SLOTS_PER_PAGE * SLOT_BYTES;
// Padding smaller than a slot: no room for one more slot is wasted.
const _: () = assert!(PAGE_PAD_BYTES < SLOT_BYTES);
/// Pages per chunk, the unit of space allocation. Small enough that growing a
/// partition by one chunk is a modest step, large enough that the per-chunk
/// bookkeeping stays negligible.
pub const PAGES_PER_CHUNK: usize = 8;
/// Bytes per chunk.
pub const CHUNK_BYTES: usize = PAGE_BYTES * PAGES_PER_CHUNK;
/// Slots per chunk.
pub const SLOTS_PER_CHUNK: usize = SLOTS_PER_PAGE * PAGES_PER_CHUNK;
/// The header occupies the first page; chunk `c` starts at
/// `HEADER_BYTES + c * CHUNK_BYTES`.
pub const HEADER_BYTES: usize = PAGE_BYTES;
/// The most chunks one partition spans. This bounds the work of one growth
/// (rehashing at most `PART_SLOTS_MAX` slots): past it a partition splits.
pub const PART_CHUNKS_MAX: usize = 16;
/// The most slots one partition has.
pub const PART_SLOTS_MAX: usize = PART_CHUNKS_MAX * SLOTS_PER_CHUNK;

// ---- slot ----------------------------------------------------------------

/// Fingerprint, `u64`; 0 marks an empty slot.
pub const SLOT_FP_OFFSET: usize = 0;
/// Record version, `u64`.
pub const SLOT_VERSION_OFFSET: usize = SLOT_FP_OFFSET + size_of::<u64>();
/// Packed [`Loc`](super::Loc) and tombstone bit, `u64`.
pub const SLOT_LOC_OFFSET: usize = SLOT_VERSION_OFFSET + size_of::<u64>();
const _: () = assert!(SLOT_LOC_OFFSET + size_of::<u64>() == SLOT_BYTES);

// ---- packed location (the slot's third u64), from the low bit up -------------

/// Bit 0: the entry is a tombstone (the key's latest record is a delete).
pub const LOC_TOMBSTONE_SHIFT: u32 = 0;
/// Width of the tombstone field.
pub const LOC_TOMBSTONE_BITS: u32 = 1;
/// Bits 1..13: the record's length code (see [`Loc::len_code`](super::Loc::len_code)).
pub const LOC_LEN_SHIFT: u32 = LOC_TOMBSTONE_SHIFT + LOC_TOMBSTONE_BITS;
/// Width of the length code: a 5-bit exponent over a 7-bit mantissa.
pub const LOC_LEN_BITS: u32 = 12;
/// Width of the length code's mantissa.
pub const LOC_LEN_MANTISSA_BITS: u32 = 7;
/// Bits 13..40: the record's offset in its segment, divided by 8.
pub const LOC_OFFSET_SHIFT: u32 = LOC_LEN_SHIFT + LOC_LEN_BITS;
/// Width of the offset/8 field.
pub const LOC_OFFSET_BITS: u32 = 27;
/// Bits 40..64: the segment id.
pub const LOC_SEGMENT_SHIFT: u32 = LOC_OFFSET_SHIFT + LOC_OFFSET_BITS;
/// Width of the segment field.
pub const LOC_SEGMENT_BITS: u32 = 24;
const _: () = assert!(LOC_SEGMENT_SHIFT + LOC_SEGMENT_BITS == 64);
/// Record offsets are multiples of this (the low 3 bits are not stored).
pub const LOC_OFFSET_ALIGN: u32 = 8;
const _: () = assert!(LOC_OFFSET_ALIGN.is_power_of_two());
/// The unit of the length code's mantissa: records are 8-byte aligned.
pub const LOC_LEN_UNIT_BYTES: u64 = 8;
/// The largest length code.
pub const LOC_LEN_CODE_MAX: u16 = (1 << LOC_LEN_BITS) - 1;
// The packing must hold every segment id and offset the log can produce.
const _: () = assert!(SEGMENT_ID_MAX as u64 == (1 << LOC_SEGMENT_BITS) - 1);
const _: () = assert!(SEGMENT_LEN_MAX == (LOC_OFFSET_ALIGN as u64) << LOC_OFFSET_BITS);

// ---- header page -------------------------------------------------------------

/// The first eight bytes of every index file.
pub const MAGIC: [u8; 8] = *b"OCINDEX\0";
/// Bumped on any incompatible layout change; older files are then rebuilt.
pub const FORMAT_VERSION: u32 = 1;
/// The xxh3 seed of [`fingerprint`](super::fingerprint); stored so a file
/// written with another seed is rejected instead of silently missing keys.
pub const FINGERPRINT_SEED: u64 = 0x6f70_7469_6361_6368; // "opticach"
/// Header flag: the file was flushed at a clean shutdown and not touched since.
pub const FLAG_CLEAN: u32 = 1;
/// Every flag bit this version knows.
pub const FLAGS_KNOWN: u32 = FLAG_CLEAN;

/// `[u8; 8]` [`MAGIC`].
pub const H_MAGIC: usize = 0;
/// `u32` [`FORMAT_VERSION`].
pub const H_FORMAT_VERSION: usize = H_MAGIC + MAGIC.len();
/// `u32` [`PAGE_BYTES`]; this and the next four pin the geometry.
pub const H_PAGE_BYTES: usize = H_FORMAT_VERSION + size_of::<u32>();
/// `u32` [`SLOT_BYTES`].
pub const H_SLOT_BYTES: usize = H_PAGE_BYTES + size_of::<u32>();
/// `u32` [`SLOTS_PER_PAGE`].
pub const H_SLOTS_PER_PAGE: usize = H_SLOT_BYTES + size_of::<u32>();
/// `u32` [`PAGES_PER_CHUNK`].
pub const H_PAGES_PER_CHUNK: usize = H_SLOTS_PER_PAGE + size_of::<u32>();
/// `u32` [`PART_CHUNKS_MAX`].
pub const H_PART_CHUNKS_MAX: usize = H_PAGES_PER_CHUNK + size_of::<u32>();
/// `u32` flags ([`FLAG_CLEAN`]).
pub const H_FLAGS: usize = H_PART_CHUNKS_MAX + size_of::<u32>();
/// `u32` checkpoint segment.
pub const H_CHECKPOINT_SEGMENT: usize = H_FLAGS + size_of::<u32>();
/// `u64` checkpoint offset.
pub const H_CHECKPOINT_OFFSET: usize = H_CHECKPOINT_SEGMENT + size_of::<u32>();
/// `u64` number of entries (sum of the partitions' counts).
pub const H_ENTRY_COUNT: usize = H_CHECKPOINT_OFFSET + size_of::<u64>();
/// `u64` [`FINGERPRINT_SEED`].
pub const H_FINGERPRINT_SEED: usize = H_ENTRY_COUNT + size_of::<u64>();
/// `u32` number of chunks after the header; the file is exactly
/// `HEADER_BYTES + chunk_count * CHUNK_BYTES` long.
pub const H_CHUNK_COUNT: usize = H_FINGERPRINT_SEED + size_of::<u64>();
/// `u32` number of partitions.
pub const H_PARTITION_COUNT: usize = H_CHUNK_COUNT + size_of::<u32>();
/// `u32` number of meta chunks (descriptors past the inline ones).
pub const H_META_CHUNK_COUNT: usize = H_PARTITION_COUNT + size_of::<u32>();
/// `u32` crc32 over the descriptors stored in meta chunks, in order.
pub const H_META_CRC: usize = H_META_CHUNK_COUNT + size_of::<u32>();
/// `[u32; META_CHUNKS_MAX]` chunk numbers of the meta chunks; unused are 0.
pub const H_META_CHUNKS: usize = H_META_CRC + size_of::<u32>();
/// How many meta chunks the header can list.
pub const META_CHUNKS_MAX: usize = 240;
/// `[Descriptor; INLINE_DESCS]`: the first partitions' descriptors live in
/// the header itself, so a small index needs no meta chunk at all.
pub const H_INLINE_DESCS: usize = H_META_CHUNKS + META_CHUNKS_MAX * size_of::<u32>();
/// `u32` crc32 (crc32fast) of bytes `0..H_CRC` of the header page.
pub const H_CRC: usize = HEADER_BYTES - size_of::<u32>();
/// Descriptors held in the header page.
pub const INLINE_DESCS: usize = (H_CRC - H_INLINE_DESCS) / DESC_BYTES;

// ---- partition descriptor ------------------------------------------------------

/// `u64` the partition's fingerprint prefix, left-aligned (low bits zero).
pub const D_PREFIX: usize = 0;
/// `u8` prefix length in bits ("local depth").
pub const D_DEPTH: usize = D_PREFIX + size_of::<u64>();
/// `u8` chunks in use, at most [`PART_CHUNKS_MAX`].
pub const D_CHUNK_COUNT: usize = D_DEPTH + size_of::<u8>();
/// `u16` reserved, zero.
pub const D_RESERVED: usize = D_CHUNK_COUNT + size_of::<u8>();
/// `u32` entries in the partition.
pub const D_ENTRY_COUNT: usize = D_RESERVED + size_of::<u16>();
/// `[u32; PART_CHUNKS_MAX]` the partition's chunks in slot order; unused are 0.
pub const D_CHUNKS: usize = D_ENTRY_COUNT + size_of::<u32>();
/// One descriptor.
pub const DESC_BYTES: usize = D_CHUNKS + PART_CHUNKS_MAX * size_of::<u32>();
/// Descriptors per meta chunk (the tail of a meta chunk is zero).
pub const DESCS_PER_META_CHUNK: usize = CHUNK_BYTES / DESC_BYTES;
/// The most partitions a file can describe.
pub const PARTITIONS_MAX: usize = INLINE_DESCS + META_CHUNKS_MAX * DESCS_PER_META_CHUNK;
/// The most chunks a file can hold: every partition full, plus meta chunks.
pub const CHUNKS_MAX: usize = PARTITIONS_MAX * PART_CHUNKS_MAX + META_CHUNKS_MAX;
/// The deepest partition prefix. It bounds the in-memory directory
/// (`4 << DIR_DEPTH_MAX` bytes); uniformly spread fingerprints never come near
/// it (`PARTITIONS_MAX` partitions need about 17 bits).
pub const DIR_DEPTH_MAX: u8 = 22;
const _: () = assert!(H_INLINE_DESCS + INLINE_DESCS * DESC_BYTES <= H_CRC);
const _: () = assert!(CHUNKS_MAX < u32::MAX as usize);
const _: () = assert!(PART_SLOTS_MAX < u32::MAX as usize);

/// How many meta chunks `partitions` descriptors need.
pub const fn meta_chunks_for(partitions: usize) -> usize {
    partitions.saturating_sub(INLINE_DESCS).div_ceil(DESCS_PER_META_CHUNK)
}

// ---- little-endian helpers (never host order) -------------------------------------

/// Reads a little-endian `u64` at `off`; the caller guarantees the bounds.
#[inline]
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Reads a little-endian `u32` at `off`; the caller guarantees the bounds.
#[inline]
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

/// Reads a little-endian `u16` at `off`; the caller guarantees the bounds.
#[inline]
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Writes a little-endian `u64` at `off`.
#[inline]
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u32` at `off`.
#[inline]
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

// ---- descriptors ----------------------------------------------------------------

/// One partition as stored: a fingerprint prefix and the chunks of its table.
/// Also the in-memory form (the hot path reads `depth`, `chunk_count` and
/// `chunks` of one of these per lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Fingerprints whose top `depth` bits equal these belong here.
    pub prefix: u64,
    /// Prefix length in bits.
    pub depth: u8,
    /// Chunks in use; the table has `chunk_count * SLOTS_PER_CHUNK` slots.
    pub chunk_count: u8,
    /// Entries stored (kept in memory; written out at flush).
    pub entry_count: u32,
    /// Chunk numbers, in slot order; the first `chunk_count` are meaningful.
    pub chunks: [u32; PART_CHUNKS_MAX],
}

impl Descriptor {
    /// The partition covering every fingerprint, with no table yet.
    pub const EMPTY_ROOT: Descriptor =
        Descriptor { prefix: 0, depth: 0, chunk_count: 0, entry_count: 0, chunks: [0; PART_CHUNKS_MAX] };

    /// Slots in the partition's table.
    #[inline]
    pub fn slot_count(&self) -> u32 {
        // Cannot overflow: at most PART_SLOTS_MAX (checked at compile time above).
        u32::from(self.chunk_count) * SLOTS_PER_CHUNK as u32
    }

    /// Whether `fp` belongs to this partition.
    #[inline]
    pub fn covers(&self, fp: u64) -> bool {
        self.depth == 0 || (fp ^ self.prefix) >> (64 - u32::from(self.depth)) == 0
    }

    /// Encodes into `out` (exactly [`DESC_BYTES`] long).
    pub fn encode(&self, out: &mut [u8]) {
        put_u64(out, D_PREFIX, self.prefix);
        out[D_DEPTH] = self.depth;
        out[D_CHUNK_COUNT] = self.chunk_count;
        out[D_RESERVED..D_RESERVED + 2].copy_from_slice(&0u16.to_le_bytes());
        put_u32(out, D_ENTRY_COUNT, self.entry_count);
        for (i, c) in self.chunks.iter().enumerate() {
            let used = i < usize::from(self.chunk_count);
            put_u32(out, D_CHUNKS + i * 4, if used { *c } else { 0 });
        }
    }

    /// Decodes from `b` (exactly [`DESC_BYTES`] long) without judging the
    /// values; returns the reserved field too so the validator can check it.
    pub fn decode(b: &[u8]) -> (Descriptor, u16) {
        let mut chunks = [0u32; PART_CHUNKS_MAX];
        for (i, c) in chunks.iter_mut().enumerate() {
            *c = get_u32(b, D_CHUNKS + i * 4);
        }
        let d = Descriptor {
            prefix: get_u64(b, D_PREFIX),
            depth: b[D_DEPTH],
            chunk_count: b[D_CHUNK_COUNT],
            entry_count: get_u32(b, D_ENTRY_COUNT),
            chunks,
        };
        (d, get_u16(b, D_RESERVED))
    }
}

/// Where descriptor `i` lives: in the header page, or in meta chunk
/// `i / DESCS_PER_META_CHUNK` (after the inline ones).
pub enum DescPlace {
    /// Byte offset in the header page.
    Inline(usize),
    /// Index into the meta chunk list, and byte offset inside that chunk.
    Meta(usize, usize),
}

/// The place of descriptor `i`.
pub fn desc_place(i: usize) -> DescPlace {
    if i < INLINE_DESCS {
        DescPlace::Inline(H_INLINE_DESCS + i * DESC_BYTES)
    } else {
        let j = i - INLINE_DESCS;
        DescPlace::Meta(j / DESCS_PER_META_CHUNK, (j % DESCS_PER_META_CHUNK) * DESC_BYTES)
    }
}

/// Byte offset of chunk `c` in the file.
#[inline]
pub fn chunk_offset(c: u32) -> usize {
    HEADER_BYTES + c as usize * CHUNK_BYTES
}

/// The header fields besides the descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderFields {
    /// [`FLAG_CLEAN`] and future flags.
    pub flags: u32,
    /// Checkpoint segment.
    pub checkpoint_segment: u32,
    /// Checkpoint offset.
    pub checkpoint_offset: u64,
    /// Total entries.
    pub entry_count: u64,
    /// Chunks in the file.
    pub chunk_count: u32,
    /// Partitions described.
    pub partition_count: u32,
    /// crc32 over the descriptors in meta chunks.
    pub meta_crc: u32,
    /// The meta chunks, in descriptor order.
    pub meta_chunks: Vec<u32>,
}

/// Builds a whole header page: fields, meta chunk list, the first
/// [`INLINE_DESCS`] descriptors, crc.
pub fn encode_header(h: &HeaderFields, inline: &[Descriptor]) -> Vec<u8> {
    let mut p = vec![0u8; HEADER_BYTES];
    p[H_MAGIC..H_MAGIC + MAGIC.len()].copy_from_slice(&MAGIC);
    put_u32(&mut p, H_FORMAT_VERSION, FORMAT_VERSION);
    put_u32(&mut p, H_PAGE_BYTES, PAGE_BYTES as u32);
    put_u32(&mut p, H_SLOT_BYTES, SLOT_BYTES as u32);
    put_u32(&mut p, H_SLOTS_PER_PAGE, SLOTS_PER_PAGE as u32);
    put_u32(&mut p, H_PAGES_PER_CHUNK, PAGES_PER_CHUNK as u32);
    put_u32(&mut p, H_PART_CHUNKS_MAX, PART_CHUNKS_MAX as u32);
    put_u32(&mut p, H_FLAGS, h.flags);
    put_u32(&mut p, H_CHECKPOINT_SEGMENT, h.checkpoint_segment);
    put_u64(&mut p, H_CHECKPOINT_OFFSET, h.checkpoint_offset);
    put_u64(&mut p, H_ENTRY_COUNT, h.entry_count);
    put_u64(&mut p, H_FINGERPRINT_SEED, FINGERPRINT_SEED);
    put_u32(&mut p, H_CHUNK_COUNT, h.chunk_count);
    put_u32(&mut p, H_PARTITION_COUNT, h.partition_count);
    put_u32(&mut p, H_META_CHUNK_COUNT, h.meta_chunks.len() as u32);
    put_u32(&mut p, H_META_CRC, h.meta_crc);
    for (i, c) in h.meta_chunks.iter().enumerate().take(META_CHUNKS_MAX) {
        put_u32(&mut p, H_META_CHUNKS + i * 4, *c);
    }
    for (i, d) in inline.iter().enumerate().take(INLINE_DESCS) {
        let off = H_INLINE_DESCS + i * DESC_BYTES;
        d.encode(&mut p[off..off + DESC_BYTES]);
    }
    let crc = crc32fast::hash(&p[..H_CRC]);
    put_u32(&mut p, H_CRC, crc);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the format: if one of these moves, the file format changed and
    /// FORMAT_VERSION and docs/engine-format.md must change with it.
    #[test]
    fn layout_is_pinned() {
        assert_eq!(SLOTS_PER_PAGE, 170);
        assert_eq!(PAGE_PAD_BYTES, 16);
        assert_eq!(CHUNK_BYTES, 32768);
        assert_eq!(SLOTS_PER_CHUNK, 1360);
        assert_eq!(PART_SLOTS_MAX, 21760);
        assert_eq!((SLOT_FP_OFFSET, SLOT_VERSION_OFFSET, SLOT_LOC_OFFSET), (0, 8, 16));
        assert_eq!((LOC_TOMBSTONE_SHIFT, LOC_LEN_SHIFT, LOC_OFFSET_SHIFT, LOC_SEGMENT_SHIFT), (0, 1, 13, 40));
        assert_eq!(LOC_LEN_CODE_MAX, 4095);
        assert_eq!(
            [
                H_MAGIC,
                H_FORMAT_VERSION,
                H_PAGE_BYTES,
                H_SLOT_BYTES,
                H_SLOTS_PER_PAGE,
                H_PAGES_PER_CHUNK,
                H_PART_CHUNKS_MAX,
                H_FLAGS,
                H_CHECKPOINT_SEGMENT,
                H_CHECKPOINT_OFFSET,
                H_ENTRY_COUNT,
                H_FINGERPRINT_SEED,
                H_CHUNK_COUNT,
                H_PARTITION_COUNT,
                H_META_CHUNK_COUNT,
                H_META_CRC,
                H_META_CHUNKS,
                H_INLINE_DESCS,
                H_CRC
            ],
            [0, 8, 12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 68, 72, 76, 80, 1040, 4092]
        );
        assert_eq!(INLINE_DESCS, 38);
        assert_eq!(
            [D_PREFIX, D_DEPTH, D_CHUNK_COUNT, D_RESERVED, D_ENTRY_COUNT, D_CHUNKS, DESC_BYTES],
            [0, 8, 9, 10, 12, 16, 80]
        );
        assert_eq!(DESCS_PER_META_CHUNK, 409);
        assert_eq!(PARTITIONS_MAX, 98_198);
    }

    #[test]
    fn meta_chunks_for_counts_whole_chunks() {
        assert_eq!(meta_chunks_for(1), 0);
        assert_eq!(meta_chunks_for(INLINE_DESCS), 0);
        assert_eq!(meta_chunks_for(INLINE_DESCS + 1), 1);
        assert_eq!(meta_chunks_for(INLINE_DESCS + DESCS_PER_META_CHUNK), 1);
        assert_eq!(meta_chunks_for(INLINE_DESCS + DESCS_PER_META_CHUNK + 1), 2);
        assert_eq!(meta_chunks_for(PARTITIONS_MAX), META_CHUNKS_MAX);
    }

    #[test]
    fn descriptor_round_trips_and_clears_unused_chunks() {
        let mut chunks = [7u32; PART_CHUNKS_MAX];
        chunks[0] = 3;
        chunks[1] = 9;
        let d = Descriptor { prefix: 0xa000_0000_0000_0000, depth: 3, chunk_count: 2, entry_count: 17, chunks };
        let mut b = [0xffu8; DESC_BYTES];
        d.encode(&mut b);
        let (back, reserved) = Descriptor::decode(&b);
        assert_eq!(reserved, 0);
        assert_eq!((back.prefix, back.depth, back.chunk_count, back.entry_count), (d.prefix, 3, 2, 17));
        assert_eq!(&back.chunks[..3], &[3, 9, 0]);
        assert!(back.covers(0xbfff_ffff_ffff_ffff));
        assert!(!back.covers(0xc000_0000_0000_0000));
        assert!(Descriptor::EMPTY_ROOT.covers(u64::MAX));
    }

    #[test]
    fn header_crc_covers_everything_before_it() {
        let h = HeaderFields {
            flags: FLAG_CLEAN,
            checkpoint_segment: 5,
            checkpoint_offset: 4096,
            entry_count: 0,
            chunk_count: 0,
            partition_count: 1,
            meta_crc: 0,
            meta_chunks: vec![],
        };
        let p = encode_header(&h, &[Descriptor::EMPTY_ROOT]);
        assert_eq!(p.len(), HEADER_BYTES);
        assert_eq!(get_u32(&p, H_CRC), crc32fast::hash(&p[..H_CRC]));
        assert_eq!(&p[..8], b"OCINDEX\0");
        assert_eq!(get_u32(&p, H_CHECKPOINT_SEGMENT), 5);
        assert_eq!(get_u64(&p, H_CHECKPOINT_OFFSET), 4096);
    }
}
