//! The public API (`opticache.v1`, brief/api.md) end to end: every RPC and
//! every row of the status table, through real coordinators in front of
//! three real nodes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use opticache_proto::v1 as pb;
use tonic::Code;

/// Every RPC's success path and its answers: versions, misses, update's
/// compare-and-set, delete, TTL, batches in request order, streams byte for
/// byte, and ClusterStatus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_through_a_coordinator() {
    let cluster = Cluster::start().await;
    let (primary, epoch) = cluster.agreed_primary().await.expect("a primary after start");
    let standby = 1 - primary;
    let mut c = cluster.client(primary);
    let mut s = cluster.client(standby);

    // ClusterStatus: the roles, the epoch, and the three nodes.
    let status = cluster.status(primary).await.expect("ClusterStatus");
    assert_eq!(status.role(), pb::Role::Primary);
    assert!(status.epoch >= 1, "an elected primary has an epoch: {}", status.epoch);
    let other = cluster.status(standby).await.expect("ClusterStatus at the standby");
    assert_eq!(other.role(), pb::Role::Standby);
    assert_eq!(other.epoch, epoch, "the standby knows the primary's epoch");
    for st in [&status, &other] {
        let addresses: HashSet<&str> = st.nodes.iter().map(|n| n.address.as_str()).collect();
        let expected: HashSet<&str> = cluster.node_addresses.iter().map(String::as_str).collect();
        assert_eq!(addresses, expected, "ClusterStatus lists exactly the configured nodes");
        for n in &st.nodes {
            assert_eq!(n.state(), pb::NodeState::Up, "{n:?}");
            assert_eq!(n.shards, 1, "shards: 1 in the config: {n:?}");
        }
    }

    // WriteCache / ReadCache: versions increase per key; both coordinators
    // serve the data path and agree.
    let v1 = write(&mut c, "ns", b"k1", Bytes::from_static(b"one")).await;
    let v2 = write(&mut c, "ns", b"k1", Bytes::from_static(b"two")).await;
    assert!(v2 > v1, "versions increase per key: {v1} then {v2}");
    let v3 = write(&mut s, "ns", b"k1", Bytes::from_static(b"three")).await;
    assert!(v3 > v2, "through the other coordinator too: {v2} then {v3}");
    for client in [&mut c, &mut s] {
        let got = read(client, "ns", b"k1").await;
        assert_eq!((got.found, &got.value[..], got.version), (true, &b"three"[..], v3));
    }
    // Namespaces are separate key spaces.
    let other_ns = write(&mut c, "ns2", b"k1", Bytes::from_static(b"elsewhere")).await;
    assert_eq!(read(&mut c, "ns", b"k1").await.value, Bytes::from_static(b"three"));
    let got = read(&mut c, "ns2", b"k1").await;
    assert_eq!((got.found, &got.value[..], got.version), (true, &b"elsewhere"[..], other_ns));
    // A miss is found=false with status OK; the default namespace is "".
    let miss = read(&mut c, "ns", b"never written").await;
    assert_eq!((miss.found, miss.value.len(), miss.version), (false, 0, 0));
    let empty = write(&mut c, "", b"empty value", Bytes::new()).await;
    let got = read(&mut c, "", b"empty value").await;
    assert_eq!((got.found, got.value.len(), got.version), (true, 0, empty), "an empty value is a value");

    // UpdateCache: NOT_FOUND, FAILED_PRECONDITION, then success with 0 and
    // with the right version.
    let update = |key: &'static [u8], value: &'static [u8], expected_version: u64| pb::UpdateRequest {
        namespace: "ns".into(),
        key: Bytes::from_static(key),
        value: Bytes::from_static(value),
        expected_version,
        ttl_ms: 0,
    };
    expect_code(c.update_cache(update(b"absent", b"x", 0)).await, Code::NotFound, "update of a missing key");
    assert!(!read(&mut c, "ns", b"absent").await.found, "a refused update stores nothing");
    expect_code(c.update_cache(update(b"k1", b"x", v2)).await, Code::FailedPrecondition, "update at a stale version");
    let v4 = c.update_cache(update(b"k1", b"four", 0)).await.expect("update of any version").into_inner().version;
    assert!(v4 > v3, "an update gets a newer version: {v3} then {v4}");
    let v5 =
        c.update_cache(update(b"k1", b"five", v4)).await.expect("update at the right version").into_inner().version;
    assert!(v5 > v4, "{v4} then {v5}");
    expect_code(c.update_cache(update(b"k1", b"x", v4)).await, Code::FailedPrecondition, "update at the old version");
    for client in [&mut c, &mut s] {
        let got = read(client, "ns", b"k1").await;
        assert_eq!((got.found, &got.value[..], got.version), (true, &b"five"[..], v5), "updates reached every replica");
    }

    // DeleteCache: deleted=true, then the key is gone, then deleted=false.
    let delete = |key: &'static [u8]| pb::DeleteRequest { namespace: "ns".into(), key: Bytes::from_static(key) };
    assert!(c.delete_cache(delete(b"k1")).await.expect("delete").into_inner().deleted);
    assert!(!read(&mut c, "ns", b"k1").await.found, "deleted");
    assert!(!read(&mut s, "ns", b"k1").await.found, "deleted, also through the other coordinator");
    assert!(!c.delete_cache(delete(b"k1")).await.expect("delete again").into_inner().deleted);
    assert!(!c.delete_cache(delete(b"never written")).await.expect("delete of a missing key").into_inner().deleted);
    expect_code(c.update_cache(update(b"k1", b"x", 0)).await, Code::NotFound, "update of a deleted key");
    let v6 = write(&mut c, "ns", b"k1", Bytes::from_static(b"again")).await;
    assert!(v6 > v5, "a write after a delete gets a newer version: {v5} then {v6}");

    // TTL: found right after the write, gone once the TTL has passed, and
    // never gone before.
    const TTL_MS: u64 = 1000;
    let written_at = Instant::now();
    let request = pb::WriteRequest {
        namespace: "ttl".into(),
        key: Bytes::from_static(b"short-lived"),
        value: Bytes::from_static(b"soon gone"),
        ttl_ms: TTL_MS,
    };
    let ttl_version = c.write_cache(request).await.expect("write with a TTL").into_inner().version;
    let got = read(&mut c, "ttl", b"short-lived").await;
    assert!(
        written_at.elapsed() < Duration::from_millis(TTL_MS),
        "the machine is too slow for this check: write and read took {:?}",
        written_at.elapsed()
    );
    assert_eq!((got.found, &got.value[..], got.version), (true, &b"soon gone"[..], ttl_version));
    let gone_after = cluster
        .wait_for("the TTL'd value to expire", async |cluster| {
            let got = read(&mut cluster.client(primary), "ttl", b"short-lived").await;
            let elapsed = written_at.elapsed();
            if got.found {
                Err(format!("still found after {elapsed:?}"))
            } else {
                Ok(elapsed)
            }
        })
        .await;
    assert!(gone_after >= Duration::from_millis(TTL_MS), "expired early, after {gone_after:?}");
    println!("a {TTL_MS} ms TTL: value gone at {gone_after:?} after the write");

    // BatchWrite / BatchRead: results in request order, over every node.
    let keys: Vec<Bytes> = (0..60).map(|i| Bytes::from(format!("batch-{i}"))).collect();
    let firsts: HashSet<usize> = keys.iter().map(|k| cluster.replicas_of("batch", k)[0]).collect();
    assert_eq!(firsts.len(), NODES, "the batch's keys spread over every node");
    let entries: Vec<pb::KeyValue> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| pb::KeyValue { key: k.clone(), value: value_of(i as u64, 100 + i), ttl_ms: 0 })
        .collect();
    let versions = c
        .batch_write(pb::BatchWriteRequest { namespace: "batch".into(), entries: entries.clone() })
        .await
        .expect("BatchWrite")
        .into_inner()
        .versions;
    assert_eq!(versions.len(), keys.len(), "one version per entry");
    assert_eq!(versions.iter().collect::<HashSet<_>>().len(), keys.len(), "versions are unique");
    // Read back in another order, with misses in between.
    let mut order: Vec<Option<usize>> = (0..keys.len()).rev().map(Some).collect();
    order.insert(7, None);
    order.insert(30, None);
    let request_keys: Vec<Bytes> =
        order.iter().map(|o| o.map_or_else(|| Bytes::from_static(b"batch-missing"), |i| keys[i].clone())).collect();
    for client in [&mut c, &mut s] {
        let results = client
            .batch_read(pb::BatchReadRequest { namespace: "batch".into(), keys: request_keys.clone() })
            .await
            .expect("BatchRead")
            .into_inner()
            .results;
        assert_eq!(results.len(), order.len(), "one result per key");
        for (o, r) in order.iter().zip(&results) {
            match o {
                Some(i) => {
                    assert!(r.found, "batch key {i} found");
                    assert_eq!((&r.value, r.version), (&entries[*i].value, versions[*i]), "batch key {i}");
                }
                None => assert_eq!((r.found, r.value.len(), r.version), (false, 0, 0), "a miss in a batch"),
            }
        }
    }
    // A second BatchWrite of the same keys gets newer versions.
    let again = c
        .batch_write(pb::BatchWriteRequest { namespace: "batch".into(), entries: entries[..10].to_vec() })
        .await
        .expect("BatchWrite again")
        .into_inner()
        .versions;
    for (i, v) in again.iter().enumerate() {
        assert!(*v > versions[i], "batch key {i}: {} then {v}", versions[i]);
    }

    // WriteStream / ReadStream: ~5 MiB in 1 MiB chunks, every byte checked.
    let big = value_of(0xb16, (5 * MIB + 12_345) as usize);
    let chunks = stream_chunks("streams", b"big", &big, 0);
    assert_eq!(chunks.len(), 6);
    let big_version = write_stream(&mut c, chunks).await.expect("WriteStream").into_inner().version;
    assert!(big_version > 0);
    for client in [&mut c, &mut s] {
        let got = read_stream(client, "streams", b"big").await.expect("ReadStream");
        assert_eq!((got.version, got.total_size), (big_version, big.len() as u64), "the first chunk's head");
        assert!(got.chunks >= 6, "at most 1 MiB per chunk: {} chunks", got.chunks);
        assert!(got.data == big[..], "the streamed value reads back byte for byte");
    }
    // Under max_value_bytes, the same value is readable in one message too.
    let got = read(&mut c, "streams", b"big").await;
    assert!(got.found && got.version == big_version && got.value == big, "ReadCache of a streamed value");
    // An empty value streams as one chunk.
    let empty_version = write_stream(&mut c, stream_chunks("streams", b"empty", &Bytes::new(), 0))
        .await
        .expect("WriteStream of an empty value")
        .into_inner()
        .version;
    let got = read_stream(&mut c, "streams", b"empty").await.expect("ReadStream of an empty value");
    assert_eq!((got.version, got.total_size, got.data.len()), (empty_version, 0, 0));
    // A missing key: NOT_FOUND.
    let missing = read_stream(&mut c, "streams", b"missing").await;
    assert_eq!(missing.map(|r| r.version).unwrap_err().code(), Code::NotFound, "ReadStream of a missing key");

    // ClusterStatus reports what the nodes hold (figures come with heartbeats).
    let figures = cluster
        .wait_for("every node to report keys", async |cluster| {
            let status = cluster.status(primary).await.map_err(|s| s.to_string())?;
            if status.nodes.iter().all(|n| n.keys > 0 && n.disk_bytes > 0) {
                Ok(status)
            } else {
                Err(format!("{:?}", status.nodes))
            }
        })
        .await;
    let total_keys: u64 = figures.nodes.iter().map(|n| n.keys).sum();
    // Each of the 60 batch keys alone is on two nodes.
    assert!(total_keys >= 2 * keys.len() as u64, "keys summed over the nodes: {total_keys}");
    assert_eq!(figures.role(), pb::Role::Primary);
    assert_eq!(figures.epoch, epoch, "no failover happened");
}

/// Every row of the status table that a healthy cluster can show, on the
/// unary, batch and stream paths; a refused call stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_status_table() {
    let cluster = Cluster::start_with(Settings { max_value_bytes: MIB, ..Settings::default() }).await;
    let (primary, _) = cluster.agreed_primary().await.expect("a primary after start");
    let mut c = cluster.client(primary);

    // Keys and namespaces at their limits are fine ...
    let ns_max = "n".repeat(255);
    let key_max = vec![b'k'; 1024];
    let version = write(&mut c, &ns_max, &key_max, Bytes::from_static(b"at the limits")).await;
    let got = read(&mut c, &ns_max, &key_max).await;
    assert_eq!((got.found, got.version), (true, version), "255-byte namespace, 1024-byte key");
    let batch = pb::BatchWriteRequest {
        namespace: ns_max.clone(),
        entries: vec![pb::KeyValue { key: key_max.clone().into(), value: Bytes::from_static(b"b"), ttl_ms: 0 }],
    };
    c.batch_write(batch).await.expect("BatchWrite at the limits");
    let results = c
        .batch_read(pb::BatchReadRequest { namespace: ns_max.clone(), keys: vec![key_max.clone().into()] })
        .await
        .expect("BatchRead at the limits")
        .into_inner()
        .results;
    assert_eq!(&results[0].value[..], b"b");
    let streamed = value_of(1, 1000);
    write_stream(&mut c, stream_chunks(&ns_max, &key_max, &streamed, 0)).await.expect("WriteStream at the limits");
    assert!(read_stream(&mut c, &ns_max, &key_max).await.expect("ReadStream at the limits").data == streamed[..]);

    // ... one byte more, or an empty key, is INVALID_ARGUMENT everywhere.
    let ns_over = "n".repeat(256);
    let key_over = vec![b'k'; 1025];
    let bad: [(&str, &str, &[u8]); 3] =
        [("empty key", "ns", b""), ("1025-byte key", "ns", &key_over), ("256-byte namespace", &ns_over, b"k")];
    for (what, ns, key) in bad {
        let key = Bytes::copy_from_slice(key);
        let ns = ns.to_string();
        let value = Bytes::from_static(b"v");
        let write = pb::WriteRequest { namespace: ns.clone(), key: key.clone(), value: value.clone(), ttl_ms: 0 };
        expect_code(c.write_cache(write).await, Code::InvalidArgument, &format!("WriteCache, {what}"));
        let read = pb::ReadRequest { namespace: ns.clone(), key: key.clone() };
        expect_code(c.read_cache(read.clone()).await, Code::InvalidArgument, &format!("ReadCache, {what}"));
        let update = pb::UpdateRequest {
            namespace: ns.clone(),
            key: key.clone(),
            value: value.clone(),
            expected_version: 0,
            ttl_ms: 0,
        };
        expect_code(c.update_cache(update).await, Code::InvalidArgument, &format!("UpdateCache, {what}"));
        let delete = pb::DeleteRequest { namespace: ns.clone(), key: key.clone() };
        expect_code(c.delete_cache(delete).await, Code::InvalidArgument, &format!("DeleteCache, {what}"));
        // In a batch, one bad entry among good ones refuses the whole batch.
        let entries = vec![
            pb::KeyValue { key: Bytes::from_static(b"good"), value: value.clone(), ttl_ms: 0 },
            pb::KeyValue { key: key.clone(), value: value.clone(), ttl_ms: 0 },
        ];
        let batch = pb::BatchWriteRequest { namespace: ns.clone(), entries };
        expect_code(c.batch_write(batch).await, Code::InvalidArgument, &format!("BatchWrite, {what}"));
        let batch =
            pb::BatchReadRequest { namespace: ns.clone(), keys: vec![Bytes::from_static(b"good"), key.clone()] };
        expect_code(c.batch_read(batch).await, Code::InvalidArgument, &format!("BatchRead, {what}"));
        let chunks = vec![pb::WriteChunk {
            namespace: ns.clone(),
            key: key.clone(),
            ttl_ms: 0,
            total_size: 1,
            data: Bytes::from_static(b"v"),
        }];
        expect_code(write_stream(&mut c, chunks).await, Code::InvalidArgument, &format!("WriteStream, {what}"));
        let streamed = read_stream(&mut c, &ns, &key).await.map(|r| r.version);
        assert_eq!(streamed.unwrap_err().code(), Code::InvalidArgument, "ReadStream, {what}");
    }
    // The good key of the refused batch was not written.
    let got = read(&mut c, "ns", b"good").await;
    assert!(!got.found, "a refused batch stores none of its entries");

    // A namespace that is not UTF-8 (only a hand-made message can carry one).
    raw::non_utf8_namespace_is_invalid_argument(&cluster, primary).await;

    // Values: max_value_bytes (1 MiB here) is fine, one byte more is RESOURCE_EXHAUSTED.
    let max = value_of(2, MIB as usize);
    let v = write(&mut c, "sizes", b"max", max.clone()).await;
    let got = read(&mut c, "sizes", b"max").await;
    assert!(got.found && got.version == v && got.value == max, "a value of exactly max_value_bytes");
    let over = value_of(3, MIB as usize + 1);
    let request = pb::WriteRequest {
        namespace: "sizes".into(),
        key: Bytes::from_static(b"over"),
        value: over.clone(),
        ttl_ms: 0,
    };
    expect_code(c.write_cache(request).await, Code::ResourceExhausted, "WriteCache over max_value_bytes");
    assert!(!read(&mut c, "sizes", b"over").await.found, "nothing stored");
    let update = pb::UpdateRequest {
        namespace: "sizes".into(),
        key: Bytes::from_static(b"max"),
        value: over.clone(),
        expected_version: 0,
        ttl_ms: 0,
    };
    expect_code(c.update_cache(update).await, Code::ResourceExhausted, "UpdateCache over max_value_bytes");
    assert_eq!(read(&mut c, "sizes", b"max").await.version, v, "the refused update changed nothing");
    let entries = vec![
        pb::KeyValue { key: Bytes::from_static(b"small"), value: Bytes::from_static(b"s"), ttl_ms: 0 },
        pb::KeyValue { key: Bytes::from_static(b"over"), value: over.clone(), ttl_ms: 0 },
    ];
    let batch = pb::BatchWriteRequest { namespace: "sizes".into(), entries };
    expect_code(c.batch_write(batch).await, Code::ResourceExhausted, "BatchWrite with an entry over max_value_bytes");
    assert!(!read(&mut c, "sizes", b"small").await.found, "a refused batch stores none of its entries");
    // Streams are the way past max_value_bytes.
    let v = write_stream(&mut c, stream_chunks("sizes", b"over", &over, 0))
        .await
        .expect("WriteStream over max_value_bytes")
        .into_inner()
        .version;
    let got = read_stream(&mut c, "sizes", b"over").await.expect("ReadStream over max_value_bytes");
    assert!(got.version == v && got.data == over[..], "a streamed value over max_value_bytes reads back");

    // Batches: 4096 entries are fine, 4097 are RESOURCE_EXHAUSTED; so is a
    // batch over 64 MiB of keys and values.
    let many: Vec<pb::KeyValue> = (0..4097)
        .map(|i| pb::KeyValue { key: Bytes::from(format!("many-{i}")), value: Bytes::from_static(b"m"), ttl_ms: 0 })
        .collect();
    let batch = pb::BatchWriteRequest { namespace: "batches".into(), entries: many.clone() };
    expect_code(c.batch_write(batch).await, Code::ResourceExhausted, "BatchWrite of 4097 entries");
    let keys: Vec<Bytes> = many.iter().map(|e| e.key.clone()).collect();
    let batch = pb::BatchReadRequest { namespace: "batches".into(), keys: keys.clone() };
    expect_code(c.batch_read(batch).await, Code::ResourceExhausted, "BatchRead of 4097 keys");
    let batch = pb::BatchWriteRequest { namespace: "batches".into(), entries: many[..4096].to_vec() };
    let versions = c.batch_write(batch).await.expect("BatchWrite of 4096 entries").into_inner().versions;
    assert_eq!(versions.len(), 4096);
    let batch = pb::BatchReadRequest { namespace: "batches".into(), keys: keys[..4096].to_vec() };
    let results = c.batch_read(batch).await.expect("BatchRead of 4096 keys").into_inner().results;
    assert!(results.iter().zip(&versions).all(|(r, v)| r.found && r.version == *v), "4096 entries read back");
    let heavy: Vec<pb::KeyValue> = (0..65)
        .map(|i| pb::KeyValue { key: Bytes::from(format!("heavy-{i}")), value: value_of(i, MIB as usize), ttl_ms: 0 })
        .collect();
    let batch = pb::BatchWriteRequest { namespace: "batches".into(), entries: heavy };
    expect_code(c.batch_write(batch).await, Code::ResourceExhausted, "BatchWrite of 65 MiB");
    assert!(!read(&mut c, "batches", b"heavy-0").await.found, "a refused batch stores none of its entries");

    // Streams: data beyond total_size is RESOURCE_EXHAUSTED, both when one
    // chunk overflows and when a chunk comes after exactly total_size bytes.
    let head = |key: &'static [u8], total_size: u64, data: &'static [u8]| pb::WriteChunk {
        namespace: "streams".into(),
        key: Bytes::from_static(key),
        ttl_ms: 0,
        total_size,
        data: Bytes::from_static(data),
    };
    let more = |data: &'static [u8]| pb::WriteChunk { data: Bytes::from_static(data), ..Default::default() };
    let chunks = vec![head(b"overflow-one", 4, b"12345")];
    expect_code(write_stream(&mut c, chunks).await, Code::ResourceExhausted, "a chunk beyond total_size");
    let chunks = vec![head(b"overflow-after", 4, b"1234"), more(b"5")];
    expect_code(write_stream(&mut c, chunks).await, Code::ResourceExhausted, "a chunk after total_size bytes");
    let chunks = vec![head(b"overflow-later", 6, b"123"), more(b"45"), more(b"678")];
    expect_code(write_stream(&mut c, chunks).await, Code::ResourceExhausted, "a later chunk beyond total_size");
    // A stream that ends early, without a key, or without any chunk:
    // INVALID_ARGUMENT.
    let short = value_of(4, 2 * MIB as usize);
    let mut chunks = stream_chunks("streams", b"short", &short, 0);
    chunks.truncate(1);
    expect_code(write_stream(&mut c, chunks).await, Code::InvalidArgument, "a stream that ends early");
    let chunks = vec![head(b"", 2, b"1"), pb::WriteChunk { key: Bytes::from_static(b"keyless"), ..more(b"2") }];
    expect_code(write_stream(&mut c, chunks).await, Code::InvalidArgument, "a first chunk without a key");
    expect_code(write_stream(&mut c, Vec::new()).await, Code::InvalidArgument, "a stream without chunks");
    // None of them stored anything, on any replica.
    for key in [&b"overflow-one"[..], b"overflow-after", b"overflow-later", b"short", b"keyless"] {
        let got = read(&mut c, "streams", key).await;
        assert!(!got.found, "a refused stream stored {:?}: {got:?}", String::from_utf8_lossy(key));
        for i in cluster.replicas_of("streams", key) {
            let get = opticache_proto::node::v1::GetRequest {
                namespace: Bytes::from_static(b"streams"),
                key: Bytes::copy_from_slice(key),
            };
            let got = cluster.node_client(i).get(get).await.expect("node get").into_inner();
            assert!(!got.found, "node {i} holds the refused stream {:?}", String::from_utf8_lossy(key));
        }
    }
}

/// UNAVAILABLE when no replica of the key is live: two nodes SIGKILLed, a
/// key placed on exactly those two; keys with a live replica keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_live_replica_is_unavailable() {
    let mut cluster = Cluster::start().await;
    let (primary, _) = cluster.agreed_primary().await.expect("a primary after start");
    let dead = [0usize, 1];
    let placed_on = |cluster: &Cluster, set: [usize; 2]| {
        (0u32..)
            .map(|i| format!("key-{i}"))
            .find(|k| {
                let r = cluster.replicas_of("u", k.as_bytes());
                r.len() == 2 && r.contains(&set[0]) && r.contains(&set[1])
            })
            .expect("some key lands on any two nodes")
    };
    let doomed = placed_on(&cluster, dead);
    let alive = placed_on(&cluster, [1, 2]);
    for c in 0..2 {
        let mut client = cluster.client(c);
        write(&mut client, "u", doomed.as_bytes(), Bytes::from_static(b"soon unreachable")).await;
        write(&mut client, "u", alive.as_bytes(), Bytes::from_static(b"one copy stays")).await;
    }

    for i in dead {
        cluster.nodes[i].kill9().await;
    }
    for c in 0..2 {
        for i in dead {
            cluster.wait_node_state(c, i, pb::NodeState::Down).await;
        }
    }

    for c in [primary, 1 - primary] {
        let mut client = cluster.client(c);
        let key = Bytes::from(doomed.clone());
        let what = |rpc: &str| format!("{rpc} through coordinator {c} with both replicas down");
        let request =
            pb::WriteRequest { namespace: "u".into(), key: key.clone(), value: Bytes::from_static(b"x"), ttl_ms: 0 };
        expect_code(client.write_cache(request).await, Code::Unavailable, &what("WriteCache"));
        let request = pb::ReadRequest { namespace: "u".into(), key: key.clone() };
        expect_code(client.read_cache(request).await, Code::Unavailable, &what("ReadCache"));
        let request = pb::UpdateRequest {
            namespace: "u".into(),
            key: key.clone(),
            value: Bytes::from_static(b"x"),
            expected_version: 0,
            ttl_ms: 0,
        };
        expect_code(client.update_cache(request).await, Code::Unavailable, &what("UpdateCache"));
        let request = pb::DeleteRequest { namespace: "u".into(), key: key.clone() };
        expect_code(client.delete_cache(request).await, Code::Unavailable, &what("DeleteCache"));
        let entries = vec![pb::KeyValue { key: key.clone(), value: Bytes::from_static(b"x"), ttl_ms: 0 }];
        let request = pb::BatchWriteRequest { namespace: "u".into(), entries };
        expect_code(client.batch_write(request).await, Code::Unavailable, &what("BatchWrite"));
        let request =
            pb::BatchReadRequest { namespace: "u".into(), keys: vec![Bytes::from(alive.clone()), key.clone()] };
        expect_code(client.batch_read(request).await, Code::Unavailable, &what("BatchRead"));
        let chunks = stream_chunks("u", &key, &Bytes::from_static(b"x"), 0);
        expect_code(write_stream(&mut client, chunks).await, Code::Unavailable, &what("WriteStream"));
        let streamed = read_stream(&mut client, "u", &key).await.map(|r| r.version);
        assert_eq!(streamed.unwrap_err().code(), Code::Unavailable, "{}", what("ReadStream"));

        // A key with one live replica keeps working, reads and writes.
        let got = read(&mut client, "u", alive.as_bytes()).await;
        assert!(got.found, "{}: a key with a live replica is readable", what("ReadCache"));
        let v = write(&mut client, "u", alive.as_bytes(), Bytes::from_static(b"still writable")).await;
        let got = read(&mut client, "u", alive.as_bytes()).await;
        assert_eq!((got.found, &got.value[..], got.version), (true, &b"still writable"[..], v));
    }
}

/// Requests only hand-made bytes can express.
mod raw {
    use super::*;
    use tonic::codegen::http::uri::PathAndQuery;

    /// `opticache.v1.WriteRequest` with `bytes` where the contract says `string`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub namespace: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub value: Vec<u8>,
        #[prost(uint64, tag = "4")]
        pub ttl_ms: u64,
    }

    /// `opticache.v1.ReadRequest` (also DeleteRequest's shape).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub namespace: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
    }

    /// `opticache.v1.BatchWriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchWriteRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub namespace: Vec<u8>,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<pb::KeyValue>,
    }

    /// `opticache.v1.BatchReadRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchReadRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub namespace: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub keys: Vec<Vec<u8>>,
    }

    /// `opticache.v1.WriteChunk`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteChunk {
        #[prost(bytes = "vec", tag = "1")]
        pub namespace: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        #[prost(uint64, tag = "3")]
        pub ttl_ms: u64,
        #[prost(uint64, tag = "4")]
        pub total_size: u64,
        #[prost(bytes = "vec", tag = "5")]
        pub data: Vec<u8>,
    }

    async fn unary<Req, Resp>(
        cluster: &Cluster,
        c: usize,
        method: &'static str,
        request: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(cluster.coordinator_channel(c));
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(method), codec).await.map(|r| r.into_inner())
    }

    /// Not UTF-8: a lone continuation byte and an invalid lead byte.
    const BAD_NAMESPACE: &[u8] = b"model-\x80\xff";

    #[track_caller]
    fn expect_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
        match result {
            Ok(answer) => panic!("{what}: expected INVALID_ARGUMENT, got {answer:?}"),
            Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{what}: wrong code ({})", s.message()),
        }
    }

    pub async fn non_utf8_namespace_is_invalid_argument(cluster: &Cluster, c: usize) {
        let ns = BAD_NAMESPACE.to_vec();
        let write = WriteRequest { namespace: ns.clone(), key: b"k".to_vec(), value: b"v".to_vec(), ttl_ms: 0 };
        // The same message with a valid namespace goes through: the raw path itself works.
        let fine = WriteRequest { namespace: b"model".to_vec(), ..write.clone() };
        let answer: pb::WriteResponse =
            unary(cluster, c, "/opticache.v1.OptiCache/WriteCache", fine).await.expect("a hand-made valid write");
        assert!(answer.version > 0);

        let r: Result<pb::WriteResponse, _> = unary(cluster, c, "/opticache.v1.OptiCache/WriteCache", write).await;
        expect_invalid(r, "WriteCache, namespace not UTF-8");
        let read = ReadRequest { namespace: ns.clone(), key: b"k".to_vec() };
        let r: Result<pb::ReadResponse, _> = unary(cluster, c, "/opticache.v1.OptiCache/ReadCache", read.clone()).await;
        expect_invalid(r, "ReadCache, namespace not UTF-8");
        let r: Result<pb::DeleteResponse, _> =
            unary(cluster, c, "/opticache.v1.OptiCache/DeleteCache", read.clone()).await;
        expect_invalid(r, "DeleteCache, namespace not UTF-8");
        let entries = vec![pb::KeyValue { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v"), ttl_ms: 0 }];
        let batch = BatchWriteRequest { namespace: ns.clone(), entries };
        let r: Result<pb::BatchWriteResponse, _> = unary(cluster, c, "/opticache.v1.OptiCache/BatchWrite", batch).await;
        expect_invalid(r, "BatchWrite, namespace not UTF-8");
        let batch = BatchReadRequest { namespace: ns.clone(), keys: vec![b"k".to_vec()] };
        let r: Result<pb::BatchReadResponse, _> = unary(cluster, c, "/opticache.v1.OptiCache/BatchRead", batch).await;
        expect_invalid(r, "BatchRead, namespace not UTF-8");

        let mut grpc = tonic::client::Grpc::new(cluster.coordinator_channel(c));
        grpc.ready().await.expect("the channel is ready");
        let chunk =
            WriteChunk { namespace: ns.clone(), key: b"k".to_vec(), ttl_ms: 0, total_size: 1, data: b"v".to_vec() };
        let codec = tonic_prost::ProstCodec::<WriteChunk, pb::WriteResponse>::default();
        let r = grpc
            .client_streaming(
                tonic::Request::new(futures_lite::stream::iter(vec![chunk])),
                PathAndQuery::from_static("/opticache.v1.OptiCache/WriteStream"),
                codec,
            )
            .await
            .map(|r| r.into_inner());
        expect_invalid(r, "WriteStream, namespace not UTF-8");
    }
}
