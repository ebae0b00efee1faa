//! The node's data directory: created and checked for writability at start,
//! locked so two nodes never share it, and holding the node's identity and
//! shard count.
//!
//! Layout: `disk_path/node.lock` (flock held for the process's life),
//! `disk_path/node.id` (a random id made on first start: a wiped disk is a
//! new node to the coordinators), `disk_path/shards` (the shard count the
//! data was written with), `disk_path/shard-NNN/` (one engine each).
//! Invariant: a data dir is only ever opened with the shard count it was
//! created with, because keys are routed to shards by a hash of that count.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOCK_FILE_NAME: &str = "node.lock";
const ID_FILE_NAME: &str = "node.id";
const SHARDS_FILE_NAME: &str = "shards";

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    #[error("data dir {path}: cannot create it: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("data dir {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("data dir {path} is in use by another opticache-node (pid {holder}); stop it or pick another --disk-path")]
    Locked { path: PathBuf, holder: String },
    #[error("data dir {path} was created with {found} shards but {wanted} are configured; a data dir keeps its shard count (keys are routed by it): set shards: {found} or use a new dir")]
    ShardCountChanged { path: PathBuf, found: u32, wanted: u32 },
    #[error("data dir {path}: {file} is unreadable or malformed: {reason}")]
    BadFile { path: PathBuf, file: &'static str, reason: String },
}

/// An opened, locked data dir. The lock is released when this is dropped
/// (or the process dies).
#[derive(Debug)]
pub struct DataDir {
    pub path: PathBuf,
    pub node_id: String,
    pub shards: u32,
    _lock: File,
}

impl DataDir {
    /// Creates (if needed), checks, locks and reads the data dir at `path`
    /// for a node with `shards` shards.
    pub fn open(path: &Path, shards: u32) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(path).map_err(|source| DataDirError::Create { path: path.to_path_buf(), source })?;
        // Absolute from here on: glommio opens directories by a path that
        // must not depend on the working directory (a relative one fails
        // with EBADF), and logs then name the real place.
        let path =
            &fs::canonicalize(path).map_err(|source| DataDirError::Create { path: path.to_path_buf(), source })?;
        let lock = lock(path)?;
        let node_id = read_or_create(path, ID_FILE_NAME, new_node_id)?;
        let found = read_or_create(path, SHARDS_FILE_NAME, || shards.to_string())?;
        let found: u32 = found.parse().map_err(|_| DataDirError::BadFile {
            path: path.to_path_buf(),
            file: SHARDS_FILE_NAME,
            reason: format!("{found:?} is not a shard count"),
        })?;
        if found != shards {
            return Err(DataDirError::ShardCountChanged { path: path.to_path_buf(), found, wanted: shards });
        }
        Ok(DataDir { path: path.to_path_buf(), node_id, shards, _lock: lock })
    }
}

/// Takes the exclusive flock on the lock file and writes our pid into it.
fn lock(path: &Path) -> Result<File, DataDirError> {
    let lock_path = path.join(LOCK_FILE_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| DataDirError::NotWritable { path: path.to_path_buf(), source })?;
    // SAFETY: flock on a file descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = fs::read_to_string(&lock_path).map(|s| s.trim().to_string()).unwrap_or_default();
        let holder = if holder.is_empty() { "unknown".to_string() } else { holder };
        return Err(DataDirError::Locked { path: path.to_path_buf(), holder });
    }
    file.set_len(0)
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(|source| DataDirError::NotWritable { path: path.to_path_buf(), source })?;
    Ok(file)
}

/// The trimmed content of `name`, written first (durably) from `make` if absent.
fn read_or_create(dir: &Path, name: &'static str, make: impl FnOnce() -> String) -> Result<String, DataDirError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let value = make();
            write_durably(dir, name, &value)
                .map_err(|source| DataDirError::NotWritable { path: dir.to_path_buf(), source })?;
            Ok(value)
        }
        Err(e) => Err(DataDirError::BadFile { path: dir.to_path_buf(), file: name, reason: e.to_string() }),
    }
}

/// Writes `name` through a temporary file and a rename, then syncs the dir,
/// so a crash leaves either no file or the whole one.
fn write_durably(dir: &Path, name: &str, value: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(value.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// 128 random bits from the kernel, as hex.
fn new_node_id() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2) never fails for 16 bytes once the pool is initialised;
    // fall back to time and pid rather than refuse to start.
    // SAFETY: `bytes` is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path(), 2).unwrap();
        let err = DataDir::open(dir.path(), 2).unwrap_err();
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
        let id = first.node_id.clone();
        drop(first);
        let again = DataDir::open(dir.path(), 2).unwrap();
        assert_eq!(again.node_id, id, "the id is stable across restarts");
        assert_eq!(again.node_id.len(), 32);
    }

    #[test]
    fn a_relative_path_is_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff_from(&cwd, &dir.path().join("rel"));
        let opened = DataDir::open(&relative, 1).unwrap();
        assert!(opened.path.is_absolute(), "{}", opened.path.display());
        assert_eq!(opened.path, fs::canonicalize(dir.path().join("rel")).unwrap());
    }

    /// `target` as a path relative to `base` (both absolute).
    fn pathdiff_from(base: &Path, target: &Path) -> PathBuf {
        let up = base.components().count() - 1;
        let mut rel = PathBuf::new();
        for _ in 0..up {
            rel.push("..");
        }
        rel.join(target.strip_prefix("/").unwrap())
    }

    #[test]
    fn shard_count_is_fixed_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::open(dir.path(), 2).unwrap());
        let err = DataDir::open(dir.path(), 3).unwrap_err();
        assert!(matches!(err, DataDirError::ShardCountChanged { found: 2, wanted: 3, .. }), "{err}");
    }

    #[test]
    fn an_unwritable_dir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, b"x").unwrap();
        let err = DataDir::open(&file.join("sub"), 1).unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
