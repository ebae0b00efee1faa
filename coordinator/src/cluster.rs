//! The coordinator's view of the cluster: every cache node with its gRPC
//! client, its health and what its last heartbeat said, plus placement of
//! keys onto them.
//!
//! Invariants:
//! - the node list is fixed at start (from the config); a node's index in it
//!   is stable for the process's life;
//! - every health change goes through [`Cluster::apply_probe`],
//!   [`Cluster::write_missed`], [`Cluster::caught_up`] or
//!   [`Cluster::adopt_states`] (a standby taking the primary's decisions),
//!   each under the node's lock, and is logged once.

use std::sync::Mutex;
use std::time::Duration;

use opticache_proto::node::v1::node_client::NodeClient;
use opticache_security::{AuthedChannel, ClusterLink};

use crate::health::{NodeHealth, NodeState, Probe};
use crate::placement::{key_hash, replicas, PlacementNode};

/// HTTP/2 windows and message sizes towards nodes: a 64 MiB value plus room.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
pub const NODE_MESSAGE_BYTES_MAX: usize = 80 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the last heartbeat answer said about a node.
#[derive(Clone, Debug, Default)]
pub struct NodeFigures {
    pub shards: u32,
    pub keys: u64,
    pub disk_bytes: u64,
}

/// One cache node.
#[derive(Debug)]
pub struct Member {
    pub address: String,
    pub client: NodeClient<AuthedChannel>,
    health: Mutex<(NodeHealth, NodeFigures)>,
    /// Bumped by every write that missed this node: a catch-up pass counts
    /// only if none happened while it ran.
    miss_generation: std::sync::atomic::AtomicU64,
    /// Writes this coordinator saw miss the node (reported to the peer; the
    /// peer's reports do not count here, or the two would echo each other).
    local_missed: std::sync::atomic::AtomicU64,
    /// The peer coordinator's count of writes that missed this node, as last
    /// heard: an increase is a missed write here too.
    peer_missed: std::sync::atomic::AtomicU64,
}

impl Member {
    pub fn state(&self) -> NodeState {
        self.health.lock().expect("health lock").0.state()
    }

    pub fn serves_reads_as_fallback(&self) -> bool {
        self.health.lock().expect("health lock").0.serves_reads_as_fallback()
    }

    pub fn needs_catch_up(&self) -> bool {
        self.health.lock().expect("health lock").0.needs_catch_up()
    }

    /// Writes this coordinator itself saw miss the node.
    pub fn local_missed(&self) -> u64 {
        self.local_missed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn miss_generation(&self) -> u64 {
        self.miss_generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn figures(&self) -> NodeFigures {
        self.health.lock().expect("health lock").1.clone()
    }
}

/// Every node, in config order.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    /// The members' identities hashed for placement, once (in member order).
    placement: Vec<PlacementNode>,
    pub replication_factor: usize,
    pub write_quorum: usize,
}

impl Cluster {
    /// Builds the cluster from node addresses; connections are made lazily,
    /// so a node that is down at start does not stop the coordinator. Calls
    /// carry `link`'s credentials (TLS, the cluster token) when configured.
    pub fn new(
        addresses: &[String],
        replication_factor: usize,
        write_quorum: usize,
        heartbeat_misses: u32,
        link: &ClusterLink,
    ) -> Result<Self, String> {
        let mut members = Vec::with_capacity(addresses.len());
        for address in addresses {
            let endpoint = link
                .endpoint(address)
                .map_err(|e| format!("node address {address}: {e}"))?
                .tcp_nodelay(true)
                .connect_timeout(CONNECT_TIMEOUT)
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
            let client = NodeClient::new(link.authed(endpoint.connect_lazy()))
                .max_decoding_message_size(NODE_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(NODE_MESSAGE_BYTES_MAX);
            members.push(Member {
                address: address.clone(),
                client,
                health: Mutex::new((NodeHealth::new(heartbeat_misses), NodeFigures::default())),
                miss_generation: std::sync::atomic::AtomicU64::new(0),
                local_missed: std::sync::atomic::AtomicU64::new(0),
                peer_missed: std::sync::atomic::AtomicU64::new(0),
            });
        }
        let placement = addresses.iter().map(|a| PlacementNode::new(a.as_str())).collect();
        Ok(Self { members, placement, replication_factor, write_quorum })
    }

    /// The key's replicas, best first (indexes into `members`).
    pub fn replicas_of(&self, namespace: &str, key: &[u8]) -> Vec<usize> {
        replicas(key_hash(namespace.as_bytes(), key), &self.placement, self.replication_factor)
    }

    /// Feeds a heartbeat result into node `i`'s health.
    pub fn apply_probe(&self, i: usize, probe: Probe, figures: Option<NodeFigures>) -> Option<NodeState> {
        let mut guard = self.members[i].health.lock().expect("health lock");
        if let Some(f) = figures {
            guard.1 = f;
        }
        let change = guard.0.on_probe(probe);
        drop(guard);
        self.log_change(i, change);
        change
    }

    /// A write did not reach node `i`.
    pub fn write_missed(&self, i: usize) {
        self.members[i].local_missed.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.mark_missed(i);
    }

    /// Records a missed write of node `i` in its health and miss generation.
    fn mark_missed(&self, i: usize) {
        self.members[i].miss_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let change = self.members[i].health.lock().expect("health lock").0.on_write_missed();
        self.log_change(i, change);
    }

    /// Node `i` has caught up.
    pub fn caught_up(&self, i: usize) {
        let change = self.members[i].health.lock().expect("health lock").0.on_caught_up();
        self.log_change(i, change);
    }

    /// The peer coordinator reports `count` writes missed node `address` so
    /// far; any increase since the last report is a missed write here.
    pub fn peer_missed_writes(&self, address: &str, count: u64) {
        let Some(i) = self.members.iter().position(|m| m.address == address) else { return };
        let before = self.members[i].peer_missed.swap(count, std::sync::atomic::Ordering::AcqRel);
        if count > before {
            self.mark_missed(i);
        }
    }

    /// A standby takes the primary's decisions as its own.
    pub fn adopt_states(&self, states: &[(String, NodeState)]) {
        for (address, state) in states {
            if let Some(i) = self.members.iter().position(|m| &m.address == address) {
                let changed = self.members[i].health.lock().expect("health lock").0.force(*state);
                self.log_change(i, changed);
            }
        }
    }

    fn log_change(&self, i: usize, change: Option<NodeState>) {
        if let Some(state) = change {
            tracing::info!(node = %self.members[i].address, state = ?state, "node state changed");
        }
    }
}
