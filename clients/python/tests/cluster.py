"""A local OptiCache cluster of real processes for the tests: three
``opticache-node`` and two ``opticache-coordinator`` (primary and standby),
each cluster in a temporary directory of its own with its own config file.

- Binaries come from ``$OPTICACHE_BIN_DIR`` (default ``<repo>/target/debug``).
- Ports: the coordinators must know every address from the config file, so
  port 0 cannot be used there; ``free_ports`` binds ``127.0.0.1:0`` to let
  the OS choose, keeps the ports and releases them before the config is
  written. Metrics endpoints use port 0.
- Nothing sleeps to synchronise: every wait polls a condition every
  ``POLL_S`` until ``DEADLINE_S`` (two shared, busy cores) and then fails
  saying what it waited for and what it saw last.
- Each process's stdout and stderr go to a log file in the cluster's
  directory; ``logs()`` returns their tails for a failing test.
- ``Cluster(security=Security())`` secures the cluster as
  ``docs/security.md`` describes: certificates from a fresh development CA
  (``opticache-dev-certs``, written to ``<dir>/certs``), TLS on every link
  (mutual by default), one client token per role and a cluster token, all
  appended to the config as its ``security:`` section. The harness's own
  probes then speak TLS trusting that CA and send the admin token.
- ``stop()`` SIGTERMs every process (coordinators first), SIGKILLs what is
  still alive after a grace period, and removes the directory. Where
  ``setpriv`` exists the processes also get SIGKILL if the test process dies
  without cleaning up.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

import grpc

from opticache.v1 import opticache_pb2 as pb2
from opticache.v1 import opticache_pb2_grpc as pb2_grpc

REPO = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("OPTICACHE_BIN_DIR") or REPO / "target" / "debug")
DEADLINE_S = 60.0
POLL_S = 0.025
MIB = 1 << 20

#: The test cluster's largest unary value: small, so the over-limit test is cheap.
MAX_VALUE_BYTES = 4 * MIB
FAILOVER_AFTER_MS = 1000

T = TypeVar("T")

_handed_out: set = set()


def free_ports(n: int) -> List[int]:
    """``n`` distinct ports that were free a moment ago (never the same port
    twice in one test process)."""
    sockets, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def wait_for(what: str, probe: Callable[[], T], deadline_s: float = DEADLINE_S) -> T:
    """Polls ``probe`` until it returns without raising; fails after the
    deadline naming ``what`` and the last error."""
    started = time.monotonic()
    while True:
        try:
            return probe()
        except Exception as e:  # noqa: BLE001 - the last one is reported
            last = e
        if time.monotonic() - started > deadline_s:
            raise TimeoutError(f"timed out after {deadline_s:g} s waiting for {what}; last seen: {last!r}")
        time.sleep(POLL_S)


def _token(role: str) -> str:
    """A fresh token (printable ASCII, no spaces, over 16 characters), so a
    token found in a log can only have come from this run."""
    return f"pytest-{role}-{secrets.token_hex(16)}"


@dataclass(frozen=True)
class Security:
    """The ``security:`` section of a secured test cluster (docs/security.md):
    TLS with certificates from a development CA made for the cluster, one
    client token per role, and the cluster token."""

    mutual: bool = True
    #: role ("read", "write", "admin") -> token
    tokens: Dict[str, str] = field(default_factory=lambda: {r: _token(r) for r in ("read", "write", "admin")})
    cluster_token: str = field(default_factory=lambda: _token("cluster"))

    def secrets(self) -> List[str]:
        """Every token the cluster knows, the cluster token included."""
        return [*self.tokens.values(), self.cluster_token]

    def section(self, certs: Path) -> List[str]:
        """The config lines; each holder is named after its role ("read-holder", ...)."""
        lines = [
            "security:",
            "  tls:",
            f"    ca_cert: '{certs / 'ca.pem'}'",
            f"    cert: '{certs / 'cluster.pem'}'",
            f"    key: '{certs / 'cluster.key'}'",
            f"    mutual: {'true' if self.mutual else 'false'}",
            "  tokens:",
        ]
        lines += [f"    - {{name: {role}-holder, token: '{token}', role: {role}}}" for role, token in self.tokens.items()]
        lines.append(f"  cluster_token: '{self.cluster_token}'")
        return lines


def dev_certs(out: Path, hosts: str = "127.0.0.1,localhost") -> Path:
    """Runs ``opticache-dev-certs --out out --hosts hosts`` (a fresh CA and a
    certificate it signed: ca.pem, ca.key, cluster.pem, cluster.key); the
    path of ca.pem."""
    binary = BIN_DIR / "opticache-dev-certs"
    if not binary.is_file():
        raise FileNotFoundError(
            f"{binary} is missing: build it with `cargo build --bin opticache-dev-certs` or set OPTICACHE_BIN_DIR"
        )
    done = subprocess.run(
        [str(binary), "--out", str(out), "--hosts", hosts],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"opticache-dev-certs failed ({done.returncode}): {done.stderr.strip()}")
    for name in ("ca.pem", "ca.key", "cluster.pem", "cluster.key"):
        if not (out / name).is_file():
            raise RuntimeError(f"opticache-dev-certs did not write {out / name}: {done.stdout.strip()}")
    return out / "ca.pem"


class Proc:
    """One process slot (a node or a coordinator) across its restarts."""

    def __init__(self, name: str, argv: List[str], cwd: Path, log: Path, rust_log: Optional[str] = None) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.log = log
        self.rust_log = rust_log
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is still running"
        prefix = []
        setpriv = shutil.which("setpriv")
        if setpriv:
            # Dies with the test process even if that is killed outright.
            prefix = [setpriv, "--pdeathsig", "KILL"]
        env = dict(os.environ, RUST_LOG=self.rust_log or os.environ.get("RUST_LOG", "info"))
        with open(self.log, "ab") as log:
            log.write(f"===== {self.name}: start =====\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                prefix + self.argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        assert self.popen is not None and self.popen.poll() is None, f"{self.name} is not running"
        self.popen.send_signal(sig)

    def wait_exit(self, timeout_s: float = DEADLINE_S) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout_s)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        code = self.wait_exit()
        assert code == -signal.SIGKILL, f"{self.name}: expected death by SIGKILL, got {code}"

    def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL if it is still alive after ``grace_s``."""
        if not self.running:
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=DEADLINE_S)

    def log_text(self) -> str:
        """Everything the process wrote (stdout and stderr), in all its lives."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def health_status(channel: grpc.Channel, timeout_s: float = 2.0) -> int:
    """grpc.health.v1.Health/Check for the whole server (service ""): the
    ServingStatus number (1 = SERVING). The request is an empty message and
    the answer has one varint field, so both are coded here by hand instead
    of generating the health stubs."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda _: b"",
        response_deserializer=lambda raw: raw,
    )
    raw = check(None, timeout=timeout_s)
    if raw == b"":
        return 0
    if raw[0] != 0x08:
        raise ValueError(f"unexpected HealthCheckResponse {raw!r}")
    return raw[1]


class Cluster:
    """Three nodes and two coordinators on 127.0.0.1."""

    def __init__(
        self,
        max_value_bytes: int = MAX_VALUE_BYTES,
        node_shards: tuple = (2, 1, 1),
        node_settings: Optional[dict] = None,
        security: Optional[Security] = None,
        rust_log: Optional[str] = None,
    ) -> None:
        """``node_settings`` overrides keys of the config's ``node:`` section;
        ``security`` secures the cluster (the class's docstring);
        ``rust_log`` is the processes' RUST_LOG (default: $RUST_LOG, or info)."""
        self.security = security
        for binary in ("opticache-node", "opticache-coordinator"):
            if not (BIN_DIR / binary).is_file():
                raise FileNotFoundError(
                    f"{BIN_DIR / binary} is missing: build it with "
                    "`cargo build --bin opticache-node --bin opticache-coordinator` or set OPTICACHE_BIN_DIR"
                )
        # Not tmpfs: the engine writes with O_DIRECT. $OPTICACHE_TEST_TMPDIR
        # overrides the system's temporary directory.
        self.dir = Path(tempfile.mkdtemp(prefix="opticache-pytest-", dir=os.environ.get("OPTICACHE_TEST_TMPDIR")))
        ports = free_ports(5)
        self.node_addresses = [f"127.0.0.1:{p}" for p in ports[:3]]
        self.coordinator_addresses = [f"127.0.0.1:{p}" for p in ports[3:]]
        self.config = self.dir / "config.yaml"
        lines = [
            "coordinator:",
            f"  primary: {self.coordinator_addresses[0]}",
            f"  secondary: {self.coordinator_addresses[1]}",
            f"  failover_after_ms: {FAILOVER_AFTER_MS}",
            "cache_nodes:",
        ]
        for i, address in enumerate(self.node_addresses):
            lines += [
                f"  - address: {address}",
                f"    disk_path: '{self.dir / f'node{i}'}'",
                "    metrics_address: 127.0.0.1:0",
                f"    shards: {node_shards[i]}",
            ]
        lines += [
            "replication_factor: 2",
            "write_quorum: 1",
            "heartbeat_interval_ms: 100",
            "heartbeat_misses: 3",
            "node:",
        ]
        node = {
            "shards": 1,
            "durability": "sync",
            "max_value_bytes": max_value_bytes,
            "segment_bytes": "64MiB",  # small: less disk for the tests
            "shard_memory_budget_bytes": "16MiB",
        }
        node.update(node_settings or {})
        lines += [f"  {key}: {value}" for key, value in node.items()]
        #: The CA certificate clients of a secured cluster trust (None: plaintext).
        self.ca_cert: Optional[Path] = None
        if security is not None:
            try:
                self.ca_cert = dev_certs(self.dir / "certs")
            except BaseException:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise
            lines += security.section(self.dir / "certs")
        self.config.write_text("\n".join(lines) + "\n")
        common = ["--config", str(self.config), "--metrics-address", "127.0.0.1:0"]
        self.nodes = [
            Proc(
                f"node{i} {a}",
                [str(BIN_DIR / "opticache-node"), *common, "--address", a],
                self.dir,
                self.dir / f"node{i}.log",
                rust_log,
            )
            for i, a in enumerate(self.node_addresses)
        ]
        self.coordinators = [
            Proc(
                f"coordinator {role} {a}",
                [str(BIN_DIR / "opticache-coordinator"), *common, "--address", a],
                self.dir,
                self.dir / f"coordinator{c}.log",
                rust_log,
            )
            for c, (role, a) in enumerate(zip(("primary", "secondary"), self.coordinator_addresses))
        ]
        if self.ca_cert is not None:
            # Probes trust only the cluster's CA; the certificate names 127.0.0.1.
            credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_cert.read_bytes())
            self._channels = [grpc.secure_channel(a, credentials) for a in self.coordinator_addresses]
        else:
            self._channels = [grpc.insecure_channel(a) for a in self.coordinator_addresses]
        self._stubs = [pb2_grpc.OptiCacheStub(ch) for ch in self._channels]
        # ClusterStatus needs the admin role when tokens are on; health needs nothing.
        self._metadata = None
        if security is not None:
            self._metadata = (("authorization", f"Bearer {security.tokens['admin']}"),)

    # ------------------------------------------------------------------

    def start(self) -> "Cluster":
        try:
            for p in self.nodes + self.coordinators:
                p.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def status(self, c: int) -> "pb2.ClusterStatusResponse":
        return self._stubs[c].ClusterStatus(pb2.ClusterStatusRequest(), timeout=2.0, metadata=self._metadata)

    def _ready(self, coordinators: List[int]) -> str:
        roles = {}
        for c in coordinators:
            if not self.coordinators[c].running:
                raise RuntimeError(f"{self.coordinators[c].name} exited: {self.coordinators[c].log_tail(10)}")
            serving = health_status(self._channels[c])
            if serving != 1:
                raise RuntimeError(f"coordinator {c} health status {serving}, not SERVING")
            status = self.status(c)
            states = {n.address: pb2.NodeState.Name(n.state) for n in status.nodes}
            if sorted(states) != sorted(self.node_addresses) or set(states.values()) != {"UP"}:
                raise RuntimeError(f"coordinator {c} sees nodes {states}")
            roles[c] = (pb2.Role.Name(status.role), status.epoch)
        primaries = [c for c, (role, _) in roles.items() if role == "PRIMARY"]
        if len(primaries) != 1 or len({epoch for _, epoch in roles.values()}) != 1:
            raise RuntimeError(f"roles {roles}")
        return self.coordinator_addresses[primaries[0]]

    def wait_ready(self, coordinators: Optional[List[int]] = None) -> str:
        """Waits until the coordinators (default: both) are SERVING, every
        node is UP at each, and exactly one is PRIMARY at one epoch; the
        primary's address."""
        running = coordinators if coordinators is not None else [0, 1]
        for p in self.nodes:
            if not p.running:
                raise RuntimeError(f"{p.name} exited:\n{p.log_tail()}")
        return wait_for(
            "coordinators serving, one primary, every node UP",
            lambda: self._ready(running),
        )

    def primary_index(self) -> int:
        return self.coordinator_addresses.index(self.wait_ready())

    def kill_coordinator(self, c: int) -> None:
        self.coordinators[c].kill9()

    def restart_coordinator(self, c: int) -> None:
        self.coordinators[c].start()
        self.wait_ready()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} (last lines of {p.log.name}) ---\n{p.log_tail()}" for p in self.nodes + self.coordinators
        )

    def log_texts(self) -> Dict[str, str]:
        """Every process's whole log (stdout and stderr), by process name."""
        return {p.name: p.log_text() for p in self.nodes + self.coordinators}

    def disk_usage(self) -> int:
        return sum(f.stat().st_size for f in self.dir.rglob("*") if f.is_file())

    def stop(self) -> None:
        """SIGTERM everything (coordinators first), SIGKILL what lingers,
        remove the directory."""
        for ch in self._channels:
            ch.close()
        for p in self.coordinators + self.nodes:
            try:
                p.stop(grace_s=10.0)
            except Exception:  # noqa: BLE001 - keep stopping the others
                if p.popen is not None and p.popen.poll() is None:
                    p.popen.kill()
        if os.environ.get("OPTICACHE_KEEP_TEST_DIR") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
