//! The run's report in its three forms: the text table on stdout, the JSON
//! file (`--json`) and one HdrHistogram percentile-distribution file per
//! operation (`--hgrm`).
//!
//! Invariants: the JSON holds everything needed to compare runs later (the
//! command line, the resolved plan, the machine) and reads back into an
//! equal [`Report`]; an `.hgrm` file has exactly the layout HdrHistogram's
//! `outputPercentileDistribution` writes (values in milliseconds, from
//! histograms in microseconds, so every value prints exactly), which the
//! HdrHistogram plotter reads.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::args::Plan;
use crate::cpu::CpuWindow;
use crate::driver::{LatencyOrigin, PreloadOutcome, RunOutcome};

/// Whose CPU time: loadgen's, or the watched servers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSide {
    Client,
    Servers,
}
use crate::error::{LoadgenError, Result};
use crate::stats::OpSummary;
use crate::units::{format_duration_ms, format_latency_us};

/// Quantile ticks per half distance to 100%, as HdrHistogram's own
/// percentile output uses by default.
pub const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Microseconds per millisecond: `.hgrm` values are in ms.
const HGRM_SCALE: f64 = 1_000.0;

/// Where a run happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    /// From `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// CPUs this process may run on.
    pub cpus: u32,
}

impl Machine {
    /// This machine; fields that cannot be read are `unknown` (or 0 CPUs).
    pub fn current() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
        };
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpus: std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        }
    }
}

/// Sums over every operation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub ops: u64,
    pub ok: u64,
    pub errors: u64,
    pub missed_keys: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub loadgen_version: String,
    /// The command line, program name first.
    pub command_line: Vec<String>,
    /// The target as given (`node://127.0.0.1:6001`).
    pub target: String,
    /// The profile with every parameter resolved.
    pub plan: Plan,
    pub machine: Machine,
    /// When loadgen began the run (before connecting and any preload), in
    /// ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// What throughput is divided by: from the measured window's start to
    /// the end of its last request (at least the window's length; longer by
    /// the calls still in flight at its end, or by an open loop's backlog).
    pub measured_ms: u64,
    /// Where latencies start: `intended` in open loop, `actual` in closed loop.
    pub latency_origin: LatencyOrigin,
    pub preload: Option<PreloadOutcome>,
    /// CPU time over the measured window; absent in reports of older
    /// versions.
    #[serde(default)]
    pub cpu: Option<CpuWindow>,
    pub totals: Totals,
    /// One entry per operation kind that ran, in report order.
    pub ops: Vec<OpSummary>,
}

impl Report {
    /// The report of `outcome`.
    pub fn new(
        plan: &Plan,
        outcome: &RunOutcome,
        command_line: Vec<String>,
        started_unix_ms: u64,
        origin: LatencyOrigin,
    ) -> Self {
        let ops: Vec<OpSummary> =
            outcome.stats.ops().map(|(kind, stats)| OpSummary::of(kind, stats, outcome.measured_ms)).collect();
        let totals = Totals {
            ops: ops.iter().map(|o| o.count).sum(),
            ok: ops.iter().map(|o| o.ok).sum(),
            errors: ops.iter().map(|o| o.errors).sum(),
            missed_keys: ops.iter().map(|o| o.missed_keys).sum(),
        };
        Report {
            loadgen_version: env!("CARGO_PKG_VERSION").to_owned(),
            command_line,
            target: plan.target.to_string(),
            plan: plan.clone(),
            machine: Machine::current(),
            started_unix_ms,
            measured_ms: outcome.measured_ms,
            latency_origin: origin,
            preload: outcome.preload,
            cpu: outcome.cpu.clone(),
            totals,
            ops,
        }
    }

    /// The report as a human reads it: the plan in one line, a table of the
    /// operations, then the errors by kind with an example each.
    pub fn text(&self) -> String {
        let w = &self.plan.workload;
        let mut out = String::new();
        let looping = match w.rate_ops_per_s {
            Some(rate) => format!("open loop at {rate} ops/s, latency from the intended send time"),
            None => "closed loop, latency is service time".to_owned(),
        };
        let _ = writeln!(
            out,
            "loadgen {}: {} profile {}, mix {}, {} keys ({}), values {} ({}), {} clients, {}",
            self.loadgen_version,
            self.target,
            self.plan.profile.name(),
            w.mix,
            w.keys,
            w.distribution,
            w.value_size,
            w.transfer,
            w.concurrency,
            looping
        );
        if let Some(p) = &self.preload {
            let _ = writeln!(out, "preloaded {} keys in {}", p.keys, format_duration_ms(p.elapsed_ms));
        }
        let _ = writeln!(
            out,
            "measured {} after {} warm-up on {} ({} CPUs, Linux {})\n",
            format_duration_ms(self.measured_ms),
            format_duration_ms(w.warmup_ms),
            self.machine.hostname,
            self.machine.cpus,
            self.machine.kernel
        );
        let header =
            ["op", "count", "errors", "misses", "ops/s", "MB/s", "p50", "p90", "p99", "p99.9", "p99.99", "max"];
        let mut rows = vec![header.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()];
        for op in &self.ops {
            let l = &op.latency;
            rows.push(vec![
                op.op.to_string(),
                op.count.to_string(),
                op.errors.to_string(),
                op.missed_keys.to_string(),
                format!("{:.0}", op.ops_per_s),
                format!("{:.1}", op.mb_per_s),
                format_latency_us(l.p50_us),
                format_latency_us(l.p90_us),
                format_latency_us(l.p99_us),
                format_latency_us(l.p999_us),
                format_latency_us(l.p9999_us),
                format_latency_us(l.max_us),
            ]);
        }
        let widths: Vec<usize> =
            (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    let pad = widths[c] - cell.chars().count();
                    // The op name left-aligned, numbers right-aligned.
                    if c == 0 {
                        format!("{cell}{}", " ".repeat(pad))
                    } else {
                        format!("{}{cell}", " ".repeat(pad))
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        for op in self.ops.iter().filter(|o| o.errors > 0) {
            for (kind, count) in &op.errors_by_kind {
                let example = op.error_examples.get(kind).map(String::as_str).unwrap_or("");
                let _ = writeln!(out, "{} errors: {count} × {kind}: {example}", op.op);
            }
        }
        let t = &self.totals;
        let _ = writeln!(out, "\ntotal: {} ops, {} errors, {} keys missed", t.ops, t.errors, t.missed_keys);
        if let Some(line) = self.cpu_text() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// Cores busy and CPU µs per operation (calls of every kind) of loadgen
    /// or of the watched servers, over the measured window.
    pub fn cpu_use(&self, side: CpuSide) -> Option<(f64, f64)> {
        let cpu = self.cpu.as_ref()?;
        let ms = match side {
            CpuSide::Client => cpu.client_cpu_ms?,
            CpuSide::Servers => cpu.server_cpu_ms?,
        };
        Some((CpuWindow::cores(ms, cpu.window_ms), CpuWindow::us_per_op(ms, self.totals.ops)?))
    }

    /// "CPU in the measured window: ..." or nothing when unmeasured.
    fn cpu_text(&self) -> Option<String> {
        let (cores, us) = self.cpu_use(CpuSide::Client)?;
        let mut line = format!("CPU in the measured window: loadgen {cores:.2} cores ({us:.1} µs/op)");
        if let (Some((cores, us)), Some(cpu)) = (self.cpu_use(CpuSide::Servers), &self.cpu) {
            let pids: Vec<String> = cpu.server_pids.iter().map(u32::to_string).collect();
            let _ = write!(line, "; servers (pid {}) {cores:.2} cores ({us:.1} µs/op)", pids.join(", "));
        }
        Some(line)
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|source| LoadgenError::Json { path: path.into(), source })?;
        std::fs::write(path, text + "\n").map_err(|source| LoadgenError::Io { path: path.into(), source })
    }

    /// Reads a report written by [`Report::write_json`].
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::Io { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|source| LoadgenError::Json { path: path.into(), source })
    }
}

/// Writes `<dir>/<op>.hgrm` for every operation of `outcome`; returns the
/// files written.
pub fn write_hgrm_files(dir: &Path, outcome: &RunOutcome) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| LoadgenError::Io { path: dir.into(), source })?;
    let mut written = Vec::new();
    for (kind, stats) in outcome.stats.ops() {
        let path = dir.join(format!("{}.hgrm", kind.name()));
        std::fs::write(&path, hgrm(&stats.histogram))
            .map_err(|source| LoadgenError::Io { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// The percentile distribution of `h` (µs) in HdrHistogram's text format,
/// values in milliseconds: a header, one row per quantile tick (value,
/// quantile, count up to the value, 1/(1-quantile)), the last row without
/// the last column, then the mean, max and bucket footer.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total: u64 = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / HGRM_SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ =
        writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", h.mean() / HGRM_SCALE, h.stdev() / HGRM_SCALE);
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / HGRM_SCALE, h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_buckets(h));
    out
}

/// HdrHistogram's sub-bucket count: the power of two that holds
/// 2 × 10^sigfig distinct values (2048 for 3 significant digits).
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
}

/// A parsed `.hgrm` file (used by tests and by anyone checking a file).
#[derive(Debug, Clone, PartialEq)]
pub struct Hgrm {
    /// (value in ms, quantile, total count up to the value), in file order.
    pub rows: Vec<(f64, f64, u64)>,
    pub mean_ms: f64,
    pub stdev_ms: f64,
    pub max_ms: f64,
    pub total_count: u64,
    pub buckets: u64,
    pub sub_buckets: u64,
}

/// Parses text written by [`hgrm`]; `None` if it does not have the layout.
pub fn parse_hgrm(text: &str) -> Option<Hgrm> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    if header != ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"] {
        return None;
    }
    let mut rows = Vec::new();
    let mut footer = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("#[") {
            footer.push(rest.trim_end_matches(']').to_owned());
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            return None;
        }
        rows.push((fields[0].parse().ok()?, fields[1].parse().ok()?, fields[2].parse().ok()?));
    }
    // "Mean    =        1.234, StdDeviation   =        0.123" → [1.234, 0.123]
    let numbers = |line: &String| -> Option<Vec<f64>> {
        line.split(',').map(|part| part.split('=').nth(1)?.trim().parse().ok()).collect()
    };
    let [mean, max, buckets] = footer.as_slice() else { return None };
    let (mean, max, buckets) = (numbers(mean)?, numbers(max)?, numbers(buckets)?);
    Some(Hgrm {
        rows,
        mean_ms: *mean.first()?,
        stdev_ms: *mean.get(1)?,
        max_ms: *max.first()?,
        total_count: *max.get(1)? as u64,
        buckets: *buckets.first()? as u64,
        sub_buckets: *buckets.get(1)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::args::{Plan, RunArgs};
    use crate::profile::OpKind;
    use crate::stats::{new_histogram, Outcome, Stats};

    fn plan() -> Plan {
        let args = RunArgs {
            target: Some("node://127.0.0.1:6001".parse().expect("target")),
            rate: Some(500),
            distribution: Some("zipf:0.99".parse().expect("zipf")),
            value_size: Some("1KiB..4KiB".parse().expect("range")),
            ..RunArgs::default()
        };
        Plan::resolve(args).expect("valid").0
    }

    fn outcome() -> RunOutcome {
        let mut stats = Stats::new(false);
        for i in 0..1_000u64 {
            // A long tail: 1 ms to ~2 s, so every tick of the output has a value.
            let us = 1_000 + i * i * 2;
            stats.record(OpKind::Read, Duration::from_micros(us), Outcome::Ok, 4096);
            stats.record(OpKind::Write, Duration::from_micros(us / 2 + 17), Outcome::Ok, 4096);
        }
        stats.record(
            OpKind::Write,
            Duration::from_millis(3),
            Outcome::Failed { kind: "UNAVAILABLE".into(), message: "no replica".into() },
            0,
        );
        stats.record(OpKind::Read, Duration::from_millis(1), Outcome::Miss { keys: 1 }, 0);
        RunOutcome {
            stats,
            measured_ms: 2_000,
            preload: Some(PreloadOutcome { keys: 10, elapsed_ms: 5 }),
            cpu: Some(CpuWindow {
                window_ms: 2_000,
                client_cpu_ms: Some(1_500),
                server_cpu_ms: Some(900),
                server_pids: vec![41, 42],
            }),
        }
    }

    fn report() -> Report {
        Report::new(
            &plan(),
            &outcome(),
            vec!["loadgen".into(), "--target".into(), "node://127.0.0.1:6001".into()],
            1_700_000_000_000,
            LatencyOrigin::Intended,
        )
    }

    #[test]
    fn json_reads_back_equal() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("run.json");
        let report = report();
        report.write_json(&path).expect("write");
        let back = Report::read_json(&path).expect("read");
        assert_eq!(back, report);
        // The fields a later comparison needs are really there.
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(json["target"], "node://127.0.0.1:6001");
        assert_eq!(json["plan"]["workload"]["rate_ops_per_s"], 500);
        assert_eq!(json["plan"]["workload"]["distribution"]["theta"], 0.99);
        assert_eq!(json["plan"]["profile"], "mixed");
        assert_eq!(json["ops"][1]["op"], "write");
        assert_eq!(json["ops"][1]["errors_by_kind"]["UNAVAILABLE"], 1);
        assert_eq!(json["latency_origin"], "intended");
        // The percentile curve is there, ends at the max, and an older
        // report without it still reads (as an empty curve).
        let curve = json["ops"][0]["percentiles"].as_array().expect("percentiles");
        assert!(curve.len() > 5, "{curve:?}");
        let last = curve.last().expect("points");
        assert_eq!(last["percentile"], 100.0);
        assert_eq!(last["latency_ms"].as_f64(), Some(report.ops[0].latency.max_us as f64 / 1e3));
        let mut old = json.clone();
        for op in old["ops"].as_array_mut().expect("ops") {
            op.as_object_mut().expect("op").remove("percentiles");
        }
        let old: Report = serde_json::from_value(old).expect("an old report reads");
        assert!(old.ops.iter().all(|o| o.percentiles.is_empty()));
        assert_eq!(old.ops[0].latency, report.ops[0].latency);
        assert!(json["machine"]["cpus"].as_u64().expect("cpus") >= 1);
        assert!(!json["machine"]["kernel"].as_str().expect("kernel").is_empty());
    }

    #[test]
    fn report_totals_add_up_over_the_operations() {
        let r = report();
        assert_eq!(r.ops.iter().map(|o| o.op).collect::<Vec<_>>(), [OpKind::Read, OpKind::Write]);
        assert_eq!(r.totals, Totals { ops: 2_002, ok: 2_001, errors: 1, missed_keys: 1 });
        let read = &r.ops[0];
        assert_eq!((read.count, read.ops_per_s, read.errors_by_kind.clone()), (1_001, 500.5, BTreeMap::new()));
    }

    #[test]
    fn a_bad_json_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"not\": \"a report\"}").expect("write");
        let err = Report::read_json(&path).expect_err("not a report").to_string();
        assert!(err.contains("bad.json") && err.contains("not a loadgen report"), "{err}");
        let err = Report::read_json(&dir.path().join("missing.json")).expect_err("missing").to_string();
        assert!(err.contains("missing.json"), "{err}");
    }

    #[test]
    fn the_text_report_has_a_row_per_operation_and_the_errors() {
        let text = report().text();
        assert!(text.contains("node://127.0.0.1:6001 profile mixed"), "{text}");
        assert!(text.contains("open loop at 500 ops/s"), "{text}");
        let header = text.lines().find(|l| l.starts_with("op ")).expect("header");
        for column in ["count", "errors", "ops/s", "MB/s", "p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            assert!(header.split_whitespace().any(|c| c == column), "{column} in {header}");
        }
        assert!(text.lines().any(|l| l.starts_with("read ") && l.contains("1001")), "{text}");
        assert!(text.contains("write errors: 1 × UNAVAILABLE: no replica"), "{text}");
        // 1.5 s of loadgen CPU and 0.9 s of the servers' in a 2 s window, over 2,002 calls.
        assert!(
            text.contains(
                "CPU in the measured window: loadgen 0.75 cores (749.3 µs/op); servers (pid 41, 42) 0.45 cores (449.6 µs/op)"
            ),
            "{text}"
        );
    }

    /// The `.hgrm` file parses back, and what it says matches the histogram:
    /// each row's count is the histogram's count up to the row's value, the
    /// median row is the median, the footer has the max, mean and count.
    #[test]
    fn hgrm_output_parses_back_and_matches_the_histogram() {
        let out = outcome();
        let h = &out.stats.op(OpKind::Read).expect("reads").histogram;
        let text = hgrm(h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"), "{text}");
        let parsed = parse_hgrm(&text).expect("parses");
        assert!(parsed.rows.len() > 20, "{} rows", parsed.rows.len());
        for &(value_ms, quantile, total) in &parsed.rows {
            let value_us = (value_ms * 1_000.0).round() as u64;
            assert_eq!(h.highest_equivalent(value_us), value_us, "{value_ms} ms is a bucket's top");
            assert_eq!(h.count_between(0, value_us), total, "count up to {value_ms} ms");
            assert!(total as f64 / h.len() as f64 >= quantile - 1e-12, "quantile {quantile} reached at {value_ms}");
        }
        let median = parsed.rows.iter().find(|r| r.1 == 0.5).expect("a 50% row");
        assert_eq!((median.0 * 1_000.0).round() as u64, h.value_at_quantile(0.5));
        let last = parsed.rows.last().expect("rows");
        assert_eq!((last.1, last.2), (1.0, h.len()));
        assert_eq!((last.0 * 1_000.0).round() as u64, h.max());
        assert!(parsed.rows.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2), "monotonic");
        assert_eq!(parsed.total_count, h.len());
        assert_eq!((parsed.max_ms * 1_000.0).round() as u64, h.max());
        assert!((parsed.mean_ms - h.mean() / 1_000.0).abs() < 0.001, "{} vs {}", parsed.mean_ms, h.mean());
        assert!((parsed.stdev_ms - h.stdev() / 1_000.0).abs() < 0.001);
        assert_eq!((parsed.buckets, parsed.sub_buckets), (u64::from(h.buckets()), 2048));
        // Every row but the last has the 1/(1-p) column, as HdrHistogram writes it.
        let rows: Vec<&str> = text.lines().skip(2).filter(|l| !l.starts_with('#')).collect();
        assert!(rows[..rows.len() - 1].iter().all(|l| l.split_whitespace().count() == 4));
        assert_eq!(rows[rows.len() - 1].split_whitespace().count(), 3);
    }

    #[test]
    fn an_empty_histogram_has_only_header_and_footer() {
        let parsed = parse_hgrm(&hgrm(&new_histogram())).expect("parses");
        assert!(parsed.rows.is_empty());
        assert_eq!((parsed.total_count, parsed.max_ms), (0, 0.0));
        assert!(parse_hgrm("not a histogram").is_none());
    }

    #[test]
    fn hgrm_files_are_written_per_operation() {
        let dir = tempfile::tempdir().expect("dir");
        let target = dir.path().join("hist");
        let written = write_hgrm_files(&target, &outcome()).expect("write");
        assert_eq!(written, [target.join("read.hgrm"), target.join("write.hgrm")]);
        let write = parse_hgrm(&std::fs::read_to_string(&written[1]).expect("read")).expect("parses");
        assert_eq!(write.total_count, 1_001);
    }
}
