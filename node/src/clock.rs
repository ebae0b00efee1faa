//! Versions the node stamps itself, for writes that arrive with version 0
//! (node-direct clients; coordinators always send their own).
//!
//! Layout of a version (shared with the coordinators' hybrid logical clock):
//! `unix ms (44 bits) | counter (16 bits) | origin (4 bits)`. Versions from
//! different origins never collide (the low bits differ), and one origin's
//! versions strictly increase even when the wall clock steps back, because
//! the next version is at least the last one plus one counter step.
//! Invariant: [`VersionClock::next`] never returns the same value twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bits below the millisecond field.
pub const VERSION_MS_SHIFT: u32 = 20;
/// Bits below the counter field.
pub const VERSION_COUNTER_SHIFT: u32 = 4;
/// The origin field's mask.
pub const VERSION_ORIGIN_MASK: u64 = (1 << VERSION_COUNTER_SHIFT) - 1;
/// The origin of node-stamped versions; coordinators use 0 and 1.
pub const NODE_ORIGIN: u64 = 15;

/// A lock-free per-node version source.
#[derive(Debug)]
pub struct VersionClock {
    last: AtomicU64,
    origin: u64,
}

impl VersionClock {
    pub fn new(origin: u64) -> Self {
        assert!(origin <= VERSION_ORIGIN_MASK, "origin {origin} does not fit the origin field");
        Self { last: AtomicU64::new(0), origin }
    }

    /// The next version: now, or just after the last one, whichever is later.
    pub fn next(&self) -> u64 {
        self.next_at(unix_ms())
    }

    fn next_at(&self, now_ms: u64) -> u64 {
        let physical = (now_ms << VERSION_MS_SHIFT) | self.origin;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let after_last = ((last | VERSION_ORIGIN_MASK) + 1) | self.origin;
            let candidate = physical.max(after_last);
            match self.last.compare_exchange_weak(last, candidate, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return candidate,
                Err(seen) => last = seen,
            }
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_keep_their_origin_when_time_stands_still_or_steps_back() {
        let clock = VersionClock::new(NODE_ORIGIN);
        let a = clock.next_at(1_000);
        let b = clock.next_at(1_000);
        let c = clock.next_at(900);
        assert!(a < b && b < c, "{a} {b} {c}");
        for v in [a, b, c] {
            assert_eq!(v & VERSION_ORIGIN_MASK, NODE_ORIGIN);
        }
        assert_eq!(a >> VERSION_MS_SHIFT, 1_000);
        let later = clock.next_at(2_000);
        assert_eq!(later, (2_000 << VERSION_MS_SHIFT) | NODE_ORIGIN);
    }

    #[test]
    fn concurrent_callers_never_share_a_version() {
        let clock = std::sync::Arc::new(VersionClock::new(3));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || (0..10_000).map(|_| clock.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
