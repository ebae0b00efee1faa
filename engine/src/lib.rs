//! OptiCache's storage engine: one instance per shard, running on one glommio
//! executor.
//!
//! A tour, from the disk up:
//! - [`io`]: the one trait all engine I/O goes through, with the production
//!   io_uring/O_DIRECT backend and the fault-injecting test backends.
//! - [`record`]: the byte layout of a log record and of a segment header
//!   (`docs/engine-format.md`), encode and checked decode.
//! - [`segments`]: the numbered, append-only segment files of the log.
//! - [`index`]: the mmap'd hash index, key fingerprint → (segment, offset,
//!   length, version), a recoverable cache of the log.
//! - [`writer`]: group commit: concurrent writes share one write and one
//!   fdatasync.
//! - [`recovery`]: replaying the log after the index's checkpoint, truncating a
//!   torn tail, reporting corruption.
//! - [`cache`]: the in-memory hot-value cache (S3-FIFO) under a byte budget.
//! - [`compaction`]: rewriting segments whose garbage ratio passes a threshold.
//! - [`chunked`]: values written and read in pieces, up to gigabytes.
//! - `fplock`: per-key write locks handed over first come, first served.
//! - [`engine`]: the public face: put, get, delete, update, budgets, TTL,
//!   last-writer-wins by version.
//! - [`listing`]: pages of keys with their versions, by fingerprint range,
//!   for replica repair.
//! - [`stats`]: counters a node exports.
//!
//! The log is the source of truth; everything else can be rebuilt from it.

pub mod cache;
pub mod chunked;
pub mod compaction;
pub mod config;
pub mod engine;
pub mod error;
mod fplock;
pub mod index;
pub mod io;
pub mod limits;
pub mod listing;
pub mod record;
pub mod recovery;
pub mod segments;
pub mod stats;
pub mod writer;
