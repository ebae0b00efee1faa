//! The ghost queue of S3-FIFO: the hashes of keys recently evicted from the
//! small queue without having been read again, oldest first, bounded in count.
//! A key found here on insert was evicted too early once, so it goes straight
//! to the main queue.
//!
//! It holds hashes, never keys or values: 8 bytes in the ring plus one map
//! entry (16 bytes and a control byte, at hashbrown's load factor) per ghost.
//! A hash collision only misplaces one key into the main queue, which is
//! harmless.
//!
//! Invariants:
//! - `live.len() <= ring.len() <= cap` after every `push` or `trim(cap)`;
//! - `live[h] == s` means the ring slot with sequence number `s` holds `h` and
//!   is the newest occurrence of `h`; older occurrences (and those taken out by
//!   [`Ghost::take`]) are stale and are skipped when they leave the ring.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// A `Hasher` for keys that already are xxh3 hashes: hashing them again would
/// only cost time.
#[derive(Default)]
pub(super) struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by this module; this keeps the trait whole.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// Upper bound on the memory one ghost costs: 8 bytes of ring, and a map
/// entry of 17 bytes at a load between 7/16 and 7/8, i.e. up to ~39 bytes.
pub(super) const GHOST_BYTES_PER_ENTRY: usize = 48;

pub(super) struct Ghost {
    /// Hashes, oldest at the front.
    ring: VecDeque<u64>,
    /// The sequence number of `ring[0]`; `ring[i]` has `front_seq + i`.
    front_seq: u64,
    /// The ghosts still in effect: hash → sequence number of its newest slot.
    live: HashMap<u64, u64, BuildHasherDefault<HashIsKey>>,
}

impl Ghost {
    pub(super) fn new() -> Self {
        Self { ring: VecDeque::new(), front_seq: 0, live: HashMap::default() }
    }

    /// How many hashes are in effect.
    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// Remembers `hash`, forgetting the oldest ghosts to stay within `cap`.
    pub(super) fn push(&mut self, hash: u64, cap: usize) {
        if cap == 0 {
            self.clear();
            return;
        }
        self.trim(cap - 1);
        let seq = self.front_seq + self.ring.len() as u64;
        self.ring.push_back(hash);
        self.live.insert(hash, seq);
    }

    /// If `hash` is a ghost, forgets it and returns true.
    pub(super) fn take(&mut self, hash: u64) -> bool {
        self.live.remove(&hash).is_some()
    }

    /// Forgets the oldest ghosts until at most `cap` ring slots remain.
    pub(super) fn trim(&mut self, cap: usize) {
        while self.ring.len() > cap {
            let Some(hash) = self.ring.pop_front() else {
                break;
            };
            if self.live.get(&hash) == Some(&self.front_seq) {
                self.live.remove(&hash);
            }
            self.front_seq += 1;
        }
    }

    pub(super) fn clear(&mut self) {
        self.front_seq += self.ring.len() as u64;
        self.ring.clear();
        self.live.clear();
    }

    /// Gives back memory after the cache's budget shrank.
    pub(super) fn shrink_to_fit(&mut self) {
        self.ring.shrink_to_fit();
        self.live.shrink_to_fit();
    }

    #[cfg(test)]
    pub(super) fn contains(&self, hash: u64) -> bool {
        self.live.contains_key(&hash)
    }

    #[cfg(test)]
    pub(super) fn ring_len(&self) -> usize {
        self.ring.len()
    }

    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        assert!(self.live.len() <= self.ring.len());
        for (&hash, &seq) in &self.live {
            let at = usize::try_from(seq - self.front_seq).unwrap();
            assert_eq!(self.ring[at], hash, "live ghost points at a wrong slot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_count_and_forgets_the_oldest() {
        let mut ghost = Ghost::new();
        for hash in 0..100u64 {
            ghost.push(hash, 10);
            assert!(ghost.ring_len() <= 10);
            ghost.check_invariants();
        }
        assert_eq!(ghost.len(), 10);
        assert!(!ghost.take(89));
        assert!(ghost.take(90));
        assert!(!ghost.take(90), "a taken ghost is gone");
        assert_eq!(ghost.len(), 9);
    }

    #[test]
    fn a_repeated_hash_lives_as_long_as_its_newest_push() {
        let mut ghost = Ghost::new();
        ghost.push(7, 3);
        ghost.push(8, 3);
        ghost.push(7, 3);
        ghost.push(9, 3); // pushes out the first 7, which is stale
        ghost.check_invariants();
        assert!(ghost.take(7));
        assert!(ghost.take(8) && ghost.take(9));
    }

    #[test]
    fn zero_cap_holds_nothing() {
        let mut ghost = Ghost::new();
        ghost.push(1, 4);
        ghost.push(2, 0);
        assert_eq!(ghost.len(), 0);
        assert_eq!(ghost.ring_len(), 0);
        ghost.check_invariants();
    }
}
