//! [`LoadgenError`]: everything that stops a run or a comparison before it
//! can report. Errors of single operations during a run are not here: they
//! are counted by kind in [`stats`](crate::stats) and the run goes on.
//!
//! Invariant: every message names what it is about (the argument, the
//! target's address, the file), so the one line `main` prints is enough to
//! act on.

use std::io;
use std::path::PathBuf;

/// Why loadgen could not run, or could not finish its report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// A command-line argument is out of its range or contradicts another.
    #[error("invalid argument {arg}: {why}")]
    InvalidArgument {
        /// The flag, as the user typed it (`--concurrency`).
        arg: &'static str,
        /// What is wrong and what would be accepted.
        why: String,
    },
    /// The target did not answer while connecting (refused, unresolvable,
    /// timed out, or a probe call failed).
    #[error("cannot reach {target}: {why}")]
    Unreachable {
        /// The target as given (`node://127.0.0.1:6001`).
        target: String,
        /// The underlying failure.
        why: String,
    },
    /// Writing the key space before the run failed: reads would then miss
    /// for reasons that have nothing to do with the system under test.
    #[error("preload failed: {failed} of {keys} writes failed; first: {first}")]
    Preload {
        /// Writes that failed.
        failed: u64,
        /// Keys in the key space.
        keys: u64,
        /// The first failure's kind and message.
        first: String,
    },
    /// A client task died (a bug in loadgen, not in the target).
    #[error("a client task failed: {0}")]
    Task(String),
    /// A report, histogram file or directory could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file given to `compare` is not a loadgen JSON report.
    #[error("{}: not a loadgen report: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Where parsing failed.
        #[source]
        source: serde_json::Error,
    },
    /// A latency plot could not be drawn or written: no samples to plot, or
    /// the SVG could not be rendered or saved.
    #[error("{}: cannot plot: {why}", path.display())]
    Plot {
        /// The SVG file asked for.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// Histograms of the same operation could not be merged.
    #[error("histogram: {0}")]
    Histogram(String),
}

impl LoadgenError {
    /// Shorthand for [`LoadgenError::InvalidArgument`].
    pub fn invalid(arg: &'static str, why: impl Into<String>) -> Self {
        LoadgenError::InvalidArgument { arg, why: why.into() }
    }

    /// The process exit code for this error: 2 for bad arguments (as clap
    /// uses for usage errors), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            LoadgenError::InvalidArgument { .. } => 2,
            _ => 1,
        }
    }
}

/// Shorthand for results of loadgen's own functions.
pub type Result<T, E = LoadgenError> = std::result::Result<T, E>;
