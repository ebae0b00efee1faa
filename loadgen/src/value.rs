//! The values loadgen writes, made so that every read can be checked: a
//! value names the key it was written under and carries a crc32 of itself.
//!
//! Layout (all integers little-endian; offsets are derived constants, pinned
//! by a test):
//!
//! ```text
//! 0      4      8          16         24                         len
//! +------+------+----------+----------+---------------------------+
//! | magic| crc32| key id   | seed     | body: pseudo-random bytes  |
//! +------+------+----------+----------+---------------------------+
//!                \_______________ covered by crc32 _______________/
//! ```
//!
//! Invariants: `check_value(id, &make_value(id, len, seed))` is `Ok` for
//! every id, len and seed; any single changed byte makes it fail (the magic
//! and the crc field are compared, everything after them is under the crc);
//! a value written for another key fails with [`Mismatch::WrongKey`]. The
//! length is the value's own: a truncated or extended value fails the crc.
//! The seed makes two writes of one key differ, so a read that returns an
//! older write still passes (it is the key's data), but one that returns
//! another key's or garbage does not.

use bytes::{Bytes, BytesMut};

/// "OCLG" as bytes on the wire: OptiCache LoadGen.
pub const MAGIC: u32 = u32::from_le_bytes(*b"OCLG");
pub const MAGIC_OFFSET: usize = 0;
pub const CRC_OFFSET: usize = MAGIC_OFFSET + size_of::<u32>();
pub const KEY_ID_OFFSET: usize = CRC_OFFSET + size_of::<u32>();
pub const SEED_OFFSET: usize = KEY_ID_OFFSET + size_of::<u64>();
/// Bytes before the body; also the smallest value loadgen writes.
pub const HEADER_BYTES: usize = SEED_OFFSET + size_of::<u64>();
/// The body repeats a pseudo-random block of this size (each copy stamped
/// with its index): filling a 64 MiB value is then a memcpy, not 8 million
/// generator steps, and the crc still sees every block differ.
const FILL_BLOCK_BYTES: usize = 4096;

/// Why a value read back is not one loadgen wrote for this key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Shorter than the header: not a loadgen value at all.
    #[error("value of {len} bytes is shorter than the {HEADER_BYTES}-byte header")]
    TooShort { len: usize },
    /// The first four bytes are not [`MAGIC`].
    #[error("bad magic {got:#010x}, expected {MAGIC:#010x}")]
    BadMagic { got: u32 },
    /// The bytes after the crc field do not match it: corrupted, truncated
    /// or extended.
    #[error("crc32 {got:#010x} of {len} bytes, the value says {expected:#010x}")]
    Crc { got: u32, expected: u32, len: usize },
    /// An intact value, but written for another key.
    #[error("value of key {got}, read as key {expected}")]
    WrongKey { got: u64, expected: u64 },
}

/// A value of `len` bytes for key `key_id`; `seed` picks its body. Values
/// are never shorter than [`HEADER_BYTES`]: a smaller `len` gives a value of
/// exactly the header (argument validation refuses such sizes anyway).
pub fn make_value(key_id: u64, len: usize, seed: u64) -> Bytes {
    let len = len.max(HEADER_BYTES);
    let mut buf = BytesMut::zeroed(len);
    buf[KEY_ID_OFFSET..SEED_OFFSET].copy_from_slice(&key_id.to_le_bytes());
    buf[SEED_OFFSET..HEADER_BYTES].copy_from_slice(&seed.to_le_bytes());

    let mut block = [0u8; FILL_BLOCK_BYTES];
    let mut state = seed ^ key_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    for word in block.chunks_exact_mut(8) {
        word.copy_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    for (index, chunk) in buf[HEADER_BYTES..].chunks_mut(FILL_BLOCK_BYTES).enumerate() {
        chunk.copy_from_slice(&block[..chunk.len()]);
        let stamp = (index as u64).to_le_bytes();
        let n = chunk.len().min(stamp.len());
        for (byte, s) in chunk[..n].iter_mut().zip(stamp) {
            *byte ^= s;
        }
    }

    let crc = crc32fast::hash(&buf[KEY_ID_OFFSET..]);
    buf[MAGIC_OFFSET..CRC_OFFSET].copy_from_slice(&MAGIC.to_le_bytes());
    buf[CRC_OFFSET..KEY_ID_OFFSET].copy_from_slice(&crc.to_le_bytes());
    buf.freeze()
}

/// Checks that `value` is intact and was written for key `key_id`.
pub fn check_value(key_id: u64, value: &[u8]) -> Result<(), Mismatch> {
    if value.len() < HEADER_BYTES {
        return Err(Mismatch::TooShort { len: value.len() });
    }
    let magic = read_u32(value, MAGIC_OFFSET);
    if magic != MAGIC {
        return Err(Mismatch::BadMagic { got: magic });
    }
    let expected = read_u32(value, CRC_OFFSET);
    let got = crc32fast::hash(&value[KEY_ID_OFFSET..]);
    if got != expected {
        return Err(Mismatch::Crc { got, expected, len: value.len() });
    }
    let written_for = read_u64(value, KEY_ID_OFFSET);
    if written_for != key_id {
        return Err(Mismatch::WrongKey { got: written_for, expected: key_id });
    }
    Ok(())
}

fn read_u32(value: &[u8], offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&value[offset..offset + 4]);
    u32::from_le_bytes(bytes)
}

fn read_u64(value: &[u8], offset: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&value[offset..offset + 8]);
    u64::from_le_bytes(bytes)
}

/// One step of splitmix64: a full-period generator good enough for filler.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets_are_pinned() {
        assert_eq!((MAGIC_OFFSET, CRC_OFFSET, KEY_ID_OFFSET, SEED_OFFSET, HEADER_BYTES), (0, 4, 8, 16, 24));
        let value = make_value(0x0102_0304_0506_0708, 100, 0x1112_1314_1516_1718);
        assert_eq!(&value[..4], b"OCLG");
        assert_eq!(&value[8..16], &[8, 7, 6, 5, 4, 3, 2, 1], "key id, little-endian");
        assert_eq!(&value[16..24], &[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11], "seed, little-endian");
        assert_eq!(&value[4..8], &crc32fast::hash(&value[8..]).to_le_bytes());
    }

    #[test]
    fn values_have_the_asked_length_and_pass_their_check() {
        for len in [HEADER_BYTES, HEADER_BYTES + 1, 100, 4096, 4096 + HEADER_BYTES, 3 * FILL_BLOCK_BYTES + 7, 1 << 20] {
            for seed in [0, 1, u64::MAX] {
                let value = make_value(42, len, seed);
                assert_eq!(value.len(), len);
                assert_eq!(check_value(42, &value), Ok(()), "len {len} seed {seed}");
            }
        }
        assert_eq!(make_value(1, 3, 0).len(), HEADER_BYTES, "never shorter than the header");
    }

    #[test]
    fn the_seed_and_the_key_change_the_bytes() {
        assert_ne!(make_value(1, 256, 1), make_value(1, 256, 2));
        assert_ne!(make_value(1, 256, 1)[HEADER_BYTES..], make_value(2, 256, 1)[HEADER_BYTES..]);
        assert_eq!(make_value(1, 256, 1), make_value(1, 256, 1), "deterministic");
    }

    #[test]
    fn a_flipped_byte_anywhere_is_caught() {
        let value = make_value(7, 2 * FILL_BLOCK_BYTES + 100, 99);
        for at in 0..value.len() {
            let mut bad = value.to_vec();
            bad[at] ^= 0x01;
            let err = check_value(7, &bad).expect_err("flipped byte");
            match at {
                0..4 => assert!(matches!(err, Mismatch::BadMagic { .. }), "byte {at}: {err:?}"),
                _ => assert!(matches!(err, Mismatch::Crc { .. }), "byte {at}: {err:?}"),
            }
        }
    }

    #[test]
    fn a_value_of_another_key_is_wrong_data() {
        let value = make_value(5, 4096, 1);
        assert_eq!(check_value(6, &value), Err(Mismatch::WrongKey { got: 5, expected: 6 }));
    }

    #[test]
    fn truncated_extended_and_foreign_values_are_caught() {
        let value = make_value(3, 1000, 1);
        assert!(matches!(check_value(3, &value[..999]), Err(Mismatch::Crc { .. })));
        let mut longer = value.to_vec();
        longer.push(0);
        assert!(matches!(check_value(3, &longer), Err(Mismatch::Crc { .. })));
        assert_eq!(check_value(3, &value[..10]), Err(Mismatch::TooShort { len: 10 }));
        assert_eq!(check_value(3, b""), Err(Mismatch::TooShort { len: 0 }));
        assert!(matches!(check_value(3, &[0u8; 64]), Err(Mismatch::BadMagic { got: 0 })));
    }
}
