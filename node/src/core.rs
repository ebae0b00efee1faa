//! The state every front task shares: the shards, whether the node serves,
//! its version clock and identity. Routing and the hop to a shard live here
//! so the gRPC service and the metrics endpoint reach shards the same way.
//!
//! Invariant: data calls reach shards only while the state is `Serving`;
//! before every shard has recovered the node answers UNAVAILABLE, so it never
//! serves a partial view.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use opticache_engine::stats::EngineStats;
use opticache_proto::node::v1::ServingState;

use crate::error::NodeError;
use crate::figures::{Figures, HeartbeatFigures, Last, Next};
use crate::metrics::Metrics;
use crate::router::shard_of;
use crate::shard::{ShardHandle, ShardRequest};
use opticache_common::version::{VersionClock, ORIGIN_NODE};

/// What the node's front needs; built once at start-up.
#[derive(Debug)]
pub struct NodeCore {
    pub node_id: String,
    pub shards: Vec<Arc<ShardHandle>>,
    /// The largest single (non-streamed) value.
    pub max_value_bytes: u64,
    pub clock: VersionClock,
    pub metrics: Metrics,
    /// Keys whose newer write was refused for space: not served.
    pub refused: crate::refused::RefusedKeys,
    /// The heartbeat's figures, answered without waiting for the shards.
    figures: HeartbeatFigures,
    state: AtomicU8,
    /// The highest coordinator epoch seen in a heartbeat.
    epoch: AtomicU64,
    started: Instant,
}

impl NodeCore {
    pub fn new(node_id: String, shards: Vec<Arc<ShardHandle>>, max_value_bytes: u64) -> Self {
        let metrics = Metrics::new();
        Self {
            node_id,
            shards,
            max_value_bytes,
            clock: VersionClock::new(ORIGIN_NODE),
            metrics,
            refused: crate::refused::RefusedKeys::default(),
            figures: HeartbeatFigures::default(),
            state: AtomicU8::new(ServingState::Recovering as u8),
            epoch: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn state(&self) -> ServingState {
        ServingState::try_from(i32::from(self.state.load(Ordering::Acquire))).unwrap_or(ServingState::Unspecified)
    }

    pub fn set_state(&self, state: ServingState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Fails unless the node is serving.
    pub fn check_serving(&self) -> Result<(), NodeError> {
        match self.state() {
            ServingState::Serving => Ok(()),
            ServingState::Recovering => Err(NodeError::NotServing("recovering")),
            ServingState::Draining => Err(NodeError::NotServing("draining")),
            ServingState::Unspecified => Err(NodeError::NotServing("starting")),
        }
    }

    /// Remembers `epoch` if it is the highest seen; returns the highest.
    pub fn observe_epoch(&self, epoch: u64) -> u64 {
        self.epoch.fetch_max(epoch, Ordering::AcqRel).max(epoch)
    }

    /// Fencing: refuses a write from a coordinator whose epoch is older than
    /// the highest seen; a newer one is remembered. 0 means "no epoch" (a
    /// node-direct client) and is always accepted.
    pub fn check_epoch(&self, epoch: u64) -> Result<(), NodeError> {
        if epoch == 0 {
            return Ok(());
        }
        let highest = self.observe_epoch(epoch);
        if epoch < highest {
            return Err(NodeError::StaleEpoch { epoch, highest });
        }
        Ok(())
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The shard that owns `engine_key`.
    pub fn shard_for(&self, engine_key: &[u8]) -> &Arc<ShardHandle> {
        &self.shards[shard_of(engine_key, self.shards.len() as u32) as usize]
    }

    /// A version for a write: the caller's, or one stamped here when it sent 0.
    pub fn version_or_stamp(&self, version: u64) -> u64 {
        if version == 0 {
            self.clock.next()
        } else {
            version
        }
    }

    /// Sends a request to `shard` and waits for its answer.
    pub async fn call<T>(
        &self,
        shard: &ShardHandle,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> ShardRequest,
    ) -> Result<T, NodeError> {
        let started = std::time::Instant::now();
        let answer = shard.call(make).await.ok_or(NodeError::ShardStopped(shard.shard));
        self.metrics.observe_shard_call(shard.shard, started.elapsed());
        answer
    }

    /// Every shard's counters, in shard order (requires a serving or
    /// draining node: a recovering shard answers only when it is open).
    pub async fn shard_stats(&self) -> Result<Vec<EngineStats>, NodeError> {
        let mut out = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            out.push(self.call(shard, |reply| ShardRequest::Stats { reply }).await?);
        }
        Ok(out)
    }

    /// Keys and disk bytes for a heartbeat: the last figures the shards
    /// gave, with a refresh started in the background (see [`crate::figures`]).
    pub async fn heartbeat_figures(self: &Arc<Self>) -> Result<Figures, NodeError> {
        match self.figures.begin(Instant::now()) {
            Next::Answer { last, refresh } => {
                if refresh {
                    drop(self.refresh_figures());
                }
                last.map_err(NodeError::ShardFigures)
            }
            // Waits for a task rather than running the refresh here: a caller
            // that gives up (a heartbeat past its deadline drops this future)
            // must not leave the refresh marked as running for ever. The task
            // ends only by finishing, or with the runtime (stopping).
            Next::WaitFirst => self
                .refresh_figures()
                .await
                .map_err(|_| NodeError::NotServing("stopping"))?
                .map_err(NodeError::ShardFigures),
            Next::Unresponsive { waited } => {
                Err(NodeError::ShardUnresponsive { waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX) })
            }
        }
    }

    /// Runs the refresh [`HeartbeatFigures::begin`] handed out, to its end,
    /// on a task of its own.
    fn refresh_figures(self: &Arc<Self>) -> tokio::task::JoinHandle<Last> {
        let pending = RefreshPending { core: Arc::clone(self), ended: false };
        tokio::spawn(async move {
            let mut pending = pending;
            let last = pending.core.sum_shard_figures().await.map_err(|e| e.to_string());
            pending.core.figures.finish(last.clone());
            pending.ended = true;
            last
        })
    }

    async fn sum_shard_figures(&self) -> Result<Figures, NodeError> {
        let stats = self.shard_stats().await?;
        Ok(Figures { keys: stats.iter().map(|s| s.keys).sum(), disk_bytes: stats.iter().map(|s| s.disk_bytes).sum() })
    }
}

/// Ends a figures refresh as failed if its task dies before ending it, so
/// no refresh stays marked as running.
struct RefreshPending {
    core: Arc<NodeCore>,
    ended: bool,
}

impl Drop for RefreshPending {
    fn drop(&mut self) {
        if !self.ended {
            self.core.figures.finish(Err("the figures task ended early".to_owned()));
        }
    }
}
