//! `opticache-node`: runs one cache node from `config/config.yaml`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when the node cannot
//! start or stop cleanly (the message says why), 2 for bad flags (clap),
//! 130 after a second stop signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: request buffers are allocated on the
/// front's threads and freed on others, which glibc's arenas handle poorly
/// (malloc_consolidate and _int_malloc were ~8% of the front's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use opticache_node::options::{self, Overrides};

/// An OptiCache cache node: one shard per core, each with its own engine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The cluster configuration file.
    #[arg(long, default_value = opticache_common::config::CONFIG_PATH_DEFAULT)]
    config: PathBuf,
    /// Which cache_nodes entry this node is (host:port); needed when the config lists several.
    #[arg(long)]
    address: Option<String>,
    /// The data directory, instead of the entry's disk_path.
    #[arg(long)]
    disk_path: Option<PathBuf>,
    /// Where to serve Prometheus metrics (host:port), instead of the config's.
    #[arg(long)]
    metrics_address: Option<String>,
    /// Shards (executors), instead of the config's; fixed for a data dir's life.
    #[arg(long)]
    shards: Option<u32>,
    /// Threads of the gRPC front (tokio workers); default: one per core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    front_threads: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    opticache_common::process::init_logging();
    let overrides = Overrides {
        address: args.address,
        disk_path: args.disk_path,
        metrics_address: args.metrics_address,
        shards: args.shards,
    };
    let options = match options::load(&args.config, &overrides) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("opticache-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    let front_threads =
        args.front_threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(front_threads)
        .enable_all()
        .thread_name("front")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("opticache-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(opticache_node::server::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opticache-node: {e}");
            ExitCode::FAILURE
        }
    }
}
