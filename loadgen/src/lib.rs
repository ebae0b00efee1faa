//! loadgen: OptiCache's load generator. It drives the cluster
//! (`opticache://`), one cache node (`node://`) or Redis (`redis://`) with
//! the same workload and reports latencies from HDR histograms, so the three
//! can be compared side by side.
//!
//! A tour, in the order a run goes through them:
//!
//! - [`args`]: the command line, validated into a [`Plan`](args::Plan);
//!   limits are named constants there and in [`target`].
//! - [`access`]: tokens and TLS for a secured cluster.
//! - [`profile`]: the named workloads and the operation kinds and mixes.
//! - [`keys`]: the key space and its distribution (uniform, Zipf).
//! - [`value`]: values that carry their key id and a crc32, so every read is
//!   checked.
//! - [`target`]: the [`Connector`](target::Connector) and
//!   [`Connection`](target::Connection) traits and the three real targets.
//! - [`driver`]: client tasks, closed or open loop, warm-up, preload.
//! - [`stats`]: histograms, error counts, summaries.
//! - [`cpu`]: loadgen's and the servers' CPU time over the measured window.
//! - [`progress`]: the live bar on a terminal.
//! - [`report`]: the text table, the JSON report, the `.hgrm` files.
//! - [`compare`]: a markdown table of several JSON reports.
//! - [`plot`]: an SVG chart of latency by percentile (`--plot`, `loadgen plot`).
//! - [`units`]: sizes and durations, parsed and printed.
//! - [`error`]: the error type, [`LoadgenError`](error::LoadgenError).
//!
//! The binary (`src/main.rs`) only wires these together.

pub mod access;
pub mod args;
pub mod compare;
pub mod cpu;
pub mod driver;
pub mod error;
pub mod keys;
pub mod plot;
pub mod profile;
pub mod progress;
pub mod report;
pub mod stats;
pub mod target;
pub mod units;
pub mod value;

pub use error::{LoadgenError, Result};
