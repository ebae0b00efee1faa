//! Slot-level operations on one partition's table: Robin Hood linear probing
//! over the partition's chunks, read and written in place in the mapped file.
//!
//! Invariants (for a table that was built by these functions):
//! - an entry's home slot is `(fp << depth) * slot_count >> 64`: monotonic in
//!   the fingerprint, so the table is ordered by fingerprint;
//! - along a probe run, entries are ordered by (home, fingerprint): an entry
//!   is never displaced further than one whose home comes after its own, and
//!   equal fingerprints sit next to each other. A lookup therefore stops at
//!   the first empty slot, or at the first entry that sorts after the key;
//! - at least one slot is empty (the load stays well below 1).
//!
//! Every loop is bounded by the slot count, so a table that breaks these
//! invariants (an index file that was not shut down cleanly) gives wrong
//! answers at worst, never a hang or a panic.

use super::layout::{
    chunk_offset, get_u64, put_u64, Descriptor, PAGE_BYTES, SLOTS_PER_CHUNK, SLOTS_PER_PAGE, SLOT_BYTES,
    SLOT_FP_OFFSET, SLOT_LOC_OFFSET, SLOT_VERSION_OFFSET,
};

/// One slot's raw content. `fp == 0` is an empty slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Fingerprint.
    pub fp: u64,
    /// Record version.
    pub version: u64,
    /// Packed location and tombstone bit.
    pub loc: u64,
}

/// The slot a fingerprint would occupy in an uncrowded table. Multiplying
/// instead of masking keeps the order of fingerprints, which both the early
/// stop of lookups and in-order rebuilds rely on.
#[inline]
pub fn home(fp: u64, part: &Descriptor, slots: u32) -> u32 {
    ((u128::from(fp << part.depth) * u128::from(slots)) >> 64) as u32
}

/// How far `pos` is from `home`, going forward with wrap-around.
#[inline]
pub fn distance(pos: u32, home: u32, slots: u32) -> u32 {
    if pos >= home {
        pos - home
    } else {
        pos + slots - home
    }
}

/// The slot after `pos`, wrapping at the end of the table.
#[inline]
pub fn next(pos: u32, slots: u32) -> u32 {
    if pos + 1 == slots {
        0
    } else {
        pos + 1
    }
}

/// Byte offset of slot `pos` of `part` in the file.
#[inline]
pub fn slot_offset(part: &Descriptor, pos: u32) -> usize {
    let pos = pos as usize;
    let chunk = part.chunks[pos / SLOTS_PER_CHUNK];
    let within = pos % SLOTS_PER_CHUNK;
    chunk_offset(chunk) + (within / SLOTS_PER_PAGE) * PAGE_BYTES + (within % SLOTS_PER_PAGE) * SLOT_BYTES
}

/// The fingerprint stored at byte offset `off`.
#[inline]
pub fn read_fp(map: &[u8], off: usize) -> u64 {
    get_u64(map, off + SLOT_FP_OFFSET)
}

/// The slot at byte offset `off`.
#[inline]
pub fn read_item(map: &[u8], off: usize) -> Item {
    Item {
        fp: get_u64(map, off + SLOT_FP_OFFSET),
        version: get_u64(map, off + SLOT_VERSION_OFFSET),
        loc: get_u64(map, off + SLOT_LOC_OFFSET),
    }
}

/// Writes `item` into the slot at byte offset `off`.
#[inline]
pub fn write_item(map: &mut [u8], off: usize, item: &Item) {
    put_u64(map, off + SLOT_FP_OFFSET, item.fp);
    put_u64(map, off + SLOT_VERSION_OFFSET, item.version);
    put_u64(map, off + SLOT_LOC_OFFSET, item.loc);
}

/// Inserts `item` where Robin Hood order puts it: after every entry that
/// sorts before it, shifting the rest of the run one slot on. (Equivalent to
/// the textbook swap-as-you-go, but homes are computed only up to the
/// insertion point.) If no empty slot turns up within `slots` steps (only in
/// a damaged table) nothing is written and `item` is handed back.
pub fn insert(map: &mut [u8], part: &Descriptor, item: Item) -> Result<(), Item> {
    let slots = part.slot_count();
    if slots == 0 {
        return Err(item);
    }
    let mut pos = home(item.fp, part, slots);
    let mut dist = 0u32;
    let mut steps = 0u32;
    loop {
        if steps == slots {
            return Err(item);
        }
        let fp = read_fp(map, slot_offset(part, pos));
        if fp == 0 {
            write_item(map, slot_offset(part, pos), &item);
            return Ok(());
        }
        let resident_dist = distance(pos, home(fp, part, slots), slots);
        if resident_dist < dist || (resident_dist == dist && fp > item.fp) {
            break;
        }
        pos = next(pos, slots);
        dist += 1;
        steps += 1;
    }
    // `pos` is the insertion point; the run continues to the next empty slot.
    let mut empty = pos;
    loop {
        empty = next(empty, slots);
        steps += 1;
        if steps >= slots {
            return Err(item);
        }
        if read_fp(map, slot_offset(part, empty)) == 0 {
            break;
        }
    }
    let mut to = empty;
    while to != pos {
        let from = if to == 0 { slots - 1 } else { to - 1 };
        let from_off = slot_offset(part, from);
        map.copy_within(from_off..from_off + SLOT_BYTES, slot_offset(part, to));
        to = from;
    }
    write_item(map, slot_offset(part, pos), &item);
    Ok(())
}

/// Fills the empty table of `part` with `items` (sorted by fingerprint,
/// fewer than its slots) in one pass: in fingerprint order each entry goes to
/// its home or right after the previous one, which is exactly the layout
/// repeated inserts would produce, in linear time even for long runs of equal
/// fingerprints. Entries that would run past the end wrap through
/// [`insert`]. Returns the entries that found no slot (none, for a table
/// sized by the caller's load rules).
pub fn build(map: &mut [u8], part: &Descriptor, items: &[Item]) -> Vec<Item> {
    let slots = part.slot_count();
    let mut next_free = 0u32;
    let mut placed = 0;
    for item in items {
        let pos = home(item.fp, part, slots).max(next_free);
        if pos >= slots {
            break;
        }
        write_item(map, slot_offset(part, pos), item);
        next_free = pos + 1;
        placed += 1;
    }
    items[placed..].iter().filter_map(|item| insert(map, part, *item).err()).collect()
}

/// Empties slot `pos`, shifting the following displaced entries back by one
/// so lookups still find them (backward-shift deletion keeps the order).
pub fn remove_at(map: &mut [u8], part: &Descriptor, pos: u32) {
    let slots = part.slot_count();
    if pos >= slots {
        return;
    }
    let mut hole = pos;
    for _ in 1..slots {
        let after = next(hole, slots);
        let after_off = slot_offset(part, after);
        let fp = read_fp(map, after_off);
        if fp == 0 || home(fp, part, slots) == after {
            break;
        }
        let hole_off = slot_offset(part, hole);
        map.copy_within(after_off..after_off + SLOT_BYTES, hole_off);
        hole = after;
    }
    let off = slot_offset(part, hole);
    map[off..off + SLOT_BYTES].fill(0);
}

/// Appends every stored entry of `part` to `out`, in slot order.
pub fn collect(map: &[u8], part: &Descriptor, out: &mut Vec<Item>) {
    for pos in 0..part.slot_count() {
        let item = read_item(map, slot_offset(part, pos));
        if item.fp != 0 {
            out.push(item);
        }
    }
}

/// Zeroes every chunk of `part`.
pub fn clear(map: &mut [u8], part: &Descriptor) {
    for &c in &part.chunks[..usize::from(part.chunk_count)] {
        let off = chunk_offset(c);
        map[off..off + super::layout::CHUNK_BYTES].fill(0);
    }
}

/// A lookup in progress: the slots holding one fingerprint, from its home on.
pub struct Probe<'a> {
    map: &'a [u8],
    part: &'a Descriptor,
    fp: u64,
    slots: u32,
    /// The slot to read next, and its byte offset.
    pos: u32,
    off: usize,
    /// Slots left in `pos`'s page, so the offset is recomputed once a page.
    left_in_page: u32,
    /// Slots read so far: the key's own distance from home at `pos`.
    dist: u32,
    /// A match was found: equal fingerprints are adjacent, so the first
    /// different one ends the lookup.
    matched: bool,
}

impl<'a> Probe<'a> {
    /// Starts a lookup of `fp` (non-zero) in `part`.
    #[inline]
    pub fn new(map: &'a [u8], part: &'a Descriptor, fp: u64) -> Probe<'a> {
        let slots = part.slot_count();
        let pos = if slots == 0 { 0 } else { home(fp, part, slots) };
        let off = if slots == 0 { 0 } else { slot_offset(part, pos) };
        let left_in_page = SLOTS_PER_PAGE as u32 - pos % SLOTS_PER_PAGE as u32;
        Probe { map, part, fp, slots, pos, off, left_in_page, dist: 0, matched: false }
    }

    /// Moves to the next slot, wrapping at the end of the table.
    #[inline]
    fn advance(&mut self) {
        self.dist += 1;
        self.pos += 1;
        self.left_in_page -= 1;
        if self.pos == self.slots {
            self.pos = 0;
            self.off = slot_offset(self.part, 0);
            self.left_in_page = SLOTS_PER_PAGE as u32;
        } else if self.left_in_page == 0 {
            self.off = slot_offset(self.part, self.pos);
            self.left_in_page = SLOTS_PER_PAGE as u32;
        } else {
            self.off += SLOT_BYTES;
        }
    }

    /// The next slot holding `fp`, with its content.
    #[inline]
    pub fn next_match(&mut self) -> Option<(u32, Item)> {
        while self.dist < self.slots {
            let (pos, off) = (self.pos, self.off);
            let fp = read_fp(self.map, off);
            if fp == self.fp {
                self.matched = true;
                self.advance();
                return Some((pos, read_item(self.map, off)));
            }
            if fp == 0 || self.matched {
                break;
            }
            let d = distance(pos, home(fp, self.part, self.slots), self.slots);
            if d < self.dist || (d == self.dist && fp > self.fp) {
                break;
            }
            self.advance();
        }
        self.dist = self.slots;
        None
    }

    /// Whether one of the matches is slot `pos` (for [`Index::verify`](super::Index::verify)).
    pub fn any_match_at(mut self, pos: u32) -> bool {
        while let Some((at, _)) = self.next_match() {
            if at == pos {
                return true;
            }
        }
        false
    }
}
