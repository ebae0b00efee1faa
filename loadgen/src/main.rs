//! The `loadgen` binary: parses the command line, runs the plan, the
//! comparison or the plot, prints the report and writes its files.
//!
//! Exit status: 0 for a run without errors (and for `compare` and `plot`), 3 for a run
//! that completed with errors, 2 for bad arguments, 1 when the run could not
//! be done. Nothing here panics on bad input: every failure is a
//! [`LoadgenError`] printed on one line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use loadgen::access::Access;
use loadgen::args::{Cli, Command, Plan};
use loadgen::cpu::CpuWatch;
use loadgen::driver::{self, LatencyOrigin, Live};
use loadgen::progress::Progress;
use loadgen::report::{write_hgrm_files, Report};
use loadgen::target::AnyConnector;
use loadgen::{compare, plot, LoadgenError};

/// Exit status of a run that completed but recorded errors.
const EXIT_RUN_HAD_ERRORS: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Compare { files }) => compare::compare_files(&files).map(|table| {
            print!("{table}");
            ExitCode::SUCCESS
        }),
        Some(Command::Plot { out, files }) => plot::plot_files(&files, &out).map(|()| ExitCode::SUCCESS),
        None => run(cli.run),
    };
    result.unwrap_or_else(|err| {
        eprintln!("loadgen: {err}");
        ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
    })
}

fn run(args: loadgen::args::RunArgs) -> Result<ExitCode, LoadgenError> {
    let cpu = CpuWatch::new(args.server_pids.clone())?;
    let access_args = args.access();
    let (plan, outputs) = Plan::resolve(args)?;
    let access = Access::resolve(access_args, &plan.target)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| LoadgenError::Io { path: "tokio runtime".into(), source })?;
    let workload = &plan.workload;
    // Open loop measures from the intended send time; closed loop has none.
    let origin = if workload.rate_ops_per_s.is_some() { LatencyOrigin::Intended } else { LatencyOrigin::Actual };
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let outcome = runtime.block_on(async {
        let connector = AnyConnector::new(&plan.target, &workload.namespace, workload.timeout_ms, &access).await?;
        let live = Arc::new(Live::default());
        let progress = Progress::start(workload, Arc::clone(&live));
        let outcome = driver::run(&connector, workload, origin, Some(live), &cpu).await;
        if let Some(progress) = progress {
            progress.finish();
        }
        outcome
    })?;
    let report = Report::new(
        &plan,
        &outcome,
        std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
        started_unix_ms,
        origin,
    );
    print!("{}", report.text());
    if let Some(path) = &outputs.json {
        report.write_json(path)?;
    }
    if let Some(dir) = &outputs.hgrm {
        write_hgrm_files(dir, &outcome)?;
    }
    if let Some(path) = &outputs.plot {
        plot::plot_run(&report, path)?;
    }
    Ok(if report.totals.errors > 0 { ExitCode::from(EXIT_RUN_HAD_ERRORS) } else { ExitCode::SUCCESS })
}
