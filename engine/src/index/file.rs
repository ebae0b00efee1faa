//! The few system calls the index makes besides mmap: an exclusive lock on
//! the file, and reserving disk blocks before a range is first written through
//! the mapping.
//!
//! Why reserve: writing through a shared mapping into a file hole that the
//! file system cannot back (disk full) raises SIGBUS, which would kill the
//! process. `fallocate` turns that into an `ENOSPC` error we can return.
//! (On copy-on-write file systems, btrfs for one, even that is no guarantee.)

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes an exclusive, non-blocking advisory lock on `file`, so two engines
/// never map the same index. `Ok(false)` when another holder has it.
pub fn lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: the descriptor is owned by `file` and stays open for the
        // call; flock touches no memory of ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Grows `file` from `old_len` to `new_len` bytes with blocks reserved.
/// File systems without `fallocate` get a plain (sparse) `set_len`.
pub fn grow(file: &File, old_len: u64, new_len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(old_len), libc::off_t::try_from(new_len - old_len)) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "index file length overflows off_t"));
    };
    loop {
        // SAFETY: the descriptor is owned by `file` and stays open for the
        // call; fallocate touches no memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return file.set_len(new_len),
            _ => {
                // A failed fallocate may leave blocks reserved past the end;
                // truncating to the old length hands them back.
                let _ = file.set_len(old_len);
                return Err(err);
            }
        }
    }
}
