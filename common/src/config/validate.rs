//! The checks serde cannot make: limits, relations between keys, and
//! uniqueness; and the filling-in of defaults that depend on other keys.
//!
//! Invariants: each check names the key it is about, with the index of the
//! entry for `cache_nodes`, and stops at the first problem found in file
//! order, so the message points at one thing to fix. Nothing is resolved
//! against the machine (no DNS, no file system): a config is checked the
//! same way wherever it is read.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::byte_size::format_byte_size;
use super::file::{CacheNodeFile, ClusterFile, DurabilityMode, NodeFile};
use super::{
    CacheNodeConfig, ClusterConfig, ConfigError, CoordinatorConfig, Durability, HostPort, NodeDefaults,
    MAX_VALUE_BYTES_LIMIT, METRICS_PORT_OFFSET, SEGMENT_BYTES_ALIGN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SHARDS_MAX,
    SHARD_DISK_BUDGET_SEGMENTS_MIN, SHARD_DISK_BUDGET_UNLIMITED,
};

pub(super) fn validate(file: &Path, raw: ClusterFile) -> Result<ClusterConfig, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::InvalidValue {
        file: file.to_path_buf(),
        key: key.to_string(),
        reason,
    };

    // Every address some process listens on, with the key that claims it:
    // two processes on one address would fail to start, or worse, talk to each other.
    // Port 0 asks the kernel for a free port, so it never clashes (tests use it).
    let mut listeners: HashMap<HostPort, String> = HashMap::new();
    let mut claim = |address: &HostPort, key: String| -> Result<(), ConfigError> {
        if address.port() == 0 {
            return Ok(());
        }
        if let Some(owner) = listeners.get(address) {
            return Err(invalid(&key, format!("{address} is already used by {owner}")));
        }
        listeners.insert(address.clone(), key);
        Ok(())
    };

    let coordinator = raw.coordinator;
    claim(&coordinator.primary, "coordinator.primary".into())?;
    if let Some(secondary) = &coordinator.secondary {
        claim(secondary, "coordinator.secondary".into())?;
    }
    if coordinator.failover_after_ms == 0 {
        return Err(invalid("coordinator.failover_after_ms", "must be more than 0".into()));
    }

    if raw.cache_nodes.is_empty() {
        return Err(invalid("cache_nodes", "must list at least one cache node".into()));
    }
    let mut cache_nodes = Vec::with_capacity(raw.cache_nodes.len());
    let mut disk_paths: HashMap<PathBuf, usize> = HashMap::new();
    for (index, node) in raw.cache_nodes.into_iter().enumerate() {
        let key = |field: &str| format!("cache_nodes[{index}].{field}");
        let CacheNodeFile { address, disk_path, metrics_address, shards } = node;
        claim(&address, key("address"))?;
        if disk_path.as_os_str().is_empty() {
            return Err(invalid(&key("disk_path"), "must not be empty".into()));
        }
        // Compared without "./" and trailing "/", so ./data/cache1 and data/cache1/ count as the same.
        if let Some(first) = disk_paths.insert(lexically_normal(&disk_path), index) {
            return Err(invalid(
                &key("disk_path"),
                format!("{} is already the disk_path of cache_nodes[{first}]", disk_path.display()),
            ));
        }
        let metrics_address = match metrics_address {
            Some(configured) => configured,
            None => default_metrics_address(&address).map_err(|reason| invalid(&key("metrics_address"), reason))?,
        };
        claim(&metrics_address, key("metrics_address"))?;
        if let Some(shards) = shards {
            check_shards(shards).map_err(|reason| invalid(&key("shards"), reason))?;
        }
        cache_nodes.push(CacheNodeConfig { address, disk_path, metrics_address, shards });
    }

    let node_count = cache_nodes.len();
    if raw.replication_factor == 0 {
        return Err(invalid("replication_factor", "must be at least 1".into()));
    }
    if raw.replication_factor as usize > node_count {
        return Err(invalid(
            "replication_factor",
            format!("{} is more than the number of cache_nodes ({node_count})", raw.replication_factor),
        ));
    }
    if raw.write_quorum == 0 {
        return Err(invalid("write_quorum", "must be at least 1".into()));
    }
    if raw.write_quorum > raw.replication_factor {
        return Err(invalid(
            "write_quorum",
            format!("{} is more than replication_factor {}", raw.write_quorum, raw.replication_factor),
        ));
    }
    if raw.heartbeat_interval_ms == 0 {
        return Err(invalid("heartbeat_interval_ms", "must be more than 0".into()));
    }
    if raw.heartbeat_misses == 0 {
        return Err(invalid("heartbeat_misses", "must be at least 1".into()));
    }

    let node = validate_node(raw.node.unwrap_or_default())
        .map_err(|(field, reason)| invalid(&format!("node.{field}"), reason))?;

    let security = super::security::validate(raw.security.unwrap_or_default())
        .map_err(|(key, reason)| invalid(&format!("security.{key}"), reason))?;

    Ok(ClusterConfig {
        file: file.to_path_buf(),
        coordinator: CoordinatorConfig {
            primary: coordinator.primary,
            secondary: coordinator.secondary,
            failover_after_ms: coordinator.failover_after_ms,
        },
        cache_nodes,
        replication_factor: raw.replication_factor,
        write_quorum: raw.write_quorum,
        heartbeat_interval_ms: raw.heartbeat_interval_ms,
        heartbeat_misses: raw.heartbeat_misses,
        node,
        security,
    })
}

/// The `node:` section; the error is (key under `node.`, reason).
fn validate_node(node: NodeFile) -> Result<NodeDefaults, (&'static str, String)> {
    check_shards(node.shards).map_err(|reason| ("shards", reason))?;
    if node.sync_interval_ms == 0 {
        // Checked whatever the durability mode, so that switching to `interval` later cannot break the file.
        return Err(("sync_interval_ms", "must be more than 0".into()));
    }
    let durability = match node.durability {
        DurabilityMode::Sync => Durability::Sync,
        DurabilityMode::Interval => Durability::Interval { interval_ms: node.sync_interval_ms },
        DurabilityMode::None => Durability::None,
    };
    if node.max_value_bytes == 0 {
        return Err(("max_value_bytes", "must be at least 1".into()));
    }
    if node.max_value_bytes > MAX_VALUE_BYTES_LIMIT {
        return Err((
            "max_value_bytes",
            format!(
                "{} is more than the limit {} (larger values are streamed in chunks)",
                format_byte_size(node.max_value_bytes),
                format_byte_size(MAX_VALUE_BYTES_LIMIT)
            ),
        ));
    }
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&node.segment_bytes) {
        return Err((
            "segment_bytes",
            format!(
                "{} is outside {}..={}",
                format_byte_size(node.segment_bytes),
                format_byte_size(SEGMENT_BYTES_MIN),
                format_byte_size(SEGMENT_BYTES_MAX)
            ),
        ));
    }
    if !node.segment_bytes.is_multiple_of(SEGMENT_BYTES_ALIGN) {
        return Err((
            "segment_bytes",
            format!("{} is not a multiple of {}", node.segment_bytes, format_byte_size(SEGMENT_BYTES_ALIGN)),
        ));
    }
    let disk_budget_min = SHARD_DISK_BUDGET_SEGMENTS_MIN * node.segment_bytes;
    if node.shard_disk_budget_bytes != SHARD_DISK_BUDGET_UNLIMITED && node.shard_disk_budget_bytes < disk_budget_min {
        return Err((
            "shard_disk_budget_bytes",
            format!(
                "{} is less than {SHARD_DISK_BUDGET_SEGMENTS_MIN} segments ({}); use 0 for unlimited",
                format_byte_size(node.shard_disk_budget_bytes),
                format_byte_size(disk_budget_min)
            ),
        ));
    }
    Ok(NodeDefaults {
        shards: node.shards,
        durability,
        shard_memory_budget_bytes: node.shard_memory_budget_bytes,
        shard_disk_budget_bytes: node.shard_disk_budget_bytes,
        disk_full_policy: node.disk_full_policy,
        max_value_bytes: node.max_value_bytes,
        segment_bytes: node.segment_bytes,
        prefill_segments: node.prefill_segments,
    })
}

fn check_shards(shards: u32) -> Result<(), String> {
    if shards > SHARDS_MAX {
        return Err(format!("{shards} is more than the limit {SHARDS_MAX} (0 means one per core)"));
    }
    Ok(())
}

/// The node's host at its port plus [`METRICS_PORT_OFFSET`]. Port 0 (let the
/// OS choose, as tests do) stays 0: a fixed port derived from it would collide.
pub(super) fn default_metrics_address(address: &HostPort) -> Result<HostPort, String> {
    if address.port() == 0 {
        return Ok(address.with_port(0));
    }
    match address.port().checked_add(METRICS_PORT_OFFSET) {
        Some(port) => Ok(address.with_port(port)),
        None => Err(format!(
            "the default (port {} + {METRICS_PORT_OFFSET}) is more than 65535; set metrics_address",
            address.port()
        )),
    }
}

/// `path` without `.` components, the way two spellings of one directory compare equal.
/// `..` is kept: resolving it needs the file system (symlinks).
fn lexically_normal(path: &Path) -> PathBuf {
    path.components().filter(|component| !matches!(component, Component::CurDir)).collect()
}
