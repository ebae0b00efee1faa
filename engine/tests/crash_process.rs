//! Crash tests with real processes, after sled's: this test binary re-runs
//! itself as a child that writes through the engine on real files (io_uring,
//! O_DIRECT, `Durability::Sync`) and reports every acknowledged write on its
//! stdout; the parent kills it with SIGKILL at a random moment, reopens the
//! shard and checks that nothing acknowledged went missing.
//!
//! - `acknowledged_writes_survive_sigkill`: many rounds on one data dir, so
//!   each recovery runs on top of the last; 32 concurrent writers, values of
//!   0..=16 KiB, overwrites and deletes, 1 MiB segments and 256 KiB between
//!   checkpoints so rolls, checkpoints and compaction all happen mid-run;
//!   some rounds delete the index before reopening so it is rebuilt.
//! - `a_sigkill_during_a_chunked_put_leaves_the_old_value_or_none`: the kill
//!   lands in the middle of a 20 MiB value written through `put_chunked`; the
//!   key then holds the previous complete value (or none), never a part.
//!
//! Why: in sync mode an acknowledgement is a promise that the write survives
//! a crash. A kill at a random moment, rather than at chosen points, finds
//! windows nobody thought of (a roll, a checkpoint, a compaction, a half-sent
//! group commit).
//!
//! The protocol: before each write the child prints `begin put|del KEY
//! VERSION`; after the engine acknowledges it, `ack put KEY VERSION LEN HASH`
//! or `ack del KEY VERSION` (`stale KEY VERSION` when last-writer-wins
//! ignored it), flushing each line. Values are a function of (key, version),
//! so the parent can check whatever version it finds. After the kill the
//! parent reads what is left in the pipe too: everything acknowledged before
//! the kill counts. For each key the parent accepts the newest acknowledged
//! write or any newer write the child began; for a key with no acknowledged
//! write this round, also its state found by the previous round.
//!
//! Reproduce a failure with the seed it prints: `OPTICACHE_CRASH_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opticache_engine::config::{Durability, EngineConfig};
use opticache_engine::engine::{DeleteOutcome, Engine, PutOutcome};
use opticache_engine::io::dma::DmaStorage;
use opticache_engine::recovery::RecoveryReport;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Set (to a [`ChildSpec`]) in a child's environment; without it the child
/// tests return at once, as they do in the parent's run.
const CHILD_ENV: &str = "OPTICACHE_CRASH_CHILD";
const CHUNKED_CHILD_ENV: &str = "OPTICACHE_CRASH_CHUNKED_CHILD";
/// Overrides the seed, to replay a failing run.
const SEED_ENV: &str = "OPTICACHE_CRASH_SEED";
const SEED_DEFAULT: u64 = 0x5eed_0c0f_fee0_0001;

const LOG_DIR: &str = "log";
const INDEX_FILE: &str = "index.map";

/// Kill-and-recover rounds of the main test.
const ROUNDS: u64 = 40;
/// Every this many rounds the index is deleted before the reopen.
const DELETE_INDEX_EVERY: u64 = 4;
/// Concurrent writer tasks in the child.
const WRITERS: usize = 32;
/// Distinct keys: few enough that keys are overwritten many times.
const KEYS: u64 = 512;
const VALUE_LEN_MAX: usize = 16 << 10;
const DELETE_PERCENT: u64 = 10;
/// The parent kills the child after reading this many acks, log-uniformly.
const ACKS_BEFORE_KILL_MIN: u64 = 4;
const ACKS_BEFORE_KILL_MAX: u64 = 4000;
/// Each round's versions start at `(round + 1) << VERSION_ROUND_SHIFT`, above
/// every version an earlier round can have written.
const VERSION_ROUND_SHIFT: u32 = 32;
/// A child stops writing on its own after this many writes or this long, so
/// one whose parent died does not run forever.
const CHILD_WRITES_MAX: u64 = 1_000_000;
const CHILD_RUN_MAX: Duration = Duration::from_secs(120);
/// How long the parent waits for a child's next line, or its end after the kill.
const LINE_DEADLINE: Duration = Duration::from_secs(30);

/// The chunked test: rounds, the value's size and the piece size appended.
const CHUNKED_ROUNDS: u64 = 4;
const CHUNKED_LEN: u64 = 20 << 20;
const CHUNKED_PIECE_LEN: usize = 1 << 20;
const CHUNKED_PIECES: u64 = CHUNKED_LEN / CHUNKED_PIECE_LEN as u64;
/// A chunked child writes at most this many versions before it stops.
const CHUNKED_VERSIONS_MAX: u64 = 4;
const CHUNKED_KEY: &[u8] = b"big-chunked-value";

fn run<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(f: impl FnOnce() -> F + Send + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("join")
}

/// The child's and the parent's engine configuration: small segments and
/// frequent checkpoints and compaction, so a few thousand writes roll
/// segments, checkpoint and compact.
fn writer_config() -> EngineConfig {
    EngineConfig {
        durability: Durability::Sync,
        segment_bytes: 1 << 20,
        checkpoint_interval_bytes: 256 << 10,
        compaction_interval_ms: 100,
        compaction_garbage_ratio: 0.5,
        memory_budget_bytes: 1 << 20,
        ..EngineConfig::default()
    }
}

/// Segments that hold a whole 4 MiB chunk record.
fn chunked_config() -> EngineConfig {
    EngineConfig { segment_bytes: 8 << 20, checkpoint_interval_bytes: 1 << 20, ..writer_config() }
}

async fn open(dir: &Path, config: EngineConfig) -> Engine<DmaStorage> {
    let storage = DmaStorage::open_dir(&dir.join(LOG_DIR)).await.expect("open the log directory");
    Engine::open(storage, &dir.join(INDEX_FILE), config).await.unwrap_or_else(|e| panic!("engine open: {e}"))
}

/// splitmix64: the one source of randomness, so a seed replays a run.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// Log-uniform in `lo..=hi`: small and large counts equally likely per decade.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let v = ((lo as f64).ln() + unit * ((hi as f64).ln() - (lo as f64).ln())).exp();
        (v.round() as u64).clamp(lo, hi)
    }
}

fn key_bytes(key: u64) -> Vec<u8> {
    format!("key-{key:04}").into_bytes()
}

/// Bytes filled from a seed, 8 at a time.
fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = mix(seed);
    while out.len() < len {
        x = mix(x);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The value the child writes for `key` at `version`: its length and bytes
/// follow from the two, so the parent can check any version it finds.
fn value(key: u64, version: u64) -> Bytes {
    let seed = mix(key ^ mix(version));
    Bytes::from(fill(seed, (seed % (VALUE_LEN_MAX as u64 + 1)) as usize))
}

/// What the child does with `version` (its writes take consecutive versions).
fn op_for(seed: u64, version: u64) -> (u64, bool) {
    let h = mix(seed ^ mix(version));
    (h % KEYS, (h >> 40) % 100 < DELETE_PERCENT)
}

/// Writes one line to stdout and flushes it; exits quietly when the parent
/// has gone (the pipe is closed).
fn emit(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// What a child is told through its environment: `SEED BASE DIR`, tab-separated.
#[derive(Debug)]
struct ChildSpec {
    seed: u64,
    /// The first version it writes.
    base: u64,
    dir: PathBuf,
}

impl ChildSpec {
    fn encode(&self) -> String {
        format!("{}\t{}\t{}", self.seed, self.base, self.dir.display())
    }

    fn decode(s: &str) -> ChildSpec {
        let mut parts = s.splitn(3, '\t');
        let mut next = || parts.next().expect("child spec field");
        let seed = next().parse().expect("seed");
        let base = next().parse().expect("base");
        ChildSpec { seed, base, dir: PathBuf::from(next()) }
    }
}

// ---------------------------------------------------------------------------
// The children.

/// The child of `acknowledged_writes_survive_sigkill`: writes until killed.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec = ChildSpec::decode(&spec);
    run(move || child_writes(spec));
}

async fn child_writes(spec: ChildSpec) {
    let engine = Rc::new(open(&spec.dir, writer_config()).await);
    emit(format_args!("ready"));
    let next_version = Rc::new(std::cell::Cell::new(spec.base));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (engine, next_version) = (engine.clone(), next_version.clone());
            let (seed, base) = (spec.seed, spec.base);
            glommio::spawn_local(async move {
                loop {
                    let version = next_version.get();
                    if version - base >= CHILD_WRITES_MAX || started.elapsed() > CHILD_RUN_MAX {
                        return;
                    }
                    next_version.set(version + 1);
                    let (key, delete) = op_for(seed, version);
                    let k = key_bytes(key);
                    if delete {
                        emit(format_args!("begin del {key} {version}"));
                        match engine.delete(&k, version).await.expect("delete") {
                            DeleteOutcome::Stale { .. } => emit(format_args!("stale {key} {version}")),
                            _ => emit(format_args!("ack del {key} {version}")),
                        }
                    } else {
                        let v = value(key, version);
                        let (len, hash) = (v.len(), xxh3_64(&v));
                        emit(format_args!("begin put {key} {version}"));
                        match engine.put(&k, v, version, 0).await.expect("put") {
                            PutOutcome::Stale { .. } => emit(format_args!("stale {key} {version}")),
                            PutOutcome::Applied { .. } => emit(format_args!("ack put {key} {version} {len} {hash}")),
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await;
    }
}

/// The piece `i` of the chunked value of `version`.
fn chunked_piece(version: u64, i: u64) -> Vec<u8> {
    fill(mix(version) ^ i, CHUNKED_PIECE_LEN)
}

/// The hash of the whole chunked value of `version`.
fn chunked_hash(version: u64) -> u64 {
    let mut h = Xxh3::new();
    for i in 0..CHUNKED_PIECES {
        h.update(&chunked_piece(version, i));
    }
    h.digest()
}

/// The child of the chunked test: writes whole chunked values of versions
/// `base..`, one after another, until killed.
#[test]
fn child_chunked_writer() {
    let Ok(spec) = std::env::var(CHUNKED_CHILD_ENV) else {
        return;
    };
    let spec = ChildSpec::decode(&spec);
    run(move || async move {
        let engine = open(&spec.dir, chunked_config()).await;
        emit(format_args!("ready"));
        for version in spec.base..spec.base + CHUNKED_VERSIONS_MAX {
            let mut w = engine.put_chunked(CHUNKED_KEY, CHUNKED_LEN, version, 0).await.expect("put_chunked");
            let mut h = Xxh3::new();
            for i in 0..CHUNKED_PIECES {
                let piece = chunked_piece(version, i);
                h.update(&piece);
                w.append(&piece).await.expect("append");
                emit(format_args!("piece {version} {i}"));
            }
            let outcome = w.commit().await.expect("commit");
            assert!(matches!(outcome, PutOutcome::Applied { .. }), "{outcome:?}");
            emit(format_args!("ack chunked {version} {CHUNKED_LEN} {}", h.digest()));
        }
    });
}

// ---------------------------------------------------------------------------
// The parent side.

/// A running child; killed (SIGKILL) and reaped if the parent fails first.
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<std::io::Result<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr_path: PathBuf,
}

impl ChildProcess {
    /// Starts this binary running only the test `name`, with `env` set.
    fn spawn(name: &str, env: (&str, String), stderr_path: PathBuf) -> ChildProcess {
        let stderr = File::create(&stderr_path).expect("child stderr file");
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(env.0, env.1)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        // A thread reads the pipe so the parent can wait with a deadline.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildProcess { child, lines, reader: Some(reader), stderr_path }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The child's next line; `None` at the end of its output. Panics when
    /// none comes within the deadline.
    fn next_line(&self, what: &str) -> Option<String> {
        match self.lines.recv_timeout(LINE_DEADLINE) {
            Ok(line) => Some(line.expect("read child stdout")),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line from the child within {LINE_DEADLINE:?} while {what}; stderr:\n{}", self.stderr())
            }
        }
    }

    /// SIGKILLs the child, reaps it, checks it died of the signal (it had not
    /// finished or failed by itself), and returns the lines it printed before.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL the child");
        let status = self.child.wait().expect("reap the child");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "the child ended before the kill: {status}; stderr:\n{}", {
            self.stderr()
        });
        let mut rest = Vec::new();
        while let Some(line) = self.next_line("draining after the kill") {
            rest.push(line);
        }
        self.reader.take().expect("reader").join().expect("reader thread");
        rest
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A key's state: the live version, or absent.
type State = Option<u64>;

/// What one child printed about one key.
#[derive(Debug, Default)]
struct KeyLog {
    /// Writes begun: version → is a delete.
    begun: BTreeMap<u64, bool>,
    /// The newest acknowledged write.
    acked_max: Option<u64>,
    /// Writes last-writer-wins ignored: they never reach the log.
    stale: BTreeSet<u64>,
}

/// Everything one child printed, by key.
#[derive(Debug, Default)]
struct RoundLog {
    keys: HashMap<u64, KeyLog>,
    acks: u64,
    begun: u64,
}

impl RoundLog {
    fn take(&mut self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 { f[i].parse().unwrap_or_else(|_| panic!("bad child line {line:?}")) };
        match f.as_slice() {
            ["begin", kind, _, _] => {
                self.begun += 1;
                self.keys.entry(num(2)).or_default().begun.insert(num(3), *kind == "del");
            }
            ["ack", "put", _, _, _, _] => {
                let (key, version) = (num(2), num(3));
                // The child's own record of the bytes it wrote agrees with
                // the function the parent checks against.
                let v = value(key, version);
                assert_eq!((num(4), num(5)), (v.len() as u64, xxh3_64(&v)), "{line}");
                self.ack(key, version);
            }
            ["ack", "del", _, _] => self.ack(num(2), num(3)),
            ["stale", _, _] => {
                self.keys.entry(num(1)).or_default().stale.insert(num(2));
            }
            // The test harness's own lines.
            _ => {}
        }
    }

    fn ack(&mut self, key: u64, version: u64) {
        self.acks += 1;
        let k = self.keys.entry(key).or_default();
        assert!(k.begun.contains_key(&version), "ack of a write never begun: key {key} version {version}");
        k.acked_max = k.acked_max.max(Some(version));
    }

    /// The states `key` may be in after recovery, given `before`, its state
    /// found by the previous round: the newest acknowledged write or any
    /// newer write begun; with nothing acknowledged, `before` too.
    fn allowed(&self, key: u64, before: State) -> Vec<State> {
        let Some(k) = self.keys.get(&key) else {
            return vec![before];
        };
        let floor = k.acked_max.unwrap_or(0);
        let mut allowed: Vec<State> = k
            .begun
            .iter()
            .filter(|&(v, _)| *v >= floor && !k.stale.contains(v))
            .map(|(&v, &delete)| if delete { None } else { Some(v) })
            .collect();
        if k.acked_max.is_none() {
            allowed.push(before);
        }
        allowed
    }
}

/// Reopens the shard in `dir` and checks every key against `log` and
/// `before`, the states found by the previous round; closes it cleanly or
/// abandons it. Returns the recovery report, the states found, and what was
/// wrong.
async fn verify_round(
    dir: &Path,
    log: &RoundLog,
    before: &HashMap<u64, State>,
    close_cleanly: bool,
) -> (RecoveryReport, HashMap<u64, State>, Vec<String>) {
    let engine = open(dir, writer_config()).await;
    let report = engine.recovery_report().clone();
    let mut found = HashMap::new();
    let mut wrong = Vec::new();
    for key in 0..KEYS {
        let was = before.get(&key).copied().flatten();
        let allowed = log.allowed(key, was);
        let got = match engine.get(&key_bytes(key)).await {
            Ok(got) => got,
            Err(e) => {
                wrong.push(format!("key {key}: get failed: {e}"));
                continue;
            }
        };
        let state = got.as_ref().map(|v| v.version);
        if let Some(v) = &got {
            let want = value(key, v.version);
            if (v.value.len(), xxh3_64(&v.value)) != (want.len(), xxh3_64(&want)) {
                wrong.push(format!("key {key} version {}: wrong bytes ({} bytes read)", v.version, v.value.len()));
            }
        }
        if !allowed.contains(&state) {
            let k = log.keys.get(&key);
            wrong.push(format!(
                "key {key}: found {state:?}, allowed {allowed:?} (acked max {:?}, before {was:?}, begun {:?})",
                k.and_then(|k| k.acked_max),
                k.map(|k| &k.begun)
            ));
        }
        found.insert(key, state);
    }
    if close_cleanly {
        engine.close().await.expect("close");
    } else {
        engine.abandon().await;
    }
    (report, found, wrong)
}

fn seed() -> u64 {
    std::env::var(SEED_ENV).ok().map_or(SEED_DEFAULT, |s| s.parse().expect("OPTICACHE_CRASH_SEED is a u64"))
}

/// Deletes the index and anything the engine keeps to restore it (files
/// named after it), so the next open rebuilds it from the log.
fn delete_index(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read shard dir") {
        let entry = entry.expect("dir entry");
        if entry.file_name().to_string_lossy().starts_with(INDEX_FILE) {
            std::fs::remove_file(entry.path()).expect("remove index file");
        }
    }
    assert!(!dir.join(INDEX_FILE).exists());
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed = seed();
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shard");
    let mut states: HashMap<u64, State> = HashMap::new();
    let mut total_acks = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let acks_before_kill = rng.log_uniform(ACKS_BEFORE_KILL_MIN, ACKS_BEFORE_KILL_MAX);
        let delete = round % DELETE_INDEX_EVERY == DELETE_INDEX_EVERY - 1;
        let close_cleanly = rng.next().is_multiple_of(2);
        let spec = ChildSpec { seed: mix(seed ^ round), base: (round + 1) << VERSION_ROUND_SHIFT, dir: dir.clone() };
        let child =
            ChildProcess::spawn("child_writer", (CHILD_ENV, spec.encode()), tmp.path().join(format!("stderr-{round}")));
        // Lines are only counted until the kill, so the parent is quick to
        // kill once it has read enough acks; they are checked after.
        let mut lines = Vec::new();
        let mut read_before_kill = 0;
        while read_before_kill < acks_before_kill {
            let line = child.next_line("waiting for acks").unwrap_or_else(|| {
                panic!(
                    "seed {seed} round {round}: the child ended after {read_before_kill} acks; stderr:\n{}",
                    child.stderr()
                )
            });
            read_before_kill += u64::from(line.starts_with("ack "));
            lines.push(line);
        }
        lines.extend(child.kill());
        let mut log = RoundLog::default();
        for line in &lines {
            log.take(line);
        }
        if delete {
            delete_index(&dir);
        }
        let (acks, begun) = (log.acks, log.begun);
        let (report, found, wrong) = {
            let (dir, before) = (dir.clone(), std::mem::take(&mut states));
            run(move || async move { verify_round(&dir, &log, &before, close_cleanly).await })
        };
        println!(
            "round {round}: killed after {read_before_kill} acks read ({acks} in all, {begun} writes begun), index {}, \
             closed {}: {report:?}",
            if delete { "deleted" } else { "kept" },
            if close_cleanly { "cleanly" } else { "by abandon" },
        );
        assert!(
            wrong.is_empty(),
            "seed {seed} round {round}: {} keys wrong after recovery:\n{}\n{report:?}",
            wrong.len(),
            wrong.join("\n")
        );
        assert!(!report.clean, "round {round}: a killed shard opened as clean: {report:?}");
        assert!(report.corrupt.is_empty(), "round {round}: a process kill is not corruption: {report:?}");
        total_acks += acks;
        states = found;
    }
    let live = states.values().filter(|s| s.is_some()).count();
    println!("{ROUNDS} rounds, {total_acks} acked writes, {live} keys live at the end, {:?}", started.elapsed());
    assert!(total_acks >= ROUNDS * ACKS_BEFORE_KILL_MIN);
    assert!(live > 0, "no key survived: the check checked nothing");
}

#[test]
fn a_sigkill_during_a_chunked_put_leaves_the_old_value_or_none() {
    let seed = seed();
    let mut rng = Rng(seed ^ 0xc4u64);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shard");
    let mut state: State = None;
    for round in 0..CHUNKED_ROUNDS {
        let base = (round + 1) * 100;
        // Round 0 kills the first value half-way; later rounds let one value
        // commit and kill the next half-way, so an old complete value exists.
        let kill_version = if round == 0 { base } else { base + 1 };
        // At least three more pieces and the commit remain at the kill.
        let kill_piece = rng.next() % (CHUNKED_PIECES - 3);
        let spec = ChildSpec { seed, base, dir: dir.clone() };
        let child = ChildProcess::spawn(
            "child_chunked_writer",
            (CHUNKED_CHILD_ENV, spec.encode()),
            tmp.path().join(format!("chunked-stderr-{round}")),
        );
        // Lines are only collected until the kill, so the parent is quick
        // to kill once it reads the chosen piece; they are checked after.
        let kill_line = format!("piece {kill_version} {kill_piece}");
        let mut lines = Vec::new();
        loop {
            let line = child.next_line("waiting for pieces").unwrap_or_else(|| {
                panic!("seed {seed} chunked round {round}: the child ended early; stderr:\n{}", child.stderr())
            });
            let found = line == kill_line;
            lines.push(line);
            if found {
                break;
            }
        }
        lines.extend(child.kill());
        let mut acked: Option<u64> = None;
        let mut begun = BTreeSet::new();
        let mut last_piece = None;
        for line in &lines {
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["piece", v, i] => {
                    let v: u64 = v.parse().expect("version");
                    begun.insert(v);
                    last_piece = Some((v, i.parse::<u64>().expect("piece")));
                }
                ["ack", "chunked", v, len, hash] => {
                    let v: u64 = v.parse().expect("version");
                    let (len, hash): (u64, u64) = (len.parse().expect("len"), hash.parse().expect("hash"));
                    assert_eq!((len, hash), (CHUNKED_LEN, chunked_hash(v)), "{line}");
                    acked = acked.max(Some(v));
                }
                _ => {}
            }
        }
        // The kill landed while a value was half-written: the child had
        // appended pieces of a version it never acknowledged.
        let (torn_version, torn_piece) = last_piece.expect("pieces");
        assert!(
            Some(torn_version) > acked,
            "seed {seed} chunked round {round}: the kill landed between two puts (acked {acked:?}), not in one"
        );
        // The newest acknowledged value, or any newer one whose commit made it
        // before the kill; with none acknowledged, the previous state too.
        let mut allowed: Vec<State> = begun.iter().filter(|&&v| Some(v) >= acked).map(|&v| Some(v)).collect();
        if acked.is_none() {
            allowed.push(state);
        }
        let delete = round == 2;
        if delete {
            delete_index(&dir);
        }
        let d = dir.clone();
        let (found, report) = run(move || async move {
            let engine = open(&d, chunked_config()).await;
            let report = engine.recovery_report().clone();
            let found = match engine.get_chunked(CHUNKED_KEY).await.expect("get_chunked") {
                None => None,
                Some(mut r) => {
                    let version = r.version();
                    assert_eq!(r.total_len(), CHUNKED_LEN, "version {version}: a partial value");
                    let mut h = Xxh3::new();
                    let mut read = 0u64;
                    while let Some(c) = r.next_chunk().await.expect("read chunk") {
                        h.update(&c);
                        read += c.len() as u64;
                    }
                    assert_eq!(read, CHUNKED_LEN, "version {version}: bytes read");
                    assert_eq!(h.digest(), chunked_hash(version), "version {version}: wrong bytes");
                    drop(r);
                    // The one-call read agrees.
                    let whole = engine.get(CHUNKED_KEY).await.expect("get").expect("visible to get too");
                    assert_eq!((whole.version, whole.value.len() as u64), (version, CHUNKED_LEN));
                    assert_eq!(xxh3_64(&whole.value), chunked_hash(version), "version {version}: get's bytes");
                    Some(version)
                }
            };
            engine.close().await.expect("close");
            (found, report)
        });
        println!(
            "chunked round {round}: killed after reading piece {kill_piece} of version {kill_version} (the child \
             printed up to piece {torn_piece}), acked {acked:?}, found {found:?}, index {}: {report:?}",
            if delete { "deleted" } else { "kept" }
        );
        assert!(allowed.contains(&found), "seed {seed} chunked round {round}: found {found:?}, allowed {allowed:?}");
        assert!(report.corrupt.is_empty(), "chunked round {round}: {report:?}");
        if round > 0 {
            assert!(found.is_some(), "round {round}: the value committed before the kill is gone");
        }
        state = found;
    }
}
