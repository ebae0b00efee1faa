//! Dev-only helpers shared by the workspace's tests and benchmarks (a
//! `[dev-dependencies]` of the crates that use it, never shipped):
//!
//! - [`node_binary`]: the `opticache-node` binary next to a test's own
//!   binary (same profile directory), built once per test process when it is
//!   missing or older than its sources. `CARGO_BIN_EXE_*` only exists for a
//!   package's own binaries, so other packages' tests find it this way.
//! - [`Server`]: a server process (a node, Redis) on its temporary dir,
//!   killed and reaped when dropped.
//!
//! Paths that only the calling test crate knows (its `CARGO_BIN_EXE_*`) are
//! passed in; the workspace root is this crate's parent directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace's root directory (this crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testsupport sits in the workspace").to_path_buf()
}

/// The newest modification time of the sources the node binary is built
/// from (its crate and the workspace crates it uses).
fn node_sources_mtime() -> SystemTime {
    fn walk(path: &Path, newest: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), newest);
                }
            }
        } else if let Ok(modified) = meta.modified() {
            *newest = (*newest).max(modified);
        }
    }
    let root = workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for crate_dir in ["node", "engine", "common", "proto", "security"] {
        for part in ["src", "Cargo.toml", "build.rs", "opticache"] {
            walk(&root.join(crate_dir).join(part), &mut newest);
        }
    }
    newest
}

/// The `opticache-node` binary of the same profile as `sibling`, a binary
/// of the package under test (its `env!("CARGO_BIN_EXE_<name>")`): found in
/// `sibling`'s directory and built (once per test process) when it is
/// missing or older than its sources.
pub fn node_binary(sibling: &Path) -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = sibling.parent().expect("the binary under test has a directory");
        let node = dir.join("opticache-node");
        let built = std::fs::metadata(&node).and_then(|m| m.modified()).ok();
        if built.is_none_or(|b| b < node_sources_mtime()) {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.current_dir(workspace_root()).args(["build", "-p", "opticache-node", "--bin", "opticache-node"]);
            // target/debug is the dev profile; any other directory is named after its profile.
            match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some(profile) => {
                    cargo.args(["--profile", profile]);
                }
            }
            let status = cargo.status().expect("run cargo build for opticache-node");
            assert!(status.success(), "cargo build -p opticache-node failed: {status}");
            assert!(node.exists(), "cargo built opticache-node, but not at {}", node.display());
        }
        node
    })
}

/// A server process (the node, or Redis) on a temporary dir, killed when dropped.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub address: String,
    /// The server's directory, removed after the process is gone.
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
