//! The `opticache` command line, declared with clap: global options and one
//! subcommand per operation.
//!
//! Invariant: whatever parses is well-formed (a TTL within limits, an
//! expected version of at least 1, at most one value source), so the
//! commands never re-validate their arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use opticache_client::config::DEFAULT_TIMEOUT_MS;

use super::ttl::parse_ttl;

/// Command-line client of an OptiCache cluster.
#[derive(Debug, Parser)]
#[command(
    name = "opticache",
    version,
    about = "Read, write and inspect an OptiCache cluster through its coordinators.",
    after_help = "Exit status: 0 on success, 1 when the key is not found, 2 on any other error.\n\
                  Set RUST_LOG=debug to see each attempt and fail-over."
)]
pub struct Cli {
    /// Coordinator addresses (host:port), primary and standby, comma-separated.
    #[arg(
        long,
        global = true,
        env = "OPTICACHE_COORDINATORS",
        value_delimiter = ',',
        default_value = "127.0.0.1:50051,127.0.0.1:50052"
    )]
    pub coordinators: Vec<String>,

    /// Namespace of the keys (e.g. a model name); "" is the default namespace.
    #[arg(long, global = true, default_value = "")]
    pub namespace: String,

    /// Deadline of one attempt, in milliseconds (also the longest a stream may stall).
    #[arg(long, global = true, default_value_t = DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,

    /// Bearer token for a cluster with tokens on (prefer the environment variable: a flag shows in `ps`).
    #[arg(long, global = true, env = "OPTICACHE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Connect with TLS, trusting only the CA in this PEM file (the cluster's security.tls.ca_cert).
    #[arg(long, global = true, env = "OPTICACHE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// One operation.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a value (from VALUE, --file, or stdin) and print its version.
    Put(PutArgs),
    /// Write a value to stdout (raw bytes) or --output; exit 1 if absent.
    Get(GetArgs),
    /// Replace an existing value, optionally only at --expected-version; print the new version.
    Update(UpdateArgs),
    /// Delete a key; print "deleted" or "absent".
    Delete(DeleteArgs),
    /// Read many keys in one call; print one line per key.
    BatchGet(BatchGetArgs),
    /// Show the coordinator's role and epoch and every cache node.
    Status,
}

/// `put KEY [VALUE] [--file PATH] [--ttl TTL]`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (UTF-8 text; 1 to 1024 bytes).
    pub key: String,
    /// The value; read from --file or stdin when absent.
    #[arg(conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the value from this file (streamed, any size).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Expire after this long: 500ms, 10s, 2m, 1h. Never expires without it.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
}

/// `get KEY [--output FILE]`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key.
    pub key: String,
    /// Write the value to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `update KEY [VALUE] [--expected-version N] [--file PATH] [--ttl TTL]`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The key; it must exist.
    pub key: String,
    /// The new value; read from --file or stdin when absent.
    #[arg(conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the new value from this file (at most one message: 80 MiB).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Replace only if the stored version is this one.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub expected_version: Option<u64>,
    /// Expire after this long: 500ms, 10s, 2m, 1h. Never expires without it.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
}

/// `delete KEY`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The key.
    pub key: String,
}

/// `batch-get KEY... [--values hex|text]`.
#[derive(Debug, Args)]
pub struct BatchGetArgs {
    /// The keys, in the order to print them.
    #[arg(required = true, num_args = 1..)]
    pub keys: Vec<String>,
    /// Also print each value, as hex or as text (invalid UTF-8 and control characters escaped).
    #[arg(long, value_enum)]
    pub values: Option<ValueFormat>,
}

/// How `batch-get --values` prints binary values on a text line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValueFormat {
    /// Lowercase hex, two digits per byte.
    Hex,
    /// UTF-8 text; invalid bytes become U+FFFD, control characters and `\` are escaped.
    Text,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    // OPTICACHE_COORDINATORS is tested on the real binary (tests/cli.rs):
    // setting it here would race every other parse in this process.

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("opticache").chain(args.iter().copied()))
    }

    fn ok(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_have_defaults_and_may_follow_the_subcommand() {
        let cli = ok(&["status"]);
        assert_eq!(cli.coordinators, vec!["127.0.0.1:50051".to_owned(), "127.0.0.1:50052".to_owned()]);
        assert_eq!((cli.namespace.as_str(), cli.timeout_ms), ("", 2_000));
        assert!(matches!(cli.command, Command::Status));

        let cli = ok(&["status", "--coordinators", "a:1,b:2", "--namespace", "m", "--timeout-ms", "50"]);
        assert_eq!(cli.coordinators, vec!["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!((cli.namespace.as_str(), cli.timeout_ms), ("m", 50));
        assert!(parse(&["--timeout-ms", "0", "status"]).is_err(), "a zero timeout could never succeed");
    }

    #[test]
    fn put_takes_a_value_a_file_or_nothing_and_a_ttl() {
        let Command::Put(p) = ok(&["put", "k", "v", "--ttl", "10s"]).command else { panic!("put") };
        assert_eq!(
            (p.key.as_str(), p.value.as_deref(), p.file, p.ttl),
            ("k", Some("v"), None, Some(Duration::from_secs(10)))
        );

        let Command::Put(p) = ok(&["put", "k", "--file", "/tmp/x"]).command else { panic!("put") };
        assert_eq!((p.value, p.file), (None, Some(PathBuf::from("/tmp/x"))));

        let Command::Put(p) = ok(&["put", "k"]).command else { panic!("put") };
        assert_eq!((p.value, p.file, p.ttl), (None, None, None), "stdin");

        assert!(parse(&["put", "k", "v", "--file", "/tmp/x"]).is_err(), "two value sources");
        assert!(parse(&["put"]).is_err(), "no key");
        let err = parse(&["put", "k", "v", "--ttl", "10"]).expect_err("unitless ttl");
        assert!(err.to_string().contains("has no unit"), "{err}");
    }

    #[test]
    fn get_writes_to_stdout_or_a_file() {
        let Command::Get(g) = ok(&["get", "k"]).command else { panic!("get") };
        assert_eq!((g.key.as_str(), g.output), ("k", None));
        let Command::Get(g) = ok(&["get", "k", "--output", "out.bin"]).command else { panic!("get") };
        assert_eq!(g.output, Some(PathBuf::from("out.bin")));
        let Command::Get(g) = ok(&["get", "k", "-o", "o"]).command else { panic!("get") };
        assert_eq!(g.output, Some(PathBuf::from("o")));
        assert!(parse(&["get"]).is_err());
    }

    #[test]
    fn update_takes_an_expected_version_of_at_least_one() {
        let Command::Update(u) = ok(&["update", "k", "v", "--expected-version", "42", "--ttl", "2m"]).command else {
            panic!("update")
        };
        assert_eq!(
            (u.key.as_str(), u.value.as_deref(), u.expected_version, u.ttl),
            ("k", Some("v"), Some(42), Some(Duration::from_secs(120)))
        );
        let Command::Update(u) = ok(&["update", "k", "--file", "f"]).command else { panic!("update") };
        assert_eq!((u.value, u.file, u.expected_version), (None, Some(PathBuf::from("f")), None));
        assert!(parse(&["update", "k", "v", "--expected-version", "0"]).is_err(), "0 means any");
        assert!(parse(&["update", "k", "v", "--expected-version", "x"]).is_err());
        assert!(parse(&["update", "k", "v", "--file", "f"]).is_err(), "two value sources");
    }

    #[test]
    fn delete_takes_one_key() {
        let Command::Delete(d) = ok(&["delete", "k"]).command else { panic!("delete") };
        assert_eq!(d.key, "k");
        assert!(parse(&["delete"]).is_err());
        assert!(parse(&["delete", "a", "b"]).is_err());
    }

    #[test]
    fn batch_get_takes_keys_and_an_optional_value_format() {
        let Command::BatchGet(b) = ok(&["batch-get", "a", "b", "c"]).command else { panic!("batch-get") };
        assert_eq!((b.keys, b.values), (vec!["a".to_owned(), "b".to_owned(), "c".to_owned()], None));
        let Command::BatchGet(b) = ok(&["batch-get", "a", "--values", "hex"]).command else { panic!("batch-get") };
        assert_eq!(b.values, Some(ValueFormat::Hex));
        let Command::BatchGet(b) = ok(&["batch-get", "--values", "text", "a"]).command else { panic!("batch-get") };
        assert_eq!((b.keys, b.values), (vec!["a".to_owned()], Some(ValueFormat::Text)));
        assert!(parse(&["batch-get"]).is_err(), "at least one key");
        assert!(parse(&["batch-get", "a", "--values", "base64"]).is_err());
    }

    #[test]
    fn status_takes_no_arguments() {
        assert!(matches!(ok(&["status"]).command, Command::Status));
        assert!(parse(&["status", "extra"]).is_err());
        assert!(parse(&[]).is_err(), "a subcommand is required");
    }
}
