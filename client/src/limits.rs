//! The client's limits, each a named constant with the reason for its value.
//!
//! Invariants, checked at compile time below: a stream chunk fits in a
//! message and in one stream window (so a chunk never waits for a window
//! update halfway), and the HTTP/2 connection window is at least the stream
//! window (otherwise one stream could never use its whole window).

/// Largest `data` of one WriteChunk we send: the contract caps chunks at
/// 1 MiB (`opticache.v1`, WriteStream/ReadStream). It is also the read size
/// when a file or stdin is streamed, so memory per upload stays one chunk.
pub const STREAM_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest encoded gRPC message we send or accept. Unary values and batches
/// up to this size go in one message; anything larger must be streamed.
/// 80 MiB leaves room above the coordinator's default value limit for the
/// envelope (namespace, key, field tags).
pub const MESSAGE_BYTES_MAX: usize = 80 * 1024 * 1024;

/// HTTP/2 initial window of one stream. With the 64 KiB default a 1 MiB
/// chunk needs 16 window updates per round trip; 8 MiB keeps a stream of
/// large values flowing at LAN bandwidth-delay products.
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// HTTP/2 initial window of the whole connection, shared by its streams:
/// room for four streams at full window before one waits for another.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// Longest TTL accepted. Beyond ten years "never expires" (no TTL) is what is
/// meant, and `now + ttl` in milliseconds stays far from u64 overflow on the
/// coordinator.
pub const TTL_MS_MAX: u64 = 10 * 365 * 24 * 60 * 60 * 1000;

const _: () = assert!(STREAM_CHUNK_BYTES < MESSAGE_BYTES_MAX);
const _: () = assert!(STREAM_CHUNK_BYTES <= STREAM_WINDOW_BYTES as usize);
const _: () = assert!(CONNECTION_WINDOW_BYTES >= STREAM_WINDOW_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_have_their_documented_values() {
        assert_eq!(STREAM_CHUNK_BYTES, 1_048_576);
        assert_eq!(MESSAGE_BYTES_MAX, 83_886_080);
        assert_eq!((STREAM_WINDOW_BYTES, CONNECTION_WINDOW_BYTES), (8_388_608, 33_554_432));
        assert_eq!(TTL_MS_MAX, 315_360_000_000);
    }
}
