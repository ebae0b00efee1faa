//! A [`Storage`] wrapper that fails on purpose: it counts the calls made
//! through it and makes a chosen one (or every one from it on) return an
//! error, so tests can reach every error path of the engine.
//!
//! Invariants this wrapper keeps:
//! - every call is counted, failed or not, in [`FaultHandle::calls`]; only
//!   the calls whose operation is in the plan's [`FaultOps`] count toward the
//!   plan's `nth`;
//! - an injected fault happens *instead of* the call: the inner storage never
//!   sees it (a failed write wrote nothing, a failed sync synced nothing);
//! - an injected fault is an `io::ErrorKind::Other` error whose message names
//!   the operation (`injected fault: write_at`) and whose inner error is an
//!   [`InjectedFault`], so a test can tell it from a real one;
//! - `alloc_buf` and `alignment` are not I/O and are never failed or counted.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::ops::BitOr;
use std::rc::Rc;

use super::{Storage, StorageFile};

/// One kind of call through the [`Storage`] traits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultOp {
    /// [`Storage::open`].
    Open,
    /// [`Storage::remove`].
    Remove,
    /// [`Storage::list`].
    List,
    /// [`Storage::sync_dir`].
    SyncDir,
    /// [`StorageFile::read_at`].
    ReadAt,
    /// [`StorageFile::write_at`].
    WriteAt,
    /// [`StorageFile::sync`].
    Sync,
    /// [`StorageFile::len`].
    Len,
    /// [`StorageFile::set_len`].
    SetLen,
}

impl FaultOp {
    /// Every operation, in declaration order.
    pub const ALL: [FaultOp; 9] = [
        FaultOp::Open,
        FaultOp::Remove,
        FaultOp::List,
        FaultOp::SyncDir,
        FaultOp::ReadAt,
        FaultOp::WriteAt,
        FaultOp::Sync,
        FaultOp::Len,
        FaultOp::SetLen,
    ];

    /// The method's name, as it appears in error messages.
    pub fn name(self) -> &'static str {
        match self {
            FaultOp::Open => "open",
            FaultOp::Remove => "remove",
            FaultOp::List => "list",
            FaultOp::SyncDir => "sync_dir",
            FaultOp::ReadAt => "read_at",
            FaultOp::WriteAt => "write_at",
            FaultOp::Sync => "sync",
            FaultOp::Len => "len",
            FaultOp::SetLen => "set_len",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for FaultOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`FaultOp`]s: which calls a plan may fail. Combine with `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultOps(u16);

impl FaultOps {
    /// No operation.
    pub const NONE: FaultOps = FaultOps(0);
    /// Every operation.
    pub const ALL: FaultOps = FaultOps((1 << FaultOp::ALL.len()) - 1);
    /// Data writes: `write_at`.
    pub const WRITES: FaultOps = FaultOps(FaultOp::WriteAt.bit());
    /// Reads: `read_at`.
    pub const READS: FaultOps = FaultOps(FaultOp::ReadAt.bit());
    /// Durability barriers: `sync` and `sync_dir`.
    pub const SYNCS: FaultOps = FaultOps(FaultOp::Sync.bit() | FaultOp::SyncDir.bit());
    /// Everything that changes the disk: `write_at`, `set_len`, `open`
    /// (which may create), `remove`.
    pub const MUTATIONS: FaultOps =
        FaultOps(FaultOp::WriteAt.bit() | FaultOp::SetLen.bit() | FaultOp::Open.bit() | FaultOp::Remove.bit());

    /// The set holding only `op`.
    pub fn only(op: FaultOp) -> FaultOps {
        FaultOps(op.bit())
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: FaultOp) -> bool {
        self.0 & op.bit() != 0
    }
}

impl From<FaultOp> for FaultOps {
    fn from(op: FaultOp) -> FaultOps {
        FaultOps::only(op)
    }
}

impl<T: Into<FaultOps>> BitOr<T> for FaultOps {
    type Output = FaultOps;

    fn bitor(self, rhs: T) -> FaultOps {
        FaultOps(self.0 | rhs.into().0)
    }
}

impl fmt::Debug for FaultOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(FaultOp::ALL.iter().filter(|op| self.contains(**op))).finish()
    }
}

/// Whether a plan fails one call or every call from it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Only the `nth` matching call fails; later ones succeed (a transient
    /// error, e.g. one EIO).
    Once,
    /// The `nth` matching call and every matching call after it fail (a dead
    /// disk).
    FromThenOn,
}

/// Which call to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// 1-based: the `nth` matching call after arming fails.
    nth: u64,
    mode: FaultMode,
    ops: FaultOps,
}

impl FaultPlan {
    /// Fails only the `nth` call (1 = the next one) of any operation.
    ///
    /// # Panics
    /// If `nth` is 0: there is no 0th call.
    pub fn nth(nth: u64) -> FaultPlan {
        assert!(nth >= 1, "calls are counted from 1");
        FaultPlan { nth, mode: FaultMode::Once, ops: FaultOps::ALL }
    }

    /// Fails the `nth` call and every call after it.
    ///
    /// # Panics
    /// If `nth` is 0.
    pub fn from_nth(nth: u64) -> FaultPlan {
        FaultPlan { mode: FaultMode::FromThenOn, ..FaultPlan::nth(nth) }
    }

    /// The same plan, counting and failing only the operations in `ops`
    /// (`nth` then means the `nth` call among those).
    pub fn only(self, ops: impl Into<FaultOps>) -> FaultPlan {
        FaultPlan { ops: ops.into(), ..self }
    }

    /// Which matching call fails first.
    pub fn nth_call(&self) -> u64 {
        self.nth
    }

    /// Once or from then on.
    pub fn mode(&self) -> FaultMode {
        self.mode
    }

    /// The operations counted and failed.
    pub fn ops(&self) -> FaultOps {
        self.ops
    }
}

/// The error inside every injected `io::Error`; see
/// [`InjectedFault::is_injected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("injected fault: {op}")]
pub struct InjectedFault {
    /// The operation that was failed.
    pub op: FaultOp,
}

impl InjectedFault {
    /// The injected fault `err` carries, if it is one.
    pub fn of(err: &io::Error) -> Option<InjectedFault> {
        err.get_ref()?.downcast_ref::<InjectedFault>().copied()
    }

    /// Whether `err` was injected by a [`FaultyStorage`] rather than real.
    pub fn is_injected(err: &io::Error) -> bool {
        Self::of(err).is_some()
    }
}

/// The countdown and the counters, shared by the storage, its files and the
/// handles.
#[derive(Debug, Default)]
struct FaultState {
    /// The armed plan, if any.
    plan: Cell<Option<FaultPlan>>,
    /// Calls matching the plan since it was armed.
    matching: Cell<u64>,
    /// Every call made, per operation (indexed by `FaultOp as usize`).
    calls: [Cell<u64>; FaultOp::ALL.len()],
    /// How many faults were injected.
    faults: Cell<u64>,
}

impl FaultState {
    /// Counts a call of `op` and decides whether it fails.
    fn check(&self, op: FaultOp) -> io::Result<()> {
        let counter = &self.calls[op as usize];
        counter.set(counter.get() + 1);
        let Some(plan) = self.plan.get() else {
            return Ok(());
        };
        if !plan.ops.contains(op) {
            return Ok(());
        }
        let n = self.matching.get() + 1;
        self.matching.set(n);
        let fails = match plan.mode {
            FaultMode::Once => n == plan.nth,
            FaultMode::FromThenOn => n >= plan.nth,
        };
        if !fails {
            return Ok(());
        }
        self.faults.set(self.faults.get() + 1);
        Err(io::Error::other(InjectedFault { op }))
    }
}

/// A handle on a [`FaultyStorage`]'s countdown: re-arm it, disarm it, read
/// its counters. Clones share the same countdown.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    state: Rc<FaultState>,
}

impl FaultHandle {
    /// Replaces the plan; calls are counted toward it from now on.
    pub fn arm(&self, plan: FaultPlan) {
        self.state.plan.set(Some(plan));
        self.state.matching.set(0);
    }

    /// No more faults; counting of calls goes on.
    pub fn disarm(&self) {
        self.state.plan.set(None);
        self.state.matching.set(0);
    }

    /// The plan in force.
    pub fn plan(&self) -> Option<FaultPlan> {
        self.state.plan.get()
    }

    /// Every call made through the storage and its files so far.
    pub fn calls(&self) -> u64 {
        self.state.calls.iter().map(Cell::get).sum()
    }

    /// The calls of `op` made so far.
    pub fn calls_of(&self, op: FaultOp) -> u64 {
        self.state.calls[op as usize].get()
    }

    /// The calls matching the plan since it was armed (0 when disarmed).
    pub fn matching_calls(&self) -> u64 {
        self.state.matching.get()
    }

    /// How many faults were injected so far.
    pub fn faults(&self) -> u64 {
        self.state.faults.get()
    }
}

/// Wraps `S`, failing calls as its [`FaultPlan`] says. Clones share the
/// countdown.
#[derive(Clone, Debug)]
pub struct FaultyStorage<S: Storage> {
    inner: S,
    state: Rc<FaultState>,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner` with no plan armed: every call passes and is counted.
    pub fn new(inner: S) -> FaultyStorage<S> {
        FaultyStorage { inner, state: Rc::default() }
    }

    /// Wraps `inner` with `plan` armed.
    pub fn with_plan(inner: S, plan: FaultPlan) -> FaultyStorage<S> {
        let storage = Self::new(inner);
        storage.handle().arm(plan);
        storage
    }

    /// A handle on the countdown, to re-arm it and read the counters.
    pub fn handle(&self) -> FaultHandle {
        FaultHandle { state: Rc::clone(&self.state) }
    }

    /// The wrapped storage (calls through it are neither counted nor failed).
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    type File = FaultyFile<S::File>;
    type Buf = S::Buf;

    async fn open(&self, name: &str, create: bool) -> io::Result<Self::File> {
        self.state.check(FaultOp::Open)?;
        let inner = self.inner.open(name, create).await?;
        Ok(FaultyFile { inner, state: Rc::clone(&self.state) })
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        self.state.check(FaultOp::Remove)?;
        self.inner.remove(name).await
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        self.state.check(FaultOp::List)?;
        self.inner.list().await
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.state.check(FaultOp::SyncDir)?;
        self.inner.sync_dir().await
    }

    fn alloc_buf(&self, len: usize) -> Self::Buf {
        self.inner.alloc_buf(len)
    }
}

/// A file of a [`FaultyStorage`], counted on the storage's countdown.
#[derive(Debug)]
pub struct FaultyFile<F: StorageFile> {
    inner: F,
    state: Rc<FaultState>,
}

impl<F: StorageFile> FaultyFile<F> {
    /// The wrapped file (calls through it are neither counted nor failed).
    pub fn inner(&self) -> &F {
        &self.inner
    }
}

impl<F: StorageFile> StorageFile for FaultyFile<F> {
    type Buf = F::Buf;
    type ReadBuf = F::ReadBuf;

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<F::ReadBuf> {
        self.state.check(FaultOp::ReadAt)?;
        self.inner.read_at(pos, len).await
    }

    async fn write_at(&self, pos: u64, buf: F::Buf) -> io::Result<()> {
        self.state.check(FaultOp::WriteAt)?;
        self.inner.write_at(pos, buf).await
    }

    async fn sync(&self) -> io::Result<()> {
        self.state.check(FaultOp::Sync)?;
        self.inner.sync().await
    }

    async fn len(&self) -> io::Result<u64> {
        self.state.check(FaultOp::Len)?;
        self.inner.len().await
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.check(FaultOp::SetLen)?;
        self.inner.set_len(len).await
    }

    fn alignment(&self) -> u64 {
        self.inner.alignment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::crash::CrashStorage;
    use futures_lite::future::block_on;

    const BLOCK: usize = 4096;

    fn faulty(plan: Option<FaultPlan>) -> (FaultyStorage<CrashStorage>, FaultHandle) {
        let storage = FaultyStorage::new(CrashStorage::new());
        let handle = storage.handle();
        if let Some(plan) = plan {
            handle.arm(plan);
        }
        (storage, handle)
    }

    /// One call of every operation, returning which ones failed.
    async fn one_of_each(s: &FaultyStorage<CrashStorage>) -> Vec<FaultOp> {
        let mut failed = Vec::new();
        let mut note = |op: FaultOp, r: io::Result<()>| {
            if let Err(e) = r {
                assert_eq!(InjectedFault::of(&e), Some(InjectedFault { op }), "{e}");
                failed.push(op);
            }
        };
        // The file operations need a file: if open failed, the wrapped
        // storage opens one, on the same countdown.
        let file = match s.open("f", true).await {
            Ok(f) => f,
            Err(e) => {
                note(FaultOp::Open, Err(e));
                FaultyFile { inner: s.inner().open("f", true).await.unwrap(), state: Rc::clone(&s.state) }
            }
        };
        note(FaultOp::Remove, s.remove("missing").await.or_else(not_found_is_ok));
        note(FaultOp::List, s.list().await.map(drop));
        note(FaultOp::SyncDir, s.sync_dir().await);
        note(FaultOp::ReadAt, file.read_at(0, 1).await.map(drop));
        note(FaultOp::WriteAt, file.write_at(0, s.alloc_buf(BLOCK)).await);
        note(FaultOp::Sync, file.sync().await);
        note(FaultOp::Len, file.len().await.map(drop));
        note(FaultOp::SetLen, file.set_len(0).await);
        failed
    }

    fn not_found_is_ok(e: io::Error) -> io::Result<()> {
        if e.kind() == io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    }

    #[test]
    fn every_call_is_counted_and_none_fails_when_disarmed() {
        block_on(async {
            let (s, h) = faulty(None);
            assert!(one_of_each(&s).await.is_empty());
            assert_eq!(h.calls(), 9);
            for op in FaultOp::ALL {
                assert_eq!(h.calls_of(op), 1, "{op}");
            }
            assert_eq!(h.faults(), 0);
            s.alloc_buf(BLOCK);
            assert_eq!(h.calls(), 9, "alloc_buf is not I/O");
        });
    }

    #[test]
    fn the_nth_call_fails_once_naming_the_operation() {
        for (nth, op) in (1..).zip(FaultOp::ALL) {
            block_on(async {
                let (s, h) = faulty(Some(FaultPlan::nth(nth)));
                // one_of_each calls the operations in FaultOp::ALL order.
                assert_eq!(one_of_each(&s).await, [op], "nth {nth}");
                assert_eq!(h.faults(), 1);
                assert!(one_of_each(&s).await.is_empty(), "only once");
            });
        }
    }

    #[test]
    fn from_nth_fails_every_later_call() {
        block_on(async {
            let (s, h) = faulty(Some(FaultPlan::from_nth(6)));
            assert_eq!(one_of_each(&s).await, [FaultOp::WriteAt, FaultOp::Sync, FaultOp::Len, FaultOp::SetLen]);
            assert_eq!(one_of_each(&s).await, FaultOp::ALL);
            assert_eq!(h.faults(), 4 + 9);
            assert_eq!(h.calls(), 18, "failed calls are counted too");
        });
    }

    #[test]
    fn the_message_names_the_operation() {
        block_on(async {
            let (s, _) = faulty(Some(FaultPlan::nth(1).only(FaultOp::WriteAt)));
            let f = s.open("f", true).await.unwrap();
            let err = f.write_at(0, s.alloc_buf(BLOCK)).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Other);
            assert_eq!(err.to_string(), "injected fault: write_at");
            assert!(InjectedFault::is_injected(&err));
            let real = io::Error::other("disk on fire");
            assert!(!InjectedFault::is_injected(&real));
        });
    }

    #[test]
    fn a_filter_counts_and_fails_only_its_operations() {
        block_on(async {
            let (s, h) = faulty(Some(FaultPlan::nth(2).only(FaultOps::SYNCS)));
            assert_eq!(one_of_each(&s).await, [FaultOp::Sync], "sync_dir was the first");
            assert_eq!(h.matching_calls(), 2, "sync_dir and sync");
            assert_eq!(h.calls(), 9, "all calls are counted, matching or not");
            let (s, _) = faulty(Some(FaultPlan::nth(2).only(FaultOps::SYNCS)));
            s.sync_dir().await.unwrap();
            assert_eq!(one_of_each(&s).await, [FaultOp::SyncDir]);

            let (s, _) = faulty(Some(FaultPlan::from_nth(1).only(FaultOps::WRITES | FaultOp::SetLen)));
            assert_eq!(one_of_each(&s).await, [FaultOp::WriteAt, FaultOp::SetLen]);

            let (s, _) = faulty(Some(FaultPlan::from_nth(1).only(FaultOps::MUTATIONS)));
            assert_eq!(one_of_each(&s).await, [FaultOp::Open, FaultOp::Remove, FaultOp::WriteAt, FaultOp::SetLen]);
            let (s, _) = faulty(Some(FaultPlan::from_nth(1).only(FaultOps::READS)));
            assert_eq!(one_of_each(&s).await, [FaultOp::ReadAt]);
            let (s, _) = faulty(Some(FaultPlan::from_nth(1).only(FaultOps::NONE)));
            assert!(one_of_each(&s).await.is_empty());
        });
    }

    #[test]
    fn a_failed_call_never_reaches_the_inner_storage() {
        block_on(async {
            let (s, h) = faulty(Some(FaultPlan::nth(1).only(FaultOp::WriteAt)));
            let f = s.open("f", true).await.unwrap();
            let mut buf = s.alloc_buf(BLOCK);
            buf.fill(1);
            f.write_at(0, buf).await.unwrap_err();
            assert_eq!(f.inner().len().await.unwrap(), 0);
            h.arm(FaultPlan::nth(1).only(FaultOp::Open));
            s.open("g", true).await.unwrap_err();
            assert_eq!(s.inner().list().await.unwrap(), ["f"]);
        });
    }

    #[test]
    fn rearming_restarts_the_countdown_and_disarming_stops_it() {
        block_on(async {
            let (s, h) = faulty(Some(FaultPlan::nth(3)));
            s.list().await.unwrap();
            s.list().await.unwrap();
            h.arm(FaultPlan::nth(2));
            assert_eq!(h.matching_calls(), 0);
            s.list().await.unwrap();
            s.list().await.unwrap_err();
            h.disarm();
            assert_eq!(h.plan(), None);
            for _ in 0..5 {
                s.list().await.unwrap();
            }
            assert_eq!(h.calls(), 9);
            assert_eq!(h.faults(), 1);
            // Clones and files share the one countdown.
            let clone = s.clone();
            h.arm(FaultPlan::nth(2));
            s.list().await.unwrap();
            clone.list().await.unwrap_err();
            let with_plan = FaultyStorage::with_plan(CrashStorage::new(), FaultPlan::nth(1));
            with_plan.list().await.unwrap_err();
        });
    }

    #[test]
    #[should_panic(expected = "calls are counted from 1")]
    fn there_is_no_zeroth_call() {
        let _ = FaultPlan::nth(0);
    }

    #[test]
    fn fault_ops_set_algebra() {
        assert!(FaultOp::ALL.iter().all(|op| FaultOps::ALL.contains(*op)));
        assert!(FaultOp::ALL.iter().all(|op| !FaultOps::NONE.contains(*op)));
        let set = FaultOps::only(FaultOp::Len) | FaultOp::Sync;
        assert_eq!(set, FaultOps::only(FaultOp::Sync) | FaultOps::only(FaultOp::Len));
        assert!(set.contains(FaultOp::Len) && set.contains(FaultOp::Sync));
        assert!(!set.contains(FaultOp::Open));
        assert_eq!(format!("{set:?}"), "{Sync, Len}");
    }
}
