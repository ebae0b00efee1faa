//! The command line (clap) and its validation into a resolved [`Plan`]: the
//! profile's defaults with every flag applied, checked against loadgen's
//! limits and the target's.
//!
//! Invariants: clap only parses syntax (numbers, sizes, durations, names);
//! every range and every rule between arguments is checked in
//! [`Plan::resolve`], which names the flag and the accepted range in its
//! error; a [`Plan`] that exists is valid, so the driver never meets a zero
//! concurrency, an empty key space, a value its target refuses or a batch
//! over the target's limits.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};
use rand::rngs::SmallRng;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::access::AccessArgs;
use crate::error::{LoadgenError, Result};
use crate::keys::{Distribution, KEYS_MAX};
use crate::profile::{Mix, OpKind, Profile, ProfileName, Transfer};
use crate::target::{TargetSpec, BATCH_BYTES_MAX, BATCH_LEN_MAX, NAMESPACE_BYTES_MAX};
use crate::units::{format_duration_ms, format_size, parse_duration_ms, parse_size, GIB};
use crate::value::HEADER_BYTES;

/// Most client tasks: each keeps a connection and a histogram (~190 KiB)
/// per operation kind, and a value in flight.
pub const CONCURRENCY_MAX: u32 = 1024;
/// Longest measured run.
pub const DURATION_MS_MAX: u64 = 24 * 3_600_000;
/// Longest warm-up.
pub const WARMUP_MS_MAX: u64 = 3_600_000;
/// Longest a single call may take before it counts as a timeout.
pub const TIMEOUT_MS_MAX: u64 = 600_000;
/// Highest `--rate`, in operations per second over all clients.
pub const RATE_MAX: u64 = 10_000_000;
/// Most bytes `--preload` may write (keys × largest value): beyond this the
/// preload alone would take longer than any run.
pub const PRELOAD_BYTES_MAX: u64 = 64 * GIB;
/// Smallest value: the header that makes it checkable.
pub const VALUE_BYTES_MIN: u64 = HEADER_BYTES as u64;
/// The namespace when none is given: keeps loadgen's keys apart from others.
pub const NAMESPACE_DEFAULT: &str = "loadgen";
/// Calls taking longer than this count as `timeout` when `--timeout` is not given.
pub const TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// OptiCache's load generator: runs a workload against the cluster, one
/// cache node or Redis, and reports HdrHistogram latencies per operation.
///
/// Exit status: 0 when the run had no errors, 3 when it completed with
/// errors (they are in the report), 2 for bad arguments, 1 when the run
/// could not be done (unreachable target, failed preload, unwritable files).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One markdown table comparing JSON reports: throughput, p50 and p99 per
    /// operation, with ratios against the first file.
    Compare {
        /// Reports written by `--json`; the first is the baseline.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// An SVG chart of latency by percentile (log axes) of JSON reports: one
    /// line per target and operation, titled with the first report's profile.
    Plot {
        /// The SVG file to write.
        #[arg(long, value_name = "FILE.svg")]
        out: PathBuf,
        /// Reports written by `--json`.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
}

/// The flags of a run.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// opticache://HOST:PORT[,HOST:PORT] (the coordinators), node://HOST:PORT
    /// (one cache node) or redis://HOST:PORT.
    #[arg(long, required = true, value_parser = TargetSpec::from_str)]
    pub target: Option<TargetSpec>,
    /// read-heavy (95/5 reads/writes, 4 KiB), write-heavy (10/90, 4 KiB),
    /// mixed (50/50, 4 KiB), batch-read (64 keys of 256 B), params (50/50,
    /// 1 MiB), large (50/50, 64 MiB, streamed). Every setting can be
    /// overridden by its flag.
    #[arg(long, value_enum, default_value = "mixed")]
    pub profile: ProfileName,
    /// Operation weights, e.g. read:90,write:5,update:3,delete:2 (operations:
    /// read, write, update, delete, batch-read, batch-write).
    #[arg(long, value_parser = Mix::from_str)]
    pub mix: Option<Mix>,
    /// Keys in the key space.
    #[arg(long, value_name = "N")]
    pub keys: Option<u64>,
    /// Value size: fixed (4KiB, 4096) or a range drawn uniformly (1KiB..8KiB).
    #[arg(long, value_name = "SIZE|MIN..MAX", value_parser = ValueSize::from_str)]
    pub value_size: Option<ValueSize>,
    /// uniform, or zipf:THETA (0 < THETA <= 5; YCSB uses 0.99).
    #[arg(long, value_parser = Distribution::from_str)]
    pub distribution: Option<Distribution>,
    /// Client tasks, each with its own connection.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Measured time, e.g. 10s.
    #[arg(long, value_parser = parse_duration_ms, value_name = "DURATION")]
    pub duration: Option<u64>,
    /// Unmeasured time before it, e.g. 2s.
    #[arg(long, value_parser = parse_duration_ms, value_name = "DURATION")]
    pub warmup: Option<u64>,
    /// Open loop: operations per second over all clients, sent on a fixed
    /// schedule; latency counts from the scheduled time, so a stall shows.
    /// Without it, each client sends its next request when the last returns.
    #[arg(long, value_name = "OPS_PER_S")]
    pub rate: Option<u64>,
    /// Write every key once before the run, so reads hit (misses become errors).
    #[arg(long)]
    pub preload: bool,
    /// The namespace (Redis: a key prefix).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Seed of key, size and operation choices (runs with one seed repeat).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keys per batch operation.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
    /// How values move: unary (one message) or stream (chunks; not for Redis).
    #[arg(long, value_enum)]
    pub transfer: Option<Transfer>,
    /// Longest one call may take before it counts as a timeout.
    #[arg(long, value_parser = parse_duration_ms, value_name = "DURATION")]
    pub timeout: Option<u64>,
    /// Write the whole report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write one HdrHistogram percentile file per operation into DIR.
    #[arg(long, value_name = "DIR")]
    pub hgrm: Option<PathBuf>,
    /// Write an SVG chart of latency by percentile, one line per operation, to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// A server process whose CPU time over the measured window is reported,
    /// per operation, beside loadgen's own (repeat for a cluster's processes).
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// A file holding the bearer token: a client token for opticache://, the
    /// cluster token for node:// (docs/security.md).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Connect with TLS, trusting only the CA in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// node:// under mutual TLS: this client's certificate (PEM), from the cluster's CA.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
}

impl RunArgs {
    /// The credentials flags, taken out before the plan is resolved.
    pub fn access(&self) -> AccessArgs {
        AccessArgs {
            token_file: self.token_file.clone(),
            ca_cert: self.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// Value sizes: one size, or a range drawn uniformly per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ValueSize {
    Fixed { bytes: u64 },
    Range { min_bytes: u64, max_bytes: u64 },
}

impl ValueSize {
    /// The largest size a write may have.
    pub fn max_bytes(self) -> u64 {
        match self {
            ValueSize::Fixed { bytes } => bytes,
            ValueSize::Range { max_bytes, .. } => max_bytes,
        }
    }

    /// The smallest.
    pub fn min_bytes(self) -> u64 {
        match self {
            ValueSize::Fixed { bytes } => bytes,
            ValueSize::Range { min_bytes, .. } => min_bytes,
        }
    }

    /// The size of the next write.
    pub fn draw(self, rng: &mut SmallRng) -> u64 {
        match self {
            ValueSize::Fixed { bytes } => bytes,
            ValueSize::Range { min_bytes, max_bytes } => rng.random_range(min_bytes..=max_bytes),
        }
    }
}

impl FromStr for ValueSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once("..") {
            None => Ok(ValueSize::Fixed { bytes: parse_size(text)? }),
            Some((min, max)) => {
                let (min_bytes, max_bytes) = (parse_size(min)?, parse_size(max)?);
                if min_bytes > max_bytes {
                    return Err(format!("{text:?}: the range's minimum is above its maximum"));
                }
                Ok(ValueSize::Range { min_bytes, max_bytes })
            }
        }
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ValueSize::Fixed { bytes } => f.write_str(&format_size(bytes)),
            ValueSize::Range { min_bytes, max_bytes } => {
                write!(f, "{}..{}", format_size(min_bytes), format_size(max_bytes))
            }
        }
    }
}

/// What the driver needs: the workload with every parameter resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub mix: Mix,
    pub keys: u64,
    pub value_size: ValueSize,
    pub transfer: Transfer,
    pub distribution: Distribution,
    pub concurrency: u32,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    /// Open loop at this many operations per second over all clients; `None`
    /// is a closed loop.
    pub rate_ops_per_s: Option<u64>,
    pub preload: bool,
    pub namespace: String,
    pub seed: u64,
    pub batch_size: u32,
    pub timeout_ms: u64,
    /// A miss is an error: after `--preload` every key exists, unless the
    /// mix deletes some.
    pub misses_are_errors: bool,
}

/// A run, resolved: what to load, how, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub target: TargetSpec,
    pub profile: ProfileName,
    pub workload: Workload,
}

/// Where the report goes besides stdout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub hgrm: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

impl Plan {
    /// Applies the flags to the profile's defaults and checks the result.
    pub fn resolve(args: RunArgs) -> Result<(Plan, Outputs)> {
        let target = args.target.ok_or_else(|| LoadgenError::invalid("--target", "is required"))?;
        let profile = Profile::of(args.profile);
        let mix = args.mix.unwrap_or(profile.mix);
        let keys = args.keys.unwrap_or(profile.keys);
        let value_size = args.value_size.unwrap_or(ValueSize::Fixed { bytes: profile.value_bytes });
        let concurrency = args.concurrency.unwrap_or(profile.concurrency);
        let duration_ms = args.duration.unwrap_or(10_000);
        let warmup_ms = args.warmup.unwrap_or(2_000);
        let namespace = args.namespace.unwrap_or_else(|| NAMESPACE_DEFAULT.to_owned());
        let batch_size = args.batch_size.unwrap_or(profile.batch_size);
        let timeout_ms = args.timeout.unwrap_or(TIMEOUT_MS_DEFAULT);

        let transfer = match (args.transfer, target.can_stream()) {
            (Some(Transfer::Stream), false) => {
                return Err(LoadgenError::invalid(
                    "--transfer",
                    format!("{target} has no streamed transfer; use unary"),
                ))
            }
            (Some(t), _) => t,
            // A streamed profile against Redis: the same values, sent whole.
            (None, false) => Transfer::Unary,
            (None, true) => profile.transfer,
        };

        in_range("--keys", keys, 1, KEYS_MAX, |n| n.to_string())?;
        in_range("--concurrency", u64::from(concurrency), 1, u64::from(CONCURRENCY_MAX), |n| n.to_string())?;
        in_range("--duration", duration_ms, 1, DURATION_MS_MAX, format_duration_ms)?;
        in_range("--warmup", warmup_ms, 0, WARMUP_MS_MAX, format_duration_ms)?;
        in_range("--timeout", timeout_ms, 1, TIMEOUT_MS_MAX, format_duration_ms)?;
        if let Some(rate) = args.rate {
            in_range("--rate", rate, 1, RATE_MAX, |n| format!("{n} ops/s"))?;
        }
        if namespace.len() > NAMESPACE_BYTES_MAX {
            return Err(LoadgenError::invalid(
                "--namespace",
                format!("is {} bytes; at most {NAMESPACE_BYTES_MAX}", namespace.len()),
            ));
        }

        let value_max = target.value_bytes_max(transfer);
        if value_size.min_bytes() < VALUE_BYTES_MIN {
            return Err(LoadgenError::invalid(
                "--value-size",
                format!("{value_size} is under {VALUE_BYTES_MIN} bytes, the header that lets reads be checked"),
            ));
        }
        if value_size.max_bytes() > value_max {
            let hint = match (transfer, target.can_stream()) {
                (Transfer::Unary, true) => "; stream larger values (--transfer stream)",
                _ => "",
            };
            return Err(LoadgenError::invalid(
                "--value-size",
                format!(
                    "{value_size} is over {target}'s limit of {} for {transfer} transfers{hint}",
                    format_size(value_max)
                ),
            ));
        }
        if transfer == Transfer::Stream {
            if let Some(kind) = mix.kinds().find(|k| k.is_batch()) {
                return Err(LoadgenError::invalid(
                    "--mix",
                    format!("{kind} cannot be streamed; use --transfer unary or drop {kind} from the mix"),
                ));
            }
            let unary_max = target.value_bytes_max(Transfer::Unary);
            if mix.has(OpKind::Update) && value_size.max_bytes() > unary_max {
                return Err(LoadgenError::invalid(
                    "--mix",
                    format!(
                        "update has no streamed form and {value_size} is over the {} unary limit",
                        format_size(unary_max)
                    ),
                ));
            }
        }
        if mix.kinds().any(OpKind::is_batch) {
            in_range("--batch-size", u64::from(batch_size), 1, u64::from(BATCH_LEN_MAX), |n| n.to_string())?;
            // The request of a batch write, or the answer of a batch read, must
            // fit; the servers count key bytes against the limit too.
            let key_bytes = crate::keys::key_name(keys.saturating_sub(1)).len() as u64;
            let batch_bytes = u64::from(batch_size).saturating_mul(value_size.max_bytes().saturating_add(key_bytes));
            if batch_bytes > BATCH_BYTES_MAX {
                return Err(LoadgenError::invalid(
                    "--batch-size",
                    format!(
                        "{batch_size} values of up to {} make {} per batch, over the {} batch limit",
                        format_size(value_size.max_bytes()),
                        format_size(batch_bytes),
                        format_size(BATCH_BYTES_MAX)
                    ),
                ));
            }
        } else if args.batch_size.is_some() {
            return Err(LoadgenError::invalid(
                "--batch-size",
                format!("the mix ({mix}) has no batch operation to apply it to"),
            ));
        }
        if args.preload {
            let preload_bytes = keys.saturating_mul(value_size.max_bytes());
            if preload_bytes > PRELOAD_BYTES_MAX {
                return Err(LoadgenError::invalid(
                    "--preload",
                    format!(
                        "{keys} keys of up to {value_size} is {}, over the {} preload limit; use fewer --keys",
                        format_size(preload_bytes),
                        format_size(PRELOAD_BYTES_MAX)
                    ),
                ));
            }
        }

        let workload = Workload {
            misses_are_errors: args.preload && !mix.has(OpKind::Delete),
            mix,
            keys,
            value_size,
            transfer,
            distribution: args.distribution.unwrap_or(Distribution::Uniform),
            concurrency,
            duration_ms,
            warmup_ms,
            rate_ops_per_s: args.rate,
            preload: args.preload,
            namespace,
            seed: args.seed.unwrap_or(1),
            batch_size,
            timeout_ms,
        };
        let outputs = Outputs { json: args.json, hgrm: args.hgrm, plot: args.plot };
        Ok((Plan { target, profile: args.profile, workload }, outputs))
    }
}

fn in_range(arg: &'static str, value: u64, min: u64, max: u64, show: impl Fn(u64) -> String) -> Result<()> {
    if value < min || value > max {
        return Err(LoadgenError::invalid(
            arg,
            format!("{} is out of range {}..={}", show(value), show(min), show(max)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::units::MIB;

    /// Parses a run's command line (after `loadgen`).
    fn parse(args: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))?;
        assert!(cli.command.is_none(), "{args:?} is a run");
        Ok(cli.run)
    }

    fn resolve(args: &[&str]) -> Result<Plan> {
        let run = parse(args).unwrap_or_else(|e| panic!("{args:?} should parse: {e}"));
        Plan::resolve(run).map(|(plan, _)| plan)
    }

    /// A clap error for `args`, as the user would see it.
    fn clap_error(args: &[&str]) -> String {
        let err = parse(args).expect_err("should not parse");
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}: {err}");
        err.to_string()
    }

    /// A resolve error for `args`: the flag it names and its message.
    fn resolve_error(args: &[&str]) -> (&'static str, String) {
        match resolve(args).expect_err("should not resolve") {
            err @ LoadgenError::InvalidArgument { arg, .. } => (arg, err.to_string()),
            other => panic!("{args:?}: expected an invalid argument, got {other:?}"),
        }
    }

    const NODE: &str = "node://127.0.0.1:6001";

    #[test]
    fn the_default_is_the_mixed_profile_closed_loop() {
        let plan = resolve(&["--target", NODE]).expect("valid");
        assert_eq!(plan.target, TargetSpec::Node { address: "127.0.0.1:6001".into() });
        assert_eq!(plan.profile, ProfileName::Mixed);
        let w = &plan.workload;
        assert_eq!(w.mix.to_string(), "read:50,write:50");
        assert_eq!(w.value_size, ValueSize::Fixed { bytes: 4096 });
        assert_eq!((w.keys, w.concurrency, w.duration_ms, w.warmup_ms), (10_000, 16, 10_000, 2_000));
        assert_eq!((w.rate_ops_per_s, w.preload, w.misses_are_errors), (None, false, false));
        assert_eq!((w.namespace.as_str(), w.seed, w.timeout_ms), ("loadgen", 1, 30_000));
        assert_eq!((w.transfer, w.distribution), (Transfer::Unary, Distribution::Uniform));
    }

    #[test]
    fn every_flag_overrides_the_profile() {
        let plan = resolve(&[
            "--target",
            "opticache://a:1,b:2",
            "--profile",
            "batch-read",
            "--mix",
            "batch-read:9,batch-write:1",
            "--keys",
            "500",
            "--value-size",
            "1KiB..8KiB",
            "--distribution",
            "zipf:0.99",
            "--concurrency",
            "8",
            "--duration",
            "1.5s",
            "--warmup",
            "0s",
            "--rate",
            "2000",
            "--preload",
            "--namespace",
            "model-a",
            "--seed",
            "42",
            "--batch-size",
            "16",
            "--timeout",
            "250ms",
        ])
        .expect("valid");
        assert_eq!(plan.target, TargetSpec::OptiCache { coordinators: vec!["a:1".into(), "b:2".into()] });
        let w = plan.workload;
        assert_eq!(w.mix.to_string(), "batch-read:9,batch-write:1");
        assert_eq!(w.value_size, ValueSize::Range { min_bytes: 1024, max_bytes: 8192 });
        assert_eq!(w.distribution, Distribution::Zipf { theta: 0.99 });
        assert_eq!((w.keys, w.concurrency, w.duration_ms, w.warmup_ms, w.timeout_ms), (500, 8, 1_500, 0, 250));
        assert_eq!((w.rate_ops_per_s, w.preload, w.misses_are_errors), (Some(2000), true, true));
        assert_eq!((w.namespace.as_str(), w.seed, w.batch_size), ("model-a", 42, 16));
    }

    #[test]
    fn profiles_resolve_to_their_parameters() {
        let w = resolve(&["--target", NODE, "--profile", "read-heavy"]).expect("valid").workload;
        assert_eq!((w.mix.to_string(), w.value_size.max_bytes()), ("read:95,write:5".into(), 4096));
        let w = resolve(&["--target", NODE, "--profile", "write-heavy"]).expect("valid").workload;
        assert_eq!(w.mix.to_string(), "read:10,write:90");
        let w = resolve(&["--target", NODE, "--profile", "batch-read"]).expect("valid").workload;
        assert_eq!((w.mix.to_string(), w.value_size.max_bytes(), w.batch_size), ("batch-read:100".into(), 256, 64));
        let w = resolve(&["--target", NODE, "--profile", "params"]).expect("valid").workload;
        assert_eq!((w.value_size.max_bytes(), w.transfer), (MIB, Transfer::Unary));
        let w = resolve(&["--target", NODE, "--profile", "large"]).expect("valid").workload;
        assert_eq!((w.value_size.max_bytes(), w.transfer, w.concurrency), (64 * MIB, Transfer::Stream, 4));
        // Redis has no streams: the large profile sends its values whole.
        let w = resolve(&["--target", "redis://127.0.0.1:6379", "--profile", "large"]).expect("valid").workload;
        assert_eq!(w.transfer, Transfer::Unary);
        // A mix that deletes keys cannot expect every read to hit.
        let w = resolve(&["--target", NODE, "--preload", "--mix", "read:9,delete:1"]).expect("valid").workload;
        assert!(w.preload && !w.misses_are_errors);
    }

    #[test]
    fn values_at_the_limits_are_accepted() {
        for args in [
            &["--value-size", "24"][..],
            &["--value-size", "64MiB"],
            &["--value-size", "1GiB", "--transfer", "stream"],
            &["--concurrency", "1"],
            &["--concurrency", "1024"],
            &["--keys", "1"],
            &["--keys", "1000000000000"],
            &["--duration", "1ms"],
            &["--duration", "24h"],
            &["--warmup", "1h"],
            &["--rate", "1"],
            &["--rate", "10000000"],
            &["--timeout", "10m"],
            &["--distribution", "zipf:5"],
            &["--profile", "batch-read", "--batch-size", "4096"],
            &["--mix", "batch-write:1", "--value-size", "16000", "--batch-size", "4096"],
            &["--preload", "--keys", "1048576", "--value-size", "64KiB"],
        ] {
            let mut full = vec!["--target", NODE];
            full.extend_from_slice(args);
            resolve(&full).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        // 4096 values of 16 KiB are exactly 64 MiB: with their keys, over.
        let over =
            resolve(&["--target", NODE, "--mix", "batch-write:1", "--value-size", "16KiB", "--batch-size", "4096"]);
        assert!(over.is_err_and(|e| e.to_string().contains("--batch-size")), "keys count against the batch limit");
        let long = "n".repeat(NAMESPACE_BYTES_MAX);
        resolve(&["--target", NODE, "--namespace", &long]).expect("255-byte namespace");
    }

    #[test]
    fn out_of_range_arguments_name_the_flag_and_the_range() {
        let long = "n".repeat(NAMESPACE_BYTES_MAX + 1);
        for (args, flag, says) in [
            (&["--concurrency", "0"][..], "--concurrency", "0 is out of range 1..=1024"),
            (&["--concurrency", "1025"], "--concurrency", "out of range"),
            (&["--keys", "0"], "--keys", "0 is out of range"),
            (&["--keys", "1000000000001"], "--keys", "out of range"),
            (&["--duration", "0s"], "--duration", "0ms is out of range 1ms..=86400s"),
            (&["--duration", "25h"], "--duration", "out of range"),
            (&["--warmup", "2h"], "--warmup", "out of range"),
            (&["--timeout", "0ms"], "--timeout", "out of range"),
            (&["--timeout", "11m"], "--timeout", "out of range"),
            (&["--rate", "0"], "--rate", "0 ops/s is out of range"),
            (&["--rate", "10000001"], "--rate", "out of range"),
            (&["--namespace", long.as_str()], "--namespace", "256 bytes; at most 255"),
            (&["--value-size", "23"], "--value-size", "under 24 bytes"),
            (&["--value-size", "16..4KiB"], "--value-size", "under 24 bytes"),
            (
                &["--value-size", "65MiB"],
                "--value-size",
                "over node://127.0.0.1:6001's limit of 64MiB for unary transfers; stream larger values",
            ),
            (&["--value-size", "2GiB", "--transfer", "stream"], "--value-size", "limit of 1GiB"),
            (&["--profile", "batch-read", "--batch-size", "0"], "--batch-size", "out of range 1..=4096"),
            (&["--profile", "batch-read", "--batch-size", "4097"], "--batch-size", "out of range"),
            (
                &["--mix", "batch-write:1", "--value-size", "1MiB", "--batch-size", "65"],
                "--batch-size",
                "over the 64MiB batch limit",
            ),
            (&["--batch-size", "8"], "--batch-size", "no batch operation"),
            (&["--mix", "batch-read:1", "--transfer", "stream"], "--mix", "batch-read cannot be streamed"),
            (
                &["--mix", "update:1", "--transfer", "stream", "--value-size", "65MiB"],
                "--mix",
                "update has no streamed form",
            ),
            (
                &["--preload", "--keys", "1000000000", "--value-size", "1MiB"],
                "--preload",
                "over the 64GiB preload limit",
            ),
        ] {
            let mut full = vec!["--target", NODE];
            full.extend_from_slice(args);
            let (arg, message) = resolve_error(&full);
            assert_eq!(arg, flag, "{args:?}: {message}");
            assert!(message.contains(says), "{args:?}: {message:?} should say {says:?}");
        }
        let (arg, message) = resolve_error(&["--target", "redis://127.0.0.1:6379", "--transfer", "stream"]);
        assert_eq!(arg, "--transfer");
        assert!(message.contains("no streamed transfer"), "{message}");
        let (arg, message) = resolve_error(&["--target", "redis://127.0.0.1:6379", "--value-size", "513MiB"]);
        assert_eq!(arg, "--value-size");
        assert!(message.contains("limit of 512MiB") && !message.contains("stream larger"), "{message}");
    }

    #[test]
    fn unparsable_arguments_are_refused_by_the_parser_naming_the_flag() {
        for (args, says) in [
            (&["--duration", "10"][..], "has no unit"),
            (&["--duration", "ten seconds"], "unknown duration unit"),
            (&["--warmup", "1sec"], "unknown duration unit"),
            (&["--timeout", "0.5ms"], "not a whole number of milliseconds"),
            (&["--value-size", "4XB"], "unknown size unit"),
            (&["--value-size", "8KiB..1KiB"], "minimum is above its maximum"),
            (&["--distribution", "zipf:0"], "out of range"),
            (&["--distribution", "zipf:7"], "out of range"),
            (&["--distribution", "pareto"], "neither uniform nor zipf"),
            (&["--mix", "read:50,scan:50"], "unknown operation \"scan\""),
            (&["--target", "tcp://127.0.0.1:1"], "unknown scheme"),
            (&["--target", "node://127.0.0.1"], "not HOST:PORT"),
            (&["--concurrency", "many"], "invalid digit"),
            (&["--keys", "1e6"], "invalid digit"),
            (&["--rate", "1.5"], "invalid digit"),
        ] {
            let mut full = if args[0] == "--target" { vec![] } else { vec!["--target", NODE] };
            full.extend_from_slice(args);
            let message = clap_error(&full);
            assert!(message.contains(args[0]), "{args:?}: {message:?} should name {}", args[0]);
            assert!(message.contains(says), "{args:?}: {message:?} should say {says:?}");
        }
        let err = Cli::try_parse_from(["loadgen", "--target", NODE, "--profile", "huge"]).expect_err("bad profile");
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(err.to_string().contains("read-heavy"), "lists the profiles: {err}");
        let err = Cli::try_parse_from(["loadgen", "--profile", "mixed"]).expect_err("no target");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--target"), "{err}");
    }

    #[test]
    fn compare_takes_files_and_no_run_flags() {
        let cli = Cli::try_parse_from(["loadgen", "compare", "a.json", "b.json"]).expect("compare");
        let Some(Command::Compare { files }) = cli.command else { panic!("expected compare: {cli:?}") };
        assert_eq!(files, [PathBuf::from("a.json"), PathBuf::from("b.json")]);
        let err = Cli::try_parse_from(["loadgen", "compare"]).expect_err("no files");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn plot_takes_an_output_and_files() {
        let cli = Cli::try_parse_from(["loadgen", "plot", "--out", "p.svg", "a.json", "b.json"]).expect("plot");
        let Some(Command::Plot { out, files }) = cli.command else { panic!("expected plot: {cli:?}") };
        assert_eq!(out, PathBuf::from("p.svg"));
        assert_eq!(files, [PathBuf::from("a.json"), PathBuf::from("b.json")]);
        let err = Cli::try_parse_from(["loadgen", "plot", "a.json"]).expect_err("no --out");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let err = Cli::try_parse_from(["loadgen", "plot", "--out", "p.svg"]).expect_err("no files");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn outputs_are_passed_through() {
        let run = parse(&["--target", NODE, "--json", "out.json", "--hgrm", "hist", "--plot", "p.svg"]).expect("valid");
        let (_, outputs) = Plan::resolve(run).expect("valid");
        assert_eq!(
            outputs,
            Outputs { json: Some("out.json".into()), hgrm: Some("hist".into()), plot: Some("p.svg".into()) }
        );
    }

    #[test]
    fn value_sizes_draw_within_their_range() {
        use rand::SeedableRng;
        let mut rng = SmallRng::seed_from_u64(1);
        let range: ValueSize = "100..200".parse().expect("range");
        let drawn: Vec<u64> = (0..1_000).map(|_| range.draw(&mut rng)).collect();
        assert!(drawn.iter().all(|&n| (100..=200).contains(&n)));
        assert!(drawn.contains(&100) && drawn.contains(&200), "both ends reachable");
        assert_eq!(ValueSize::Fixed { bytes: 7 }.draw(&mut rng), 7);
        assert_eq!(range.to_string(), "100B..200B");
    }
}
