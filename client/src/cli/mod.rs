//! The `opticache` CLI behind `main.rs`: argument declarations ([`args`]),
//! the `--ttl` parser ([`ttl`]), value sources ([`input`]), text output
//! ([`render`]) and the commands themselves ([`run`]).
//!
//! Invariant: stdout carries only the command's result (a version, a value's
//! raw bytes, a table), so it can be piped; diagnostics and logs go to
//! stderr.

pub mod args;
pub mod input;
pub mod render;
pub mod run;
pub mod ttl;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `RUST_LOG` (warnings only by default;
/// `RUST_LOG=debug` shows every attempt and fail-over).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person, never in a captured log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
