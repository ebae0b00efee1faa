//! `opticache-coordinator`: serves the public API (`opticache.v1`) for the
//! cluster in `config/config.yaml`.
//!
//! Exit codes: 0 after a clean stop, 1 when it cannot start, 2 for bad flags,
//! 130 after a second stop signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc, as in the node: buffers are freed on other threads than the
/// ones that allocated them, which glibc's arenas handle poorly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An OptiCache coordinator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The cluster configuration file.
    #[arg(long, default_value = opticache_common::config::CONFIG_PATH_DEFAULT)]
    config: PathBuf,
    /// Which coordinator this is: coordinator.primary or coordinator.secondary (host:port).
    #[arg(long)]
    address: Option<String>,
    /// Where to serve Prometheus metrics (host:port); default: the address's port + 1000.
    #[arg(long)]
    metrics_address: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    opticache_common::process::init_logging();
    let config = match opticache_common::ClusterConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("opticache-coordinator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let address = args.address.unwrap_or_else(|| config.coordinator.primary.to_string());
    let Some(metrics_address) =
        args.metrics_address.or_else(|| opticache_coordinator::server::default_metrics_address(&address))
    else {
        eprintln!("opticache-coordinator: no default metrics address for {address}; pass --metrics-address");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("coordinator").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("opticache-coordinator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(opticache_coordinator::server::run(config, address, metrics_address)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opticache-coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}
