//! Counters an engine keeps for the node to export: cheap `Cell` bumps on the
//! hot path, copied into a plain [`EngineStats`] snapshot on demand.

use std::cell::Cell;
use std::time::Duration;

use crate::cache::CacheStats;

/// How many power-of-two latency buckets the fsync histogram has: bucket `i`
/// counts syncs that took less than `2^i` µs (the last takes the rest).
pub const FSYNC_BUCKETS: usize = 24;

/// Live counters, bumped in place by the engine (single-threaded).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub puts: Cell<u64>,
    pub put_bytes: Cell<u64>,
    pub gets: Cell<u64>,
    pub get_hits: Cell<u64>,
    pub get_bytes: Cell<u64>,
    pub deletes: Cell<u64>,
    pub stale_writes: Cell<u64>,
    pub expired_reads: Cell<u64>,
    pub corrupt_records: Cell<u64>,
    pub disk_full_rejections: Cell<u64>,
    pub commits: Cell<u64>,
    pub committed_records: Cell<u64>,
    pub fsyncs: Cell<u64>,
    pub fsync_us_total: Cell<u64>,
    pub fsync_us_max: Cell<u64>,
    pub fsync_us_buckets: [Cell<u64>; FSYNC_BUCKETS],
    pub compaction_runs: Cell<u64>,
    pub compaction_bytes_reclaimed: Cell<u64>,
    pub compaction_records_moved: Cell<u64>,
    pub segments_dropped: Cell<u64>,
    pub checkpoints: Cell<u64>,
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

impl Counters {
    pub fn record_fsync(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        bump(&self.fsyncs, 1);
        bump(&self.fsync_us_total, us);
        self.fsync_us_max.set(self.fsync_us_max.get().max(us));
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        bump(&self.fsync_us_buckets[bucket.min(FSYNC_BUCKETS - 1)], 1);
    }
}

/// One segment's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentStats {
    pub id: u32,
    /// Bytes of records written into it.
    pub record_bytes: u64,
    /// Of those, bytes no index entry points to any more.
    pub dead_bytes: u64,
    /// Bytes the file takes on disk (pre-filled space included).
    pub file_bytes: u64,
    pub sealed: bool,
}

/// A snapshot of everything an engine counts.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub puts: u64,
    pub put_bytes: u64,
    pub gets: u64,
    /// Gets that found a live value.
    pub get_hits: u64,
    pub get_bytes: u64,
    pub deletes: u64,
    /// Writes ignored because a newer version was stored (last-writer-wins).
    pub stale_writes: u64,
    pub expired_reads: u64,
    pub corrupt_records: u64,
    pub disk_full_rejections: u64,
    /// Group commits, and the records they carried.
    pub commits: u64,
    pub committed_records: u64,
    pub fsyncs: u64,
    pub fsync_us_total: u64,
    pub fsync_us_max: u64,
    pub fsync_us_buckets: [u64; FSYNC_BUCKETS],
    pub compaction_runs: u64,
    pub compaction_bytes_reclaimed: u64,
    pub compaction_records_moved: u64,
    pub segments_dropped: u64,
    pub checkpoints: u64,
    /// Index entries, tombstones included.
    pub keys: u64,
    pub index_file_bytes: u64,
    /// Bytes the log takes on disk.
    pub disk_bytes: u64,
    pub segments: Vec<SegmentStats>,
    pub cache: CacheStats,
}

impl Counters {
    /// Copies the counters into `out`.
    pub fn fill(&self, out: &mut EngineStats) {
        out.puts = self.puts.get();
        out.put_bytes = self.put_bytes.get();
        out.gets = self.gets.get();
        out.get_hits = self.get_hits.get();
        out.get_bytes = self.get_bytes.get();
        out.deletes = self.deletes.get();
        out.stale_writes = self.stale_writes.get();
        out.expired_reads = self.expired_reads.get();
        out.corrupt_records = self.corrupt_records.get();
        out.disk_full_rejections = self.disk_full_rejections.get();
        out.commits = self.commits.get();
        out.committed_records = self.committed_records.get();
        out.fsyncs = self.fsyncs.get();
        out.fsync_us_total = self.fsync_us_total.get();
        out.fsync_us_max = self.fsync_us_max.get();
        for (o, c) in out.fsync_us_buckets.iter_mut().zip(&self.fsync_us_buckets) {
            *o = c.get();
        }
        out.compaction_runs = self.compaction_runs.get();
        out.compaction_bytes_reclaimed = self.compaction_bytes_reclaimed.get();
        out.compaction_records_moved = self.compaction_records_moved.get();
        out.segments_dropped = self.segments_dropped.get();
        out.checkpoints = self.checkpoints.get();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_buckets_are_powers_of_two_in_microseconds() {
        let c = Counters::default();
        c.record_fsync(Duration::from_micros(0));
        c.record_fsync(Duration::from_micros(90));
        c.record_fsync(Duration::from_secs(3600));
        let mut s = EngineStats::default();
        c.fill(&mut s);
        assert_eq!(s.fsyncs, 3);
        assert_eq!(s.fsync_us_buckets[0], 1);
        // 90 µs is in [64, 128): bucket 7.
        assert_eq!(s.fsync_us_buckets[7], 1);
        assert_eq!(s.fsync_us_buckets[FSYNC_BUCKETS - 1], 1);
        assert_eq!(s.fsync_us_max, 3_600_000_000);
    }
}
