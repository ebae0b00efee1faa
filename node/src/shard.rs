//! One shard: a thread running a pinned glommio executor that owns one engine
//! under `disk_path/shard-NNN/`, and the handle the tonic front uses to reach it.
//!
//! The hop: the front sends a [`ShardRequest`] on the shard's bounded tokio
//! mpsc queue and awaits a tokio oneshot. Both are runtime-agnostic (wakers
//! only), and glommio wakes its parked executor through its eventfd when a
//! foreign thread wakes one of its tasks, so the hop costs one queue push and
//! one cross-thread wake each way, with no copy of keys or values (`Bytes`).
//! The shard spawns one task per request, so slow requests (a cold read, a
//! group commit waiting for its fdatasync) never block the queue.
//!
//! Invariants:
//! - the engine is used only on its executor thread;
//! - [`ShardRequest::Shutdown`] is handled after every request queued before
//!   it; the engine is closed (flushed and checkpointed) only after every
//!   request task has finished (a glommio `Gate`);
//! - a request the shard never answers (it stopped) drops its reply sender, which
//!   the front reports as UNAVAILABLE, never as a success.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use opticache_engine::config::EngineConfig;
use opticache_engine::engine::{DeleteOutcome, Engine, PutOutcome, UpdateOutcome, Value};
use opticache_engine::error::EngineError;
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::limits::EXECUTOR_IO_MEMORY_BYTES;
use opticache_engine::listing::KeyListing;
use opticache_engine::stats::EngineStats;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for a shard at most; a full queue makes the front wait
/// (backpressure) rather than buffer without bound.
pub const SHARD_QUEUE_LEN_MAX: usize = 4096;
/// Chunks in flight between a stream and its shard, each way: memory per
/// stream stays within a few chunks of 1 MiB whatever the value's size.
pub const STREAM_CHUNKS_IN_FLIGHT_MAX: usize = 2;
/// The index file's name inside a shard's directory.
pub const INDEX_FILE_NAME: &str = "index.map";

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// One write of a batch or a single put, already checked by the front.
#[derive(Debug)]
pub struct PutEntry {
    pub key: Bytes,
    pub value: Bytes,
    pub version: u64,
    pub expiry_ms: u64,
}

/// The first message of a streamed read.
#[derive(Debug)]
pub struct StreamHead {
    pub version: u64,
    pub total_len: u64,
    pub expiry_ms: u64,
}

/// What a shard is asked to do; every variant carries its reply channel.
#[derive(Debug)]
pub enum ShardRequest {
    Put {
        entry: PutEntry,
        reply: Reply<PutOutcome>,
    },
    Get {
        key: Bytes,
        reply: Reply<Option<Value>>,
    },
    Update {
        entry: PutEntry,
        expected_version: u64,
        reply: Reply<UpdateOutcome>,
    },
    Delete {
        key: Bytes,
        version: u64,
        reply: Reply<DeleteOutcome>,
    },
    /// The entries of one batch that belong to this shard, in order.
    BatchPut {
        entries: Vec<PutEntry>,
        reply: oneshot::Sender<Vec<Result<PutOutcome, EngineError>>>,
    },
    BatchGet {
        keys: Vec<Bytes>,
        reply: oneshot::Sender<Vec<Result<Option<Value>, EngineError>>>,
    },
    /// A chunked write: the shard appends what arrives on `chunks` until it
    /// closes, then commits (the engine checks exactly `total_len` bytes
    /// came); an `Err` on `chunks` abandons the write, leaving nothing visible.
    PutStream {
        key: Bytes,
        total_len: u64,
        version: u64,
        expiry_ms: u64,
        chunks: mpsc::Receiver<Result<Bytes, StreamAborted>>,
        reply: Reply<PutOutcome>,
    },
    /// A chunked read: `head` answers first (None: not found), then the data
    /// goes to `chunks`; an error mid-stream is sent on `chunks`.
    GetStream {
        key: Bytes,
        head: Reply<Option<StreamHead>>,
        chunks: mpsc::Sender<Result<Bytes, EngineError>>,
    },
    Stats {
        reply: oneshot::Sender<EngineStats>,
    },
    ListKeys {
        start_fingerprint: u64,
        end_fingerprint: u64,
        limit: usize,
        reply: Reply<KeyListing>,
    },
    /// Does nothing: measures the hop itself (node/benches/hop.rs).
    Ping {
        reply: oneshot::Sender<()>,
    },
    /// Finish every request queued before this one, close the engine cleanly.
    Shutdown {
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
}

/// Sent by the front to abandon a streamed write (bad input or a client that
/// went away): the shard drops the writer without committing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamAborted;

/// What a shard reports once its engine is open.
#[derive(Clone, Debug)]
pub struct ShardReady {
    pub shard: u32,
    /// The start read no log: the index was closed cleanly.
    pub clean: bool,
    pub replayed_records: u64,
    pub keys: u64,
}

/// Why a shard did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    #[error("shard {shard}: cannot start its executor: {reason}")]
    Executor { shard: u32, reason: String },
    #[error("shard {shard}: cannot open {dir}: {source}")]
    Storage {
        shard: u32,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {shard}: cannot open its engine: {source}")]
    Engine {
        shard: u32,
        #[source]
        source: EngineError,
    },
}

/// Where and how one shard runs.
#[derive(Clone, Debug)]
pub struct ShardSpec {
    pub shard: u32,
    pub dir: PathBuf,
    pub engine: EngineConfig,
    /// The CPU to pin the executor to; None leaves it unbound.
    pub cpu: Option<usize>,
}

/// The front's handle on one shard. Cheap to share across tonic tasks.
#[derive(Debug)]
pub struct ShardHandle {
    pub shard: u32,
    tx: mpsc::Sender<ShardRequest>,
    /// Requests sent and not yet answered (a gauge for metrics).
    queue_depth: Arc<AtomicU64>,
    /// Set once open: whether the start read no log.
    clean: Arc<std::sync::atomic::AtomicBool>,
}

/// A running shard: its handle, how to learn it is ready, and its thread.
#[derive(Debug)]
pub struct StartedShard {
    pub handle: Arc<ShardHandle>,
    pub ready: oneshot::Receiver<Result<ShardReady, ShardError>>,
    pub thread: glommio::ExecutorJoinHandle<()>,
}

/// The directory of shard `shard` under the node's data dir.
pub fn shard_dir(disk_path: &Path, shard: u32) -> PathBuf {
    disk_path.join(format!("shard-{shard:03}"))
}

/// Starts the shard's thread; recovery runs there, and `ready` says when it
/// is done (or why it failed).
pub fn start(spec: ShardSpec) -> Result<StartedShard, ShardError> {
    let (tx, rx) = mpsc::channel(SHARD_QUEUE_LEN_MAX);
    let (ready_tx, ready) = oneshot::channel();
    let shard = spec.shard;
    let placement = spec.cpu.map_or(Placement::Unbound, Placement::Fixed);
    let clean = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shard_clean = clean.clone();
    let thread = LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{shard:03}"))
        .io_memory(EXECUTOR_IO_MEMORY_BYTES)
        .spawn(move || run(spec, rx, ready_tx, shard_clean))
        .map_err(|e| ShardError::Executor { shard, reason: e.to_string() })?;
    let handle = Arc::new(ShardHandle { shard, tx, queue_depth: Arc::new(AtomicU64::new(0)), clean });
    Ok(StartedShard { handle, ready, thread })
}

impl ShardHandle {
    /// Sends `make(reply)` to the shard and waits for the answer; `None` if
    /// the shard has stopped.
    pub async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> ShardRequest) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let _depth = DepthGuard::enter(&self.queue_depth);
        self.tx.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Whether this shard's last start read no log (a clean shutdown before it).
    pub fn recovered_clean(&self) -> bool {
        self.clean.load(Ordering::Relaxed)
    }

    /// Requests queued or running on the shard now.
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }
}

/// Counts a request as in the shard's queue for as long as it lives.
struct DepthGuard<'a>(&'a AtomicU64);

impl<'a> DepthGuard<'a> {
    fn enter(depth: &'a AtomicU64) -> Self {
        depth.fetch_add(1, Ordering::Relaxed);
        Self(depth)
    }
}

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type Ready = oneshot::Sender<Result<ShardReady, ShardError>>;

/// The shard thread's body: open, then serve requests until shutdown.
async fn run(
    spec: ShardSpec,
    mut rx: mpsc::Receiver<ShardRequest>,
    ready: Ready,
    clean: Arc<std::sync::atomic::AtomicBool>,
) {
    let shard = spec.shard;
    let engine = match open(&spec).await {
        Ok(engine) => engine,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let report = engine.recovery_report();
    clean.store(report.clean, Ordering::Relaxed);
    let _ = ready.send(Ok(ShardReady {
        shard,
        clean: report.clean,
        replayed_records: report.replayed_records,
        keys: engine.stats().keys,
    }));
    let engine = Rc::new(engine);
    let gate = glommio::sync::Gate::new();
    let mut shutdown_reply = None;
    while let Some(request) = rx.recv().await {
        if let ShardRequest::Shutdown { reply } = request {
            shutdown_reply = Some(reply);
            break;
        }
        let engine = engine.clone();
        match gate.spawn(handle(engine, request)) {
            Ok(task) => {
                task.detach();
            }
            Err(e) => tracing::error!(shard, error = %e, "cannot spawn a request task"),
        }
    }
    // Anything still queued is refused: its reply sender drops with `rx`.
    drop(rx);
    if let Err(e) = gate.close().await {
        tracing::error!(shard, error = %e, "waiting for request tasks failed");
    }
    let result = match Rc::try_unwrap(engine) {
        Ok(engine) => engine.close().await,
        Err(_) => Err(EngineError::Closed("request tasks outlived the gate".into())),
    };
    if let Err(e) = &result {
        tracing::error!(shard, error = %e, "closing the engine failed");
    }
    if let Some(reply) = shutdown_reply {
        let _ = reply.send(result);
    }
}

async fn open(spec: &ShardSpec) -> Result<Engine<DmaStorage>, ShardError> {
    let shard = spec.shard;
    let storage = DmaStorage::open_dir(&spec.dir).await.map_err(|source| ShardError::Storage {
        shard,
        dir: spec.dir.clone(),
        source,
    })?;
    Engine::open(storage, &spec.dir.join(INDEX_FILE_NAME), spec.engine.clone())
        .await
        .map_err(|source| ShardError::Engine { shard, source })
}

/// Runs one request on the shard's executor.
async fn handle(engine: Rc<Engine<DmaStorage>>, request: ShardRequest) {
    match request {
        ShardRequest::Put { entry, reply } => {
            let _ = reply.send(engine.put(&entry.key, entry.value, entry.version, entry.expiry_ms).await);
        }
        ShardRequest::Get { key, reply } => {
            let _ = reply.send(engine.get(&key).await);
        }
        ShardRequest::Update { entry, expected_version, reply } => {
            let outcome =
                engine.update(&entry.key, entry.value, entry.version, expected_version, entry.expiry_ms).await;
            let _ = reply.send(outcome);
        }
        ShardRequest::Delete { key, version, reply } => {
            let _ = reply.send(engine.delete(&key, version).await);
        }
        ShardRequest::BatchPut { entries, reply } => {
            // Concurrent puts share group commits: one fdatasync for the batch.
            let tasks: Vec<_> = entries
                .into_iter()
                .map(|e| {
                    let engine = engine.clone();
                    glommio::spawn_local(async move { engine.put(&e.key, e.value, e.version, e.expiry_ms).await })
                })
                .collect();
            let _ = reply.send(join_tasks(tasks).await);
        }
        ShardRequest::BatchGet { keys, reply } => {
            let tasks: Vec<_> = keys
                .into_iter()
                .map(|key| {
                    let engine = engine.clone();
                    glommio::spawn_local(async move { engine.get(&key).await })
                })
                .collect();
            let _ = reply.send(join_tasks(tasks).await);
        }
        ShardRequest::PutStream { key, total_len, version, expiry_ms, chunks, reply } => {
            let _ = reply.send(put_stream(&engine, key, total_len, version, expiry_ms, chunks).await);
        }
        ShardRequest::GetStream { key, head, chunks } => get_stream(&engine, key, head, chunks).await,
        ShardRequest::Stats { reply } => {
            let _ = reply.send(engine.stats());
        }
        ShardRequest::ListKeys { start_fingerprint, end_fingerprint, limit, reply } => {
            let _ = reply.send(engine.list_keys(start_fingerprint, end_fingerprint, limit).await);
        }
        ShardRequest::Ping { reply } => {
            let _ = reply.send(());
        }
        ShardRequest::Shutdown { .. } => unreachable!("the request loop handles shutdown"),
    }
}

/// Appends chunks as they arrive; commits only when exactly `total_len`
/// bytes came. Dropping the writer without commit leaves nothing visible.
async fn put_stream(
    engine: &Engine<DmaStorage>,
    key: Bytes,
    total_len: u64,
    version: u64,
    expiry_ms: u64,
    mut chunks: mpsc::Receiver<Result<Bytes, StreamAborted>>,
) -> Result<PutOutcome, EngineError> {
    let mut writer = engine.put_chunked(&key, total_len, version, expiry_ms).await?;
    while let Some(chunk) = chunks.recv().await {
        match chunk {
            Ok(data) => writer.append(&data).await?,
            Err(StreamAborted) => return Err(EngineError::Closed("the stream was abandoned".into())),
        }
    }
    writer.commit().await
}

async fn get_stream(
    engine: &Engine<DmaStorage>,
    key: Bytes,
    head: Reply<Option<StreamHead>>,
    chunks: mpsc::Sender<Result<Bytes, EngineError>>,
) {
    let mut reader = match engine.get_chunked(&key).await {
        Ok(Some(reader)) => reader,
        Ok(None) => {
            let _ = head.send(Ok(None));
            return;
        }
        Err(e) => {
            let _ = head.send(Err(e));
            return;
        }
    };
    let first = StreamHead { version: reader.version(), total_len: reader.total_len(), expiry_ms: reader.expiry_ms() };
    if head.send(Ok(Some(first))).is_err() {
        return;
    }
    loop {
        let next = match reader.next_chunk().await {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = next.is_err();
        // A closed receiver means the client went away: stop reading.
        if chunks.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// Awaits spawned tasks in order: each wakes only when its own I/O is done.
async fn join_tasks<T>(tasks: Vec<glommio::Task<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await);
    }
    out
}
