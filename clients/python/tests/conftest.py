"""Fixtures: one real local cluster for the whole session (``cluster``), a
client of it per test (``client``), and a namespace of its own per test
(``ns``) so that tests never see each other's keys."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# The tests start processes (the cluster, the examples) while gRPC channels
# are open. Where subprocess forks (Python 3.9; later versions use vfork),
# grpcio 1.80 and newer restart their poller in the child, which can abort
# it before exec ("epoll_wait error: Bad file descriptor", grpc/grpc#43055).
# The children exec at once and need no gRPC fork support. Set before grpc
# is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import Cluster  # noqa: E402

from opticache import Client  # noqa: E402


@pytest.fixture(scope="session")
def cluster():
    c = Cluster().start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def client(cluster):
    with Client(cluster.coordinator_addresses, timeout_s=10.0) as c:
        yield c


@pytest.fixture
def ns(request) -> str:
    """A namespace for this test alone."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:200]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used a cluster (the session's, or a module's own
    such as ``secure_cluster``) shows the tail of every log."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Cluster):
                report.sections.append((f"{name} logs", value.logs()))
