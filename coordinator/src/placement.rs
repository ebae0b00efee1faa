//! Where a key lives: rendezvous (highest-random-weight) hashing.
//!
//! Each node gets a score for each key, `mix(hash(key) ^ hash(node))`; the
//! key's replicas are the `replication_factor` nodes with the highest scores,
//! in descending order (the first is where reads go first and where
//! UpdateCache's compare-and-set is decided).
//!
//! Invariants (tested below):
//! - the order depends only on the key and the set of node identities (their
//!   addresses), not on the order the config lists them in;
//! - replicas are distinct nodes;
//! - removing a node moves only the keys it held (each to one new node), and
//!   adding one moves only the keys it now holds: about rf/n of them;
//! - keys spread evenly: each node is first replica for about 1/n of keys.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Differs from the node's shard seed and the engine's fingerprint seed, so
/// placement, sharding and index slots are independent of each other.
const PLACEMENT_SEED: u64 = 0x706c_6163_656d_6e74; // "placemnt"
/// Seed for node identities.
const NODE_SEED: u64 = 0x6e6f_6465_5f69_6421; // "node_id!"

/// A node as placement sees it: its identity hashed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementNode {
    /// The node's address, its identity in the cluster.
    pub address: String,
    hash: u64,
}

impl PlacementNode {
    pub fn new(address: impl Into<String>) -> Self {
        let address = address.into();
        let hash = xxh3_64_with_seed(address.as_bytes(), NODE_SEED);
        Self { address, hash }
    }
}

/// The hash placement uses for (namespace, key): over the same
/// length-prefixed encoding the nodes store, so it is injective.
pub fn key_hash(namespace: &[u8], key: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(1 + namespace.len() + key.len());
    buf.push(namespace.len().min(u8::MAX as usize) as u8);
    buf.extend_from_slice(namespace);
    buf.extend_from_slice(key);
    xxh3_64_with_seed(&buf, PLACEMENT_SEED)
}

/// splitmix64's finalizer: every input bit affects every output bit, so
/// `hash(key) ^ hash(node)` scores are independent across nodes.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The indexes (into `nodes`) of the key's replicas, best first: at most
/// `replication_factor`, fewer if there are fewer nodes.
pub fn replicas(key_hash: u64, nodes: &[PlacementNode], replication_factor: usize) -> Vec<usize> {
    let mut scored: Vec<(u64, u64, usize)> =
        nodes.iter().enumerate().map(|(i, n)| (mix(key_hash ^ n.hash), n.hash, i)).collect();
    // Ties (astronomically rare) are broken by node identity, never by list order.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    scored.into_iter().take(replication_factor).map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(addresses: &[&str]) -> Vec<PlacementNode> {
        addresses.iter().map(|a| PlacementNode::new(*a)).collect()
    }

    fn addresses_of(key: u64, nodes: &[PlacementNode], rf: usize) -> Vec<String> {
        replicas(key, nodes, rf).into_iter().map(|i| nodes[i].address.clone()).collect()
    }

    const THREE: [&str; 3] = ["127.0.0.1:6001", "127.0.0.1:6002", "127.0.0.1:6003"];

    #[test]
    fn replicas_are_distinct_and_independent_of_config_order() {
        let a = nodes(&THREE);
        let b = nodes(&[THREE[2], THREE[0], THREE[1]]);
        for k in 0..2000u64 {
            let h = key_hash(b"ns", &k.to_le_bytes());
            let ra = addresses_of(h, &a, 2);
            assert_eq!(ra, addresses_of(h, &b, 2));
            assert_eq!(ra.len(), 2);
            assert_ne!(ra[0], ra[1]);
        }
        assert_eq!(replicas(1, &a, 5).len(), 3, "never more replicas than nodes");
    }

    #[test]
    fn keys_spread_evenly_over_first_replicas() {
        let n = nodes(&THREE);
        let mut first = [0u32; 3];
        for k in 0..30_000u64 {
            first[replicas(key_hash(b"", &k.to_le_bytes()), &n, 2)[0]] += 1;
        }
        for c in first {
            assert!((9_000..11_000).contains(&c), "uneven: {first:?}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys_and_adding_one_moves_about_rf_over_n() {
        let four = nodes(&["a:1", "b:1", "c:1", "d:1"]);
        let three = nodes(&["a:1", "b:1", "c:1"]);
        let (mut moved_on_add, total) = (0u32, 20_000u64);
        for k in 0..total {
            let h = key_hash(b"m", &k.to_le_bytes());
            let before = addresses_of(h, &three, 2);
            let after = addresses_of(h, &four, 2);
            // Removing d (after -> before): replicas other than d are kept, in order.
            let kept: Vec<&String> = after.iter().filter(|a| *a != "d:1").collect();
            for a in &kept {
                assert!(before.contains(a), "key {k}: {a} lost its copy although it stayed");
            }
            if after.iter().any(|a| a == "d:1") {
                moved_on_add += 1;
            } else {
                assert_eq!(before, after, "key {k} moved without d being involved");
            }
        }
        // d takes about rf/n = 2/4 of the keys as one of their replicas.
        let share = f64::from(moved_on_add) / total as f64;
        assert!((0.45..0.55).contains(&share), "d holds {share} of the keys");
    }

    #[test]
    fn namespace_and_key_are_not_confused() {
        assert_ne!(key_hash(b"a", b"bc"), key_hash(b"ab", b"c"));
    }
}
