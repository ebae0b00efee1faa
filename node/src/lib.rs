//! An OptiCache cache node: one process owning one machine's share of the
//! data, with one glommio executor (and one engine) per shard behind a tonic
//! gRPC front serving the internal node API (`opticache.node.v1`).
//!
//! A tour, from the wire in:
//! - [`server`]: start-up checks, parallel recovery behind NOT_SERVING,
//!   graceful shutdown;
//! - [`service`]: the node API: checks each request, routes it, maps outcomes;
//! - [`error`]: the node's errors and their one mapping to gRPC codes;
//! - [`keys`]: (namespace, key) → engine key, with the API's key limits;
//! - [`core`]: state shared by the front's tasks, routing and the hop;
//! - [`router`]: key hash → shard;
//! - [`shard`]: the executor thread owning one engine, and its request queue;
//! - [`refused`]: keys whose newer write was refused for space, never served stale;
//! - [`datadir`]: the data dir's lock, identity and shard count;
//! - [`metrics`]: Prometheus metrics over HTTP;
//! - [`options`]: the node's settings from `config/config.yaml` and flags.

pub mod core;
pub mod datadir;
pub mod error;
pub mod figures;
pub mod keys;
pub mod metrics;
pub mod options;
pub mod refused;
pub mod router;
pub mod server;
pub mod service;
pub mod shard;
