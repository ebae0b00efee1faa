//! Every RPC of the node API end to end, against the real `opticache-node`
//! binary over gRPC on 127.0.0.1 (harness: `common/mod.rs`).
//!
//! - Put/Get: a version of 0 is stamped by the node (clock layout of
//!   `clock.rs`), a given version is kept, a put that is not newer returns
//!   `applied=false` with the stored version and leaves the value; a miss is
//!   `found=false` with status OK;
//! - Update: NOT_FOUND, FAILED_PRECONDITION, ABORTED (not newer), success
//!   with `expected_version` 0 and with the right version;
//! - Delete: `deleted` true/false, a tombstone blocks an older put, an older
//!   delete changes nothing;
//! - an expiry in the past is never returned (Get, BatchGet, GetStream, Update);
//! - BatchPut/BatchGet answer in request order across two shards;
//! - PutStream/GetStream round trip a value larger than the node's gRPC
//!   message limit, every byte checked; an empty value on every path;
//! - Heartbeat, Stats, ListKeys (paging every shard), server reflection and
//!   the Prometheus endpoint.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use futures_lite::StreamExt;
use opticache_common::version::{ORIGIN_NODE as NODE_ORIGIN, VERSION_MS_SHIFT, VERSION_ORIGIN_MASK};
use opticache_proto::node::v1 as pb;
use pb::node_client::NodeClient;
use tonic::transport::Channel;
use tonic::Code;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn ns_put(namespace: &str, key: &str, value: &str, version: u64) -> pb::PutRequest {
    pb::PutRequest {
        namespace: Bytes::copy_from_slice(namespace.as_bytes()),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        version,
        expiry_unix_ms: 0,
        epoch: 0,
    }
}

fn ns_get(namespace: &str, key: &str) -> pb::GetRequest {
    pb::GetRequest {
        namespace: Bytes::copy_from_slice(namespace.as_bytes()),
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

#[tokio::test]
async fn put_and_get_stamp_keep_and_refuse_stale_versions() {
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;

    // Version 0: the node stamps one from its clock (ms | counter | origin).
    let before_ms = unix_ms();
    let stamped = put(&mut client, "stamped", "first", 0).await;
    let stamped_again = put(&mut client, "stamped", "second", 0).await;
    let after_ms = unix_ms();
    assert_eq!(stamped & VERSION_ORIGIN_MASK, NODE_ORIGIN, "node-stamped versions carry the node's origin");
    let stamped_ms = stamped >> VERSION_MS_SHIFT;
    assert!(
        (before_ms..=after_ms).contains(&stamped_ms),
        "stamped at {stamped_ms} ms, outside {before_ms}..={after_ms}"
    );
    assert!(stamped_again > stamped, "a later stamp is newer: {stamped_again} <= {stamped}");
    let got = get(&mut client, "stamped").await;
    assert!(got.found);
    assert_eq!((got.value.as_ref(), got.version, got.expiry_unix_ms), (&b"second"[..], stamped_again, 0));

    // A given version is kept as it is.
    assert_eq!(put(&mut client, "given", "v5000", 5_000).await, 5_000);
    let got = get(&mut client, "given").await;
    assert_eq!((got.found, got.value.as_ref(), got.version), (true, &b"v5000"[..], 5_000));

    // Older and equal versions are not applied and name the stored version.
    for stale in [4_000, 5_000] {
        let answer = client.put(put_req("given", "stale", stale)).await.expect("stale put").into_inner();
        assert_eq!(answer, pb::PutResponse { applied: false, version: 5_000 }, "put at {stale} over 5000");
    }
    let got = get(&mut client, "given").await;
    assert_eq!((got.value.as_ref(), got.version), (&b"v5000"[..], 5_000), "a stale put left the value");

    // A newer given version replaces it.
    assert_eq!(put(&mut client, "given", "v6000", 6_000).await, 6_000);
    let got = get(&mut client, "given").await;
    assert_eq!((got.value.as_ref(), got.version), (&b"v6000"[..], 6_000));

    // Namespaces separate keys: the same key elsewhere is another value.
    let answer = client.put(ns_put("model-a", "given", "in a", 10)).await.unwrap().into_inner();
    assert_eq!(answer, pb::PutResponse { applied: true, version: 10 });
    let in_a = client.get(ns_get("model-a", "given")).await.unwrap().into_inner();
    assert_eq!((in_a.value.as_ref(), in_a.version), (&b"in a"[..], 10));
    assert_eq!(get(&mut client, "given").await.version, 6_000, "the default namespace's value is untouched");
}

#[tokio::test]
async fn get_of_a_missing_key_is_found_false_with_status_ok() {
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    put(&mut client, "present", "x", 0).await;
    let missing = client.get(get_req("absent")).await.expect("a miss is status OK").into_inner();
    assert_eq!(missing, pb::GetResponse { found: false, value: Bytes::new(), version: 0, expiry_unix_ms: 0 });
    let other_ns = client.get(ns_get("elsewhere", "present")).await.expect("a miss is status OK").into_inner();
    assert!(!other_ns.found, "a key is not found in another namespace");
}

#[tokio::test]
async fn update_checks_presence_expected_version_and_newness() {
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let update = |key: &str, value: &str, version: u64, expected_version: u64| pb::UpdateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        version,
        expected_version,
        ..Default::default()
    };

    expect_code(client.update(update("missing", "v", 0, 0)).await, Code::NotFound, "update of a missing key");
    assert!(!get(&mut client, "missing").await.found, "a failed update created nothing");

    put(&mut client, "k", "v100", 100).await;
    expect_code(client.update(update("k", "wrong", 0, 99)).await, Code::FailedPrecondition, "wrong expected_version");
    let got = get(&mut client, "k").await;
    assert_eq!((got.value.as_ref(), got.version), (&b"v100"[..], 100), "a refused update left the value");

    // A given version that is not newer than the stored one: ABORTED.
    expect_code(client.update(update("k", "older", 50, 100)).await, Code::Aborted, "update at an older version");
    assert_eq!(get(&mut client, "k").await.version, 100);

    // expected_version 0: any live version; the node stamps the new one.
    let answer = client.update(update("k", "any", 0, 0)).await.expect("update with expected 0").into_inner();
    assert_eq!(answer.previous_version, 100);
    assert_eq!(answer.version & VERSION_ORIGIN_MASK, NODE_ORIGIN, "a stamped version");
    let got = get(&mut client, "k").await;
    assert_eq!((got.value.as_ref(), got.version), (&b"any"[..], answer.version));

    // The right expected version, with a given new version.
    let right = answer.version;
    let answer = client.update(update("k", "right", right + 16, right)).await.expect("update, right version");
    assert_eq!(answer.into_inner(), pb::UpdateResponse { version: right + 16, previous_version: right });
    let got = get(&mut client, "k").await;
    assert_eq!((got.value.as_ref(), got.version), (&b"right"[..], right + 16));

    // A deleted key is missing for Update too.
    client.delete(pb::DeleteRequest { key: Bytes::from_static(b"k"), ..Default::default() }).await.unwrap();
    expect_code(client.update(update("k", "again", 0, 0)).await, Code::NotFound, "update of a deleted key");
}

#[tokio::test]
async fn delete_reports_what_it_deleted_and_its_tombstone_blocks_older_writes() {
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let delete = |key: &str, version: u64| pb::DeleteRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        version,
        ..Default::default()
    };

    let absent = client.delete(delete("never-written", 0)).await.expect("delete of an absent key").into_inner();
    assert!(!absent.deleted && absent.applied, "absent key: {absent:?}");

    put(&mut client, "k", "v1000", 1_000).await;
    let deleted = client.delete(delete("k", 9_000)).await.expect("delete").into_inner();
    assert_eq!(deleted, pb::DeleteResponse { deleted: true, applied: true, version: 9_000 });
    assert!(!get(&mut client, "k").await.found, "a deleted key is not found");

    let again = client.delete(delete("k", 9_500)).await.expect("second delete").into_inner();
    assert_eq!(again, pb::DeleteResponse { deleted: false, applied: true, version: 9_500 });

    // The tombstone (now at 9500) blocks a put that is older.
    let blocked = client.put(put_req("k", "late", 8_000)).await.expect("older put").into_inner();
    assert_eq!(blocked, pb::PutResponse { applied: false, version: 9_500 });
    assert!(!get(&mut client, "k").await.found, "an older put did not resurrect the key");

    // An older delete changes nothing either.
    let older = client.delete(delete("k", 9_100)).await.expect("older delete").into_inner();
    assert_eq!(older, pb::DeleteResponse { deleted: false, applied: false, version: 9_500 });

    // A newer put wins over the tombstone.
    assert_eq!(put(&mut client, "k", "back", 10_000).await, 10_000);
    let got = get(&mut client, "k").await;
    assert_eq!((got.found, got.value.as_ref(), got.version), (true, &b"back"[..], 10_000));

    // A stamped delete of a live key: deleted, with a stamped version.
    let stamped = client.delete(delete("k", 0)).await.expect("stamped delete").into_inner();
    assert!(stamped.deleted && stamped.applied && stamped.version > 10_000, "{stamped:?}");
    assert_eq!(stamped.version & VERSION_ORIGIN_MASK, NODE_ORIGIN);
    assert!(!get(&mut client, "k").await.found);
}

#[tokio::test]
async fn a_value_whose_expiry_has_passed_is_never_returned() {
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let past = unix_ms() - 60_000;
    let future = unix_ms() + 3_600_000;
    let with_expiry = |key: &str, expiry_unix_ms: u64| pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"value"),
        expiry_unix_ms,
        ..Default::default()
    };

    let expired = client.put(with_expiry("expired", past)).await.expect("put with a past expiry").into_inner();
    assert!(expired.applied);
    client.put(with_expiry("fresh", future)).await.expect("put with a future expiry");

    assert!(!get(&mut client, "expired").await.found, "Get returned an expired value");
    let fresh = get(&mut client, "fresh").await;
    assert_eq!((fresh.found, fresh.expiry_unix_ms), (true, future), "a future expiry is kept and returned");

    let batch = batch_get_all(&mut client, &["expired".to_string(), "fresh".to_string()], 2).await;
    assert_eq!((batch[0].found, batch[1].found), (false, true), "BatchGet: {batch:?}");

    expect_code(client.get_stream(get_req("expired")).await, Code::NotFound, "GetStream of an expired value");
    let update = pb::UpdateRequest {
        key: Bytes::from_static(b"expired"),
        value: Bytes::from_static(b"u"),
        ..Default::default()
    };
    expect_code(client.update(update).await, Code::NotFound, "Update of an expired value");

    // A streamed value with a past expiry is not returned either.
    let chunk = pb::PutChunk {
        key: Bytes::from_static(b"expired-stream"),
        total_size: 3,
        expiry_unix_ms: past,
        data: Bytes::from_static(b"abc"),
        ..Default::default()
    };
    client.put_stream(futures_lite::stream::iter(vec![chunk])).await.expect("put stream with a past expiry");
    expect_code(client.get_stream(get_req("expired-stream")).await, Code::NotFound, "GetStream of an expired stream");
    assert!(!get(&mut client, "expired-stream").await.found);
}

#[tokio::test]
async fn batches_answer_in_request_order_across_shards() {
    let home = NodeHome::new(&Settings::shards(2));
    let node = home.start_serving().await;
    let mut client = node.client().await;

    // One key already stored at a high version: its batch entry is stale.
    put(&mut client, "key-07", "kept", 1_000_000).await;
    let entries: Vec<pb::PutRequest> =
        (0..40u64).map(|i| put_req(format!("key-{i:02}"), format!("value-{i}"), 1_000 + (i * 37) % 101)).collect();
    let answer = client.batch_put(pb::BatchPutRequest { entries: entries.clone() }).await.expect("batch put");
    let results = answer.into_inner().results;
    assert_eq!(results.len(), 40);
    for (i, (entry, result)) in entries.iter().zip(&results).enumerate() {
        if i == 7 {
            assert_eq!(*result, pb::PutResponse { applied: false, version: 1_000_000 }, "the stale entry");
        } else {
            assert_eq!(*result, pb::PutResponse { applied: true, version: entry.version }, "entry {i}");
        }
    }

    // Reads in another order, with misses in between.
    let mut keys: Vec<String> = (0..40).rev().map(|i| format!("key-{i:02}")).collect();
    keys.insert(5, "missing-a".to_string());
    keys.push("missing-b".to_string());
    let results = batch_get_all(&mut client, &keys, keys.len()).await;
    for (key, result) in keys.iter().zip(&results) {
        match key.strip_prefix("key-").map(|n| n.parse::<u64>().unwrap()) {
            None => assert!(!result.found, "{key}: {result:?}"),
            Some(7) => assert_eq!((result.value.as_ref(), result.version), (&b"kept"[..], 1_000_000)),
            Some(i) => {
                assert!(result.found, "{key}");
                assert_eq!(result.value, Bytes::from(format!("value-{i}")), "{key}");
                assert_eq!(result.version, 1_000 + (i * 37) % 101, "{key}");
            }
        }
    }

    // The keys really are spread over both shards.
    let stats = shard_stats(&mut client).await;
    assert_eq!(stats.iter().map(|s| s.keys).sum::<u64>(), 40);
    assert!(stats.iter().all(|s| s.keys > 0), "both shards hold keys: {stats:?}");
}

#[tokio::test]
async fn a_streamed_value_larger_than_the_message_limit_round_trips() {
    // max_value_bytes 64 MiB: the node takes messages of at most
    // max(64 MiB, 64 MiB) + 2 MiB = 66 MiB, and the value is 70 MiB.
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    const TOTAL: u64 = 70 * MIB;
    const SEED: u64 = 1;

    let answer = client.put_stream(pattern_put_chunks("large", SEED, TOTAL)).await.expect("put stream").into_inner();
    assert!(answer.applied, "{answer:?}");
    assert_eq!(answer.version & VERSION_ORIGIN_MASK, NODE_ORIGIN, "a stamped version");
    let chunks = check_pattern_stream(&mut client, "large", SEED, TOTAL, answer.version).await;
    assert!(chunks >= 70, "chunks of at most 1 MiB: {chunks}");

    // A unary Get of it: the value is over max_value_bytes (64 MiB), which
    // the engine checks before assembling it: RESOURCE_EXHAUSTED.
    expect_code(client.get(get_req("large")).await, Code::ResourceExhausted, "unary Get of a 70 MiB streamed value");

    // A given version is kept on the stream path too, and replaces the value.
    let second: Vec<pb::PutChunk> = pattern_put_chunks("large", 2, 3 * MIB + 5)
        .map(|mut c| {
            if !c.key.is_empty() {
                c.version = answer.version + 16;
            }
            c
        })
        .collect()
        .await;
    let replaced = client.put_stream(futures_lite::stream::iter(second)).await.expect("second stream").into_inner();
    assert_eq!(replaced, pb::PutResponse { applied: true, version: answer.version + 16 });
    check_pattern_stream(&mut client, "large", 2, 3 * MIB + 5, answer.version + 16).await;
    let got = get(&mut client, "large").await;
    assert_eq!((got.value.len() as u64, got.version), (3 * MIB + 5, answer.version + 16), "now small enough for Get");
}

#[tokio::test]
async fn an_empty_value_is_a_value_on_every_path() {
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;

    let version = put(&mut client, "unary", Bytes::new(), 0).await;
    let got = get(&mut client, "unary").await;
    assert_eq!((got.found, got.value.len(), got.version), (true, 0, version), "an empty value is found");

    let batch = client.batch_put(pb::BatchPutRequest { entries: vec![put_req("batched", Bytes::new(), 77)] }).await;
    assert_eq!(batch.unwrap().into_inner().results, vec![pb::PutResponse { applied: true, version: 77 }]);
    let results = batch_get_all(&mut client, &["batched".to_string()], 1).await;
    assert_eq!((results[0].found, results[0].value.len(), results[0].version), (true, 0, 77));

    let chunk = pb::PutChunk { key: Bytes::from_static(b"streamed"), version: 88, ..Default::default() };
    let answer = client.put_stream(futures_lite::stream::iter(vec![chunk])).await.expect("empty stream value");
    assert_eq!(answer.into_inner(), pb::PutResponse { applied: true, version: 88 });
    let chunks: Vec<pb::GetChunk> =
        client.get_stream(get_req("streamed")).await.expect("get stream").into_inner().try_collect().await.unwrap();
    assert_eq!(chunks.len(), 1, "an empty value is one chunk carrying the head: {chunks:?}");
    assert_eq!((chunks[0].version, chunks[0].total_size, chunks[0].data.len()), (88, 0, 0));
    let got = get(&mut client, "streamed").await;
    assert_eq!((got.found, got.value.len(), got.version), (true, 0, 88));
}

#[tokio::test]
async fn heartbeat_reports_identity_state_keys_and_the_highest_epoch() {
    let home = NodeHome::new(&Settings::shards(2));
    let mut node = home.start_serving().await;
    let mut client = node.client().await;
    for i in 0..5 {
        put(&mut client, &format!("k{i}"), "v", 0).await;
    }

    let beat = |epoch| pb::HeartbeatRequest { epoch };
    let first = client.heartbeat(beat(5)).await.expect("heartbeat").into_inner();
    assert_eq!(first.node_id.len(), 32, "node_id: {:?}", first.node_id);
    assert!(first.node_id.bytes().all(|b| b.is_ascii_hexdigit()), "node_id is hex: {:?}", first.node_id);
    assert_eq!(first.shards, 2);
    assert_eq!(first.state(), pb::ServingState::Serving);
    assert_eq!(first.keys, 5);
    assert!(first.disk_bytes > 0, "disk_bytes: {}", first.disk_bytes);
    assert_eq!(first.epoch, 5);
    assert_eq!(client.heartbeat(beat(3)).await.unwrap().into_inner().epoch, 5, "a lower epoch does not lower it");
    assert_eq!(client.heartbeat(beat(0)).await.unwrap().into_inner().epoch, 5);
    let later = client.heartbeat(beat(7)).await.unwrap().into_inner();
    assert_eq!(later.epoch, 7, "a higher epoch raises it");
    assert!(later.uptime_ms >= first.uptime_ms, "uptime goes forward");

    // Later heartbeats answer from the figures of the previous refresh, so
    // new keys show up within a heartbeat or two, not at once.
    for i in 5..8 {
        put(&mut client, &format!("k{i}"), "v", 0).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let keys = client.heartbeat(beat(7)).await.unwrap().into_inner().keys;
        if keys == 8 {
            break;
        }
        // A refresh may read one shard before the new puts and one after.
        assert!((5..8).contains(&keys), "keys between the old and the new count, not {keys}");
        assert!(std::time::Instant::now() < deadline, "heartbeats still report {keys} keys");
        tokio::task::yield_now().await;
    }

    // Stats names the same node.
    let stats = client.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.node_id, first.node_id);
    assert_eq!(stats.shards.len(), 2);

    // The id belongs to the data dir: the same after a restart.
    drop(client);
    node.terminate_and_expect_clean_exit().await;
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let after = client.heartbeat(beat(1)).await.expect("heartbeat after restart").into_inner();
    assert_eq!(after.node_id, first.node_id, "node_id is stable across a restart");
    assert_eq!((after.shards, after.state(), after.keys), (2, pb::ServingState::Serving, 8));
}

#[tokio::test]
async fn stats_count_every_write_per_shard() {
    let home = NodeHome::new(&Settings::shards(2));
    let node = home.start_serving().await;
    let mut client = node.client().await;

    for i in 0..30 {
        put(&mut client, &format!("unary-{i}"), format!("value-{i}"), 100).await;
    }
    let writes: Vec<(String, Bytes)> = (0..50).map(|i| (format!("batch-{i}"), Bytes::from(vec![b'b'; 10]))).collect();
    batch_put_all(&mut client, &writes, 50).await;
    for i in 0..3 {
        let stale = client.put(put_req(format!("unary-{i}"), "old", 50)).await.unwrap().into_inner();
        assert!(!stale.applied);
    }
    let deleted = client.delete(pb::DeleteRequest { key: Bytes::from_static(b"batch-0"), ..Default::default() });
    assert!(deleted.await.unwrap().into_inner().deleted);
    for i in 0..4 {
        get(&mut client, &format!("unary-{i}")).await;
    }
    get(&mut client, "missing").await;

    let stats = shard_stats(&mut client).await;
    let sum = |f: fn(&pb::ShardStats) -> u64| stats.iter().map(f).sum::<u64>();
    assert_eq!(sum(|s| s.puts), 30 + 50 + 3, "puts (applied and stale) over the shards: {stats:?}");
    assert_eq!(sum(|s| s.stale_writes), 3);
    assert_eq!(sum(|s| s.deletes), 1);
    assert_eq!(sum(|s| s.keys), 80, "keys, the tombstone included");
    let unary_bytes: u64 = (0..30).map(|i| format!("value-{i}").len() as u64).sum();
    assert_eq!(sum(|s| s.put_bytes), unary_bytes + 50 * 10, "value bytes of applied puts");
    assert_eq!((sum(|s| s.gets), sum(|s| s.get_hits)), (5, 4));
    assert!(stats.iter().all(|s| s.puts > 0), "both shards took puts: {stats:?}");
    assert!(stats.iter().all(|s| s.segments >= 1 && s.disk_bytes > 0 && s.cache_budget_bytes == 16 * MIB));
}

/// Every page of ListKeys over `shard` with `limit`, checking each page.
async fn list_shard(client: &mut NodeClient<Channel>, shard: u32, limit: u32) -> (Vec<pb::ListedKey>, usize) {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut pages = 0;
    loop {
        let request = pb::ListKeysRequest { shard, start_fingerprint: start, end_fingerprint: 0, limit };
        let page = client.list_keys(request).await.expect("list keys").into_inner();
        pages += 1;
        assert!(page.entries.len() <= limit as usize, "a page of {} over the limit {limit}", page.entries.len());
        entries.extend(page.entries);
        if page.done {
            return (entries, pages);
        }
        assert!(page.next_fingerprint > start, "paging goes forward: {} after {start}", page.next_fingerprint);
        start = page.next_fingerprint;
        assert!(pages < 10_000, "ListKeys never said done");
    }
}

#[tokio::test]
async fn list_keys_pages_through_every_shard_and_refuses_bad_requests() {
    let home = NodeHome::new(&Settings::shards(2));
    let node = home.start_serving().await;
    let mut client = node.client().await;

    // (namespace, key) → (version, tombstone)
    let mut expected = BTreeMap::new();
    for i in 0..25u64 {
        let namespace = if i % 3 == 0 { "ns-a" } else { "" };
        let key = format!("key-{i}");
        client.put(ns_put(namespace, &key, "v", 100 + i)).await.unwrap();
        expected.insert((namespace.to_string(), key), (100 + i, false));
    }
    for i in [2u64, 9, 14, 21] {
        let namespace = if i % 3 == 0 { "ns-a" } else { "" };
        let key = format!("key-{i}");
        let request = pb::DeleteRequest {
            namespace: Bytes::copy_from_slice(namespace.as_bytes()),
            key: Bytes::copy_from_slice(key.as_bytes()),
            version: 1_000 + i,
            epoch: 0,
        };
        assert!(client.delete(request).await.unwrap().into_inner().deleted);
        expected.insert((namespace.to_string(), key), (1_000 + i, true));
    }

    let mut listed = BTreeMap::new();
    for shard in 0..2 {
        let (entries, pages) = list_shard(&mut client, shard, 3).await;
        assert!(!entries.is_empty() && pages > 1, "shard {shard}: {} entries in {pages} pages", entries.len());
        for e in entries {
            let namespace = String::from_utf8(e.namespace.to_vec()).unwrap();
            let key = String::from_utf8(e.key.to_vec()).unwrap();
            let previous = listed.insert((namespace, key), (e.version, e.tombstone));
            assert!(previous.is_none(), "listed twice: {:?} {:?}", e.namespace, e.key);
        }
    }
    assert_eq!(listed, expected, "every key exactly once, with its version and tombstone flag");
    // The largest page is allowed.
    let (all, pages) = list_shard(&mut client, 0, 4_096).await;
    assert_eq!(pages, 1, "one page of 4096 holds a shard of ~13 keys ({} listed)", all.len());

    let bad = |shard, limit| pb::ListKeysRequest { shard, start_fingerprint: 0, end_fingerprint: 0, limit };
    expect_code(client.list_keys(bad(2, 3)).await, Code::InvalidArgument, "shard 2 of 2");
    expect_code(client.list_keys(bad(0, 0)).await, Code::InvalidArgument, "limit 0");
    expect_code(client.list_keys(bad(0, 4_097)).await, Code::InvalidArgument, "limit 4097");
}

#[tokio::test]
async fn server_reflection_lists_the_node_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut reflection = ServerReflectionClient::new(node.channel().await.expect("connect"));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_lite::stream::iter(vec![request]))
        .await
        .expect("reflection call")
        .into_inner();
    let answer = answers.next().await.expect("one answer").expect("reflection answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"opticache.node.v1.Node"), "services: {names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "services: {names:?}");
}

/// `GET /metrics` over plain HTTP/1.1: (status line, body).
fn scrape(address: std::net::SocketAddr) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the metrics response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[tokio::test]
async fn the_metrics_endpoint_serves_shard_and_rpc_metrics() {
    let home = NodeHome::new(&Settings::shards(2));
    let node = home.start_serving().await;
    let mut client = node.client().await;
    for i in 0..12 {
        put(&mut client, &format!("k{i}"), "v", 0).await;
    }
    get(&mut client, "k1").await;
    let stats = shard_stats(&mut client).await;

    let address = node.metrics_address();
    let (status, body) = tokio::task::spawn_blocking(move || scrape(address)).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "status line: {status}");
    for (shard, s) in stats.iter().enumerate() {
        let line = format!("opticache_shard_puts_total{{shard=\"{shard}\"}} {}", s.puts);
        assert!(body.lines().any(|l| l == line), "no `{line}` in:\n{body}");
    }
    assert!(body.contains("opticache_shard_puts_total{shard=\"0\"}"), "{body}");
    assert!(body.contains("opticache_node_rpc_latency_seconds"), "{body}");
    assert!(body.contains("opticache_node_rpc_latency_seconds_count{rpc=\"Put\"} 12"), "12 puts observed:\n{body}");
    assert!(body.lines().any(|l| l == "opticache_node_serving{state=\"serving\"} 1"), "{body}");
    // Every put and get went through its shard's queue: each shard's call
    // histogram counts at least those (stats calls come on top).
    for (shard, s) in stats.iter().enumerate() {
        let prefix = format!("opticache_node_shard_call_latency_seconds_count{{shard=\"{shard}\"}} ");
        let count: u64 = body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{body}"));
        assert!(count >= s.puts + s.gets, "shard {shard}: {count} calls < {} puts + {} gets", s.puts, s.gets);
    }
}

#[tokio::test]
async fn writes_from_an_older_coordinator_epoch_are_refused_and_change_nothing() {
    let home = NodeHome::new(&Settings::default());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let seen = client.heartbeat(pb::HeartbeatRequest { epoch: 5 }).await.unwrap().into_inner().epoch;
    assert_eq!(seen, 5);

    let stale = pb::PutRequest { epoch: 4, ..put_req("fenced", "old", 0) };
    expect_code(client.put(stale).await, Code::FailedPrecondition, "put at epoch 4 after epoch 5");
    assert!(!get(&mut client, "fenced").await.found, "a refused write stored nothing");
    let stale_delete = pb::DeleteRequest { key: "fenced".into(), epoch: 1, ..Default::default() };
    expect_code(client.delete(stale_delete).await, Code::FailedPrecondition, "delete at epoch 1");
    let stale_batch = pb::BatchPutRequest {
        entries: vec![put_req("b1", "v", 0), pb::PutRequest { epoch: 3, ..put_req("b2", "v", 0) }],
    };
    expect_code(client.batch_put(stale_batch).await, Code::FailedPrecondition, "batch with one stale entry");
    assert!(!get(&mut client, "b1").await.found, "no entry of a refused batch was written");

    let current = pb::PutRequest { epoch: 5, ..put_req("fenced", "current", 0) };
    assert!(client.put(current).await.unwrap().into_inner().applied);
    let newer = pb::PutRequest { epoch: 6, ..put_req("fenced", "newer", 0) };
    assert!(client.put(newer).await.unwrap().into_inner().applied);
    assert_eq!(client.heartbeat(pb::HeartbeatRequest { epoch: 0 }).await.unwrap().into_inner().epoch, 6);
    let unfenced = put_req("direct", "v", 0);
    assert!(client.put(unfenced).await.unwrap().into_inner().applied, "epoch 0: a node-direct client");
    assert_eq!(get(&mut client, "fenced").await.value, "newer");
}

#[tokio::test]
async fn a_key_whose_newer_write_was_refused_for_space_is_not_served_stale() {
    let settings = Settings { segment_bytes: MIB, shard_disk_budget_bytes: 2 * MIB, ..Settings::default() };
    let home = NodeHome::new(&settings);
    let node = home.start_serving().await;
    let mut client = node.client().await;
    put(&mut client, "refused", "old", 10).await;
    put(&mut client, "kept", "kept", 10).await;

    // Fill the budget until the node refuses for space.
    let filler = Bytes::from(vec![b'f'; 64 * 1024]);
    let mut filled = false;
    for i in 0..200 {
        match client.put(put_req(format!("filler-{i}"), filler.clone(), 10)).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                filled = true;
                break;
            }
        }
    }
    assert!(filled, "2 MiB of budget took 200 values of 64 KiB");

    // A newer write of "refused" is refused: the node's copy is now stale.
    let status = client.put(put_req("refused", filler.clone(), 20)).await.expect_err("over the budget");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    let status = client.get(get_req("refused")).await.expect_err("a stale copy must not be served");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("refused a newer write"), "{status}");
    let batch = pb::BatchGetRequest { keys: vec![get_req("kept"), get_req("refused")] };
    expect_code(client.batch_get(batch).await, Code::Unavailable, "BatchGet holding the refused key");
    expect_code(client.get_stream(get_req("refused")).await, Code::Unavailable, "GetStream of the refused key");
    let update = pb::UpdateRequest {
        key: Bytes::from_static(b"refused"),
        value: Bytes::from_static(b"cas"),
        version: 30,
        ..Default::default()
    };
    expect_code(client.update(update).await, Code::Unavailable, "compare-and-set on the stale copy");

    // Every other key still reads: a full node keeps serving reads.
    let kept = get(&mut client, "kept").await;
    assert!(kept.found && kept.value == Bytes::from_static(b"kept"), "{kept:?}");
}
