//! Both coordinators write the same keys, interleaved: concurrently (racing
//! each other on every key) and one after the other (a client alternating
//! between them). Versions from the two never collide, a client's sequential
//! writes get increasing versions whichever coordinator it uses, and every
//! replica ends with the same value at the highest acknowledged version.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use opticache_proto::node::v1 as node;
use opticache_proto::v1 as pb;

const KEYS: usize = 30;
const ROUNDS: u64 = 8;
/// Sequential alternations per key in the second phase.
const ALTERNATIONS: u64 = 12;
/// Writers keeping one coordinator's clock busy in the second phase.
const BACKGROUND_WRITERS: usize = 4;

/// One acknowledged write: (version, value, coordinator).
type Acked = (u64, Bytes, usize);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_on_the_highest_acknowledged_version() {
    let cluster = Cluster::start().await;
    let keys: Vec<Bytes> = (0..KEYS).map(|i| Bytes::from(format!("conv-{i}"))).collect();
    let mut acked: HashMap<Bytes, Vec<Acked>> = HashMap::new();

    // Phase 1: every round, every key gets one write through each
    // coordinator, both in flight at once; which is sent first alternates.
    for round in 0..ROUNDS {
        let mut calls = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let first = (round as usize + i) % 2;
            for c in [first, 1 - first] {
                let mut client = cluster.client(c);
                let key = key.clone();
                let value = value_of(round << 32 | (i as u64) << 1 | c as u64, 32 + i);
                calls.push(tokio::spawn(async move {
                    let request = pb::WriteRequest {
                        namespace: "conv".into(),
                        key: key.clone(),
                        value: value.clone(),
                        ttl_ms: 0,
                    };
                    let version = client.write_cache(request).await.expect("a racing write").into_inner().version;
                    (key, (version, value, c))
                }));
            }
        }
        for call in calls {
            let (key, ack) = call.await.expect("a write task");
            acked.entry(key).or_default().push(ack);
        }
    }

    // Phase 2: a client alternates between the coordinators, one write at a
    // time, while other writers keep one coordinator's clock busy. Each
    // write must get a newer version than the one before it, and be what the
    // other coordinator reads right after.
    let stop = Arc::new(AtomicBool::new(false));
    let mut background = Vec::new();
    for w in 0..BACKGROUND_WRITERS {
        let mut client = cluster.client(0);
        let stop = stop.clone();
        background.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = pb::WriteRequest {
                    namespace: "busy".into(),
                    key: Bytes::from(format!("busy-{w}-{}", n % 100)),
                    value: Bytes::from_static(b"busy"),
                    ttl_ms: 0,
                };
                client.write_cache(request).await.expect("a background write");
                n += 1;
            }
        }));
    }
    let mut clients = [cluster.client(0), cluster.client(1)];
    for (i, key) in keys.iter().enumerate() {
        let mut last = acked[key].iter().map(|a| a.0).max().expect("phase 1 wrote every key");
        for n in 0..ALTERNATIONS {
            let c = (i + n as usize) % 2;
            let value = value_of(1 << 48 | (i as u64) << 16 | n, 40);
            let version = write(&mut clients[c], "conv", key, value.clone()).await;
            assert!(
                version > last,
                "{key:?}: write {n} through coordinator {c} got version {version}, not newer than {last} acknowledged before it"
            );
            let got = read(&mut clients[1 - c], "conv", key).await;
            assert_eq!(
                (got.found, got.version, &got.value),
                (true, version, &value),
                "{key:?}: the other coordinator reads the write just acknowledged"
            );
            last = version;
            acked.get_mut(key).unwrap().push((version, value, c));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in background {
        task.await.expect("a background writer");
    }

    // Versions never collide, and both coordinators' writes are among the acknowledged.
    for (key, acks) in &acked {
        let mut versions: Vec<u64> = acks.iter().map(|a| a.0).collect();
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(versions.len(), acks.len(), "{key:?}: two writes got the same version");
        assert!(acks.iter().any(|a| a.2 == 0) && acks.iter().any(|a| a.2 == 1));
    }

    // Every replica holds the highest acknowledged version and its value;
    // the third node holds nothing of the key; both coordinators read it.
    let mut node_clients: Vec<_> = (0..NODES).map(|i| cluster.node_client(i)).collect();
    for key in &keys {
        let (version, value, _) = acked[key].iter().max_by_key(|a| a.0).expect("acknowledged writes").clone();
        let replicas = cluster.replicas_of("conv", key);
        for (i, client) in node_clients.iter_mut().enumerate() {
            let get = node::GetRequest { namespace: Bytes::from_static(b"conv"), key: key.clone() };
            let got = client.get(get).await.expect("a node Get").into_inner();
            if replicas.contains(&i) {
                assert_eq!(
                    (got.found, got.version, &got.value),
                    (true, version, &value),
                    "{key:?}: replica {i} diverges from the highest acknowledged version"
                );
            } else {
                assert!(!got.found, "{key:?}: node {i} is not a replica but holds it");
            }
        }
        for client in clients.iter_mut() {
            let got = read(client, "conv", key).await;
            assert_eq!((got.found, got.version, &got.value), (true, version, &value), "{key:?} through a coordinator");
        }
    }
    let writes: usize = acked.values().map(Vec::len).sum();
    println!("{writes} acknowledged writes on {KEYS} keys; every replica converged");
}

/// A version from a clock a minute ahead (as if the other coordinator's host
/// clock ran fast) already sits on both replicas: a later write through this
/// coordinator must still win, not be acknowledged and silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_version_from_a_clock_ahead_still_lands() {
    let cluster = Cluster::start().await;
    let (primary, _) = cluster.wait_ready().await;
    let key = b"skewed".to_vec();
    let ahead_ms = opticache_common::version::unix_ms() + 60_000;
    let planted = (ahead_ms << opticache_common::version::VERSION_MS_SHIFT) | 1;
    for i in cluster.replicas_of("skew", &key) {
        let put = node::PutRequest {
            namespace: Bytes::from_static(b"skew"),
            key: Bytes::from(key.clone()),
            value: Bytes::from_static(b"from the future"),
            version: planted,
            ..Default::default()
        };
        assert!(cluster.node_client(i).put(put).await.unwrap().into_inner().applied);
    }
    let mut client = cluster.client(primary);
    let version = write(&mut client, "skew", &key, Bytes::from_static(b"now")).await;
    assert!(version > planted, "acknowledged at {version}, below the stored {planted}");
    let got = read(&mut client, "skew", &key).await;
    assert_eq!((got.version, &got.value[..]), (version, &b"now"[..]), "the acknowledged write is what is stored");
}
