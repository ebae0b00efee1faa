//! The production [`Storage`]: a directory of glommio [`DmaFile`]s, every read
//! and write going through io_uring with O_DIRECT, bypassing the page cache.
//!
//! Invariants this backend keeps:
//! - a write is refused with `InvalidInput` (never a panic, never a partial
//!   write) unless its position and size are multiples of the file's O_DIRECT
//!   alignment; buffers come from glommio's DMA allocator, whose memory is
//!   always page-aligned;
//! - a read returns exactly the bytes that exist in the requested range: it
//!   never returns bytes past the end of the file (glommio's own unaligned
//!   `read_at` can, so it is not used);
//! - the io-poll probe marker ([`PROBE_FILE_NAME`]) is written, non-empty and
//!   fsynced, and opened before any other DMA file of the directory, and it is
//!   invisible to the engine ([`Storage::list`] skips it, `open` and `remove`
//!   refuse it).
//!
//! Why the marker: glommio decides once per executor thread and device whether
//! the device supports polled I/O by reading the first block of the first DMA
//! file opened there. Reading an empty file "succeeds" whatever the device
//! supports, glommio then sends every later read to the poll ring, and reads
//! fail with `EOPNOTSUPP` (os error 95) on devices without polling.

use std::fmt;
use std::io::{self, Write as _};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{Directory, DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::wake_guard::WakeGuard;
use super::{Storage, StorageFile};

/// The file glommio's io-poll probe reads; see the module documentation.
pub const PROBE_FILE_NAME: &str = ".io-probe";
/// The size of the probe marker: one block of the largest O_DIRECT alignment,
/// so the probe's one-block read finds real data on every device.
pub const PROBE_FILE_LEN: usize = 4096;
/// The byte the probe marker is filled with (anything but "empty" will do).
const PROBE_FILL_BYTE: u8 = 0xA5;

/// The RLIMIT_MEMLOCK below which glommio 0.9 refuses to start an executor
/// (`Reactor::new` checks it, for its three io_uring rings).
pub const MEMLOCK_MIN_BYTES: u64 = 512 << 10;
/// The io memory glommio registers with io_uring by default (10 MiB per
/// executor, the `LocalExecutorBuilder::io_memory` default). It is registered
/// once with each of its three rings, and a kernel charges pinned pages against
/// RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK; when they do not fit,
/// glommio logs a warning and falls back to unregistered buffers, which work
/// but cost a page-pinning per I/O.
pub const MEMLOCK_REGISTERED_BUFFERS_BYTES: u64 = 3 * (10 << 20);

/// How many times one write is resubmitted after the kernel wrote only part of
/// it (the retry then reports the real error, typically `ENOSPC`). Every round
/// makes progress, so this only bounds a misbehaving kernel.
const WRITE_ROUNDS_MAX: usize = 16;
/// How many reads one `read_at` issues at most when the kernel returns short
/// reads before the end of the file.
const READ_ROUNDS_MAX: usize = 16;

/// Why [`check_memlock`] refused the process's RLIMIT_MEMLOCK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemlockError {
    /// The soft limit is below what glommio needs to create its rings.
    #[error(
        "RLIMIT_MEMLOCK is {limit_bytes} bytes but glommio needs at least {needed_bytes} bytes \
         of lockable memory for its io_uring rings; raise it (`ulimit -l`, systemd \
         `LimitMEMLOCK=`, or docker `--ulimit memlock=...`)"
    )]
    TooLow {
        /// The soft limit in force.
        limit_bytes: u64,
        /// What glommio requires.
        needed_bytes: u64,
    },
    /// `getrlimit` itself failed.
    #[error("cannot read RLIMIT_MEMLOCK: {0}")]
    Query(#[source] io::Error),
}

/// Reads the soft RLIMIT_MEMLOCK and checks it is enough for glommio to start
/// (at least [`MEMLOCK_MIN_BYTES`]). Returns the limit in bytes
/// (`u64::MAX` when unlimited).
///
/// A limit between [`MEMLOCK_MIN_BYTES`] and
/// [`MEMLOCK_REGISTERED_BUFFERS_BYTES`] is accepted: glommio runs, with
/// unregistered I/O buffers when the process lacks CAP_IPC_LOCK.
pub fn check_memlock() -> Result<u64, MemlockError> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable `rlimit` for the duration of the
    // call, and RLIMIT_MEMLOCK is a valid resource id.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        return Err(MemlockError::Query(io::Error::last_os_error()));
    }
    let limit_bytes = if limit.rlim_cur == libc::RLIM_INFINITY { u64::MAX } else { limit.rlim_cur };
    memlock_verdict(limit_bytes)
}

/// The decision of [`check_memlock`], apart from the system call so it can be
/// tested at and beyond the limit.
fn memlock_verdict(limit_bytes: u64) -> Result<u64, MemlockError> {
    if limit_bytes < MEMLOCK_MIN_BYTES {
        Err(MemlockError::TooLow { limit_bytes, needed_bytes: MEMLOCK_MIN_BYTES })
    } else {
        Ok(limit_bytes)
    }
}

/// Checks that `name` is a plain file name inside the directory: not empty, no
/// `/` or NUL, not `.` or `..`. Every backend applies this rule so that the
/// test backends refuse what the real one would.
pub(crate) fn check_file_name(name: &str) -> io::Result<()> {
    let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
    if plain {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a plain file name: {name:?}")))
    }
}

/// `name`, if it is one the engine may use: a plain name that is not the probe
/// marker.
fn check_engine_name(name: &str) -> io::Result<()> {
    check_file_name(name)?;
    if name == PROBE_FILE_NAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{PROBE_FILE_NAME} is reserved for the io-poll probe"),
        ));
    }
    Ok(())
}

fn align_down(v: u64, align: u64) -> u64 {
    v - v % align
}

/// A directory of O_DIRECT files on one glommio executor.
pub struct DmaStorage {
    /// The directory every name is relative to.
    dir: PathBuf,
    /// Kept open so `sync_dir` is one fsync, not an open, fsync and close.
    dir_handle: Directory,
    /// The O_DIRECT alignment the probe marker reported; files on the same
    /// directory report the same, each file still answers for itself.
    alignment: u64,
    /// Keeps this executor thread nudged out of lost wake-ups while the
    /// storage is in use ([`super::wake_guard`]).
    _wake_guard: WakeGuard,
}

impl fmt::Debug for DmaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaStorage").field("dir", &self.dir).field("alignment", &self.alignment).finish_non_exhaustive()
    }
}

impl DmaStorage {
    /// Opens (creating it and its parents if missing) the directory at `path`.
    /// Must run inside a glommio executor; writes and opens the probe marker
    /// before any other DMA file (see the module documentation).
    pub async fn open_dir(path: &Path) -> io::Result<DmaStorage> {
        if !path.is_dir() {
            std::fs::create_dir_all(path)?;
            // Without this, a power loss could take the new directory, and
            // every file synced into it, away with it.
            sync_parent_dir(path)?;
        }
        write_probe_marker(&path.join(PROBE_FILE_NAME))?;
        // The first DMA open on this thread and device runs glommio's probe.
        let probe = DmaFile::open(path.join(PROBE_FILE_NAME)).await?;
        let alignment = probe.alignment();
        probe.close().await?;
        let dir_handle = Directory::open(path).await?;
        let _wake_guard = WakeGuard::for_this_thread()?;
        Ok(DmaStorage { dir: path.to_path_buf(), dir_handle, alignment, _wake_guard })
    }

    /// The directory this storage lives in.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The O_DIRECT alignment of the directory's device (512 or 4096).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
}

/// Fsyncs the directory holding `path`'s entry. Levels above that, which
/// `create_dir_all` may also have made, are the operator's to keep.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

/// Writes the probe marker with std I/O (the page cache is fine here), unless a
/// marker of the right size already exists: rewriting would truncate it, and a
/// probe racing the truncation would read an empty file.
fn write_probe_marker(path: &Path) -> io::Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_file() && meta.len() == PROBE_FILE_LEN as u64 {
            return Ok(());
        }
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(&[PROBE_FILL_BYTE; PROBE_FILE_LEN])?;
    file.sync_all()
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;
    type Buf = DmaBuf;

    async fn open(&self, name: &str, create: bool) -> io::Result<DmaStorageFile> {
        check_engine_name(name)?;
        let file = OpenOptions::new().read(true).write(true).create(create).dma_open(self.dir.join(name)).await?;
        Ok(DmaStorageFile { file })
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        check_engine_name(name)?;
        // glommio runs the unlink off the executor thread: freeing a large
        // segment's extents must not stall the shard.
        glommio::io::remove(self.dir.join(name)).await?;
        Ok(())
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        // A directory listing is a handful of getdents calls on a directory of
        // a few hundred segments: not worth a trip to the blocking pool.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            match entry.file_name().into_string() {
                Ok(name) if name == PROBE_FILE_NAME => {}
                Ok(name) => names.push(name),
                // Not a name the engine could have made: not the engine's.
                Err(name) => tracing::warn!(?name, dir = ?self.dir, "skipping non-UTF-8 file name"),
            }
        }
        Ok(names)
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.dir_handle.sync().await?;
        Ok(())
    }

    fn alloc_buf(&self, len: usize) -> DmaBuf {
        DmaBuf::zeroed(len)
    }
}

/// An aligned write buffer: glommio DMA memory, zeroed when allocated.
///
/// Must be allocated inside a glommio executor. A zero-length buffer holds no
/// memory (glommio cannot allocate one) and writes nothing.
#[derive(Debug)]
pub struct DmaBuf {
    /// `None` exactly when the buffer is empty.
    buf: Option<DmaBuffer>,
}

impl DmaBuf {
    /// A zeroed buffer of `len` bytes from the executor's DMA memory.
    ///
    /// # Panics
    /// Outside a glommio executor.
    pub fn zeroed(len: usize) -> DmaBuf {
        if len == 0 {
            return DmaBuf { buf: None };
        }
        let mut buf = glommio::allocate_dma_buffer(len);
        // DMA memory is recycled without clearing: a previous record's bytes
        // must never reach the disk as padding.
        buf.as_bytes_mut().fill(0);
        DmaBuf { buf: Some(buf) }
    }
}

impl Deref for DmaBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| b.as_bytes())
    }
}

impl DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut().map_or(&mut [], |b| b.as_bytes_mut())
    }
}

/// Bytes read from a [`DmaStorageFile`]: usually a slice of the DMA buffer the
/// kernel read into, a copy when the read took several rounds.
#[derive(Debug)]
pub struct DmaReadBuf {
    bytes: ReadBytes,
}

#[derive(Debug)]
enum ReadBytes {
    /// The common case: one read, no copy.
    Direct(ReadResult),
    /// The kernel returned a short read before the end of the file and the
    /// rounds were stitched together.
    Copied(Vec<u8>),
}

impl Deref for DmaReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.bytes {
            ReadBytes::Direct(r) => r,
            ReadBytes::Copied(v) => v,
        }
    }
}

/// One open O_DIRECT file. Dropping it closes the descriptor asynchronously.
#[derive(Debug)]
pub struct DmaStorageFile {
    file: DmaFile,
}

impl DmaStorageFile {
    fn check_aligned(&self, pos: u64, len: usize) -> io::Result<()> {
        let align = self.file.alignment();
        if !pos.is_multiple_of(align) || !(len as u64).is_multiple_of(align) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unaligned O_DIRECT write: pos {pos}, len {len}, alignment {align}"),
            ));
        }
        Ok(())
    }
}

impl StorageFile for DmaStorageFile {
    type Buf = DmaBuf;
    type ReadBuf = DmaReadBuf;

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<DmaReadBuf> {
        let empty = DmaReadBuf { bytes: ReadBytes::Direct(ReadResult::default()) };
        if len == 0 {
            return Ok(empty);
        }
        let align = self.file.alignment();
        let end = pos
            .checked_add(len as u64)
            .and_then(|end| end.checked_next_multiple_of(align))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("read past u64: {pos}+{len}")))?;
        let start = align_down(pos, align);
        let head = (pos - start) as usize;
        let want =
            usize::try_from(end - start).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "read too large"))?;

        let first = self.file.read_at_aligned(start, want).await?;
        // A read that stops inside a block stopped at the end of the file; one
        // that stops on a block boundary may be short, or at the end: only the
        // next read can tell.
        if first.len() == want || !(first.len() as u64).is_multiple_of(align) {
            let got = first.len().saturating_sub(head).min(len);
            if got == 0 {
                return Ok(empty);
            }
            let bytes = ReadResult::slice(&first, head, got)
                .ok_or_else(|| io::Error::other(format!("read result shorter than reported: {got} at {head}")))?;
            return Ok(DmaReadBuf { bytes: ReadBytes::Direct(bytes) });
        }

        let mut stitched = Vec::with_capacity(want);
        stitched.extend_from_slice(&first);
        drop(first);
        let mut rounds = 1;
        while stitched.len() < want && (stitched.len() as u64).is_multiple_of(align) {
            if rounds == READ_ROUNDS_MAX {
                return Err(io::Error::other(format!("read at {pos}: still short after {READ_ROUNDS_MAX} rounds")));
            }
            rounds += 1;
            let more = self.file.read_at_aligned(start + stitched.len() as u64, want - stitched.len()).await?;
            if more.is_empty() {
                break; // the end of the file, on a block boundary
            }
            stitched.extend_from_slice(&more);
        }
        let stop = stitched.len().min(head + len);
        let bytes = if stop > head { stitched[head..stop].to_vec() } else { Vec::new() };
        Ok(DmaReadBuf { bytes: ReadBytes::Copied(bytes) })
    }

    async fn write_at(&self, pos: u64, buf: DmaBuf) -> io::Result<()> {
        self.check_aligned(pos, buf.len())?;
        let Some(buf) = buf.buf else {
            return Ok(()); // nothing to write
        };
        let total = buf.len();
        // Shared so that what a short write left over can still be copied out.
        let buf = Rc::new(buf);
        let mut done = self.file.write_rc_at(Rc::clone(&buf), pos).await?;
        let mut rounds = 1;
        while done < total {
            if done == 0 || rounds == WRITE_ROUNDS_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("write at {pos}: {done} of {total} bytes written"),
                ));
            }
            // O_DIRECT writes whole blocks, so the rest is aligned too; if it
            // is not, the check refuses it rather than the kernel.
            self.check_aligned(pos + done as u64, total - done)?;
            rounds += 1;
            let mut rest = self.file.alloc_dma_buffer(total - done);
            rest.as_bytes_mut().copy_from_slice(&buf.as_bytes()[done..]);
            done += self.file.write_rc_at(Rc::new(rest), pos + done as u64).await?;
        }
        Ok(())
    }

    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await?;
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(self.file.file_size().await?)
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await?;
        Ok(())
    }

    fn alignment(&self) -> u64 {
        self.file.alignment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` on a fresh glommio executor thread with a fresh storage in a
    /// temporary directory.
    fn with_storage<F, Fut>(test: F)
    where
        F: FnOnce(DmaStorage) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let dir = tempfile::tempdir().unwrap();
                let storage = DmaStorage::open_dir(&dir.path().join("shard")).await.unwrap();
                test(storage).await;
                drop(dir);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn filled(storage: &DmaStorage, len: usize, seed: u8) -> DmaBuf {
        let mut buf = storage.alloc_buf(len);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8);
        }
        buf
    }

    #[test]
    fn write_read_round_trip_at_every_alignment_offset() {
        with_storage(|s| async move {
            let f = s.open("seg", true).await.unwrap();
            let align = f.alignment();
            assert!(align == 512 || align == 4096, "alignment {align}");
            let len = 4 * align as usize;
            let buf = filled(&s, len, 7);
            let expected = buf.to_vec();
            f.write_at(align, buf).await.unwrap();
            assert_eq!(f.len().await.unwrap(), align + len as u64);

            let whole = f.read_at(align, len).await.unwrap();
            assert_eq!(&whole[..], &expected[..]);
            // Unaligned reads of any position and size see the same bytes.
            for (pos, n) in [(align + 1, 10), (align + 511, 700), (2 * align - 3, 6), (align, 1)] {
                let got = f.read_at(pos, n).await.unwrap();
                let at = (pos - align) as usize;
                assert_eq!(&got[..], &expected[at..at + n], "pos {pos} len {n}");
            }
            // The hole before the write reads as zeros.
            let hole = f.read_at(0, align as usize).await.unwrap();
            assert!(hole.iter().all(|&b| b == 0));
        });
    }

    #[test]
    fn read_past_end_is_short_never_garbage() {
        with_storage(|s| async move {
            let f = s.open("seg", true).await.unwrap();
            let align = f.alignment();
            f.write_at(0, filled(&s, align as usize, 1)).await.unwrap();
            // Make the file end inside a block.
            f.set_len(align + 100).await.unwrap();

            let tail = f.read_at(align + 90, 50).await.unwrap();
            assert_eq!(tail.len(), 10, "only the bytes before the end exist");
            assert!(tail.iter().all(|&b| b == 0));

            let straddle = f.read_at(align - 2, 1000).await.unwrap();
            assert_eq!(straddle.len(), 102);

            let at_end = f.read_at(align + 100, 10).await.unwrap();
            assert!(at_end.is_empty());
            let beyond = f.read_at(50 * align, 10).await.unwrap();
            assert!(beyond.is_empty());
            // A file ending on a block boundary: the read stops there too.
            f.set_len(align).await.unwrap();
            let edge = f.read_at(align - 4, 64).await.unwrap();
            assert_eq!(edge.len(), 4);
            let empty = f.read_at(0, 0).await.unwrap();
            assert!(empty.is_empty());
        });
    }

    #[test]
    fn unaligned_writes_are_refused_not_performed() {
        with_storage(|s| async move {
            let f = s.open("seg", true).await.unwrap();
            let align = f.alignment();
            let err = f.write_at(1, filled(&s, align as usize, 1)).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let mut short = filled(&s, align as usize, 1);
            short.buf.as_mut().unwrap().trim_to_size(100);
            let err = f.write_at(0, short).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(f.len().await.unwrap(), 0, "nothing reached the file");
            // An empty buffer is aligned and writes nothing.
            f.write_at(0, s.alloc_buf(0)).await.unwrap();
            assert_eq!(f.len().await.unwrap(), 0);
        });
    }

    #[test]
    fn alloc_buf_is_zeroed_even_when_memory_is_reused() {
        with_storage(|s| async move {
            for round in 0..4u8 {
                let mut buf = s.alloc_buf(8192);
                assert!(buf.iter().all(|&b| b == 0), "round {round}");
                buf.fill(0xFF);
            }
            assert!(s.alloc_buf(0).is_empty());
        });
    }

    #[test]
    fn sync_len_set_len_and_reopen() {
        with_storage(|s| async move {
            let align = s.alignment();
            let f = s.open("seg", true).await.unwrap();
            f.write_at(0, filled(&s, 2 * align as usize, 3)).await.unwrap();
            f.sync().await.unwrap();
            assert_eq!(f.len().await.unwrap(), 2 * align);
            f.set_len(align).await.unwrap();
            assert_eq!(f.len().await.unwrap(), align);
            f.set_len(3 * align).await.unwrap();
            f.sync().await.unwrap();
            drop(f);

            let again = s.open("seg", false).await.unwrap();
            assert_eq!(again.len().await.unwrap(), 3 * align);
            let grown = again.read_at(align, 2 * align as usize).await.unwrap();
            assert!(grown.iter().all(|&b| b == 0), "growth is zero-filled");
            let kept = again.read_at(0, 4).await.unwrap();
            assert_eq!(&kept[..], &[3, 4, 5, 6]);
        });
    }

    #[test]
    fn list_remove_and_sync_dir() {
        with_storage(|s| async move {
            assert!(s.list().await.unwrap().is_empty(), "the probe marker is hidden");
            s.open("a", true).await.unwrap();
            s.open("b", true).await.unwrap();
            s.sync_dir().await.unwrap();
            let mut names = s.list().await.unwrap();
            names.sort();
            assert_eq!(names, ["a", "b"]);

            s.remove("a").await.unwrap();
            s.sync_dir().await.unwrap();
            assert_eq!(s.list().await.unwrap(), ["b"]);
            let err = s.remove("a").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            let err = s.open("a", false).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        });
    }

    #[test]
    fn bad_and_reserved_names_are_refused() {
        with_storage(|s| async move {
            for name in ["", ".", "..", "x/y", "nul\0", PROBE_FILE_NAME] {
                let err = s.open(name, true).await.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
                let err = s.remove(name).await.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
            }
        });
    }

    #[test]
    fn reopening_a_directory_keeps_its_files_and_marker() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let dir = tempfile::tempdir().unwrap();
                let s = DmaStorage::open_dir(dir.path()).await.unwrap();
                let f = s.open("seg", true).await.unwrap();
                let mut buf = s.alloc_buf(s.alignment() as usize);
                buf[..3].copy_from_slice(b"abc");
                f.write_at(0, buf).await.unwrap();
                f.sync().await.unwrap();
                drop((f, s));

                let s = DmaStorage::open_dir(dir.path()).await.unwrap();
                let marker = std::fs::metadata(dir.path().join(PROBE_FILE_NAME)).unwrap();
                assert_eq!(marker.len(), PROBE_FILE_LEN as u64);
                let f = s.open("seg", false).await.unwrap();
                assert_eq!(&f.read_at(0, 3).await.unwrap()[..], b"abc");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn memlock_limit_checked_at_and_below_glommios_floor() {
        assert_eq!(memlock_verdict(MEMLOCK_MIN_BYTES).unwrap(), MEMLOCK_MIN_BYTES);
        assert_eq!(memlock_verdict(u64::MAX).unwrap(), u64::MAX);
        let err = memlock_verdict(MEMLOCK_MIN_BYTES - 1).unwrap_err();
        assert!(matches!(
            err,
            MemlockError::TooLow { limit_bytes, needed_bytes }
                if limit_bytes == MEMLOCK_MIN_BYTES - 1 && needed_bytes == MEMLOCK_MIN_BYTES
        ));
        assert!(err.to_string().contains("RLIMIT_MEMLOCK"), "{err}");
        // The process running the tests runs glommio, so its limit is enough.
        assert!(check_memlock().unwrap() >= MEMLOCK_MIN_BYTES);
    }
}
