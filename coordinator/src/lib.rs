//! The coordinator: what turns several cache nodes into one cache.
//!
//! Everything here that decides (where a key lives, whether a node is up,
//! which coordinator is primary) is pure code: no sockets, no clocks of its
//! own. The caller feeds it events and the current time and acts on what it
//! returns, so tests drive it with simulated time and a simulated network.
//! The server around it arrives with issue 4.
//!
//! - [`placement`]: rendezvous hashing of (namespace, key) onto nodes;
//! - [`health`]: each node's UP / SUSPECT / DOWN / RECOVERING state machine;
//! - [`failover`]: the primary/standby roles of the two coordinators, by epoch.

pub mod failover;
pub mod health;
pub mod placement;
