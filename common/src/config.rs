//! The cluster configuration file (`config/config.yaml`): its format, its
//! defaults and limits, and the settings one cache node runs with.
//!
//! Loading goes in two steps. serde reads the YAML into the file's own shape
//! (`file`), with serde_path_to_error tracking the key path so that type
//! errors and unknown keys name where they are; `validate` then checks what
//! involves several keys or a limit and builds a [`ClusterConfig`], naming
//! the keys itself.
//!
//! Invariants of a `ClusterConfig` returned by [`ClusterConfig::load`] or
//! [`ClusterConfig::parse`]: at least one cache node; node addresses, metrics
//! addresses and coordinator addresses all distinct; disk paths non-empty and
//! distinct; `1 <= write_quorum <= replication_factor <= cache_nodes.len()`;
//! every limit below holds; every default is filled in, so consumers never
//! see an absent optional key. Relative paths stay relative: they are
//! relative to the working directory of the process that uses them.

mod byte_size;
mod error;
mod file;
mod host_port;
pub mod security;
mod validate;

use std::fs::File;
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use byte_size::{format_byte_size, parse_byte_size, BYTE_UNITS};
pub use error::ConfigError;
pub use host_port::HostPort;
pub use security::{Role, Secret, SecretSource, SecurityConfig, TlsConfig, TokenEntry, TokenSource};

/// Where the processes look for the configuration unless told otherwise (relative to the working directory).
pub const CONFIG_PATH_DEFAULT: &str = "config/config.yaml";
/// A configuration is a few hundred bytes; anything this large was passed by mistake.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// How long the standby waits after losing the primary before it takes over.
pub const FAILOVER_AFTER_MS_DEFAULT: u64 = 1000;
pub const REPLICATION_FACTOR_DEFAULT: u32 = 2;
pub const WRITE_QUORUM_DEFAULT: u32 = 1;
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 200;
/// Missed heartbeats after which a node is DOWN (it is SUSPECT after one).
pub const HEARTBEAT_MISSES_DEFAULT: u32 = 3;

/// `shards: 0` means one shard per available core, resolved by the node.
pub const SHARDS_PER_CORE: u32 = 0;
pub const SHARDS_DEFAULT: u32 = SHARDS_PER_CORE;
/// Shards per node at most: each is an executor with its own I/O memory and
/// files, and shard directories are numbered with three digits (`shard-NNN`).
pub const SHARDS_MAX: u32 = 256;

pub const SYNC_INTERVAL_MS_DEFAULT: u64 = 10;
pub const SHARD_MEMORY_BUDGET_BYTES_DEFAULT: u64 = 256 << 20;
/// `shard_disk_budget_bytes: 0` means the shard may fill the disk.
pub const SHARD_DISK_BUDGET_UNLIMITED: u64 = 0;
pub const SHARD_DISK_BUDGET_BYTES_DEFAULT: u64 = SHARD_DISK_BUDGET_UNLIMITED;
/// A disk budget holds at least this many segments, else the shard could not
/// roll to a new segment before it has to drop or refuse (the engine requires it too).
pub const SHARD_DISK_BUDGET_SEGMENTS_MIN: u64 = 2;

pub const MAX_VALUE_BYTES_DEFAULT: u64 = 64 << 20;
/// The largest value one record can hold; larger values are streamed in chunks.
pub const MAX_VALUE_BYTES_LIMIT: u64 = 256 << 20;

pub const SEGMENT_BYTES_DEFAULT: u64 = 256 << 20;
/// Off by default: zero-filling a segment doubles the disk writes, and with
/// 1 MiB values a write that waits for the next segment stalls (a node's
/// 1 MiB write p99 went from ~0.3 s to over 1 s with it on); small sync writes
/// gain from it only at rates the node's CPU does not reach here
/// (docs/benchmarks.md, "Node").
pub const PREFILL_SEGMENTS_DEFAULT: bool = false;
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
/// Offsets in the engine's index are 30 bits.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Segments are written with O_DIRECT, so their size is a whole number of 4 KiB blocks.
pub const SEGMENT_BYTES_ALIGN: u64 = 4096;

/// A node's metrics listen, unless configured, on its own host at its port plus this.
pub const METRICS_PORT_OFFSET: u16 = 1000;

/// The whole cluster as the configuration file describes it, validated and with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The file this came from, so that later errors (see [`ClusterConfig::node_settings`]) can name it.
    pub file: PathBuf,
    pub coordinator: CoordinatorConfig,
    /// In file order; placement uses the addresses, not this order.
    pub cache_nodes: Vec<CacheNodeConfig>,
    /// How many nodes hold each key.
    pub replication_factor: u32,
    /// How many replicas must have a write durably before it is acknowledged.
    pub write_quorum: u32,
    pub heartbeat_interval_ms: u64,
    /// A node is SUSPECT after one missed heartbeat and DOWN after this many.
    pub heartbeat_misses: u32,
    /// What every cache node runs with unless its entry overrides it.
    pub node: NodeDefaults,
    /// TLS and tokens; all off by default.
    pub security: SecurityConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    pub primary: HostPort,
    /// The standby; without one there is no failover.
    pub secondary: Option<HostPort>,
    /// The standby takes over after the primary has been unreachable this long.
    pub failover_after_ms: u64,
}

/// One `cache_nodes` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheNodeConfig {
    /// Where the node serves the internal node API; also its identity in placement.
    pub address: HostPort,
    /// The node's data directory; shards live in `disk_path/shard-NNN/`.
    pub disk_path: PathBuf,
    /// Prometheus metrics over HTTP; the file's value, or the address's host at port + [`METRICS_PORT_OFFSET`].
    pub metrics_address: HostPort,
    /// Overrides `node.shards` for this node (machines differ in cores).
    pub shards: Option<u32>,
}

/// The `node:` section: settings every cache node runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDefaults {
    /// [`SHARDS_PER_CORE`] (0) or 1..=[`SHARDS_MAX`].
    pub shards: u32,
    pub durability: Durability,
    /// Hot values kept in memory, per shard.
    pub shard_memory_budget_bytes: u64,
    /// Log bytes on disk, per shard; [`SHARD_DISK_BUDGET_UNLIMITED`] (0) for no limit.
    pub shard_disk_budget_bytes: u64,
    pub disk_full_policy: DiskFullPolicy,
    /// The largest value one (non-streamed) put accepts.
    pub max_value_bytes: u64,
    /// The size segment files are created at and rolled at.
    pub segment_bytes: u64,
    /// Zero-fill each new segment in the background before use.
    pub prefill_segments: bool,
}

/// When a write is acknowledged relative to fdatasync. The config's own type:
/// the node maps it to the engine's, so this crate does not depend on the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after fdatasync (concurrent writes share one). Survives power loss.
    Sync,
    /// Acknowledge after the write; fdatasync every `interval_ms` (from `sync_interval_ms`).
    Interval { interval_ms: u64 },
    /// Acknowledge after the write; fdatasync only when a segment is sealed.
    None,
}

/// What a shard does when its disk budget is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFullPolicy {
    /// Refuse writes with RESOURCE_EXHAUSTED; the data stays (the default).
    Store,
    /// Drop the oldest segments to make room: the node is a cache, not a store.
    Cache,
}

/// Everything one cache node process runs with, resolved from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    pub address: HostPort,
    pub disk_path: PathBuf,
    pub metrics_address: HostPort,
    /// [`SHARDS_PER_CORE`] (0) or a count; see [`NodeSettings::shard_count`].
    pub shards: u32,
    pub durability: Durability,
    pub shard_memory_budget_bytes: u64,
    pub shard_disk_budget_bytes: u64,
    pub disk_full_policy: DiskFullPolicy,
    pub max_value_bytes: u64,
    pub segment_bytes: u64,
    pub prefill_segments: bool,
}

impl NodeSettings {
    /// The number of shards to start: `shards`, or one per available core
    /// (at most [`SHARDS_MAX`]) when `shards` is [`SHARDS_PER_CORE`].
    pub fn shard_count(&self, available_cores: NonZeroUsize) -> u32 {
        if self.shards == SHARDS_PER_CORE {
            u32::try_from(available_cores.get()).unwrap_or(u32::MAX).min(SHARDS_MAX)
        } else {
            self.shards
        }
    }
}

impl ClusterConfig {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let read_error = |source| ConfigError::Read { file: path.to_path_buf(), source };
        let file = File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        // One byte more than the limit tells "at the limit" from "over it" without trusting metadata.
        file.take(CONFIG_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(read_error)?;
        if bytes.len() as u64 > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::TooLarge { file: path.to_path_buf() });
        }
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            location: None,
            reason: format!("the file is not UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        })?;
        ClusterConfig::parse(&text, path)
    }

    /// Parses and validates configuration text; `origin` is the file name errors give.
    pub fn parse(text: &str, origin: &Path) -> Result<ClusterConfig, ConfigError> {
        let mut options = serde_saphyr::Options::default();
        // Our messages name the key path; a source snippet would repeat the file in another form.
        options.with_snippet = false;
        let mut error_path = None;
        let parsed: Result<file::ClusterFile, serde_saphyr::Error> =
            serde_saphyr::with_deserializer_from_str_with_options(text, options, |deserializer| {
                serde_path_to_error::deserialize(deserializer).map_err(|error| {
                    error_path = Some(error.path().clone());
                    error.into_inner()
                })
            });
        let raw = parsed.map_err(|error| error::from_yaml(origin, error_path.as_ref(), &error))?;
        validate::validate(origin, raw)
    }

    /// The settings the cache node at `address` runs with.
    ///
    /// - `address` given and listed: that entry; `disk_path_override` replaces its disk path.
    /// - `address` given, not listed, with `disk_path_override`: an extra node run
    ///   with the `node:` defaults (a test or a node about to be added to the file).
    /// - `address` given, not listed, no override: an error naming the listed addresses.
    /// - no `address`: the only entry, or an error when the file lists several.
    pub fn node_settings(
        &self,
        address: Option<&str>,
        disk_path_override: Option<&Path>,
    ) -> Result<NodeSettings, ConfigError> {
        let entry = match address {
            None => match self.cache_nodes.as_slice() {
                [only] => only.clone(),
                nodes => return Err(ConfigError::NodeNotChosen { file: self.file.clone(), count: nodes.len() }),
            },
            Some(text) => {
                let invalid = |reason: String| ConfigError::InvalidNodeAddress {
                    file: self.file.clone(),
                    address: text.to_string(),
                    reason,
                };
                let wanted: HostPort = text.parse().map_err(invalid)?;
                match (self.cache_nodes.iter().find(|node| node.address == wanted), disk_path_override) {
                    (Some(listed), _) => listed.clone(),
                    (None, Some(disk_path)) => CacheNodeConfig {
                        metrics_address: validate::default_metrics_address(&wanted).map_err(invalid)?,
                        address: wanted,
                        disk_path: disk_path.to_path_buf(),
                        shards: None,
                    },
                    (None, None) => {
                        return Err(ConfigError::UnknownNode {
                            file: self.file.clone(),
                            address: wanted.to_string(),
                            known: self.cache_nodes.iter().map(|node| node.address.to_string()).collect(),
                        })
                    }
                }
            }
        };
        let defaults = &self.node;
        Ok(NodeSettings {
            address: entry.address,
            disk_path: disk_path_override.map_or(entry.disk_path, Path::to_path_buf),
            metrics_address: entry.metrics_address,
            shards: entry.shards.unwrap_or(defaults.shards),
            durability: defaults.durability,
            shard_memory_budget_bytes: defaults.shard_memory_budget_bytes,
            shard_disk_budget_bytes: defaults.shard_disk_budget_bytes,
            disk_full_policy: defaults.disk_full_policy,
            max_value_bytes: defaults.max_value_bytes,
            segment_bytes: defaults.segment_bytes,
            prefill_segments: defaults.prefill_segments,
        })
    }
}
