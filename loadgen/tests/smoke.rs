//! loadgen against real servers: starts `opticache-node` on a fresh data
//! dir, runs the `loadgen` binary for five seconds of the mixed profile with a
//! preload, and checks the JSON report: the counts add up, nothing failed,
//! and every read found its value and checked it. A second, one-second run
//! does the same against `redis-server` with every operation Redis maps
//! (skipped, saying so, where Redis is not installed).
//!
//! The node binary is found next to loadgen's (same profile directory) and
//! built when it is missing or older than its sources, by
//! `opticache_testsupport::node_binary`, as the coordinator's tests do:
//! `CARGO_BIN_EXE_*` only exists for a package's own binaries.
//!
//! Nothing here sleeps to synchronise: the node's readiness is its
//! `serving` log line, read with a deadline; Redis's is its port accepting,
//! polled every 20 ms until a deadline.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loadgen::profile::OpKind;
use loadgen::report::{parse_hgrm, Report};
use opticache_testsupport::Server;

/// How long the node may take to start (two shared, possibly busy cores).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// `opticache-node` of the same profile as the loadgen under test, built
/// once per test process if missing or stale.
fn node_binary() -> &'static Path {
    opticache_testsupport::node_binary(Path::new(env!("CARGO_BIN_EXE_loadgen")))
}

/// Removes ANSI colour sequences, in case the log is coloured.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_node() -> Server {
    start_node_with(|_| String::new())
}

/// A node whose config ends with `extra(dir)` (e.g. a `security:` section
/// naming files written into the node's directory `dir`).
fn start_node_with(extra: impl FnOnce(&Path) -> String) -> Server {
    // Under the target dir rather than /tmp: the engine writes with
    // O_DIRECT, which a tmpfs may refuse.
    let dir = tempfile::Builder::new().prefix("loadgen-smoke-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "coordinator:\n  primary: 127.0.0.1:1\n\
         cache_nodes:\n  - address: 127.0.0.1:0\n    disk_path: '{}'\n    metrics_address: 127.0.0.1:0\n\
         replication_factor: 1\n\
         node:\n  durability: sync\n  shards: 1\n  segment_bytes: 8MiB\n  shard_memory_budget_bytes: 16MiB\n{}",
        dir.path().join("data").display(),
        extra(dir.path())
    );
    std::fs::write(&config, yaml).expect("write the node's config");
    let child = Command::new(node_binary())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,opticache_node::server=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start opticache-node");
    // Owned by the guard from here on, so a failed start kills the node.
    let mut server = Server { child, address: String::new(), dir };
    let stderr = server.child.stderr.take().expect("stderr is piped");
    let (lines_tx, lines) = mpsc::channel();
    // Reads the log for the whole life of the node, so the pipe never fills.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(plain(&line));
        }
    });
    let deadline = Instant::now() + START_DEADLINE;
    let mut address = None;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!("the node did not log `serving` ({e:?}); its log:\n{}", seen.join("\n")),
        };
        if let Some(rest) = line.split("address=").nth(1) {
            address.get_or_insert_with(|| rest.split_whitespace().next().unwrap_or_default().to_owned());
        }
        // "INFO opticache_node::server: serving address=...".
        let serving = line.split_whitespace().any(|word| word == "serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    server.address = address.unwrap_or_else(|| panic!("the node logged no address:\n{}", seen.join("\n")));
    server
}

#[test]
fn a_five_second_mixed_run_against_a_node_reads_back_everything_it_wrote() {
    let node = start_node();
    let out = tempfile::tempdir().expect("dir");
    let json = out.path().join("out.json");
    let hgrm = out.path().join("hgrm");
    let target = format!("node://{}", node.address);
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &target, "--profile", "mixed", "--duration", "5s", "--warmup", "0s"])
        .args(["--concurrency", "4", "--keys", "1000", "--preload", "--timeout", "5s", "--json"])
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .args(["--server-pid", &node.child.id().to_string()])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "loadgen failed ({}):\n{stdout}\n{stderr}", run.status);
    assert!(stdout.contains("preloaded 1000 keys"), "{stdout}");

    let report = Report::read_json(&json).expect("the JSON report reads back");
    assert_eq!(report.target, target);
    assert_eq!(report.plan.workload.keys, 1000);
    assert!(report.plan.workload.misses_are_errors);
    assert_eq!(report.preload.map(|p| p.keys), Some(1000));
    // The 5 s window, plus the calls in flight at its end (each under the
    // 5 s --timeout).
    assert!((5_000..10_000).contains(&report.measured_ms), "measured_ms {}", report.measured_ms);
    assert_eq!(report.command_line[1..3], ["--target".to_owned(), target.clone()]);

    let kinds: Vec<OpKind> = report.ops.iter().map(|o| o.op).collect();
    assert_eq!(kinds, [OpKind::Read, OpKind::Write], "the mixed profile reads and writes");
    assert_eq!(report.totals.ops, report.ops.iter().map(|o| o.count).sum::<u64>());
    assert_eq!(report.totals.errors, 0, "{:?}", report.ops.iter().map(|o| &o.error_examples).collect::<Vec<_>>());
    assert_eq!(report.totals.missed_keys, 0);
    // Both sides worked for their calls, and the text says how hard.
    let cpu = report.cpu.as_ref().expect("CPU was measured");
    assert_eq!(cpu.server_pids, [node.child.id()]);
    assert!((4_900..10_000).contains(&cpu.window_ms), "window {} ms", cpu.window_ms);
    assert!(cpu.client_cpu_ms.expect("loadgen's CPU") > 0, "{cpu:?}");
    assert!(cpu.server_cpu_ms.expect("the node's CPU") > 0, "{cpu:?}");
    assert!(stdout.contains("CPU in the measured window: loadgen "), "{stdout}");
    for op in &report.ops {
        assert!(op.count > 0, "{} ran", op.op);
        assert_eq!((op.ok, op.errors), (op.count, 0), "{}: {:?}", op.op, op.error_examples);
        assert_eq!(op.bytes, op.count * 4096, "{}: every value was 4 KiB and checked", op.op);
        assert!(op.latency.p50_us <= op.latency.p99_us && op.latency.p99_us <= op.latency.max_us, "{:?}", op.latency);
        assert!(op.ops_per_s > 0.0);

        let text = std::fs::read_to_string(hgrm.join(format!("{}.hgrm", op.op))).expect("an .hgrm file per op");
        let parsed = parse_hgrm(&text).expect("the .hgrm file parses");
        assert_eq!(parsed.total_count, op.count, "{}", op.op);
        assert_eq!((parsed.max_ms * 1_000.0).round() as u64, op.latency.max_us, "{}", op.op);
    }
}

/// A node under mutual TLS and a cluster token: loadgen with the CA, a
/// certificate of that CA and the token runs clean; without the token every
/// call fails UNAUTHENTICATED (exit 3, errors in the report), and the token
/// appears neither in loadgen's output nor in its JSON report.
#[test]
fn a_secured_node_is_driven_with_its_credentials_and_refuses_a_run_without_them() {
    const TOKEN: &str = "loadgen-smoke-cluster-token-0123456789";
    let certs = opticache_security::dev_certs::DevCerts::generate("loadgen smoke CA", &["127.0.0.1".to_owned()])
        .expect("certificates");
    let mut cert_dir = None;
    let node = start_node_with(|dir| {
        let certs_dir = dir.join("certs");
        certs.write(&certs_dir).expect("write the certificates");
        cert_dir = Some(certs_dir.clone());
        format!(
            "security:\n  tls:\n    ca_cert: '{0}/ca.pem'\n    cert: '{0}/cluster.pem'\n    key: '{0}/cluster.key'\n    mutual: true\n  cluster_token: '{TOKEN}'\n",
            certs_dir.display()
        )
    });
    let certs_dir = cert_dir.expect("written");
    let out = tempfile::tempdir().expect("dir");
    let token_file = out.path().join("cluster.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let target = format!("node://{}", node.address);
    let run = |with_token: bool, json: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
        cmd.args(["--target", &target, "--profile", "mixed", "--duration", "1s", "--warmup", "0s"])
            .args(["--concurrency", "2", "--keys", "100", "--timeout", "5s", "--json"])
            .arg(json)
            .arg("--ca-cert")
            .arg(certs_dir.join("ca.pem"))
            .arg("--cert")
            .arg(certs_dir.join("cluster.pem"))
            .arg("--key")
            .arg(certs_dir.join("cluster.key"));
        if with_token {
            cmd.arg("--preload").arg("--token-file").arg(&token_file);
        }
        cmd.output().expect("run loadgen")
    };

    let json = out.path().join("secured.json");
    let ok = run(true, &json);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}\n{stdout}\n{}", ok.status, String::from_utf8_lossy(&ok.stderr));
    let report = Report::read_json(&json).expect("report");
    assert!(report.totals.ops > 0 && report.totals.errors == 0, "{:?}", report.totals);
    assert_eq!(report.totals.missed_keys, 0, "the preload went through the secured link too");
    let json_text = std::fs::read_to_string(&json).expect("read");
    assert!(!json_text.contains(TOKEN) && !stdout.contains(TOKEN), "the token leaked");

    let refused_json = out.path().join("refused.json");
    let refused = run(false, &refused_json);
    assert_eq!(refused.status.code(), Some(3), "{}", String::from_utf8_lossy(&refused.stderr));
    let refused_output = [refused.stdout.as_slice(), refused.stderr.as_slice(), ok.stderr.as_slice()].concat();
    assert!(!String::from_utf8_lossy(&refused_output).contains(TOKEN), "the token leaked");
    let report = Report::read_json(&refused_json).expect("report");
    assert!(report.totals.ops > 0, "calls were made: {:?}", report.totals);
    assert_eq!(report.totals.errors, report.totals.ops, "every call refused: {:?}", report.totals);
    assert!(report.ops.iter().all(|o| o.errors_by_kind.keys().all(|k| k == "UNAUTHENTICATED")), "{:?}", report.ops);
}

/// Ports tried for Redis: a port free a moment ago can be taken before
/// Redis binds it, and then Redis exits at once; the next one is tried.
const REDIS_PORT_ATTEMPTS: usize = 5;

/// A Redis server on a free port and a temporary dir, killed when dropped;
/// `None` when `redis-server` is not installed.
fn start_redis() -> Option<Server> {
    let mut exits = Vec::new();
    for _ in 0..REDIS_PORT_ATTEMPTS {
        let dir =
            tempfile::Builder::new().prefix("loadgen-redis-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(std::fs::File::create(dir.path().join("redis.log")).expect("redis log file"))
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut server = Server { child, address: format!("127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if std::net::TcpStream::connect(&server.address).is_ok() {
                return Some(server);
            }
            if let Some(status) = server.child.try_wait().expect("waitpid") {
                let log = std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default();
                exits.push(format!("port {port}: {status}: {}", log.trim()));
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", server.address);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("redis-server exited on every port tried: {exits:#?}");
}

#[test]
fn a_short_run_against_redis_maps_every_operation_and_reads_back_everything() {
    let Some(redis) = start_redis() else {
        eprintln!("redis-server is not installed: the Redis smoke run is skipped");
        return;
    };
    let out = tempfile::tempdir().expect("dir");
    let json = out.path().join("redis.json");
    let target = format!("redis://{}", redis.address);
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &target, "--duration", "1s", "--warmup", "0s", "--concurrency", "2", "--keys", "200"])
        .args(["--preload", "--mix", "read:4,write:2,update:1,batch-read:1,batch-write:1", "--batch-size", "4"])
        .args(["--timeout", "5s"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "loadgen failed ({}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let report = Report::read_json(&json).expect("the JSON report reads back");
    let kinds: Vec<OpKind> = report.ops.iter().map(|o| o.op).collect();
    assert_eq!(kinds, [OpKind::Read, OpKind::Write, OpKind::Update, OpKind::BatchRead, OpKind::BatchWrite]);
    assert_eq!((report.totals.errors, report.totals.missed_keys), (0, 0), "{stdout}");
    for op in &report.ops {
        assert_eq!(op.ok, op.count, "{}: {:?}", op.op, op.error_examples);
        let keys_per_op = if op.op.is_batch() { 4 } else { 1 };
        assert_eq!(op.bytes, op.count * keys_per_op * 4096, "{}: whole, checked 4 KiB values", op.op);
    }
}
