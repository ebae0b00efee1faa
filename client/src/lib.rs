//! OptiCache's Rust client: typed calls of the public API (`opticache.v1`)
//! with fail-over between the primary and the standby coordinator, retries
//! where a repeat is harmless, deadlines, and values of any size streamed in
//! bounded memory. The `opticache` CLI (`src/main.rs`) is built on it.
//!
//! ```no_run
//! # async fn demo() -> opticache_client::Result<()> {
//! use bytes::Bytes;
//! use opticache_client::{Client, ClientConfig};
//!
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:50051", "127.0.0.1:50052"])).await?;
//! let version = client.put("model-a", "row:17", Bytes::from_static(b"\x01\x02"), None).await?;
//! let value = client.get("model-a", "row:17").await?.expect("just written");
//! assert_eq!(value.version, version);
//! # Ok(()) }
//! ```
//!
//! # Tour
//!
//! - [`config`]: [`ClientConfig`], the coordinators and the time budget.
//! - [`client`]: [`Client`] and its calls: `put`, `get`, `update`, `delete`,
//!   `put_many`, `get_many`, `put_stream`, `get_stream`, `cluster_status`;
//!   each runs through one retry loop.
//! - [`retry`]: the pure decisions of that loop: which failure is retried for
//!   which kind of call (and why a write may be repeated but an update may
//!   not), backoff, deadlines, and the error when the client gives up.
//! - [`stream`]: cutting a reader into chunks of at most
//!   [`STREAM_CHUNK_BYTES`], and [`ReadStream`] for reading one back.
//! - [`error`]: [`ClientError`] and [`map_status`], the one mapping of gRPC
//!   statuses to the API's status table.
//! - [`status`]: [`ClusterStatus`] with its enums decoded.
//! - [`limits`]: every size limit, named.
//!
//! Invariants the crate keeps: a call never waits past its overall deadline
//! (streams: never stalls longer than the attempt timeout); a value is never
//! held whole in memory by the streaming calls; an error names what failed
//! and, when no coordinator could serve, every address tried.

pub mod client;
pub mod config;
pub mod error;
pub mod limits;
pub mod retry;
pub mod status;
pub mod stream;

pub use client::{Client, Value};
pub use config::ClientConfig;
pub use error::{map_status, ClientError, Result};
pub use limits::STREAM_CHUNK_BYTES;
pub use opticache_proto::v1::{NodeState, Role};
pub use status::{ClusterStatus, NodeStatus};
pub use stream::ReadStream;
