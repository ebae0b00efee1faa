//! Versions: the 64-bit numbers that order writes to a key, and the hybrid
//! logical clock that makes them.
//!
//! Layout: `unix ms (44 bits) | counter (16 bits) | origin (4 bits)`.
//! - The millisecond field keeps versions close to wall time, so "newer"
//!   means what people expect when clocks are roughly in sync, and lasts
//!   until the year 2527.
//! - The counter orders versions made in one millisecond, and carries the
//!   clock forward when a wall clock steps back or lags a version observed
//!   from elsewhere (the "logical" part of a hybrid logical clock).
//! - The origin tells writers apart: the primary coordinator writes with
//!   origin 0, the secondary with 1, a node stamping its own versions with 15.
//!   Two origins never produce the same version.
//!
//! Invariants: one clock never returns the same version twice, nor a version
//! lower than one it returned or observed before; every version it returns
//! carries its origin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bits below the millisecond field.
pub const VERSION_MS_SHIFT: u32 = 20;
/// Bits below the counter field.
pub const VERSION_COUNTER_SHIFT: u32 = 4;
/// The origin field's mask.
pub const VERSION_ORIGIN_MASK: u64 = (1 << VERSION_COUNTER_SHIFT) - 1;
/// The origin of the coordinator configured as `coordinator.primary`.
pub const ORIGIN_PRIMARY_COORDINATOR: u64 = 0;
/// The origin of the coordinator configured as `coordinator.secondary`.
pub const ORIGIN_SECONDARY_COORDINATOR: u64 = 1;
/// The origin of versions a node stamps for writes sent without one.
pub const ORIGIN_NODE: u64 = 15;

/// The milliseconds field of `version`.
pub fn version_unix_ms(version: u64) -> u64 {
    version >> VERSION_MS_SHIFT
}

/// The origin field of `version`.
pub fn version_origin(version: u64) -> u64 {
    version & VERSION_ORIGIN_MASK
}

/// The next version after `last` for `origin` at wall time `now_ms`: now, or
/// one counter step past `last`, whichever is later. Pure, so the clock's
/// rules can be tested with any time.
pub fn next_version(last: u64, now_ms: u64, origin: u64) -> u64 {
    let physical = (now_ms << VERSION_MS_SHIFT) | origin;
    let after_last = ((last | VERSION_ORIGIN_MASK) + 1) | origin;
    physical.max(after_last)
}

/// A hybrid logical clock shared by a process's threads (lock-free).
#[derive(Debug)]
pub struct VersionClock {
    last: AtomicU64,
    origin: u64,
}

impl VersionClock {
    /// A clock for `origin` (0..=15).
    pub fn new(origin: u64) -> Self {
        assert!(origin <= VERSION_ORIGIN_MASK, "origin {origin} does not fit the origin field");
        Self { last: AtomicU64::new(0), origin }
    }

    /// The next version, at the wall clock's time.
    pub fn next(&self) -> u64 {
        self.next_at(unix_ms())
    }

    /// The next version at wall time `now_ms`.
    pub fn next_at(&self, now_ms: u64) -> u64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = next_version(last, now_ms, self.origin);
            match self.last.compare_exchange_weak(last, candidate, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return candidate,
                Err(seen) => last = seen,
            }
        }
    }

    /// Takes note of a version made elsewhere: later versions from this
    /// clock sort after it, so a write that follows a read never goes back.
    pub fn observe(&self, seen: u64) {
        self.last.fetch_max(seen, Ordering::Relaxed);
    }

    /// The last version made or observed.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
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
        let clock = VersionClock::new(ORIGIN_NODE);
        let a = clock.next_at(1_000);
        let b = clock.next_at(1_000);
        let c = clock.next_at(900);
        assert!(a < b && b < c, "{a} {b} {c}");
        for v in [a, b, c] {
            assert_eq!(version_origin(v), ORIGIN_NODE);
        }
        assert_eq!(version_unix_ms(a), 1_000);
        assert_eq!(clock.next_at(2_000), (2_000 << VERSION_MS_SHIFT) | ORIGIN_NODE);
    }

    #[test]
    fn an_observed_version_from_another_origin_is_overtaken_not_repeated() {
        let primary = VersionClock::new(ORIGIN_PRIMARY_COORDINATOR);
        let secondary = VersionClock::new(ORIGIN_SECONDARY_COORDINATOR);
        // The secondary's wall clock runs 5 s ahead.
        let ahead = secondary.next_at(10_000);
        primary.observe(ahead);
        let next = primary.next_at(5_000);
        assert!(next > ahead, "{next} <= {ahead}");
        assert_eq!(version_origin(next), ORIGIN_PRIMARY_COORDINATOR);
        assert_eq!(version_unix_ms(next), 10_000, "the counter carries it, not a fake time");
    }

    #[test]
    fn two_origins_never_collide_even_at_the_same_instant() {
        let (a, b) = (VersionClock::new(0), VersionClock::new(1));
        let mut all: Vec<u64> = (0..1000).flat_map(|i| [a.next_at(7 + i / 100), b.next_at(7 + i / 100)]).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
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
