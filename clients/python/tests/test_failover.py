"""Coordinator fail-over: the primary coordinator is SIGKILLed and the
client keeps working through the other one."""

from __future__ import annotations

import asyncio

from cluster import wait_for

from opticache import AsyncClient, Client, Value


def test_the_client_keeps_working_when_the_primary_coordinator_is_killed(cluster, ns):
    primary = cluster.primary_index()
    other = 1 - primary
    # The primary first in the list, so that the client starts there.
    addresses = [cluster.coordinator_addresses[primary], cluster.coordinator_addresses[other]]
    with Client(addresses, timeout_s=5.0) as c:
        before = {f"k{i}": c.put(f"k{i}", f"v{i}".encode(), namespace=ns) for i in range(20)}
        assert c.preferred == addresses[0]
        cluster.kill_coordinator(primary)
        try:
            # Reads, writes, updates, batches and streams all go through the standby.
            for key, version in before.items():
                assert c.get_versioned(key, namespace=ns) == Value(key.replace("k", "v").encode(), version)
            assert c.preferred == addresses[1]
            new = c.put("after", b"written after the kill", namespace=ns)
            assert new > max(before.values())
            updated = c.update("after", b"updated", expected_version=new, namespace=ns)
            assert c.get_versioned("after", namespace=ns) == Value(b"updated", updated)
            assert c.delete("k0", namespace=ns) is True
            assert c.put_many([("b1", b"1"), ("b2", b"2")], namespace=ns)
            assert c.get_many(["b1", "b2", "k0"], namespace=ns) == [b"1", b"2", None]
            c.put_stream("s", b"z" * (3 << 20), namespace=ns)
            assert c.get_stream("s", namespace=ns).read_all() == b"z" * (3 << 20)

            # The standby takes the primary role within failover_after_ms.
            def promoted():
                status = c.cluster_status()
                assert status.address == addresses[1] and status.role == "PRIMARY", status
                return status

            status = wait_for("the standby to become primary", promoted)
            assert {n.state for n in status.nodes} == {"UP"}

            # A fresh client listing the dead coordinator first works too.
            async def through_async_client():
                async with AsyncClient(addresses, timeout_s=5.0) as ac:
                    assert await ac.get("after", namespace=ns) == b"updated"
                    assert ac.preferred == addresses[1]

            asyncio.run(through_async_client())
        finally:
            # Back to a full cluster for the tests that follow.
            cluster.restart_coordinator(primary)
        # And calls keep working once the old primary is back (as standby).
        assert c.get("after", namespace=ns) == b"updated"
