//! Engine configuration: every knob with its default, and the one place that
//! validates them.

use crate::limits::{RECORD_VALUE_LEN_MAX, SEGMENT_LEN_MAX, VALUE_LEN_DEFAULT_MAX};
use crate::record::SEGMENT_HEADER_LEN;

/// When an acknowledged write is on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after fdatasync (group commit shares one among concurrent writes).
    Sync,
    /// Acknowledge after the write; fdatasync every `interval_ms`.
    Interval { interval_ms: u64 },
    /// Acknowledge after the write; fdatasync only when a segment is sealed.
    None,
}

/// What a put does when the disk budget is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFullPolicy {
    /// Refuse the put with [`crate::error::EngineError::DiskFull`]; reads go on.
    Store,
    /// Drop the oldest sealed segments (and the keys whose latest record is in them).
    Cache,
}

/// Everything an engine instance can be told.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub durability: Durability,
    /// The largest value one put accepts; larger ones go through the chunked path.
    pub max_value_bytes: usize,
    /// The size a segment is pre-allocated to and rolled at.
    pub segment_bytes: u64,
    /// Write zeros over a new segment before use (a fdatasync on already-written
    /// blocks costs ~90 µs here, on a growing file ~150-180 µs).
    pub prefill_segments: bool,
    /// Memory for hot values (the S3-FIFO cache); 0 turns caching off.
    pub memory_budget_bytes: u64,
    /// Disk the shard's log may use; 0 = unlimited.
    pub disk_budget_bytes: u64,
    pub disk_full_policy: DiskFullPolicy,
    /// A sealed segment whose dead bytes pass this share of its size is compacted.
    pub compaction_garbage_ratio: f64,
    /// How often the compactor looks for work.
    pub compaction_interval_ms: u64,
    /// The compactor's CPU share against the foreground's 1000.
    pub compaction_shares: usize,
    /// Write an index checkpoint after this much new log, bounding crash replay.
    pub checkpoint_interval_bytes: u64,
    /// How long a tombstone (a delete, or an expired value reclaimed by
    /// compaction) keeps its version so that older writes arriving late are
    /// ignored; after that compaction forgets it. Replicas must converge
    /// within this time.
    pub tombstone_retention_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            max_value_bytes: VALUE_LEN_DEFAULT_MAX,
            segment_bytes: 256 << 20,
            prefill_segments: true,
            memory_budget_bytes: 256 << 20,
            disk_budget_bytes: 0,
            disk_full_policy: DiskFullPolicy::Store,
            compaction_garbage_ratio: 0.5,
            compaction_interval_ms: 1000,
            compaction_shares: 100,
            checkpoint_interval_bytes: 128 << 20,
            tombstone_retention_ms: 24 * 3600 * 1000,
        }
    }
}

impl EngineConfig {
    /// Checks every field; the message names the field and the reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_value_bytes > RECORD_VALUE_LEN_MAX {
            return Err(format!(
                "max_value_bytes {} is over the record limit {RECORD_VALUE_LEN_MAX}",
                self.max_value_bytes
            ));
        }
        let segment_min = 2 * SEGMENT_HEADER_LEN as u64;
        if self.segment_bytes < segment_min || self.segment_bytes > SEGMENT_LEN_MAX {
            return Err(format!("segment_bytes {} is outside {segment_min}..={SEGMENT_LEN_MAX}", self.segment_bytes));
        }
        if !self.segment_bytes.is_multiple_of(4096) {
            return Err(format!("segment_bytes {} is not a multiple of 4096", self.segment_bytes));
        }
        if !(0.0..=1.0).contains(&self.compaction_garbage_ratio) || self.compaction_garbage_ratio.is_nan() {
            return Err(format!("compaction_garbage_ratio {} is outside 0.0..=1.0", self.compaction_garbage_ratio));
        }
        if let Durability::Interval { interval_ms: 0 } = self.durability {
            return Err("durability interval_ms must be at least 1".into());
        }
        if self.compaction_interval_ms == 0 {
            return Err("compaction_interval_ms must be at least 1".into());
        }
        if self.compaction_shares == 0 || self.compaction_shares > 1000 {
            return Err(format!("compaction_shares {} is outside 1..=1000", self.compaction_shares));
        }
        if self.disk_budget_bytes != 0 && self.disk_budget_bytes < 2 * self.segment_bytes {
            return Err(format!(
                "disk_budget_bytes {} must be 0 (unlimited) or at least two segments ({})",
                self.disk_budget_bytes,
                2 * self.segment_bytes
            ));
        }
        Ok(())
    }
}
