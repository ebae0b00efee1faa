//! The per-shard hot-value cache: recently used values kept in memory under a
//! byte budget, asked on every read and filled on every write and read miss.
//! One shard is one thread, so there are no locks and no atomics of our own.
//!
//! # Policy: S3-FIFO (Yang et al., SOSP'23)
//!
//! Entries live in one of two FIFO queues; a third remembers evicted keys:
//! - the **small** queue (a tenth of the budget, [`SMALL_QUEUE_DIVISOR`])
//!   takes every new key. While it is over its share, its oldest entries move
//!   to the main queue if they were read since they came in
//!   ([`PROMOTE_FREQ_MIN`]); when room is needed and it is over its share,
//!   its oldest unread entry is evicted and its key's hash goes to the ghost
//!   queue;
//! - the **main** queue holds the rest. When room is needed and the small
//!   queue is within its share, the main queue's oldest entry is evicted if it
//!   was not read since it was last looked at; otherwise its count is lowered
//!   by one and it goes back to the new end (a CLOCK with a 2-bit counter);
//! - the **ghost** queue holds hashes of keys that left the small queue
//!   unread. A key found there when it is inserted again goes straight to the
//!   main queue: it was evicted too early once.
//!
//! Where this differs from the paper, on purpose:
//! - the queues share one byte budget instead of having fixed sizes, so an
//!   unread entry stays in the small queue, even beyond its share, until the
//!   budget needs its room: a cache that is still filling evicts nothing;
//! - promotion spends the reads that earned it; reads beyond those carry over
//!   as passes through the main queue;
//! - one eviction walks past at most [`EVICT_SCAN_MAX`] entries, so that no
//!   single insert walks a whole queue;
//! - an insert for a resident key replaces its value, keeps the entry in its
//!   queue, counts as a read, and moves the entry to that queue's new end.
//!
//! Why S3-FIFO rather than LRU: most keys of a cache workload are read once
//! ("one-hit wonders"); here they leave through the small queue without ever
//! disturbing the main queue, so a scan of many keys cannot flush a working set
//! that is read repeatedly. And a hit does not reorder any list (LRU moves the
//! entry to the front, touching its neighbours): a hit is one hash lookup, a
//! saturating counter bump and a `Bytes` clone. Queue surgery happens only on
//! insert and eviction.
//!
//! The ghost queue costs memory that holds no value: up to one hash per
//! resident entry (the paper's sizing: as many ghosts as the cache holds
//! entries), about [`GHOST_BYTES_PER_ENTRY`] each; that cost is folded into
//! [`ENTRY_OVERHEAD_BYTES`], so the budget covers it.
//!
//! # Accounting
//!
//! An entry is charged `key.len() + value.len() + ENTRY_OVERHEAD_BYTES`, where
//! the overhead is derived from the sizes of the real bookkeeping (slab entry,
//! index slots, ghost share, the value's allocation headers) and pinned by a
//! test. The caller's contract: a cached `Bytes` should own its allocation. A
//! `Bytes` sliced out of a larger buffer keeps that whole buffer alive, which
//! no charge based on `value.len()` can see; copy such values
//! (`Bytes::copy_from_slice`) before inserting them.
//!
//! Invariants, after every public call:
//! - `bytes <= budget_bytes`, and `bytes` is the sum of the resident entries'
//!   charges; `small_bytes` is that sum over the small queue;
//! - every resident entry is in exactly one queue and in the index once;
//! - no resident entry is charged more than [`HotCache::entry_charge_max`]
//!   was when it was admitted;
//! - the ghost holds at most as many hashes as the cache holds entries;
//! - the cache never holds more than [`ENTRIES_MAX`] entries.
//!
//! Expiry and versions are not the cache's business: it returns what it was
//! last given for a key, and the engine checks `expiry_ms` and `version`.

mod ghost;
mod table;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use ghost::{Ghost, GHOST_BYTES_PER_ENTRY};
use std::fmt;
use table::Table;

/// A cached value and the metadata the engine needs to trust it.
#[derive(Clone, Debug)]
pub struct CachedValue {
    /// Should own its allocation (see "Accounting" in the module docs).
    pub value: Bytes,
    /// The record's version, for last-writer-wins checks by the engine.
    pub version: u64,
    /// When the value expires, in ms since the epoch (the engine's clock);
    /// the cache does not look at it.
    pub expiry_ms: u64,
}

/// Counters and sizes of one cache, for the shard's stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    /// `get` calls that found the key.
    pub hits: u64,
    /// `get` calls that did not.
    pub misses: u64,
    /// Values admitted by `insert` (new keys and replacements).
    pub inserts: u64,
    /// Entries the policy dropped to stay under the budget (not counting
    /// `remove`, replacements or refused values).
    pub evictions: u64,
    /// Entries resident now.
    pub entries: u64,
    /// Bytes charged for the resident entries (see the module docs).
    pub bytes: u64,
    pub budget_bytes: u64,
}

/// Keys up to this length are stored inside the entry, so the common short key
/// costs no allocation and no extra cache miss on a hit.
pub const KEY_INLINE_LEN_MAX: usize = 30;

/// The value's own heap block header plus the `Bytes` shared header (pointer,
/// capacity, reference count, rounded up by the allocator) that a value held
/// by the cache keeps alive.
pub const VALUE_ALLOC_OVERHEAD_BYTES: usize = 48;

/// What an entry costs beyond its key and value bytes: its slab slot, the index
/// slots it may stand for (the index is between 1/4 and 1/2 full), its share
/// of the ghost queue, and its value's allocation headers.
pub const ENTRY_OVERHEAD_BYTES: u64 = (std::mem::size_of::<Entry>()
    + table::SLOTS_PER_ENTRY_MAX * table::SLOT_BYTES
    + GHOST_BYTES_PER_ENTRY
    + VALUE_ALLOC_OVERHEAD_BYTES) as u64;

/// An entry is admitted only if its charge is at most `budget / 16`. A larger
/// one would fill more than 5/8 of the small queue on its own and push out
/// many small hot entries to stay; it is better read from the log, where a
/// large read is one sequential I/O anyway.
pub const ENTRY_CHARGE_MAX_DIVISOR: u64 = 16;

/// The small queue's share of the budget: one tenth, as in the paper. Since
/// `ENTRY_CHARGE_MAX_DIVISOR > SMALL_QUEUE_DIVISOR`, any admitted entry fits
/// in it.
pub const SMALL_QUEUE_DIVISOR: u64 = 10;

/// The access counter saturates here: 2 bits, so that a burst of reads long
/// ago buys at most three passes through the main queue.
pub const FREQ_MAX: u8 = 3;

/// An entry leaving the small queue goes to the main queue if it was read at
/// least this many times since it was inserted; a value that was written (or
/// filled after a miss) and never read again is a one-hit wonder.
pub const PROMOTE_FREQ_MIN: u8 = 1;

/// The most entries one eviction (or one insert's promotion step) walks past,
/// promoting them from the small queue or giving them another pass in the
/// main queue, before it evicts or stops. Without it one insert could walk a
/// whole queue: in a hot main queue every entry may have a count to spend.
/// Past the bound the main queue's oldest entry is evicted even if it was
/// read: when that many in a row were read, it is as good a victim as any.
pub const EVICT_SCAN_MAX: usize = 64;

/// The most entries a cache holds, whatever its budget: entry numbers are
/// `u32` with a spare bit, and the index finds a home slot from 32 bits of
/// hash. It binds only for budgets of hundreds of GiB.
pub const ENTRIES_MAX: usize = 1 << 31;

/// "No entry" in the queue links and the free list.
const NIL: u32 = u32::MAX;

const _: () = assert!(ENTRY_CHARGE_MAX_DIVISOR > SMALL_QUEUE_DIVISOR);
const _: () = assert!(FREQ_MAX <= 3 && PROMOTE_FREQ_MIN <= FREQ_MAX);
const _: () = assert!(ENTRIES_MAX <= NIL as usize);

fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A key as the cache stores it: short keys inline, long ones on the heap.
enum StoredKey {
    Inline { len: u8, bytes: [u8; KEY_INLINE_LEN_MAX] },
    Heap(Box<[u8]>),
}

impl StoredKey {
    fn new(key: &[u8]) -> Self {
        if key.len() <= KEY_INLINE_LEN_MAX {
            let mut bytes = [0; KEY_INLINE_LEN_MAX];
            bytes[..key.len()].copy_from_slice(key);
            Self::Inline { len: key.len() as u8, bytes }
        } else {
            Self::Heap(key.into())
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(key) => key,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Small,
    Main,
    /// A slab slot on the free list.
    Free,
}

/// One slab slot. Queue links are entry numbers, so the slab can grow without
/// invalidating them.
struct Entry {
    key: StoredKey,
    value: CachedValue,
    /// `hash_key(key)`, kept so that eviction finds the index slot and the
    /// ghost hash without rehashing.
    hash: u64,
    /// Toward the newer end of the entry's queue; the free list's next.
    newer: u32,
    /// Toward the older end.
    older: u32,
    /// Reads since the entry entered its queue (or was last passed over in
    /// the main queue), saturating at `FREQ_MAX`.
    freq: u8,
    place: Place,
}

impl Entry {
    fn vacant(next_free: u32) -> Self {
        Self {
            key: StoredKey::Inline { len: 0, bytes: [0; KEY_INLINE_LEN_MAX] },
            value: CachedValue { value: Bytes::new(), version: 0, expiry_ms: 0 },
            hash: 0,
            newer: next_free,
            older: NIL,
            freq: 0,
            place: Place::Free,
        }
    }

    fn charge(&self) -> u64 {
        HotCache::entry_charge(self.key.as_slice().len(), self.value.value.len())
    }
}

/// Ends of one FIFO queue, linked through the entries.
#[derive(Clone, Copy, Debug)]
struct Fifo {
    newest: u32,
    oldest: u32,
    len: usize,
}

impl Fifo {
    const EMPTY: Self = Self { newest: NIL, oldest: NIL, len: 0 };
}

/// The hot-value cache of one shard; see the module docs for the policy.
pub struct HotCache {
    budget_bytes: u64,
    /// Sum of the resident entries' charges.
    bytes: u64,
    /// Sum of the charges of the entries in the small queue, to decide which
    /// queue gives up an entry.
    small_bytes: u64,
    /// Slab of entries; slots freed by eviction are reused through `free`.
    entries: Vec<Entry>,
    /// Head of the free list of slab slots, linked through `Entry::newer`.
    free: u32,
    table: Table,
    small: Fifo,
    main: Fifo,
    ghost: Ghost,
    /// `ENTRIES_MAX`, lowered by tests to check the limit.
    entries_max: usize,
    hits: u64,
    misses: u64,
    inserts: u64,
    evictions: u64,
}

impl fmt::Debug for HotCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotCache")
            .field("stats", &self.stats())
            .field("small_bytes", &self.small_bytes)
            .field("ghosts", &self.ghost.len())
            .finish_non_exhaustive()
    }
}

impl HotCache {
    /// A cache that charges at most `budget_bytes`; 0 turns caching off.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            budget_bytes,
            bytes: 0,
            small_bytes: 0,
            entries: Vec::new(),
            free: NIL,
            table: Table::with_capacity_for(0),
            small: Fifo::EMPTY,
            main: Fifo::EMPTY,
            ghost: Ghost::new(),
            entries_max: ENTRIES_MAX,
            hits: 0,
            misses: 0,
            inserts: 0,
            evictions: 0,
        }
    }

    /// What an entry with this key and value length is charged.
    pub fn entry_charge(key_len: usize, value_len: usize) -> u64 {
        key_len as u64 + value_len as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// The largest charge `insert` admits under the current budget.
    pub fn entry_charge_max(&self) -> u64 {
        self.budget_bytes / ENTRY_CHARGE_MAX_DIVISOR
    }

    /// Whether `insert` would admit a value of this size under the current
    /// budget; lets the engine skip building a value it would not cache.
    pub fn admits(&self, key_len: usize, value_len: usize) -> bool {
        Self::entry_charge(key_len, value_len) <= self.entry_charge_max()
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Entries resident now.
    pub fn len(&self) -> usize {
        self.small.len + self.main.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn find(&self, key: &[u8]) -> Option<(u64, usize, u32)> {
        if self.is_empty() {
            return None;
        }
        let hash = hash_key(key);
        let entries = &self.entries;
        self.table.find(hash, |e| entries[e as usize].key.as_slice() == key).map(|(pos, entry)| (hash, pos, entry))
    }

    /// The cached value for `key`, counting the read toward keeping it.
    #[inline]
    pub fn get(&mut self, key: &[u8]) -> Option<CachedValue> {
        self.get_ref(key).cloned()
    }

    /// Like [`Self::get`], but lends the value instead of cloning it: a hit
    /// then costs no reference-count update, for a caller that only copies
    /// the bytes out or checks the version.
    #[inline]
    pub fn get_ref(&mut self, key: &[u8]) -> Option<&CachedValue> {
        match self.find(key) {
            Some((_, _, entry)) => {
                self.hits += 1;
                let entry = &mut self.entries[entry as usize];
                if entry.freq < FREQ_MAX {
                    entry.freq += 1;
                }
                Some(&entry.value)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// The cached value for `key`, without counting a read or a hit (for the
    /// engine's own checks, e.g. comparing versions before a write).
    pub fn peek(&self, key: &[u8]) -> Option<&CachedValue> {
        self.find(key).map(|(_, _, entry)| &self.entries[entry as usize].value)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// Caches `value` for `key`, replacing what was cached for it, and evicts
    /// to stay within the budget. A value whose charge is above
    /// [`Self::entry_charge_max`] is not admitted, and whatever was cached for
    /// the key is dropped, so a stale value can never be returned.
    ///
    /// A replaced entry keeps its queue and counts the write as an access, but
    /// moves to the new end of its queue.
    pub fn insert(&mut self, key: &[u8], value: CachedValue) {
        let charge = Self::entry_charge(key.len(), value.value.len());
        let replaced = self.find(key).map(|(hash, pos, entry)| {
            let old = &self.entries[entry as usize];
            let kept = (hash, old.place, (old.freq + 1).min(FREQ_MAX));
            self.drop_entry(pos, entry);
            kept
        });
        if charge > self.entry_charge_max() {
            self.ghost.trim(self.len());
            return;
        }
        let (hash, place, freq) = replaced.unwrap_or_else(|| {
            let hash = hash_key(key);
            // A ghost was evicted from the small queue unread, too early.
            let place = if self.ghost.take(hash) { Place::Main } else { Place::Small };
            (hash, place, 0)
        });
        while self.bytes + charge > self.budget_bytes || self.len() >= self.entries_max {
            if !self.evict_one() {
                break;
            }
        }
        let entry = self.alloc(Entry { key: StoredKey::new(key), value, hash, newer: NIL, older: NIL, freq, place });
        self.push_newest(entry);
        self.table.insert(hash, entry);
        self.bytes += charge;
        if place == Place::Small {
            self.small_bytes += charge;
            self.promote_from_small();
        }
        self.inserts += 1;
        // Main-queue evictions above shrank the cache without feeding the ghost.
        self.ghost.trim(self.len());
    }

    /// Drops whatever is cached for `key` (deleted, overwritten elsewhere, or
    /// found expired by the engine).
    pub fn remove(&mut self, key: &[u8]) {
        if let Some((_, pos, entry)) = self.find(key) {
            self.drop_entry(pos, entry);
            self.ghost.trim(self.len());
        }
    }

    /// Drops every entry and every ghost; the counters and budget stay.
    pub fn clear(&mut self) {
        let (hits, misses, inserts, evictions) = (self.hits, self.misses, self.inserts, self.evictions);
        *self =
            Self { entries_max: self.entries_max, hits, misses, inserts, evictions, ..Self::new(self.budget_bytes) };
    }

    /// Changes the budget; a smaller one evicts at once, and gives back the
    /// memory of the index and slab slots the cache no longer needs.
    pub fn set_budget(&mut self, budget_bytes: u64) {
        let shrinking = budget_bytes < self.budget_bytes;
        self.budget_bytes = budget_bytes;
        while self.bytes > self.budget_bytes {
            if !self.evict_one() {
                break;
            }
        }
        if shrinking {
            self.ghost.trim(self.len());
            self.ghost.shrink_to_fit();
            self.compact();
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            inserts: self.inserts,
            evictions: self.evictions,
            entries: self.len() as u64,
            bytes: self.bytes,
            budget_bytes: self.budget_bytes,
        }
    }

    fn fifo(&mut self, place: Place) -> &mut Fifo {
        match place {
            Place::Small => &mut self.small,
            Place::Main => &mut self.main,
            Place::Free => unreachable!("a free slab slot is in no queue"),
        }
    }

    /// Links `entry` at the new end of the queue its `place` names.
    fn push_newest(&mut self, entry: u32) {
        let place = self.entries[entry as usize].place;
        let fifo = *self.fifo(place);
        {
            let e = &mut self.entries[entry as usize];
            e.newer = NIL;
            e.older = fifo.newest;
        }
        if fifo.newest == NIL {
            self.fifo(place).oldest = entry;
        } else {
            self.entries[fifo.newest as usize].newer = entry;
        }
        let fifo = self.fifo(place);
        fifo.newest = entry;
        fifo.len += 1;
    }

    /// Unlinks `entry` from its queue; its `place` is left for the caller.
    fn unlink(&mut self, entry: u32) {
        let (place, newer, older) = {
            let e = &self.entries[entry as usize];
            (e.place, e.newer, e.older)
        };
        if newer == NIL {
            self.fifo(place).newest = older;
        } else {
            self.entries[newer as usize].older = older;
        }
        if older == NIL {
            self.fifo(place).oldest = newer;
        } else {
            self.entries[older as usize].newer = newer;
        }
        self.fifo(place).len -= 1;
    }

    fn alloc(&mut self, entry: Entry) -> u32 {
        if self.free == NIL {
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        } else {
            let slot = self.free;
            self.free = self.entries[slot as usize].newer;
            self.entries[slot as usize] = entry;
            slot
        }
    }

    /// Removes a resident entry (at index slot `pos`) from its queue, the index
    /// and the charge, and frees its slot, releasing its key and value.
    fn drop_entry(&mut self, pos: usize, entry: u32) {
        self.unlink(entry);
        self.table.remove_at(pos);
        let old = std::mem::replace(&mut self.entries[entry as usize], Entry::vacant(self.free));
        self.free = entry;
        let charge = old.charge();
        self.bytes -= charge;
        if old.place == Place::Small {
            self.small_bytes -= charge;
        }
    }

    /// Moves entries that were read from the old end of the small queue to the
    /// main queue while the small queue is over its share, stopping at the
    /// first unread one (which waits there for an eviction) or after
    /// `EVICT_SCAN_MAX`. This is the paper's fixed-size small queue for the
    /// entries that earned promotion, and it keeps them from piling up in the
    /// small queue while the cache fills, where one eviction would otherwise
    /// have to walk past all of them.
    fn promote_from_small(&mut self) {
        let share = self.budget_bytes / SMALL_QUEUE_DIVISOR;
        for _ in 0..EVICT_SCAN_MAX {
            let entry = self.small.oldest;
            if self.small_bytes <= share || entry == NIL || self.entries[entry as usize].freq < PROMOTE_FREQ_MIN {
                return;
            }
            self.promote(entry);
        }
    }

    /// Moves an entry from the small queue to the new end of the main queue;
    /// the reads that earned the move are spent, any beyond them carry over.
    fn promote(&mut self, entry: u32) {
        let charge = self.entries[entry as usize].charge();
        self.unlink(entry);
        self.small_bytes -= charge;
        let e = &mut self.entries[entry as usize];
        e.place = Place::Main;
        e.freq -= PROMOTE_FREQ_MIN;
        self.push_newest(entry);
    }

    /// Evicts one entry, following S3-FIFO; false if the cache is empty.
    fn evict_one(&mut self) -> bool {
        let small_over_share = self.small_bytes > self.budget_bytes / SMALL_QUEUE_DIVISOR;
        if self.small.len > 0 && (small_over_share || self.main.len == 0) && self.evict_small() {
            return true;
        }
        // Either the small queue is within its share or everything in it was
        // promoted: the main queue gives up an entry.
        self.evict_main()
    }

    /// Walks the small queue from its old end: entries read since they came in
    /// move to the main queue, the first unread one is evicted and its hash
    /// becomes a ghost. False if `EVICT_SCAN_MAX` entries were promoted or the
    /// queue emptied without an eviction; the main queue then gives one up.
    fn evict_small(&mut self) -> bool {
        for _ in 0..EVICT_SCAN_MAX {
            let entry = self.small.oldest;
            if entry == NIL {
                return false;
            }
            let e = &self.entries[entry as usize];
            if e.freq >= PROMOTE_FREQ_MIN {
                self.promote(entry);
            } else {
                let hash = e.hash;
                self.drop_entry(self.table.position_of(hash, entry), entry);
                self.evictions += 1;
                self.ghost.push(hash, self.len());
                return true;
            }
        }
        false
    }

    /// CLOCK over the main queue: an entry read since it was last looked at
    /// loses one count and goes round again; the first unread one is evicted,
    /// or the oldest once `EVICT_SCAN_MAX` were passed over. False if the
    /// queue is empty.
    fn evict_main(&mut self) -> bool {
        let mut passed_over = 0;
        while self.main.oldest != NIL {
            let entry = self.main.oldest;
            let e = &mut self.entries[entry as usize];
            if e.freq > 0 && passed_over < EVICT_SCAN_MAX {
                passed_over += 1;
                e.freq -= 1;
                self.unlink(entry);
                self.push_newest(entry);
            } else {
                let hash = e.hash;
                self.drop_entry(self.table.position_of(hash, entry), entry);
                self.evictions += 1;
                return true;
            }
        }
        false
    }

    /// Rebuilds the slab and the index at the size the resident entries need,
    /// keeping queue order and counters, if they are more than twice as big.
    fn compact(&mut self) {
        let live = self.len();
        let slab_oversized = self.entries.len() > 2 * live;
        let table_oversized = self.table.slots_len() > Table::with_capacity_for(live).slots_len() * 2;
        if !slab_oversized && !table_oversized {
            return;
        }
        let mut moved = Vec::with_capacity(live);
        for place in [Place::Small, Place::Main] {
            let mut entry = self.fifo(place).oldest;
            while entry != NIL {
                let next = self.entries[entry as usize].newer;
                moved.push(std::mem::replace(&mut self.entries[entry as usize], Entry::vacant(NIL)));
                entry = next;
            }
        }
        self.entries = Vec::with_capacity(live);
        self.free = NIL;
        self.table = Table::with_capacity_for(live);
        self.small = Fifo::EMPTY;
        self.main = Fifo::EMPTY;
        for e in moved {
            let hash = e.hash;
            let entry = self.alloc(e);
            self.push_newest(entry);
            self.table.insert(hash, entry);
        }
    }
}
