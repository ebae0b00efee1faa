//! The `opticache` binary as a user runs it, against coordinator addresses
//! where nothing listens (ports bound and closed again). The runs against a
//! live cluster arrive with the coordinator (issue 4).
//!
//! These pin what a script relies on: exit statuses, errors on stderr that
//! name the coordinators, nothing on stdout when a command fails, and
//! OPTICACHE_COORDINATORS (tested here, in a child process, because setting
//! it in the test process would race other tests).

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

fn closed_ports(n: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").to_string()).collect()
}

fn opticache(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opticache"))
        .args(args)
        .env_remove("OPTICACHE_COORDINATORS")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opticache");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unreachable_coordinators_from_the_environment_fail_with_status_2_naming_both() {
    let addresses = closed_ports(2);
    let joined = addresses.join(",");
    let output = opticache(&["--timeout-ms", "300", "get", "k"], &[("OPTICACHE_COORDINATORS", &joined)], b"");
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    let text = stderr(&output);
    assert!(text.starts_with("opticache: unavailable: no coordinator could serve the call; tried "), "{text}");
    for address in &addresses {
        assert!(text.contains(address.as_str()), "{text} names {address}");
    }
    assert!(output.stdout.is_empty(), "nothing on stdout on failure");
}

#[test]
fn the_coordinators_option_overrides_the_environment() {
    let [given, from_env] = <[String; 2]>::try_from(closed_ports(2)).expect("two");
    let output = opticache(
        &["--coordinators", &given, "--timeout-ms", "300", "delete", "k"],
        &[("OPTICACHE_COORDINATORS", &from_env)],
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains(&given) && !text.contains(&from_env), "{text}");
}

#[test]
fn put_from_stdin_reads_the_value_then_reports_the_unreachable_cluster() {
    let addresses = closed_ports(1);
    let output = opticache(&["--coordinators", &addresses[0], "--timeout-ms", "300", "put", "k"], &[], b"value");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains(&addresses[0]), "{}", stderr(&output));
}

#[test]
fn a_bad_ttl_is_a_usage_error_that_explains_itself() {
    let output = opticache(&["put", "k", "v", "--ttl", "10"], &[], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("TTL \"10\" has no unit; add ms, s, m or h (e.g. 10s)"), "{}", stderr(&output));
}

#[test]
fn help_lists_every_subcommand_and_the_exit_statuses() {
    let output = opticache(&["--help"], &[], b"");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for word in ["put", "get", "update", "delete", "batch-get", "status", "OPTICACHE_COORDINATORS", "Exit status"] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
}
