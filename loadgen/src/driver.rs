//! The run itself: connect one connection per client task, preload the key
//! space if asked, then let every client send requests, closed loop or open
//! loop, through a warm-up and a measured window.
//!
//! - Closed loop (no `--rate`): a client sends its next request when the
//!   last one returned. Latency is service time, recorded plainly: there is
//!   no intended schedule, so any "expected interval" for HdrHistogram's
//!   `record_correct` would be a guess that invents samples. Such runs
//!   understate tail latency under stalls (coordinated omission); use
//!   `--rate` to measure it.
//! - Open loop (`--rate`): request k of the run is due at `k / rate` seconds
//!   after the start, client c sending requests k ≡ c (mod concurrency).
//!   Latency counts from when a request was due ([`LatencyOrigin::Intended`],
//!   as wrk2 does), so a stall delays every request due during it and all of
//!   them show it, not only the one that hit it. Clients wake
//!   [`TIMER_LEAD`] before a request is due (tokio's timer is
//!   millisecond-grained and fires late); a request sent early is timed from
//!   its send.
//!
//! Invariants: requests are prepared (keys named, values made) before the
//! clock of their latency starts, and replies checked after it stops; a
//! request belongs to the warm-up or to the window by when it was due, so the
//! window holds exactly the requests due in it; every call is bounded by
//! `--timeout`; throughput is over the time from the window's start to the
//! end of its last request (at least the window), so an open loop that the
//! target cannot keep up with reports what was done, not what was asked;
//! all time is tokio's, so tests can run the driver on a paused clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::args::Workload;
use crate::cpu::{CpuSnapshot, CpuWatch, CpuWindow};
use crate::error::{LoadgenError, Result};
use crate::keys::{key_name, KeyChooser};
use crate::profile::OpKind;
use crate::stats::{new_histogram, Outcome, Stats, TIMEOUT, WRONG_DATA};
use crate::target::{Connection, Connector, OpError, Reply, Request};
use crate::value::{check_value, make_value};

/// How far ahead of a request's due time an open-loop client wakes. Tokio's
/// timer fires after its deadline, by up to about two milliseconds (its
/// wheel ticks every millisecond and the runtime parks for whole
/// milliseconds), so a client sleeping until the due time itself would send
/// late, and that lateness would be charged to the target. Waking this much
/// early turns it into an early send instead, which is timed from when it
/// was actually sent; the schedule, and so the mean rate, stay exact, at
/// the cost of up to this much jitter in when requests leave.
pub const TIMER_LEAD: Duration = Duration::from_millis(2);

/// Where a latency starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyOrigin {
    /// When the request was due (open loop): corrects for coordinated omission.
    Intended,
    /// When it was actually sent: what a naive open-loop tool reports.
    Actual,
}

/// Counters the progress display reads while the run goes on. Clients
/// update them only in the measured window.
#[derive(Debug)]
pub struct Live {
    /// Calls that ended.
    pub ops: AtomicU64,
    /// Calls that failed.
    pub errors: AtomicU64,
    /// Latencies since the display last took them.
    pub recent: Mutex<Histogram<u64>>,
    /// When the clients started (after connecting and any preload).
    pub started: OnceLock<Instant>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            recent: Mutex::new(new_histogram()),
            started: OnceLock::new(),
        }
    }
}

impl Live {
    fn record(&self, latency: Duration, failed: bool) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means the display thread panicked; keep counting.
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let high = recent.high();
        recent.saturating_record(us.min(high));
    }
}

/// The preload's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreloadOutcome {
    pub keys: u64,
    pub elapsed_ms: u64,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    pub stats: Stats,
    /// Length of the measured window (the throughput's denominator).
    pub measured_ms: u64,
    pub preload: Option<PreloadOutcome>,
    /// CPU time over the measured window (loadgen's, and the watched servers').
    pub cpu: Option<CpuWindow>,
}

/// Runs `workload` against `connector`, watching `cpu`'s processes over the
/// measured window.
pub async fn run<C: Connector>(
    connector: &C,
    workload: &Workload,
    origin: LatencyOrigin,
    live: Option<Arc<Live>>,
    cpu: &CpuWatch,
) -> Result<RunOutcome> {
    let workload = Arc::new(workload.clone());
    let chooser = KeyChooser::new(workload.keys, workload.distribution)
        .map_err(|why| LoadgenError::invalid("--keys/--distribution", why))?;
    let mut conns = Vec::with_capacity(workload.concurrency as usize);
    for _ in 0..workload.concurrency {
        conns.push(connector.connect().await?);
    }
    let mut preloaded = None;
    if workload.preload {
        let (back, outcome) = preload(conns, &workload).await?;
        conns = back;
        preloaded = Some(outcome);
    }

    let start = Instant::now();
    if let Some(live) = &live {
        let _ = live.started.set(start);
    }
    let measure_start = start + Duration::from_millis(workload.warmup_ms);
    let schedule = Schedule {
        start,
        measure_start,
        end: measure_start + Duration::from_millis(workload.duration_ms),
        rate_ops_per_s: workload.rate_ops_per_s,
        concurrency: workload.concurrency,
    };
    let cpu_start = tokio::spawn(cpu_at(cpu.clone(), measure_start));
    let mut tasks = Vec::with_capacity(conns.len());
    for (index, conn) in conns.into_iter().enumerate() {
        let client = ClientTask {
            conn,
            index: index as u64,
            rng: SmallRng::seed_from_u64(client_seed(workload.seed, index as u64)),
            chooser: chooser.clone(),
            workload: Arc::clone(&workload),
            schedule,
            origin,
            live: live.clone(),
            stats: Stats::new(workload.misses_are_errors),
        };
        tasks.push(tokio::spawn(client.run()));
    }
    let mut stats = Stats::new(workload.misses_are_errors);
    let mut last_done = schedule.end;
    for task in tasks {
        let (client_stats, client_last_done) = task.await.map_err(|e| LoadgenError::Task(e.to_string()))?;
        stats.merge(client_stats)?;
        last_done = last_done.max(client_last_done.unwrap_or(schedule.end));
    }
    // Throughput is over the time the window's requests really took: an open
    // loop the target cannot keep up with finishes them after the window, and
    // dividing by the window alone would report the offered rate.
    let measured_ms = (last_done - measure_start).as_millis().max(u128::from(workload.duration_ms));
    // Over the same span as the calls counted: to the last one's end.
    let cpu_window = cpu_start.await.ok().map(|(start, at)| {
        let window_ms = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
        CpuWindow::between(cpu, start, cpu.snapshot(), window_ms)
    });
    Ok(RunOutcome {
        stats,
        measured_ms: u64::try_from(measured_ms).unwrap_or(u64::MAX),
        preload: preloaded,
        cpu: cpu_window,
    })
}

/// CPU time of `watch`'s processes at `at`, and when it was read.
async fn cpu_at(watch: CpuWatch, at: Instant) -> (CpuSnapshot, Instant) {
    tokio::time::sleep_until(at).await;
    (watch.snapshot(), Instant::now())
}

/// Each client's own seed, so clients do not draw the same keys.
fn client_seed(seed: u64, client: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ client.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Mixed into the seed of the preload's value sizes and bodies, so they are
/// not the same draws the run's clients make ("PRELOAD" in ASCII).
const PRELOAD_SEED_SALT: u64 = 0x0050_5245_4c4f_4144;

/// Writes every key once, spread over the connections (connection c writes
/// keys c, c + n, c + 2n, ...); gives the connections back.
async fn preload<C: Connection>(conns: Vec<C>, workload: &Arc<Workload>) -> Result<(Vec<C>, PreloadOutcome)> {
    let started = Instant::now();
    let stride = conns.len() as u64;
    let mut tasks = Vec::with_capacity(conns.len());
    for (index, mut conn) in conns.into_iter().enumerate() {
        let w = Arc::clone(workload);
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(client_seed(w.seed ^ PRELOAD_SEED_SALT, index as u64));
            let timeout = Duration::from_millis(w.timeout_ms);
            let (mut failed, mut first) = (0u64, None);
            let mut id = index as u64;
            while id < w.keys {
                let size = w.value_size.draw(&mut rng);
                let value = make_value(id, usize::try_from(size).unwrap_or(usize::MAX), rng.random());
                let request = Request::Write { key: key_name(id), value, transfer: w.transfer };
                let failure = match tokio::time::timeout(timeout, conn.call(request)).await {
                    Ok(Ok(Reply::Done)) => None,
                    Ok(Ok(other)) => Some(format!("protocol: a write answered {other:?}")),
                    Ok(Err(e)) => Some(format!("{}: {}", e.kind, e.message)),
                    Err(_) => Some(format!("{TIMEOUT}: no answer within {} ms", w.timeout_ms)),
                };
                if let Some(failure) = failure {
                    failed += 1;
                    first.get_or_insert(failure);
                }
                id += stride;
            }
            (conn, failed, first)
        }));
    }
    let mut back = Vec::with_capacity(tasks.len());
    let (mut failed, mut first) = (0u64, None);
    for task in tasks {
        let (conn, f, e) = task.await.map_err(|e| LoadgenError::Task(e.to_string()))?;
        back.push(conn);
        failed += f;
        first = first.or(e);
    }
    if failed > 0 {
        return Err(LoadgenError::Preload { failed, keys: workload.keys, first: first.unwrap_or_default() });
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((back, PreloadOutcome { keys: workload.keys, elapsed_ms }))
}

/// When requests are due, and which ones are measured.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    measure_start: Instant,
    end: Instant,
    rate_ops_per_s: Option<u64>,
    concurrency: u32,
}

impl Schedule {
    /// When client `client`'s request number `n` (from 0) is due in the open
    /// loop: request `n · concurrency + client` of the run, at that many
    /// `1/rate` steps after the start (computed from the start each time, so
    /// no rounding error accumulates).
    fn due(&self, rate: u64, client: u64, n: u64) -> Instant {
        let k = u128::from(n) * u128::from(self.concurrency) + u128::from(client);
        let nanos = k * 1_000_000_000 / u128::from(rate.max(1));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A request ready to send, with what is needed to judge its reply.
struct Prepared {
    kind: OpKind,
    /// The key ids, in request order.
    ids: Vec<u64>,
    /// Value bytes sent (writes).
    sent_bytes: u64,
    request: Request,
}

/// One client: its connection and its share of the workload.
struct ClientTask<C> {
    conn: C,
    index: u64,
    rng: SmallRng,
    chooser: KeyChooser,
    workload: Arc<Workload>,
    schedule: Schedule,
    origin: LatencyOrigin,
    live: Option<Arc<Live>>,
    stats: Stats,
}

impl<C: Connection> ClientTask<C> {
    /// Sends until the schedule's end; the stats and when the last measured
    /// call ended.
    async fn run(mut self) -> (Stats, Option<Instant>) {
        let timeout = Duration::from_millis(self.workload.timeout_ms);
        let mut n: u64 = 0;
        let mut last_done = None;
        loop {
            let prepared = self.prepare();
            let due = match self.schedule.rate_ops_per_s {
                Some(rate) => self.schedule.due(rate, self.index, n),
                None => Instant::now(),
            };
            n += 1;
            if due >= self.schedule.end {
                break;
            }
            if self.schedule.rate_ops_per_s.is_some() {
                // Closed-loop requests are due now: no timer, which would
                // round up to the next millisecond tick.
                let wake = due.checked_sub(TIMER_LEAD).unwrap_or(due);
                if wake > Instant::now() {
                    tokio::time::sleep_until(wake).await;
                }
            }
            let sent = Instant::now();
            let answer = tokio::time::timeout(timeout, self.conn.call(prepared.request)).await;
            let done = Instant::now();
            if due < self.schedule.measure_start {
                continue;
            }
            last_done = Some(done);
            let answer = answer.unwrap_or_else(|_| {
                Err(OpError::new(TIMEOUT, format!("no answer within {} ms", self.workload.timeout_ms)))
            });
            let (outcome, bytes) = judge(prepared.kind, &prepared.ids, prepared.sent_bytes, answer);
            let latency = done
                - match self.origin {
                    // Sent late: the wait since it was due counts. Sent early
                    // (see TIMER_LEAD): only the call itself.
                    LatencyOrigin::Intended => due.min(sent),
                    LatencyOrigin::Actual => sent,
                };
            if let Some(live) = &self.live {
                live.record(latency, matches!(outcome, Outcome::Failed { .. }));
            }
            self.stats.record(prepared.kind, latency, outcome, bytes);
        }
        (self.stats, last_done)
    }

    fn prepare(&mut self) -> Prepared {
        let w = &*self.workload;
        let kind = w.mix.pick(self.rng.random_range(0..w.mix.total()));
        let count = if kind.is_batch() { w.batch_size as usize } else { 1 };
        let ids: Vec<u64> = (0..count).map(|_| self.chooser.next(&mut self.rng)).collect();
        let mut sent_bytes = 0;
        let mut value_for = |rng: &mut SmallRng, id: u64| -> Bytes {
            let size = w.value_size.draw(rng);
            sent_bytes += size;
            make_value(id, usize::try_from(size).unwrap_or(usize::MAX), rng.random())
        };
        let request = match kind {
            OpKind::Read => Request::Read { key: key_name(ids[0]), transfer: w.transfer },
            OpKind::Write => {
                Request::Write { key: key_name(ids[0]), value: value_for(&mut self.rng, ids[0]), transfer: w.transfer }
            }
            OpKind::Update => Request::Update { key: key_name(ids[0]), value: value_for(&mut self.rng, ids[0]) },
            OpKind::Delete => Request::Delete { key: key_name(ids[0]) },
            OpKind::BatchRead => Request::BatchRead { keys: ids.iter().map(|&id| key_name(id)).collect() },
            OpKind::BatchWrite => Request::BatchWrite {
                entries: ids.iter().map(|&id| (key_name(id), value_for(&mut self.rng, id))).collect(),
            },
        };
        Prepared { kind, ids, sent_bytes, request }
    }
}

/// How a call of `kind` on keys `ids` ended, and the value bytes it moved.
fn judge(kind: OpKind, ids: &[u64], sent_bytes: u64, answer: Result<Reply, OpError>) -> (Outcome, u64) {
    let reply = match answer {
        Ok(reply) => reply,
        Err(e) => return (Outcome::Failed { kind: e.kind, message: e.message }, 0),
    };
    let unexpected = |reply: &Reply| Outcome::Failed {
        kind: "protocol".into(),
        message: format!("{kind} got an unexpected reply: {}", describe(reply)),
    };
    match (kind, reply) {
        (OpKind::Read, Reply::Value(Some(value))) => match check_value(ids[0], &value) {
            Ok(()) => (Outcome::Ok, value.len() as u64),
            Err(m) => (wrong_data(ids[0], &m), 0),
        },
        (OpKind::Read, Reply::Value(None)) => (Outcome::Miss { keys: 1 }, 0),
        (OpKind::Write | OpKind::BatchWrite | OpKind::Update, Reply::Done) => (Outcome::Ok, sent_bytes),
        (OpKind::Delete, Reply::Done) => (Outcome::Ok, 0),
        (OpKind::Update | OpKind::Delete, Reply::Absent) => (Outcome::Miss { keys: 1 }, 0),
        (OpKind::BatchRead, Reply::Values(values)) if values.len() == ids.len() => {
            let (mut misses, mut bytes) = (0u64, 0u64);
            for (&id, value) in ids.iter().zip(&values) {
                match value {
                    None => misses += 1,
                    Some(value) => match check_value(id, value) {
                        Ok(()) => bytes += value.len() as u64,
                        Err(m) => return (wrong_data(id, &m), 0),
                    },
                }
            }
            if misses > 0 {
                (Outcome::Miss { keys: misses }, bytes)
            } else {
                (Outcome::Ok, bytes)
            }
        }
        (_, reply) => (unexpected(&reply), 0),
    }
}

fn wrong_data(id: u64, mismatch: &crate::value::Mismatch) -> Outcome {
    Outcome::Failed {
        kind: WRONG_DATA.into(),
        message: format!("key {}: {mismatch}", String::from_utf8_lossy(&key_name(id))),
    }
}

/// A reply in a few words (values are not printed: they may be 64 MiB).
fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Value(v) => {
            format!("a value ({})", v.as_ref().map_or("absent".into(), |v| format!("{} bytes", v.len())))
        }
        Reply::Values(vs) => format!("{} values", vs.len()),
        Reply::Done => "done".into(),
        Reply::Absent => "absent".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::args::ValueSize;
    use crate::keys::Distribution;
    use crate::profile::{Mix, Transfer};
    use crate::stats::MISS;

    fn workload(mix: &str) -> Workload {
        Workload {
            mix: mix.parse::<Mix>().expect("mix"),
            keys: 50,
            value_size: ValueSize::Fixed { bytes: 64 },
            transfer: Transfer::Unary,
            distribution: Distribution::Uniform,
            concurrency: 1,
            duration_ms: 1_000,
            warmup_ms: 0,
            rate_ops_per_s: None,
            preload: false,
            namespace: "test".into(),
            seed: 1,
            batch_size: 4,
            timeout_ms: 10_000,
            misses_are_errors: false,
        }
    }

    /// A target that answers every write at once, except the `stall_at`-th
    /// call of the run, which takes `stall`: a GC pause, a stuck fsync.
    struct StallOnce {
        calls: Arc<AtomicU64>,
        stall_at: u64,
        stall: Duration,
        /// Time every call takes (zero: answers at once).
        service: Duration,
    }

    struct StallConn {
        calls: Arc<AtomicU64>,
        stall_at: u64,
        stall: Duration,
        service: Duration,
    }

    impl Connector for StallOnce {
        type Conn = StallConn;

        async fn connect(&self) -> Result<StallConn> {
            let (calls, stall_at, stall, service) = (Arc::clone(&self.calls), self.stall_at, self.stall, self.service);
            Ok(StallConn { calls, stall_at, stall, service })
        }
    }

    impl Connection for StallConn {
        async fn call(&mut self, _request: Request) -> Result<Reply, OpError> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
            if call == self.stall_at {
                tokio::time::sleep(self.stall).await;
            } else if !self.service.is_zero() {
                tokio::time::sleep(self.service).await;
            }
            Ok(Reply::Done)
        }
    }

    fn stall_once(service: Duration) -> StallOnce {
        StallOnce { calls: Arc::new(AtomicU64::new(0)), stall_at: 100, stall: Duration::from_millis(200), service }
    }

    const MS: u64 = 1_000;

    /// Open loop at 1000 ops/s for 1 s; call 100 stalls for 200 ms. Counting
    /// from the intended send time, the ~200 requests due during the stall
    /// wait up to 200 ms each, so p99 shows the stall; counting from the
    /// actual send (the naive way) only the stalled call is slow, and p99
    /// says all is well.
    #[tokio::test(start_paused = true)]
    async fn open_loop_latency_from_the_intended_time_shows_a_stall_that_naive_timing_hides() {
        let w = Workload { rate_ops_per_s: Some(1_000), ..workload("write:1") };

        let corrected = run(&stall_once(Duration::ZERO), &w, LatencyOrigin::Intended, None, &CpuWatch::default())
            .await
            .expect("run");
        let h = &corrected.stats.op(OpKind::Write).expect("writes").histogram;
        assert_eq!(h.len(), 1_000, "one request per ms for 1 s");
        assert!(h.value_at_quantile(0.99) >= 100 * MS, "p99 {} µs shows the stall", h.value_at_quantile(0.99));
        assert!(h.value_at_quantile(0.9) >= 90 * MS, "p90 {} µs: ~200 requests waited", h.value_at_quantile(0.9));
        assert!(h.equivalent(h.max(), 200 * MS), "max {} µs", h.max());
        // The first request due after the stall is on time again.
        assert!(h.value_at_quantile(0.5) < MS, "p50 {} µs", h.value_at_quantile(0.5));

        let naive =
            run(&stall_once(Duration::ZERO), &w, LatencyOrigin::Actual, None, &CpuWatch::default()).await.expect("run");
        let h = &naive.stats.op(OpKind::Write).expect("writes").histogram;
        assert_eq!(h.len(), 1_000);
        assert!(h.value_at_quantile(0.99) < MS, "naive p99 {} µs hides the stall", h.value_at_quantile(0.99));
        assert_eq!(h.count_between(100 * MS, LATENCY_MAX), 1, "naive timing saw one slow call");
        assert!(h.equivalent(h.max(), 200 * MS), "max {} µs", h.max());
    }

    const LATENCY_MAX: u64 = crate::stats::LATENCY_US_MAX;

    /// The same stall in a closed loop: the client waits, sends nothing
    /// meanwhile, and the one slow sample is all the histogram sees.
    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_records_a_stall_as_one_sample() {
        let w = workload("write:1");
        let out = run(&stall_once(Duration::from_millis(1)), &w, LatencyOrigin::Intended, None, &CpuWatch::default())
            .await
            .expect("run");
        let h = &out.stats.op(OpKind::Write).expect("writes").histogram;
        // 99 calls of 1 ms, the stall of 200 ms, then 1 ms calls to the end.
        assert_eq!(h.len(), 99 + 1 + (1_000 - 99 - 200));
        assert!(h.value_at_quantile(0.99) < 2 * MS, "closed-loop p99 {} µs", h.value_at_quantile(0.99));
        assert_eq!(h.count_between(100 * MS, LATENCY_MAX), 1);
    }

    /// Open-loop clients wake TIMER_LEAD early; a request sent before it was
    /// due is timed from its send, so an on-time run reports the service
    /// time, not service time minus the lead.
    #[tokio::test(start_paused = true)]
    async fn an_early_send_is_timed_from_the_send() {
        let w = Workload { rate_ops_per_s: Some(100), ..workload("write:1") };
        let target = StallOnce {
            calls: Arc::new(AtomicU64::new(0)),
            stall_at: 0,
            stall: Duration::ZERO,
            service: Duration::from_millis(1),
        };
        let out = run(&target, &w, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect("run");
        let h = &out.stats.op(OpKind::Write).expect("writes").histogram;
        assert_eq!(h.len(), 100);
        assert!(h.equivalent(h.min(), MS) && h.equivalent(h.max(), MS), "min {} max {}", h.min(), h.max());
    }

    /// Asked for 1000 ops/s from one client whose target takes 10 ms a call:
    /// the window's 1000 requests take 10 s, and throughput must say ~100/s
    /// over that time, not the 1000/s that were asked for.
    #[tokio::test(start_paused = true)]
    async fn an_open_loop_the_target_cannot_keep_up_with_reports_what_was_done() {
        let w = Workload { rate_ops_per_s: Some(1_000), timeout_ms: 60_000, ..workload("write:1") };
        let target = StallOnce {
            calls: Arc::new(AtomicU64::new(0)),
            stall_at: 0,
            stall: Duration::ZERO,
            service: Duration::from_millis(10),
        };
        let out = run(&target, &w, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect("run");
        let writes = out.stats.op(OpKind::Write).expect("writes");
        assert_eq!(writes.count, 1_000, "every request due in the window is sent");
        assert!((9_900..=10_100).contains(&out.measured_ms), "measured over {} ms", out.measured_ms);
        let summary = crate::stats::OpSummary::of(OpKind::Write, writes, out.measured_ms);
        assert!((95.0..=105.0).contains(&summary.ops_per_s), "{} ops/s", summary.ops_per_s);
    }

    #[tokio::test(start_paused = true)]
    async fn the_warm_up_is_not_measured_and_the_window_is() {
        let w = Workload {
            rate_ops_per_s: Some(1_000),
            warmup_ms: 300,
            duration_ms: 500,
            concurrency: 4,
            ..workload("write:1")
        };
        let out = run(&stall_once(Duration::ZERO), &w, LatencyOrigin::Intended, None, &CpuWatch::default())
            .await
            .expect("run");
        let writes = out.stats.op(OpKind::Write).expect("writes");
        assert_eq!((writes.count, out.measured_ms), (500, 500), "exactly the requests due in the window");
    }

    /// An in-memory target with the semantics of the real ones.
    #[derive(Default)]
    struct Memory {
        map: Arc<Mutex<HashMap<Bytes, Bytes>>>,
        /// Flip a byte of every value read.
        corrupt: bool,
        /// Answer reads with the value of another key.
        swap_keys: bool,
        /// Every write fails.
        refuse_writes: bool,
    }

    struct MemoryConn {
        map: Arc<Mutex<HashMap<Bytes, Bytes>>>,
        corrupt: bool,
        swap_keys: bool,
        refuse_writes: bool,
    }

    impl Connector for Memory {
        type Conn = MemoryConn;

        async fn connect(&self) -> Result<MemoryConn> {
            Ok(MemoryConn {
                map: Arc::clone(&self.map),
                corrupt: self.corrupt,
                swap_keys: self.swap_keys,
                refuse_writes: self.refuse_writes,
            })
        }
    }

    impl MemoryConn {
        fn read(&self, key: &Bytes) -> Option<Bytes> {
            let map = self.map.lock().unwrap();
            let key = if self.swap_keys { map.keys().find(|k| *k != key).unwrap_or(key).clone() } else { key.clone() };
            let value = map.get(&key)?.clone();
            if self.corrupt {
                let mut bad = value.to_vec();
                let last = bad.len() - 1;
                bad[last] ^= 0x80;
                return Some(Bytes::from(bad));
            }
            Some(value)
        }
    }

    impl Connection for MemoryConn {
        async fn call(&mut self, request: Request) -> Result<Reply, OpError> {
            // A real target yields while a call is in flight.
            tokio::time::sleep(Duration::from_micros(100)).await;
            if self.refuse_writes && matches!(request, Request::Write { .. }) {
                return Err(OpError::new("RESOURCE_EXHAUSTED", "disk full"));
            }
            Ok(match request {
                Request::Read { key, .. } => Reply::Value(self.read(&key)),
                Request::Write { key, value, .. } => {
                    self.map.lock().unwrap().insert(key, value);
                    Reply::Done
                }
                Request::Update { key, value } => match self.map.lock().unwrap().get_mut(&key) {
                    Some(slot) => {
                        *slot = value;
                        Reply::Done
                    }
                    None => Reply::Absent,
                },
                Request::Delete { key } => {
                    if self.map.lock().unwrap().remove(&key).is_some() {
                        Reply::Done
                    } else {
                        Reply::Absent
                    }
                }
                Request::BatchRead { keys } => Reply::Values(keys.iter().map(|k| self.read(k)).collect()),
                Request::BatchWrite { entries } => {
                    self.map.lock().unwrap().extend(entries);
                    Reply::Done
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_preload_every_read_finds_its_value_and_the_counts_add_up() {
        let w = Workload {
            preload: true,
            misses_are_errors: true,
            concurrency: 3,
            duration_ms: 200,
            warmup_ms: 50,
            ..workload("read:4,write:2,update:2,batch-read:1,batch-write:1")
        };
        let target = Memory::default();
        let out = run(&target, &w, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect("run");
        assert_eq!(out.preload.map(|p| p.keys), Some(50));
        assert_eq!(target.map.lock().unwrap().len(), 50, "the preload wrote every key");
        for (kind, s) in out.stats.ops() {
            assert!(s.count > 0, "{kind} ran");
            assert_eq!((s.failed, s.missed_keys), (0, 0), "{kind}: {:?}", s.errors);
            assert_eq!((s.ok, s.histogram.len()), (s.count, s.count), "{kind}");
        }
        let reads = out.stats.op(OpKind::Read).expect("reads");
        assert_eq!(reads.bytes, reads.count * 64, "every read returned a whole 64-byte value");
        let batches = out.stats.op(OpKind::BatchRead).expect("batch reads");
        assert_eq!(batches.bytes, batches.count * 4 * 64, "4 keys per batch");
        assert_eq!(out.stats.ops().count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_corrupted_value_is_wrong_data() {
        let w = Workload { preload: true, misses_are_errors: true, duration_ms: 50, ..workload("read:1,batch-read:1") };
        let target = Memory { corrupt: true, ..Memory::default() };
        let out = run(&target, &w, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect("run");
        for kind in [OpKind::Read, OpKind::BatchRead] {
            let s = out.stats.op(kind).expect("ran");
            assert!(s.count > 0);
            assert_eq!(s.errors.get(WRONG_DATA), Some(&s.count), "{kind}: {:?}", s.errors);
            assert!(s.error_examples[WRONG_DATA].contains("crc32"), "{}", s.error_examples[WRONG_DATA]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_keys_value_is_wrong_data() {
        let w = Workload { preload: true, misses_are_errors: true, duration_ms: 50, ..workload("read:1") };
        let target = Memory { swap_keys: true, ..Memory::default() };
        let out = run(&target, &w, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect("run");
        let s = out.stats.op(OpKind::Read).expect("reads");
        assert_eq!(s.errors.get(WRONG_DATA), Some(&s.count));
        assert!(s.error_examples[WRONG_DATA].contains("read as key"), "{}", s.error_examples[WRONG_DATA]);
    }

    #[tokio::test(start_paused = true)]
    async fn misses_are_counted_and_are_errors_only_after_a_preload() {
        let w = Workload { duration_ms: 50, ..workload("read:1,update:1,delete:1") };
        let out = run(&Memory::default(), &w, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect("run");
        for (kind, s) in out.stats.ops() {
            assert_eq!((s.missed_keys, s.ok, s.failed), (s.count, s.count, 0), "{kind}: an empty store misses");
        }
        let strict = Workload { misses_are_errors: true, ..w };
        let out =
            run(&Memory::default(), &strict, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect("run");
        for (kind, s) in out.stats.ops() {
            assert_eq!(s.errors.get(MISS), Some(&s.count), "{kind}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_preload_stops_the_run() {
        let w = Workload { preload: true, ..workload("read:1") };
        let target = Memory { refuse_writes: true, ..Memory::default() };
        let err =
            run(&target, &w, LatencyOrigin::Intended, None, &CpuWatch::default()).await.expect_err("preload fails");
        let LoadgenError::Preload { failed, keys, first } = err else { panic!("{err:?}") };
        assert_eq!((failed, keys), (50, 50));
        assert!(first.contains("RESOURCE_EXHAUSTED: disk full"), "{first}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_is_a_timeout() {
        struct Never(Arc<AtomicBool>);
        struct NeverConn(Arc<AtomicBool>);
        impl Connector for Never {
            type Conn = NeverConn;
            async fn connect(&self) -> Result<NeverConn> {
                Ok(NeverConn(Arc::clone(&self.0)))
            }
        }
        impl Connection for NeverConn {
            async fn call(&mut self, _request: Request) -> Result<Reply, OpError> {
                self.0.store(true, Ordering::Relaxed);
                std::future::pending().await
            }
        }
        let w = Workload { duration_ms: 1_000, timeout_ms: 300, ..workload("write:1") };
        let called = Arc::new(AtomicBool::new(false));
        let out = run(&Never(Arc::clone(&called)), &w, LatencyOrigin::Intended, None, &CpuWatch::default())
            .await
            .expect("run");
        let s = out.stats.op(OpKind::Write).expect("writes");
        assert!(called.load(Ordering::Relaxed));
        // Calls start at 0, 300, 600 and 900 ms; each times out after 300 ms.
        assert_eq!((s.count, s.errors.get(TIMEOUT)), (4, Some(&4)));
        assert!(s.histogram.equivalent(s.histogram.min(), 300 * MS));
    }

    #[test]
    fn judge_refuses_replies_that_do_not_fit_the_request() {
        let (outcome, _) = judge(OpKind::Read, &[1], 0, Ok(Reply::Done));
        assert!(matches!(outcome, Outcome::Failed { ref kind, .. } if kind == "protocol"), "{outcome:?}");
        let (outcome, _) = judge(OpKind::BatchRead, &[1, 2], 0, Ok(Reply::Values(vec![None])));
        assert!(matches!(outcome, Outcome::Failed { ref kind, .. } if kind == "protocol"), "{outcome:?}");
        let (outcome, bytes) =
            judge(OpKind::BatchRead, &[1, 2], 0, Ok(Reply::Values(vec![Some(make_value(1, 30, 0)), None])));
        assert_eq!((outcome, bytes), (Outcome::Miss { keys: 1 }, 30));
    }

    #[test]
    fn the_open_loop_schedule_interleaves_clients_without_drift() {
        let start = Instant::now();
        let s = Schedule { start, measure_start: start, end: start, rate_ops_per_s: Some(3), concurrency: 2 };
        let at = |client, n| s.due(3, client, n) - start;
        // Requests of the run at 0, 1/3, 2/3, 1, ... s; client 0 takes the even ones.
        assert_eq!(at(0, 0), Duration::ZERO);
        assert_eq!(at(1, 0), Duration::from_nanos(333_333_333));
        assert_eq!(at(0, 1), Duration::from_nanos(666_666_666));
        assert_eq!(at(1, 1), Duration::from_secs(1));
        assert_eq!(at(0, 3_000_000), Duration::from_secs(2_000_000), "no drift after millions");
    }
}
