//! OptiCache's gRPC contracts, compiled for Rust: the public API
//! (`opticache.v1`) and the internal node API (`opticache.node.v1`, see
//! [`node::v1`] and `proto/opticache/node/v1/node.proto`).
//!
//! `proto/opticache/v1/opticache.proto` is the single source of truth; this
//! crate is generated from it at build time, so every other crate
//! (coordinator, node, client, loadgen) speaks exactly the same wire format.
//! The one hand-written part, [`fencing`], is a wire convention too: the
//! status metadata with which a node names the epoch that fenced a write.
//!
//! - [`v1`]: the messages, the enums [`v1::Role`] and [`v1::NodeState`], the
//!   client ([`v1::opti_cache_client::OptiCacheClient`]) and the server
//!   ([`v1::opti_cache_server::OptiCacheServer`] around the
//!   [`v1::opti_cache_server::OptiCache`] trait).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptor that gRPC server
//!   reflection registers, so `grpcurl` works without the .proto file.
//!
//! Invariant: field names and numbers never change; fields may only be added
//! under new numbers. The tests below pin the wire bytes of every field, so a
//! renumbering fails `cargo test` instead of breaking deployed clients.
//!
//! `bytes` fields are generated as [`prost::bytes::Bytes`]: a value decoded
//! from a request is then a slice of the receive buffer, not a copy.

pub mod fencing;

/// Package `opticache.v1`: messages, enums, client and server.
pub mod v1 {
    tonic::include_proto!("opticache.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of `opticache.v1`, for
/// registering with a gRPC server reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("opticache_v1_descriptor");

/// Package `opticache.node.v1`: the internal node API that coordinators and
/// smart clients speak to cache nodes.
pub mod node {
    pub mod v1 {
        tonic::include_proto!("opticache.node.v1");
    }
}

/// Package `opticache.coordinator.v1`: what the two coordinators tell each other.
pub mod coordinator {
    pub mod v1 {
        tonic::include_proto!("opticache.coordinator.v1");
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of `opticache.node.v1`.
pub const NODE_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("opticache_node_v1_descriptor");

#[cfg(test)]
mod tests {
    use prost::bytes::Bytes;
    use prost::Message;

    use super::v1::*;

    /// Encodes `msg` and checks the exact wire bytes: each field's tag byte
    /// is `(field_number << 3) | wire_type`, so these pin the numbers.
    fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
        let encoded = msg.encode_to_vec();
        assert_eq!(encoded, expected, "wire bytes of {msg:?}");
        assert_eq!(&M::decode(encoded.as_slice()).expect("decodes"), msg);
    }

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    // Wire types: 0 = varint, 2 = length-delimited.
    // Tag bytes for field n: varint 8n, length-delimited 8n + 2.

    #[test]
    fn write_request_key_is_field_2() {
        let msg = WriteRequest { key: b(b"k"), ..Default::default() };
        assert_wire(&msg, &[0x12, 1, b'k']);
    }

    #[test]
    fn write_request_and_response_field_numbers() {
        let msg = WriteRequest { namespace: "n".into(), key: b(b"k"), value: b(b"v"), ttl_ms: 5 };
        assert_wire(&msg, &[0x0a, 1, b'n', 0x12, 1, b'k', 0x1a, 1, b'v', 0x20, 5]);
        assert_wire(&WriteResponse { version: 7 }, &[0x08, 7]);
    }

    #[test]
    fn read_request_and_response_field_numbers() {
        let req = ReadRequest { namespace: "n".into(), key: b(b"k") };
        assert_wire(&req, &[0x0a, 1, b'n', 0x12, 1, b'k']);
        let resp = ReadResponse { found: true, value: b(b"v"), version: 9 };
        assert_wire(&resp, &[0x08, 1, 0x12, 1, b'v', 0x18, 9]);
    }

    #[test]
    fn update_request_and_response_field_numbers() {
        let req = UpdateRequest { namespace: "n".into(), key: b(b"k"), value: b(b"v"), expected_version: 3, ttl_ms: 4 };
        assert_wire(&req, &[0x0a, 1, b'n', 0x12, 1, b'k', 0x1a, 1, b'v', 0x20, 3, 0x28, 4]);
        assert_wire(&UpdateResponse { version: 2 }, &[0x08, 2]);
    }

    #[test]
    fn delete_request_and_response_field_numbers() {
        let req = DeleteRequest { namespace: "n".into(), key: b(b"k") };
        assert_wire(&req, &[0x0a, 1, b'n', 0x12, 1, b'k']);
        assert_wire(&DeleteResponse { deleted: true }, &[0x08, 1]);
    }

    #[test]
    fn batch_messages_field_numbers() {
        let kv = KeyValue { key: b(b"k"), value: b(b"v"), ttl_ms: 6 };
        let kv_wire = [0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 6];
        assert_wire(&kv, &kv_wire);

        let write = BatchWriteRequest { namespace: "n".into(), entries: vec![kv] };
        let mut write_wire = vec![0x0a, 1, b'n', 0x12, kv_wire.len() as u8];
        write_wire.extend_from_slice(&kv_wire);
        assert_wire(&write, &write_wire);

        // proto3 packs repeated scalars: one length-delimited field 1.
        let versions = BatchWriteResponse { versions: vec![1, 2] };
        assert_wire(&versions, &[0x0a, 2, 1, 2]);

        let read = BatchReadRequest { namespace: "n".into(), keys: vec![b(b"a"), b(b"b")] };
        assert_wire(&read, &[0x0a, 1, b'n', 0x12, 1, b'a', 0x12, 1, b'b']);

        let results =
            BatchReadResponse { results: vec![ReadResponse { found: true, value: Bytes::new(), version: 1 }] };
        assert_wire(&results, &[0x0a, 4, 0x08, 1, 0x18, 1]);
    }

    #[test]
    fn stream_chunks_field_numbers() {
        let chunk = WriteChunk { namespace: "n".into(), key: b(b"k"), ttl_ms: 3, total_size: 4, data: b(b"d") };
        assert_wire(&chunk, &[0x0a, 1, b'n', 0x12, 1, b'k', 0x18, 3, 0x20, 4, 0x2a, 1, b'd']);
        let chunk = ReadChunk { version: 1, total_size: 2, data: b(b"d") };
        assert_wire(&chunk, &[0x08, 1, 0x10, 2, 0x1a, 1, b'd']);
    }

    #[test]
    fn cluster_status_field_numbers_and_enum_values() {
        assert_eq!(Role::Unspecified as i32, 0);
        assert_eq!(Role::Primary as i32, 1);
        assert_eq!(Role::Standby as i32, 2);
        assert_eq!(NodeState::Unspecified as i32, 0);
        assert_eq!(NodeState::Up as i32, 1);
        assert_eq!(NodeState::Suspect as i32, 2);
        assert_eq!(NodeState::Down as i32, 3);
        assert_eq!(NodeState::Recovering as i32, 4);
        // The names grpcurl and non-Rust clients see.
        assert_eq!(Role::Standby.as_str_name(), "STANDBY");
        assert_eq!(NodeState::Recovering.as_str_name(), "RECOVERING");

        assert_wire(&ClusterStatusRequest {}, &[]);
        let node = NodeStatus { address: "a".into(), state: NodeState::Down as i32, shards: 2, keys: 8, disk_bytes: 9 };
        let node_wire = [0x0a, 1, b'a', 0x10, 3, 0x18, 2, 0x20, 8, 0x28, 9];
        assert_wire(&node, &node_wire);
        let status = ClusterStatusResponse { role: Role::Primary as i32, epoch: 5, nodes: vec![node] };
        let mut status_wire = vec![0x08, 1, 0x10, 5, 0x1a, node_wire.len() as u8];
        status_wire.extend_from_slice(&node_wire);
        assert_wire(&status, &status_wire);
    }

    /// The subset of `google/protobuf/descriptor.proto` this test reads;
    /// prost skips every field not declared here.
    mod descriptor {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct FileDescriptorSet {
            #[prost(message, repeated, tag = "1")]
            pub file: Vec<FileDescriptorProto>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct FileDescriptorProto {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(string, tag = "2")]
            pub package: String,
            #[prost(message, repeated, tag = "6")]
            pub service: Vec<ServiceDescriptorProto>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ServiceDescriptorProto {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, repeated, tag = "2")]
            pub method: Vec<MethodDescriptorProto>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct MethodDescriptorProto {
            #[prost(string, tag = "1")]
            pub name: String,
        }
    }

    #[test]
    fn node_messages_field_numbers() {
        use crate::node::v1 as n;
        let put =
            n::PutRequest { namespace: b(b"n"), key: b(b"k"), value: b(b"v"), version: 3, expiry_unix_ms: 4, epoch: 9 };
        assert_wire(&put, &[0x0a, 1, b'n', 0x12, 1, b'k', 0x1a, 1, b'v', 0x20, 3, 0x28, 4, 0x30, 9]);
        let delete = n::DeleteRequest { namespace: b(b"n"), key: b(b"k"), version: 3, epoch: 9 };
        assert_wire(&delete, &[0x0a, 1, b'n', 0x12, 1, b'k', 0x18, 3, 0x20, 9]);
        assert_wire(&n::PutResponse { applied: true, version: 2 }, &[0x08, 1, 0x10, 2]);
        let update = n::UpdateRequest {
            namespace: b(b"n"),
            key: b(b"k"),
            value: b(b"v"),
            version: 3,
            expected_version: 5,
            expiry_unix_ms: 6,
            epoch: 9,
        };
        assert_wire(&update, &[0x0a, 1, b'n', 0x12, 1, b'k', 0x1a, 1, b'v', 0x20, 3, 0x28, 5, 0x30, 6, 0x38, 9]);
        let chunk = n::PutChunk {
            namespace: b(b"n"),
            key: b(b"k"),
            version: 1,
            expiry_unix_ms: 2,
            total_size: 3,
            data: b(b"d"),
            epoch: 9,
        };
        assert_wire(&chunk, &[0x0a, 1, b'n', 0x12, 1, b'k', 0x18, 1, 0x20, 2, 0x28, 3, 0x32, 1, b'd', 0x38, 9]);
        let list = n::ListKeysRequest { shard: 1, start_fingerprint: 2, end_fingerprint: 3, limit: 4 };
        assert_wire(&list, &[0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4]);
        assert_eq!(n::ServingState::Recovering as i32, 1);
        assert_eq!(n::ServingState::Serving as i32, 2);
        assert_eq!(n::ServingState::Draining as i32, 3);
    }

    #[test]
    fn coordinator_peer_messages_field_numbers() {
        use crate::coordinator::v1 as c;
        let node = c::PeerNode { address: "a".into(), state: c::PeerNodeState::Down as i32, missed_writes: 7 };
        let node_wire = [0x0a, 1, b'a', 0x10, 3, 0x18, 7];
        assert_wire(&node, &node_wire);
        let state = c::PeerState {
            role: c::PeerRole::Standby as i32,
            epoch: 4,
            configured_primary: true,
            address: "b".into(),
            nodes: vec![node],
        };
        let mut wire = vec![0x08, 2, 0x10, 4, 0x18, 1, 0x22, 1, b'b', 0x2a, node_wire.len() as u8];
        wire.extend_from_slice(&node_wire);
        assert_wire(&state, &wire);
    }

    #[test]
    fn node_descriptor_set_names_the_node_service() {
        let set = descriptor::FileDescriptorSet::decode(super::NODE_FILE_DESCRIPTOR_SET).expect("decodes");
        assert_eq!(set.file.len(), 1);
        assert_eq!(set.file[0].package, "opticache.node.v1");
        let methods: Vec<&str> = set.file[0].service[0].method.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            methods,
            [
                "Put",
                "Get",
                "Update",
                "Delete",
                "BatchPut",
                "BatchGet",
                "PutStream",
                "GetStream",
                "Heartbeat",
                "Stats",
                "ListKeys"
            ]
        );
    }

    #[test]
    fn descriptor_set_describes_the_service_for_reflection() {
        let set =
            descriptor::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes");
        assert_eq!(set.file.len(), 1);
        let file = &set.file[0];
        assert_eq!(file.name, "opticache/v1/opticache.proto");
        assert_eq!(file.package, "opticache.v1");
        assert_eq!(file.service.len(), 1);
        let service = &file.service[0];
        assert_eq!(service.name, "OptiCache");
        let methods: Vec<&str> = service.method.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            methods,
            [
                "WriteCache",
                "ReadCache",
                "UpdateCache",
                "DeleteCache",
                "BatchWrite",
                "BatchRead",
                "WriteStream",
                "ReadStream",
                "ClusterStatus",
            ]
        );
    }
}
