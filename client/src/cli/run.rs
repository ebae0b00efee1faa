//! Runs one parsed command against the cluster and turns its outcome into
//! output and an exit status.
//!
//! Exit statuses: [`EXIT_NOT_FOUND`] when the key is absent (`get`, or
//! `update` of a missing key), [`EXIT_FAILURE`] for every error (clap uses
//! the same status for usage errors). An error message names the
//! coordinators, so a wrong address or a down cluster is obvious.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use opticache_client::config::{DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_RETRIES};
use opticache_client::{Client, ClientConfig, ClientError, ReadStream};
use opticache_security::Secret;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::args::{Cli, Command};
use super::input::{self, InputError, Payload};
use super::render;

/// The key (or the value to update) does not exist.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Anything else went wrong.
pub const EXIT_FAILURE: u8 = 2;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{what}: {source}")]
    Output { what: String, source: io::Error },
}

fn output_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> CliError {
    let what = what.into();
    move |source| CliError::Output { what, source }
}

/// What a successful command found.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    NotFound,
}

/// Runs `cli`, printing results to stdout and errors to stderr.
pub async fn run(cli: Cli) -> ExitCode {
    let coordinators = cli.coordinators.join(", ");
    match execute(cli).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::NotFound) | Err(CliError::Client(ClientError::NotFound)) => {
            eprintln!("not found");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(err) => {
            eprintln!("{}", error_message(&err, &coordinators));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The line printed for a failed command.
fn error_message(err: &CliError, coordinators: &str) -> String {
    match err {
        // Already names every coordinator tried, with its failure.
        CliError::Client(ClientError::Unavailable(_)) => format!("opticache: {err}"),
        CliError::Client(_) => format!("opticache: {err} (coordinators: {coordinators})"),
        CliError::Input(_) | CliError::Output { .. } => format!("opticache: {err}"),
    }
}

/// The client settings the global options describe.
fn client_config(cli: &Cli) -> ClientConfig {
    ClientConfig {
        coordinators: cli.coordinators.clone(),
        timeout_ms: cli.timeout_ms,
        retries: DEFAULT_RETRIES,
        connect_timeout_ms: connect_timeout_ms(cli.timeout_ms),
        deadline_ms: None,
        token: cli.token.clone().map(Secret::new),
        tls_ca_cert: cli.ca_cert.clone(),
    }
}

/// Half the attempt timeout, at most the default: a coordinator that does
/// not accept then shows up as a connect error (safe to retry even for
/// `update`) instead of as an attempt timeout (which is not).
fn connect_timeout_ms(timeout_ms: u64) -> u64 {
    (timeout_ms / 2).clamp(1, DEFAULT_CONNECT_TIMEOUT_MS)
}

fn key_bytes(key: &str) -> Bytes {
    Bytes::copy_from_slice(key.as_bytes())
}

/// Writes `text` to stdout; a closed pipe is an error, not a panic.
fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(output_error("writing to stdout"))
}

async fn execute(cli: Cli) -> Result<Outcome, CliError> {
    let client = Client::connect(client_config(&cli)).await?;
    let ns = cli.namespace.as_str();
    match cli.command {
        Command::Put(args) => {
            let key = key_bytes(&args.key);
            let version = match input::put_payload(args.value, args.file.as_deref()).await? {
                Payload::Inline(value) => client.put(ns, key, value, args.ttl).await?,
                Payload::Stream { reader, size } => client.put_stream(ns, key, size, args.ttl, reader).await?,
            };
            print(&format!("{version}\n"))?;
        }
        Command::Get(args) => {
            let Some(mut stream) = client.get_stream(ns, key_bytes(&args.key)).await? else {
                return Ok(Outcome::NotFound);
            };
            match args.output {
                None => copy_value(&mut stream, &mut tokio::io::stdout(), "writing to stdout").await?,
                Some(path) => write_file(&mut stream, &path).await?,
            }
        }
        Command::Update(args) => {
            let value = input::update_value(args.value, args.file.as_deref()).await?;
            let version = client.update(ns, key_bytes(&args.key), value, args.expected_version, args.ttl).await?;
            print(&format!("{version}\n"))?;
        }
        Command::Delete(args) => {
            let deleted = client.delete(ns, key_bytes(&args.key)).await?;
            print(if deleted { "deleted\n" } else { "absent\n" })?;
        }
        Command::BatchGet(args) => {
            let results = client.get_many(ns, args.keys.iter().map(|k| key_bytes(k))).await?;
            let lines: String = args
                .keys
                .iter()
                .zip(&results)
                .map(|(key, result)| render::batch_line(key, result.as_ref(), args.values))
                .collect();
            print(&lines)?;
        }
        Command::Status => print(&render::status_table(&client.cluster_status().await?))?,
    }
    Ok(Outcome::Done)
}

/// Writes the value chunk by chunk as it arrives: never held whole.
async fn copy_value(stream: &mut ReadStream, out: &mut (impl AsyncWrite + Unpin), what: &str) -> Result<(), CliError> {
    while let Some(chunk) = stream.next_chunk().await? {
        out.write_all(&chunk).await.map_err(output_error(what))?;
    }
    out.flush().await.map_err(output_error(what))
}

/// Writes the value to `path`; on failure removes the file, so that a
/// partial value is never mistaken for the stored one.
async fn write_file(stream: &mut ReadStream, path: &Path) -> Result<(), CliError> {
    let what = format!("writing {}", path.display());
    let mut file = tokio::fs::File::create(path).await.map_err(output_error(what.clone()))?;
    let copied = copy_value(stream, &mut file, &what).await;
    if copied.is_err() {
        drop(file);
        if let Err(err) = tokio::fs::remove_file(path).await {
            tracing::warn!(path = %path.display(), %err, "could not remove the partial output");
        }
    }
    copied
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn errors_name_the_coordinators_unless_they_already_do() {
        let coordinators = "a:1, b:2";
        let conflict = CliError::Client(ClientError::VersionConflict { message: "stored 5".into() });
        assert_eq!(
            error_message(&conflict, coordinators),
            "opticache: version conflict: stored 5 (coordinators: a:1, b:2)"
        );
        let down = CliError::Client(ClientError::Unavailable("tried a:1 (refused)".into()));
        assert_eq!(error_message(&down, coordinators), "opticache: unavailable: tried a:1 (refused)");
        let input = CliError::Input(InputError::TooLargeForUpdate);
        assert!(!error_message(&input, coordinators).contains("a:1"));
    }

    #[test]
    fn the_connect_timeout_stays_under_the_attempt_timeout() {
        assert_eq!(connect_timeout_ms(2_000), 1_000);
        assert_eq!(connect_timeout_ms(10_000), DEFAULT_CONNECT_TIMEOUT_MS);
        assert_eq!(connect_timeout_ms(300), 150);
        assert_eq!(connect_timeout_ms(1), 1);
    }

    #[test]
    fn global_options_become_the_client_config() {
        let cli = Cli::try_parse_from(["opticache", "--coordinators", "h:1", "--timeout-ms", "400", "status"])
            .expect("parses");
        let config = client_config(&cli);
        assert_eq!(
            config,
            ClientConfig {
                coordinators: vec!["h:1".into()],
                timeout_ms: 400,
                retries: DEFAULT_RETRIES,
                connect_timeout_ms: 200,
                deadline_ms: None,
                token: None,
                tls_ca_cert: None,
            }
        );
    }
}
