//! The coordinator: what turns several cache nodes into one cache.
//!
//! Everything here that decides (where a key lives, whether a node is up,
//! which coordinator is primary) is pure code: no sockets, no clocks of its
//! own. The caller feeds it events and the current time and acts on what it
//! returns, so tests drive it with simulated time and a simulated network.
//!
//! Decisions (pure):
//! - [`placement`]: rendezvous hashing of (namespace, key) onto nodes;
//! - [`health`]: each node's UP / SUSPECT / DOWN / RECOVERING state machine;
//! - [`failover`]: the primary/standby roles of the two coordinators, by epoch.
//!
//! The server around them:
//! - [`server`]: start-up, serving, graceful shutdown;
//! - [`service`]: the public API: quorum writes, reads with fail-over;
//! - [`error`]: the public status table, in one place;
//! - [`cluster`]: the nodes, their clients and health;
//! - [`heartbeat`]: the health loop; [`repair`]: catch-up of returning nodes;
//! - [`peer`]: the two coordinators' exchange of roles and decisions;
//! - [`metrics`]: Prometheus metrics over HTTP.

pub mod cluster;
pub mod error;
pub mod failover;
pub mod health;
pub mod heartbeat;
pub mod metrics;
pub mod peer;
pub mod placement;
pub mod repair;
pub mod server;
pub mod service;
