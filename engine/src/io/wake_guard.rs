//! Bounds how long a glommio executor can sleep through work it was woken
//! for: every registered executor thread gets a no-op signal every
//! [`NUDGE_INTERVAL_MS`], which ends its `io_uring_enter` wait with `EINTR`
//! (glommio 0.9 treats that as a normal wake-up and polls all its rings).
//!
//! Why: glommio 0.9 sleeps in its main io_uring ring, linked to its latency
//! ring (where its timers and its cross-thread wake-ups arrive) by a poll on
//! that ring's fd. On this machine's kernel (6.18) that link very rarely
//! fails: an executor waiting on its blocking-thread pool (an index
//! checkpoint) slept for over an hour with its wake-up pending, which was the
//! CI hang of the recovery tests. Any interruption of the wait recovers it
//! (attaching a debugger did). Upstream glommio saw the same hangs (issues
//! #326 and #547) and proposed dropping the ring link (pull request #552),
//! which no release contains. So a lost wake-up now costs at most one
//! interval instead of hanging a shard.
//!
//! Invariants:
//! - the signal's handler does nothing and is installed with `SA_RESTART`,
//!   so other system calls on the thread restart instead of failing;
//! - a thread is signalled only while a [`WakeGuard`] for it is alive, and by
//!   `tgkill` on its kernel thread id within this process, so a thread that
//!   has exited is never hit (the call fails with `ESRCH` at worst);
//! - one nudger thread serves the whole process, started on first use;
//! - every `Engine` and every `DmaStorage` holds a guard for its thread, so
//!   any executor that runs engine or DMA work is covered.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How often every registered executor thread is interrupted: the longest a
/// lost wake-up can stall it.
pub const NUDGE_INTERVAL_MS: u64 = 10;
/// The signal used. Its default action is to ignore it, so a stray one
/// (before the handler is installed, or sent by someone else) harms nothing.
const NUDGE_SIGNAL: libc::c_int = libc::SIGURG;

/// Registered threads: guard id -> kernel thread id.
fn registry() -> &'static Mutex<HashMap<u64, libc::pid_t>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, libc::pid_t>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Keeps the thread that created it nudged until it is dropped. Not `Send`:
/// it belongs to its executor thread.
#[derive(Debug)]
pub struct WakeGuard {
    id: u64,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl WakeGuard {
    /// Registers the calling thread (a glommio executor's) to be nudged.
    pub fn for_this_thread() -> io::Result<WakeGuard> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        start_nudger()?;
        // SAFETY: gettid has no preconditions and touches no memory.
        let tid = unsafe { libc::gettid() };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().lock().unwrap_or_else(|e| e.into_inner()).insert(id, tid);
        Ok(WakeGuard { id, _not_send: std::marker::PhantomData })
    }
}

impl Drop for WakeGuard {
    fn drop(&mut self) {
        registry().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

extern "C" fn on_nudge(_signal: libc::c_int) {}

/// Installs the handler and starts the nudger thread, once per process.
fn start_nudger() -> io::Result<()> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        install_handler().map_err(|e| format!("cannot install the {NUDGE_SIGNAL} handler: {e}"))?;
        std::thread::Builder::new()
            .name("glommio-nudger".into())
            .spawn(nudge_forever)
            .map(|_| ())
            .map_err(|e| format!("cannot start the nudger thread: {e}"))
    });
    started.clone().map_err(io::Error::other)
}

fn install_handler() -> io::Result<()> {
    // SAFETY: the sigaction struct is zero-initialised and then filled in
    // full; the handler is async-signal-safe (it does nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_nudge as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(NUDGE_SIGNAL, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn nudge_forever() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    loop {
        std::thread::sleep(Duration::from_millis(NUDGE_INTERVAL_MS));
        // A thread with an engine and its storage holds two guards: one
        // signal per thread is enough.
        // (The lock is held while signalling, so no guard is dropped meanwhile.)
        let registered = registry().lock().unwrap_or_else(|e| e.into_inner());
        let threads: std::collections::HashSet<libc::pid_t> = registered.values().copied().collect();
        for &tid in &threads {
            // SAFETY: tgkill only sends a signal; a thread that is gone
            // makes it fail with ESRCH, which is ignored.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, NUDGE_SIGNAL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_registers_its_thread_until_dropped() {
        let guard = WakeGuard::for_this_thread().expect("guard");
        // SAFETY: no preconditions.
        let tid = unsafe { libc::gettid() };
        assert_eq!(registry().lock().unwrap().get(&guard.id), Some(&tid));
        let id = guard.id;
        drop(guard);
        assert!(!registry().lock().unwrap().contains_key(&id));
    }

    #[test]
    fn a_nudged_thread_keeps_working_through_blocking_calls() {
        let _guard = WakeGuard::for_this_thread().expect("guard");
        // A sleep many intervals long is interrupted again and again; with
        // SA_RESTART and std's own EINTR handling it still sleeps in full.
        let started = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(10 * NUDGE_INTERVAL_MS));
        assert!(started.elapsed() >= Duration::from_millis(10 * NUDGE_INTERVAL_MS));
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = vec![7u8; 1 << 20];
        for i in 0..20 {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, &bytes).expect("write under nudges");
            assert_eq!(std::fs::read(&path).expect("read under nudges"), bytes);
        }
    }
}
