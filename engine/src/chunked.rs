//! Values written and read in pieces, for values larger than one put takes
//! (up to [`CHUNKED_VALUE_LEN_MAX`]), with memory bounded by one chunk.
//!
//! A chunked value is a run of `Chunk` records (no index entry of their own)
//! and one `ChunkedPut` record, the manifest, whose value lists the chunks.
//! The index entry points at the manifest, so the value becomes visible only
//! when the manifest is committed, after every chunk is written.
//!
//! Manifest value, little-endian:
//! `total_len u64 | chunk_count u32 | reserved u32 (0)`, then per chunk
//! `segment u32 | offset u32 | record_len u32 | data_len u32`.

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::Durability;
use crate::engine::Inner;
use crate::error::{EngineError, Result};
use crate::index::{fingerprint, Loc};
use crate::io::Storage;
use crate::limits::{CHUNKED_VALUE_LEN_MAX, CHUNK_LEN_MAX, KEY_LEN_MAX};
use crate::record::{encoded_len, RecordKind};
use crate::segments::now_ms;
use crate::stats::bump;
use crate::writer::{Completion, Purpose, WriteOp};

const MANIFEST_HEADER_LEN: usize = 16;
const MANIFEST_ENTRY_LEN: usize = 16;

/// One chunk as the manifest lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub loc: Loc,
    pub data_len: u32,
}

/// Encodes a manifest.
pub(crate) fn encode_manifest(total_len: u64, chunks: &[ChunkRef]) -> Bytes {
    let mut b = BytesMut::with_capacity(MANIFEST_HEADER_LEN + chunks.len() * MANIFEST_ENTRY_LEN);
    b.put_u64_le(total_len);
    b.put_u32_le(chunks.len() as u32);
    b.put_u32_le(0);
    for c in chunks {
        b.put_u32_le(c.loc.segment);
        b.put_u32_le(c.loc.offset);
        b.put_u32_le(c.loc.len_bytes() as u32);
        b.put_u32_le(c.data_len);
    }
    b.freeze()
}

/// Decodes a manifest; `None` if it is malformed (lengths do not add up).
pub(crate) fn decode_manifest(v: &[u8]) -> Option<(u64, Vec<ChunkRef>)> {
    let u32_at = |at: usize| v.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let total = u64::from_le_bytes(v.get(0..8)?.try_into().ok()?);
    let count = u32_at(8)? as usize;
    if u32_at(12)? != 0 || v.len() != MANIFEST_HEADER_LEN + count * MANIFEST_ENTRY_LEN {
        return None;
    }
    let mut chunks = Vec::with_capacity(count);
    let mut sum = 0u64;
    for i in 0..count {
        let at = MANIFEST_HEADER_LEN + i * MANIFEST_ENTRY_LEN;
        let loc = Loc::for_record(u32_at(at)?, u32_at(at + 4)? as u64, u32_at(at + 8)? as u64);
        let data_len = u32_at(at + 12)?;
        sum += data_len as u64;
        chunks.push(ChunkRef { loc, data_len });
    }
    (sum == total).then_some((total, chunks))
}

/// A value being written in pieces. Dropping it without [`Self::commit`]
/// abandons it: nothing becomes visible and its chunks are garbage.
#[derive(Debug)]
pub struct ChunkedWriter<S: Storage> {
    inner: Rc<Inner<S>>,
    key: Bytes,
    total_len: u64,
    version: u64,
    expiry_ms: u64,
    received: u64,
    pending: BytesMut,
    chunks: Vec<ChunkRef>,
    committed: bool,
}

impl<S: Storage> ChunkedWriter<S> {
    pub(crate) async fn start(
        inner: Rc<Inner<S>>,
        key: &[u8],
        total_len: u64,
        version: u64,
        expiry_ms: u64,
    ) -> Result<Self> {
        if key.is_empty() || key.len() > KEY_LEN_MAX {
            return Err(EngineError::InvalidKey { len: key.len(), max: KEY_LEN_MAX });
        }
        if total_len > CHUNKED_VALUE_LEN_MAX {
            return Err(EngineError::ValueTooLarge { len: total_len, max: CHUNKED_VALUE_LEN_MAX });
        }
        inner.writable()?;
        inner.ensure_room(total_len).await?;
        bump(&inner.counters.puts, 1);
        Ok(Self {
            inner,
            key: Bytes::copy_from_slice(key),
            total_len,
            version,
            expiry_ms,
            received: 0,
            pending: BytesMut::new(),
            chunks: Vec::new(),
            committed: false,
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Adds the next piece. More bytes than announced is an error.
    pub async fn append(&mut self, data: &[u8]) -> Result<()> {
        let received = self.received + data.len() as u64;
        if received > self.total_len {
            return Err(EngineError::ChunkedLengthMismatch { announced: self.total_len, received });
        }
        self.received = received;
        let mut data = data;
        while !data.is_empty() {
            let take = (CHUNK_LEN_MAX - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK_LEN_MAX {
                self.write_chunk().await?;
            }
        }
        Ok(())
    }

    async fn write_chunk(&mut self) -> Result<()> {
        let value = self.pending.split().freeze();
        let data_len = value.len() as u32;
        self.inner.ensure_room(encoded_len(self.key.len(), value.len()) as u64).await?;
        let op = WriteOp {
            kind: RecordKind::Chunk,
            key: self.key.clone(),
            value,
            version: self.version,
            expiry_ms: self.expiry_ms,
            sync: false,
            purpose: Purpose::Chunk,
            done: Rc::new(Completion::default()),
        };
        let applied = self.inner.submit(op).await?;
        self.chunks.push(ChunkRef { loc: applied.loc, data_len });
        Ok(())
    }

    /// Makes the value visible, unless a version at least as new is stored.
    pub async fn commit(mut self) -> Result<crate::engine::PutOutcome> {
        if self.received != self.total_len {
            return Err(EngineError::ChunkedLengthMismatch { announced: self.total_len, received: self.received });
        }
        if !self.pending.is_empty() {
            self.write_chunk().await?;
        }
        let inner = self.inner.clone();
        let manifest = encode_manifest(self.total_len, &self.chunks);
        inner.ensure_room(encoded_len(self.key.len(), manifest.len()) as u64).await?;
        let guard = inner.lock_fp(fingerprint(&self.key)).await;
        let existing = inner.resolve(&self.key).await?;
        if let Some(e) = existing {
            if self.version <= e.entry.version {
                bump(&inner.counters.stale_writes, 1);
                return Ok(crate::engine::PutOutcome::Stale { stored_version: e.entry.version });
            }
        }
        let now = now_ms();
        let previous_version =
            existing.filter(|e| !e.entry.tombstone && (e.expiry_ms == 0 || e.expiry_ms > now)).map(|e| e.entry.version);
        guard.target.set(existing.map(|e| e.entry.loc));
        let op = WriteOp {
            kind: RecordKind::ChunkedPut,
            key: self.key.clone(),
            value: manifest,
            version: self.version,
            expiry_ms: self.expiry_ms,
            sync: inner.config.durability == Durability::Sync,
            purpose: Purpose::Client(guard),
            done: Rc::new(Completion::default()),
        };
        inner.submit(op).await?;
        self.committed = true;
        bump(&inner.counters.put_bytes, self.total_len);
        Ok(crate::engine::PutOutcome::Applied { previous_version })
    }
}

impl<S: Storage> Drop for ChunkedWriter<S> {
    fn drop(&mut self) {
        if !self.committed {
            for c in &self.chunks {
                self.inner.mark_dead(c.loc);
            }
        }
    }
}

/// A live value read in pieces of at most [`CHUNK_LEN_MAX`] bytes.
#[derive(Debug)]
pub struct ChunkedReader<S: Storage> {
    inner: Rc<Inner<S>>,
    key: Bytes,
    version: u64,
    expiry_ms: u64,
    total_len: u64,
    inline: Option<Bytes>,
    chunks: Vec<ChunkRef>,
    next: usize,
}

impl<S: Storage> ChunkedReader<S> {
    pub(crate) async fn open(inner: Rc<Inner<S>>, key: &[u8]) -> Result<Option<Self>> {
        let Some((loc, rec)) = inner.find_live_record(key).await? else {
            return Ok(None);
        };
        let mut reader = Self {
            inner: inner.clone(),
            key: Bytes::copy_from_slice(key),
            version: rec.version,
            expiry_ms: rec.expiry_ms,
            total_len: 0,
            inline: None,
            chunks: Vec::new(),
            next: 0,
        };
        match rec.kind {
            RecordKind::ChunkedPut => {
                let (total, chunks) = decode_manifest(&rec.value).ok_or_else(|| {
                    inner.corruption(loc, crate::record::DecodeError::BadValueLen(rec.value.len() as u32))
                })?;
                reader.total_len = total;
                reader.chunks = chunks;
            }
            _ => {
                reader.total_len = rec.value.len() as u64;
                reader.inline = Some(rec.value);
            }
        }
        Ok(Some(reader))
    }

    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn expiry_ms(&self) -> u64 {
        self.expiry_ms
    }

    /// The next piece, or `None` after the last.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(v) = self.inline.take() {
            // A single-record value, handed out in bounded pieces.
            if v.len() > CHUNK_LEN_MAX {
                let rest = v.slice(CHUNK_LEN_MAX..);
                self.inline = Some(rest);
                return Ok(Some(v.slice(..CHUNK_LEN_MAX)));
            }
            return Ok((!v.is_empty()).then_some(v));
        }
        let Some(c) = self.chunks.get(self.next).copied() else {
            return Ok(None);
        };
        let data = read_chunk(&self.inner, &self.key, self.version, c).await?;
        self.next += 1;
        Ok(Some(data))
    }
}

/// Reads one chunk and checks it belongs to this value.
async fn read_chunk<S: Storage>(inner: &Inner<S>, key: &[u8], version: u64, c: ChunkRef) -> Result<Bytes> {
    let Some(rec) = inner.read_record(c.loc, key).await? else {
        return Err(EngineError::Closed("the value was moved by compaction while being read; read it again".into()));
    };
    if rec.kind != RecordKind::Chunk
        || !rec.key_matches
        || rec.version != version
        || rec.value.len() != c.data_len as usize
    {
        return Err(inner.corruption(c.loc, crate::record::DecodeError::BadKind(rec.kind as u8)));
    }
    Ok(rec.value)
}

/// Reads a whole chunked value of `version` into memory, if it is at most
/// `max` bytes.
pub(crate) async fn assemble<S: Storage>(
    inner: &Inner<S>,
    key: &[u8],
    manifest: &[u8],
    version: u64,
    max: usize,
) -> Result<Bytes> {
    let (total, chunks) = decode_manifest(manifest).ok_or(EngineError::Closed("malformed chunk manifest".into()))?;
    if total > max as u64 {
        return Err(EngineError::ValueTooLarge { len: total, max: max as u64 });
    }
    let mut out = BytesMut::with_capacity(total as usize);
    for c in chunks {
        out.extend_from_slice(&read_chunk(inner, key, version, c).await?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_bad_lengths() {
        let chunks = vec![
            ChunkRef { loc: Loc::for_record(3, 4096, 4096 + 40), data_len: 4096 },
            ChunkRef { loc: Loc::for_record(4, 8192, 48), data_len: 7 },
        ];
        let m = encode_manifest(4103, &chunks);
        assert_eq!(m.len(), MANIFEST_HEADER_LEN + 2 * MANIFEST_ENTRY_LEN);
        let (total, back) = decode_manifest(&m).expect("valid");
        assert_eq!(total, 4103);
        assert_eq!(back, chunks);
        // Lengths that do not add up, a short buffer, a reserved field set.
        assert!(decode_manifest(&encode_manifest(4104, &chunks)).is_none());
        assert!(decode_manifest(&m[..m.len() - 1]).is_none());
        let mut bad = m.to_vec();
        bad[12] = 1;
        assert!(decode_manifest(&bad).is_none());
        assert_eq!(decode_manifest(&encode_manifest(0, &[])), Some((0, vec![])));
    }
}
