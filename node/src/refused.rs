//! Keys whose newest write this node refused for want of space (the shard's
//! disk budget), so that it never serves its older copy of them as current.
//!
//! Why: with `write_quorum` below `replication_factor`, a write one replica
//! acknowledged may have been refused by another whose disk budget was
//! reached. The status table says reads keep working on a full node, so the
//! coordinator does not take the whole node out of reads; instead this node
//! answers UNAVAILABLE for exactly those keys and the coordinator reads them
//! at another replica.
//!
//! Invariants: a key is held with the highest version refused for it, and is
//! released only once the node stores a version at least that new; past
//! [`REFUSED_KEYS_MAX`] keys the node stops telling keys apart and refuses
//! every read until it restarts (memory stays bounded, and it never serves a
//! stale value). The set lives in memory: a node restarted while full forgets
//! it (docs/node.md, "Known limits").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::error::NodeError;

/// Keys tracked at most (about 100 bytes each with their version).
pub const REFUSED_KEYS_MAX: usize = 1 << 16;

/// The refused keys of one node (engine keys: namespace and key encoded).
#[derive(Debug, Default)]
pub struct RefusedKeys {
    keys: Mutex<HashMap<Bytes, u64>>,
    /// `keys.len()`, readable without the lock: reads skip the lock while no key is held.
    held: AtomicUsize,
    overflowed: AtomicBool,
}

impl RefusedKeys {
    /// A write of `key` at `version` was refused for space.
    fn refused(&self, key: &Bytes, version: u64) {
        let mut keys = self.keys.lock().expect("refused keys lock");
        if !keys.contains_key(key) && keys.len() >= REFUSED_KEYS_MAX {
            if !self.overflowed.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    limit = REFUSED_KEYS_MAX,
                    "more keys refused for want of space than can be tracked: every read is refused until a restart"
                );
            }
            return;
        }
        let held = keys.entry(key.clone()).or_insert(version);
        *held = (*held).max(version);
        self.held.store(keys.len(), Ordering::Release);
    }

    /// The node now stores `key` at `version`: a refusal of an older or equal version no longer matters.
    fn stored(&self, key: &Bytes, version: u64) {
        if self.held.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut keys = self.keys.lock().expect("refused keys lock");
        if keys.get(key).is_some_and(|&refused| refused <= version) {
            keys.remove(key);
            self.held.store(keys.len(), Ordering::Release);
        }
    }

    /// Records the outcome of a write of `key` at `version`: a refusal for
    /// space holds the key; a success releases refusals up to the version
    /// `stored` says the node now holds (`None`: nothing stored, e.g. a
    /// compare-and-set that did not match).
    pub fn track<T>(
        &self,
        key: &Bytes,
        version: u64,
        result: Result<T, NodeError>,
        stored: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T, NodeError> {
        match &result {
            Ok(outcome) => {
                if let Some(held) = stored(outcome) {
                    self.stored(key, held);
                }
            }
            Err(e) if is_out_of_space(e) => self.refused(key, version),
            Err(_) => {}
        }
        result
    }

    /// Whether `key` may be read here.
    pub fn check(&self, key: &Bytes) -> Result<(), NodeError> {
        if self.overflowed.load(Ordering::Acquire) {
            return Err(NodeError::RefusedNewer("this node refused more writes for want of space than it tracks"));
        }
        if self.held.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        if self.keys.lock().expect("refused keys lock").contains_key(key) {
            return Err(NodeError::RefusedNewer("this node refused a newer write of the key for want of space"));
        }
        Ok(())
    }

    /// Whether no key is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.held.load(Ordering::Acquire) == 0
    }
}

/// Whether `error` is a refusal for want of space (the engine's disk budget).
fn is_out_of_space(error: &NodeError) -> bool {
    matches!(error, NodeError::Engine(opticache_engine::error::EngineError::DiskFull { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_refused_key_is_unreadable_until_a_version_as_new_is_stored() {
        let r = RefusedKeys::default();
        assert!(r.check(&key("a")).is_ok());
        r.refused(&key("a"), 10);
        r.refused(&key("a"), 7);
        assert!(r.check(&key("a")).is_err());
        assert!(r.check(&key("b")).is_ok());
        r.stored(&key("a"), 9);
        assert!(r.check(&key("a")).is_err(), "version 9 is older than the refused 10");
        r.stored(&key("a"), 10);
        assert!(r.check(&key("a")).is_ok());
        assert!(r.is_empty());
    }

    #[test]
    fn past_the_limit_every_read_is_refused() {
        let r = RefusedKeys::default();
        for i in 0..REFUSED_KEYS_MAX {
            r.refused(&key(&format!("k{i}")), 1);
        }
        assert!(r.check(&key("other")).is_ok(), "at the limit keys are still told apart");
        r.refused(&key("k0"), 2);
        assert!(r.check(&key("other")).is_ok(), "a key already held does not overflow");
        r.refused(&key("one-too-many"), 1);
        assert!(r.check(&key("other")).is_err(), "beyond the limit nothing is served");
    }
}
