//! Values too large for one message: cutting a reader into WriteChunks, and
//! reading a ReadStream back chunk by chunk.
//!
//! Invariants:
//! - Memory per upload is bounded by one chunk: [`ChunkSource`] reads at most
//!   [`STREAM_CHUNK_BYTES`] ahead of what was handed to gRPC, and never more
//!   than the announced total.
//! - An upload sends exactly `total_size` bytes or fails locally: a source
//!   that ends early, or has bytes beyond `total_size`, ends the stream short
//!   (the coordinator then stores nothing, per the contract) and the caller
//!   gets [`ClientError::InvalidArgument`] naming the sizes.
//! - A download yields exactly its `total_size` bytes or a
//!   [`ClientError::Protocol`] error; it never yields bytes beyond it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::Stream;
use opticache_proto::v1::{ReadChunk, WriteChunk};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::codec::Streaming;

use crate::error::{map_status, ClientError, Result};
use crate::limits::STREAM_CHUNK_BYTES;

/// Cuts a reader into chunks of at most [`STREAM_CHUNK_BYTES`] that add up
/// to exactly `total` bytes.
#[derive(Debug)]
pub struct ChunkSource<R> {
    reader: R,
    total: u64,
    /// Bytes handed out so far.
    taken: u64,
    /// Whether the first chunk was handed out: a zero-length value still
    /// sends one (empty) chunk, because the first chunk carries the key.
    started: bool,
}

impl<R: AsyncRead + Unpin> ChunkSource<R> {
    /// A source that must yield exactly `total` bytes from `reader`.
    pub fn new(reader: R, total: u64) -> Self {
        Self { reader, total, taken: 0, started: false }
    }

    /// The next chunk, or `None` after the last. The chunk that completes
    /// `total` is returned only once the reader has been seen to end there.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.started && self.taken == self.total {
            return Ok(None);
        }
        self.started = true;
        let remaining = self.total - self.taken;
        // Bounded by STREAM_CHUNK_BYTES, so the cast cannot truncate.
        let want = remaining.min(STREAM_CHUNK_BYTES as u64) as usize;
        let mut chunk = BytesMut::with_capacity(want);
        while chunk.len() < want {
            let mut limited = (&mut self.reader).take((want - chunk.len()) as u64);
            let n = limited.read_buf(&mut chunk).await.map_err(ClientError::Input)?;
            if n == 0 {
                let got = self.taken + chunk.len() as u64;
                return Err(ClientError::InvalidArgument(format!(
                    "the value ended after {got} of its announced {} bytes; nothing was stored",
                    self.total
                )));
            }
        }
        self.taken += want as u64;
        if self.taken == self.total {
            let mut probe = [0u8; 1];
            if self.reader.read(&mut probe).await.map_err(ClientError::Input)? != 0 {
                return Err(ClientError::InvalidArgument(format!(
                    "the value is longer than its announced {} bytes; nothing was stored",
                    self.total
                )));
            }
        }
        Ok(Some(chunk.freeze()))
    }
}

/// Shared by the body stream of one WriteStream attempt and the code that
/// drives it: what happened to the upload so far.
#[derive(Debug)]
pub(crate) struct UploadState {
    /// Set when the first chunk is handed to gRPC; after that the attempt
    /// cannot be repeated.
    pub data_sent: AtomicBool,
    /// Set when the source failed; the stream then ended short on purpose.
    pub failure: StdMutex<Option<ClientError>>,
    /// Milliseconds since `epoch` of the last chunk handed to gRPC, for the
    /// idle deadline.
    progress_ms: AtomicU64,
    epoch: Instant,
}

impl UploadState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            data_sent: AtomicBool::new(false),
            failure: StdMutex::new(None),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.progress_ms.store(ms, Ordering::Relaxed);
    }

    /// When the upload counts as stalled if nothing moves before then.
    fn stall_deadline(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_millis(self.progress_ms.load(Ordering::Relaxed)) + idle
    }

    /// Resolves once no chunk was handed to gRPC for `idle`. Progress
    /// restarts the wait.
    pub async fn stalled(&self, idle: Duration) {
        loop {
            let deadline = self.stall_deadline(idle);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    pub fn take_failure(&self) -> Option<ClientError> {
        self.failure.lock().unwrap_or_else(|poison| poison.into_inner()).take()
    }
}

/// The WriteChunk stream of one attempt: `first` (which carries the
/// namespace, key, ttl and total size, and the first data), then the rest of
/// `source`. The source is shared so that a retry before any data was sent
/// can continue from where the failed attempt left it (untouched).
pub(crate) fn upload_body<R>(
    first: WriteChunk,
    source: Arc<Mutex<ChunkSource<R>>>,
    state: Arc<UploadState>,
) -> impl Stream<Item = WriteChunk> + Send + 'static
where
    R: AsyncRead + Unpin + Send + 'static,
{
    futures_lite::stream::unfold(Some(first), move |first| {
        let source = Arc::clone(&source);
        let state = Arc::clone(&state);
        async move {
            if let Some(first) = first {
                state.data_sent.store(true, Ordering::Relaxed);
                state.touch();
                return Some((first, None));
            }
            match source.lock().await.next_chunk().await {
                Ok(Some(data)) => {
                    state.touch();
                    Some((WriteChunk { data, ..Default::default() }, None))
                }
                Ok(None) => None,
                Err(err) => {
                    // Ending short makes the coordinator discard the value;
                    // the caller is told why from `failure`.
                    *state.failure.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(err);
                    None
                }
            }
        }
    })
}

/// A value being read from the cluster, chunk by chunk.
pub struct ReadStream {
    version: u64,
    total_size: u64,
    /// The data of the first chunk, read while opening (it carries the
    /// version and total size), not yet handed to the caller.
    pending: Option<Bytes>,
    inner: Streaming<ReadChunk>,
    received: u64,
    idle: Duration,
}

impl fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadStream")
            .field("version", &self.version)
            .field("total_size", &self.total_size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl ReadStream {
    /// Wraps an opened stream whose first chunk was already read.
    pub(crate) fn new(first: ReadChunk, inner: Streaming<ReadChunk>, idle: Duration) -> Result<Self> {
        let mut stream =
            Self { version: first.version, total_size: first.total_size, pending: None, inner, received: 0, idle };
        stream.pending = Some(stream.account(first.data)?);
        Ok(stream)
    }

    /// The version of the value being read.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The size of the whole value in bytes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// The next piece of the value (at most 1 MiB), or `None` once all
    /// `total_size` bytes were returned. Waits at most the configured
    /// timeout for each chunk.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(data) = self.pending.take() {
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
            let message = tokio::time::timeout(self.idle, self.inner.message())
                .await
                .map_err(|_elapsed| ClientError::DeadlineExceeded)?
                .map_err(|status| map_status(&status))?;
            match message {
                Some(chunk) => self.pending = Some(self.account(chunk.data)?),
                None if self.received == self.total_size => return Ok(None),
                None => {
                    return Err(ClientError::Protocol(format!(
                        "ReadStream ended after {} of its {} bytes",
                        self.received, self.total_size
                    )))
                }
            }
        }
    }

    fn account(&mut self, data: Bytes) -> Result<Bytes> {
        let received = self.received + data.len() as u64;
        if received > self.total_size {
            return Err(ClientError::Protocol(format!(
                "ReadStream sent {received} bytes of a value of {} bytes",
                self.total_size
            )));
        }
        self.received = received;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// Produces `len` bytes (`i % 251`) on demand and counts how many it
    /// handed out, to show that nothing reads ahead.
    struct CountingReader {
        len: u64,
        produced: Arc<AtomicU64>,
        /// Largest single read, to show reads stay chunk-sized.
        max_read: usize,
    }

    impl AsyncRead for CountingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let done = self.produced.load(Ordering::Relaxed);
            // Short reads of odd sizes, like a pipe.
            let n = (self.len - done).min(buf.remaining() as u64).min(300_007) as usize;
            let bytes: Vec<u8> = (done..done + n as u64).map(|i| (i % 251) as u8).collect();
            buf.put_slice(&bytes);
            self.produced.fetch_add(n as u64, Ordering::Relaxed);
            self.max_read = self.max_read.max(n);
            Poll::Ready(Ok(()))
        }
    }

    fn counting(len: u64) -> (CountingReader, Arc<AtomicU64>) {
        let produced = Arc::new(AtomicU64::new(0));
        (CountingReader { len, produced: Arc::clone(&produced), max_read: 0 }, produced)
    }

    const MIB: u64 = STREAM_CHUNK_BYTES as u64;

    #[tokio::test]
    async fn five_mib_and_three_bytes_make_six_chunks_without_reading_ahead() {
        let total = 5 * MIB + 3;
        let (reader, produced) = counting(total);
        let mut source = ChunkSource::new(reader, total);
        let mut sizes = Vec::new();
        let mut offset = 0u64;
        while let Some(chunk) = source.next_chunk().await.expect("chunk") {
            sizes.push(chunk.len());
            assert!(chunk.len() <= STREAM_CHUNK_BYTES);
            let expected: Vec<u8> = (offset..offset + chunk.len() as u64).map(|i| (i % 251) as u8).collect();
            assert!(chunk[..] == expected[..], "chunk at {offset} has the reader's bytes in order");
            offset += chunk.len() as u64;
            // Never more read than handed out: memory stays one chunk.
            assert_eq!(produced.load(Ordering::Relaxed), offset);
        }
        assert_eq!(sizes, vec![STREAM_CHUNK_BYTES; 5].into_iter().chain([3]).collect::<Vec<_>>());
        assert!(source.reader.max_read <= STREAM_CHUNK_BYTES);
        assert!(source.next_chunk().await.expect("still done").is_none(), "done stays done");
    }

    #[tokio::test]
    async fn exact_multiple_of_the_chunk_size_has_no_empty_tail() {
        let (reader, _) = counting(2 * MIB);
        let mut source = ChunkSource::new(reader, 2 * MIB);
        let mut sizes = Vec::new();
        while let Some(chunk) = source.next_chunk().await.expect("chunk") {
            sizes.push(chunk.len());
        }
        assert_eq!(sizes, vec![STREAM_CHUNK_BYTES, STREAM_CHUNK_BYTES]);
    }

    #[tokio::test]
    async fn an_empty_value_is_one_empty_chunk() {
        let mut source = ChunkSource::new(&b""[..], 0);
        assert_eq!(source.next_chunk().await.expect("first"), Some(Bytes::new()));
        assert_eq!(source.next_chunk().await.expect("end"), None);
    }

    #[tokio::test]
    async fn a_short_source_fails_naming_the_sizes() {
        let (reader, _) = counting(MIB + 10);
        let mut source = ChunkSource::new(reader, MIB + 11);
        assert_eq!(source.next_chunk().await.expect("first").map(|c| c.len()), Some(STREAM_CHUNK_BYTES));
        let err = source.next_chunk().await.expect_err("short");
        let ClientError::InvalidArgument(message) = err else { panic!("{err:?}") };
        assert_eq!(message, "the value ended after 1048586 of its announced 1048587 bytes; nothing was stored");
    }

    #[tokio::test]
    async fn a_long_source_fails_before_its_last_chunk_is_released() {
        let mut source = ChunkSource::new(&b"abcd"[..], 3);
        let err = source.next_chunk().await.expect_err("long");
        let ClientError::InvalidArgument(message) = err else { panic!("{err:?}") };
        assert_eq!(message, "the value is longer than its announced 3 bytes; nothing was stored");
    }

    #[tokio::test]
    async fn the_upload_body_sends_the_header_chunk_first_and_marks_data_sent() {
        use futures_lite::StreamExt;
        let source = Arc::new(Mutex::new(ChunkSource::new(&b"abcdef"[..], 6)));
        let first_data = source.lock().await.next_chunk().await.expect("first").expect("some");
        let first = WriteChunk { key: Bytes::from_static(b"k"), total_size: 6, data: first_data, ..Default::default() };
        let state = UploadState::new();
        let body = upload_body(first, Arc::clone(&source), Arc::clone(&state));
        assert!(!state.data_sent.load(Ordering::Relaxed), "building the body sends nothing");
        let chunks: Vec<WriteChunk> = body.collect().await;
        assert_eq!(chunks.len(), 1);
        assert_eq!((&chunks[0].key[..], chunks[0].total_size, &chunks[0].data[..]), (&b"k"[..], 6, &b"abcdef"[..]));
        assert!(state.data_sent.load(Ordering::Relaxed));
        assert!(state.take_failure().is_none());
    }

    #[tokio::test]
    async fn the_upload_body_ends_short_and_keeps_the_source_error() {
        use futures_lite::StreamExt;
        let (reader, _) = counting(MIB + 5);
        let source = Arc::new(Mutex::new(ChunkSource::new(reader, 2 * MIB)));
        let first_data = source.lock().await.next_chunk().await.expect("first").expect("some");
        let state = UploadState::new();
        let first = WriteChunk { total_size: 2 * MIB, data: first_data, ..Default::default() };
        let chunks: Vec<WriteChunk> = upload_body(first, source, Arc::clone(&state)).collect().await;
        assert_eq!(chunks.len(), 1, "the partial second chunk is never sent");
        assert!(matches!(state.take_failure(), Some(ClientError::InvalidArgument(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_waits_for_idle_time_since_the_last_progress() {
        let state = UploadState::new();
        let idle = Duration::from_millis(500);
        tokio::time::advance(Duration::from_millis(300)).await;
        state.touch();
        let started = Instant::now();
        state.stalled(idle).await;
        // 500 ms after the progress at 300 ms, i.e. 500 ms from here.
        assert_eq!(started.elapsed(), idle);
    }
}
