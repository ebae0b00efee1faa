//! Compiles `opticache/v1/opticache.proto` into Rust (messages, client and
//! server) and writes the encoded file descriptor set that gRPC server
//! reflection serves.
//!
//! The `protoc` binary comes from the `protoc-bin-vendored` crate: the build
//! never depends on a system-wide protoc, so every machine generates the same
//! code from the same compiler.

use std::{env, path::PathBuf};

/// The one contract file, relative to `INCLUDE_DIR`: its import path mirrors
/// its package (`opticache.v1`), as protobuf style asks.
const PROTO_FILE: &str = "opticache/v1/opticache.proto";
/// The import root: this crate's directory.
const INCLUDE_DIR: &str = ".";
/// Stem of the descriptor file in OUT_DIR; `src/lib.rs` includes it by name.
const DESCRIPTOR_STEM: &str = "opticache_v1_descriptor";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    // Handing protoc's path to the prost config (rather than exporting
    // PROTOC) avoids mutating the process environment.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `bytes` fields become `Bytes`: a value decoded from a request can then
    // be a zero-copy slice of the receive buffer instead of a fresh Vec,
    // which matters for values of a MiB and more.
    config.bytes(["."]);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join(format!("{DESCRIPTOR_STEM}.bin")))
        // The default would watch the whole include dir (this crate, src/
        // included) and rerun protoc on every edit; watch the contract only.
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &[PROTO_FILE], &[INCLUDE_DIR])?;

    println!("cargo:rerun-if-changed={PROTO_FILE}");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
