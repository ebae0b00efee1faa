//! Fuzz target for the index file loader: arbitrary bytes go to
//! `Index::check_image`, which checks an image exactly as `Index::open` does
//! without touching a file. It must never panic, must give the same answer
//! twice, and what it accepts must be consistent with the layout: the
//! summary describes the whole input, free chunks are a subset of all
//! chunks, and the partition count and depth are within their limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opticache_engine::index::{Index, CHUNK_BYTES, DIR_DEPTH_MAX, PARTITIONS_MAX};

fuzz_target!(|data: &[u8]| {
    let Ok(summary) = Index::check_image(data) else {
        return;
    };
    assert_eq!(summary.file_bytes, data.len() as u64);
    assert!(summary.free_chunk_count <= summary.chunk_count);
    // The chunks follow a non-empty header page, all inside the image.
    assert!(u64::from(summary.chunk_count) * (CHUNK_BYTES as u64) < summary.file_bytes);
    assert!(summary.partition_count >= 1);
    assert!(summary.partition_count as usize <= PARTITIONS_MAX);
    assert!(summary.global_depth <= DIR_DEPTH_MAX);
    assert_eq!(Index::check_image(data).ok(), Some(summary), "check_image must be deterministic");
});
