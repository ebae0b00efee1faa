//! The engine's only door to the disk: a directory of files behind one small
//! trait, so tests can swap the real io_uring/O_DIRECT backend for ones that
//! fail on purpose or simulate a crash.
//!
//! Invariants every backend keeps (and the fault-injecting ones check):
//! - writes are positioned at, and sized in, multiples of [`StorageFile::alignment`]
//!   (O_DIRECT), from a buffer made by [`Storage::alloc_buf`];
//! - a write is durable only after a later [`StorageFile::sync`] on the same
//!   file returned `Ok`; until then a crash may keep any part of it;
//! - reads may be at any position and size; a read past the end of the file
//!   returns the bytes that exist (possibly none).
//!
//! Everything here is single-threaded: one shard owns one `Storage`.

pub mod crash;
pub mod dma;
pub mod faulty;
pub mod wake_guard;

use std::io;
use std::ops::{Deref, DerefMut};

/// A directory of named files: the shard's data directory.
#[allow(async_fn_in_trait, reason = "engine futures are !Send by design (one thread per shard)")]
pub trait Storage: 'static {
    /// An open file of this backend.
    type File: StorageFile<Buf = Self::Buf>;
    /// A write buffer aligned for this backend (DMA memory in production).
    type Buf: Deref<Target = [u8]> + DerefMut + 'static;

    /// Opens `name` in the directory, creating it empty when `create` is set
    /// and it does not exist yet.
    async fn open(&self, name: &str, create: bool) -> io::Result<Self::File>;
    /// Removes `name`; removing a missing file is `NotFound`.
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// The names of the files in the directory, in no particular order.
    async fn list(&self) -> io::Result<Vec<String>>;
    /// Makes creations and removals in the directory durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// A zeroed buffer of `len` bytes (`len` a multiple of the alignment).
    fn alloc_buf(&self, len: usize) -> Self::Buf;
}

/// One open file. The five calls every engine I/O goes through.
#[allow(async_fn_in_trait, reason = "engine futures are !Send by design (one thread per shard)")]
#[expect(clippy::len_without_is_empty, reason = "a file's length is a size to read, not a collection's")]
pub trait StorageFile: 'static {
    /// The buffer type [`StorageFile::write_at`] consumes.
    type Buf: Deref<Target = [u8]> + DerefMut + 'static;
    /// Bytes read back; derefs to exactly the bytes that exist in range.
    type ReadBuf: Deref<Target = [u8]> + 'static;

    /// Reads up to `len` bytes at `pos`; shorter only at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadBuf>;
    /// Writes the whole buffer at `pos`; both aligned. Not durable until `sync`.
    async fn write_at(&self, pos: u64, buf: Self::Buf) -> io::Result<()>;
    /// fdatasync: every completed write so far becomes durable.
    async fn sync(&self) -> io::Result<()>;
    /// The file's size in bytes.
    async fn len(&self) -> io::Result<u64>;
    /// Grows (with zeros) or shrinks the file to `len` bytes.
    async fn set_len(&self, len: u64) -> io::Result<()>;
    /// The O_DIRECT alignment of positions and sizes for writes (512 or 4096).
    fn alignment(&self) -> u64;
}
