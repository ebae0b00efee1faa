//! The coordinator's Prometheus endpoint, scraped over plain HTTP: per-RPC
//! latency counts match the calls made, and role, epoch and node states are
//! there.

mod common;

use std::io::{Read, Write};

use common::*;
use opticache_proto::v1 as pb;

/// The bound metrics address, from the coordinator's start line.
fn metrics_address(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("starting") && l.contains("metrics="))
        .and_then(|l| l.split("metrics=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string()
}

fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics endpoint");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_calls_and_show_role_epoch_and_node_states() {
    let cluster = Cluster::start().await;
    let (primary, epoch) = cluster.wait_ready().await;
    let mut client = cluster.client(primary);
    for i in 0..7u64 {
        write(&mut client, "m", format!("k{i}").as_bytes(), value_of(i, 100)).await;
    }
    read(&mut client, "m", b"k1").await;
    expect_code(client.write_cache(pb::WriteRequest::default()).await, tonic::Code::InvalidArgument, "empty key");

    let address = metrics_address(&cluster.coordinators[primary].log());
    let body = tokio::task::spawn_blocking(move || scrape(&address)).await.unwrap();
    let has = |line: &str| body.lines().any(|l| l == line);
    assert!(
        has("opticache_coordinator_rpc_latency_seconds_count{rpc=\"WriteCache\"} 8"),
        "7 writes + 1 refused:\n{body}"
    );
    assert!(has("opticache_coordinator_rpc_latency_seconds_count{rpc=\"ReadCache\"} 1"), "{body}");
    assert!(has("opticache_coordinator_rpc_errors_total{rpc=\"WriteCache\",code=\"InvalidArgument\"} 1"), "{body}");
    assert!(has("opticache_coordinator_primary 1"), "{body}");
    assert!(has(&format!("opticache_coordinator_epoch {epoch}")), "{body}");
    let up_lines = body
        .lines()
        .filter(|l| l.starts_with("opticache_coordinator_node_state{") && l.contains("state=\"up\"} 1"))
        .count();
    assert_eq!(up_lines, 3, "three nodes up:\n{body}");
}
