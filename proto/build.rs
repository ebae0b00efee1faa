//! Compiles the two contracts into Rust (messages, client and server), each
//! with the encoded file descriptor set that gRPC server reflection serves:
//! `opticache/v1/opticache.proto` (the public API) and
//! `opticache/node/v1/node.proto` (the internal node API).
//!
//! The `protoc` binary comes from the `protoc-bin-vendored` crate: the build
//! never depends on a system-wide protoc, so every machine generates the same
//! code from the same compiler.

use std::{env, path::PathBuf};

/// The contract files, relative to `INCLUDE_DIR`, each with the stem of its
/// descriptor file in OUT_DIR (`src/lib.rs` includes them by name). Import
/// paths mirror packages (`opticache.v1`), as protobuf style asks.
const PROTOS: [(&str, &str); 3] = [
    ("opticache/v1/opticache.proto", "opticache_v1_descriptor"),
    ("opticache/node/v1/node.proto", "opticache_node_v1_descriptor"),
    ("opticache/coordinator/v1/peer.proto", "opticache_coordinator_v1_descriptor"),
];
/// The import root: this crate's directory.
const INCLUDE_DIR: &str = ".";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    for (proto_file, descriptor_stem) in PROTOS {
        // Handing protoc's path to the prost config (rather than exporting
        // PROTOC) avoids mutating the process environment.
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(&protoc);
        // `bytes` fields become `Bytes`: a value decoded from a request can then
        // be a zero-copy slice of the receive buffer instead of a fresh Vec,
        // which matters for values of a MiB and more.
        config.bytes(["."]);

        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .file_descriptor_set_path(out_dir.join(format!("{descriptor_stem}.bin")))
            // The default would watch the whole include dir (this crate, src/
            // included) and rerun protoc on every edit; watch the contracts only.
            .emit_rerun_if_changed(false)
            .compile_with_config(config, &[proto_file], &[INCLUDE_DIR])?;
        println!("cargo:rerun-if-changed={proto_file}");
    }

    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
