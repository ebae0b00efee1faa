//! The figures a heartbeat reports (keys, disk bytes), kept from the shards'
//! last answer so that a heartbeat never waits in a shard's queue behind data
//! calls. Under load a shard answers late (its queue holds 1 MiB writes), a
//! late heartbeat is a missed one, and the coordinator would suspect a node
//! that is only busy and send its reads elsewhere.
//!
//! Invariants:
//! - at most one refresh (a Stats round over every shard) runs at a time; a
//!   heartbeat starts one when none runs and answers at once with the last
//!   figures, so they are at most one heartbeat interval old;
//! - before the first figures exist, a heartbeat waits for them;
//! - a refresh runs on a task of its own (`NodeCore::heartbeat_figures`)
//!   that ends it whatever happens (a guard ends it as failed if the task
//!   dies), so a heartbeat dropped past its deadline never leaves a refresh
//!   marked as running, which would fail every later heartbeat;
//! - a refresh that has not finished after [`SHARD_UNRESPONSIVE_MS`] fails
//!   every heartbeat (UNAVAILABLE): a stuck shard still makes the node look
//!   down, only on a slower clock than queueing under load;
//! - a refresh that failed (a stopped shard) fails the heartbeats after it,
//!   until a refresh succeeds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a shard may leave a Stats request unanswered before heartbeats
/// fail: far above any queueing delay measured under load (p99.99 of a
/// 1 MiB write under 50 clients: ~0.6 s), far below an operator's patience.
pub const SHARD_UNRESPONSIVE_MS: u64 = 5_000;

/// A node's key and disk-byte counts, summed over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    pub keys: u64,
    pub disk_bytes: u64,
}

/// The outcome of the last refresh: the figures, or why the shards could
/// not give them (a stopped shard).
pub type Last = Result<Figures, String>;

/// What a heartbeat should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Answer with the last outcome (a failure fails the heartbeat);
    /// `refresh`: start a refresh (this caller owns it and must call
    /// [`HeartbeatFigures::finish`]).
    Answer { last: Last, refresh: bool },
    /// No figures yet: run the refresh (owned as above) and wait for it.
    WaitFirst,
    /// The running refresh has waited this long: a shard is stuck.
    Unresponsive { waited: Duration },
}

#[derive(Debug, Default)]
struct State {
    last: Option<Last>,
    refreshing_since: Option<Instant>,
}

/// The cached figures and the refresh in flight; shared by every front task.
#[derive(Debug, Default)]
pub struct HeartbeatFigures {
    state: Mutex<State>,
}

impl HeartbeatFigures {
    /// Decides what a heartbeat at `now` does; marks a refresh as started
    /// when it returns one for the caller to run.
    pub fn begin(&self, now: Instant) -> Next {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = s.refreshing_since {
            let waited = now.saturating_duration_since(since);
            if waited >= Duration::from_millis(SHARD_UNRESPONSIVE_MS) {
                return Next::Unresponsive { waited };
            }
        }
        let refresh = s.refreshing_since.is_none();
        if refresh {
            s.refreshing_since = Some(now);
        }
        match &s.last {
            Some(last) => Next::Answer { last: last.clone(), refresh },
            // Another task's first refresh is running: answer zeros rather
            // than queue; the next heartbeat has figures.
            None if !refresh => Next::Answer { last: Ok(Figures::default()), refresh: false },
            None => Next::WaitFirst,
        }
    }

    /// Ends the refresh started by [`begin`](Self::begin) with its outcome,
    /// which later heartbeats answer with until the next refresh ends.
    pub fn finish(&self, last: Last) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.refreshing_since = None;
        s.last = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Figures = Figures { keys: 7, disk_bytes: 4096 };

    fn answer(last: Last, refresh: bool) -> Next {
        Next::Answer { last, refresh }
    }

    #[test]
    fn the_first_heartbeat_waits_and_later_ones_answer_at_once_while_one_refresh_runs() {
        let figures = HeartbeatFigures::default();
        let t0 = Instant::now();
        assert_eq!(figures.begin(t0), Next::WaitFirst);
        figures.finish(Ok(F));
        // The next heartbeat answers with the figures and owns a refresh...
        assert_eq!(figures.begin(t0), answer(Ok(F), true));
        // ...and while it runs, others answer without starting another.
        let later = t0 + Duration::from_millis(200);
        assert_eq!(figures.begin(later), answer(Ok(F), false));
        let newer = Figures { keys: 8, disk_bytes: 8192 };
        figures.finish(Ok(newer));
        assert_eq!(figures.begin(later), answer(Ok(newer), true));
    }

    #[test]
    fn a_failed_refresh_fails_heartbeats_until_one_succeeds() {
        let figures = HeartbeatFigures::default();
        let t0 = Instant::now();
        assert_eq!(figures.begin(t0), Next::WaitFirst);
        figures.finish(Ok(F));
        assert_eq!(figures.begin(t0), answer(Ok(F), true));
        figures.finish(Err("shard 1 has stopped".into()));
        // The failure is answered, and a new refresh is started each time.
        assert_eq!(figures.begin(t0), answer(Err("shard 1 has stopped".into()), true));
        figures.finish(Ok(F));
        assert_eq!(figures.begin(t0), answer(Ok(F), true));
    }

    #[test]
    fn a_refresh_unanswered_for_the_limit_fails_heartbeats_until_it_ends() {
        let figures = HeartbeatFigures::default();
        let t0 = Instant::now();
        assert_eq!(figures.begin(t0), Next::WaitFirst);
        figures.finish(Ok(F));
        assert_eq!(figures.begin(t0), answer(Ok(F), true));
        let limit = Duration::from_millis(SHARD_UNRESPONSIVE_MS);
        let just_under = t0 + limit - Duration::from_millis(1);
        assert_eq!(figures.begin(just_under), answer(Ok(F), false));
        assert_eq!(figures.begin(t0 + limit), Next::Unresponsive { waited: limit });
        figures.finish(Ok(F));
        assert_eq!(figures.begin(t0 + limit), answer(Ok(F), true));
    }

    #[test]
    fn while_the_first_refresh_runs_other_heartbeats_answer_zeros() {
        let figures = HeartbeatFigures::default();
        let t0 = Instant::now();
        assert_eq!(figures.begin(t0), Next::WaitFirst);
        assert_eq!(figures.begin(t0), answer(Ok(Figures::default()), false));
    }
}
