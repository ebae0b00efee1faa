//! The internal node API (`opticache.node.v1.Node`) over tonic: checks each
//! request, routes it to the owning shard, and maps outcomes to responses.
//!
//! Invariants:
//! - every request is checked in full before anything is sent to a shard
//!   (keys, value sizes, batch limits), so a rejected request writes nothing;
//! - a streamed write reaches the engine chunk by chunk through a queue of
//!   [`STREAM_CHUNKS_IN_FLIGHT_MAX`] chunks, and commits only when exactly
//!   `total_size` bytes arrived; otherwise the shard abandons it;
//! - batch results come back in request order.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::{Stream, StreamExt};
use opticache_engine::engine::{DeleteOutcome, PutOutcome, UpdateOutcome, Value};
use opticache_engine::limits::{CHUNKED_VALUE_LEN_MAX, CHUNK_LEN_MAX};
use opticache_proto::node::v1 as pb;
use pb::node_server::Node;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::core::NodeCore;
use crate::error::{NodeError, StreamError};
use crate::figures::Figures;
use crate::keys;
use crate::metrics::Rpc;
use crate::shard::{PutEntry, ShardRequest, StreamAborted, STREAM_CHUNKS_IN_FLIGHT_MAX};

/// Entries one batch call takes at most.
pub const BATCH_LEN_MAX: usize = 4096;
/// Key and value bytes one batch call carries at most, each way.
pub const BATCH_BYTES_MAX: u64 = 64 << 20;
/// Entries one ListKeys page holds at most.
pub const LIST_PAGE_LEN_MAX: u32 = opticache_engine::limits::LIST_PAGE_LEN_MAX as u32;

/// The tonic service; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeService {
    core: Arc<NodeCore>,
}

impl NodeService {
    pub fn new(core: Arc<NodeCore>) -> Self {
        Self { core }
    }

    /// Runs `f`, recording its latency and outcome under `rpc`.
    async fn observed<T>(
        &self,
        rpc: Rpc,
        f: impl std::future::Future<Output = Result<T, NodeError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = f.await.map_err(Status::from);
        self.core.metrics.observe_rpc(rpc, result.as_ref().err().map(|s| s.code()), started.elapsed());
        result.map(Response::new)
    }

    /// Tracks a put's outcome in the refused keys: the version it stored, or the one the node already held.
    fn track_put(
        &self,
        key: &Bytes,
        version: u64,
        result: Result<PutOutcome, NodeError>,
    ) -> Result<PutOutcome, NodeError> {
        self.core.refused.track(key, version, result, |outcome| match outcome {
            PutOutcome::Applied { .. } => Some(version),
            PutOutcome::Stale { stored_version } => Some(*stored_version),
        })
    }

    fn check_value(&self, len: usize) -> Result<(), NodeError> {
        if len as u64 > self.core.max_value_bytes {
            return Err(NodeError::ValueTooLarge { len: len as u64, max: self.core.max_value_bytes });
        }
        Ok(())
    }

    async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, NodeError> {
        self.core.check_serving()?;
        let key = keys::encode(&req.namespace, &req.key)?;
        self.core.check_epoch(req.epoch)?;
        self.check_value(req.value.len())?;
        let version = self.core.version_or_stamp(req.version);
        let shard = self.core.shard_for(&key);
        let entry = PutEntry { key: key.clone(), value: req.value, version, expiry_ms: req.expiry_unix_ms };
        let result = self.core.call(shard, |reply| ShardRequest::Put { entry, reply }).await?.map_err(NodeError::from);
        let outcome = self.track_put(&key, version, result)?;
        Ok(put_response(outcome, version))
    }

    async fn get(&self, req: pb::GetRequest) -> Result<pb::GetResponse, NodeError> {
        self.core.check_serving()?;
        let key = keys::encode(&req.namespace, &req.key)?;
        self.core.refused.check(&key)?;
        let shard = self.core.shard_for(&key);
        let found = self.core.call(shard, |reply| ShardRequest::Get { key, reply }).await??;
        Ok(get_response(found))
    }

    async fn update(&self, req: pb::UpdateRequest) -> Result<pb::UpdateResponse, NodeError> {
        self.core.check_serving()?;
        let key = keys::encode(&req.namespace, &req.key)?;
        self.core.check_epoch(req.epoch)?;
        self.check_value(req.value.len())?;
        let version = self.core.version_or_stamp(req.version);
        // Compare-and-set against a copy this node knows to be old would decide wrongly.
        self.core.refused.check(&key)?;
        let shard = self.core.shard_for(&key);
        let entry = PutEntry { key: key.clone(), value: req.value, version, expiry_ms: req.expiry_unix_ms };
        let expected_version = req.expected_version;
        let result = self.core.call(shard, |reply| ShardRequest::Update { entry, expected_version, reply }).await?;
        let outcome = self.core.refused.track(&key, version, result.map_err(NodeError::from), |outcome| {
            matches!(outcome, UpdateOutcome::Updated { .. }).then_some(version)
        })?;
        match outcome {
            UpdateOutcome::Updated { previous_version } => Ok(pb::UpdateResponse { version, previous_version }),
            UpdateOutcome::NotFound => Err(NodeError::UpdateNotFound),
            UpdateOutcome::VersionMismatch { stored_version } => {
                Err(NodeError::VersionMismatch { expected: expected_version, stored: stored_version })
            }
            UpdateOutcome::Stale { stored_version } => Err(NodeError::StaleUpdate { version, stored: stored_version }),
        }
    }

    async fn delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, NodeError> {
        self.core.check_serving()?;
        let key = keys::encode(&req.namespace, &req.key)?;
        self.core.check_epoch(req.epoch)?;
        let version = self.core.version_or_stamp(req.version);
        let shard = self.core.shard_for(&key);
        let result = self.core.call(shard, |reply| ShardRequest::Delete { key: key.clone(), version, reply }).await?;
        let outcome =
            self.core.refused.track(&key, version, result.map_err(NodeError::from), |outcome| match outcome {
                DeleteOutcome::Deleted { .. } | DeleteOutcome::Absent => Some(version),
                DeleteOutcome::Stale { stored_version } => Some(*stored_version),
            })?;
        Ok(match outcome {
            DeleteOutcome::Deleted { .. } => pb::DeleteResponse { deleted: true, applied: true, version },
            DeleteOutcome::Absent => pb::DeleteResponse { deleted: false, applied: true, version },
            DeleteOutcome::Stale { stored_version } => {
                pb::DeleteResponse { deleted: false, applied: false, version: stored_version }
            }
        })
    }

    async fn batch_put(&self, req: pb::BatchPutRequest) -> Result<pb::BatchPutResponse, NodeError> {
        self.core.check_serving()?;
        let len = req.entries.len();
        if len > BATCH_LEN_MAX {
            return Err(NodeError::BatchTooLong { len, max: BATCH_LEN_MAX });
        }
        // Check everything before writing anything.
        let mut bytes = 0u64;
        let mut routed: Vec<Vec<(usize, PutEntry)>> = (0..self.core.shards.len()).map(|_| Vec::new()).collect();
        for (i, e) in req.entries.into_iter().enumerate() {
            let key = keys::encode(&e.namespace, &e.key)?;
            self.check_value(e.value.len())?;
            self.core.check_epoch(e.epoch)?;
            bytes += (e.key.len() + e.value.len()) as u64;
            if bytes > BATCH_BYTES_MAX {
                return Err(NodeError::BatchTooLarge { bytes, max: BATCH_BYTES_MAX });
            }
            let shard = self.core.shard_for(&key).shard as usize;
            // A copy, so a value the engine caches does not keep the whole
            // request frame alive.
            let value = Bytes::copy_from_slice(&e.value);
            let version = self.core.version_or_stamp(e.version);
            routed[shard].push((i, PutEntry { key, value, version, expiry_ms: e.expiry_unix_ms }));
        }
        let mut results = vec![pb::PutResponse::default(); len];
        let calls = routed.into_iter().enumerate().filter(|(_, r)| !r.is_empty()).map(|(shard, routed)| {
            let core = &self.core;
            async move {
                let (positions, entries): (Vec<usize>, Vec<PutEntry>) = routed.into_iter().unzip();
                let written: Vec<(Bytes, u64)> = entries.iter().map(|e| (e.key.clone(), e.version)).collect();
                let outcomes = core.call(&core.shards[shard], |reply| ShardRequest::BatchPut { entries, reply }).await;
                (positions, written, outcomes)
            }
        });
        // Every entry's outcome is tracked before the first error is returned.
        let mut first_error = None;
        for (positions, written, outcomes) in opticache_common::join::join_all(calls).await {
            let outcomes = match outcomes {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            for ((i, (key, version)), outcome) in positions.into_iter().zip(written).zip(outcomes) {
                match self.track_put(&key, version, outcome.map_err(NodeError::from)) {
                    Ok(outcome) => results[i] = put_response(outcome, version),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(pb::BatchPutResponse { results }),
        }
    }

    async fn batch_get(&self, req: pb::BatchGetRequest) -> Result<pb::BatchGetResponse, NodeError> {
        self.core.check_serving()?;
        let len = req.keys.len();
        if len > BATCH_LEN_MAX {
            return Err(NodeError::BatchTooLong { len, max: BATCH_LEN_MAX });
        }
        let mut routed: Vec<Vec<(usize, Bytes)>> = (0..self.core.shards.len()).map(|_| Vec::new()).collect();
        for (i, k) in req.keys.iter().enumerate() {
            let key = keys::encode(&k.namespace, &k.key)?;
            self.core.refused.check(&key)?;
            routed[self.core.shard_for(&key).shard as usize].push((i, key));
        }
        let mut results = vec![pb::GetResponse::default(); len];
        let calls = routed.into_iter().enumerate().filter(|(_, r)| !r.is_empty()).map(|(shard, routed)| {
            let core = &self.core;
            async move {
                let (positions, keys): (Vec<usize>, Vec<Bytes>) = routed.into_iter().unzip();
                let found = core.call(&core.shards[shard], |reply| ShardRequest::BatchGet { keys, reply }).await?;
                Ok::<_, NodeError>((positions, found))
            }
        });
        let mut bytes = 0u64;
        for joined in opticache_common::join::join_all(calls).await {
            let (positions, found) = joined?;
            for (i, value) in positions.into_iter().zip(found) {
                let response = get_response(value?);
                bytes += response.value.len() as u64;
                if bytes > BATCH_BYTES_MAX {
                    return Err(NodeError::BatchTooLarge { bytes, max: BATCH_BYTES_MAX });
                }
                results[i] = response;
            }
        }
        Ok(pb::BatchGetResponse { results })
    }

    async fn put_stream(&self, mut stream: Streaming<pb::PutChunk>) -> Result<pb::PutResponse, NodeError> {
        self.core.check_serving()?;
        let first = match stream.next().await {
            Some(chunk) => chunk.map_err(|s| StreamError::from_client(&s))?,
            None => return Err(StreamError::Empty.into()),
        };
        if first.key.is_empty() {
            return Err(StreamError::FirstChunkWithoutKey.into());
        }
        let key = keys::encode(&first.namespace, &first.key)?;
        self.core.check_epoch(first.epoch)?;
        let total = first.total_size;
        if total > CHUNKED_VALUE_LEN_MAX {
            return Err(StreamError::TotalTooLarge { total, max: CHUNKED_VALUE_LEN_MAX }.into());
        }
        let version = self.core.version_or_stamp(first.version);
        let shard = self.core.shard_for(&key).clone();
        let (chunks_tx, chunks) = mpsc::channel(STREAM_CHUNKS_IN_FLIGHT_MAX);
        let expiry_ms = first.expiry_unix_ms;
        let (first_namespace, first_key) = (first.namespace.clone(), first.key.clone());
        let held_key = key.clone();
        let commit = self.core.call(&shard, move |reply| ShardRequest::PutStream {
            key,
            total_len: total,
            version,
            expiry_ms,
            chunks,
            reply,
        });
        let feed = async move {
            let mut received = 0u64;
            let mut next = Some(Ok(first));
            loop {
                let chunk = match next.take() {
                    Some(chunk) => chunk,
                    None => match stream.next().await {
                        Some(chunk) => chunk,
                        None => break,
                    },
                };
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(s) => return abort(&chunks_tx, StreamError::from_client(&s)).await,
                };
                if !chunk.key.is_empty() && (chunk.key != first_key || chunk.namespace != first_namespace) {
                    return abort(&chunks_tx, StreamError::KeyChanged).await;
                }
                received += chunk.data.len() as u64;
                if received > total {
                    return abort(&chunks_tx, StreamError::Overflow { announced: total }).await;
                }
                // Pieces of at most one engine chunk; a piece the sender made
                // smaller is passed on as it is.
                let mut data = chunk.data;
                while !data.is_empty() {
                    let piece = data.split_to(data.len().min(CHUNK_LEN_MAX));
                    if chunks_tx.send(Ok(piece)).await.is_err() {
                        // The shard stopped taking chunks: its error is the answer.
                        return Ok(());
                    }
                }
                next = None;
            }
            if received < total {
                return abort(&chunks_tx, StreamError::Short { announced: total, received }).await;
            }
            Ok(())
        };
        let (fed, committed) = tokio::join!(feed, commit);
        fed?;
        let outcome = self.track_put(&held_key, version, committed?.map_err(NodeError::from))?;
        Ok(put_response(outcome, version))
    }

    async fn get_stream(&self, req: pb::GetRequest) -> Result<GetChunkStream, NodeError> {
        self.core.check_serving()?;
        let key = keys::encode(&req.namespace, &req.key)?;
        self.core.refused.check(&key)?;
        let shard = self.core.shard_for(&key);
        let (chunks_tx, chunks) = mpsc::channel(STREAM_CHUNKS_IN_FLIGHT_MAX);
        let head = self.core.call(shard, |head| ShardRequest::GetStream { key, head, chunks: chunks_tx }).await??;
        let head = head.ok_or(NodeError::StreamNotFound)?;
        let first = pb::GetChunk {
            version: head.version,
            total_size: head.total_len,
            data: Bytes::new(),
            expiry_unix_ms: head.expiry_ms,
        };
        // The head rides on the first data chunk; an empty value sends it alone.
        let stream = futures_lite::stream::unfold((chunks, Some(first)), |(mut chunks, mut head)| async move {
            let item = match chunks.recv().await {
                Some(Ok(data)) => Ok(match head.take() {
                    Some(head) => pb::GetChunk { data, ..head },
                    None => pb::GetChunk { data, ..Default::default() },
                }),
                Some(Err(e)) => Err(Status::from(NodeError::Engine(e))),
                None => Ok(head.take()?),
            };
            Some((item, (chunks, head)))
        });
        Ok(Box::pin(stream))
    }

    async fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, NodeError> {
        let epoch = self.core.observe_epoch(req.epoch);
        let state = self.core.state();
        // Figures come from the shards, which answer only once recovered;
        // a heartbeat does not wait for them behind data calls.
        let figures =
            if state == pb::ServingState::Serving { self.core.heartbeat_figures().await? } else { Figures::default() };
        Ok(pb::HeartbeatResponse {
            node_id: self.core.node_id.clone(),
            shards: self.core.shards.len() as u32,
            state: state as i32,
            keys: figures.keys,
            disk_bytes: figures.disk_bytes,
            epoch,
            uptime_ms: self.core.uptime_ms(),
        })
    }

    async fn stats(&self) -> Result<pb::StatsResponse, NodeError> {
        self.core.check_serving()?;
        let stats = self.core.shard_stats().await?;
        let shards = stats
            .iter()
            .zip(&self.core.shards)
            .map(|(s, handle)| pb::ShardStats {
                shard: handle.shard,
                keys: s.keys,
                disk_bytes: s.disk_bytes,
                index_file_bytes: s.index_file_bytes,
                segments: s.segments.len() as u64,
                puts: s.puts,
                put_bytes: s.put_bytes,
                gets: s.gets,
                get_hits: s.get_hits,
                get_bytes: s.get_bytes,
                deletes: s.deletes,
                stale_writes: s.stale_writes,
                expired_reads: s.expired_reads,
                corrupt_records: s.corrupt_records,
                disk_full_rejections: s.disk_full_rejections,
                commits: s.commits,
                committed_records: s.committed_records,
                fsyncs: s.fsyncs,
                fsync_us_total: s.fsync_us_total,
                fsync_us_max: s.fsync_us_max,
                compaction_runs: s.compaction_runs,
                compaction_bytes_reclaimed: s.compaction_bytes_reclaimed,
                compaction_records_moved: s.compaction_records_moved,
                segments_dropped: s.segments_dropped,
                checkpoints: s.checkpoints,
                cache_hits: s.cache.hits,
                cache_misses: s.cache.misses,
                cache_evictions: s.cache.evictions,
                cache_entries: s.cache.entries,
                cache_bytes: s.cache.bytes,
                cache_budget_bytes: s.cache.budget_bytes,
                queue_depth: handle.queue_depth(),
                recovered_clean: handle.recovered_clean(),
            })
            .collect();
        Ok(pb::StatsResponse { node_id: self.core.node_id.clone(), shards })
    }

    async fn list_keys(&self, req: pb::ListKeysRequest) -> Result<pb::ListKeysResponse, NodeError> {
        self.core.check_serving()?;
        let shards = self.core.shards.len() as u32;
        let Some(shard) = self.core.shards.get(req.shard as usize) else {
            return Err(NodeError::BadRequest(format!("shard {} does not exist (the node has {shards})", req.shard)));
        };
        if req.limit == 0 || req.limit > LIST_PAGE_LEN_MAX {
            return Err(NodeError::BadRequest(format!("limit {} is outside 1..={LIST_PAGE_LEN_MAX}", req.limit)));
        }
        let start = req.start_fingerprint;
        let end = if req.end_fingerprint == 0 { opticache_engine::listing::LIST_TO_END } else { req.end_fingerprint };
        let limit = req.limit as usize;
        let listing = self
            .core
            .call(shard, |reply| ShardRequest::ListKeys {
                start_fingerprint: start,
                end_fingerprint: end,
                limit,
                reply,
            })
            .await??;
        let mut entries = Vec::with_capacity(listing.entries.len());
        for e in listing.entries {
            // Every stored key was made by keys::encode; one that was not is
            // skipped (and logged) rather than sent malformed.
            let Some((namespace, key)) = keys::decode(&e.key) else {
                tracing::warn!(shard = req.shard, fingerprint = e.fingerprint, "listing skipped a malformed key");
                continue;
            };
            entries.push(pb::ListedKey {
                namespace,
                key,
                version: e.version,
                tombstone: e.tombstone,
                expiry_unix_ms: e.expiry_ms,
            });
        }
        Ok(pb::ListKeysResponse {
            entries,
            done: listing.next_fingerprint.is_none(),
            next_fingerprint: listing.next_fingerprint.unwrap_or(0),
        })
    }
}

/// The response stream of GetStream.
pub type GetChunkStream = Pin<Box<dyn Stream<Item = Result<pb::GetChunk, Status>> + Send + 'static>>;

fn put_response(outcome: PutOutcome, version: u64) -> pb::PutResponse {
    match outcome {
        PutOutcome::Applied { .. } => pb::PutResponse { applied: true, version },
        PutOutcome::Stale { stored_version } => pb::PutResponse { applied: false, version: stored_version },
    }
}

fn get_response(found: Option<Value>) -> pb::GetResponse {
    match found {
        Some(v) => pb::GetResponse { found: true, value: v.value, version: v.version, expiry_unix_ms: v.expiry_ms },
        None => pb::GetResponse::default(),
    }
}

/// Tells the shard to drop a streamed write, and fails the call with `why`.
async fn abort(chunks: &mpsc::Sender<Result<Bytes, StreamAborted>>, why: StreamError) -> Result<(), NodeError> {
    let _ = chunks.send(Err(StreamAborted)).await;
    Err(why.into())
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.observed(Rpc::Put, NodeService::put(self, request.into_inner())).await
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.observed(Rpc::Get, NodeService::get(self, request.into_inner())).await
    }

    async fn update(&self, request: Request<pb::UpdateRequest>) -> Result<Response<pb::UpdateResponse>, Status> {
        self.observed(Rpc::Update, NodeService::update(self, request.into_inner())).await
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        self.observed(Rpc::Delete, NodeService::delete(self, request.into_inner())).await
    }

    async fn batch_put(&self, request: Request<pb::BatchPutRequest>) -> Result<Response<pb::BatchPutResponse>, Status> {
        self.observed(Rpc::BatchPut, NodeService::batch_put(self, request.into_inner())).await
    }

    async fn batch_get(&self, request: Request<pb::BatchGetRequest>) -> Result<Response<pb::BatchGetResponse>, Status> {
        self.observed(Rpc::BatchGet, NodeService::batch_get(self, request.into_inner())).await
    }

    async fn put_stream(&self, request: Request<Streaming<pb::PutChunk>>) -> Result<Response<pb::PutResponse>, Status> {
        self.observed(Rpc::PutStream, NodeService::put_stream(self, request.into_inner())).await
    }

    type GetStreamStream = GetChunkStream;

    async fn get_stream(&self, request: Request<pb::GetRequest>) -> Result<Response<GetChunkStream>, Status> {
        self.observed(Rpc::GetStream, NodeService::get_stream(self, request.into_inner())).await
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.observed(Rpc::Heartbeat, NodeService::heartbeat(self, request.into_inner())).await
    }

    async fn stats(&self, _request: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        self.observed(Rpc::Stats, NodeService::stats(self)).await
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.observed(Rpc::ListKeys, NodeService::list_keys(self, request.into_inner())).await
    }
}
