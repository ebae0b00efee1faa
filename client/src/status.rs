//! [`ClusterStatus`]: the ClusterStatus answer with its enums decoded.
//!
//! The wire carries roles and node states as `i32`; a value this client does
//! not know (a newer coordinator may add states) decodes as `Unspecified`
//! rather than failing the call, since a status display should still show the
//! rest.

use opticache_proto::v1::{ClusterStatusResponse, NodeState, Role};

/// Who is primary and how every cache node is doing, as one coordinator
/// sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The answering coordinator's role.
    pub role: Role,
    /// The fail-over epoch: it grows each time the primary role moves.
    pub epoch: u64,
    /// Every cache node in the membership, in the coordinator's order.
    pub nodes: Vec<NodeStatus>,
}

/// One cache node in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's address, `host:port`.
    pub address: String,
    /// Up, suspect, down or recovering, per the coordinator's health checks.
    pub state: NodeState,
    /// Shards (one per core) the node runs.
    pub shards: u32,
    /// Live keys on the node.
    pub keys: u64,
    /// Bytes the node's storage uses on disk.
    pub disk_bytes: u64,
}

impl From<ClusterStatusResponse> for ClusterStatus {
    fn from(response: ClusterStatusResponse) -> Self {
        Self {
            role: Role::try_from(response.role).unwrap_or(Role::Unspecified),
            epoch: response.epoch,
            nodes: response
                .nodes
                .into_iter()
                .map(|n| NodeStatus {
                    state: NodeState::try_from(n.state).unwrap_or(NodeState::Unspecified),
                    address: n.address,
                    shards: n.shards,
                    keys: n.keys,
                    disk_bytes: n.disk_bytes,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use opticache_proto::v1::NodeStatus as WireNode;

    use super::*;

    #[test]
    fn decodes_enums_and_keeps_node_order() {
        let response = ClusterStatusResponse {
            role: Role::Standby as i32,
            epoch: 3,
            nodes: vec![
                WireNode { address: "b:1".into(), state: NodeState::Down as i32, shards: 2, keys: 5, disk_bytes: 6 },
                WireNode { address: "a:1".into(), state: 99, shards: 1, keys: 0, disk_bytes: 0 },
            ],
        };
        let status = ClusterStatus::from(response);
        assert_eq!((status.role, status.epoch), (Role::Standby, 3));
        assert_eq!(
            status.nodes,
            vec![
                NodeStatus { address: "b:1".into(), state: NodeState::Down, shards: 2, keys: 5, disk_bytes: 6 },
                NodeStatus { address: "a:1".into(), state: NodeState::Unspecified, shards: 1, keys: 0, disk_bytes: 0 },
            ]
        );
    }

    #[test]
    fn unknown_role_is_unspecified() {
        let status = ClusterStatus::from(ClusterStatusResponse { role: 42, epoch: 0, nodes: vec![] });
        assert_eq!(status.role, Role::Unspecified);
    }
}
