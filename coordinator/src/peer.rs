//! The two coordinators talk: each sends its role, epoch and node-health
//! decisions to the other every [`PEER_INTERVAL`], and feeds what it hears
//! into its [`Failover`] machine. A standby adopts a primary's decisions, so
//! membership and health are the primary's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opticache_common::version::unix_ms;
use opticache_proto::coordinator::v1 as peer;
use opticache_security::ClusterLink;
use peer::peer_client::PeerClient;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::failover::{Failover, PeerState, Role};
use crate::health::NodeState;

/// How often the coordinators exchange states (and the failover clock ticks).
pub const PEER_INTERVAL: Duration = Duration::from_millis(100);

/// What this coordinator tells its peer.
pub fn my_state(failover: &Mutex<Failover>, cluster: &Cluster, address: &str) -> peer::PeerState {
    let s = failover.lock().expect("failover lock").state();
    peer::PeerState {
        role: match s.role {
            Role::Primary => peer::PeerRole::Primary,
            Role::Standby => peer::PeerRole::Standby,
        } as i32,
        epoch: s.epoch,
        configured_primary: s.configured_primary,
        address: address.to_string(),
        nodes: cluster
            .members
            .iter()
            .map(|m| peer::PeerNode {
                address: m.address.clone(),
                state: wire_state(m.state()) as i32,
                missed_writes: m.local_missed(),
            })
            .collect(),
    }
}

/// Takes in what the peer said.
pub fn hear(failover: &Mutex<Failover>, cluster: &Cluster, said: &peer::PeerState) {
    let role = if said.role == peer::PeerRole::Primary as i32 { Role::Primary } else { Role::Standby };
    let state = PeerState { role, epoch: said.epoch, configured_primary: said.configured_primary };
    let mut f = failover.lock().expect("failover lock");
    if let Some(new_role) = f.on_peer(unix_ms(), state) {
        tracing::info!(role = ?new_role, epoch = f.epoch(), peer = %said.address, "role changed");
    }
    let adopt = f.role() == Role::Standby && role == Role::Primary;
    drop(f);
    // Writes the peer saw miss a node count here too, before any adoption:
    // the primary must learn of them to catch the node up.
    for n in &said.nodes {
        cluster.peer_missed_writes(&n.address, n.missed_writes);
    }
    if adopt {
        let states: Vec<(String, NodeState)> =
            said.nodes.iter().filter_map(|n| node_state(n.state).map(|s| (n.address.clone(), s))).collect();
        cluster.adopt_states(&states);
    }
}

/// The Peer service: answers an exchange with this coordinator's state.
#[derive(Clone, Debug)]
pub struct PeerService {
    pub failover: Arc<Mutex<Failover>>,
    pub cluster: Arc<Cluster>,
    pub address: String,
}

#[tonic::async_trait]
impl peer::peer_server::Peer for PeerService {
    async fn exchange(&self, request: Request<peer::PeerState>) -> Result<Response<peer::PeerState>, Status> {
        hear(&self.failover, &self.cluster, request.get_ref());
        Ok(Response::new(my_state(&self.failover, &self.cluster, &self.address)))
    }
}

/// Ticks the failover clock and exchanges states with the peer (if any)
/// until `stop` turns true.
pub async fn run(
    failover: Arc<Mutex<Failover>>,
    cluster: Arc<Cluster>,
    address: String,
    peer_address: Option<String>,
    link: ClusterLink,
    mut stop: watch::Receiver<bool>,
) {
    let client = peer_address.as_ref().and_then(|a| {
        link.endpoint(a).ok().map(|e| {
            PeerClient::new(link.authed(e.connect_timeout(PEER_INTERVAL * 2).timeout(PEER_INTERVAL * 2).connect_lazy()))
        })
    });
    let mut ticker = tokio::time::interval(PEER_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        {
            let mut f = failover.lock().expect("failover lock");
            if let Some(role) = f.tick(unix_ms()) {
                tracing::info!(role = ?role, epoch = f.epoch(), "role changed: no primary heard");
            }
        }
        if let Some(mut client) = client.clone() {
            let mine = my_state(&failover, &cluster, &address);
            if let Ok(answer) = client.exchange(mine).await {
                hear(&failover, &cluster, answer.get_ref());
            }
        }
    }
}

fn wire_state(state: NodeState) -> peer::PeerNodeState {
    match state {
        NodeState::Up => peer::PeerNodeState::Up,
        NodeState::Suspect => peer::PeerNodeState::Suspect,
        NodeState::Down => peer::PeerNodeState::Down,
        NodeState::Recovering => peer::PeerNodeState::Recovering,
    }
}

fn node_state(wire: i32) -> Option<NodeState> {
    Some(match peer::PeerNodeState::try_from(wire).ok()? {
        peer::PeerNodeState::Up => NodeState::Up,
        peer::PeerNodeState::Suspect => NodeState::Suspect,
        peer::PeerNodeState::Down => NodeState::Down,
        peer::PeerNodeState::Recovering => NodeState::Recovering,
        peer::PeerNodeState::Unspecified => return None,
    })
}
