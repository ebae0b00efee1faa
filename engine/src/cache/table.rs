//! The hot cache's index: an open-addressing hash table from a key's hash to
//! the slab slot of its entry, with linear probing and backward-shift deletion.
//!
//! Why not `std::collections::HashMap<Box<[u8]>, u32>`: it would store every
//! key a second time (the slab must keep the key too, to unlink it from the
//! table when it is evicted), and the std map cannot delete by hash. Here a slot
//! is one `u64`, so a probe walks a contiguous array, and a key is compared
//! only when 32 bits of its hash already match.
//!
//! Invariants:
//! - the slot count is a power of two, at least [`SLOTS_MIN`];
//! - at most half the slots are used ([`LOAD_DIVISOR`]), so every probe ends at
//!   an empty slot and a lookup is short;
//! - a used slot holds `hash_lo32 << 32 | (entry + 1)`, so 0 means empty and a
//!   slot's home position can be recomputed from the slot alone (which is what
//!   backward-shift deletion needs);
//! - no tombstones: after a deletion every entry is still reachable from its
//!   home by a probe that crosses no empty slot.
//!
//! Growing rehashes every slot at once: O(entries), but only when the cache
//! reaches a new high-water mark of entries, i.e. while it first fills, and
//! about log2(entries) times in all.

/// The smallest table: 16 slots (128 bytes) keeps an empty cache cheap.
pub(super) const SLOTS_MIN: usize = 16;
/// The table grows when more than `1 / LOAD_DIVISOR` of its slots would be
/// used: at load 1/2 a linear-probe hit takes 1.5 probes on average and a miss
/// 2.5, and the engine asks the cache on every read, hits or not.
pub(super) const LOAD_DIVISOR: usize = 2;
/// The most slots a live entry can stand for right after the table doubled
/// (load 1/4); the cache charges this much per entry.
pub(super) const SLOTS_PER_ENTRY_MAX: usize = 2 * LOAD_DIVISOR;
/// Bytes of one slot.
pub(super) const SLOT_BYTES: usize = std::mem::size_of::<u64>();

const EMPTY: u64 = 0;

/// Open-addressing index from a key hash to an entry number (`u32`, below
/// `2^31` so that 32 bits of hash always suffice to find the home slot).
pub(super) struct Table {
    slots: Box<[u64]>,
    used: usize,
}

impl Table {
    /// A table that can hold `entries` without growing.
    pub(super) fn with_capacity_for(entries: usize) -> Self {
        let slots_len = entries.saturating_mul(LOAD_DIVISOR).max(SLOTS_MIN).next_power_of_two();
        Self { slots: vec![EMPTY; slots_len].into_boxed_slice(), used: 0 }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.used
    }

    pub(super) fn slots_len(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn home(&self, hash32: u32) -> usize {
        hash32 as usize & self.mask()
    }

    #[inline]
    fn encode(hash: u64, entry: u32) -> u64 {
        (hash & 0xffff_ffff) << 32 | (u64::from(entry) + 1)
    }

    #[inline]
    fn slot_hash32(slot: u64) -> u32 {
        (slot >> 32) as u32
    }

    #[inline]
    fn slot_entry(slot: u64) -> u32 {
        (slot as u32) - 1
    }

    /// Finds the entry whose hash is `hash` and for which `is_key` (the key
    /// comparison, done by the caller who owns the entries) holds. Returns
    /// the slot position and the entry number.
    #[inline]
    pub(super) fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        let hash32 = hash as u32;
        let mask = self.mask();
        let mut pos = self.home(hash32);
        loop {
            let slot = self.slots[pos];
            if slot == EMPTY {
                return None;
            }
            if Self::slot_hash32(slot) == hash32 && is_key(Self::slot_entry(slot)) {
                return Some((pos, Self::slot_entry(slot)));
            }
            pos = (pos + 1) & mask;
        }
    }

    /// The slot position of a known entry. The entry must be in the table: the
    /// cache calls this only for live entries, so absence is a bug.
    pub(super) fn position_of(&self, hash: u64, entry: u32) -> usize {
        let wanted = Self::encode(hash, entry);
        let mask = self.mask();
        let mut pos = self.home(hash as u32);
        loop {
            let slot = self.slots[pos];
            assert!(slot != EMPTY, "cache index lost entry {entry}");
            if slot == wanted {
                return pos;
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Adds an entry; the caller has checked that its key is not present.
    pub(super) fn insert(&mut self, hash: u64, entry: u32) {
        if (self.used + 1) * LOAD_DIVISOR > self.slots.len() {
            self.grow();
        }
        self.place(Self::encode(hash, entry));
        self.used += 1;
    }

    fn place(&mut self, slot: u64) {
        let mask = self.mask();
        let mut pos = self.home(Self::slot_hash32(slot));
        while self.slots[pos] != EMPTY {
            pos = (pos + 1) & mask;
        }
        self.slots[pos] = slot;
    }

    fn grow(&mut self) {
        let doubled = vec![EMPTY; self.slots.len() * 2].into_boxed_slice();
        let old = std::mem::replace(&mut self.slots, doubled);
        for slot in old.iter().copied().filter(|&s| s != EMPTY) {
            self.place(slot);
        }
    }

    /// Empties the slot at `pos` and shifts later members of its probe run
    /// back, so that lookups never need tombstones.
    pub(super) fn remove_at(&mut self, pos: usize) {
        let mask = self.mask();
        let mut hole = pos;
        let mut next = (pos + 1) & mask;
        loop {
            let slot = self.slots[next];
            if slot == EMPTY {
                break;
            }
            let home = self.home(Self::slot_hash32(slot));
            // The slot at `next` may fill the hole only if the hole lies on its
            // probe path, i.e. between its home and `next` (cyclically).
            let probe_len = next.wrapping_sub(home) & mask;
            let hole_dist = next.wrapping_sub(hole) & mask;
            if hole_dist <= probe_len {
                self.slots[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = EMPTY;
        self.used -= 1;
    }

    /// Every `(hash_lo32, entry)` in the table, for invariant checks.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.slots.iter().copied().filter(|&s| s != EMPTY).map(|s| (Self::slot_hash32(s), Self::slot_entry(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn grows_before_half_full_and_stays_power_of_two() {
        let mut table = Table::with_capacity_for(0);
        assert_eq!(table.slots_len(), SLOTS_MIN);
        for entry in 0..1000u32 {
            table.insert(u64::from(entry).wrapping_mul(0x9e37_79b9_7f4a_7c15), entry);
            assert!(table.len() * LOAD_DIVISOR <= table.slots_len());
            assert!(table.slots_len().is_power_of_two());
        }
        assert_eq!(table.slots_len(), 2048);
    }

    #[test]
    fn with_capacity_for_does_not_grow_until_full() {
        let mut table = Table::with_capacity_for(100);
        let slots = table.slots_len();
        for entry in 0..100u32 {
            table.insert(u64::from(entry), entry);
        }
        assert_eq!(table.slots_len(), slots);
    }

    #[test]
    fn removal_in_a_wrapping_collision_run_keeps_the_others_reachable() {
        // All four share the last slot as home, so the run wraps to the front.
        let mut table = Table::with_capacity_for(0);
        let last = (SLOTS_MIN - 1) as u64;
        for entry in 0..4u32 {
            table.insert(last | u64::from(entry) << 40, entry);
        }
        let pos = table.position_of(last | 1 << 40, 1);
        table.remove_at(pos);
        for entry in [0u32, 2, 3] {
            let hash = last | u64::from(entry) << 40;
            assert_eq!(table.find(hash, |e| e == entry).map(|f| f.1), Some(entry));
        }
        assert_eq!(table.find(last | 1 << 40, |e| e == 1), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(usize),
    }

    proptest! {
        /// The table against a `HashMap`, with hashes drawn from a tiny range so
        /// that runs collide, wrap and get shifted on every removal.
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec(
            prop_oneof![
                (0u64..40).prop_map(Op::Insert),
                any::<usize>().prop_map(Op::Remove),
            ],
            1..400,
        )) {
            let mut table = Table::with_capacity_for(0);
            let mut model: HashMap<u32, u64> = HashMap::new();
            let mut next_entry = 0u32;
            for op in ops {
                match op {
                    Op::Insert(hash) => {
                        table.insert(hash, next_entry);
                        model.insert(next_entry, hash);
                        next_entry += 1;
                    }
                    Op::Remove(pick) => {
                        if model.is_empty() {
                            continue;
                        }
                        let mut live: Vec<u32> = model.keys().copied().collect();
                        live.sort_unstable();
                        let entry = live[pick % live.len()];
                        let hash = model.remove(&entry).unwrap();
                        let pos = table.position_of(hash, entry);
                        table.remove_at(pos);
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                for (&entry, &hash) in &model {
                    prop_assert_eq!(table.find(hash, |e| e == entry), Some((table.position_of(hash, entry), entry)));
                }
            }
        }
    }
}
