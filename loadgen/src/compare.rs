//! `loadgen compare A.json B.json ...`: one markdown table of throughput,
//! p50 and p99 per operation and file, each with its ratio against the
//! first file (the baseline).
//!
//! When any report measured CPU time, a second table follows: cores busy
//! and CPU µs per call of loadgen and of the watched servers, per file.
//!
//! Invariants: operations appear in report order, each file's row under
//! each operation in the order the files were given; an operation a file
//! did not run shows `-` for it, and a ratio whose baseline is missing or
//! zero shows `-` too, never `inf` or `NaN`.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::error::Result;
use crate::profile::OpKind;
use crate::report::{CpuSide, Report};
use crate::stats::OpSummary;

/// Reads the reports and renders the table.
pub fn compare_files(files: &[PathBuf]) -> Result<String> {
    let reports = files.iter().map(|f| Report::read_json(f)).collect::<Result<Vec<_>>>()?;
    // The file name alone: the reports of one comparison sit side by side.
    let label =
        |f: &PathBuf| f.file_name().map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into_owned());
    let labelled: Vec<(String, Report)> = files.iter().map(label).zip(reports).collect();
    Ok(compare(&labelled))
}

/// The markdown table of `reports` (label, report); the first is the baseline.
pub fn compare(reports: &[(String, Report)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| op | file | target | ops/s | ×ops/s | p50 ms | ×p50 | p99 ms | ×p99 | errors |");
    let _ = writeln!(out, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for kind in OpKind::ALL {
        if !reports.iter().any(|(_, r)| find(r, kind).is_some()) {
            continue;
        }
        let base = reports.first().and_then(|(_, r)| find(r, kind));
        for (label, report) in reports {
            let Some(op) = find(report, kind) else {
                let _ = writeln!(out, "| {kind} | {label} | {} | - | - | - | - | - | - | - |", report.target);
                continue;
            };
            let p50 = op.latency.p50_us as f64 / 1e3;
            let p99 = op.latency.p99_us as f64 / 1e3;
            let _ = writeln!(
                out,
                "| {kind} | {label} | {} | {:.0} | {} | {p50:.3} | {} | {p99:.3} | {} | {} |",
                report.target,
                op.ops_per_s,
                ratio(op.ops_per_s, base.map(|b| b.ops_per_s)),
                ratio(p50, base.map(|b| b.latency.p50_us as f64 / 1e3)),
                ratio(p99, base.map(|b| b.latency.p99_us as f64 / 1e3)),
                op.errors
            );
        }
    }
    if reports.iter().any(|(_, r)| r.cpu.is_some()) {
        cpu_table(&mut out, reports);
    }
    out
}

/// Cores busy and CPU µs per call, client and servers, one row per file.
fn cpu_table(out: &mut String, reports: &[(String, Report)]) {
    let _ = writeln!(out, "\n| file | target | loadgen cores | loadgen µs/call | server cores | server µs/call |");
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|");
    for (label, report) in reports {
        let cells = |side| match report.cpu_use(side) {
            Some((cores, us)) => (format!("{cores:.2}"), format!("{us:.1}")),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let ((client_cores, client_us), (server_cores, server_us)) = (cells(CpuSide::Client), cells(CpuSide::Servers));
        let _ = writeln!(
            out,
            "| {label} | {} | {client_cores} | {client_us} | {server_cores} | {server_us} |",
            report.target
        );
    }
}

fn find(report: &Report, kind: OpKind) -> Option<&OpSummary> {
    report.ops.iter().find(|o| o.op == kind)
}

/// `value / base` as `1.23x`, or `-` when there is no usable baseline.
fn ratio(value: f64, base: Option<f64>) -> String {
    match base {
        Some(base) if base > 0.0 && value.is_finite() => format!("{:.2}x", value / base),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::args::{Plan, RunArgs};
    use crate::cpu::CpuWindow;
    use crate::driver::LatencyOrigin;
    use crate::report::{Machine, Totals};
    use crate::stats::Latency;

    fn op(kind: OpKind, ops_per_s: f64, p50_us: u64, p99_us: u64) -> OpSummary {
        OpSummary {
            op: kind,
            count: 10,
            ok: 10,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            error_examples: BTreeMap::new(),
            missed_keys: 0,
            bytes: 0,
            ops_per_s,
            mb_per_s: 0.0,
            latency: Latency {
                min_us: 1,
                mean_us: 1.0,
                stdev_us: 0.0,
                p50_us,
                p90_us: p99_us,
                p99_us,
                p999_us: p99_us,
                p9999_us: p99_us,
                max_us: p99_us,
            },
            percentiles: vec![],
        }
    }

    fn report(target: &str, ops: Vec<OpSummary>) -> Report {
        let args = RunArgs { target: Some(target.parse().expect("target")), ..RunArgs::default() };
        let plan = Plan::resolve(args).expect("plan").0;
        Report {
            loadgen_version: "0.1.0".into(),
            command_line: vec![],
            target: target.into(),
            plan,
            machine: Machine { hostname: "h".into(), kernel: "k".into(), cpus: 2 },
            started_unix_ms: 0,
            measured_ms: 1_000,
            latency_origin: LatencyOrigin::Actual,
            preload: None,
            cpu: None,
            totals: Totals { ops: 0, ok: 0, errors: 0, missed_keys: 0 },
            ops,
        }
    }

    #[test]
    fn one_row_per_operation_and_file_with_ratios_to_the_first() {
        let a = report("node://n:1", vec![op(OpKind::Read, 1000.0, 100, 400), op(OpKind::Write, 500.0, 200, 800)]);
        let b = report("redis://r:1", vec![op(OpKind::Read, 2000.0, 50, 800)]);
        let table = compare(&[("a.json".into(), a), ("b.json".into(), b)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 4, "{table}");
        assert_eq!(lines[2], "| read | a.json | node://n:1 | 1000 | 1.00x | 0.100 | 1.00x | 0.400 | 1.00x | 0 |");
        assert_eq!(lines[3], "| read | b.json | redis://r:1 | 2000 | 2.00x | 0.050 | 0.50x | 0.800 | 2.00x | 0 |");
        assert_eq!(lines[4], "| write | a.json | node://n:1 | 500 | 1.00x | 0.200 | 1.00x | 0.800 | 1.00x | 0 |");
        assert_eq!(lines[5], "| write | b.json | redis://r:1 | - | - | - | - | - | - | - |");
    }

    #[test]
    fn cpu_per_call_gets_its_own_table_when_measured() {
        let mut a = report("node://n:1", vec![op(OpKind::Read, 1000.0, 100, 400)]);
        a.totals.ops = 2_000;
        a.cpu = Some(CpuWindow {
            window_ms: 2_000,
            client_cpu_ms: Some(1_000),
            server_cpu_ms: Some(3_000),
            server_pids: vec![7],
        });
        let mut b = report("redis://r:1", vec![op(OpKind::Read, 2000.0, 50, 800)]);
        b.totals.ops = 4_000;
        b.cpu =
            Some(CpuWindow { window_ms: 2_000, client_cpu_ms: Some(400), server_cpu_ms: None, server_pids: vec![] });
        let c = report("node://n:2", vec![op(OpKind::Read, 10.0, 5, 5)]);
        let table = compare(&[("a".into(), a), ("b".into(), b), ("c".into(), c)]);
        // 1 s of loadgen CPU over 2,000 calls is 500 µs each; 3 s of server CPU in a 2 s window is 1.5 cores.
        assert!(table.contains("| a | node://n:1 | 0.50 | 500.0 | 1.50 | 1500.0 |"), "{table}");
        assert!(table.contains("| b | redis://r:1 | 0.20 | 100.0 | - | - |"), "{table}");
        assert!(table.contains("| c | node://n:2 | - | - | - | - |"), "{table}");
        let without = compare(&[("c".into(), report("node://n:2", vec![op(OpKind::Read, 10.0, 5, 5)]))]);
        assert!(!without.contains("µs/call"), "{without}");
    }

    #[test]
    fn a_missing_or_zero_baseline_gives_no_ratio() {
        let a = report("node://n:1", vec![op(OpKind::Read, 0.0, 0, 0)]);
        let b = report("node://n:1", vec![op(OpKind::Read, 10.0, 5, 5), op(OpKind::Delete, 1.0, 1, 1)]);
        let table = compare(&[("a".into(), a), ("b".into(), b)]);
        assert!(table.contains("| read | b | node://n:1 | 10 | - | 0.005 | - | 0.005 | - | 0 |"), "{table}");
        assert!(table.contains("| delete | b | node://n:1 | 1 | - |"), "{table}");
        assert!(!table.contains("inf") && !table.contains("NaN"), "{table}");
    }

    #[test]
    fn files_are_read_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let a = dir.path().join("a.json");
        report("node://n:1", vec![op(OpKind::Read, 100.0, 10, 20)]).write_json(&a).expect("write");
        let table = compare_files(&[a.clone(), a.clone()]).expect("compare");
        assert_eq!(table.lines().filter(|l| l.starts_with("| read | a.json |")).count(), 2, "{table}");
        let missing = dir.path().join("nope.json");
        let err = compare_files(&[a, missing]).expect_err("missing file").to_string();
        assert!(err.contains("nope.json"), "{err}");
    }
}
