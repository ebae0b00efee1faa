//! `opticache`: the command-line client of an OptiCache cluster. Parses the
//! arguments, starts a single-threaded runtime (one command, one call at a
//! time) and hands over to [`cli::run`]; the logic lives in `src/cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
    cli::init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("opticache: cannot start the async runtime: {err}");
            return ExitCode::from(cli::run::EXIT_FAILURE);
        }
    };
    runtime.block_on(cli::run::run(args))
}
