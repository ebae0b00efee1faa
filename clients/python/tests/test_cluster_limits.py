"""The status-table rows that need a cluster of their own: a disk budget
reached (RESOURCE_EXHAUSTED, reads keep working) and no live replica
(UNAVAILABLE). The cluster here has tiny disk budgets and ends with every
node killed, so it is not the session's."""

from __future__ import annotations

import grpc
import pytest
from cluster import Cluster

from opticache import Client, TooLarge, Unavailable


@pytest.fixture(scope="module")
def small_cluster():
    # Two 1 MiB segments per shard at most, refusing writes beyond.
    c = Cluster(
        node_shards=(1, 1, 1),
        node_settings={
            "segment_bytes": "1MiB",
            "shard_disk_budget_bytes": "2MiB",
            "disk_full_policy": "store",
        },
    ).start()
    try:
        yield c
    finally:
        c.stop()


def fill_until_refused(c: Client) -> dict:
    """Writes 256 KiB values until the cluster refuses one; key -> version
    of every acknowledged write."""
    value = VALUE
    written = {}
    with pytest.raises(TooLarge) as full:
        for i in range(64):  # 16 MiB: far beyond 3 nodes x 2 MiB
            written[f"k{i}"] = c.put(f"k{i}", value)
    assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "disk budget" in full.value.message
    assert 0 < len(written) < 64
    return written


VALUE = bytes(range(256)) * 1024  # 256 KiB
_written: dict = {}


def test_a_full_disk_budget_refuses_writes_and_reads_keep_working(small_cluster):
    with Client(small_cluster.coordinator_addresses, timeout_s=10.0) as c:
        _written.update(fill_until_refused(c))
        # Reads keep working: every read answers, and what it finds is the
        # value at the version the write was given.
        found = 0
        for key, version in _written.items():
            got = c.get_versioned(key)
            if got is not None:
                assert got.value == VALUE and got.version == version, key
                found += 1
        assert found >= len(_written) // 2
        assert c.get("never-written") is None


def test_every_acknowledged_write_is_readable_after_a_refusal(small_cluster):
    assert _written, "runs after the disk-budget test"
    with Client(small_cluster.coordinator_addresses, timeout_s=10.0) as c:
        missing = [key for key in _written if c.get(key) is None]
    assert missing == []


def test_no_live_replica_is_unavailable(small_cluster):
    with Client(small_cluster.coordinator_addresses, timeout_s=2.0) as c:
        c.get("k0")  # the coordinators answer
        for node in small_cluster.nodes:
            node.kill9()
        with pytest.raises(Unavailable) as e:
            c.get("k0")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        # Both coordinators were asked and said the same.
        assert {a for a, _ in e.value.attempts} == set(small_cluster.coordinator_addresses)
        # An update is not repeated: the coordinator answered, it may have been applied.
        with pytest.raises(Unavailable, match="not retried"):
            c.update("k0", b"v")
        # The coordinators still answer what they know.
        status = c.cluster_status()
        assert len(status.nodes) == 3
