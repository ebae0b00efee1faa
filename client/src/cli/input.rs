//! Where a value to store comes from (the argument, `--file`, or stdin) and
//! how it is handed to the client without holding it in memory.
//!
//! Invariants:
//! - `put` streams every file and stdin input (WriteStream), whatever its
//!   size; an argument goes unary up to [`STREAM_CHUNK_BYTES`] and is
//!   streamed beyond. Memory stays about one chunk for any input size.
//! - A WriteStream must announce its total size first. Regular files (and
//!   stdin redirected from one) know theirs; a pipe does not, so piped input
//!   beyond one chunk is spooled to an anonymous temporary file first.
//! - `update` has no streaming form (UpdateCache is unary), so its value is
//!   read whole, and refused beyond [`MESSAGE_BYTES_MAX`] before more than
//!   that is read.

use std::io::{self, IsTerminal, Seek};
use std::os::fd::AsFd;
use std::path::Path;

use bytes::Bytes;
use opticache_client::limits::{MESSAGE_BYTES_MAX, STREAM_CHUNK_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// A value ready to be stored.
pub enum Payload {
    /// Small, already in memory: one WriteCache.
    Inline(Bytes),
    /// Exactly `size` bytes from `reader`: one WriteStream.
    Stream { reader: Box<dyn AsyncRead + Send + Unpin>, size: u64 },
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Inline(value) => f.debug_tuple("Inline").field(&value.len()).finish(),
            Payload::Stream { size, .. } => f.debug_struct("Stream").field("size", size).finish_non_exhaustive(),
        }
    }
}

/// Failed to get hold of the value; says which source failed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("the value is over {MESSAGE_BYTES_MAX} bytes, too large for update (one message); put streams any size")]
    TooLargeForUpdate,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> InputError {
    let what = what.into();
    move |source| InputError::Io { what, source }
}

/// The value for `put`.
pub async fn put_payload(value: Option<String>, file: Option<&Path>) -> Result<Payload, InputError> {
    if let Some(value) = value {
        let value = Bytes::from(value.into_bytes());
        if value.len() <= STREAM_CHUNK_BYTES {
            return Ok(Payload::Inline(value));
        }
        let size = value.len() as u64;
        return Ok(Payload::Stream { reader: Box::new(io::Cursor::new(value)), size });
    }
    match file {
        Some(path) => {
            let what = format!("reading {}", path.display());
            let file = std::fs::File::open(path).map_err(io_error(what.clone()))?;
            file_payload(file).await.map_err(io_error(what))
        }
        None => {
            if io::stdin().is_terminal() {
                eprintln!("opticache: reading the value from stdin; end it with Ctrl-D");
            }
            let stdin = io::stdin().as_fd().try_clone_to_owned().map_err(io_error("reading stdin"))?;
            file_payload(std::fs::File::from(stdin)).await.map_err(io_error("reading stdin"))
        }
    }
}

/// A regular file streams from where it stands; anything else (a pipe, a
/// terminal, a FIFO) is spooled, since only then is its size known.
async fn file_payload(mut file: std::fs::File) -> io::Result<Payload> {
    let metadata = file.metadata()?;
    if metadata.is_file() {
        let position = file.stream_position()?;
        let size = metadata.len().saturating_sub(position);
        return Ok(Payload::Stream { reader: Box::new(tokio::fs::File::from_std(file)), size });
    }
    spool(tokio::fs::File::from_std(file)).await
}

/// Reads `reader` to its end: kept in memory if it fits one chunk, moved to
/// an anonymous temporary file otherwise (deleted when dropped).
pub async fn spool<R: AsyncRead + Unpin>(mut reader: R) -> io::Result<Payload> {
    let mut head = Vec::new();
    (&mut reader).take(STREAM_CHUNK_BYTES as u64 + 1).read_to_end(&mut head).await?;
    if head.len() <= STREAM_CHUNK_BYTES {
        let size = head.len() as u64;
        return Ok(Payload::Stream { reader: Box::new(io::Cursor::new(head)), size });
    }
    let mut spooled = tokio::fs::File::from_std(tempfile::tempfile()?);
    spooled.write_all(&head).await?;
    drop(head);
    let rest = tokio::io::copy(&mut reader, &mut spooled).await?;
    spooled.flush().await?;
    spooled.rewind().await?;
    let size = STREAM_CHUNK_BYTES as u64 + 1 + rest;
    Ok(Payload::Stream { reader: Box::new(spooled), size })
}

/// The value for `update`, whole, at most [`MESSAGE_BYTES_MAX`] bytes.
pub async fn update_value(value: Option<String>, file: Option<&Path>) -> Result<Bytes, InputError> {
    if let Some(value) = value {
        return Ok(Bytes::from(value.into_bytes()));
    }
    let value = match file {
        Some(path) => {
            let what = format!("reading {}", path.display());
            let file = tokio::fs::File::open(path).await.map_err(io_error(what.clone()))?;
            read_limited(file, MESSAGE_BYTES_MAX).await.map_err(io_error(what))?
        }
        None => read_limited(tokio::io::stdin(), MESSAGE_BYTES_MAX).await.map_err(io_error("reading stdin"))?,
    };
    value.map(Bytes::from).ok_or(InputError::TooLargeForUpdate)
}

/// All of `reader` if it holds at most `limit` bytes, `None` otherwise;
/// never reads more than `limit + 1` bytes.
pub async fn read_limited<R: AsyncRead + Unpin>(reader: R, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut value = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut value).await?;
    Ok((value.len() <= limit).then_some(value))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    async fn drain(payload: Payload) -> (u64, Vec<u8>) {
        let Payload::Stream { mut reader, size } = payload else { panic!("expected a stream, got {payload:?}") };
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.expect("read back");
        (size, all)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    #[tokio::test]
    async fn a_small_argument_goes_inline_and_a_large_one_streams() {
        let Payload::Inline(v) = put_payload(Some("abc".into()), None).await.expect("inline") else { panic!() };
        assert_eq!(&v[..], b"abc");
        let at_limit = "x".repeat(STREAM_CHUNK_BYTES);
        assert!(matches!(put_payload(Some(at_limit), None).await.expect("inline"), Payload::Inline(_)));
        let over = "y".repeat(STREAM_CHUNK_BYTES + 1);
        let (size, bytes) = drain(put_payload(Some(over.clone()), None).await.expect("stream")).await;
        assert_eq!((size, bytes), (STREAM_CHUNK_BYTES as u64 + 1, over.into_bytes()));
    }

    #[tokio::test]
    async fn a_file_streams_with_its_size_even_when_small() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(b"hello").expect("write");
        let (size, bytes) = drain(put_payload(None, Some(file.path())).await.expect("file")).await;
        assert_eq!((size, bytes), (5, b"hello".to_vec()));
    }

    #[tokio::test]
    async fn a_missing_file_names_its_path() {
        let err = put_payload(None, Some(Path::new("/nonexistent/opticache-value"))).await.expect_err("missing");
        assert!(err.to_string().starts_with("reading /nonexistent/opticache-value: "), "{err}");
    }

    #[tokio::test]
    async fn short_piped_input_stays_in_memory_with_its_exact_size() {
        let (size, bytes) = drain(spool(&b"piped"[..]).await.expect("spool")).await;
        assert_eq!((size, bytes), (5, b"piped".to_vec()));
        let (size, bytes) = drain(spool(&b""[..]).await.expect("spool")).await;
        assert_eq!((size, bytes), (0, Vec::new()));
    }

    #[tokio::test]
    async fn long_piped_input_is_spooled_with_its_exact_size() {
        for len in [STREAM_CHUNK_BYTES, STREAM_CHUNK_BYTES + 1, 3 * STREAM_CHUNK_BYTES + 17] {
            let input = pattern(len);
            let (size, bytes) = drain(spool(&input[..]).await.expect("spool")).await;
            assert_eq!(size, len as u64);
            assert!(bytes == input, "{len} bytes come back unchanged");
        }
    }

    #[tokio::test]
    async fn update_values_are_read_up_to_the_message_limit() {
        assert_eq!(read_limited(&b"abc"[..], 3).await.expect("read"), Some(b"abc".to_vec()));
        assert_eq!(read_limited(&b"abcd"[..], 3).await.expect("read"), None);
        assert_eq!(read_limited(&b""[..], 0).await.expect("read"), Some(Vec::new()));
        assert_eq!(&update_value(Some("v".into()), None).await.expect("arg")[..], b"v");
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(b"from file").expect("write");
        assert_eq!(&update_value(None, Some(file.path())).await.expect("file")[..], b"from file");
    }
}
