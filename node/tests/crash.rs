//! SIGKILL during a write load, against the real `opticache-node` binary
//! (harness: `common/mod.rs`).
//!
//! 16 concurrent writers put distinct keys with version 0 (the node stamps
//! them), each value naming its key and a counter, and record every write
//! the node acknowledged. Once at least 2000 writes are acknowledged, with
//! writes still in flight, the node is killed with SIGKILL and restarted on
//! the same data dir. Checked: every acknowledged write is there with exactly
//! its acknowledged version and value (durability is `sync`: an
//! acknowledgement is a promise that the write survives a crash), the kill
//! did land among in-flight writes, and Stats says the restart was not clean.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use opticache_proto::node::v1 as pb;
use pb::node_client::NodeClient;
use tonic::transport::Channel;

const WRITERS: usize = 16;
/// Acknowledged writes before the kill.
const ACKS_BEFORE_KILL: u64 = 2_000;

/// One write the node acknowledged.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    version: u64,
    value: Bytes,
}

/// What the writers share with the test.
#[derive(Debug, Default)]
struct Load {
    acks: Mutex<Vec<Ack>>,
    acked: AtomicU64,
    /// Set just before the kill: a write begun before it and failing after it was in flight.
    killing: AtomicBool,
    failed_in_flight: AtomicU64,
}

/// The value of writer `writer`'s `n`th key: it names the key and the
/// counter, and its length varies (up to ~1 KiB) so records differ in size.
fn value_of(key: &str, n: u64) -> Bytes {
    let mut value = format!("{key}|{n}|").into_bytes();
    value.resize(value.len() + (n as usize * 37) % 1_000, b'a' + (n % 26) as u8);
    Bytes::from(value)
}

/// Puts distinct keys until a put fails (the node died); every acknowledged one is recorded.
async fn writer(mut client: NodeClient<Channel>, writer: usize, load: Arc<Load>) -> u64 {
    for n in 0.. {
        let key = format!("w{writer:02}-{n:07}");
        let value = value_of(&key, n);
        let begun_before_kill = !load.killing.load(Ordering::SeqCst);
        match client.put(put_req(key.clone(), value.clone(), 0)).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                assert!(answer.applied, "{key}: a fresh key was not applied: {answer:?}");
                load.acks.lock().unwrap().push(Ack { key, version: answer.version, value });
                load.acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                if begun_before_kill {
                    load.failed_in_flight.fetch_add(1, Ordering::SeqCst);
                }
                return n;
            }
        }
    }
    unreachable!("a writer stops at its first failed put")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_during_a_write_load() {
    let home = NodeHome::new(&Settings::shards(2));
    let mut node = home.start_serving().await;
    let client = node.client().await;
    let load = Arc::new(Load::default());
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(client.clone(), w, load.clone()))).collect();

    wait_for("2000 acknowledged writes", async || {
        (load.acked.load(Ordering::SeqCst) >= ACKS_BEFORE_KILL).then_some(())
    })
    .await;
    load.killing.store(true, Ordering::SeqCst);
    node.kill9_and_wait().await;
    let mut attempted = 0;
    for w in writers {
        attempted += w.await.expect("a writer task");
    }
    drop(client);

    let acks = load.acks.lock().unwrap().clone();
    assert!(acks.len() as u64 >= ACKS_BEFORE_KILL, "{} acknowledged", acks.len());
    assert!(
        load.failed_in_flight.load(Ordering::SeqCst) >= 1,
        "no write was in flight when the node was killed (attempted {attempted}, acknowledged {})",
        acks.len()
    );

    let node = home.start_serving().await;
    let mut client = node.client().await;
    let keys: Vec<String> = acks.iter().map(|a| a.key.clone()).collect();
    let found = batch_get_all(&mut client, &keys, 1_000).await;
    let mut lost = Vec::new();
    for (ack, got) in acks.iter().zip(&found) {
        if !got.found || got.version != ack.version || got.value != ack.value {
            lost.push(format!(
                "{}: acknowledged version {}, found={} version {} value ok={}",
                ack.key,
                ack.version,
                got.found,
                got.version,
                got.value == ack.value
            ));
        }
    }
    if !lost.is_empty() {
        node.fail(&format!(
            "{} of {} acknowledged writes lost or changed: {:#?}",
            lost.len(),
            acks.len(),
            &lost[..lost.len().min(20)]
        ));
    }

    let stats = shard_stats(&mut client).await;
    assert!(stats.iter().any(|s| !s.recovered_clean), "a SIGKILL left every shard clean: {stats:?}");
    let keys_held: u64 = stats.iter().map(|s| s.keys).sum();
    assert!(keys_held >= acks.len() as u64, "{keys_held} keys held, {} acknowledged", acks.len());
}
