//! Latency by percentile as an SVG line chart: `--plot FILE.svg` on a run
//! (one line per operation) and `loadgen plot --out FILE.svg A.json ...`
//! (one line per report's target and operation, `redis read`,
//! `cluster write`), from the percentile curves in the JSON reports.
//!
//! Invariants: the axes are HdrHistogram's usual ones, x = log10(1/(1-p))
//! with ticks 0%, 90%, 99%, ... [`X_MAX_NINES`] nines, and latency in ms on
//! a log y axis. Points beyond the last tick, and 100% itself (infinitely
//! far on that axis), are clamped to the last tick, so a line ends there at
//! its max. An operation without samples is left out; a chart with no line
//! at all is an error naming the file, never an empty picture or a panic.

use std::path::{Path, PathBuf};

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use crate::error::{LoadgenError, Result};
use crate::report::Report;
use crate::stats::PercentilePoint;
use crate::target::TargetSpec;

/// Nines on the x axis: the last tick is 99.999%.
pub const X_MAX_NINES: u32 = 5;
/// Size of the chart in pixels.
pub const SIZE: (u32, u32) = (1000, 600);
/// Lowest latency drawn: the histograms' resolution (1 µs), so the log axis
/// never meets 0.
const LATENCY_MS_MIN: f64 = 0.001;
/// Stroke width of the data lines and their legend samples (the axes are 1).
const LINE_WIDTH: u32 = 2;

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<PercentilePoint>,
}

/// The short name of a target in labels: `redis`, `node` or `cluster`.
pub fn target_label(target: &TargetSpec) -> &'static str {
    match target {
        TargetSpec::OptiCache { .. } => "cluster",
        TargetSpec::Node { .. } => "node",
        TargetSpec::Redis { .. } => "redis",
    }
}

/// The x coordinate of `percentile` (in %): log10(1/(1-p)), clamped to
/// [0, [`X_MAX_NINES`]].
pub fn x_of(percentile: f64) -> f64 {
    let p = (percentile / 100.0).clamp(0.0, 1.0);
    if p >= 1.0 {
        return f64::from(X_MAX_NINES);
    }
    (1.0 / (1.0 - p)).log10().clamp(0.0, f64::from(X_MAX_NINES))
}

/// The tick label at `x`: 0%, 90%, 99%, 99.9%, ...
fn tick_label(x: f64) -> String {
    let nines = x.round() as i32;
    match nines {
        i32::MIN..=0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

/// The lines of `report`'s operations that have samples, labelled by
/// operation, prefixed with the target's short name when `with_target`.
pub fn lines_of(report: &Report, with_target: bool) -> Vec<Line> {
    report
        .ops
        .iter()
        .filter(|op| !op.percentiles.is_empty())
        .map(|op| Line {
            label: if with_target {
                format!("{} {}", target_label(&report.plan.target), op.op)
            } else {
                op.op.to_string()
            },
            points: op.percentiles.clone(),
        })
        .collect()
}

/// `--plot`: the run's operations, titled with its profile and target.
pub fn plot_run(report: &Report, out: &Path) -> Result<()> {
    let title = format!("{} against {}: latency by percentile", report.plan.profile.name(), report.target);
    draw(out, &title, &lines_of(report, false))
}

/// `loadgen plot`: every report's operations, titled with the first
/// report's profile.
pub fn plot_files(files: &[PathBuf], out: &Path) -> Result<()> {
    let reports = files.iter().map(|f| Report::read_json(f)).collect::<Result<Vec<_>>>()?;
    let title = match reports.first() {
        Some(first) => format!("{}: latency by percentile", first.plan.profile.name()),
        None => "latency by percentile".to_owned(),
    };
    let lines: Vec<Line> = reports.iter().flat_map(|r| lines_of(r, true)).collect();
    draw(out, &title, &lines)
}

/// Draws `lines` into the SVG file `out`.
pub fn draw(out: &Path, title: &str, lines: &[Line]) -> Result<()> {
    let fail = |why: String| LoadgenError::Plot { path: out.into(), why };
    if lines.is_empty() {
        return Err(fail("no operation has latency samples (reports from before percentile curves have none)".into()));
    }
    let latencies = lines.iter().flat_map(|l| &l.points).map(|p| p.latency_ms.max(LATENCY_MS_MIN));
    let (lo, hi) = latencies.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Some room above and below, and at least a decade on the axis.
    let (y_lo, y_hi) = ((lo / 1.5).max(LATENCY_MS_MIN), (hi * 1.5).max(lo * 10.0));

    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..f64::from(X_MAX_NINES), (y_lo..y_hi).log_scale())
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        // One label per nine: plotters picks the whole numbers of 0..=5.
        .x_labels(X_MAX_NINES as usize + 1)
        .x_label_formatter(&|x| tick_label(*x))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = line.points.iter().map(|p| (x_of(p.percentile), p.latency_ms.max(LATENCY_MS_MIN)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(LINE_WIDTH)))
            .map_err(|e| fail(e.to_string()))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(LINE_WIDTH)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::args::{Plan, RunArgs};
    use crate::driver::{LatencyOrigin, RunOutcome};
    use crate::profile::{OpKind, ProfileName};
    use crate::stats::{Outcome, Stats};

    /// A report against `target` whose `ops` each have 1000 samples.
    fn report(target: &str, ops: &[OpKind]) -> Report {
        let args = RunArgs {
            target: Some(target.parse().expect("target")),
            profile: ProfileName::ReadHeavy,
            ..RunArgs::default()
        };
        let plan = Plan::resolve(args).expect("plan").0;
        let mut stats = Stats::new(false);
        for &kind in ops {
            for i in 0..1_000u64 {
                stats.record(kind, Duration::from_micros(50 + i * i), Outcome::Ok, 0);
            }
        }
        let outcome = RunOutcome { stats, measured_ms: 1_000, preload: None, cpu: None };
        Report::new(&plan, &outcome, vec![], 0, LatencyOrigin::Actual)
    }

    /// The polylines of data lines and legend samples (axes and ticks are
    /// polylines too, drawn thinner).
    fn polylines(svg: &str) -> usize {
        svg.split("<polyline").skip(1).filter(|p| p.contains(&format!("stroke-width=\"{LINE_WIDTH}\""))).count()
    }

    /// The contents of the SVG's `<text>` elements, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_owned()))
            .collect()
    }

    fn has_text(svg: &str, text: &str) -> bool {
        texts(svg).iter().any(|t| t == text)
    }

    #[test]
    fn x_is_the_number_of_nines_and_100_percent_is_clamped() {
        assert_eq!(x_of(0.0), 0.0);
        assert!((x_of(90.0) - 1.0).abs() < 1e-9);
        assert!((x_of(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(x_of(100.0), 5.0);
        assert_eq!(x_of(99.999_999), 5.0);
        let labels: Vec<String> = (0..=5).map(|x| tick_label(f64::from(x))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn a_run_plot_has_one_line_per_operation_and_a_legend() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("run.svg");
        plot_run(&report("node://127.0.0.1:1", &[OpKind::Read, OpKind::Write]), &out).expect("plot");
        let svg = std::fs::read_to_string(&out).expect("svg written");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        // Each line is drawn once in the chart and once in the legend.
        assert_eq!(polylines(&svg), 2 * 2, "{svg}");
        assert!(has_text(&svg, "read") && has_text(&svg, "write"), "{svg}");
        assert!(has_text(&svg, "read-heavy against node://127.0.0.1:1: latency by percentile"), "{svg}");
        for tick in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(has_text(&svg, tick), "tick {tick}: {svg}");
        }
    }

    #[test]
    fn a_plot_of_files_labels_lines_by_target_and_operation() {
        let dir = tempfile::tempdir().expect("dir");
        let mut files = Vec::new();
        for (name, target) in
            [("redis", "redis://127.0.0.1:1"), ("node", "node://127.0.0.1:2"), ("cluster", "opticache://127.0.0.1:3")]
        {
            let path = dir.path().join(format!("{name}.json"));
            report(target, &[OpKind::Read, OpKind::Write]).write_json(&path).expect("write");
            files.push(path);
        }
        let out = dir.path().join("profile.svg");
        plot_files(&files, &out).expect("plot");
        let svg = std::fs::read_to_string(&out).expect("svg written");
        assert_eq!(polylines(&svg), 2 * 6, "{svg}");
        for label in ["redis read", "redis write", "node read", "node write", "cluster read", "cluster write"] {
            assert!(has_text(&svg, label), "{label}: {svg}");
        }
        assert!(has_text(&svg, "read-heavy: latency by percentile"), "{svg}");
    }

    #[test]
    fn operations_without_samples_are_skipped_and_no_data_is_an_error() {
        let mut r = report("redis://127.0.0.1:1", &[OpKind::Read, OpKind::Write]);
        r.ops[1].percentiles.clear();
        assert_eq!(lines_of(&r, true).iter().map(|l| l.label.as_str()).collect::<Vec<_>>(), ["redis read"]);
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("one.svg");
        plot_run(&r, &out).expect("plot");
        assert_eq!(polylines(&std::fs::read_to_string(&out).expect("svg")), 2);

        let empty = report("redis://127.0.0.1:1", &[]);
        let out = dir.path().join("empty.svg");
        let err = plot_run(&empty, &out).expect_err("nothing to plot").to_string();
        assert!(err.contains("empty.svg") && err.contains("no operation has latency samples"), "{err}");
        assert!(!out.exists(), "no empty picture");
    }
}
