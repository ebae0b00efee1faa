//! Validation of a whole index file image: the single place that decides
//! whether bytes from disk may be used. [`Index::open`](super::Index::open)
//! and the pure [`Index::check_image`](super::Index::check_image) (the fuzz
//! target's entry point) both call [`parse`], so they accept exactly the same
//! files.
//!
//! Invariants a parsed image satisfies (what the rest of the index relies on
//! for memory safety and bounded loops; slot contents are *not* checked here,
//! that would read the whole file, see [`Index::verify`](super::Index::verify)):
//! - the header crc matches, magic, version, geometry and seed are ours;
//! - the file is exactly `HEADER_BYTES + chunk_count * CHUNK_BYTES` long;
//! - every chunk named by a meta list or a descriptor exists and is named once;
//! - the meta chunks' crc matches the header;
//! - the partitions' prefixes tile the fingerprint space exactly, each at most
//!   `DIR_DEPTH_MAX` deep, each with fewer entries than slots;
//! - the entry counts add up to the header's.
//!
//! Never panics, whatever the bytes; allocations are bounded by the input's
//! length.

use super::layout::{
    chunk_offset, desc_place, get_u32, get_u64, meta_chunks_for, DescPlace, Descriptor, HeaderFields, CHUNKS_MAX,
    CHUNK_BYTES, DESC_BYTES, DIR_DEPTH_MAX, FINGERPRINT_SEED, FLAGS_KNOWN, FLAG_CLEAN, FORMAT_VERSION, HEADER_BYTES,
    H_CHECKPOINT_OFFSET, H_CHECKPOINT_SEGMENT, H_CHUNK_COUNT, H_CRC, H_ENTRY_COUNT, H_FINGERPRINT_SEED, H_FLAGS,
    H_FORMAT_VERSION, H_MAGIC, H_META_CHUNKS, H_META_CHUNK_COUNT, H_META_CRC, H_PAGES_PER_CHUNK, H_PAGE_BYTES,
    H_PARTITION_COUNT, H_PART_CHUNKS_MAX, H_SLOTS_PER_PAGE, H_SLOT_BYTES, MAGIC, META_CHUNKS_MAX, PAGES_PER_CHUNK,
    PAGE_BYTES, PARTITIONS_MAX, PART_CHUNKS_MAX, SLOTS_PER_PAGE, SLOT_BYTES,
};
use super::{Checkpoint, IndexError};
use crate::limits::{SEGMENT_ID_MAX, SEGMENT_LEN_MAX};

/// A validated image.
#[derive(Debug)]
pub struct Parsed {
    /// The header fields.
    pub header: HeaderFields,
    /// The partitions, in descriptor order.
    pub parts: Vec<Descriptor>,
    /// The deepest partition prefix.
    pub global_depth: u8,
    /// Chunks named by nobody (left over when a truncation failed).
    pub free_chunks: Vec<u32>,
}

impl Parsed {
    /// The checkpoint the header records.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { segment: self.header.checkpoint_segment, offset: self.header.checkpoint_offset }
    }

    /// Whether the header says the file was shut down cleanly.
    pub fn clean(&self) -> bool {
        self.header.flags & FLAG_CLEAN != 0
    }
}

fn corrupt(reason: String) -> IndexError {
    IndexError::Corrupt { reason }
}

/// Checks `bytes` as a complete index file and decodes its geometry.
pub fn parse(bytes: &[u8]) -> Result<Parsed, IndexError> {
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!("file is {} bytes, shorter than its {HEADER_BYTES}-byte header", bytes.len())));
    }
    let h = &bytes[..HEADER_BYTES];
    let crc_found = get_u32(h, H_CRC);
    let crc_computed = crc32fast::hash(&h[..H_CRC]);
    if crc_found != crc_computed {
        return Err(corrupt(format!("header crc {crc_found:#010x}, computed {crc_computed:#010x}")));
    }
    if h[H_MAGIC..H_MAGIC + MAGIC.len()] != MAGIC {
        return Err(corrupt(format!("magic {:02x?}, expected {MAGIC:02x?}", &h[H_MAGIC..H_MAGIC + MAGIC.len()])));
    }
    let version = get_u32(h, H_FORMAT_VERSION);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("format version {version}, this build reads {FORMAT_VERSION}")));
    }
    for (name, off, expected) in [
        ("page bytes", H_PAGE_BYTES, PAGE_BYTES),
        ("slot bytes", H_SLOT_BYTES, SLOT_BYTES),
        ("slots per page", H_SLOTS_PER_PAGE, SLOTS_PER_PAGE),
        ("pages per chunk", H_PAGES_PER_CHUNK, PAGES_PER_CHUNK),
        ("chunks per partition", H_PART_CHUNKS_MAX, PART_CHUNKS_MAX),
    ] {
        let found = get_u32(h, off);
        if found as usize != expected {
            return Err(corrupt(format!("geometry: {name} is {found}, expected {expected}")));
        }
    }
    let seed = get_u64(h, H_FINGERPRINT_SEED);
    if seed != FINGERPRINT_SEED {
        return Err(corrupt(format!("fingerprint seed {seed:#018x}, expected {FINGERPRINT_SEED:#018x}")));
    }
    let flags = get_u32(h, H_FLAGS);
    if flags & !FLAGS_KNOWN != 0 {
        return Err(corrupt(format!("unknown flags {flags:#x}")));
    }
    let checkpoint_segment = get_u32(h, H_CHECKPOINT_SEGMENT);
    let checkpoint_offset = get_u64(h, H_CHECKPOINT_OFFSET);
    if checkpoint_segment > SEGMENT_ID_MAX || checkpoint_offset > SEGMENT_LEN_MAX {
        return Err(corrupt(format!(
            "checkpoint ({checkpoint_segment}, {checkpoint_offset}) is outside the log's limits"
        )));
    }

    let chunk_count = get_u32(h, H_CHUNK_COUNT);
    if chunk_count as usize > CHUNKS_MAX {
        return Err(corrupt(format!("{chunk_count} chunks, more than the {CHUNKS_MAX} a file may hold")));
    }
    let expected_len = HEADER_BYTES as u64 + u64::from(chunk_count) * CHUNK_BYTES as u64;
    if bytes.len() as u64 != expected_len {
        return Err(corrupt(format!(
            "file is {} bytes, header says {chunk_count} chunks ({expected_len} bytes)",
            bytes.len()
        )));
    }

    let partition_count = get_u32(h, H_PARTITION_COUNT) as usize;
    if partition_count == 0 || partition_count > PARTITIONS_MAX {
        return Err(corrupt(format!("{partition_count} partitions, expected 1..={PARTITIONS_MAX}")));
    }
    let meta_count = get_u32(h, H_META_CHUNK_COUNT) as usize;
    if meta_count != meta_chunks_for(partition_count) {
        return Err(corrupt(format!(
            "{meta_count} meta chunks for {partition_count} partitions, expected {}",
            meta_chunks_for(partition_count)
        )));
    }
    // Meta chunks exist in the file (checked next), so this allocation is
    // bounded by the input's length.
    let mut owned = vec![false; chunk_count as usize];
    let mut meta_chunks = Vec::with_capacity(meta_count);
    for i in 0..META_CHUNKS_MAX {
        let c = get_u32(h, H_META_CHUNKS + i * 4);
        if i >= meta_count {
            if c != 0 {
                return Err(corrupt(format!("unused meta chunk entry {i} is {c}, expected 0")));
            }
            continue;
        }
        claim(&mut owned, c, "meta chunk list")?;
        meta_chunks.push(c);
    }
    let mut meta_hasher = crc32fast::Hasher::new();
    let mut parts = Vec::with_capacity(partition_count);
    let mut entry_sum = 0u64;
    let mut global_depth = 0u8;
    for i in 0..partition_count {
        let raw = match desc_place(i) {
            DescPlace::Inline(off) => &h[off..off + DESC_BYTES],
            DescPlace::Meta(m, off) => {
                let start = chunk_offset(meta_chunks[m]) + off;
                let raw = &bytes[start..start + DESC_BYTES];
                meta_hasher.update(raw);
                raw
            }
        };
        let (d, reserved) = Descriptor::decode(raw);
        check_descriptor(i, &d, reserved, &mut owned)?;
        entry_sum += u64::from(d.entry_count);
        global_depth = global_depth.max(d.depth);
        parts.push(d);
    }
    let meta_crc = get_u32(h, H_META_CRC);
    let meta_computed = meta_hasher.finalize();
    if meta_count > 0 && meta_crc != meta_computed {
        return Err(corrupt(format!("meta chunks crc {meta_crc:#010x}, computed {meta_computed:#010x}")));
    }
    if meta_count == 0 && meta_crc != 0 {
        return Err(corrupt(format!("meta crc {meta_crc:#010x} without meta chunks")));
    }
    let entry_count = get_u64(h, H_ENTRY_COUNT);
    if entry_sum != entry_count {
        return Err(corrupt(format!("header counts {entry_count} entries, the partitions {entry_sum}")));
    }
    check_tiling(&parts)?;
    let free_chunks = (0..chunk_count).filter(|&c| !owned[c as usize]).collect();
    Ok(Parsed {
        header: HeaderFields {
            flags,
            checkpoint_segment,
            checkpoint_offset,
            entry_count,
            chunk_count,
            partition_count: partition_count as u32,
            meta_crc,
            meta_chunks,
        },
        parts,
        global_depth,
        free_chunks,
    })
}

/// Marks chunk `c` as used by `what`, refusing chunks outside the file and
/// chunks used twice.
fn claim(owned: &mut [bool], c: u32, what: &str) -> Result<(), IndexError> {
    match owned.get_mut(c as usize) {
        None => Err(corrupt(format!("{what} names chunk {c}, the file has {}", owned.len()))),
        Some(true) => Err(corrupt(format!("{what} names chunk {c}, which is already in use"))),
        Some(slot) => {
            *slot = true;
            Ok(())
        }
    }
}

fn check_descriptor(i: usize, d: &Descriptor, reserved: u16, owned: &mut [bool]) -> Result<(), IndexError> {
    if reserved != 0 {
        return Err(corrupt(format!("partition {i}: reserved field is {reserved}")));
    }
    if d.depth > DIR_DEPTH_MAX {
        return Err(corrupt(format!("partition {i}: depth {} exceeds {DIR_DEPTH_MAX}", d.depth)));
    }
    let low_bits = if d.depth == 0 { d.prefix } else { d.prefix << d.depth };
    if low_bits != 0 {
        return Err(corrupt(format!("partition {i}: prefix {:#018x} has bits below depth {}", d.prefix, d.depth)));
    }
    let n = usize::from(d.chunk_count);
    if n > PART_CHUNKS_MAX {
        return Err(corrupt(format!("partition {i}: {n} chunks, at most {PART_CHUNKS_MAX}")));
    }
    for (j, &c) in d.chunks.iter().enumerate() {
        if j < n {
            claim(owned, c, &format!("partition {i}"))?;
        } else if c != 0 {
            return Err(corrupt(format!("partition {i}: unused chunk entry {j} is {c}, expected 0")));
        }
    }
    let slots = d.slot_count();
    // A table needs one empty slot so that probes end; an empty table holds nothing.
    if (slots == 0 && d.entry_count != 0) || (slots != 0 && d.entry_count >= slots) {
        return Err(corrupt(format!("partition {i}: {} entries in {slots} slots", d.entry_count)));
    }
    Ok(())
}

/// The partitions' prefixes must cover every fingerprint exactly once.
fn check_tiling(parts: &[Descriptor]) -> Result<(), IndexError> {
    let mut ranges: Vec<(u64, u8)> = parts.iter().map(|d| (d.prefix, d.depth)).collect();
    ranges.sort_unstable();
    let mut expected: u128 = 0;
    for (prefix, depth) in ranges {
        if u128::from(prefix) != expected {
            let what = if u128::from(prefix) < expected { "overlaps" } else { "leaves a gap before" };
            return Err(corrupt(format!("partition prefix {prefix:#018x}/{depth} {what} the one before")));
        }
        expected += 1u128 << (64 - u32::from(depth));
    }
    if expected != 1u128 << 64 {
        return Err(corrupt(format!("partitions end at {expected:#x}, not at 2^64")));
    }
    Ok(())
}
