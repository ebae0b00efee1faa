//! Every bad input of the status table (api.md) on every path it applies to,
//! against the real `opticache-node` binary (harness: `common/mod.rs`):
//!
//! - empty key, key of 1025 bytes, namespace of 256 bytes, non-UTF-8
//!   namespace → INVALID_ARGUMENT on Put, Get, Update, Delete, BatchPut,
//!   BatchGet, PutStream and GetStream; a key of 1024 and a namespace of 255
//!   bytes are accepted on all of them;
//! - a value over max_value_bytes (1 MiB here; exactly 1 MiB is accepted)
//!   and a message over the gRPC message limit → RESOURCE_EXHAUSTED on Put,
//!   Update and BatchPut;
//! - a batch over 4096 entries or over 64 MiB of key and value bytes →
//!   RESOURCE_EXHAUSTED (BatchPut and BatchGet; the limits themselves pass);
//! - a stream whose data exceeds total_size, or a chunk over the message
//!   limit, or a total_size over the chunked limit → RESOURCE_EXHAUSTED; a
//!   stream that ends early, a first chunk without a key, a later chunk with
//!   another key, an empty stream → INVALID_ARGUMENT; GetStream of a missing
//!   key → NOT_FOUND.
//!
//! After every rejected write the test checks that nothing was stored: the
//! shards' counters did not move (keys always; puts and deletes where the
//! node refuses before the engine), the previous value is unchanged, and a
//! rejected batch wrote none of its valid entries.

mod common;

use bytes::Bytes;
use common::*;
use opticache_proto::node::v1 as pb;
use pb::node_client::NodeClient;
use tonic::transport::Channel;
use tonic::Code;

/// The node's largest single value in these tests.
const MAX_VALUE: usize = MIB as usize;
const BATCH_LEN_MAX: usize = 4096;
const BATCH_BYTES_MAX: usize = 64 << 20;

fn settings() -> Settings {
    Settings::shards(2).max_value_bytes(MIB)
}

/// What the shards hold and have done, summed over shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Written {
    keys: u64,
    puts: u64,
    deletes: u64,
}

async fn written(client: &mut NodeClient<Channel>) -> Written {
    let stats = shard_stats(client).await;
    Written {
        keys: stats.iter().map(|s| s.keys).sum(),
        puts: stats.iter().map(|s| s.puts).sum(),
        deletes: stats.iter().map(|s| s.deletes).sum(),
    }
}

/// Checks that a request refused before reaching any shard left no trace.
async fn assert_untouched(client: &mut NodeClient<Channel>, before: Written, what: &str) {
    assert_eq!(written(client).await, before, "{what}: a rejected request reached a shard");
}

/// Checks that no key was added (a refused stream may have started a write
/// in the engine, which counts it as a put, but must leave nothing).
async fn assert_no_new_key(client: &mut NodeClient<Channel>, before: Written, what: &str) {
    assert_eq!(written(client).await.keys, before.keys, "{what}: a rejected request stored a key");
}

fn req_get(namespace: &[u8], key: &[u8]) -> pb::GetRequest {
    pb::GetRequest { namespace: Bytes::copy_from_slice(namespace), key: Bytes::copy_from_slice(key) }
}

fn req_put(namespace: &[u8], key: &[u8], value: impl Into<Bytes>) -> pb::PutRequest {
    pb::PutRequest {
        namespace: Bytes::copy_from_slice(namespace),
        key: Bytes::copy_from_slice(key),
        value: value.into(),
        ..Default::default()
    }
}

fn req_update(namespace: &[u8], key: &[u8], value: impl Into<Bytes>) -> pb::UpdateRequest {
    pb::UpdateRequest {
        namespace: Bytes::copy_from_slice(namespace),
        key: Bytes::copy_from_slice(key),
        value: value.into(),
        ..Default::default()
    }
}

fn req_delete(namespace: &[u8], key: &[u8]) -> pb::DeleteRequest {
    pb::DeleteRequest {
        namespace: Bytes::copy_from_slice(namespace),
        key: Bytes::copy_from_slice(key),
        version: 0,
        epoch: 0,
    }
}

fn first_chunk(namespace: &[u8], key: &[u8], total_size: u64, data: impl Into<Bytes>) -> pb::PutChunk {
    pb::PutChunk {
        namespace: Bytes::copy_from_slice(namespace),
        key: Bytes::copy_from_slice(key),
        total_size,
        data: data.into(),
        ..Default::default()
    }
}

fn chunk(data: impl Into<Bytes>) -> pb::PutChunk {
    pb::PutChunk { data: data.into(), ..Default::default() }
}

async fn put_stream(
    client: &mut NodeClient<Channel>,
    chunks: Vec<pb::PutChunk>,
) -> Result<tonic::Response<pb::PutResponse>, tonic::Status> {
    client.put_stream(futures_lite::stream::iter(chunks)).await
}

/// Reads (namespace, key) and checks it holds `expected` (None: nothing).
async fn assert_holds(client: &mut NodeClient<Channel>, namespace: &[u8], key: &[u8], expected: Option<(&[u8], u64)>) {
    let got = client.get(req_get(namespace, key)).await.expect("get").into_inner();
    let found = got.found.then_some((got.value.as_ref(), got.version));
    assert!(
        found == expected,
        "key {:?}: holds {:?}, expected {expected:?}",
        Bytes::copy_from_slice(key),
        found.map(|(v, ver)| (v.len(), ver))
    );
}

/// One way a namespace or key is invalid, and a valid neighbour that a
/// write that slipped through might have landed on.
struct BadKey {
    what: &'static str,
    namespace: Vec<u8>,
    key: Vec<u8>,
    neighbour: Option<(Vec<u8>, Vec<u8>)>,
}

fn bad_keys() -> Vec<BadKey> {
    vec![
        BadKey { what: "empty key", namespace: vec![], key: vec![], neighbour: None },
        BadKey {
            what: "key of 1025 bytes",
            namespace: vec![],
            key: vec![b'k'; 1025],
            neighbour: Some((vec![], vec![b'k'; 1024])),
        },
        BadKey {
            what: "namespace of 256 bytes",
            namespace: vec![b'n'; 256],
            key: b"k".to_vec(),
            neighbour: Some((vec![b'n'; 255], b"k".to_vec())),
        },
        BadKey { what: "non-UTF-8 namespace", namespace: vec![0xff, 0xfe], key: b"k".to_vec(), neighbour: None },
    ]
}

#[tokio::test]
async fn bad_keys_and_namespaces_are_invalid_argument_on_every_path() {
    let home = NodeHome::new(&settings());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    // Something stored, so "nothing changed" is about a non-empty node.
    let existing = put(&mut client, "existing", "before", 0).await;

    for bad in bad_keys() {
        let (ns, key, what) = (&bad.namespace[..], &bad.key[..], bad.what);
        let before = written(&mut client).await;

        expect_code(client.put(req_put(ns, key, "v")).await, Code::InvalidArgument, &format!("Put, {what}"));
        assert_untouched(&mut client, before, &format!("Put, {what}")).await;

        expect_code(client.get(req_get(ns, key)).await, Code::InvalidArgument, &format!("Get, {what}"));

        let update = client.update(req_update(ns, key, "v")).await;
        expect_code(update, Code::InvalidArgument, &format!("Update, {what}"));
        assert_untouched(&mut client, before, &format!("Update, {what}")).await;

        expect_code(client.delete(req_delete(ns, key)).await, Code::InvalidArgument, &format!("Delete, {what}"));
        assert_untouched(&mut client, before, &format!("Delete, {what}")).await;

        // The bad entry sits between two valid ones: neither may be written.
        let entries = vec![req_put(b"", b"batch-a", "a"), req_put(ns, key, "v"), req_put(b"", b"batch-b", "b")];
        let batch = client.batch_put(pb::BatchPutRequest { entries }).await;
        expect_code(batch, Code::InvalidArgument, &format!("BatchPut, {what}"));
        assert_untouched(&mut client, before, &format!("BatchPut, {what}")).await;
        assert_holds(&mut client, b"", b"batch-a", None).await;
        assert_holds(&mut client, b"", b"batch-b", None).await;

        let keys = vec![req_get(b"", b"existing"), req_get(ns, key)];
        let batch = client.batch_get(pb::BatchGetRequest { keys }).await;
        expect_code(batch, Code::InvalidArgument, &format!("BatchGet, {what}"));

        let stream = put_stream(&mut client, vec![first_chunk(ns, key, 2, "v"), chunk("w")]).await;
        expect_code(stream, Code::InvalidArgument, &format!("PutStream, {what}"));
        assert_untouched(&mut client, before, &format!("PutStream, {what}")).await;

        expect_code(client.get_stream(req_get(ns, key)).await, Code::InvalidArgument, &format!("GetStream, {what}"));

        if let Some((ns, key)) = &bad.neighbour {
            assert_holds(&mut client, ns, key, None).await;
        }
        assert_holds(&mut client, b"", b"existing", Some((b"before", existing))).await;
    }
}

#[tokio::test]
async fn the_longest_key_and_namespace_are_accepted_on_every_path() {
    let home = NodeHome::new(&settings());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let longest_key = vec![b'k'; 1024];
    let longest_ns = vec![b'n'; 255];
    let cases: [(&str, &[u8], &[u8]); 3] = [
        ("key of 1024 bytes", b"", &longest_key),
        ("namespace of 255 bytes", &longest_ns, b"k"),
        ("both at their limit", &longest_ns, &longest_key),
    ];
    for (what, ns, key) in cases {
        let put = client.put(req_put(ns, key, "put")).await.unwrap_or_else(|s| panic!("Put, {what}: {s}"));
        let version = put.into_inner().version;
        assert_holds(&mut client, ns, key, Some((b"put", version))).await;

        let update = client.update(req_update(ns, key, "updated")).await;
        let version = update.unwrap_or_else(|s| panic!("Update, {what}: {s}")).into_inner().version;
        assert_holds(&mut client, ns, key, Some((b"updated", version))).await;

        let deleted = client.delete(req_delete(ns, key)).await.unwrap_or_else(|s| panic!("Delete, {what}: {s}"));
        assert!(deleted.into_inner().deleted, "Delete, {what}");
        assert_holds(&mut client, ns, key, None).await;

        let batch = client.batch_put(pb::BatchPutRequest { entries: vec![req_put(ns, key, "batched")] }).await;
        let version = batch.unwrap_or_else(|s| panic!("BatchPut, {what}: {s}")).into_inner().results[0].version;
        let got = client.batch_get(pb::BatchGetRequest { keys: vec![req_get(ns, key)] }).await;
        let got = got.unwrap_or_else(|s| panic!("BatchGet, {what}: {s}")).into_inner().results;
        assert_eq!((got[0].value.as_ref(), got[0].version), (&b"batched"[..], version), "BatchGet, {what}");

        let stream = put_stream(&mut client, vec![first_chunk(ns, key, 8, "stre"), chunk("amed")]).await;
        let version = stream.unwrap_or_else(|s| panic!("PutStream, {what}: {s}")).into_inner().version;
        let mut chunks = client.get_stream(req_get(ns, key)).await.unwrap_or_else(|s| panic!("GetStream, {what}: {s}"));
        let first = chunks.get_mut().message().await.unwrap().expect("a chunk");
        assert_eq!((first.data.as_ref(), first.version, first.total_size), (&b"streamed"[..], version, 8));
    }
}

#[tokio::test]
async fn values_over_max_value_bytes_are_resource_exhausted() {
    let home = NodeHome::new(&settings());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let at_limit = Bytes::from(vec![b'x'; MAX_VALUE]);
    let over = Bytes::from(vec![b'y'; MAX_VALUE + 1]);
    // Over the node's gRPC message limit (max(1 MiB, 64 MiB) + 2 MiB): tonic
    // refuses it before the node's own check.
    let over_message = Bytes::from(vec![b'z'; 67 << 20]);

    // Exactly max_value_bytes is accepted.
    let version = put(&mut client, "limit", at_limit.clone(), 0).await;
    assert_holds(&mut client, b"", b"limit", Some((&at_limit, version))).await;

    for (what, value) in [("1 MiB + 1", &over), ("67 MiB, over the message limit", &over_message)] {
        let before = written(&mut client).await;
        let refused = client.put(req_put(b"", b"limit", value.clone())).await;
        expect_code(refused, Code::ResourceExhausted, &format!("Put of {what}"));
        let refused = client.put(req_put(b"", b"fresh", value.clone())).await;
        expect_code(refused, Code::ResourceExhausted, &format!("Put of {what} to a new key"));
        let refused = client.update(req_update(b"", b"limit", value.clone())).await;
        expect_code(refused, Code::ResourceExhausted, &format!("Update of {what}"));
        let entries =
            vec![req_put(b"", b"batch-a", "a"), req_put(b"", b"limit", value.clone()), req_put(b"", b"batch-b", "b")];
        let refused = client.batch_put(pb::BatchPutRequest { entries }).await;
        expect_code(refused, Code::ResourceExhausted, &format!("BatchPut with a value of {what}"));

        assert_untouched(&mut client, before, what).await;
        assert_holds(&mut client, b"", b"limit", Some((&at_limit, version))).await;
        assert_holds(&mut client, b"", b"fresh", None).await;
        assert_holds(&mut client, b"", b"batch-a", None).await;
        assert_holds(&mut client, b"", b"batch-b", None).await;
    }

    // Update and BatchPut take exactly max_value_bytes too.
    let updated = client.update(req_update(b"", b"limit", vec![b'u'; MAX_VALUE])).await.expect("update at the limit");
    assert_holds(&mut client, b"", b"limit", Some((&vec![b'u'; MAX_VALUE], updated.into_inner().version))).await;
    let batch = client.batch_put(pb::BatchPutRequest { entries: vec![req_put(b"", b"batch-a", at_limit.clone())] });
    let version = batch.await.expect("batch at the limit").into_inner().results[0].version;
    assert_holds(&mut client, b"", b"batch-a", Some((&at_limit, version))).await;

    // max_value_bytes bounds single messages; a stream is how larger values
    // are written, so a streamed value over it is accepted.
    let streamed = client.put_stream(pattern_put_chunks("streamed", 3, MIB + 1)).await.expect("stream of 1 MiB + 1");
    check_pattern_stream(&mut client, "streamed", 3, MIB + 1, streamed.into_inner().version).await;
}

#[tokio::test]
async fn batches_over_their_entry_limit_are_resource_exhausted() {
    let home = NodeHome::new(&settings());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let keys = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();

    let before = written(&mut client).await;
    let too_many: Vec<pb::PutRequest> =
        keys("over", BATCH_LEN_MAX + 1).into_iter().map(|k| put_req(k, "v", 0)).collect();
    let refused = client.batch_put(pb::BatchPutRequest { entries: too_many }).await;
    expect_code(refused, Code::ResourceExhausted, "BatchPut of 4097 entries");
    assert_untouched(&mut client, before, "BatchPut of 4097 entries").await;
    let found = batch_get_all(&mut client, &keys("over", BATCH_LEN_MAX + 1), BATCH_LEN_MAX).await;
    assert!(found.iter().all(|r| !r.found), "a refused batch wrote some of its entries");

    // 4096 entries are accepted, all of them.
    let writes: Vec<(String, Bytes)> =
        keys("ok", BATCH_LEN_MAX).into_iter().map(|k| (k, Bytes::from_static(b"v"))).collect();
    let versions = batch_put_all(&mut client, &writes, BATCH_LEN_MAX).await;
    assert_eq!(versions.len(), BATCH_LEN_MAX);

    let gets: Vec<pb::GetRequest> = keys("ok", BATCH_LEN_MAX + 1).into_iter().map(get_req).collect();
    let refused = client.batch_get(pb::BatchGetRequest { keys: gets }).await;
    expect_code(refused, Code::ResourceExhausted, "BatchGet of 4097 keys");
    let found = batch_get_all(&mut client, &keys("ok", BATCH_LEN_MAX), BATCH_LEN_MAX).await;
    for (r, v) in found.iter().zip(&versions) {
        assert_eq!((r.found, r.value.as_ref(), r.version), (true, &b"v"[..], *v), "BatchGet of 4096 keys");
    }
}

#[tokio::test]
async fn batches_over_their_byte_limit_are_resource_exhausted() {
    let home = NodeHome::new(&settings());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let value = Bytes::from(vec![b'v'; MAX_VALUE]);

    // Exactly 64 MiB of key and value bytes: 63 values of 1 MiB and one that
    // makes up the rest, keys included.
    let mut entries: Vec<pb::PutRequest> = (0..63).map(|i| put_req(format!("big-{i:02}"), value.clone(), 0)).collect();
    let keys_len: usize = entries.iter().map(|e| e.key.len()).sum::<usize>() + "big-63".len();
    let last_len = BATCH_BYTES_MAX - 63 * MAX_VALUE - keys_len;
    entries.push(put_req("big-63", vec![b'w'; last_len], 0));
    assert_eq!(entries.iter().map(|e| e.key.len() + e.value.len()).sum::<usize>(), BATCH_BYTES_MAX);

    // One byte more (in the last value) is refused, and writes nothing.
    let before = written(&mut client).await;
    let mut over = entries.clone();
    over[63].value = Bytes::from(vec![b'w'; last_len + 1]);
    let refused = client.batch_put(pb::BatchPutRequest { entries: over }).await;
    expect_code(refused, Code::ResourceExhausted, "BatchPut of 64 MiB + 1 byte");
    assert_untouched(&mut client, before, "BatchPut of 64 MiB + 1 byte").await;
    assert_holds(&mut client, b"", b"big-00", None).await;
    assert_holds(&mut client, b"", b"big-63", None).await;

    // Far over, past the gRPC message limit too (70 MiB): the same code.
    let far: Vec<pb::PutRequest> = (0..70).map(|i| put_req(format!("far-{i:02}"), value.clone(), 0)).collect();
    let refused = client.batch_put(pb::BatchPutRequest { entries: far }).await;
    expect_code(refused, Code::ResourceExhausted, "BatchPut of 70 MiB");
    assert_untouched(&mut client, before, "BatchPut of 70 MiB").await;
    assert_holds(&mut client, b"", b"far-00", None).await;

    // Exactly 64 MiB is accepted.
    let accepted = client.batch_put(pb::BatchPutRequest { entries }).await.expect("BatchPut of exactly 64 MiB");
    assert!(accepted.into_inner().results.iter().all(|r| r.applied));

    // BatchGet: the 64 values (under 64 MiB of values) come back; one more
    // value of 1 MiB takes the answer over 64 MiB.
    put(&mut client, "big-64", value.clone(), 0).await;
    let names: Vec<String> = (0..65).map(|i| format!("big-{i:02}")).collect();
    let results = batch_get_all(&mut client, &names[..64], 64).await;
    assert!(results.iter().all(|r| r.found), "BatchGet under the byte limit");
    assert_eq!(results.iter().map(|r| r.value.len()).sum::<usize>(), 63 * MAX_VALUE + last_len);
    let gets: Vec<pb::GetRequest> = names.iter().map(|k| get_req(k.clone())).collect();
    let refused = client.batch_get(pb::BatchGetRequest { keys: gets }).await;
    expect_code(refused, Code::ResourceExhausted, "BatchGet answering over 64 MiB");
}

#[tokio::test]
async fn bad_streams_are_refused_and_store_nothing() {
    let home = NodeHome::new(&settings());
    let node = home.start_serving().await;
    let mut client = node.client().await;
    let version = put(&mut client, "s", "previous", 0).await;
    let previous: Option<(&[u8], u64)> = Some((b"previous", version));
    let mib = || Bytes::from(vec![b'c'; MAX_VALUE]);

    let cases: Vec<(&str, Vec<pb::PutChunk>, Code)> = vec![
        (
            "data over total_size in one chunk",
            vec![first_chunk(b"", b"s", 10, vec![b'c'; 11])],
            Code::ResourceExhausted,
        ),
        (
            "data over total_size over chunks",
            vec![first_chunk(b"", b"s", 2 * MIB, mib()), chunk(mib()), chunk(mib())],
            Code::ResourceExhausted,
        ),
        (
            "a chunk over the gRPC message limit",
            vec![first_chunk(b"", b"s", 70 * MIB, vec![b'c'; 70 << 20])],
            Code::ResourceExhausted,
        ),
        (
            "total_size over the chunked value limit (64 GiB)",
            vec![first_chunk(b"", b"s", (64 << 30) + 1, "c")],
            Code::ResourceExhausted,
        ),
        (
            "a stream ending before total_size",
            vec![first_chunk(b"", b"s", 3 * MIB, mib()), chunk(mib())],
            Code::InvalidArgument,
        ),
        ("a first chunk without a key", vec![first_chunk(b"", b"", 2, "c"), chunk("c")], Code::InvalidArgument),
        (
            "a later chunk naming another key",
            vec![first_chunk(b"", b"s", 2, "c"), first_chunk(b"", b"other", 0, "c")],
            Code::InvalidArgument,
        ),
        ("an empty stream", vec![], Code::InvalidArgument),
    ];
    for (what, chunks, code) in cases {
        let before = written(&mut client).await;
        expect_code(put_stream(&mut client, chunks).await, code, what);
        assert_no_new_key(&mut client, before, what).await;
        assert_holds(&mut client, b"", b"s", previous).await;
        assert_holds(&mut client, b"", b"other", None).await;
    }
    // A stream that would have created its key leaves no key either.
    let before = written(&mut client).await;
    let short = put_stream(&mut client, vec![first_chunk(b"", b"new", 2 * MIB, mib())]).await;
    expect_code(short, Code::InvalidArgument, "a stream to a new key ending early");
    assert_no_new_key(&mut client, before, "a stream to a new key ending early").await;
    expect_code(client.get_stream(get_req("new")).await, Code::NotFound, "GetStream after a refused stream");

    expect_code(client.get_stream(get_req("never-written")).await, Code::NotFound, "GetStream of a missing key");
}
