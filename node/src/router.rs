//! Which shard owns a key: a seeded xxh3 hash of the engine key, mapped onto
//! the shard count by multiply-shift (uniform, no modulo bias, no division).
//!
//! Invariant: the mapping depends only on the key and the shard count, which
//! is fixed for a data dir's life (`datadir.rs` refuses another count), so a
//! key is always looked up where it was written.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Differs from the engine's fingerprint seed: a shard's keys must not share
/// the low or high bits the engine's index partitions by.
const SHARD_SEED: u64 = 0x6f70_7469_6361_6368; // "opticach"

/// The shard of `engine_key` among `shards` (> 0).
pub fn shard_of(engine_key: &[u8], shards: u32) -> u32 {
    let hash = xxh3_64_with_seed(engine_key, SHARD_SEED);
    ((u128::from(hash) * u128::from(shards)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_takes_everything_and_many_shards_share_evenly() {
        assert!((0..1000u32).all(|i| shard_of(&i.to_le_bytes(), 1) == 0));
        let shards = 4;
        let mut counts = [0u32; 4];
        for i in 0..40_000u32 {
            counts[shard_of(format!("key-{i}").as_bytes(), shards) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn stable_across_calls() {
        assert_eq!(shard_of(b"k", 8), shard_of(b"k", 8));
    }
}
