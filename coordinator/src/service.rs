//! The public API (`opticache.v1.OptiCache`) on top of the cluster: each
//! call is checked, stamped with a version, and fanned out to the key's
//! replicas (writes) or sent to the first live one with fail-over (reads).
//!
//! Invariants:
//! - every request is checked in full before any node is called;
//! - a write is acknowledged only when `write_quorum` replicas have it
//!   durably (a node answers a put only after its fdatasync); a replica that
//!   was not reached is marked as having missed a write, which takes it out of
//!   the read path until it has caught up;
//! - reads go to UP replicas, best first (to a SUSPECT one that missed no
//!   write only when none is UP), and fail over on a replica failure
//!   (unavailable, timeout, data loss), never on an answer;
//! - UpdateCache's compare-and-set is decided at the key's first UP replica,
//!   and its result is then written to the other replicas at the same version;
//! - a streamed write's last chunk reaches the nodes only after the client's
//!   stream ended cleanly at exactly total_size bytes, so a refused stream
//!   leaves nothing stored on any replica.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{Stream, StreamExt};
use opticache_common::version::{unix_ms, VersionClock};
use opticache_proto::fencing;
use opticache_proto::node::v1 as node;
use opticache_proto::v1 as pb;
use pb::opti_cache_server::OptiCache;
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::cluster::Cluster;
use crate::error::{check_key, is_replica_failure, CoordError};
use crate::failover::{Failover, Role};
use crate::health::NodeState;

/// Entries one batch call takes at most (the nodes' limit).
pub const BATCH_LEN_MAX: usize = 4096;
/// Key and value bytes one batch call carries at most (the nodes' limit).
pub const BATCH_BYTES_MAX: u64 = 64 << 20;
/// The largest streamed value (the engine's chunked limit).
pub const STREAM_VALUE_BYTES_MAX: u64 = 64 << 30;
/// Chunks queued towards each replica of a streamed write.
const STREAM_CHUNKS_IN_FLIGHT_MAX: usize = 2;
/// Times a write found a newer version at a replica and is stamped again.
const STALE_RESTAMPS_MAX: usize = 3;
/// Times a write refused for an epoch this coordinator has since taken is
/// sent again (it was promoted while the write was on its way).
const FENCED_RESENDS_MAX: usize = 1;
/// How long one node call may take before the replica counts as failed.
pub const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The service; cheap to clone.
#[derive(Clone, Debug)]
pub struct CoordinatorService {
    pub cluster: Arc<Cluster>,
    pub clock: Arc<VersionClock>,
    pub failover: Arc<Mutex<Failover>>,
    pub max_value_bytes: u64,
    pub metrics: Arc<crate::metrics::Metrics>,
}

type NodeResult<T> = Result<T, Status>;

/// Runs `f` against node `i` under [`NODE_CALL_TIMEOUT`].
async fn on_node<T, F>(
    cluster: &Cluster,
    i: usize,
    f: impl FnOnce(node::node_client::NodeClient<opticache_security::AuthedChannel>) -> F,
) -> NodeResult<T>
where
    F: std::future::Future<Output = Result<Response<T>, Status>>,
{
    match tokio::time::timeout(NODE_CALL_TIMEOUT, f(cluster.members[i].client.clone())).await {
        Ok(result) => result.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("node call timed out")),
    }
}

fn expiry_of(ttl_ms: u64) -> u64 {
    if ttl_ms == 0 {
        0
    } else {
        unix_ms().saturating_add(ttl_ms)
    }
}

/// Tallies a fan-out: replicas that have the write, and the first definitive
/// refusal (an answer such as a full disk, not a replica failure).
#[derive(Debug, Default)]
struct Tally {
    acks: usize,
    refusal: Option<(String, Status)>,
    failed: Vec<String>,
}

impl CoordinatorService {
    /// Runs `f`, recording its latency and outcome under `rpc`.
    async fn observed<T>(
        &self,
        rpc: crate::metrics::Rpc,
        f: impl std::future::Future<Output = Result<T, CoordError>>,
    ) -> Result<Response<T>, Status> {
        let started = std::time::Instant::now();
        let result = f.await.map_err(Status::from);
        self.metrics.observe(rpc, result.as_ref().err().map(Status::code), started.elapsed());
        result.map(Response::new)
    }

    /// This coordinator's epoch, sent with every write so that nodes refuse a
    /// deposed primary's.
    fn epoch(&self) -> u64 {
        self.failover.lock().expect("failover lock").epoch()
    }

    /// Sends a write that `send` builds for a given epoch, with this
    /// coordinator's current one. A node that has seen a newer epoch refuses
    /// it (fencing, [`fencing`]): the write was stamped before this
    /// coordinator was promoted, or after another one took over. Either way
    /// this coordinator learns the epoch (a primary steps down) and sends the
    /// write once more with it; the nodes decide by version, and a deposed
    /// primary's decisions (repair, takeover) stop with its role. Fenced
    /// again, the client gets UNAVAILABLE and retries.
    async fn fenced<T, F>(&self, send: impl Fn(u64) -> F) -> NodeResult<T>
    where
        F: std::future::Future<Output = NodeResult<T>>,
    {
        let mut sent_with = self.epoch();
        for _ in 0..FENCED_RESENDS_MAX {
            match send(sent_with).await {
                Err(refusal) if fencing::fenced_by(&refusal).is_some() => {
                    let own = self.after_fence(&refusal);
                    if own <= sent_with {
                        return Err(self.deposed(&refusal));
                    }
                    sent_with = own;
                }
                answer => return answer,
            }
        }
        send(sent_with).await.map_err(|s| self.for_client(s))
    }

    /// Learns the epoch a fencing refusal names (stepping down if it is
    /// another primary's); returns this coordinator's epoch afterwards.
    fn after_fence(&self, refusal: &Status) -> u64 {
        let fenced_by = fencing::fenced_by(refusal).unwrap_or(0);
        crate::failover::learn_epoch(&self.failover, fenced_by, "a write's fencing refusal")
    }

    /// A node's refusal as the client gets it: a fenced write, once its epoch
    /// is learned, is [`Self::deposed`]; anything else passes through.
    fn for_client(&self, refusal: Status) -> Status {
        if fencing::fenced_by(&refusal).is_some() {
            self.after_fence(&refusal);
            self.deposed(&refusal)
        } else {
            refusal
        }
    }

    /// The refusal a client gets for a fenced write: UNAVAILABLE (retry, at
    /// the primary), still marked as a fence so that it is not taken for a
    /// replica failure.
    fn deposed(&self, refusal: &Status) -> Status {
        let fenced_by = fencing::fenced_by(refusal).unwrap_or(0);
        let mut status = Status::unavailable(format!(
            "a node has seen coordinator epoch {fenced_by}, newer than this write's (this coordinator's is now {}); \
             retry at the primary",
            self.epoch()
        ));
        fencing::mark(&mut status, fenced_by);
        status
    }

    fn write_targets(&self, replicas: &[usize]) -> Vec<usize> {
        let mut targets = Vec::with_capacity(replicas.len());
        for &i in replicas {
            if self.cluster.members[i].state() == NodeState::Down {
                self.cluster.write_missed(i);
            } else {
                targets.push(i);
            }
        }
        targets
    }

    /// The replicas a read may go to, best first: the UP ones; if none is,
    /// the SUSPECT ones that missed no write (late on heartbeats, not stale).
    fn readable(&self, replicas: &[usize]) -> Vec<usize> {
        let up: Vec<usize> =
            replicas.iter().copied().filter(|&i| self.cluster.members[i].state() == NodeState::Up).collect();
        if !up.is_empty() {
            return up;
        }
        replicas.iter().copied().filter(|&i| self.cluster.members[i].serves_reads_as_fallback()).collect()
    }

    fn tally<T>(&self, targets: &[usize], results: Vec<NodeResult<T>>, mut on_ok: impl FnMut(T)) -> Tally {
        let mut tally = Tally::default();
        for (&i, result) in targets.iter().zip(results) {
            match result {
                Ok(v) => {
                    tally.acks += 1;
                    on_ok(v);
                }
                Err(s) if is_replica_failure(&s) => {
                    self.cluster.write_missed(i);
                    tally.failed.push(format!("{} ({})", self.cluster.members[i].address, s.message()));
                }
                Err(s) => {
                    tally.refusal.get_or_insert((self.cluster.members[i].address.clone(), s));
                }
            }
        }
        tally
    }

    fn check_quorum(&self, tally: Tally, replicas: usize) -> Result<(), CoordError> {
        let quorum = self.cluster.write_quorum.min(replicas.max(1));
        if tally.acks >= quorum {
            return Ok(());
        }
        if let Some((node, status)) = tally.refusal {
            return Err(CoordError::Node { node, status });
        }
        Err(CoordError::Unavailable(format!(
            "the write reached {} of the {quorum} replicas it needs; failed: {}",
            tally.acks,
            if tally.failed.is_empty() { "no live replica for the key".to_string() } else { tally.failed.join(", ") }
        )))
    }

    fn check_value(&self, len: usize) -> Result<(), CoordError> {
        if len as u64 > self.max_value_bytes {
            return Err(CoordError::TooLarge(format!(
                "value of {len} bytes is over max_value_bytes ({}); use WriteStream",
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    async fn write(&self, req: pb::WriteRequest) -> Result<pb::WriteResponse, CoordError> {
        check_key(&req.namespace, &req.key)?;
        self.check_value(req.value.len())?;
        let replicas = self.cluster.replicas_of(&req.namespace, &req.key);
        let mut put = node::PutRequest {
            namespace: Bytes::from(req.namespace.into_bytes()),
            key: req.key,
            value: req.value,
            version: 0,
            expiry_unix_ms: expiry_of(req.ttl_ms),
            epoch: 0,
        };
        // A replica that already holds a newer version refuses the write as
        // stale. When that version came from a clock ahead of ours (the other
        // coordinator's), a client writing through one coordinator after the
        // other would lose its later write: stamp again past it and resend.
        // Concurrent writers still race, and the higher version wins.
        for _ in 0..STALE_RESTAMPS_MAX {
            put.version = self.clock.next();
            let targets = self.write_targets(&replicas);
            let calls = targets
                .iter()
                .map(|&i| {
                    let put = &put;
                    self.fenced(move |epoch| {
                        let put = node::PutRequest { epoch, ..put.clone() };
                        on_node(&self.cluster, i, move |mut c| async move { c.put(put).await })
                    })
                })
                .collect::<Vec<_>>();
            let results = opticache_common::join::join_all(calls).await;
            let mut overtaken = false;
            let tally = self.tally(&targets, results, |r: node::PutResponse| {
                self.clock.observe(r.version);
                overtaken |= !r.applied;
            });
            self.check_quorum(tally, replicas.len())?;
            if !overtaken {
                return Ok(pb::WriteResponse { version: put.version });
            }
        }
        // Still overtaken: others keep writing this key with newer versions;
        // this write is ordered before theirs, as last-writer-wins says.
        Ok(pb::WriteResponse { version: put.version })
    }

    async fn read(&self, req: pb::ReadRequest) -> Result<pb::ReadResponse, CoordError> {
        check_key(&req.namespace, &req.key)?;
        let replicas = self.cluster.replicas_of(&req.namespace, &req.key);
        let get = node::GetRequest { namespace: Bytes::from(req.namespace.into_bytes()), key: req.key };
        let mut failures = Vec::new();
        for i in self.readable(&replicas) {
            let get = get.clone();
            match on_node(&self.cluster, i, move |mut c| async move { c.get(get).await }).await {
                Ok(r) => {
                    self.clock.observe(r.version);
                    return Ok(pb::ReadResponse { found: r.found, value: r.value, version: r.version });
                }
                Err(s) if is_replica_failure(&s) => {
                    failures.push(format!("{} ({})", self.cluster.members[i].address, s.message()))
                }
                Err(s) => return Err(CoordError::Node { node: self.cluster.members[i].address.clone(), status: s }),
            }
        }
        Err(no_live_replica(&failures))
    }

    async fn update(&self, req: pb::UpdateRequest) -> Result<pb::UpdateResponse, CoordError> {
        check_key(&req.namespace, &req.key)?;
        self.check_value(req.value.len())?;
        let replicas = self.cluster.replicas_of(&req.namespace, &req.key);
        let namespace = Bytes::from(req.namespace.into_bytes());
        let expiry = expiry_of(req.ttl_ms);
        let version = self.clock.next();
        let mut failures = Vec::new();
        for first in self.readable(&replicas) {
            let update = node::UpdateRequest {
                namespace: namespace.clone(),
                key: req.key.clone(),
                value: req.value.clone(),
                version,
                expected_version: req.expected_version,
                expiry_unix_ms: expiry,
                epoch: 0,
            };
            let decided = self.fenced(|epoch| {
                let update = node::UpdateRequest { epoch, ..update.clone() };
                on_node(&self.cluster, first, |mut c| async move { c.update(update).await })
            });
            match decided.await {
                Ok(_) => {
                    // Decided: the other replicas get the result at the same version.
                    let others: Vec<usize> =
                        self.write_targets(&replicas).into_iter().filter(|&i| i != first).collect();
                    let put = node::PutRequest {
                        namespace,
                        key: req.key,
                        value: req.value,
                        version,
                        expiry_unix_ms: expiry,
                        epoch: 0,
                    };
                    let calls = others
                        .iter()
                        .map(|&i| {
                            let put = &put;
                            self.fenced(move |epoch| {
                                let put = node::PutRequest { epoch, ..put.clone() };
                                on_node(&self.cluster, i, move |mut c| async move { c.put(put).await })
                            })
                        })
                        .collect::<Vec<_>>();
                    let mut tally = self.tally(&others, opticache_common::join::join_all(calls).await, |_| {});
                    tally.acks += 1;
                    self.check_quorum(tally, replicas.len())?;
                    return Ok(pb::UpdateResponse { version });
                }
                Err(s) if s.code() == Code::NotFound => return Err(CoordError::NotFound),
                Err(s) if s.code() == Code::FailedPrecondition => {
                    return Err(CoordError::VersionConflict(s.message().to_string()))
                }
                Err(s) if s.code() == Code::Aborted => {
                    return Err(CoordError::VersionConflict(format!("a newer write won: {}", s.message())))
                }
                Err(s) if is_replica_failure(&s) => {
                    failures.push(format!("{} ({})", self.cluster.members[first].address, s.message()))
                }
                Err(s) => {
                    return Err(CoordError::Node { node: self.cluster.members[first].address.clone(), status: s })
                }
            }
        }
        Err(no_live_replica(&failures))
    }

    async fn delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, CoordError> {
        check_key(&req.namespace, &req.key)?;
        let version = self.clock.next();
        let replicas = self.cluster.replicas_of(&req.namespace, &req.key);
        let targets = self.write_targets(&replicas);
        let delete =
            node::DeleteRequest { namespace: Bytes::from(req.namespace.into_bytes()), key: req.key, version, epoch: 0 };
        let calls = targets
            .iter()
            .map(|&i| {
                let delete = &delete;
                self.fenced(move |epoch| {
                    let delete = node::DeleteRequest { epoch, ..delete.clone() };
                    on_node(&self.cluster, i, move |mut c| async move { c.delete(delete).await })
                })
            })
            .collect::<Vec<_>>();
        let mut deleted = false;
        let tally = self.tally(&targets, opticache_common::join::join_all(calls).await, |r: node::DeleteResponse| {
            deleted |= r.deleted
        });
        self.check_quorum(tally, replicas.len())?;
        Ok(pb::DeleteResponse { deleted })
    }

    async fn batch_write(&self, req: pb::BatchWriteRequest) -> Result<pb::BatchWriteResponse, CoordError> {
        if req.entries.len() > BATCH_LEN_MAX {
            return Err(CoordError::TooLarge(format!(
                "batch of {} entries is over the limit of {BATCH_LEN_MAX}",
                req.entries.len()
            )));
        }
        let mut bytes = 0u64;
        for e in &req.entries {
            check_key(&req.namespace, &e.key)?;
            self.check_value(e.value.len())?;
            bytes += (e.key.len() + e.value.len()) as u64;
        }
        if bytes > BATCH_BYTES_MAX {
            return Err(CoordError::TooLarge(format!("batch of {bytes} bytes is over the limit of {BATCH_BYTES_MAX}")));
        }
        let namespace = Bytes::from(req.namespace.clone().into_bytes());
        let n = self.cluster.members.len();
        // Per node: the entries (by position) it holds a replica of.
        let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut replica_counts = Vec::with_capacity(req.entries.len());
        let mut versions = Vec::with_capacity(req.entries.len());
        for (pos, e) in req.entries.iter().enumerate() {
            let replicas = self.cluster.replicas_of(&req.namespace, &e.key);
            replica_counts.push(replicas.len());
            for i in self.write_targets(&replicas) {
                per_node[i].push(pos);
            }
            versions.push(self.clock.next());
        }
        let targets: Vec<usize> = (0..n).filter(|&i| !per_node[i].is_empty()).collect();
        let calls =
            targets
                .iter()
                .map(|&i| {
                    let entries = per_node[i]
                        .iter()
                        .map(|&pos| {
                            let e = &req.entries[pos];
                            node::PutRequest {
                                namespace: namespace.clone(),
                                key: e.key.clone(),
                                value: e.value.clone(),
                                version: versions[pos],
                                expiry_unix_ms: expiry_of(e.ttl_ms),
                                epoch: 0,
                            }
                        })
                        .collect::<Vec<_>>();
                    self.fenced(move |epoch| {
                        let entries = entries.iter().map(|e| node::PutRequest { epoch, ..e.clone() }).collect();
                        on_node(&self.cluster, i, |mut c| async move {
                            c.batch_put(node::BatchPutRequest { entries }).await
                        })
                    })
                })
                .collect::<Vec<_>>();
        let mut acks = vec![0usize; req.entries.len()];
        let mut failed = Vec::new();
        let mut refusal = None;
        for (&i, result) in targets.iter().zip(opticache_common::join::join_all(calls).await) {
            match result {
                Ok(_) => per_node[i].iter().for_each(|&pos| acks[pos] += 1),
                Err(s) if is_replica_failure(&s) => {
                    self.cluster.write_missed(i);
                    failed.push(format!("{} ({})", self.cluster.members[i].address, s.message()));
                }
                Err(s) => {
                    refusal.get_or_insert((self.cluster.members[i].address.clone(), s));
                }
            }
        }
        for (pos, &count) in acks.iter().enumerate() {
            let quorum = self.cluster.write_quorum.min(replica_counts[pos].max(1));
            if count < quorum {
                if let Some((node, status)) = refusal {
                    return Err(CoordError::Node { node, status });
                }
                return Err(CoordError::Unavailable(format!(
                    "entry {pos} reached {count} of the {quorum} replicas it needs; failed: {}",
                    failed.join(", ")
                )));
            }
        }
        Ok(pb::BatchWriteResponse { versions })
    }

    async fn batch_read(&self, req: pb::BatchReadRequest) -> Result<pb::BatchReadResponse, CoordError> {
        if req.keys.len() > BATCH_LEN_MAX {
            return Err(CoordError::TooLarge(format!(
                "batch of {} keys is over the limit of {BATCH_LEN_MAX}",
                req.keys.len()
            )));
        }
        for k in &req.keys {
            check_key(&req.namespace, k)?;
        }
        let namespace = Bytes::from(req.namespace.clone().into_bytes());
        // Each key's readable replicas, best first; a round asks each key's
        // next one, grouped per node.
        let mut candidates: Vec<std::collections::VecDeque<usize>> =
            req.keys.iter().map(|k| self.readable(&self.cluster.replicas_of(&req.namespace, k)).into()).collect();
        let mut results: Vec<Option<pb::ReadResponse>> = vec![None; req.keys.len()];
        let mut failures = Vec::new();
        let mut bytes = 0u64;
        loop {
            let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); self.cluster.members.len()];
            for (pos, c) in candidates.iter_mut().enumerate() {
                if results[pos].is_none() {
                    match c.front() {
                        Some(&i) => per_node[i].push(pos),
                        None => return Err(no_live_replica(&failures)),
                    }
                }
            }
            let targets: Vec<usize> = (0..per_node.len()).filter(|&i| !per_node[i].is_empty()).collect();
            if targets.is_empty() {
                break;
            }
            let calls = targets
                .iter()
                .map(|&i| {
                    let keys = per_node[i]
                        .iter()
                        .map(|&pos| node::GetRequest { namespace: namespace.clone(), key: req.keys[pos].clone() })
                        .collect::<Vec<_>>();
                    on_node(&self.cluster, i, |mut c| async move { c.batch_get(node::BatchGetRequest { keys }).await })
                })
                .collect::<Vec<_>>();
            for (&i, result) in targets.iter().zip(opticache_common::join::join_all(calls).await) {
                match result {
                    Ok(r) => {
                        for (&pos, got) in per_node[i].iter().zip(r.results) {
                            bytes += got.value.len() as u64;
                            self.clock.observe(got.version);
                            results[pos] =
                                Some(pb::ReadResponse { found: got.found, value: got.value, version: got.version });
                        }
                    }
                    Err(s) if is_replica_failure(&s) => {
                        failures.push(format!("{} ({})", self.cluster.members[i].address, s.message()));
                        for &pos in &per_node[i] {
                            candidates[pos].pop_front();
                        }
                    }
                    Err(s) => {
                        return Err(CoordError::Node { node: self.cluster.members[i].address.clone(), status: s })
                    }
                }
            }
            if bytes > BATCH_BYTES_MAX {
                return Err(CoordError::TooLarge(format!(
                    "the values read are over the batch limit of {BATCH_BYTES_MAX} bytes"
                )));
            }
        }
        Ok(pb::BatchReadResponse { results: results.into_iter().map(|r| r.unwrap_or_default()).collect() })
    }

    async fn write_stream(&self, mut stream: Streaming<pb::WriteChunk>) -> Result<pb::WriteResponse, CoordError> {
        let first = match stream.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(s)) => return Err(CoordError::InvalidArgument(format!("the stream failed: {}", s.message()))),
            None => return Err(CoordError::InvalidArgument("the stream carried no chunk".into())),
        };
        if first.key.is_empty() {
            return Err(CoordError::InvalidArgument("the first chunk carries no key".into()));
        }
        check_key(&first.namespace, &first.key)?;
        let total = first.total_size;
        if total > STREAM_VALUE_BYTES_MAX {
            return Err(CoordError::TooLarge(format!(
                "total_size {total} is over the limit of {STREAM_VALUE_BYTES_MAX}"
            )));
        }
        let version = self.clock.next();
        let replicas = self.cluster.replicas_of(&first.namespace, &first.key);
        let targets = self.write_targets(&replicas);
        let mut head = Some(node::PutChunk {
            namespace: Bytes::from(first.namespace.clone().into_bytes()),
            key: first.key.clone(),
            version,
            expiry_unix_ms: expiry_of(first.ttl_ms),
            total_size: total,
            data: Bytes::new(),
            epoch: self.epoch(),
        });
        // A stream cannot be sent again: a fenced one is refused (UNAVAILABLE).
        let mut senders = Vec::with_capacity(targets.len());
        let mut calls = Vec::with_capacity(targets.len());
        for &i in &targets {
            let (tx, rx) = mpsc::channel::<node::PutChunk>(STREAM_CHUNKS_IN_FLIGHT_MAX);
            let mut client = self.cluster.members[i].client.clone();
            calls.push(tokio::spawn(async move {
                client.put_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map(Response::into_inner)
            }));
            senders.push(Some(tx));
        }
        // Every error below returns with the senders dropped, which ends the
        // nodes' streams cleanly, not with an error: a node then commits if
        // it has total_size bytes. So the last chunk received is held back
        // until the client's stream has ended cleanly at exactly total_size
        // bytes; before that, a node never has all of them, and a refused
        // stream (too much data, a client error after the last byte) leaves
        // nothing stored.
        let mut received = 0u64;
        let mut next = Some(first);
        let mut held: Option<node::PutChunk> = None;
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match stream.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(s)) => {
                        return Err(CoordError::InvalidArgument(format!("the stream failed: {}", s.message())));
                    }
                    None => break,
                },
            };
            received += chunk.data.len() as u64;
            if received > total {
                return Err(CoordError::TooLarge(format!("the stream sent more than its total_size of {total} bytes")));
            }
            let out = match head.take() {
                Some(head) => node::PutChunk { data: chunk.data, ..head },
                None => node::PutChunk { data: chunk.data, ..Default::default() },
            };
            if let Some(previous) = held.replace(out) {
                send_to_replicas(&mut senders, previous).await;
            }
        }
        if received < total {
            return Err(CoordError::InvalidArgument(format!("the stream ended after {received} of {total} bytes")));
        }
        if let Some(last) = held {
            send_to_replicas(&mut senders, last).await;
        }
        drop(senders);
        let mut results = Vec::with_capacity(calls.len());
        for call in calls {
            results.push(
                match call.await {
                    Ok(r) => r,
                    Err(e) => Err(Status::internal(e.to_string())),
                }
                .map_err(|s| self.for_client(s)),
            );
        }
        let tally = self.tally(&targets, results, |_| {});
        self.check_quorum(tally, replicas.len())?;
        Ok(pb::WriteResponse { version })
    }

    async fn read_stream(&self, req: pb::ReadRequest) -> Result<ReadChunkStream, CoordError> {
        check_key(&req.namespace, &req.key)?;
        let replicas = self.cluster.replicas_of(&req.namespace, &req.key);
        let get = node::GetRequest { namespace: Bytes::from(req.namespace.into_bytes()), key: req.key };
        let mut failures = Vec::new();
        for i in self.readable(&replicas) {
            let mut client = self.cluster.members[i].client.clone();
            let opened = tokio::time::timeout(NODE_CALL_TIMEOUT, client.get_stream(get.clone())).await;
            let mut chunks = match opened {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(s)) if s.code() == Code::NotFound => {
                    return Err(CoordError::Node {
                        node: self.cluster.members[i].address.clone(),
                        status: Status::not_found("no live value for the key"),
                    })
                }
                Ok(Err(s)) if is_replica_failure(&s) => {
                    failures.push(format!("{} ({})", self.cluster.members[i].address, s.message()));
                    continue;
                }
                Ok(Err(s)) => {
                    return Err(CoordError::Node { node: self.cluster.members[i].address.clone(), status: s })
                }
                Err(_) => {
                    failures.push(format!("{} (timed out)", self.cluster.members[i].address));
                    continue;
                }
            };
            // The first chunk tells a miss or a failure before anything is sent on.
            let first = match chunks.message().await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Err(CoordError::Node {
                        node: self.cluster.members[i].address.clone(),
                        status: Status::not_found("no live value for the key"),
                    })
                }
                Err(s) if s.code() == Code::NotFound => {
                    return Err(CoordError::Node {
                        node: self.cluster.members[i].address.clone(),
                        status: Status::not_found("no live value for the key"),
                    })
                }
                Err(s) if is_replica_failure(&s) => {
                    failures.push(format!("{} ({})", self.cluster.members[i].address, s.message()));
                    continue;
                }
                Err(s) => return Err(CoordError::Node { node: self.cluster.members[i].address.clone(), status: s }),
            };
            self.clock.observe(first.version);
            let head = pb::ReadChunk { version: first.version, total_size: first.total_size, data: first.data };
            let rest = futures_lite::stream::unfold(Some(chunks), |state| async move {
                let mut chunks = state?;
                match chunks.message().await {
                    Ok(Some(c)) => Some((Ok(pb::ReadChunk { data: c.data, ..Default::default() }), Some(chunks))),
                    Ok(None) => None,
                    Err(s) => Some((Err(s), None)),
                }
            });
            let stream = futures_lite::stream::once(Ok(head)).chain(rest);
            return Ok(Box::pin(stream));
        }
        Err(no_live_replica(&failures))
    }

    fn cluster_status(&self) -> pb::ClusterStatusResponse {
        let (role, epoch) = {
            let f = self.failover.lock().expect("failover lock");
            (f.role(), f.epoch())
        };
        let nodes = self
            .cluster
            .members
            .iter()
            .map(|m| {
                let figures = m.figures();
                pb::NodeStatus {
                    address: m.address.clone(),
                    state: public_state(m.state()) as i32,
                    shards: figures.shards,
                    keys: figures.keys,
                    disk_bytes: figures.disk_bytes,
                }
            })
            .collect();
        pb::ClusterStatusResponse {
            role: match role {
                Role::Primary => pb::Role::Primary,
                Role::Standby => pb::Role::Standby,
            } as i32,
            epoch,
            nodes,
        }
    }
}

pub fn public_state(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Up => pb::NodeState::Up,
        NodeState::Suspect => pb::NodeState::Suspect,
        NodeState::Down => pb::NodeState::Down,
        NodeState::Recovering => pb::NodeState::Recovering,
    }
}

/// Sends `chunk` to every replica of a streamed write still taking chunks.
async fn send_to_replicas(senders: &mut [Option<mpsc::Sender<node::PutChunk>>], chunk: node::PutChunk) {
    for sender in senders.iter_mut() {
        if let Some(tx) = sender {
            if tx.send(chunk.clone()).await.is_err() {
                *sender = None; // that replica failed; its answer says why
            }
        }
    }
}

fn no_live_replica(failures: &[String]) -> CoordError {
    if failures.is_empty() {
        CoordError::Unavailable("no live replica for the key".into())
    } else {
        CoordError::Unavailable(format!("no live replica for the key; tried {}", failures.join(", ")))
    }
}

/// The response stream of ReadStream.
pub type ReadChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ReadChunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl OptiCache for CoordinatorService {
    async fn write_cache(&self, request: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        self.observed(crate::metrics::Rpc::WriteCache, self.write(request.into_inner())).await
    }

    async fn read_cache(&self, request: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        self.observed(crate::metrics::Rpc::ReadCache, self.read(request.into_inner())).await
    }

    async fn update_cache(&self, request: Request<pb::UpdateRequest>) -> Result<Response<pb::UpdateResponse>, Status> {
        self.observed(crate::metrics::Rpc::UpdateCache, self.update(request.into_inner())).await
    }

    async fn delete_cache(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        self.observed(crate::metrics::Rpc::DeleteCache, self.delete(request.into_inner())).await
    }

    async fn batch_write(
        &self,
        request: Request<pb::BatchWriteRequest>,
    ) -> Result<Response<pb::BatchWriteResponse>, Status> {
        self.observed(crate::metrics::Rpc::BatchWrite, CoordinatorService::batch_write(self, request.into_inner()))
            .await
    }

    async fn batch_read(
        &self,
        request: Request<pb::BatchReadRequest>,
    ) -> Result<Response<pb::BatchReadResponse>, Status> {
        self.observed(crate::metrics::Rpc::BatchRead, CoordinatorService::batch_read(self, request.into_inner())).await
    }

    async fn write_stream(
        &self,
        request: Request<Streaming<pb::WriteChunk>>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.observed(crate::metrics::Rpc::WriteStream, CoordinatorService::write_stream(self, request.into_inner()))
            .await
    }

    type ReadStreamStream = ReadChunkStream;

    async fn read_stream(&self, request: Request<pb::ReadRequest>) -> Result<Response<ReadChunkStream>, Status> {
        self.observed(crate::metrics::Rpc::ReadStream, CoordinatorService::read_stream(self, request.into_inner()))
            .await
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(CoordinatorService::cluster_status(self)))
    }
}
