//! Workload profiles: named starting points (`read-heavy`, `params`, ...)
//! whose every parameter a flag may override, and the operation kinds and
//! mixes they are made of.
//!
//! Invariants: every profile's defaults pass the same validation as user
//! input ([`args`](crate::args) checks the resolved plan, not the flags); a
//! [`Mix`] has at least one operation with a non-zero weight, and its
//! weights are kept in [`OpKind::ALL`] order so that a plan prints and
//! serialises the same way every time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::units::{KIB, MIB};

/// One kind of request. Reports keep one histogram per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// Point read (ReadCache, node Get, GET); streamed when the plan says so.
    Read,
    /// Upsert (WriteCache, node Put, SET); streamed when the plan says so.
    Write,
    /// Replace an existing value (UpdateCache, node Update, SET XX).
    Update,
    /// Delete (DeleteCache, node Delete, DEL).
    Delete,
    /// Many point reads in one call (BatchRead, node BatchGet, MGET).
    BatchRead,
    /// Many writes in one call (BatchWrite, node BatchPut, MSET).
    BatchWrite,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 6] =
        [OpKind::Read, OpKind::Write, OpKind::Update, OpKind::Delete, OpKind::BatchRead, OpKind::BatchWrite];

    /// The name used on the command line, in reports and in file names.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
            OpKind::BatchRead => "batch-read",
            OpKind::BatchWrite => "batch-write",
        }
    }

    /// Whether one operation touches `batch_size` keys instead of one.
    pub fn is_batch(self) -> bool {
        matches!(self, OpKind::BatchRead | OpKind::BatchWrite)
    }

    /// Whether the operation sends values (and so is bound by value limits).
    pub fn writes_values(self) -> bool {
        matches!(self, OpKind::Write | OpKind::Update | OpKind::BatchWrite)
    }

    /// Index in [`OpKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OpKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        OpKind::ALL.into_iter().find(|k| k.name() == text).ok_or_else(|| {
            let names: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown operation {text:?} (one of {})", names.join(", "))
        })
    }
}

/// The largest weight of one operation in a mix: weights are relative, and
/// this keeps their sum far from overflow.
pub const MIX_WEIGHT_MAX: u32 = 1_000_000;

/// How often each operation is chosen: relative weights, e.g. read 95 and
/// write 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    /// (operation, weight), in [`OpKind::ALL`] order, weights non-zero.
    pub weights: Vec<(OpKind, u32)>,
}

impl Mix {
    /// A mix of the given weights; zero weights are dropped.
    pub fn new(weights: impl IntoIterator<Item = (OpKind, u32)>) -> Result<Self, String> {
        let mut table = [0u32; OpKind::ALL.len()];
        for (kind, weight) in weights {
            if weight > MIX_WEIGHT_MAX {
                return Err(format!("weight {weight} of {kind} is over {MIX_WEIGHT_MAX}"));
            }
            if table[kind.index()] != 0 {
                return Err(format!("{kind} is given twice"));
            }
            table[kind.index()] = weight;
        }
        let weights: Vec<(OpKind, u32)> =
            OpKind::ALL.into_iter().zip(table).filter(|&(_, weight)| weight > 0).collect();
        if weights.is_empty() {
            return Err("no operation has a weight above zero".into());
        }
        Ok(Mix { weights })
    }

    /// The sum of the weights (at least 1).
    pub fn total(&self) -> u32 {
        self.weights.iter().map(|&(_, w)| w).sum()
    }

    /// The operation for `ticket` in `0..total()`.
    pub fn pick(&self, mut ticket: u32) -> OpKind {
        for &(kind, weight) in &self.weights {
            if ticket < weight {
                return kind;
            }
            ticket -= weight;
        }
        // Only reached for a ticket out of range; the last kind is as good as any.
        self.weights.last().map_or(OpKind::Read, |&(k, _)| k)
    }

    /// Whether `kind` has a non-zero weight.
    pub fn has(&self, kind: OpKind) -> bool {
        self.weights.iter().any(|&(k, _)| k == kind)
    }

    /// The operations of the mix, in report order.
    pub fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        self.weights.iter().map(|&(k, _)| k)
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `read:95,write:5`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for part in text.split(',') {
            let (name, weight) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not OPERATION:WEIGHT (e.g. read:95,write:5)"))?;
            let kind: OpKind = name.trim().parse()?;
            let weight: u32 =
                weight.trim().parse().map_err(|_| format!("weight {weight:?} of {kind} is not a whole number"))?;
            weights.push((kind, weight));
        }
        Mix::new(weights)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.weights.iter().map(|(k, w)| format!("{k}:{w}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// How values are moved: in one message, or in chunks (WriteStream and
/// ReadStream, node PutStream and GetStream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Transfer {
    /// One message per value.
    Unary,
    /// Chunks of at most 1 MiB.
    Stream,
}

impl fmt::Display for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transfer::Unary => "unary",
            Transfer::Stream => "stream",
        })
    }
}

/// The named profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    /// 95% reads, 5% writes of 4 KiB values.
    ReadHeavy,
    /// 90% writes, 10% reads of 4 KiB values.
    WriteHeavy,
    /// 50% reads, 50% writes of 4 KiB values (the default).
    #[default]
    Mixed,
    /// Batch reads of 64 keys of 256-byte values.
    BatchRead,
    /// 50/50 reads and writes of 1 MiB values (model parameters).
    Params,
    /// 50/50 reads and writes of 64 MiB values, streamed.
    Large,
}

impl ProfileName {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProfileName::ReadHeavy => "read-heavy",
            ProfileName::WriteHeavy => "write-heavy",
            ProfileName::Mixed => "mixed",
            ProfileName::BatchRead => "batch-read",
            ProfileName::Params => "params",
            ProfileName::Large => "large",
        }
    }
}

/// A profile's defaults; each field can be overridden by its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub mix: Mix,
    pub value_bytes: u64,
    pub transfer: Transfer,
    pub keys: u64,
    pub batch_size: u32,
    pub concurrency: u32,
}

/// Batch size of the batch profiles when `--batch-size` is not given.
pub const BATCH_SIZE_DEFAULT: u32 = 64;
/// Clients when `--concurrency` is not given (the large profile uses fewer:
/// each client holds a 64 MiB value in memory).
pub const CONCURRENCY_DEFAULT: u32 = 16;
const CONCURRENCY_LARGE_DEFAULT: u32 = 4;

impl Profile {
    /// The defaults of profile `name`. Key counts keep a `--preload` of the
    /// whole key space near 1 GiB or less, so it finishes in seconds to
    /// minutes on a laptop.
    pub fn of(name: ProfileName) -> Profile {
        let mix = |weights: &[(OpKind, u32)]| Mix { weights: weights.to_vec() };
        let small = |m: Mix| Profile {
            mix: m,
            value_bytes: 4 * KIB,
            transfer: Transfer::Unary,
            keys: 10_000,
            batch_size: BATCH_SIZE_DEFAULT,
            concurrency: CONCURRENCY_DEFAULT,
        };
        match name {
            ProfileName::ReadHeavy => small(mix(&[(OpKind::Read, 95), (OpKind::Write, 5)])),
            ProfileName::WriteHeavy => small(mix(&[(OpKind::Read, 10), (OpKind::Write, 90)])),
            ProfileName::Mixed => small(mix(&[(OpKind::Read, 50), (OpKind::Write, 50)])),
            ProfileName::BatchRead => {
                Profile { mix: mix(&[(OpKind::BatchRead, 100)]), value_bytes: 256, keys: 100_000, ..small(mix(&[])) }
            }
            ProfileName::Params => Profile {
                mix: mix(&[(OpKind::Read, 50), (OpKind::Write, 50)]),
                value_bytes: MIB,
                keys: 1_000,
                ..small(mix(&[]))
            },
            ProfileName::Large => Profile {
                mix: mix(&[(OpKind::Read, 50), (OpKind::Write, 50)]),
                value_bytes: 64 * MIB,
                transfer: Transfer::Stream,
                keys: 16,
                batch_size: BATCH_SIZE_DEFAULT,
                concurrency: CONCURRENCY_LARGE_DEFAULT,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_print_in_report_order() {
        let mix: Mix = "write:5,read:95".parse().expect("valid");
        assert_eq!(mix.weights, vec![(OpKind::Read, 95), (OpKind::Write, 5)]);
        assert_eq!(mix.to_string(), "read:95,write:5");
        assert_eq!(mix.total(), 100);
        let all: Mix = "batch-write:1,batch-read:1,delete:1,update:1,write:1,read:1".parse().expect("all kinds");
        assert_eq!(all.kinds().collect::<Vec<_>>(), OpKind::ALL.to_vec());
        let zero_dropped: Mix = "read:1,write:0".parse().expect("valid");
        assert_eq!(zero_dropped.weights, vec![(OpKind::Read, 1)]);
    }

    #[test]
    fn bad_mixes_say_why() {
        for (bad, why) in [
            ("read", "not OPERATION:WEIGHT"),
            ("reads:5", "unknown operation \"reads\""),
            ("read:x", "not a whole number"),
            ("read:-1", "not a whole number"),
            ("read:0", "no operation has a weight above zero"),
            ("read:1,read:2", "given twice"),
            ("read:1000001", "over 1000000"),
            ("", "not OPERATION:WEIGHT"),
        ] {
            let err = bad.parse::<Mix>().expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err:?} should say {why:?}");
        }
    }

    #[test]
    fn pick_follows_the_weights() {
        let mix: Mix = "read:3,write:1".parse().expect("valid");
        let picks: Vec<OpKind> = (0..mix.total()).map(|t| mix.pick(t)).collect();
        assert_eq!(picks, vec![OpKind::Read, OpKind::Read, OpKind::Read, OpKind::Write]);
    }

    #[test]
    fn profiles_have_the_documented_defaults() {
        let p = Profile::of(ProfileName::ReadHeavy);
        assert_eq!((p.mix.to_string(), p.value_bytes, p.transfer), ("read:95,write:5".into(), 4096, Transfer::Unary));
        let p = Profile::of(ProfileName::WriteHeavy);
        assert_eq!((p.mix.to_string(), p.value_bytes), ("read:10,write:90".into(), 4096));
        let p = Profile::of(ProfileName::Mixed);
        assert_eq!((p.mix.to_string(), p.value_bytes), ("read:50,write:50".into(), 4096));
        let p = Profile::of(ProfileName::BatchRead);
        assert_eq!((p.mix.to_string(), p.value_bytes, p.batch_size), ("batch-read:100".into(), 256, 64));
        let p = Profile::of(ProfileName::Params);
        assert_eq!((p.mix.to_string(), p.value_bytes, p.transfer), ("read:50,write:50".into(), MIB, Transfer::Unary));
        let p = Profile::of(ProfileName::Large);
        assert_eq!(
            (p.mix.to_string(), p.value_bytes, p.transfer),
            ("read:50,write:50".into(), 64 * MIB, Transfer::Stream)
        );
    }
}
