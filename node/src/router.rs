//! Which shard owns a key: a seeded xxh3 hash of the engine key, mapped onto
//! the shard count by multiply-shift (uniform, no modulo bias, no division).
//!
//! Invariant: the mapping depends only on the key and the shard count, which
//! is fixed for a data dir's life (`datadir.rs` refuses another count), so a
//! key is always looked up where it was written.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Must differ from the engine's fingerprint seed. With the same seed, the
/// shard would be the fingerprint's top bits, which are also what the
/// engine's index places keys by: each shard's keys would crowd into part of
/// its index (probe runs hundreds of slots long; measured: index inserts
/// took over half the node's CPU). A test pins the independence.
const SHARD_SEED: u64 = 0x7368_6172_645f_7274; // "shard_rt"

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
    fn a_shards_keys_spread_over_the_whole_fingerprint_space() {
        // The index homes a key by its fingerprint's top bits: within one
        // shard they must still be uniform.
        let shards = 2;
        let mut top_quarter = [0u32; 4];
        let mut in_shard = 0;
        for i in 0..40_000u32 {
            let key = format!("key:{i:012}");
            if shard_of(key.as_bytes(), shards) == 0 {
                in_shard += 1;
                top_quarter[(opticache_engine::index::fingerprint(key.as_bytes()) >> 62) as usize] += 1;
            }
        }
        for q in top_quarter {
            let share = f64::from(q) / f64::from(in_shard);
            assert!((0.22..0.28).contains(&share), "fingerprints of shard 0 crowd: {top_quarter:?}");
        }
    }

    #[test]
    fn stable_across_calls() {
        assert_eq!(shard_of(b"k", 8), shard_of(b"k", 8));
    }
}
