//! What a run measured: per operation kind, a latency histogram, counts of
//! successes, misses and errors by kind, and bytes moved; and the summary
//! (percentiles, throughput) the reports print.
//!
//! Invariants: `count == ok + failed` for every kind, and the histogram
//! holds exactly `count` samples: every call that ended (success, miss,
//! wrong data, error or timeout) is one latency, so slow failures show in
//! the percentiles instead of vanishing from them; `errors` adds up to
//! `failed`. Latencies are whole microseconds, clamped to
//! [`LATENCY_US_MAX`]. Each client task keeps its own [`Stats`]; they are
//! merged once at the end, so recording takes no lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{LoadgenError, Result};
use crate::profile::OpKind;

/// Highest latency a histogram tracks exactly: one hour. Longer ones (an
/// open-loop run that fell an hour behind) are recorded as one hour.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits kept per latency: 0.1% resolution.
pub const LATENCY_SIGFIG: u8 = 3;
/// Error kinds for which an example message is kept (the first message of
/// each): kinds are code names, so a handful in practice; the bound keeps a
/// target that invents a kind per error from growing the report.
pub const ERROR_EXAMPLES_MAX: usize = 64;
/// The error kind of a read whose value fails its check.
pub const WRONG_DATA: &str = "wrong-data";
/// The error kind of a miss when misses are errors (after `--preload`).
pub const MISS: &str = "miss";
/// The error kind of a call that outlived `--timeout`.
pub const TIMEOUT: &str = "timeout";

/// An empty latency histogram with loadgen's bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig <= 5 (pinned by a test)")
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target did what was asked and every value read checked out.
    Ok,
    /// `keys` keys were absent (a read, update or delete of a missing key;
    /// for batches, the absent ones among the batch).
    Miss { keys: u64 },
    /// The call failed: an error of the target, a timeout, or wrong data.
    Failed { kind: String, message: String },
}

/// The numbers of one operation kind.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latency of every call that ended, in µs.
    pub histogram: Histogram<u64>,
    /// Calls that ended.
    pub count: u64,
    /// Calls that ended well (misses included when they are not errors).
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Keys found absent.
    pub missed_keys: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first message of each kind.
    pub error_examples: BTreeMap<String, String>,
    /// Value bytes written or read by calls that ended well.
    pub bytes: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            histogram: new_histogram(),
            count: 0,
            ok: 0,
            failed: 0,
            missed_keys: 0,
            errors: BTreeMap::new(),
            error_examples: BTreeMap::new(),
            bytes: 0,
        }
    }
}

impl OpStats {
    fn record(&mut self, latency: Duration, outcome: Outcome, bytes: u64, misses_are_errors: bool) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(us.min(LATENCY_US_MAX));
        self.count += 1;
        let failure = match outcome {
            Outcome::Ok => None,
            Outcome::Miss { keys } => {
                self.missed_keys += keys;
                misses_are_errors.then(|| (MISS.to_owned(), format!("{keys} key(s) absent after --preload")))
            }
            Outcome::Failed { kind, message } => Some((kind, message)),
        };
        match failure {
            None => {
                self.ok += 1;
                self.bytes += bytes;
            }
            Some((kind, message)) => {
                self.failed += 1;
                if self.error_examples.len() < ERROR_EXAMPLES_MAX {
                    self.error_examples.entry(kind.clone()).or_insert(message);
                }
                *self.errors.entry(kind).or_insert(0) += 1;
            }
        }
    }

    fn merge(&mut self, other: OpStats) -> Result<()> {
        self.histogram.add(&other.histogram).map_err(|e| LoadgenError::Histogram(format!("{e:?}")))?;
        self.count += other.count;
        self.ok += other.ok;
        self.failed += other.failed;
        self.missed_keys += other.missed_keys;
        self.bytes += other.bytes;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_insert(0) += n;
        }
        for (kind, message) in other.error_examples {
            self.error_examples.entry(kind).or_insert(message);
        }
        Ok(())
    }
}

/// The numbers of every operation kind a client (or the whole run) did.
#[derive(Debug, Clone)]
pub struct Stats {
    per_op: [Option<OpStats>; OpKind::ALL.len()],
    misses_are_errors: bool,
}

impl Stats {
    /// Empty stats; `misses_are_errors` after `--preload` (see
    /// [`Workload::misses_are_errors`](crate::args::Workload::misses_are_errors)).
    pub fn new(misses_are_errors: bool) -> Self {
        Stats { per_op: Default::default(), misses_are_errors }
    }

    /// Records one call that ended `latency` after it was due.
    pub fn record(&mut self, kind: OpKind, latency: Duration, outcome: Outcome, bytes: u64) {
        let misses_are_errors = self.misses_are_errors;
        self.per_op[kind.index()].get_or_insert_with(OpStats::default).record(
            latency,
            outcome,
            bytes,
            misses_are_errors,
        );
    }

    /// Adds another client's numbers.
    pub fn merge(&mut self, other: Stats) -> Result<()> {
        for (mine, theirs) in self.per_op.iter_mut().zip(other.per_op) {
            if let Some(theirs) = theirs {
                match mine {
                    Some(mine) => mine.merge(theirs)?,
                    None => *mine = Some(theirs),
                }
            }
        }
        Ok(())
    }

    /// The kinds with at least one call, in report order.
    pub fn ops(&self) -> impl Iterator<Item = (OpKind, &OpStats)> {
        OpKind::ALL.into_iter().zip(&self.per_op).filter_map(|(k, s)| s.as_ref().map(|s| (k, s)))
    }

    /// One kind's numbers, if it had calls.
    pub fn op(&self, kind: OpKind) -> Option<&OpStats> {
        self.per_op[kind.index()].as_ref()
    }
}

/// Latency percentiles of one operation kind, in µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub min_us: u64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        Latency {
            min_us: h.min(),
            mean_us: h.mean(),
            stdev_us: h.stdev(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            p9999_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
        }
    }
}

/// The report of one operation kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub op: OpKind,
    /// Calls that ended in the measured window.
    pub count: u64,
    pub ok: u64,
    pub errors: u64,
    /// Failures by kind: a gRPC code name, `timeout`, `wrong-data`, `miss`, ...
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first message seen of each kind.
    pub error_examples: BTreeMap<String, String>,
    /// Keys found absent (errors only after `--preload`).
    pub missed_keys: u64,
    /// Value bytes moved by calls that ended well.
    pub bytes: u64,
    pub ops_per_s: f64,
    /// Megabytes (10^6 bytes) of values per second.
    pub mb_per_s: f64,
    pub latency: Latency,
    /// The latency curve by percentile, from HdrHistogram's quantile
    /// iteration (one tick per half distance to 100%): percentiles and
    /// latencies both non-decreasing, the last point at 100% and the max.
    /// Empty for reports written before it existed.
    #[serde(default)]
    pub percentiles: Vec<PercentilePoint>,
}

/// One point of an operation's latency curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// In percent: 0 < percentile <= 100.
    pub percentile: f64,
    /// The latency at or below which `percentile`% of the calls ended.
    pub latency_ms: f64,
}

/// Quantile ticks per half distance to 100% in [`OpSummary::percentiles`]:
/// one keeps the JSON small (about two points per doubling of the sample
/// count) and still reaches the tail.
pub const CURVE_TICKS_PER_HALF_DISTANCE: u32 = 1;

/// The percentile curve of `h` (µs): empty for an empty histogram, else
/// ending at 100% and `h.max()`.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<PercentilePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(CURVE_TICKS_PER_HALF_DISTANCE)
        .map(|v| PercentilePoint {
            percentile: v.quantile_iterated_to() * 100.0,
            latency_ms: v.value_iterated_to() as f64 / 1e3,
        })
        .collect()
}

impl OpSummary {
    /// The summary of `stats` over a measured window of `measured_ms`.
    pub fn of(op: OpKind, stats: &OpStats, measured_ms: u64) -> Self {
        let seconds = (measured_ms.max(1)) as f64 / 1e3;
        OpSummary {
            op,
            count: stats.count,
            ok: stats.ok,
            errors: stats.failed,
            errors_by_kind: stats.errors.clone(),
            error_examples: stats.error_examples.clone(),
            missed_keys: stats.missed_keys,
            bytes: stats.bytes,
            // Successful calls only: a target that refuses fast must not
            // look fast.
            ops_per_s: stats.ok as f64 / seconds,
            mb_per_s: stats.bytes as f64 / seconds / 1e6,
            latency: Latency::of(&stats.histogram),
            percentiles: percentile_curve(&stats.histogram),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn histogram_bounds_are_valid() {
        let h = new_histogram();
        assert_eq!((h.low(), h.high(), h.sigfig()), (1, LATENCY_US_MAX, LATENCY_SIGFIG));
    }

    #[test]
    fn every_call_is_one_sample_and_the_counts_add_up() {
        let mut stats = Stats::new(false);
        stats.record(OpKind::Read, ms(1), Outcome::Ok, 100);
        stats.record(OpKind::Read, ms(2), Outcome::Miss { keys: 1 }, 0);
        stats.record(OpKind::Read, ms(3), Outcome::Failed { kind: WRONG_DATA.into(), message: "crc".into() }, 100);
        stats.record(OpKind::Write, ms(4), Outcome::Failed { kind: "UNAVAILABLE".into(), message: "down".into() }, 10);
        let read = stats.op(OpKind::Read).expect("reads");
        assert_eq!((read.count, read.ok, read.failed, read.missed_keys, read.bytes), (3, 2, 1, 1, 100));
        assert_eq!(read.histogram.len(), 3);
        assert_eq!(read.errors, BTreeMap::from([(WRONG_DATA.to_owned(), 1)]));
        assert_eq!(read.error_examples[WRONG_DATA], "crc");
        let write = stats.op(OpKind::Write).expect("writes");
        assert_eq!((write.count, write.ok, write.failed, write.bytes), (1, 0, 1, 0));
        assert!(stats.op(OpKind::Delete).is_none());
        assert_eq!(stats.ops().map(|(k, _)| k).collect::<Vec<_>>(), [OpKind::Read, OpKind::Write]);
    }

    #[test]
    fn misses_count_as_errors_only_when_asked() {
        let mut strict = Stats::new(true);
        strict.record(OpKind::BatchRead, ms(1), Outcome::Miss { keys: 3 }, 0);
        let s = strict.op(OpKind::BatchRead).expect("batch");
        assert_eq!((s.ok, s.failed, s.missed_keys, s.errors[MISS]), (0, 1, 3, 1));
    }

    #[test]
    fn merging_adds_everything_and_keeps_the_first_example() {
        let mut a = Stats::new(false);
        a.record(OpKind::Read, ms(1), Outcome::Failed { kind: TIMEOUT.into(), message: "first".into() }, 0);
        let mut b = Stats::new(false);
        b.record(OpKind::Read, ms(5), Outcome::Failed { kind: TIMEOUT.into(), message: "second".into() }, 0);
        b.record(OpKind::Write, ms(2), Outcome::Ok, 7);
        a.merge(b).expect("same bounds");
        let read = a.op(OpKind::Read).expect("reads");
        assert_eq!((read.count, read.errors[TIMEOUT], read.error_examples[TIMEOUT].as_str()), (2, 2, "first"));
        assert_eq!(read.histogram.max(), read.histogram.highest_equivalent(5_000));
        assert_eq!(a.op(OpKind::Write).expect("writes").bytes, 7);
    }

    #[test]
    fn latencies_beyond_an_hour_are_clamped_not_lost() {
        let mut stats = Stats::new(false);
        stats.record(OpKind::Read, Duration::from_secs(7_200), Outcome::Ok, 0);
        let h = &stats.op(OpKind::Read).expect("read").histogram;
        assert_eq!(h.len(), 1);
        assert!(h.equivalent(h.max(), LATENCY_US_MAX), "max {}", h.max());
    }

    #[test]
    fn summaries_compute_throughput_over_the_window() {
        let mut stats = Stats::new(false);
        for i in 1..=100 {
            stats.record(OpKind::Write, ms(i), Outcome::Ok, 1_000_000);
        }
        let s = OpSummary::of(OpKind::Write, stats.op(OpKind::Write).expect("writes"), 2_000);
        assert_eq!((s.count, s.ops_per_s, s.mb_per_s), (100, 50.0, 50.0));
        assert!(s.latency.p50_us >= 50_000 && s.latency.p50_us <= 50_100, "{:?}", s.latency);
        assert!(s.latency.p99_us >= 99_000 && s.latency.max_us >= 100_000, "{:?}", s.latency);
    }

    #[test]
    fn the_percentile_curve_is_monotonic_and_ends_at_the_max() {
        let mut stats = Stats::new(false);
        for i in 0..10_000u64 {
            stats.record(OpKind::Read, Duration::from_micros(100 + i * i / 50), Outcome::Ok, 0);
        }
        let h = &stats.op(OpKind::Read).expect("reads").histogram;
        let curve = percentile_curve(h);
        assert!(curve.len() > 10, "{curve:?}");
        assert!(
            curve.windows(2).all(|w| w[0].percentile <= w[1].percentile && w[0].latency_ms <= w[1].latency_ms),
            "monotonic: {curve:?}"
        );
        assert!(curve.iter().any(|p| p.percentile >= 99.9 && p.percentile < 100.0), "reaches the tail: {curve:?}");
        let last = curve.last().expect("points");
        assert_eq!(last.percentile, 100.0);
        assert_eq!(last.latency_ms, h.max() as f64 / 1e3);
        assert!(percentile_curve(&new_histogram()).is_empty());
    }
}
