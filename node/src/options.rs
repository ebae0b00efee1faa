//! The node's settings: `config/config.yaml` (through `opticache-common`),
//! then command-line overrides, resolved into [`NodeOptions`].
//!
//! Invariant: every value reaching the engine passed both the config file's
//! checks and the engine's own `EngineConfig::validate`, and a refusal names
//! the file, the key and the reason.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use opticache_common::{ClusterConfig, ConfigError, DiskFullPolicy, Durability, NodeSettings};
use opticache_engine::config::{self as engine_config, EngineConfig};

use crate::server::NodeOptions;

/// What the command line can override.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub address: Option<String>,
    pub disk_path: Option<PathBuf>,
    pub metrics_address: Option<String>,
    pub shards: Option<u32>,
}

/// Why the node's settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: node: {reason}")]
    Engine { file: PathBuf, reason: String },
    #[error("--shards {0}: must be 1..={max}", max = opticache_common::config::SHARDS_MAX)]
    Shards(u32),
}

/// Loads `config_path` and resolves this node's options.
pub fn load(config_path: &Path, overrides: &Overrides) -> Result<NodeOptions, OptionsError> {
    let config = ClusterConfig::load(config_path)?;
    let settings = config.node_settings(overrides.address.as_deref(), overrides.disk_path.as_deref())?;
    let mut options = resolve(&config.file, settings, overrides)?;
    options.security = config.security;
    Ok(options)
}

/// Turns config settings plus overrides into options the node runs with.
pub fn resolve(file: &Path, settings: NodeSettings, overrides: &Overrides) -> Result<NodeOptions, OptionsError> {
    let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let shards = match overrides.shards {
        Some(n) if n == 0 || n > opticache_common::config::SHARDS_MAX => return Err(OptionsError::Shards(n)),
        Some(n) => n,
        None => settings.shard_count(cores),
    };
    let engine = EngineConfig {
        durability: match settings.durability {
            Durability::Sync => engine_config::Durability::Sync,
            Durability::Interval { interval_ms } => engine_config::Durability::Interval { interval_ms },
            Durability::None => engine_config::Durability::None,
        },
        max_value_bytes: settings.max_value_bytes as usize,
        segment_bytes: settings.segment_bytes,
        memory_budget_bytes: settings.shard_memory_budget_bytes,
        disk_budget_bytes: settings.shard_disk_budget_bytes,
        disk_full_policy: match settings.disk_full_policy {
            DiskFullPolicy::Store => engine_config::DiskFullPolicy::Store,
            DiskFullPolicy::Cache => engine_config::DiskFullPolicy::Cache,
        },
        prefill_segments: settings.prefill_segments,
        ..EngineConfig::default()
    };
    engine.validate().map_err(|reason| OptionsError::Engine { file: file.to_path_buf(), reason })?;
    Ok(NodeOptions {
        address: overrides.address.clone().unwrap_or_else(|| settings.address.to_string()),
        metrics_address: overrides.metrics_address.clone().unwrap_or_else(|| settings.metrics_address.to_string()),
        disk_path: overrides.disk_path.clone().unwrap_or(settings.disk_path),
        shards,
        pin_shards: true,
        engine,
        security: Default::default(),
    })
}
