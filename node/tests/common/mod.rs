//! The harness of the node's integration tests: it runs the real
//! `opticache-node` binary on a temporary config file and data dir, and talks
//! to it over gRPC on 127.0.0.1 with the generated tonic clients.
//!
//! - [`NodeHome`]: a temporary directory holding the config file and the data
//!   dir; every [`NodeHome::start`] spawns a node on it, so a restart is one
//!   more start on the same home;
//! - [`Node`]: one running process: the addresses it bound (read from its
//!   `starting; shards recovering` log line), its stderr (drained by a thread
//!   into a buffer, so the pipe never fills and a failing test can print the
//!   log), signals, and its exit. Dropping it kills the process, so a failing
//!   test never leaks one.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition at a
//! short interval until a generous deadline (the machine may be loaded), and
//! fails saying what it waited for, with the node's log.
#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opticache_proto::node::v1 as pb;
use pb::node_client::NodeClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long any one wait may take before the test fails: generous, because
/// two shared cores may be busy with other builds.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often a wait looks at its condition again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The log line that carries the bound addresses (server.rs logs it before
/// any shard starts recovering).
pub const START_LINE: &str = "starting; shards recovering";
/// Messages the test clients take and send: well above the node's own limit
/// (max(max_value_bytes, 64 MiB) + 2 MiB), so the node's limit is the one tested.
pub const CLIENT_MESSAGE_LIMIT: usize = 512 << 20;
pub const MIB: u64 = 1 << 20;

/// The `node:` settings (and the address) a test's config file gets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub shards: u32,
    pub max_value_bytes: u64,
    pub segment_bytes: u64,
    pub shard_memory_budget_bytes: u64,
    /// 0: unlimited.
    pub shard_disk_budget_bytes: u64,
    /// `127.0.0.1:0` (the OS picks a port) unless a test needs a given one.
    pub address: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            shards: 1,
            max_value_bytes: 64 * MIB,
            // Small segments keep each test's files small.
            segment_bytes: 8 * MIB,
            shard_memory_budget_bytes: 16 * MIB,
            shard_disk_budget_bytes: 0,
            address: "127.0.0.1:0".to_string(),
        }
    }
}

impl Settings {
    pub fn shards(shards: u32) -> Self {
        Settings { shards, ..Settings::default() }
    }

    pub fn max_value_bytes(mut self, bytes: u64) -> Self {
        self.max_value_bytes = bytes;
        self
    }
}

/// A temporary directory with a config file and a data dir; removed on drop
/// (drop the [`Node`]s first: declare them after their home).
#[derive(Debug)]
pub struct NodeHome {
    dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
}

impl NodeHome {
    pub fn new(settings: &Settings) -> NodeHome {
        // Under the target dir rather than /tmp: the engine writes with
        // O_DIRECT, which a tmpfs /tmp may refuse.
        let dir = tempfile::Builder::new()
            .prefix("node-it-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create a temporary dir for the node");
        let config = dir.path().join("config.yaml");
        let data = dir.path().join("data");
        let home = NodeHome { dir, config, data };
        home.write_config(&config_yaml(settings, &home.data));
        home
    }

    /// Replaces the config file (tests of bad configs).
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write the config file");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn shard_dir(&self, shard: u32) -> PathBuf {
        self.data.join(format!("shard-{shard:03}"))
    }

    /// Spawns a node on this home without waiting for anything.
    pub fn spawn(&self) -> Node {
        self.spawn_with(|_| {})
    }

    /// Spawns a node after `adjust` had its say on the command.
    pub fn spawn_with(&self, adjust: impl FnOnce(&mut Command)) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opticache-node"));
        command
            .arg("--config")
            .arg(&self.config)
            // The file names a placeholder metrics port; this flag, which wins
            // over the file, asks for an OS-chosen one (also exercising it).
            .args(["--metrics-address", "127.0.0.1:0"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
        // parent; it runs in the forked child before exec.
        unsafe {
            command.pre_exec(|| {
                // If the test process dies without running destructors, the
                // node dies with it instead of outliving the test.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        adjust(&mut command);
        let mut child = command.spawn().expect("spawn opticache-node");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let drain_log = log.clone();
        // Counts lines, so a wait for a line wakes as soon as one arrives.
        let (lines_tx, lines) = tokio::sync::watch::channel(0usize);
        let drain = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(line) => drain_log.lock().unwrap().push(line),
                    Err(_) => break,
                }
                lines_tx.send_modify(|n| *n += 1);
            }
        });
        Node { child, log, lines, drain: Some(drain), addresses: None, exit: None }
    }

    /// Spawns a node and waits until it has bound its ports (it may still be
    /// recovering).
    pub async fn start(&self) -> Node {
        let mut node = self.spawn();
        node.wait_started().await;
        node
    }

    /// Spawns a node and waits until it serves.
    pub async fn start_serving(&self) -> Node {
        let mut node = self.start().await;
        node.wait_serving().await;
        node
    }

    /// Runs a node that is expected not to start: its exit status and log.
    pub async fn fail_to_start(&self) -> (ExitStatus, String) {
        let mut node = self.spawn();
        let status = node.wait_exit().await;
        (status, node.log())
    }
}

/// The config file of a one-node cluster whose node runs with `settings`.
pub fn config_yaml(settings: &Settings, data: &Path) -> String {
    format!(
        "coordinator:\n  primary: 127.0.0.1:1\n\
         cache_nodes:\n  - address: {address}\n    metrics_address: 127.0.0.1:2\n    disk_path: '{data}'\n\
         replication_factor: 1\n\
         node:\n  shards: {shards}\n  durability: sync\n  max_value_bytes: {max_value_bytes}\n  \
         segment_bytes: {segment_bytes}\n  shard_memory_budget_bytes: {memory}\n  \
         shard_disk_budget_bytes: {disk}\n",
        address = settings.address,
        data = data.display(),
        shards = settings.shards,
        max_value_bytes = settings.max_value_bytes,
        segment_bytes = settings.segment_bytes,
        memory = settings.shard_memory_budget_bytes,
        disk = settings.shard_disk_budget_bytes,
    )
}

/// One `opticache-node` process.
#[derive(Debug)]
pub struct Node {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Lines read so far; changes with every line.
    lines: tokio::sync::watch::Receiver<usize>,
    drain: Option<std::thread::JoinHandle<()>>,
    /// (node API, metrics), once the start line was seen.
    addresses: Option<(SocketAddr, SocketAddr)>,
    exit: Option<ExitStatus>,
}

impl Node {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The node API's bound address.
    pub fn address(&self) -> SocketAddr {
        self.addresses.expect("the node has not started").0
    }

    /// The metrics endpoint's bound address.
    pub fn metrics_address(&self) -> SocketAddr {
        self.addresses.expect("the node has not started").1
    }

    /// Everything the node wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Fails the test with `why` and the node's log.
    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n--- node log ---\n{}\n--- end of node log ---", self.log())
    }

    /// Waits for the start line and reads the bound addresses from it.
    pub async fn wait_started(&mut self) {
        let line = self.wait_for_line(START_LINE).await;
        let address = field(&line, "address=").unwrap_or_else(|| self.fail("start line without address="));
        let metrics = field(&line, "metrics=").unwrap_or_else(|| self.fail("start line without metrics="));
        self.addresses = Some((address, metrics));
    }

    /// Waits for a log line containing `text`, waking at each new line; the line.
    pub async fn wait_for_line(&mut self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let line = self.log.lock().unwrap().iter().find(|l| l.contains(text)).cloned();
            if let Some(line) = line {
                return line;
            }
            if let Some(status) = self.try_exit() {
                self.fail(&format!("the node exited ({status}) before logging {text:?}"));
            }
            if started.elapsed() > DEADLINE {
                self.fail(&format!("no log line {text:?} after {DEADLINE:?}"));
            }
            // A new line or the interval, whichever is first (the interval
            // also covers the drain having ended: the process is exiting).
            if let Ok(Err(_)) = tokio::time::timeout(POLL_INTERVAL, self.lines.changed()).await {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }

    /// Waits until the health service says SERVING for the whole server.
    pub async fn wait_serving(&mut self) {
        let started = Instant::now();
        loop {
            let last = match self.health_status().await {
                Ok(ServingStatus::Serving) => return,
                Ok(other) => format!("{other:?}"),
                Err(e) => e,
            };
            if let Some(status) = self.try_exit() {
                self.fail(&format!("the node exited ({status}) before serving"));
            }
            if started.elapsed() > DEADLINE {
                self.fail(&format!("not SERVING after {DEADLINE:?}; last health answer: {last}"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One health Check of the server as a whole (service "").
    pub async fn health_status(&self) -> Result<ServingStatus, String> {
        let mut health = HealthClient::new(self.channel().await.map_err(|e| e.to_string())?);
        let answer =
            health.check(HealthCheckRequest { service: String::new() }).await.map_err(|s| s.to_string())?.into_inner();
        Ok(answer.status())
    }

    /// A channel to the node API's address.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("http://{}", self.address())).expect("a valid URI").connect().await
    }

    /// A node API client with message limits above the node's own.
    pub async fn client(&self) -> NodeClient<Channel> {
        let channel = self.channel().await.unwrap_or_else(|e| self.fail(&format!("cannot connect: {e}")));
        NodeClient::new(channel)
            .max_decoding_message_size(CLIENT_MESSAGE_LIMIT)
            .max_encoding_message_size(CLIENT_MESSAGE_LIMIT)
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own child, which has not been
        // reaped yet (the Child is still owned), so the pid is not reused.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}): {}", self.pid(), std::io::Error::last_os_error());
    }

    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn kill9(&self) {
        self.signal(libc::SIGKILL);
    }

    /// The exit status if the process has ended (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("waitpid on the node");
        }
        self.exit
    }

    /// Waits (up to [`DEADLINE`]) for the process to end; its status. The log
    /// is complete when this returns.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                // The pipe closes with the process: the drain thread ends.
                if let Some(drain) = self.drain.take() {
                    drain.join().expect("the stderr drain thread");
                }
                return status;
            }
            if started.elapsed() > DEADLINE {
                self.fail(&format!("the node did not exit within {DEADLINE:?}"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILL, then the exit status (checked to be the kill's).
    pub async fn kill9_and_wait(&mut self) {
        self.kill9();
        let status = self.wait_exit().await;
        if status.signal() != Some(libc::SIGKILL) {
            self.fail(&format!("expected death by SIGKILL, got {status}"));
        }
    }

    /// SIGTERM, then checks the node exited 0 after a clean stop.
    pub async fn terminate_and_expect_clean_exit(&mut self) {
        self.terminate();
        self.expect_clean_exit().await;
    }

    /// Waits for the exit after a stop signal and checks it was clean: status
    /// 0, `stopped cleanly`, and no in-flight call cut off by the drain timeout.
    pub async fn expect_clean_exit(&mut self) {
        let status = self.wait_exit().await;
        if status.code() != Some(0) {
            self.fail(&format!("expected exit status 0 after SIGTERM, got {status}"));
        }
        let log = self.log();
        if !log.contains("stopped cleanly") {
            self.fail("exit 0 without the `stopped cleanly` line");
        }
        if log.contains("did not finish in time") {
            self.fail("the drain timed out: an in-flight call was left hanging");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- log of node pid {} ---\n{}\n--- end of node log ---", self.pid(), self.log());
        }
    }
}

/// The socket address after `name` in a log line (`address=127.0.0.1:4242`).
fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(name)? + name.len();
    line[start..].split_whitespace().next()?.parse().ok()
}

/// Polls `probe` every [`POLL_INTERVAL`] until it yields a value or
/// [`DEADLINE`] passes; then fails naming `what`.
pub async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The code of a call that must fail, or a failure naming `what`.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, code: Code, what: &str) {
    match result {
        Ok(response) => panic!("{what}: expected {code:?}, got success {:?}", response.into_inner()),
        Err(status) => assert_eq!(status.code(), code, "{what}: wrong code ({})", status.message()),
    }
}

/// A put request in the default namespace.
pub fn put_req(key: impl Into<Bytes>, value: impl Into<Bytes>, version: u64) -> pb::PutRequest {
    pb::PutRequest { key: key.into(), value: value.into(), version, ..Default::default() }
}

pub fn get_req(key: impl Into<Bytes>) -> pb::GetRequest {
    pb::GetRequest { key: key.into(), ..Default::default() }
}

/// Puts `value` at `key` (default namespace), expecting it applied; its version.
pub async fn put(client: &mut NodeClient<Channel>, key: &str, value: impl Into<Bytes>, version: u64) -> u64 {
    let answer = client.put(put_req(key.to_string(), value, version)).await.expect("put").into_inner();
    assert!(answer.applied, "put of {key} at {version} not applied: {answer:?}");
    answer.version
}

/// Gets `key` in the default namespace.
pub async fn get(client: &mut NodeClient<Channel>, key: &str) -> pb::GetResponse {
    client.get(get_req(key.to_string())).await.expect("get").into_inner()
}

/// Every shard's counters, in shard order.
pub async fn shard_stats(client: &mut NodeClient<Channel>) -> Vec<pb::ShardStats> {
    let stats = client.stats(pb::StatsRequest {}).await.expect("stats").into_inner();
    for (i, s) in stats.shards.iter().enumerate() {
        assert_eq!(s.shard as usize, i, "stats come in shard order");
    }
    stats.shards
}

/// Looks up `keys` (default namespace) with BatchGet, in calls of at most `per_call`.
pub async fn batch_get_all(client: &mut NodeClient<Channel>, keys: &[String], per_call: usize) -> Vec<pb::GetResponse> {
    let mut out = Vec::with_capacity(keys.len());
    for part in keys.chunks(per_call) {
        let request = pb::BatchGetRequest { keys: part.iter().map(|k| get_req(k.clone())).collect() };
        let answer = client.batch_get(request).await.expect("batch get").into_inner();
        assert_eq!(answer.results.len(), part.len(), "one result per key");
        out.extend(answer.results);
    }
    out
}

/// Writes `writes` (key, value) with BatchPut, node-stamped, in calls of at
/// most `per_call`; the version each got.
pub async fn batch_put_all(client: &mut NodeClient<Channel>, writes: &[(String, Bytes)], per_call: usize) -> Vec<u64> {
    let mut versions = Vec::with_capacity(writes.len());
    for part in writes.chunks(per_call) {
        let entries = part.iter().map(|(k, v)| put_req(k.clone(), v.clone(), 0)).collect();
        let answer = client.batch_put(pb::BatchPutRequest { entries }).await.expect("batch put").into_inner();
        assert_eq!(answer.results.len(), part.len(), "one result per entry");
        for (r, (k, _)) in answer.results.iter().zip(part) {
            assert!(r.applied, "batch put of {k} not applied: {r:?}");
            versions.push(r.version);
        }
    }
    versions
}

/// A deterministic 1 MiB of pseudo-random bytes, made once per test binary.
fn pattern_base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::with_capacity(MIB as usize);
        while out.len() < MIB as usize {
            // xorshift64: cheap, and no two nearby chunks look alike.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    })
}

/// Chunk `index` (of at most 1 MiB) of the pattern value `seed`: the base
/// rotated by an amount that differs per seed and chunk, so a chunk served
/// at the wrong place or from the wrong value does not compare equal.
pub fn pattern_chunk(seed: u64, index: u64, len: usize) -> Bytes {
    let base = pattern_base();
    let rotate = ((seed.wrapping_mul(7_919) + index.wrapping_mul(4_099)) % base.len() as u64) as usize;
    let mut out = Vec::with_capacity(base.len());
    out.extend_from_slice(&base[rotate..]);
    out.extend_from_slice(&base[..rotate]);
    out.truncate(len);
    Bytes::from(out)
}

/// Checks a value received in pieces against the pattern value `seed` of
/// `total` bytes made of [`pattern_chunk`]s of 1 MiB.
#[derive(Debug)]
pub struct PatternCheck {
    seed: u64,
    total: u64,
    received: u64,
    expected: Option<(u64, Bytes)>,
}

impl PatternCheck {
    pub fn new(seed: u64, total: u64) -> Self {
        PatternCheck { seed, total, received: 0, expected: None }
    }

    /// Compares the next `piece`, wherever the sender cut it.
    pub fn feed(&mut self, mut piece: &[u8]) {
        while !piece.is_empty() {
            assert!(self.received < self.total, "more than the {} bytes written", self.total);
            let index = self.received / MIB;
            let within = (self.received % MIB) as usize;
            if self.expected.as_ref().map(|(i, _)| *i) != Some(index) {
                let len = (self.total - index * MIB).min(MIB) as usize;
                self.expected = Some((index, pattern_chunk(self.seed, index, len)));
            }
            let expected = &self.expected.as_ref().unwrap().1;
            let n = piece.len().min(expected.len() - within);
            assert!(
                piece[..n] == expected[within..within + n],
                "bytes {}..{} differ from what was written",
                self.received,
                self.received + n as u64
            );
            self.received += n as u64;
            piece = &piece[n..];
        }
    }

    /// Checks that every byte arrived.
    pub fn finish(&self) {
        assert_eq!(self.received, self.total, "bytes read back");
    }
}

/// The chunks of the pattern value `seed` of `total` bytes as PutStream
/// messages for `key`; made lazily, so a large value is never held whole.
pub fn pattern_put_chunks(
    key: &'static str,
    seed: u64,
    total: u64,
) -> impl futures_lite::Stream<Item = pb::PutChunk> + Send + 'static {
    let chunks = total.div_ceil(MIB);
    futures_lite::stream::iter((0..chunks).map(move |i| {
        let len = (total - i * MIB).min(MIB) as usize;
        let data = pattern_chunk(seed, i, len);
        if i == 0 {
            pb::PutChunk { key: Bytes::from_static(key.as_bytes()), total_size: total, data, ..Default::default() }
        } else {
            pb::PutChunk { data, ..Default::default() }
        }
    }))
}

/// Reads `key` with GetStream and checks it is the pattern value `seed` of
/// `total` bytes at `version`; the chunk count.
pub async fn check_pattern_stream(
    client: &mut NodeClient<Channel>,
    key: &'static str,
    seed: u64,
    total: u64,
    version: u64,
) -> usize {
    use futures_lite::StreamExt;
    let mut stream = client.get_stream(get_req(key)).await.expect("get stream").into_inner();
    let mut check = PatternCheck::new(seed, total);
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a chunk");
        if chunks == 0 {
            assert_eq!(chunk.total_size, total, "total_size on the first chunk");
            assert_eq!(chunk.version, version, "version on the first chunk");
        }
        assert!(chunk.data.len() as u64 <= MIB, "a chunk of {} bytes, over 1 MiB", chunk.data.len());
        check.feed(&chunk.data);
        chunks += 1;
    }
    check.finish();
    chunks
}
