//! Every size limit of the engine, as named constants, so that each one is
//! enforced in one place and tested at and beyond its value.

/// The longest user key the public API accepts.
pub const USER_KEY_LEN_MAX: usize = 1024;
/// The longest namespace the public API accepts.
pub const NAMESPACE_LEN_MAX: usize = 255;
/// The longest engine key: the node stores `(namespace, key)` as one key of a
/// length byte, the namespace, then the user key.
pub const KEY_LEN_MAX: usize = 1 + NAMESPACE_LEN_MAX + USER_KEY_LEN_MAX;

/// The largest value one record can hold, whatever the configuration says.
/// Larger values go through the chunked path.
pub const RECORD_VALUE_LEN_MAX: usize = 256 << 20;
/// The default for `EngineConfig::max_value_bytes`: the largest single put.
pub const VALUE_LEN_DEFAULT_MAX: usize = 64 << 20;
/// The largest value the chunked path accepts.
pub const CHUNKED_VALUE_LEN_MAX: u64 = 64 << 30;
/// The data one chunk record holds at most; a chunked put buffers no more.
/// With its header it fits a 2 MiB block of the executor's I/O memory.
pub const CHUNK_LEN_MAX: usize = 1 << 20;

/// Segments never exceed this size: offsets in the index are 30 bits.
pub const SEGMENT_LEN_MAX: u64 = 1 << 30;
/// Segment ids are 24 bits in the index.
pub const SEGMENT_ID_MAX: u32 = (1 << 24) - 1;

/// How many writes one group commit takes at most.
pub const COMMIT_BATCH_LEN_MAX: usize = 4096;
/// How many bytes one group commit writes at most (a single larger record is
/// written alone). With the partial block before it and the padding after,
/// a batch's buffer stays within a 4 MiB block of the executor's I/O memory.
pub const COMMIT_BATCH_BYTES_MAX: usize = (4 << 20) - 2 * 4096;

/// The DMA memory an executor running engines should reserve
/// (`glommio::LocalExecutorBuilder::io_memory`). Write and read buffers come
/// from this arena and are reused, instead of fresh heap memory that costs a
/// page fault per 4 KiB on first touch (~1 s per GiB here) and that the
/// allocator may keep after it is freed.
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 64 << 20;

/// The most keys one page of a key listing (`Engine::list_keys`) holds: a
/// larger limit is clamped to it, so one request cannot hold the shard's
/// index borrow or its reads for long.
pub const LIST_PAGE_LEN_MAX: usize = 4096;
/// The most record bytes one listing page reads (each listed record is read
/// whole, to check its crc): a page of large values ends early instead of
/// reading gigabytes. A page always takes its first fingerprint, whatever its
/// size, so paging makes progress.
pub const LIST_PAGE_READ_BYTES_MAX: u64 = 64 << 20;
