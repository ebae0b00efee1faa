//! The byte layout of a log record and of a segment header, with an encoder
//! and a checked decoder for each. `docs/engine-format.md` draws both layouts
//! byte by byte; the `layout_*` unit tests below pin every offset and size to
//! that document, so neither can change without the other.
//!
//! Invariants this module keeps:
//! - every on-disk integer is fixed-width little-endian;
//! - a record starts at an offset that is a multiple of [`RECORD_ALIGN`] and
//!   occupies [`encoded_len`] bytes, the tail after the value being zeros;
//! - a record's header is never all zeros (the magic is not zero), so 32 zero
//!   bytes where a header should be mean "nothing was written here": segments
//!   are pre-filled with zeros and this is how a reader finds the end of the
//!   log ([`DecodeError::Empty`]);
//! - [`decode`] accepts only what [`encode_into`] can produce: every length is
//!   within [`crate::limits`], reserved fields and padding are zero, and the
//!   crc matches. It never panics and never allocates, whatever the input, and
//!   reads the record's bytes once (for the crc), because it runs on every
//!   read and over the whole log during recovery.

use std::mem::size_of;

use crate::limits::{KEY_LEN_MAX, RECORD_VALUE_LEN_MAX, SEGMENT_ID_MAX, SEGMENT_LEN_MAX};

/// Records start at, and are padded to, multiples of this many bytes, so that
/// the recovery scan can step over damage 8 bytes at a time and the header's
/// `u64` fields are naturally aligned in an aligned buffer.
pub const RECORD_ALIGN: usize = 8;

/// The record magic, `"CO"` on disk (0x43 then 0x4F).
pub const RECORD_MAGIC: u16 = 0x4F43;
/// The record format this code writes and the only one it reads.
pub const RECORD_FORMAT_VERSION: u8 = 1;

// Record header layout. Each offset is derived from the previous field so the
// order and widths live in one place; `layout_record_offsets_are_pinned`
// checks them against the numbers in docs/engine-format.md.
const CRC_OFFSET: usize = 0;
const MAGIC_OFFSET: usize = CRC_OFFSET + size_of::<u32>();
const FORMAT_VERSION_OFFSET: usize = MAGIC_OFFSET + size_of::<u16>();
const KIND_OFFSET: usize = FORMAT_VERSION_OFFSET + size_of::<u8>();
const KEY_LEN_OFFSET: usize = KIND_OFFSET + size_of::<u8>();
const FLAGS_OFFSET: usize = KEY_LEN_OFFSET + size_of::<u16>();
const VALUE_LEN_OFFSET: usize = FLAGS_OFFSET + size_of::<u16>();
const VERSION_OFFSET: usize = VALUE_LEN_OFFSET + size_of::<u32>();
const EXPIRY_OFFSET: usize = VERSION_OFFSET + size_of::<u64>();
const KEY_OFFSET: usize = EXPIRY_OFFSET + size_of::<u64>();

/// The fixed part of every record; the key starts right after it.
pub const RECORD_HEADER_LEN: usize = KEY_OFFSET;
/// The crc covers everything after itself up to the end of the value: the
/// rest of the header, the key and the value (not the padding, which is
/// checked to be zero instead).
const CRC_COVER_START: usize = CRC_OFFSET + size_of::<u32>();

/// The largest record the format allows: the longest key, the largest value.
pub const RECORD_ENCODED_LEN_MAX: usize = encoded_len(KEY_LEN_MAX, RECORD_VALUE_LEN_MAX);

// The header must itself keep the record alignment, or a key-less record
// would break the rule that records start at multiples of 8.
const _: () = assert!(RECORD_HEADER_LEN == 32);
const _: () = assert!(RECORD_HEADER_LEN.is_multiple_of(RECORD_ALIGN));
// key_len and value_len are stored as u16 and u32: the limits must fit.
const _: () = assert!(KEY_LEN_MAX <= u16::MAX as usize);
const _: () = assert!(RECORD_VALUE_LEN_MAX <= u32::MAX as usize);

/// What a record says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// The key's whole value, in this record.
    Put = 1,
    /// The key is deleted (a tombstone); the value is always empty.
    Delete = 2,
    /// One piece of a value written through the chunked path.
    Chunk = 3,
    /// Commits a chunked value whose pieces are earlier `Chunk` records.
    ChunkedPut = 4,
}

impl RecordKind {
    /// The byte stored at the kind offset.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl From<RecordKind> for u8 {
    fn from(kind: RecordKind) -> u8 {
        kind.as_u8()
    }
}

impl TryFrom<u8> for RecordKind {
    type Error = DecodeError;

    fn try_from(byte: u8) -> Result<Self, Self::Error> {
        match byte {
            1 => Ok(RecordKind::Put),
            2 => Ok(RecordKind::Delete),
            3 => Ok(RecordKind::Chunk),
            4 => Ok(RecordKind::ChunkedPut),
            other => Err(DecodeError::BadKind(other)),
        }
    }
}

/// The decoded fixed part of a record. Lengths are the on-disk widths, so a
/// header can be kept (e.g. in recovery's bookkeeping) without losing range
/// information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the record does.
    pub kind: RecordKind,
    /// Key length, `1..=KEY_LEN_MAX`.
    pub key_len: u16,
    /// Value length, `<= RECORD_VALUE_LEN_MAX`; zero for a delete.
    pub value_len: u32,
    /// The writer's version, used for last-writer-wins.
    pub version: u64,
    /// When the value expires, in unix milliseconds; 0 means never.
    pub expiry_ms: u64,
    /// The crc stored in the record. [`decode_header`] does not check it;
    /// [`decode`] does.
    pub crc: u32,
}

impl RecordHeader {
    /// The bytes the whole record occupies, padding included: where the next
    /// record starts.
    pub const fn encoded_len(&self) -> usize {
        encoded_len(self.key_len as usize, self.value_len as usize)
    }

    /// Where the value ends: the end of the bytes the crc covers.
    const fn unpadded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key_len as usize + self.value_len as usize
    }
}

/// A record decoded and checked by [`decode`], borrowing its key and value
/// from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The checked header.
    pub header: RecordHeader,
    /// The key, `header.key_len` bytes.
    pub key: &'a [u8],
    /// The value, `header.value_len` bytes.
    pub value: &'a [u8],
    /// The bytes the record occupies, padding included, so a scan knows where
    /// the next record starts.
    pub encoded_len: usize,
}

/// Why bytes are not a valid record. Each variant carries what was found, so
/// a corruption report can say more than "bad record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The 32 header bytes are all zero: unwritten space, the normal end of a
    /// log, not corruption.
    #[error("no record: the header is all zeros (end of written data)")]
    Empty,
    /// The buffer ends before the header, or before the record it describes.
    #[error("record truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the header or record needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The magic is not [`RECORD_MAGIC`].
    #[error("bad record magic {0:#06x}")]
    BadMagic(u16),
    /// A format version this code does not read.
    #[error("unsupported record format version {0}")]
    UnsupportedVersion(u8),
    /// An unknown record kind byte.
    #[error("bad record kind {0}")]
    BadKind(u8),
    /// Reserved flag bits are set.
    #[error("bad record flags {0:#06x} (reserved, must be 0)")]
    BadFlags(u16),
    /// The key length is 0 or over [`KEY_LEN_MAX`].
    #[error("bad record key length {0}")]
    BadKeyLen(u16),
    /// The value length is over [`RECORD_VALUE_LEN_MAX`], or not 0 in a delete.
    #[error("bad record value length {0}")]
    BadValueLen(u32),
    /// A padding byte after the value is not zero.
    #[error("non-zero record padding byte {found:#04x} at record offset {offset}")]
    BadPadding {
        /// The offset of the byte from the start of the record.
        offset: usize,
        /// The byte found there.
        found: u8,
    },
    /// The crc stored in the record is not the crc of its bytes.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The crc read from the record.
        stored: u32,
        /// The crc of the bytes it covers.
        computed: u32,
    },
}

/// The bytes a record with these lengths occupies: header, key, value, and
/// zero padding up to a multiple of [`RECORD_ALIGN`]. Meaningful for lengths
/// within the limits; saturates instead of overflowing beyond them.
pub const fn encoded_len(key_len: usize, value_len: usize) -> usize {
    let unpadded = RECORD_HEADER_LEN.saturating_add(key_len).saturating_add(value_len);
    unpadded.saturating_add(RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Whether a record of this kind may carry a key and value of these lengths.
/// Writers call this (or enforce stricter limits) before [`encode_into`];
/// [`decode_header`] rejects anything it refuses.
pub const fn lengths_valid(kind: RecordKind, key_len: usize, value_len: usize) -> bool {
    let key_ok = key_len >= 1 && key_len <= KEY_LEN_MAX;
    let value_ok = match kind {
        RecordKind::Delete => value_len == 0,
        _ => value_len <= RECORD_VALUE_LEN_MAX,
    };
    key_ok && value_ok
}

/// Writes one record at the start of `buf` (header, key, value, zero padding)
/// and returns the bytes written, [`encoded_len`]`(key.len(), value.len())`.
///
/// Callers validate lengths first (see [`lengths_valid`]): out-of-limit
/// lengths are a bug in the caller, caught by a debug assertion. Panics if
/// `buf` is shorter than the record.
pub fn encode_into(buf: &mut [u8], kind: RecordKind, key: &[u8], value: &[u8], version: u64, expiry_ms: u64) -> usize {
    debug_assert!(
        lengths_valid(kind, key.len(), value.len()),
        "record lengths out of limits: kind {kind:?}, key {} bytes, value {} bytes",
        key.len(),
        value.len()
    );
    let total = encoded_len(key.len(), value.len());
    let value_start = KEY_OFFSET + key.len();
    let value_end = value_start + value.len();
    let out = &mut buf[..total];

    // The casts cannot truncate: the limits fit the widths (const-asserted
    // above) and the debug assertion checks the lengths against them.
    out[MAGIC_OFFSET..FORMAT_VERSION_OFFSET].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[FORMAT_VERSION_OFFSET] = RECORD_FORMAT_VERSION;
    out[KIND_OFFSET] = kind.as_u8();
    out[KEY_LEN_OFFSET..FLAGS_OFFSET].copy_from_slice(&(key.len() as u16).to_le_bytes());
    out[FLAGS_OFFSET..VALUE_LEN_OFFSET].copy_from_slice(&0u16.to_le_bytes());
    out[VALUE_LEN_OFFSET..VERSION_OFFSET].copy_from_slice(&(value.len() as u32).to_le_bytes());
    out[VERSION_OFFSET..EXPIRY_OFFSET].copy_from_slice(&version.to_le_bytes());
    out[EXPIRY_OFFSET..KEY_OFFSET].copy_from_slice(&expiry_ms.to_le_bytes());
    out[KEY_OFFSET..value_start].copy_from_slice(key);
    out[value_start..value_end].copy_from_slice(value);
    // The buffer may be reused: padding must be written, not assumed zero.
    out[value_end..].fill(0);
    let crc = crc32fast::hash(&out[CRC_COVER_START..value_end]);
    out[CRC_OFFSET..MAGIC_OFFSET].copy_from_slice(&crc.to_le_bytes());

    // Check the invariant twice: what was just written must read back as
    // exactly what was asked for (debug builds only: it costs a crc pass).
    debug_assert!(
        matches!(
            decode(out),
            Ok(r) if r.header.kind == kind && r.key == key && r.value == value
                && r.header.version == version && r.header.expiry_ms == expiry_ms
                && r.encoded_len == total
        ),
        "encoded record does not decode to itself"
    );
    total
}

fn le_u16(h: &[u8; RECORD_HEADER_LEN], at: usize) -> u16 {
    u16::from_le_bytes([h[at], h[at + 1]])
}

fn le_u32(h: &[u8; RECORD_HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

fn le_u64(h: &[u8; RECORD_HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; size_of::<u64>()];
    b.copy_from_slice(&h[at..at + size_of::<u64>()]);
    u64::from_le_bytes(b)
}

/// Reads and checks the fixed part of the record at the start of `buf`:
/// magic, version, kind, flags and lengths, but not the crc. Needs only the
/// [`RECORD_HEADER_LEN`] header bytes; used to learn how long a record is
/// before reading all of it.
pub fn decode_header(buf: &[u8]) -> Result<RecordHeader, DecodeError> {
    let Some(h) = buf.first_chunk::<RECORD_HEADER_LEN>() else {
        return Err(DecodeError::Truncated { needed: RECORD_HEADER_LEN, available: buf.len() });
    };
    let magic = le_u16(h, MAGIC_OFFSET);
    if magic != RECORD_MAGIC {
        // Only looked at when the magic is wrong, so valid records never pay
        // for the zero scan.
        if h.iter().all(|&b| b == 0) {
            return Err(DecodeError::Empty);
        }
        return Err(DecodeError::BadMagic(magic));
    }
    let format_version = h[FORMAT_VERSION_OFFSET];
    if format_version != RECORD_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(format_version));
    }
    let kind = RecordKind::try_from(h[KIND_OFFSET])?;
    let flags = le_u16(h, FLAGS_OFFSET);
    if flags != 0 {
        return Err(DecodeError::BadFlags(flags));
    }
    let key_len = le_u16(h, KEY_LEN_OFFSET);
    if key_len == 0 || usize::from(key_len) > KEY_LEN_MAX {
        return Err(DecodeError::BadKeyLen(key_len));
    }
    let value_len = le_u32(h, VALUE_LEN_OFFSET);
    // Compared as u64 so the check is the same on 32-bit hosts.
    let value_ok = match kind {
        RecordKind::Delete => value_len == 0,
        _ => u64::from(value_len) <= RECORD_VALUE_LEN_MAX as u64,
    };
    if !value_ok {
        return Err(DecodeError::BadValueLen(value_len));
    }
    Ok(RecordHeader {
        kind,
        key_len,
        value_len,
        version: le_u64(h, VERSION_OFFSET),
        expiry_ms: le_u64(h, EXPIRY_OFFSET),
        crc: le_u32(h, CRC_OFFSET),
    })
}

/// Decodes and fully checks the record at the start of `buf`: the header
/// checks of [`decode_header`], that the whole record (padding included) is
/// in `buf`, that the padding is zero, and the crc. Bytes after the record
/// are ignored. No allocation; the key and value borrow from `buf`.
pub fn decode(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    let header = decode_header(buf)?;
    let total = header.encoded_len();
    let Some(rec) = buf.get(..total) else {
        return Err(DecodeError::Truncated { needed: total, available: buf.len() });
    };
    let value_start = KEY_OFFSET + usize::from(header.key_len);
    let value_end = header.unpadded_len();
    // Padding is outside the crc, so it is checked on its own: otherwise a
    // flipped padding bit would go unnoticed (at most 7 bytes).
    if let Some(pos) = rec[value_end..].iter().position(|&b| b != 0) {
        let offset = value_end + pos;
        return Err(DecodeError::BadPadding { offset, found: rec[offset] });
    }
    let computed = crc32fast::hash(&rec[CRC_COVER_START..value_end]);
    if computed != header.crc {
        return Err(DecodeError::ChecksumMismatch { stored: header.crc, computed });
    }
    Ok(Record { header, key: &rec[KEY_OFFSET..value_start], value: &rec[value_start..value_end], encoded_len: total })
}

/// The first bytes of every segment file; the first record starts right
/// after it, at [`FIRST_RECORD_OFFSET`].
pub const SEGMENT_HEADER_LEN: usize = 4096;
/// Where a segment's first record starts.
pub const FIRST_RECORD_OFFSET: u64 = SEGMENT_HEADER_LEN as u64;
/// The segment file magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"OPTICSEG";
/// The segment header format this code writes and the only one it reads.
pub const SEGMENT_FORMAT_VERSION: u8 = 1;

// Segment header layout, derived like the record's and pinned by
// `layout_segment_offsets_are_pinned`.
const SEG_CRC_OFFSET: usize = 0;
const SEG_MAGIC_OFFSET: usize = SEG_CRC_OFFSET + size_of::<u32>();
const SEG_FORMAT_VERSION_OFFSET: usize = SEG_MAGIC_OFFSET + SEGMENT_MAGIC.len();
const SEG_PAD_OFFSET: usize = SEG_FORMAT_VERSION_OFFSET + size_of::<u8>();
/// Three zero bytes so that the `u32` after them is 4-aligned.
const SEG_PAD_LEN: usize = 3;
const SEG_ID_OFFSET: usize = SEG_PAD_OFFSET + SEG_PAD_LEN;
const SEG_RESERVED_OFFSET: usize = SEG_ID_OFFSET + size_of::<u32>();
const SEG_CREATED_OFFSET: usize = SEG_RESERVED_OFFSET + size_of::<u32>();
const SEG_CAPACITY_OFFSET: usize = SEG_CREATED_OFFSET + size_of::<u64>();
const SEG_FIELDS_END: usize = SEG_CAPACITY_OFFSET + size_of::<u64>();
/// The crc covers [4, 64): the fields and some zero room to grow them
/// without moving the crc's range.
const SEG_CRC_COVER_START: usize = SEG_CRC_OFFSET + size_of::<u32>();
const SEG_CRC_COVER_END: usize = 64;

const _: () = assert!(SEG_FIELDS_END <= SEG_CRC_COVER_END);
const _: () = assert!(SEG_CRC_COVER_END <= SEGMENT_HEADER_LEN);
const _: () = assert!(SEGMENT_HEADER_LEN.is_multiple_of(RECORD_ALIGN));

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number, `<= SEGMENT_ID_MAX` (24 bits in the index).
    pub segment_id: u32,
    /// When the segment was created, unix milliseconds: lets tools order
    /// segments and tell an old file from a new one with the same id.
    pub created_unix_ms: u64,
    /// The file's size, header included; records never cross it. A multiple
    /// of [`RECORD_ALIGN`], in `SEGMENT_HEADER_LEN..=SEGMENT_LEN_MAX`.
    pub capacity_bytes: u64,
}

/// Why bytes are not a valid segment header. Carries what was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentHeaderError {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    #[error("segment header truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes a header needs.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// The header is all zeros: the file was created but its header never
    /// written (or never made durable).
    #[error("segment header is all zeros (never written)")]
    Empty,
    /// The magic is not [`SEGMENT_MAGIC`].
    #[error("bad segment magic {0:02x?}")]
    BadMagic([u8; 8]),
    /// A format version this code does not read.
    #[error("unsupported segment format version {0}")]
    UnsupportedVersion(u8),
    /// The crc stored in the header is not the crc of its bytes.
    #[error("segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The crc read from the header.
        stored: u32,
        /// The crc of the bytes it covers.
        computed: u32,
    },
    /// A reserved byte is not zero.
    #[error("non-zero reserved segment header byte {found:#04x} at offset {offset}")]
    NonZeroReserved {
        /// The byte's offset in the header.
        offset: usize,
        /// The byte found there.
        found: u8,
    },
    /// The segment id is over [`SEGMENT_ID_MAX`].
    #[error("bad segment id {0}")]
    BadSegmentId(u32),
    /// The capacity is below the header, over [`SEGMENT_LEN_MAX`], or not a
    /// multiple of [`RECORD_ALIGN`].
    #[error("bad segment capacity {0} bytes")]
    BadCapacity(u64),
}

impl SegmentHeader {
    /// Whether `segment_id` and `capacity_bytes` are within the format's
    /// limits; [`SegmentHeader::decode`] rejects headers for which this is
    /// false.
    pub const fn is_valid(&self) -> bool {
        self.segment_id <= SEGMENT_ID_MAX && capacity_valid(self.capacity_bytes)
    }

    /// Writes the header into the first [`SEGMENT_HEADER_LEN`] bytes of
    /// `buf`, zeroing everything it does not set. Panics if `buf` is shorter.
    /// Field limits are the caller's to enforce (debug-asserted).
    pub fn encode_into(&self, buf: &mut [u8]) {
        debug_assert!(self.is_valid(), "segment header out of limits: {self:?}");
        let out = &mut buf[..SEGMENT_HEADER_LEN];
        out.fill(0);
        out[SEG_MAGIC_OFFSET..SEG_FORMAT_VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
        out[SEG_FORMAT_VERSION_OFFSET] = SEGMENT_FORMAT_VERSION;
        out[SEG_ID_OFFSET..SEG_RESERVED_OFFSET].copy_from_slice(&self.segment_id.to_le_bytes());
        out[SEG_CREATED_OFFSET..SEG_CAPACITY_OFFSET].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        out[SEG_CAPACITY_OFFSET..SEG_FIELDS_END].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        let crc = crc32fast::hash(&out[SEG_CRC_COVER_START..SEG_CRC_COVER_END]);
        out[SEG_CRC_OFFSET..SEG_MAGIC_OFFSET].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(Self::decode(out), Ok(*self), "segment header round trip");
    }

    /// The header as a block of [`SEGMENT_HEADER_LEN`] bytes.
    pub fn encode(&self) -> Box<[u8; SEGMENT_HEADER_LEN]> {
        let mut block = Box::new([0u8; SEGMENT_HEADER_LEN]);
        self.encode_into(&mut block[..]);
        block
    }

    /// Decodes and checks the header at the start of `buf`: magic, version,
    /// crc, that every reserved byte in the 4 KiB is zero, and the field
    /// limits. Never panics.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let Some(h) = buf.first_chunk::<SEGMENT_HEADER_LEN>() else {
            return Err(SegmentHeaderError::Truncated { needed: SEGMENT_HEADER_LEN, available: buf.len() });
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&h[SEG_MAGIC_OFFSET..SEG_FORMAT_VERSION_OFFSET]);
        if magic != SEGMENT_MAGIC {
            if h.iter().all(|&b| b == 0) {
                return Err(SegmentHeaderError::Empty);
            }
            return Err(SegmentHeaderError::BadMagic(magic));
        }
        let format_version = h[SEG_FORMAT_VERSION_OFFSET];
        if format_version != SEGMENT_FORMAT_VERSION {
            return Err(SegmentHeaderError::UnsupportedVersion(format_version));
        }
        let stored = seg_u32(h, SEG_CRC_OFFSET);
        let computed = crc32fast::hash(&h[SEG_CRC_COVER_START..SEG_CRC_COVER_END]);
        if stored != computed {
            return Err(SegmentHeaderError::ChecksumMismatch { stored, computed });
        }
        let reserved = [
            SEG_PAD_OFFSET..SEG_ID_OFFSET,
            SEG_RESERVED_OFFSET..SEG_CREATED_OFFSET,
            SEG_FIELDS_END..SEGMENT_HEADER_LEN,
        ];
        for range in reserved {
            let start = range.start;
            if let Some(pos) = h[range].iter().position(|&b| b != 0) {
                let offset = start + pos;
                return Err(SegmentHeaderError::NonZeroReserved { offset, found: h[offset] });
            }
        }
        let header = SegmentHeader {
            segment_id: seg_u32(h, SEG_ID_OFFSET),
            created_unix_ms: seg_u64(h, SEG_CREATED_OFFSET),
            capacity_bytes: seg_u64(h, SEG_CAPACITY_OFFSET),
        };
        if header.segment_id > SEGMENT_ID_MAX {
            return Err(SegmentHeaderError::BadSegmentId(header.segment_id));
        }
        if !capacity_valid(header.capacity_bytes) {
            return Err(SegmentHeaderError::BadCapacity(header.capacity_bytes));
        }
        Ok(header)
    }
}

const fn capacity_valid(capacity_bytes: u64) -> bool {
    capacity_bytes >= SEGMENT_HEADER_LEN as u64
        && capacity_bytes <= SEGMENT_LEN_MAX
        && capacity_bytes.is_multiple_of(RECORD_ALIGN as u64)
}

fn seg_u32(h: &[u8; SEGMENT_HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

fn seg_u64(h: &[u8; SEGMENT_HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; size_of::<u64>()];
    b.copy_from_slice(&h[at..at + size_of::<u64>()]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_KINDS: [RecordKind; 4] = [RecordKind::Put, RecordKind::Delete, RecordKind::Chunk, RecordKind::ChunkedPut];

    fn encode_vec(kind: RecordKind, key: &[u8], value: &[u8], version: u64, expiry: u64) -> Vec<u8> {
        let mut buf = vec![0xAA; encoded_len(key.len(), value.len())];
        let n = encode_into(&mut buf, kind, key, value, version, expiry);
        assert_eq!(n, buf.len());
        buf
    }

    /// Records whose key + value lengths give every padding amount 0..=7.
    fn sample_records() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for pad_case in 0..RECORD_ALIGN {
            let value: Vec<u8> = (0..pad_case as u8 + 3).map(|i| i.wrapping_mul(37)).collect();
            out.push(encode_vec(RecordKind::Put, b"k1", &value, 7, 0));
        }
        out.push(encode_vec(RecordKind::Delete, b"tombstoned", b"", u64::MAX, 1));
        out.push(encode_vec(RecordKind::Chunk, b"c", &[0u8; 16], 1, 1_700_000_000_000));
        out.push(encode_vec(RecordKind::ChunkedPut, b"big", b"manifest", 2, 0));
        out
    }

    /// Overwrites header bytes without fixing the crc: enough for
    /// `decode_header`, which does not check it.
    fn patch(buf: &mut [u8], at: usize, bytes: &[u8]) {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Overwrites header bytes and recomputes the crc, so that only the field
    /// check can reject the record.
    fn patch_and_reseal(buf: &mut [u8], at: usize, bytes: &[u8], covered_end: usize) {
        patch(buf, at, bytes);
        let crc = crc32fast::hash(&buf[CRC_COVER_START..covered_end]);
        patch(buf, CRC_OFFSET, &crc.to_le_bytes());
    }

    #[test]
    fn layout_record_offsets_are_pinned() {
        // These numbers are the table in docs/engine-format.md.
        assert_eq!((CRC_OFFSET, size_of::<u32>()), (0, 4));
        assert_eq!(MAGIC_OFFSET, 4);
        assert_eq!(FORMAT_VERSION_OFFSET, 6);
        assert_eq!(KIND_OFFSET, 7);
        assert_eq!(KEY_LEN_OFFSET, 8);
        assert_eq!(FLAGS_OFFSET, 10);
        assert_eq!(VALUE_LEN_OFFSET, 12);
        assert_eq!(VERSION_OFFSET, 16);
        assert_eq!(EXPIRY_OFFSET, 24);
        assert_eq!(KEY_OFFSET, 32);
        assert_eq!(RECORD_HEADER_LEN, 32);
        assert_eq!(RECORD_ALIGN, 8);
        assert_eq!(CRC_COVER_START, 4);
        assert_eq!(RECORD_MAGIC, 0x4F43);
        assert_eq!(RECORD_FORMAT_VERSION, 1);
        assert_eq!(ALL_KINDS.map(RecordKind::as_u8), [1, 2, 3, 4], "kind bytes: Put, Delete, Chunk, ChunkedPut");
        assert_eq!(encoded_len(1, 0), 40);
        assert_eq!(encoded_len(8, 0), 40);
        assert_eq!(encoded_len(8, 1), 48);
        assert_eq!(RECORD_ENCODED_LEN_MAX, (32 + KEY_LEN_MAX + RECORD_VALUE_LEN_MAX).next_multiple_of(8));
    }

    #[test]
    fn layout_record_bytes_are_little_endian_at_documented_offsets() {
        let buf = encode_vec(RecordKind::Chunk, b"key", b"value!", 0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        assert_eq!(buf.len(), 48, "32 + 3 + 6 = 41, padded to 48");
        // The worked example in docs/engine-format.md, byte for byte; the
        // literal crc also pins the crc variant (CRC-32/ISO-HDLC).
        #[rustfmt::skip]
        let expected: [u8; 48] = [
            0xea, 0xea, 0x5a, 0xa9, 0x43, 0x4f, 0x01, 0x03, 0x03, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00,
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
            0x6b, 0x65, 0x79, 0x76, 0x61, 0x6c, 0x75, 0x65, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(buf, expected);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926, "the documented check value");
        let crc = crc32fast::hash(&buf[4..41]);
        assert_eq!(&buf[0..4], &crc.to_le_bytes());
        assert_eq!(&buf[4..6], &[0x43, 0x4F]);
        assert_eq!(buf[6], 1);
        assert_eq!(buf[7], 3);
        assert_eq!(&buf[8..10], &[3, 0]);
        assert_eq!(&buf[10..12], &[0, 0]);
        assert_eq!(&buf[12..16], &[6, 0, 0, 0]);
        assert_eq!(&buf[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&buf[24..32], &[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]);
        assert_eq!(&buf[32..35], b"key");
        assert_eq!(&buf[35..41], b"value!");
        assert_eq!(&buf[41..48], &[0; 7]);
    }

    #[test]
    fn layout_segment_offsets_are_pinned() {
        assert_eq!(SEG_CRC_OFFSET, 0);
        assert_eq!(SEG_MAGIC_OFFSET, 4);
        assert_eq!(SEG_FORMAT_VERSION_OFFSET, 12);
        assert_eq!((SEG_PAD_OFFSET, SEG_PAD_LEN), (13, 3));
        assert_eq!(SEG_ID_OFFSET, 16);
        assert_eq!(SEG_RESERVED_OFFSET, 20);
        assert_eq!(SEG_CREATED_OFFSET, 24);
        assert_eq!(SEG_CAPACITY_OFFSET, 32);
        assert_eq!(SEG_FIELDS_END, 40);
        assert_eq!((SEG_CRC_COVER_START, SEG_CRC_COVER_END), (4, 64));
        assert_eq!(SEGMENT_HEADER_LEN, 4096);
        assert_eq!(FIRST_RECORD_OFFSET, 4096);
        assert_eq!(&SEGMENT_MAGIC, b"OPTICSEG");
        assert_eq!(SEGMENT_FORMAT_VERSION, 1);

        // The worked example in docs/engine-format.md, byte for byte.
        let h = SegmentHeader { segment_id: 1, created_unix_ms: 1_767_225_600_000, capacity_bytes: 64 << 20 };
        let b = h.encode();
        #[rustfmt::skip]
        let expected: [u8; 40] = [
            0x8f, 0xd6, 0x83, 0x40, 0x4f, 0x50, 0x54, 0x49, 0x43, 0x53, 0x45, 0x47, 0x01, 0x00, 0x00, 0x00,
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa8, 0xda, 0x76, 0x9b, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(&b[..40], &expected[..]);
        assert_eq!(&b[0..4], &crc32fast::hash(&b[4..64]).to_le_bytes());
        assert!(b[40..].iter().all(|&x| x == 0));
    }

    #[test]
    fn round_trip_each_kind() {
        for kind in ALL_KINDS {
            let value: &[u8] = if kind == RecordKind::Delete { b"" } else { b"some value" };
            let buf = encode_vec(kind, b"the key", value, 42, 99);
            let rec = decode(&buf).expect("decodes");
            assert_eq!(rec.header.kind, kind);
            assert_eq!(rec.key, b"the key");
            assert_eq!(rec.value, value);
            assert_eq!(rec.header.version, 42);
            assert_eq!(rec.header.expiry_ms, 99);
            assert_eq!(rec.encoded_len, buf.len());
            assert_eq!(decode_header(&buf), Ok(rec.header));
            assert_eq!(RecordKind::try_from(kind.as_u8()), Ok(kind));
        }
    }

    #[test]
    fn kind_bytes_outside_the_enum_are_rejected() {
        for byte in [0u8, 5, 0x80, 0xFF] {
            assert_eq!(RecordKind::try_from(byte), Err(DecodeError::BadKind(byte)));
        }
    }

    #[test]
    fn trailing_bytes_after_a_record_are_ignored() {
        let mut buf = encode_vec(RecordKind::Put, b"k", b"v", 1, 0);
        let len = buf.len();
        buf.extend_from_slice(&[0xFF; 64]);
        let rec = decode(&buf).expect("decodes");
        assert_eq!((rec.key, rec.value, rec.encoded_len), (&b"k"[..], &b"v"[..], len));
    }

    #[test]
    fn encode_overwrites_stale_padding() {
        let mut buf = vec![0xFF; 64];
        let n = encode_into(&mut buf, RecordKind::Put, b"k", b"v", 1, 0);
        assert!(buf[34..n].iter().all(|&b| b == 0));
        assert!(decode(&buf).is_ok());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        for original in sample_records() {
            for bit in 0..original.len() * 8 {
                let mut flipped = original.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let result = decode(&flipped);
                assert!(result.is_err(), "flip of bit {bit} in a {}-byte record decoded as {result:?}", original.len());
            }
        }
    }

    #[test]
    fn truncation_at_every_length_is_an_error() {
        for original in sample_records() {
            for len in 0..original.len() {
                let cut = &original[..len];
                let expected = if len < RECORD_HEADER_LEN {
                    DecodeError::Truncated { needed: RECORD_HEADER_LEN, available: len }
                } else {
                    DecodeError::Truncated { needed: original.len(), available: len }
                };
                assert_eq!(decode(cut), Err(expected), "cut at {len}");
            }
        }
    }

    #[test]
    fn torn_write_into_zeroed_space_is_an_error() {
        // Segments are pre-filled with zeros, so a write that stopped after n
        // bytes leaves the record's first n bytes followed by zeros.
        for original in sample_records() {
            for n in 0..original.len() {
                let mut torn = original.clone();
                torn[n..].fill(0);
                if torn == original {
                    // The rest of the record was zeros already: the write
                    // was in fact complete.
                    continue;
                }
                let result = decode(&torn);
                if torn[..RECORD_HEADER_LEN].iter().all(|&b| b == 0) {
                    assert_eq!(result, Err(DecodeError::Empty), "torn at {n}");
                } else {
                    assert!(result.is_err(), "torn at {n} decoded as {result:?}");
                }
            }
        }
    }

    #[test]
    fn zeroed_space_is_empty_once_a_header_fits() {
        let zeros = [0u8; 64];
        for len in 0..zeros.len() {
            let expected = if len < RECORD_HEADER_LEN {
                DecodeError::Truncated { needed: RECORD_HEADER_LEN, available: len }
            } else {
                DecodeError::Empty
            };
            assert_eq!(decode_header(&zeros[..len]), Err(expected));
            assert_eq!(decode(&zeros[..len]), Err(expected));
        }
    }

    #[test]
    fn key_len_limits() {
        let mut buf = encode_vec(RecordKind::Put, b"k", b"v", 1, 0);
        patch(&mut buf, KEY_LEN_OFFSET, &0u16.to_le_bytes());
        assert_eq!(decode_header(&buf), Err(DecodeError::BadKeyLen(0)));

        let key = vec![b'x'; KEY_LEN_MAX];
        let at_max = encode_vec(RecordKind::Put, &key, b"v", 1, 0);
        let rec = decode(&at_max).expect("a key of KEY_LEN_MAX bytes is valid");
        assert_eq!(rec.key.len(), KEY_LEN_MAX);

        let over = KEY_LEN_MAX as u16 + 1;
        let mut beyond = at_max.clone();
        patch(&mut beyond, KEY_LEN_OFFSET, &over.to_le_bytes());
        assert_eq!(decode_header(&beyond), Err(DecodeError::BadKeyLen(over)));
        patch(&mut beyond, KEY_LEN_OFFSET, &u16::MAX.to_le_bytes());
        assert_eq!(decode_header(&beyond), Err(DecodeError::BadKeyLen(u16::MAX)));

        assert!(!lengths_valid(RecordKind::Put, 0, 0));
        assert!(lengths_valid(RecordKind::Put, KEY_LEN_MAX, 0));
        assert!(!lengths_valid(RecordKind::Put, KEY_LEN_MAX + 1, 0));
    }

    #[test]
    fn value_len_limits() {
        let mut buf = encode_vec(RecordKind::Put, b"k", b"", 1, 0);
        let max = RECORD_VALUE_LEN_MAX as u32;
        patch(&mut buf, VALUE_LEN_OFFSET, &max.to_le_bytes());
        let h = decode_header(&buf).expect("RECORD_VALUE_LEN_MAX is a valid length");
        assert_eq!(h.value_len, max);
        assert_eq!(
            decode(&buf),
            Err(DecodeError::Truncated { needed: encoded_len(1, RECORD_VALUE_LEN_MAX), available: buf.len() })
        );
        patch(&mut buf, VALUE_LEN_OFFSET, &(max + 1).to_le_bytes());
        assert_eq!(decode_header(&buf), Err(DecodeError::BadValueLen(max + 1)));
        patch(&mut buf, VALUE_LEN_OFFSET, &u32::MAX.to_le_bytes());
        assert_eq!(decode_header(&buf), Err(DecodeError::BadValueLen(u32::MAX)));

        assert!(lengths_valid(RecordKind::Put, 1, RECORD_VALUE_LEN_MAX));
        assert!(!lengths_valid(RecordKind::Put, 1, RECORD_VALUE_LEN_MAX + 1));
    }

    #[test]
    fn value_at_record_value_len_max_round_trips() {
        let value = vec![0x5A; RECORD_VALUE_LEN_MAX];
        let buf = encode_vec(RecordKind::Chunk, b"k", &value, 3, 0);
        let rec = decode(&buf).expect("decodes");
        assert_eq!(rec.value.len(), RECORD_VALUE_LEN_MAX);
        assert_eq!(rec.encoded_len, encoded_len(1, RECORD_VALUE_LEN_MAX));
    }

    #[test]
    fn delete_with_a_value_is_rejected() {
        // A delete carrying a value, sealed with a correct crc: only the
        // length rule can catch it.
        let mut buf = encode_vec(RecordKind::Put, b"k", b"v", 1, 0);
        patch_and_reseal(&mut buf, KIND_OFFSET, &[RecordKind::Delete.as_u8()], 34);
        assert_eq!(decode_header(&buf), Err(DecodeError::BadValueLen(1)));
        assert_eq!(decode(&buf), Err(DecodeError::BadValueLen(1)));
        assert!(!lengths_valid(RecordKind::Delete, 1, 1));
        assert!(lengths_valid(RecordKind::Delete, 1, 0));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "record lengths out of limits")]
    fn encoding_a_delete_with_a_value_is_a_caller_bug() {
        let mut buf = [0u8; 64];
        encode_into(&mut buf, RecordKind::Delete, b"k", b"v", 1, 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "record lengths out of limits")]
    fn encoding_an_empty_key_is_a_caller_bug() {
        let mut buf = [0u8; 64];
        encode_into(&mut buf, RecordKind::Put, b"", b"v", 1, 0);
    }

    #[test]
    fn each_header_check_reports_what_it_found() {
        let sealed = encode_vec(RecordKind::Put, b"key", b"val", 1, 0);
        let end = RECORD_HEADER_LEN + 3 + 3;
        assert_eq!(sealed.len(), end + 2, "two bytes of padding");
        let cases: [(usize, &[u8], DecodeError); 4] = [
            (MAGIC_OFFSET, &[0x34, 0x12], DecodeError::BadMagic(0x1234)),
            (FORMAT_VERSION_OFFSET, &[2], DecodeError::UnsupportedVersion(2)),
            (KIND_OFFSET, &[9], DecodeError::BadKind(9)),
            (FLAGS_OFFSET, &[1, 0], DecodeError::BadFlags(1)),
        ];
        for (at, bytes, expected) in cases {
            let mut buf = sealed.clone();
            patch_and_reseal(&mut buf, at, bytes, end);
            assert_eq!(decode_header(&buf), Err(expected));
            assert_eq!(decode(&buf), Err(expected));
        }

        let mut bad_crc = sealed.clone();
        let stored = u32::from_le_bytes([bad_crc[0], bad_crc[1], bad_crc[2], bad_crc[3]]);
        patch(&mut bad_crc, CRC_OFFSET, &(stored ^ 1).to_le_bytes());
        assert_eq!(decode(&bad_crc), Err(DecodeError::ChecksumMismatch { stored: stored ^ 1, computed: stored }));
        assert!(decode_header(&bad_crc).is_ok(), "decode_header skips the crc");

        let mut bad_pad = sealed.clone();
        bad_pad[end + 1] = 0x40;
        assert_eq!(decode(&bad_pad), Err(DecodeError::BadPadding { offset: end + 1, found: 0x40 }));
    }

    #[test]
    fn encoded_len_saturates_instead_of_overflowing() {
        assert_eq!(encoded_len(usize::MAX, usize::MAX) % RECORD_ALIGN, 0);
        assert!(encoded_len(usize::MAX, 0) >= usize::MAX - RECORD_ALIGN);
    }

    fn sample_segment() -> SegmentHeader {
        SegmentHeader { segment_id: 17, created_unix_ms: 1_767_225_600_000, capacity_bytes: 256 << 20 }
    }

    #[test]
    fn segment_header_round_trips() {
        for h in [
            sample_segment(),
            SegmentHeader { segment_id: 0, created_unix_ms: 0, capacity_bytes: SEGMENT_HEADER_LEN as u64 },
            SegmentHeader { segment_id: SEGMENT_ID_MAX, created_unix_ms: u64::MAX, capacity_bytes: SEGMENT_LEN_MAX },
        ] {
            let block = h.encode();
            assert_eq!(SegmentHeader::decode(&block[..]), Ok(h));
            let mut longer = block.to_vec();
            longer.extend_from_slice(&[0xEE; 100]);
            assert_eq!(SegmentHeader::decode(&longer), Ok(h), "bytes after it are ignored");
        }
    }

    #[test]
    fn segment_header_every_single_bit_flip_is_detected() {
        let original = sample_segment().encode();
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut flipped = original.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let result = SegmentHeader::decode(&flipped[..]);
            assert!(result.is_err(), "flip of bit {bit} decoded as {result:?}");
        }
    }

    #[test]
    fn segment_header_truncation_and_empty() {
        let block = sample_segment().encode();
        for len in 0..SEGMENT_HEADER_LEN {
            assert_eq!(
                SegmentHeader::decode(&block[..len]),
                Err(SegmentHeaderError::Truncated { needed: SEGMENT_HEADER_LEN, available: len })
            );
        }
        let zeros = vec![0u8; SEGMENT_HEADER_LEN];
        assert_eq!(SegmentHeader::decode(&zeros), Err(SegmentHeaderError::Empty));
    }

    fn sealed_segment(patch_at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut b = sample_segment().encode().to_vec();
        patch(&mut b, patch_at, bytes);
        let crc = crc32fast::hash(&b[SEG_CRC_COVER_START..SEG_CRC_COVER_END]);
        patch(&mut b, SEG_CRC_OFFSET, &crc.to_le_bytes());
        b
    }

    #[test]
    fn segment_header_checks_report_what_they_found() {
        assert_eq!(
            SegmentHeader::decode(&sealed_segment(SEG_MAGIC_OFFSET, b"OPTICSEX")),
            Err(SegmentHeaderError::BadMagic(*b"OPTICSEX"))
        );
        assert_eq!(
            SegmentHeader::decode(&sealed_segment(SEG_FORMAT_VERSION_OFFSET, &[7])),
            Err(SegmentHeaderError::UnsupportedVersion(7))
        );
        for offset in [13, 15, 20, 23, 40, 63] {
            assert_eq!(
                SegmentHeader::decode(&sealed_segment(offset, &[0x01])),
                Err(SegmentHeaderError::NonZeroReserved { offset, found: 0x01 }),
                "reserved byte {offset} inside the crc"
            );
        }
        // Beyond the crc's range only the zero check can catch damage.
        let mut tail = sample_segment().encode();
        tail[4095] = 0x80;
        assert_eq!(
            SegmentHeader::decode(&tail[..]),
            Err(SegmentHeaderError::NonZeroReserved { offset: 4095, found: 0x80 })
        );
        let over_id = SEGMENT_ID_MAX + 1;
        assert_eq!(
            SegmentHeader::decode(&sealed_segment(SEG_ID_OFFSET, &over_id.to_le_bytes())),
            Err(SegmentHeaderError::BadSegmentId(over_id))
        );
        for capacity in [0, SEGMENT_HEADER_LEN as u64 - 8, SEGMENT_LEN_MAX + 8, 4097] {
            assert_eq!(
                SegmentHeader::decode(&sealed_segment(SEG_CAPACITY_OFFSET, &capacity.to_le_bytes())),
                Err(SegmentHeaderError::BadCapacity(capacity))
            );
        }
        let mut bad_crc = sample_segment().encode();
        bad_crc[0] ^= 0xFF;
        assert!(matches!(SegmentHeader::decode(&bad_crc[..]), Err(SegmentHeaderError::ChecksumMismatch { .. })));
    }

    fn arb_record() -> impl Strategy<Value = (RecordKind, Vec<u8>, Vec<u8>, u64, u64)> {
        (
            prop::sample::select(ALL_KINDS.to_vec()),
            prop::collection::vec(any::<u8>(), 1..=KEY_LEN_MAX),
            prop::collection::vec(any::<u8>(), 0..=2048),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(kind, key, value, version, expiry)| {
                let value = if kind == RecordKind::Delete { Vec::new() } else { value };
                (kind, key, value, version, expiry)
            })
    }

    proptest! {
        #[test]
        fn proptest_round_trip((kind, key, value, version, expiry) in arb_record()) {
            let buf = encode_vec(kind, &key, &value, version, expiry);
            prop_assert_eq!(buf.len() % RECORD_ALIGN, 0);
            let rec = decode(&buf).expect("decodes");
            prop_assert_eq!(rec.header.kind, kind);
            prop_assert_eq!(rec.key, &key[..]);
            prop_assert_eq!(rec.value, &value[..]);
            prop_assert_eq!(rec.header.version, version);
            prop_assert_eq!(rec.header.expiry_ms, expiry);
            prop_assert_eq!(rec.encoded_len, buf.len());
        }

        /// Records laid back to back in zeroed space read back in order, then
        /// the scan stops at `Empty`: the shape of a segment.
        #[test]
        fn proptest_log_scan(records in prop::collection::vec(arb_record(), 0..8)) {
            let total: usize = records.iter().map(|(_, k, v, _, _)| encoded_len(k.len(), v.len())).sum();
            let mut log = vec![0u8; total + RECORD_HEADER_LEN];
            let mut at = 0;
            for (kind, key, value, version, expiry) in &records {
                at += encode_into(&mut log[at..], *kind, key, value, *version, *expiry);
            }
            let mut at = 0;
            for (kind, key, value, _, _) in &records {
                let rec = decode(&log[at..]).expect("decodes");
                prop_assert_eq!((rec.header.kind, rec.key, rec.value), (*kind, &key[..], &value[..]));
                at += rec.encoded_len;
            }
            prop_assert_eq!(decode(&log[at..]), Err(DecodeError::Empty));
        }

        #[test]
        fn proptest_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(rec) = decode(&bytes) {
                prop_assert!(rec.encoded_len <= bytes.len());
            }
            let _ = decode_header(&bytes);
            let _ = SegmentHeader::decode(&bytes);
        }
    }
}
