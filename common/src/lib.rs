//! What OptiCache's processes share.
//!
//! - [`config`]: the cluster configuration file (`config/config.yaml`), its
//!   defaults and limits, validation with messages that name the file and the
//!   key, and [`ClusterConfig::node_settings`], the settings one cache node
//!   runs with. Coordinators, nodes and tools read the file through this one
//!   module, so they never disagree on what it means.
//! - [`join`]: waiting for a few futures at once (fan-out to shards, replicas).
//! - `process` (feature `process`): logging and stop signals of the server
//!   binaries.
//! - [`version`]: the layout of versions and the hybrid logical clock that
//!   coordinators and nodes stamp writes with.
//!
//! This crate depends on no other OptiCache crate: the engine and the servers
//! depend on it, not the other way round.

pub mod config;
pub mod join;
#[cfg(feature = "process")]
pub mod process;
pub mod version;

pub use config::{
    CacheNodeConfig, ClusterConfig, ConfigError, CoordinatorConfig, DiskFullPolicy, Durability, HostPort, NodeDefaults,
    NodeSettings, Role, Secret, SecretSource, SecurityConfig, TlsConfig, TokenEntry, TokenSource,
};
