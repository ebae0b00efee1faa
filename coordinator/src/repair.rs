//! Catch-up of a node that comes back (anti-entropy): every key the node
//! should hold, listed from the other replicas with its version, is copied
//! to it when the node's own copy is older or missing. Last-writer-wins makes
//! copying safe while new writes arrive: a copy older than what the node has
//! changes nothing.
//!
//! Invariants: a node is declared caught up only after a complete pass during
//! which no write to it failed (a failed write bumps its miss generation and
//! the pass starts over); a pass is complete only if every other node was
//! listed, whatever its state (a RECOVERING node still holds the writes it
//! took), because a node that could not be listed may hold the only copy of
//! an acknowledged write. A node that cannot be reached therefore keeps the
//! returning node RECOVERING until it answers or is replaced; keys with an
//! UP replica keep serving from it meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use opticache_common::version::unix_ms;
use opticache_proto::node::v1 as node;

use crate::cluster::Cluster;
use crate::health::NodeState;
use crate::service::NODE_CALL_TIMEOUT;

/// Keys per ListKeys page.
const LIST_PAGE_LEN: u32 = 1024;
/// Keys copied per BatchGet/BatchPut pair (at most the nodes' batch limit).
const COPY_BATCH_LEN: usize = 256;
/// Passes before giving up for now (the next heartbeat tries again).
const PASSES_MAX: usize = 3;
/// An incomplete catch-up is logged at warn level at most this often.
const INCOMPLETE_WARNING_INTERVAL_MS: u64 = 10_000;
static LAST_INCOMPLETE_WARNING_MS: AtomicU64 = AtomicU64::new(0);

/// Brings node `target` up to date; marks it caught up on success.
pub async fn catch_up(cluster: &Cluster, target: usize) {
    let address = cluster.members[target].address.clone();
    for pass in 0..PASSES_MAX {
        let generation = cluster.members[target].miss_generation();
        match copy_missing(cluster, target).await {
            Ok(Pass { copied, unlisted }) if !unlisted.is_empty() => {
                // Tried at every heartbeat while a node is down: warn now and then, not each time.
                let now = unix_ms();
                let last = LAST_INCOMPLETE_WARNING_MS.load(Ordering::Relaxed);
                let message = "catch-up incomplete: these nodes could not be listed and may hold writes it \
                               missed; it stays RECOVERING and tries again at the next heartbeat";
                if now.saturating_sub(last) >= INCOMPLETE_WARNING_INTERVAL_MS {
                    LAST_INCOMPLETE_WARNING_MS.store(now, Ordering::Relaxed);
                    tracing::warn!(node = %address, copied, unlisted = ?unlisted, "{message}");
                } else {
                    tracing::debug!(node = %address, copied, unlisted = ?unlisted, "{message}");
                }
                return;
            }
            Ok(Pass { copied, .. }) => {
                if cluster.members[target].miss_generation() == generation {
                    tracing::info!(node = %address, copied, pass, "node caught up");
                    cluster.caught_up(target);
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(node = %address, error = %e, "catch-up failed; retrying at the next heartbeat");
                return;
            }
        }
    }
}

type Key = (Bytes, Bytes);

/// Every (namespace, key) → version node `i` holds.
async fn holdings(cluster: &Cluster, i: usize) -> Result<HashMap<Key, u64>, String> {
    let mut client = cluster.members[i].client.clone();
    let shards =
        client.heartbeat(node::HeartbeatRequest { epoch: 0 }).await.map_err(|s| s.to_string())?.into_inner().shards;
    let mut out = HashMap::new();
    for shard in 0..shards {
        list_shard(cluster, i, shard, |e| {
            out.insert((e.namespace.clone(), e.key.clone()), e.version);
        })
        .await?;
    }
    Ok(out)
}

async fn list_shard(
    cluster: &Cluster,
    i: usize,
    shard: u32,
    mut each: impl FnMut(&node::ListedKey),
) -> Result<(), String> {
    let mut client = cluster.members[i].client.clone();
    let mut start = 0u64;
    loop {
        let req = node::ListKeysRequest { shard, start_fingerprint: start, end_fingerprint: 0, limit: LIST_PAGE_LEN };
        let page = tokio::time::timeout(NODE_CALL_TIMEOUT, client.list_keys(req))
            .await
            .map_err(|_| "listing timed out".to_string())?
            .map_err(|s| format!("{}: {}", cluster.members[i].address, s.message()))?
            .into_inner();
        page.entries.iter().for_each(&mut each);
        if page.done {
            return Ok(());
        }
        start = page.next_fingerprint;
    }
}

/// What one pass did.
struct Pass {
    copied: u64,
    /// Other nodes that could not be listed (DOWN, or failing to answer).
    unlisted: Vec<String>,
}

/// One pass: copies to `target` what the other nodes hold newer.
async fn copy_missing(cluster: &Cluster, target: usize) -> Result<Pass, String> {
    let have = holdings(cluster, target).await?;
    let mut pass = Pass { copied: 0, unlisted: Vec::new() };
    for source in 0..cluster.members.len() {
        if source == target {
            continue;
        }
        // With one replica per key no other node holds any of the target's keys.
        if cluster.replication_factor < 2 {
            break;
        }
        let address = &cluster.members[source].address;
        if cluster.members[source].state() == NodeState::Down {
            pass.unlisted.push(format!("{address} (down)"));
            continue;
        }
        match copy_from(cluster, source, target, &have).await {
            Ok(copied) => pass.copied += copied,
            Err(e) => pass.unlisted.push(format!("{address} ({e})")),
        }
    }
    Ok(pass)
}

/// Copies to `target` what `source` holds newer than `have`.
async fn copy_from(cluster: &Cluster, source: usize, target: usize, have: &HashMap<Key, u64>) -> Result<u64, String> {
    let mut client = cluster.members[source].client.clone();
    let shards = tokio::time::timeout(NODE_CALL_TIMEOUT, client.heartbeat(node::HeartbeatRequest { epoch: 0 }))
        .await
        .map_err(|_| "heartbeat timed out".to_string())?
        .map_err(|s| s.to_string())?
        .into_inner()
        .shards;
    let mut copied = 0u64;
    for shard in 0..shards {
        let mut wanted = Vec::new();
        list_shard(cluster, source, shard, |e| {
            let Ok(namespace) = std::str::from_utf8(&e.namespace) else { return };
            if !cluster.replicas_of(namespace, &e.key).contains(&target) {
                return;
            }
            let newer = have.get(&(e.namespace.clone(), e.key.clone())).is_none_or(|&v| v < e.version);
            let expired = !e.tombstone && e.expiry_unix_ms != 0 && e.expiry_unix_ms <= unix_ms();
            if newer && !expired {
                wanted.push(e.clone());
            }
        })
        .await?;
        for batch in wanted.chunks(COPY_BATCH_LEN) {
            copied += copy_batch(cluster, source, target, batch).await?;
        }
    }
    Ok(copied)
}

/// Copies `entries` in two calls: one BatchGet from the source, one
/// BatchPut to the target (whose puts share group commits), with tombstones
/// as deletes. A batch too large for one message falls back to key by key.
async fn copy_batch(
    cluster: &Cluster,
    source: usize,
    target: usize,
    entries: &[node::ListedKey],
) -> Result<u64, String> {
    let (tombstones, values): (Vec<&node::ListedKey>, Vec<&node::ListedKey>) =
        entries.iter().partition(|e| e.tombstone);
    let mut to = cluster.members[target].client.clone();
    for e in tombstones {
        let req =
            node::DeleteRequest { namespace: e.namespace.clone(), key: e.key.clone(), version: e.version, epoch: 0 };
        to.delete(req).await.map_err(|s| s.to_string())?;
    }
    if values.is_empty() {
        return Ok(entries.len() as u64);
    }
    let keys = values.iter().map(|e| node::GetRequest { namespace: e.namespace.clone(), key: e.key.clone() }).collect();
    let mut from = cluster.members[source].client.clone();
    let got = match from.batch_get(node::BatchGetRequest { keys }).await {
        Ok(r) => r.into_inner().results,
        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
            for e in values {
                copy_one(cluster, source, target, e.clone()).await?;
            }
            return Ok(entries.len() as u64);
        }
        Err(s) => return Err(s.to_string()),
    };
    // Deleted or expired since the listing: nothing to copy (a tombstone
    // comes in a later pass).
    let puts: Vec<node::PutRequest> = values
        .iter()
        .zip(got)
        .filter(|(_, g)| g.found)
        .map(|(e, g)| node::PutRequest {
            namespace: e.namespace.clone(),
            key: e.key.clone(),
            value: g.value,
            version: g.version,
            expiry_unix_ms: g.expiry_unix_ms,
            epoch: 0,
        })
        .collect();
    if !puts.is_empty() {
        to.batch_put(node::BatchPutRequest { entries: puts }).await.map_err(|s| s.to_string())?;
    }
    Ok(entries.len() as u64)
}

async fn copy_one(cluster: &Cluster, source: usize, target: usize, e: node::ListedKey) -> Result<(), String> {
    let mut to = cluster.members[target].client.clone();
    if e.tombstone {
        let req = node::DeleteRequest { namespace: e.namespace, key: e.key, version: e.version, epoch: 0 };
        to.delete(req).await.map_err(|s| s.to_string())?;
        return Ok(());
    }
    let mut from = cluster.members[source].client.clone();
    let get = node::GetRequest { namespace: e.namespace.clone(), key: e.key.clone() };
    let got = match from.get(get.clone()).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
            return copy_streamed(cluster, source, target, get).await
        }
        Err(s) => return Err(s.to_string()),
    };
    if !got.found {
        return Ok(()); // deleted or expired since the listing: its tombstone comes in a later pass
    }
    let put = node::PutRequest {
        namespace: e.namespace,
        key: e.key,
        value: got.value,
        version: got.version,
        expiry_unix_ms: got.expiry_unix_ms,
        epoch: 0,
    };
    to.put(put).await.map_err(|s| s.to_string())?;
    Ok(())
}

/// Copies a value too large for one message, chunk by chunk.
async fn copy_streamed(cluster: &Cluster, source: usize, target: usize, get: node::GetRequest) -> Result<(), String> {
    let mut from = cluster.members[source].client.clone();
    let mut chunks = from.get_stream(get.clone()).await.map_err(|s| s.to_string())?.into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel::<node::PutChunk>(2);
    let mut to = cluster.members[target].client.clone();
    let put = tokio::spawn(async move { to.put_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    let mut first = true;
    while let Some(c) = chunks.message().await.map_err(|s| s.to_string())? {
        let out = if first {
            first = false;
            node::PutChunk {
                namespace: get.namespace.clone(),
                key: get.key.clone(),
                version: c.version,
                expiry_unix_ms: c.expiry_unix_ms,
                total_size: c.total_size,
                data: c.data,
                epoch: 0,
            }
        } else {
            node::PutChunk { data: c.data, ..Default::default() }
        };
        if tx.send(out).await.is_err() {
            break;
        }
    }
    drop(tx);
    put.await.map_err(|e| e.to_string())?.map_err(|s| s.to_string())?;
    Ok(())
}
