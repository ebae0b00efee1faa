//! CPU time over the measured window: loadgen's own, and that of the server
//! processes named with `--server-pid`. On a machine where client and server
//! share the cores, CPU per operation says what a throughput figure is made
//! of: a server that needs five times the CPU per call cannot be as fast.
//!
//! Invariants: figures come from `/proc/PID/stat` (user + system time of
//! every thread of the process and of its children that ended, such as
//! Redis's forked AOF rewrites, in the kernel's clock ticks); a window is
//! taken from two snapshots of the same processes; a process that ended
//! before the second snapshot makes the server figure absent, never a
//! partial sum.

use std::fs;

use serde::{Deserialize, Serialize};

use crate::error::{LoadgenError, Result};

/// The most `--server-pid` flags one run takes.
pub const SERVER_PIDS_MAX: usize = 64;

/// CPU time of one process so far, in ms.
fn process_cpu_ms(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ms(&stat, ticks_per_s())
}

/// User + system time, the process's and its ended children's, from the
/// text of `/proc/PID/stat`. The command name (field 2) is in parentheses
/// and may hold spaces, so fields are counted after its closing
/// parenthesis: utime, stime, cutime and cstime are fields 14 to 17.
fn parse_stat_cpu_ms(stat: &str, ticks_per_s: u64) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut ticks = 0u64;
    for field in after_name.split_whitespace().skip(11).take(4) {
        ticks += field.parse::<u64>().ok()?;
    }
    let complete = after_name.split_whitespace().nth(14).is_some();
    complete.then(|| ticks * 1000 / ticks_per_s.max(1))
}

fn ticks_per_s() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// The processes to watch: loadgen itself and the servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuWatch {
    pub server_pids: Vec<u32>,
}

impl CpuWatch {
    /// Checks that every server process exists now.
    pub fn new(server_pids: Vec<u32>) -> Result<Self> {
        if server_pids.len() > SERVER_PIDS_MAX {
            return Err(LoadgenError::invalid(
                "--server-pid",
                format!("given {} times; at most {SERVER_PIDS_MAX}", server_pids.len()),
            ));
        }
        if let Some(pid) = server_pids.iter().find(|pid| process_cpu_ms(&pid.to_string()).is_none()) {
            return Err(LoadgenError::invalid("--server-pid", format!("no process {pid} to watch")));
        }
        Ok(Self { server_pids })
    }

    /// CPU time so far of loadgen and of the servers together.
    pub fn snapshot(&self) -> CpuSnapshot {
        let servers = self.server_pids.iter().map(|pid| process_cpu_ms(&pid.to_string())).sum::<Option<u64>>();
        CpuSnapshot { client_ms: process_cpu_ms("self"), servers_ms: servers.filter(|_| !self.server_pids.is_empty()) }
    }
}

/// CPU time so far, in ms; `None` where it could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSnapshot {
    pub client_ms: Option<u64>,
    pub servers_ms: Option<u64>,
}

/// CPU used between two snapshots taken `window_ms` apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuWindow {
    pub window_ms: u64,
    /// loadgen's own CPU time in the window.
    pub client_cpu_ms: Option<u64>,
    /// The servers' CPU time in the window, summed; absent without
    /// `--server-pid`, or when a server ended during the window.
    pub server_cpu_ms: Option<u64>,
    pub server_pids: Vec<u32>,
}

impl CpuWindow {
    pub fn between(watch: &CpuWatch, start: CpuSnapshot, end: CpuSnapshot, window_ms: u64) -> Self {
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        CpuWindow {
            window_ms,
            client_cpu_ms: delta(start.client_ms, end.client_ms),
            server_cpu_ms: delta(start.servers_ms, end.servers_ms),
            server_pids: watch.server_pids.clone(),
        }
    }

    /// Cores busy on average: CPU time over wall time.
    pub fn cores(cpu_ms: u64, window_ms: u64) -> f64 {
        cpu_ms as f64 / window_ms.max(1) as f64
    }

    /// CPU µs per operation, for `ops` operations done in the window.
    pub fn us_per_op(cpu_ms: u64, ops: u64) -> Option<f64> {
        (ops > 0).then(|| cpu_ms as f64 * 1e3 / ops as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name_even_with_spaces_in_it() {
        // Fields 14 to 17 (utime, stime, cutime, cstime) are 250, 50, 30 and 20 ticks.
        let stat = "4242 (tokio rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 4 0 1 0 0";
        assert_eq!(parse_stat_cpu_ms(stat, 100), Some(3500));
        assert_eq!(parse_stat_cpu_ms(stat, 1000), Some(350));
        assert_eq!(parse_stat_cpu_ms("4242 (short) S 1", 100), None);
        assert_eq!(parse_stat_cpu_ms("4242 (cut) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50", 100), None);
        assert_eq!(parse_stat_cpu_ms("no parenthesis", 100), None);
    }

    #[test]
    fn our_own_cpu_time_grows_while_we_spin() {
        let watch = CpuWatch::new(vec![std::process::id()]).expect("our own pid exists");
        let before = watch.snapshot();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < deadline {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = watch.snapshot();
        let window = CpuWindow::between(&watch, before, after, 300);
        let client = window.client_cpu_ms.expect("readable");
        let server = window.server_cpu_ms.expect("readable");
        // 300 ms of spinning; ticks are 10 ms, and a loaded machine may
        // deschedule us for most of it.
        assert!((30..=1000).contains(&client), "spun for {client} ms of CPU");
        // The same process read twice, a moment apart: other test threads
        // may add a tick or two in between.
        assert!(server.abs_diff(client) <= 20, "the same process watched twice: {server} and {client} ms");
    }

    #[test]
    fn a_missing_process_is_refused_and_a_window_without_servers_has_no_server_figure() {
        let err = CpuWatch::new(vec![u32::MAX]).expect_err("no such pid").to_string();
        assert!(err.contains("--server-pid") && err.contains(&u32::MAX.to_string()), "{err}");
        let watch = CpuWatch::default();
        let w = CpuWindow::between(&watch, watch.snapshot(), watch.snapshot(), 10);
        assert_eq!(w.server_cpu_ms, None);
        assert!(w.client_cpu_ms.is_some());
        assert_eq!(CpuWindow::us_per_op(5, 0), None);
        assert_eq!(CpuWindow::us_per_op(5, 1000), Some(5.0));
    }
}
