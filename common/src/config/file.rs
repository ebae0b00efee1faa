//! The configuration file exactly as written: what serde reads before any
//! cross-key check. Optional keys are `Option` where their default depends on
//! another key (a node's metrics address, a node's shard override) and carry
//! their default directly otherwise.
//!
//! Invariants: every struct denies unknown keys, so a misspelt key is an
//! error that names it instead of a setting silently left at its default;
//! nothing here is trusted until `validate` has turned it into a `ClusterConfig`.

use std::path::PathBuf;

use serde::Deserialize;

use super::host_port::HostPort;
use super::security::SecurityFile;
use super::{byte_size, DiskFullPolicy};
use super::{
    FAILOVER_AFTER_MS_DEFAULT, HEARTBEAT_INTERVAL_MS_DEFAULT, HEARTBEAT_MISSES_DEFAULT, MAX_VALUE_BYTES_DEFAULT,
    PREFILL_SEGMENTS_DEFAULT, REPLICATION_FACTOR_DEFAULT, SEGMENT_BYTES_DEFAULT, SHARDS_DEFAULT,
    SHARD_DISK_BUDGET_BYTES_DEFAULT, SHARD_MEMORY_BUDGET_BYTES_DEFAULT, SYNC_INTERVAL_MS_DEFAULT, WRITE_QUORUM_DEFAULT,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    pub coordinator: CoordinatorFile,
    pub cache_nodes: Vec<CacheNodeFile>,
    #[serde(default = "replication_factor_default")]
    pub replication_factor: u32,
    #[serde(default = "write_quorum_default")]
    pub write_quorum: u32,
    #[serde(default = "heartbeat_interval_ms_default")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "heartbeat_misses_default")]
    pub heartbeat_misses: u32,
    /// `Option` so that a `node:` whose keys are all commented out (YAML null)
    /// means "all defaults" rather than a type error.
    #[serde(default)]
    pub node: Option<NodeFile>,
    /// Absent: no TLS, no tokens.
    #[serde(default)]
    pub security: Option<SecurityFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CoordinatorFile {
    pub primary: HostPort,
    #[serde(default)]
    pub secondary: Option<HostPort>,
    #[serde(default = "failover_after_ms_default")]
    pub failover_after_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheNodeFile {
    pub address: HostPort,
    pub disk_path: PathBuf,
    #[serde(default)]
    pub metrics_address: Option<HostPort>,
    #[serde(default)]
    pub shards: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NodeFile {
    pub shards: u32,
    pub durability: DurabilityMode,
    pub sync_interval_ms: u64,
    #[serde(deserialize_with = "byte_size::deserialize")]
    pub shard_memory_budget_bytes: u64,
    #[serde(deserialize_with = "byte_size::deserialize")]
    pub shard_disk_budget_bytes: u64,
    pub disk_full_policy: DiskFullPolicy,
    #[serde(deserialize_with = "byte_size::deserialize")]
    pub max_value_bytes: u64,
    #[serde(deserialize_with = "byte_size::deserialize")]
    pub segment_bytes: u64,
    pub prefill_segments: bool,
}

impl Default for NodeFile {
    fn default() -> NodeFile {
        NodeFile {
            shards: SHARDS_DEFAULT,
            durability: DurabilityMode::Sync,
            sync_interval_ms: SYNC_INTERVAL_MS_DEFAULT,
            shard_memory_budget_bytes: SHARD_MEMORY_BUDGET_BYTES_DEFAULT,
            shard_disk_budget_bytes: SHARD_DISK_BUDGET_BYTES_DEFAULT,
            disk_full_policy: DiskFullPolicy::Store,
            max_value_bytes: MAX_VALUE_BYTES_DEFAULT,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            prefill_segments: PREFILL_SEGMENTS_DEFAULT,
        }
    }
}

/// `durability:` as written; the interval lives in its own key
/// (`sync_interval_ms`) and is joined to it by `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum DurabilityMode {
    Sync,
    Interval,
    None,
}

fn replication_factor_default() -> u32 {
    REPLICATION_FACTOR_DEFAULT
}

fn write_quorum_default() -> u32 {
    WRITE_QUORUM_DEFAULT
}

fn heartbeat_interval_ms_default() -> u64 {
    HEARTBEAT_INTERVAL_MS_DEFAULT
}

fn heartbeat_misses_default() -> u32 {
    HEARTBEAT_MISSES_DEFAULT
}

fn failover_after_ms_default() -> u64 {
    FAILOVER_AFTER_MS_DEFAULT
}
