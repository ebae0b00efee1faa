//! The coordinator process at its edges: every way it refuses to start says
//! why and exits 1 (2 for bad flags), a stop signal drains and exits 0, and a
//! second one during the drain exits 130 at once (the brief's exit codes,
//! `src/main.rs`).

mod common;

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use common::*;
use opticache_proto::v1 as pb;

const COORDINATOR: &str = env!("CARGO_BIN_EXE_opticache-coordinator");

/// A config naming coordinators at `primary` and `secondary` and three nodes
/// on ports nobody listens on, plus `extra` lines. The nodes' metrics
/// addresses are explicit: the default (the node's port + 1000) can land on a
/// coordinator's port drawn here, and the config is then refused for that.
fn config(dir: &Path, primary: &str, secondary: &str, extra: &str) -> String {
    let nodes = free_ports(3);
    let mut text = format!("coordinator:\n  primary: {primary}\n  secondary: {secondary}\ncache_nodes:\n");
    for (i, port) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "  - address: 127.0.0.1:{port}\n    disk_path: '{}'\n    metrics_address: 127.0.0.1:0\n",
            dir.join(format!("n{i}")).display()
        ));
    }
    text.push_str(extra);
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

fn coordinator(dir: &Path, args: &[&str]) -> Proc {
    let args = args.iter().map(|a| a.to_string()).collect();
    let mut p = Proc::new("coordinator".into(), Path::new(COORDINATOR), args, dir);
    p.spawn();
    p
}

async fn refused(mut p: Proc, code: i32, says: &[&str]) {
    let status = p.wait_exit().await;
    let log = p.log();
    assert_eq!(status.code(), Some(code), "exit status {status}; log:\n{log}");
    for s in says {
        assert!(log.contains(s), "the refusal must say {s:?}; log:\n{log}");
    }
}

#[tokio::test]
async fn an_address_that_is_not_one_of_the_configured_coordinators_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    let (a, b, other) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]), ports[2]);
    let config = config(dir.path(), &a, &b, "");
    let other = format!("127.0.0.1:{other}");
    let p = coordinator(dir.path(), &["--config", &config, "--address", &other, "--metrics-address", "127.0.0.1:0"]);
    refused(p, 1, &[&other, "is neither coordinator.primary nor coordinator.secondary"]).await;
}

#[tokio::test]
async fn a_taken_port_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = taken.local_addr().expect("address").to_string();
    let b = format!("127.0.0.1:{}", free_ports(1)[0]);
    let config = config(dir.path(), &a, &b, "");
    let p = coordinator(dir.path(), &["--config", &config, "--address", &a, "--metrics-address", "127.0.0.1:0"]);
    refused(p, 1, &[&format!("cannot listen on {a}"), "in use"]).await;
}

#[tokio::test]
async fn a_misspelt_config_key_and_a_missing_file_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let (a, b) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let config = config(dir.path(), &a, &b, "replicaton_factor: 2\n");
    let p = coordinator(dir.path(), &["--config", &config, "--address", &a]);
    refused(p, 1, &["replicaton_factor"]).await;
    let missing = dir.path().join("nowhere.yaml").display().to_string();
    let p = coordinator(dir.path(), &["--config", &missing]);
    refused(p, 1, &[&missing]).await;
}

#[tokio::test]
async fn an_unknown_flag_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = coordinator(dir.path(), &["--no-such-flag"]);
    refused(p, 2, &["--no-such-flag"]).await;
}

/// Starts a coordinator whose nodes are all down and waits until it serves.
async fn serving(dir: &Path) -> (Proc, String) {
    let ports = free_ports(2);
    let (a, b) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let config = config(dir, &a, &b, "heartbeat_interval_ms: 100\n");
    let p = coordinator(dir, &["--config", &config, "--address", &a, "--metrics-address", "127.0.0.1:0"]);
    let started = Instant::now();
    while !p.log().lines().any(|l| l.contains("serving") && !l.contains("not serving")) {
        assert!(started.elapsed() < DEADLINE, "the coordinator did not serve; log:\n{}", p.log());
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    (p, a)
}

#[tokio::test]
async fn sigterm_exits_0_and_a_second_signal_during_the_drain_exits_130() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut p, _) = serving(dir.path()).await;
    p.terminate().await;
    assert!(p.log().contains("stopped cleanly"), "log:\n{}", p.log());

    // A streamed write left open keeps the drain waiting (up to its 30 s
    // timeout): the second signal must not wait for it.
    let (mut p, address) = serving(dir.path()).await;
    let mut client =
        pb::opti_cache_client::OptiCacheClient::connect(format!("http://{address}")).await.expect("connect");
    let mut same_connection = client.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::WriteChunk>(1);
    let first = pb::WriteChunk {
        namespace: "ns".into(),
        key: Bytes::from_static(b"held open"),
        ttl_ms: 0,
        total_size: 2,
        data: Bytes::from_static(b"x"),
    };
    tx.send(first).await.expect("first chunk");
    let call = tokio::spawn(async move { client.write_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    // HTTP/2 opens streams in order on one connection: once a later call on
    // it has been answered, the server holds the streamed write.
    same_connection.cluster_status(pb::ClusterStatusRequest {}).await.expect("ClusterStatus");
    assert!(!call.is_finished(), "the held stream ended early: {:?}", call.await);
    p.signal(libc::SIGTERM);
    let draining = Instant::now();
    while !p.log().contains("draining in-flight calls") {
        assert!(draining.elapsed() < DEADLINE, "no drain; log:\n{}", p.log());
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert!(p.try_exit().is_none(), "the drain waits for the open stream");
    p.signal(libc::SIGTERM);
    let status = p.wait_exit().await;
    assert_eq!(status.code(), Some(130), "second signal: {status}; log:\n{}", p.log());
    drop(tx);
}

#[tokio::test]
async fn unusable_security_files_and_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let (a, b) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let missing = dir.path().join("missing-cert.pem").display().to_string();
    let tls = format!("security:\n  tls: {{ca_cert: '{missing}', cert: '{missing}', key: '{missing}'}}\n");
    let file = config(dir.path(), &a, &b, &tls);
    let p = coordinator(dir.path(), &["--config", &file, "--address", &a, "--metrics-address", "127.0.0.1:0"]);
    refused(p, 1, &["security.tls.cert", &missing]).await;

    let tokens = "security:\n  tokens:\n    - {name: app, token: abcdefghijklmnopqrst, role: write}\n";
    let file = config(dir.path(), &a, &b, tokens);
    let p = coordinator(dir.path(), &["--config", &file, "--address", &a, "--metrics-address", "127.0.0.1:0"]);
    refused(p, 1, &["security.cluster_token", "required with client tokens"]).await;

    let short = "security:\n  cluster_token: tooshort\n";
    let file = config(dir.path(), &a, &b, short);
    let mut p = coordinator(dir.path(), &["--config", &file, "--address", &a, "--metrics-address", "127.0.0.1:0"]);
    let status = p.wait_exit().await;
    let log = p.log();
    assert_eq!(status.code(), Some(1), "log:\n{log}");
    assert!(log.contains("security.cluster_token") && log.contains("at least 16"), "log:\n{log}");
    assert!(!log.contains("tooshort"), "a refusal must not print the token; log:\n{log}");
}

#[tokio::test]
async fn a_coordinator_on_a_non_loopback_address_without_tls_or_tokens_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let (a, b) = (format!("0.0.0.0:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let config = config(dir.path(), &a, &b, "");
    let mut p = coordinator(dir.path(), &["--config", &config, "--address", &a, "--metrics-address", "127.0.0.1:0"]);
    let started = Instant::now();
    while !p.log().contains("non-loopback address without TLS") {
        assert!(started.elapsed() < DEADLINE, "no warning; log:\n{}", p.log());
        assert!(p.try_exit().is_none(), "the coordinator exited; log:\n{}", p.log());
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    p.terminate().await;
}
