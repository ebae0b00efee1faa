//! An in-memory [`Storage`] that remembers what is durable apart from what was
//! written, so a test can "pull the plug" and get back any state a power loss
//! could leave on disk.
//!
//! Invariants this backend keeps:
//! - every file (an inode here) holds a *durable* image, a *written* image and
//!   the operations (writes, length changes) issued since its last `sync`;
//!   applying those operations to the durable image gives the written image;
//! - reads and `len` see the written image, as the page cache would;
//! - `sync` makes the written image durable; nothing else does;
//! - creations and removals of names are durable only after `sync_dir`;
//! - writes are refused with `InvalidInput`, and not performed, unless their
//!   position and size are multiples of the alignment, as O_DIRECT would;
//! - a crash is a pure function of the state and the seed: names and inodes
//!   are visited in sorted order and the only randomness is a seeded PRNG.
//!
//! What [`CrashStorage::crash`] may leave, per unsynced operation and
//! independently of the others (so later writes can survive earlier ones that
//! were lost, i.e. writes reach the disk out of order):
//! - a write: kept whole, dropped, or torn (a strict prefix of it kept, cut at
//!   any byte); where kept parts of two writes overlap, the later one wins, as
//!   a completed write cannot be overtaken by an earlier completed one;
//! - a length change: kept or dropped;
//! - a creation or removal of a name: kept or dropped.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::rc::Rc;

use super::dma::check_file_name;
use super::{Storage, StorageFile};

/// The alignment [`CrashStorage::new`] enforces: the common O_DIRECT block.
pub const CRASH_ALIGNMENT_DEFAULT: u64 = 4096;

/// An in-memory directory whose clones share one state; see the module
/// documentation.
#[derive(Clone)]
pub struct CrashStorage {
    state: Rc<RefCell<DirState>>,
}

/// An inode: what a file handle points at. Removing the name leaves open
/// handles working, as on a POSIX file system.
type Inode = Rc<RefCell<FileState>>;
/// Identifies an inode for the lifetime of one storage, in creation order, so
/// crash choices visit them in a fixed order.
type InodeId = u64;

struct DirState {
    /// Write positions and sizes must be multiples of this.
    alignment: u64,
    /// The names as the running process sees them.
    names: BTreeMap<String, InodeId>,
    /// The names as of the last `sync_dir`.
    durable_names: BTreeMap<String, InodeId>,
    /// Creations and removals since the last `sync_dir`, in issue order.
    pending_dir_ops: Vec<DirOp>,
    /// Every inode still named, durably named or named by a pending operation.
    inodes: BTreeMap<InodeId, Inode>,
    /// The id the next created inode gets.
    next_inode: InodeId,
}

#[derive(Clone, Debug)]
enum DirOp {
    Create { name: String, inode: InodeId },
    Remove { name: String, inode: InodeId },
}

#[derive(Clone, Default)]
struct FileState {
    /// What survives a power loss for sure.
    durable: Vec<u8>,
    /// What the running process reads back.
    written: Vec<u8>,
    /// What turns `durable` into `written`, in issue order.
    pending: Vec<FileOp>,
}

#[derive(Clone)]
enum FileOp {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

impl FileOp {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            FileOp::Write { pos, data } => write_into(image, *pos, data),
            FileOp::SetLen(len) => image.resize(to_index(*len), 0),
        }
    }
}

/// Writes `data` at `pos`, zero-filling any gap past the current end.
fn write_into(image: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let start = to_index(pos);
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

/// An in-memory offset; files that do not fit in memory cannot exist here.
fn to_index(pos: u64) -> usize {
    usize::try_from(pos).expect("in-memory file offset fits in usize")
}

/// splitmix64: a tiny, well-mixed, deterministic generator. Crash choices need
/// reproducibility from a seed, not cryptographic quality.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`); the modulo bias is irrelevant for
    /// the small bounds used here.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// What a crash does to one unsynced write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteFate {
    Kept,
    Dropped,
    /// Only the first `n` bytes reached the disk, `0 < n < len`.
    Torn(usize),
}

fn write_fate(rng: &mut SplitMix64, len: usize) -> WriteFate {
    match rng.below(3) {
        0 => WriteFate::Kept,
        1 => WriteFate::Dropped,
        // A write of one byte cannot tear; it is kept or lost.
        _ if len < 2 => WriteFate::Dropped,
        _ => WriteFate::Torn(1 + to_index(rng.below(len as u64 - 1))),
    }
}

impl FileState {
    /// What a power loss could leave of this file, drawn from `rng`.
    fn crashed_image(&self, rng: &mut SplitMix64) -> Vec<u8> {
        let mut image = self.durable.clone();
        for op in &self.pending {
            match op {
                FileOp::Write { pos, data } => match write_fate(rng, data.len()) {
                    WriteFate::Kept => write_into(&mut image, *pos, data),
                    WriteFate::Dropped => {}
                    WriteFate::Torn(n) => write_into(&mut image, *pos, &data[..n]),
                },
                FileOp::SetLen(_) => {
                    if rng.below(2) == 0 {
                        op.apply(&mut image);
                    }
                }
            }
        }
        image
    }

    /// A file whose every byte is durable.
    fn settled(image: Vec<u8>) -> FileState {
        FileState { durable: image.clone(), written: image, pending: Vec::new() }
    }
}

impl Default for CrashStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl CrashStorage {
    /// An empty directory enforcing [`CRASH_ALIGNMENT_DEFAULT`].
    pub fn new() -> CrashStorage {
        Self::with_alignment(CRASH_ALIGNMENT_DEFAULT)
    }

    /// An empty directory enforcing `alignment` (a power of two, e.g. 512 to
    /// mimic a 512-byte-sector device).
    ///
    /// # Panics
    /// If `alignment` is not a power of two: a test set up wrongly.
    pub fn with_alignment(alignment: u64) -> CrashStorage {
        assert!(alignment.is_power_of_two(), "alignment {alignment} is not a power of two");
        CrashStorage {
            state: Rc::new(RefCell::new(DirState {
                alignment,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                pending_dir_ops: Vec::new(),
                inodes: BTreeMap::new(),
                next_inode: 0,
            })),
        }
    }

    /// The alignment writes must respect.
    pub fn alignment(&self) -> u64 {
        self.state.borrow().alignment
    }

    /// A new, independent storage holding one state a power loss at this
    /// instant could leave, chosen by `seed` (the same seed on the same state
    /// always gives the same result). Open files of `self` are unaffected and
    /// are not files of the result.
    pub fn crash(&self, seed: u64) -> CrashStorage {
        let state = self.state.borrow();
        let mut rng = SplitMix64(seed);
        let mut names = state.durable_names.clone();
        for op in &state.pending_dir_ops {
            if rng.below(2) == 1 {
                continue; // this creation or removal never reached the disk
            }
            match op {
                DirOp::Create { name, inode } => {
                    names.insert(name.clone(), *inode);
                }
                DirOp::Remove { name, inode } => {
                    if names.get(name) == Some(inode) {
                        names.remove(name);
                    }
                }
            }
        }
        // Each surviving inode once, in id order, whatever its name.
        let mut images = BTreeMap::new();
        for id in names.values() {
            images.entry(*id).or_insert_with(|| {
                let file = state.inodes[id].borrow();
                FileState::settled(file.crashed_image(&mut rng))
            });
        }
        Self::rebuilt(state.alignment, names, images)
    }

    /// A new, independent storage holding what a process kill leaves: every
    /// name and every written byte, synced or not (the kernel still has them).
    pub fn crash_keep_all(&self) -> CrashStorage {
        let state = self.state.borrow();
        let images = state
            .names
            .values()
            .map(|id| (*id, FileState::settled(state.inodes[id].borrow().written.clone())))
            .collect();
        Self::rebuilt(state.alignment, state.names.clone(), images)
    }

    /// A storage whose every name and byte is durable.
    fn rebuilt(alignment: u64, names: BTreeMap<String, InodeId>, images: BTreeMap<InodeId, FileState>) -> CrashStorage {
        let next_inode = images.keys().next_back().map_or(0, |id| id + 1);
        let inodes = images.into_iter().map(|(id, file)| (id, Rc::new(RefCell::new(file)))).collect();
        CrashStorage {
            state: Rc::new(RefCell::new(DirState {
                alignment,
                durable_names: names.clone(),
                names,
                pending_dir_ops: Vec::new(),
                inodes,
                next_inode,
            })),
        }
    }

    /// The bytes held by the files the directory currently names, as written
    /// (what a disk-usage budget would see).
    pub fn total_bytes(&self) -> u64 {
        let state = self.state.borrow();
        state.names.values().map(|id| state.inodes[id].borrow().written.len() as u64).sum()
    }

    /// Whether everything written, created and removed is durable, i.e. a
    /// crash now can only leave the current state.
    pub fn is_settled(&self) -> bool {
        let state = self.state.borrow();
        state.pending_dir_ops.is_empty() && state.inodes.values().all(|inode| inode.borrow().pending.is_empty())
    }
}

impl DirState {
    /// Forgets inodes that no name, durable name or pending operation refers
    /// to: no crash can bring them back. Open handles keep their own `Rc`.
    fn collect_garbage(&mut self) {
        let DirState { names, durable_names, pending_dir_ops, inodes, .. } = self;
        let referenced: BTreeSet<InodeId> = names
            .values()
            .chain(durable_names.values())
            .chain(pending_dir_ops.iter().map(|op| match op {
                DirOp::Create { inode, .. } | DirOp::Remove { inode, .. } => inode,
            }))
            .copied()
            .collect();
        inodes.retain(|id, _| referenced.contains(id));
    }
}

impl fmt::Debug for CrashStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.borrow();
        let files: BTreeMap<&str, (usize, usize, usize)> = state
            .names
            .iter()
            .map(|(name, id)| {
                let file = state.inodes[id].borrow();
                (name.as_str(), (file.written.len(), file.durable.len(), file.pending.len()))
            })
            .collect();
        f.debug_struct("CrashStorage")
            .field("alignment", &state.alignment)
            .field("files (written, durable, pending ops)", &files)
            .field("pending_dir_ops", &state.pending_dir_ops)
            .finish()
    }
}

impl Storage for CrashStorage {
    type File = CrashFile;
    type Buf = Vec<u8>;

    async fn open(&self, name: &str, create: bool) -> io::Result<CrashFile> {
        check_file_name(name)?;
        let mut state = self.state.borrow_mut();
        let alignment = state.alignment;
        if let Some(id) = state.names.get(name) {
            let inode = Rc::clone(&state.inodes[id]);
            return Ok(CrashFile { inode, alignment });
        }
        if !create {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no such file: {name:?}")));
        }
        let id = state.next_inode;
        state.next_inode += 1;
        let inode = Inode::default();
        state.inodes.insert(id, Rc::clone(&inode));
        state.names.insert(name.to_owned(), id);
        state.pending_dir_ops.push(DirOp::Create { name: name.to_owned(), inode: id });
        Ok(CrashFile { inode, alignment })
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        check_file_name(name)?;
        let mut state = self.state.borrow_mut();
        let Some(id) = state.names.remove(name) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no such file: {name:?}")));
        };
        state.pending_dir_ops.push(DirOp::Remove { name: name.to_owned(), inode: id });
        Ok(())
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.borrow().names.keys().cloned().collect())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.durable_names = state.names.clone();
        state.pending_dir_ops.clear();
        state.collect_garbage();
        Ok(())
    }

    fn alloc_buf(&self, len: usize) -> Vec<u8> {
        vec![0; len]
    }
}

/// An open file of a [`CrashStorage`]: a handle on its inode.
pub struct CrashFile {
    inode: Inode,
    alignment: u64,
}

impl fmt::Debug for CrashFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.inode.borrow();
        f.debug_struct("CrashFile")
            .field("written_len", &file.written.len())
            .field("durable_len", &file.durable.len())
            .field("pending_ops", &file.pending.len())
            .finish()
    }
}

impl StorageFile for CrashFile {
    type Buf = Vec<u8>;
    type ReadBuf = Vec<u8>;

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.inode.borrow();
        let size = file.written.len() as u64;
        if pos >= size {
            return Ok(Vec::new());
        }
        let start = to_index(pos);
        let end = start + len.min(file.written.len() - start);
        Ok(file.written[start..end].to_vec())
    }

    async fn write_at(&self, pos: u64, buf: Vec<u8>) -> io::Result<()> {
        let align = self.alignment;
        if !pos.is_multiple_of(align) || !(buf.len() as u64).is_multiple_of(align) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unaligned O_DIRECT write: pos {pos}, len {}, alignment {align}", buf.len()),
            ));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut file = self.inode.borrow_mut();
        let op = FileOp::Write { pos, data: buf };
        op.apply(&mut file.written);
        file.pending.push(op);
        Ok(())
    }

    async fn sync(&self) -> io::Result<()> {
        let mut file = self.inode.borrow_mut();
        // Replaying the pending operations costs what was written since the
        // last sync; copying `written` would cost the whole file every time.
        let pending = std::mem::take(&mut file.pending);
        for op in &pending {
            op.apply(&mut file.durable);
        }
        debug_assert!(file.durable == file.written, "durable + pending != written");
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(self.inode.borrow().written.len() as u64)
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        let mut file = self.inode.borrow_mut();
        let op = FileOp::SetLen(len);
        op.apply(&mut file.written);
        file.pending.push(op);
        Ok(())
    }

    fn alignment(&self) -> u64 {
        self.alignment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    const SEEDS: u64 = 200;
    const BLOCK: usize = CRASH_ALIGNMENT_DEFAULT as usize;

    fn block(fill: u8) -> Vec<u8> {
        vec![fill; BLOCK]
    }

    async fn contents(s: &CrashStorage, name: &str) -> Option<Vec<u8>> {
        let f = s.open(name, false).await.ok()?;
        let len = f.len().await.unwrap();
        Some(f.read_at(0, len as usize).await.unwrap())
    }

    #[test]
    fn synced_data_survives_every_crash() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            f.write_at(0, block(1)).await.unwrap();
            f.write_at(BLOCK as u64, block(2)).await.unwrap();
            f.sync().await.unwrap();
            s.sync_dir().await.unwrap();
            // Unsynced noise after the synced prefix.
            f.write_at(2 * BLOCK as u64, block(3)).await.unwrap();
            f.write_at(0, block(9)).await.unwrap();
            f.set_len(BLOCK as u64).await.unwrap();
            for seed in 0..SEEDS {
                let crashed = s.crash(seed);
                let got = contents(&crashed, "log").await.expect("synced name survives");
                let synced_or_overwritten =
                    |at: usize, fill: u8| got[at..at + BLOCK].iter().all(|&b| b == fill || b == 9);
                // Block 0 may hold the rewrite (or a prefix of it); block 1
                // is only endangered by the unsynced truncation.
                assert!(got.len() >= BLOCK, "seed {seed}");
                assert!(synced_or_overwritten(0, 1), "seed {seed}");
                if got.len() >= 2 * BLOCK {
                    assert!(got[BLOCK..2 * BLOCK].iter().all(|&b| b == 2), "seed {seed}");
                }
            }
        });
    }

    #[test]
    fn synced_state_is_exactly_what_every_crash_leaves() {
        block_on(async {
            let s = CrashStorage::with_alignment(512);
            let a = s.open("a", true).await.unwrap();
            let b = s.open("b", true).await.unwrap();
            a.write_at(0, vec![7; 1024]).await.unwrap();
            b.write_at(512, vec![8; 512]).await.unwrap();
            b.set_len(2048).await.unwrap();
            a.sync().await.unwrap();
            b.sync().await.unwrap();
            s.sync_dir().await.unwrap();
            assert!(s.is_settled());
            for seed in 0..SEEDS {
                let crashed = s.crash(seed);
                assert_eq!(contents(&crashed, "a").await.unwrap(), vec![7; 1024]);
                let got_b = contents(&crashed, "b").await.unwrap();
                assert_eq!(got_b.len(), 2048);
                assert_eq!(&got_b[512..1024], &[8; 512]);
                assert!(got_b[..512].iter().chain(&got_b[1024..]).all(|&x| x == 0));
                assert_eq!(crashed.total_bytes(), 1024 + 2048);
            }
        });
    }

    #[test]
    fn unsynced_writes_are_kept_dropped_or_torn_over_seeds() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            f.sync().await.unwrap();
            s.sync_dir().await.unwrap();
            f.write_at(0, block(0xEE)).await.unwrap();
            let (mut kept, mut dropped, mut torn) = (0, 0, 0);
            for seed in 0..SEEDS {
                let got = contents(&s.crash(seed), "log").await.unwrap();
                match got.len() {
                    0 => dropped += 1,
                    BLOCK => kept += 1,
                    n => {
                        assert!(n < BLOCK, "seed {seed}: {n}");
                        torn += 1;
                    }
                }
                assert!(got.iter().all(|&b| b == 0xEE), "a prefix of the write, seed {seed}");
            }
            assert!(kept > 0 && dropped > 0 && torn > 0, "{kept} {dropped} {torn}");
        });
    }

    #[test]
    fn later_writes_can_survive_earlier_lost_ones() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            s.sync_dir().await.unwrap();
            f.write_at(0, block(1)).await.unwrap();
            f.write_at(BLOCK as u64, block(2)).await.unwrap();
            let mut hole_then_data = false;
            for seed in 0..SEEDS {
                let got = contents(&s.crash(seed), "log").await.unwrap();
                if got.len() == 2 * BLOCK && got[0] == 0 && got[BLOCK] == 2 {
                    hole_then_data = true;
                }
            }
            assert!(hole_then_data, "the second write outlived the first for some seed");
        });
    }

    #[test]
    fn overlapping_kept_writes_resolve_in_issue_order() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            s.sync_dir().await.unwrap();
            f.write_at(0, block(1)).await.unwrap();
            f.write_at(0, block(2)).await.unwrap();
            for seed in 0..SEEDS {
                let got = contents(&s.crash(seed), "log").await.unwrap();
                // Byte by byte: once the newer write's prefix ends, only the
                // older write (or nothing) can follow.
                let newer = got.iter().take_while(|&&b| b == 2).count();
                assert!(got[newer..].iter().all(|&b| b == 1), "seed {seed}: {got:?}");
            }
        });
    }

    #[test]
    fn crash_is_deterministic_per_seed() {
        block_on(async {
            let s = CrashStorage::new();
            for name in ["a", "b", "c"] {
                let f = s.open(name, true).await.unwrap();
                f.write_at(0, block(name.as_bytes()[0])).await.unwrap();
                f.write_at(BLOCK as u64, block(5)).await.unwrap();
            }
            for seed in 0..20 {
                let (x, y) = (s.crash(seed), s.crash(seed));
                assert_eq!(x.list().await.unwrap(), y.list().await.unwrap());
                for name in x.list().await.unwrap() {
                    assert_eq!(contents(&x, &name).await, contents(&y, &name).await);
                }
            }
        });
    }

    #[test]
    fn unsynced_creations_and_removals_may_be_kept_or_dropped() {
        block_on(async {
            let s = CrashStorage::new();
            s.open("old", true).await.unwrap();
            s.sync_dir().await.unwrap();
            s.remove("old").await.unwrap();
            s.open("new", true).await.unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for seed in 0..SEEDS {
                seen.insert(s.crash(seed).list().await.unwrap());
            }
            let every_subset: std::collections::BTreeSet<Vec<String>> = [&[][..], &["new"], &["new", "old"], &["old"]]
                .iter()
                .map(|names| names.iter().map(|n| n.to_string()).collect())
                .collect();
            assert_eq!(seen, every_subset);
            // After sync_dir, only the current names.
            s.sync_dir().await.unwrap();
            for seed in 0..SEEDS {
                assert_eq!(s.crash(seed).list().await.unwrap(), ["new"]);
            }
        });
    }

    #[test]
    fn unsynced_set_len_may_be_kept_or_dropped() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            f.write_at(0, block(4)).await.unwrap();
            f.write_at(BLOCK as u64, block(4)).await.unwrap();
            f.sync().await.unwrap();
            s.sync_dir().await.unwrap();
            f.set_len(100).await.unwrap();
            let mut lens = std::collections::BTreeSet::new();
            for seed in 0..SEEDS {
                lens.insert(contents(&s.crash(seed), "log").await.unwrap().len());
            }
            assert_eq!(lens.into_iter().collect::<Vec<_>>(), [100, 2 * BLOCK]);
        });
    }

    #[test]
    fn crash_keep_all_keeps_everything_written() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            f.write_at(0, block(6)).await.unwrap();
            f.write_at(3 * BLOCK as u64, block(7)).await.unwrap();
            f.set_len(3 * BLOCK as u64 + 10).await.unwrap();
            s.open("gone", true).await.unwrap();
            s.remove("gone").await.unwrap();
            let killed = s.crash_keep_all();
            assert!(killed.is_settled());
            assert_eq!(killed.list().await.unwrap(), ["log"]);
            let got = contents(&killed, "log").await.unwrap();
            assert_eq!(got.len(), 3 * BLOCK + 10);
            assert!(got[..BLOCK].iter().all(|&b| b == 6));
            assert!(got[BLOCK..3 * BLOCK].iter().all(|&b| b == 0));
            assert!(got[3 * BLOCK..].iter().all(|&b| b == 7));
            assert_eq!(killed.total_bytes(), 3 * BLOCK as u64 + 10);
            // And now it is all durable.
            for seed in 0..20 {
                assert_eq!(contents(&killed.crash(seed), "log").await.unwrap(), got);
            }
        });
    }

    #[test]
    fn crashed_storage_is_independent_of_the_original() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            f.write_at(0, block(1)).await.unwrap();
            f.sync().await.unwrap();
            s.sync_dir().await.unwrap();
            let crashed = s.crash(1);
            f.write_at(0, block(2)).await.unwrap();
            s.remove("log").await.unwrap();
            assert_eq!(contents(&crashed, "log").await.unwrap(), block(1));
            // A clone shares state; a crash does not.
            let clone = crashed.clone();
            clone.remove("log").await.unwrap();
            assert!(crashed.list().await.unwrap().is_empty());
        });
    }

    #[test]
    fn unaligned_writes_are_refused_and_not_performed() {
        block_on(async {
            let s = CrashStorage::with_alignment(512);
            let f = s.open("log", true).await.unwrap();
            for (pos, len) in [(1, 512), (0, 100), (256, 512), (512, 513)] {
                let err = f.write_at(pos, vec![1; len]).await.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{pos} {len}");
            }
            assert_eq!(f.len().await.unwrap(), 0);
            assert_eq!(f.alignment(), 512);
            f.write_at(512, vec![1; 512]).await.unwrap();
            assert_eq!(CrashStorage::new().alignment(), CRASH_ALIGNMENT_DEFAULT);
        });
    }

    #[test]
    fn reads_see_written_bytes_and_stop_at_the_end() {
        block_on(async {
            let s = CrashStorage::new();
            let f = s.open("log", true).await.unwrap();
            let mut data = s.alloc_buf(BLOCK);
            data[..5].copy_from_slice(b"hello");
            f.write_at(0, data).await.unwrap();
            assert_eq!(f.read_at(1, 4).await.unwrap(), b"ello");
            assert_eq!(f.read_at(BLOCK as u64 - 2, 10).await.unwrap().len(), 2);
            assert!(f.read_at(BLOCK as u64, 10).await.unwrap().is_empty());
            assert!(f.read_at(u64::MAX, 10).await.unwrap().is_empty());
        });
    }

    #[test]
    fn open_remove_list_errors() {
        block_on(async {
            let s = CrashStorage::new();
            assert_eq!(s.open("x", false).await.unwrap_err().kind(), io::ErrorKind::NotFound);
            assert_eq!(s.remove("x").await.unwrap_err().kind(), io::ErrorKind::NotFound);
            assert_eq!(s.open("a/b", true).await.unwrap_err().kind(), io::ErrorKind::InvalidInput);
            // A removed file stays usable through an open handle.
            let f = s.open("x", true).await.unwrap();
            s.remove("x").await.unwrap();
            f.write_at(0, block(1)).await.unwrap();
            assert_eq!(f.len().await.unwrap(), BLOCK as u64);
            assert!(s.list().await.unwrap().is_empty());
            assert_eq!(s.total_bytes(), 0);
        });
    }
}
