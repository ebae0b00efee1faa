//! The live progress bar on stderr: time since the clients started over
//! warm-up plus window, throughput and p99 of the last tick, errors so far.
//!
//! Invariants: shown only when stderr is a terminal (a redirected or piped
//! run prints nothing but its report); it only reads the driver's [`Live`]
//! counters and never slows a client beyond the one lock per recorded call
//! the driver takes anyway; it is cleared before the report is printed.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::args::Workload;
use crate::driver::Live;
use crate::units::format_latency_us;

/// How often the bar is redrawn (and the p99 window rolled).
pub const TICK_MS: u64 = 500;

/// A running progress display.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts the display if stderr is a terminal; `None` otherwise.
    pub fn start(workload: &Workload, live: Arc<Live>) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let total_ms = workload.warmup_ms + workload.duration_ms;
        let bar = ProgressBar::new(total_ms);
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let warmup_ms = workload.warmup_ms;
        let task = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(TICK_MS));
                let mut last = (Instant::now(), 0u64);
                loop {
                    ticks.tick().await;
                    let now = Instant::now();
                    let Some(&started) = live.started.get() else {
                        bar.set_message("connecting and preloading");
                        continue;
                    };
                    let elapsed_ms = u64::try_from((now - started).as_millis()).unwrap_or(u64::MAX);
                    bar.set_position(elapsed_ms.min(total_ms));
                    if elapsed_ms < warmup_ms {
                        bar.set_message("warming up");
                        continue;
                    }
                    let ops = live.ops.load(Ordering::Relaxed);
                    let errors = live.errors.load(Ordering::Relaxed);
                    let seconds = (now - last.0).as_secs_f64().max(1e-3);
                    let rate = ops.saturating_sub(last.1) as f64 / seconds;
                    last = (now, ops);
                    let p99 = {
                        let mut recent = live.recent.lock().unwrap_or_else(|p| p.into_inner());
                        let p99 = recent.value_at_quantile(0.99);
                        recent.reset();
                        p99
                    };
                    bar.set_message(format!(
                        "{rate:.0} ops/s  p99 {}  {ops} ops  {errors} errors",
                        format_latency_us(p99)
                    ));
                }
            }
        });
        Some(Progress { bar, task })
    }

    /// Stops and clears the display.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
