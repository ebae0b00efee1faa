//! The harness of the coordinator's end-to-end tests: a whole local cluster
//! of real processes on 127.0.0.1 (three `opticache-node`s and both
//! `opticache-coordinator`s), each cluster in its own temporary directory
//! with its own config file, talked to over gRPC with the generated tonic
//! clients.
//!
//! - [`Cluster`]: writes the config, starts the five processes, waits until
//!   both coordinators serve, one is PRIMARY and every node is UP at both;
//!   SIGKILLs, SIGTERMs and restarts any process; kills everything on drop
//!   and, when the test is failing, prints every process's log.
//! - [`Proc`]: one process slot (a node or a coordinator) across restarts:
//!   its command line, its current child, and its stderr, drained by a thread
//!   into one buffer for all its lives, so the pipe never fills.
//!
//! Ports: coordinators must know each other's addresses (and the nodes') from
//! the config file, so port 0 cannot be used; the harness binds
//! `127.0.0.1:0`, keeps the port the OS chose and releases it before writing
//! the config. Metrics endpoints use port 0.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition every
//! [`POLL_INTERVAL`] until a generous [`DEADLINE`] (two shared, busy cores),
//! and fails saying what it waited for and what it saw last.
#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opticache_coordinator::placement::{self, PlacementNode};
use opticache_proto::node::v1::node_client::NodeClient;
use opticache_proto::v1 as pb;
use pb::opti_cache_client::OptiCacheClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long any one wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often a wait looks at its condition again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// The longest a single test call may take (a hung call fails the test
/// instead of stalling it until the harness deadline).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Message limits of the test clients: above the coordinator's and the
/// nodes' own, so theirs are the ones tested.
pub const CLIENT_MESSAGE_LIMIT: usize = 256 << 20;
pub const MIB: u64 = 1 << 20;

/// The cluster shape every test runs (the brief's local cluster, faster).
pub const NODES: usize = 3;
pub const REPLICATION_FACTOR: usize = 2;
pub const WRITE_QUORUM: usize = 1;
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
pub const HEARTBEAT_MISSES: u32 = 3;
pub const FAILOVER_AFTER_MS: u64 = 1000;

/// What a test may change in the config file.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_value_bytes: u64,
    /// The nodes' engine settings: small segments and caches for tests,
    /// the production defaults for benchmarks.
    pub production_nodes: bool,
    /// TLS on every link (certificates from a fresh development CA) and the
    /// tokens below; `mutual` adds client certificates between the processes.
    pub secured: Option<Secured>,
}

#[derive(Clone, Copy, Debug)]
pub struct Secured {
    pub mutual: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { max_value_bytes: 64 * MIB, production_nodes: false, secured: None }
    }
}

/// The tokens of a secured test cluster, one per role, and the cluster's own.
pub const READ_TOKEN: &str = "test-read-token-0001";
pub const WRITE_TOKEN: &str = "test-write-token-0002";
pub const ADMIN_TOKEN: &str = "test-admin-token-0003";
pub const CLUSTER_TOKEN: &str = "test-cluster-token-0004";

/// `request` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII token"));
    request
}

/// The `opticache-node` binary of the same profile as the coordinator under
/// test. `CARGO_BIN_EXE_*` exists only for the package's own binaries, so it
/// is found next to the coordinator's and built (once per test process) when
/// it is missing or older than its sources (see
/// [`opticache_testsupport::node_binary`]).
pub fn node_binary() -> &'static Path {
    opticache_testsupport::node_binary(Path::new(env!("CARGO_BIN_EXE_opticache-coordinator")))
}

/// Ports handed out by this test process: never twice, even after release.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// `n` distinct ports that were free a moment ago: bound together on
/// 127.0.0.1:0 (so the OS picks distinct ones), then released.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    let mut used = handed_out().lock().unwrap();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if used.insert(port) {
            ports.push(port);
        }
        listeners.push(listener);
    }
    ports
}

/// One process slot: a node or a coordinator, across its restarts.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    /// stderr of every life of the process, with a line at each start.
    log: Arc<Mutex<Vec<String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
    starts: u32,
}

impl Proc {
    pub fn new(name: String, program: &Path, args: Vec<String>, cwd: &Path) -> Proc {
        Proc {
            name,
            program: program.to_path_buf(),
            args,
            cwd: cwd.to_path_buf(),
            child: None,
            exit: None,
            log: Arc::new(Mutex::new(Vec::new())),
            drain: None,
            starts: 0,
        }
    }

    /// Starts the process (again); the previous life must have ended. Call
    /// it from the test's own thread: PR_SET_PDEATHSIG fires when the
    /// spawning *thread* exits, which a blocking-pool thread may do mid-test.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none() || self.exit.is_some(), "{} is still running", self.name);
        self.join_drain();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.cwd)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
        // parent; it runs in the forked child before exec.
        unsafe {
            command.pre_exec(|| {
                // If the test process dies without running destructors, the
                // process dies with it instead of outliving the test.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.starts += 1;
        self.log.lock().unwrap().push(format!("===== {}: start {} (pid {}) =====", self.name, self.starts, child.id()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = self.log.clone();
        self.drain = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(line) => log.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        }));
        self.child = Some(child);
        self.exit = None;
    }

    fn join_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the process was started").id() as i32
    }

    /// Everything the process wrote to stderr in all its lives.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The exit status if the current life has ended (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exit = child.try_wait().expect("waitpid");
            }
        }
        self.exit
    }

    pub fn signal(&mut self, signal: libc::c_int) {
        assert!(self.try_exit().is_none(), "{} already exited", self.name);
        // SAFETY: kill(2) on our own child, not reaped yet (checked just
        // above, and only this struct reaps it), so the pid is not reused.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}): {}", self.pid(), std::io::Error::last_os_error());
    }

    /// Waits (up to [`DEADLINE`]) for the current life to end; its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                self.join_drain();
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "{} did not exit within {DEADLINE:?}", self.name);
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILL and wait for the death.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.wait_exit().await;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{}: expected death by SIGKILL, got {status}", self.name);
    }

    /// SIGTERM and wait for a clean exit (status 0).
    pub async fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit().await;
        assert_eq!(status.code(), Some(0), "{}: expected exit 0 after SIGTERM, got {status}", self.name);
    }

    fn kill_now(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = child.kill();
                self.exit = child.wait().ok();
            }
        }
        self.join_drain();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The three nodes and two coordinators of one test.
#[derive(Debug)]
pub struct Cluster {
    pub settings: Settings,
    pub config: PathBuf,
    /// Node addresses, in config order (node `i` is `cache_nodes[i]`).
    pub node_addresses: Vec<String>,
    /// Each node's data dir.
    pub node_dirs: Vec<PathBuf>,
    /// [coordinator.primary, coordinator.secondary].
    pub coordinator_addresses: Vec<String>,
    pub nodes: Vec<Proc>,
    pub coordinators: Vec<Proc>,
    /// Lazily connected channels: they reconnect by themselves after a restart.
    node_channels: Vec<Channel>,
    coordinator_channels: Vec<Channel>,
    /// What the test's channels trust (and present, with mutual TLS) when secured.
    pub client_tls: Option<ClientTlsConfig>,
    /// Last field: removed after the processes are gone.
    dir: tempfile::TempDir,
}

/// A channel to `address`, with TLS when `tls` is given.
pub fn lazy_channel(address: &str, tls: Option<&ClientTlsConfig>) -> Channel {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}")).expect("a valid URI");
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone()).expect("TLS configuration");
    }
    endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .timeout(CALL_TIMEOUT)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .connect_lazy()
}

impl Cluster {
    /// Starts a cluster with default settings and waits until it is ready.
    pub async fn start() -> Cluster {
        Cluster::start_with(Settings::default()).await
    }

    /// Writes the config, starts every process, waits until [`Cluster::wait_ready`].
    pub async fn start_with(settings: Settings) -> Cluster {
        let node_binary = node_binary();
        // Under the target dir rather than /tmp: the engine writes with
        // O_DIRECT, which a tmpfs /tmp may refuse.
        let dir = tempfile::Builder::new()
            .prefix("coordinator-it-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create a temporary dir for the cluster");
        let ports = free_ports(NODES + 2);
        let node_addresses: Vec<String> = ports[..NODES].iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let coordinator_addresses: Vec<String> = ports[NODES..].iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let node_dirs: Vec<PathBuf> = (0..NODES).map(|i| dir.path().join(format!("node{i}"))).collect();
        let config = dir.path().join("config.yaml");
        let mut config_text = config_yaml(&settings, &node_addresses, &node_dirs, &coordinator_addresses);
        let client_tls = settings.secured.map(|secured| {
            let (section, tls) = secure(dir.path(), secured);
            config_text.push_str(&section);
            tls
        });
        std::fs::write(&config, config_text).expect("write the config file");

        let config_arg = config.display().to_string();
        let nodes: Vec<Proc> = node_addresses
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let args = vec![
                    "--config".to_string(),
                    config_arg.clone(),
                    "--address".to_string(),
                    address.clone(),
                    "--metrics-address".to_string(),
                    "127.0.0.1:0".to_string(),
                ];
                Proc::new(format!("node{i} {address}"), node_binary, args, dir.path())
            })
            .collect();
        let coordinator_binary = Path::new(env!("CARGO_BIN_EXE_opticache-coordinator"));
        let coordinators: Vec<Proc> = coordinator_addresses
            .iter()
            .enumerate()
            .map(|(c, address)| {
                let args = vec![
                    "--config".to_string(),
                    config_arg.clone(),
                    "--address".to_string(),
                    address.clone(),
                    // The default (port + 1000) could clash between tests running at once.
                    "--metrics-address".to_string(),
                    "127.0.0.1:0".to_string(),
                ];
                let role = if c == 0 { "primary" } else { "secondary" };
                Proc::new(format!("coordinator {role} {address}"), coordinator_binary, args, dir.path())
            })
            .collect();
        let mut cluster = Cluster {
            settings,
            config,
            node_channels: node_addresses.iter().map(|a| lazy_channel(a, client_tls.as_ref())).collect(),
            coordinator_channels: coordinator_addresses.iter().map(|a| lazy_channel(a, client_tls.as_ref())).collect(),
            client_tls,
            node_addresses,
            node_dirs,
            coordinator_addresses,
            nodes,
            coordinators,
            dir,
        };
        for node in &mut cluster.nodes {
            node.spawn();
        }
        for coordinator in &mut cluster.coordinators {
            coordinator.spawn();
        }
        cluster.wait_ready().await;
        cluster
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A public API client of coordinator `c` (0: configured primary, 1: secondary).
    pub fn client(&self, c: usize) -> OptiCacheClient<Channel> {
        OptiCacheClient::new(self.coordinator_channels[c].clone())
            .max_decoding_message_size(CLIENT_MESSAGE_LIMIT)
            .max_encoding_message_size(CLIENT_MESSAGE_LIMIT)
    }

    /// A raw channel to coordinator `c` (hand-made requests).
    pub fn coordinator_channel(&self, c: usize) -> Channel {
        self.coordinator_channels[c].clone()
    }

    /// An internal node API client of node `i`.
    pub fn node_client(&self, i: usize) -> NodeClient<Channel> {
        NodeClient::new(self.node_channels[i].clone())
            .max_decoding_message_size(CLIENT_MESSAGE_LIMIT)
            .max_encoding_message_size(CLIENT_MESSAGE_LIMIT)
    }

    /// Coordinator `c`'s ClusterStatus (as admin when the cluster is secured).
    pub async fn status(&self, c: usize) -> Result<pb::ClusterStatusResponse, tonic::Status> {
        let request = match self.settings.secured {
            Some(_) => with_token(pb::ClusterStatusRequest {}, ADMIN_TOKEN),
            None => tonic::Request::new(pb::ClusterStatusRequest {}),
        };
        self.client(c).cluster_status(request).await.map(tonic::Response::into_inner)
    }

    /// Coordinator `c`'s health (service "", the whole server).
    pub async fn health(&self, c: usize) -> Result<ServingStatus, String> {
        let mut health = HealthClient::new(self.coordinator_channels[c].clone());
        let answer =
            health.check(HealthCheckRequest { service: String::new() }).await.map_err(|s| s.to_string())?.into_inner();
        Ok(answer.status())
    }

    /// Node states in node order, as `status` reports them.
    pub fn states_in(&self, status: &pb::ClusterStatusResponse) -> Vec<pb::NodeState> {
        self.node_addresses
            .iter()
            .map(|address| {
                let node = status.nodes.iter().find(|n| &n.address == address);
                node.map_or(pb::NodeState::Unspecified, |n| n.state())
            })
            .collect()
    }

    /// Polls `probe` every [`POLL_INTERVAL`] until it answers `Ok` or
    /// [`DEADLINE`] passes; then fails naming `what` and the last `Err`.
    pub async fn wait_for<T>(&self, what: &str, mut probe: impl AsyncFnMut(&Cluster) -> Result<T, String>) -> T {
        let started = Instant::now();
        loop {
            let last = match probe(self).await {
                Ok(value) => return value,
                Err(last) => last,
            };
            assert!(started.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}; last seen: {last}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Which coordinator is PRIMARY, once both coordinators agree on it (the
    /// other says STANDBY at the same epoch); (index, epoch).
    pub async fn agreed_primary(&self) -> Result<(usize, u64), String> {
        let a = self.status(0).await.map_err(|s| format!("coordinator 0: {s}"))?;
        let b = self.status(1).await.map_err(|s| format!("coordinator 1: {s}"))?;
        match (a.role(), b.role()) {
            (pb::Role::Primary, pb::Role::Standby) if a.epoch == b.epoch && a.epoch >= 1 => Ok((0, a.epoch)),
            (pb::Role::Standby, pb::Role::Primary) if a.epoch == b.epoch && b.epoch >= 1 => Ok((1, b.epoch)),
            (ra, rb) => Err(format!("roles {ra:?}@{} and {rb:?}@{}", a.epoch, b.epoch)),
        }
    }

    /// Both coordinators SERVING, one PRIMARY and one STANDBY at the same
    /// epoch, and every node UP at both.
    pub async fn wait_ready(&self) -> (usize, u64) {
        self.wait_for("both coordinators serving, one primary, every node UP at both", async |cluster| {
            for c in 0..2 {
                match cluster.health(c).await {
                    Ok(ServingStatus::Serving) => {}
                    other => return Err(format!("coordinator {c} health: {other:?}")),
                }
                let status = cluster.status(c).await.map_err(|s| format!("coordinator {c}: {s}"))?;
                let states = cluster.states_in(&status);
                if states.iter().any(|s| *s != pb::NodeState::Up) {
                    return Err(format!("coordinator {c} sees nodes {states:?}"));
                }
            }
            cluster.agreed_primary().await
        })
        .await
    }

    /// Waits until coordinator `c` reports node `i` in `state`.
    pub async fn wait_node_state(&self, c: usize, i: usize, state: pb::NodeState) {
        let what = format!("coordinator {c} to report node {i} {state:?}");
        self.wait_for(&what, async |cluster| {
            let status = cluster.status(c).await.map_err(|s| s.to_string())?;
            let states = cluster.states_in(&status);
            if states[i] == state {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        })
        .await
    }

    /// The nodes (indexes) that hold (namespace, key), best first, computed
    /// the way the coordinators place keys.
    pub fn replicas_of(&self, namespace: &str, key: &[u8]) -> Vec<usize> {
        let nodes: Vec<PlacementNode> = self.node_addresses.iter().map(|a| PlacementNode::new(a.as_str())).collect();
        placement::replicas(placement::key_hash(namespace.as_bytes(), key), &nodes, REPLICATION_FACTOR)
    }

    /// Every process's log, for a failing test.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.nodes.iter().chain(&self.coordinators) {
            out.push_str(&format!("--- log of {} ---\n{}\n--- end of log of {} ---\n", p.name, p.log(), p.name));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Coordinators first: they would otherwise log every node's death.
        for p in self.coordinators.iter_mut().chain(self.nodes.iter_mut()) {
            p.kill_now();
        }
        // OPTICACHE_TEST_LOGS=1 prints them after a passing test too.
        if std::thread::panicking() || std::env::var_os("OPTICACHE_TEST_LOGS").is_some_and(|v| v == "1") {
            eprintln!("cluster in {}\n{}", self.dir.path().display(), self.logs());
        }
    }
}

/// The config file of a test cluster.
pub fn config_yaml(settings: &Settings, nodes: &[String], dirs: &[PathBuf], coordinators: &[String]) -> String {
    let mut text = format!(
        "coordinator:\n  primary: {}\n  secondary: {}\n  failover_after_ms: {FAILOVER_AFTER_MS}\ncache_nodes:\n",
        coordinators[0], coordinators[1]
    );
    for (address, dir) in nodes.iter().zip(dirs) {
        text.push_str(&format!(
            "  - address: {address}\n    disk_path: '{}'\n    metrics_address: 127.0.0.1:0\n",
            dir.display()
        ));
    }
    text.push_str(&format!(
        "replication_factor: {REPLICATION_FACTOR}\nwrite_quorum: {WRITE_QUORUM}\n\
         heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS}\nheartbeat_misses: {HEARTBEAT_MISSES}\n\
         node:\n  shards: 1\n  durability: sync\n  max_value_bytes: {}\n",
        settings.max_value_bytes
    ));
    if !settings.production_nodes {
        text.push_str("  segment_bytes: 8MiB\n  shard_memory_budget_bytes: 16MiB\n");
    }
    text
}

/// Writes a development CA and the cluster's certificate into `dir/certs`;
/// returns the config's `security:` section and what the test's clients use.
fn secure(dir: &Path, secured: Secured) -> (String, ClientTlsConfig) {
    use opticache_security::dev_certs::{DevCerts, CA_CERT_FILE, CERT_FILE, KEY_FILE};
    let certs_dir = dir.join("certs");
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let certs = DevCerts::generate("test CA", &hosts).expect("generate certificates");
    certs.write(&certs_dir).expect("write certificates");
    let section = format!(
        "security:\n  tls:\n    ca_cert: '{}'\n    cert: '{}'\n    key: '{}'\n    mutual: {}\n  tokens:\n\
         \x20   - {{name: reader, token: {READ_TOKEN}, role: read}}\n\
         \x20   - {{name: writer, token: {WRITE_TOKEN}, role: write}}\n\
         \x20   - {{name: ops, token: {ADMIN_TOKEN}, role: admin}}\n  cluster_token: {CLUSTER_TOKEN}\n",
        certs_dir.join(CA_CERT_FILE).display(),
        certs_dir.join(CERT_FILE).display(),
        certs_dir.join(KEY_FILE).display(),
        secured.mutual
    );
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&certs.ca_cert_pem));
    if secured.mutual {
        tls = tls.identity(Identity::from_pem(&certs.cert_pem, &certs.key_pem));
    }
    (section, tls)
}

/// The code of a call that must fail, or a failure naming `what`.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, code: Code, what: &str) {
    match result {
        Ok(response) => panic!("{what}: expected {code:?}, got success {:?}", response.into_inner()),
        Err(status) => assert_eq!(status.code(), code, "{what}: wrong code ({})", status.message()),
    }
}

/// `len` deterministic pseudo-random bytes that differ for every `seed`.
pub fn value_of(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64: cheap, and no two nearby pieces look alike.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Reads `key` through `client`, expecting an answer (found or not).
pub async fn read(client: &mut OptiCacheClient<Channel>, namespace: &str, key: &[u8]) -> pb::ReadResponse {
    let request = pb::ReadRequest { namespace: namespace.to_string(), key: Bytes::copy_from_slice(key) };
    client.read_cache(request).await.unwrap_or_else(|s| panic!("ReadCache {key:?}: {s}")).into_inner()
}

/// Writes `value` at `key` through `client`, expecting success; the version.
pub async fn write(client: &mut OptiCacheClient<Channel>, namespace: &str, key: &[u8], value: Bytes) -> u64 {
    let request =
        pb::WriteRequest { namespace: namespace.to_string(), key: Bytes::copy_from_slice(key), value, ttl_ms: 0 };
    client.write_cache(request).await.unwrap_or_else(|s| panic!("WriteCache {key:?}: {s}")).into_inner().version
}

/// Sends `chunks` as one WriteStream call.
pub async fn write_stream(
    client: &mut OptiCacheClient<Channel>,
    chunks: Vec<pb::WriteChunk>,
) -> Result<tonic::Response<pb::WriteResponse>, tonic::Status> {
    client.write_stream(futures_lite::stream::iter(chunks)).await
}

/// The WriteStream chunks of `value` at (namespace, key): at most 1 MiB
/// each, the first carrying the key and the total size.
pub fn stream_chunks(namespace: &str, key: &[u8], value: &Bytes, ttl_ms: u64) -> Vec<pb::WriteChunk> {
    let mut chunks: Vec<pb::WriteChunk> = (0..value.len().div_ceil(MIB as usize).max(1))
        .map(|i| {
            let start = i * MIB as usize;
            let end = (start + MIB as usize).min(value.len());
            pb::WriteChunk { data: value.slice(start..end), ..Default::default() }
        })
        .collect();
    chunks[0].namespace = namespace.to_string();
    chunks[0].key = Bytes::copy_from_slice(key);
    chunks[0].ttl_ms = ttl_ms;
    chunks[0].total_size = value.len() as u64;
    chunks
}

/// What one ReadStream call returned.
#[derive(Debug)]
pub struct StreamRead {
    pub version: u64,
    pub total_size: u64,
    pub data: Vec<u8>,
    pub chunks: usize,
}

/// Reads (namespace, key) with ReadStream; a failure may come with the call
/// or with its first message, and comes back the same either way. Checks
/// that no chunk is over 1 MiB.
pub async fn read_stream(
    client: &mut OptiCacheClient<Channel>,
    namespace: &str,
    key: &[u8],
) -> Result<StreamRead, tonic::Status> {
    let request = pb::ReadRequest { namespace: namespace.to_string(), key: Bytes::copy_from_slice(key) };
    let mut stream = client.read_stream(request).await?.into_inner();
    let mut out = StreamRead { version: 0, total_size: 0, data: Vec::new(), chunks: 0 };
    while let Some(chunk) = stream.message().await? {
        if out.chunks == 0 {
            out.version = chunk.version;
            out.total_size = chunk.total_size;
        }
        assert!(chunk.data.len() as u64 <= MIB, "a chunk of {} bytes, over 1 MiB", chunk.data.len());
        out.data.extend_from_slice(&chunk.data);
        out.chunks += 1;
    }
    Ok(out)
}
