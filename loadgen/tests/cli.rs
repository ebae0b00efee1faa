//! The `loadgen` binary as a user meets it: bad arguments exit with status 2
//! and a one-line reason naming the flag; an unreachable target of each kind
//! exits with status 1 and names the address; `compare` prints a table;
//! `compare` and `plot` name a missing file.
//!
//! Unreachable targets are ports that were free a moment ago (bound, then
//! released): connecting is refused at once, so these runs end in well under
//! a second, without any timing assertion here.

use std::net::TcpListener;
use std::process::{Command, Output};

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().expect("run loadgen")
}

fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

#[test]
fn bad_arguments_exit_2_with_a_reason() {
    for (args, says) in [
        (
            &["--target", "node://127.0.0.1:1", "--concurrency", "0"][..],
            "invalid argument --concurrency: 0 is out of range 1..=1024",
        ),
        (&["--target", "node://127.0.0.1:1", "--distribution", "zipf:9"], "zipf theta 9 is out of range"),
        (&["--target", "node://127.0.0.1:1", "--value-size", "100MiB"], "over node://127.0.0.1:1's limit of 64MiB"),
        (&["--target", "node://127.0.0.1:1", "--duration", "10"], "has no unit"),
        (&["--target", "redis://127.0.0.1:1", "--transfer", "stream"], "has no streamed transfer"),
        (&["--target", "ftp://127.0.0.1:1"], "unknown scheme"),
        (&["--concurrency", "4"], "--target"),
        (&["--target", "node://127.0.0.1:1", "--server-pid", "4294967295"], "no process 4294967295 to watch"),
    ] {
        let out = loadgen(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr:?} should say {says:?}");
        assert!(out.stdout.is_empty(), "{args:?}: no report");
    }
}

#[test]
fn an_unreachable_target_fails_naming_its_address() {
    for scheme in ["node", "redis", "opticache"] {
        let address = closed_port();
        let target = format!("{scheme}://{address}");
        let out = loadgen(&["--target", &target, "--duration", "1s", "--warmup", "0s", "--concurrency", "1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{target}: {stderr}");
        assert!(stderr.contains(&format!("cannot reach {target}")), "{target}: {stderr}");
        assert!(stderr.matches(address.as_str()).count() >= 1, "{target}: {stderr}");
    }
}

#[test]
fn compare_of_a_missing_file_names_it() {
    let out = loadgen(&["compare", "/nonexistent/a.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/a.json"), "{stderr}");
}

#[test]
fn plot_of_a_missing_file_names_it() {
    let dir = std::env::temp_dir().join(format!("loadgen-plot-{}", std::process::id()));
    let out_svg = dir.join("out.svg");
    let out = loadgen(&["plot", "--out", out_svg.to_str().expect("utf-8"), "/nonexistent/b.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/b.json"), "{stderr}");
    assert!(!out_svg.exists(), "no picture without data");
}
