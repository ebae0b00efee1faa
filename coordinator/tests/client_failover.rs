//! The Rust client library (`opticache-client`) against the real cluster:
//! configured with both coordinators, it keeps putting and getting while the
//! primary coordinator is SIGKILLed, without the caller seeing an error, and
//! every value it was told was written reads back.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use opticache_client::{Client, ClientConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_over_to_the_standby_when_the_primary_dies() {
    let mut cluster = Cluster::start().await;
    let (primary, _) = cluster.wait_ready().await;
    // The primary first, as a user would list them.
    let standby = 1 - primary;
    let addresses =
        vec![cluster.coordinator_addresses[primary].clone(), cluster.coordinator_addresses[standby].clone()];
    let client = Client::connect(ClientConfig { timeout_ms: 1_000, ..ClientConfig::new(addresses) })
        .await
        .expect("the client connects");

    let mut acked = Vec::new();
    for i in 0..200u64 {
        if i == 50 {
            cluster.coordinators[primary].signal(libc::SIGKILL);
        }
        let key = Bytes::from(format!("c{i}"));
        let value = value_of(i, 256);
        let version = client
            .put("client", key.clone(), value.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("put {i} failed through fail-over: {e}\n{}", cluster.logs()));
        acked.push((key, version, value));
        if i % 10 == 0 {
            let got = client.get("client", format!("c{i}")).await.expect("get through fail-over");
            assert_eq!(got.map(|v| v.version), Some(version), "key c{i} right after its write");
        }
    }
    let _ = cluster.coordinators[primary].wait_exit().await;
    for (key, version, value) in &acked {
        let got = client.get("client", key.clone()).await.expect("get").expect("every acknowledged put is there");
        assert_eq!((got.version, &got.value), (*version, value), "key {key:?}");
    }
    // The survivor takes over within the failover time; the client reaches it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.cluster_status().await.expect("status from the survivor");
        if status.role == opticache_client::Role::Primary {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the standby never took over: {status:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
