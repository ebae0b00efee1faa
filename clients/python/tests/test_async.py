"""The asyncio client against the real cluster: every method."""

from __future__ import annotations

import asyncio
import io
import random

import grpc
import numpy as np
import pytest
from cluster import MAX_VALUE_BYTES, MIB

from opticache import AsyncClient, InvalidArgument, NotFound, StreamInfo, TooLarge, Value, VersionConflict


def run(coroutine):
    return asyncio.run(coroutine)


def test_point_calls(cluster, ns):
    async def main():
        async with AsyncClient(cluster.coordinator_addresses) as c:
            value = random.Random(1).randbytes(100_000)
            v1 = await c.put("k", value, namespace=ns)
            assert await c.get_versioned("k", namespace=ns) == Value(value, v1)
            assert await c.get("k", namespace=ns) == value
            v2 = await c.update("k", b"two", expected_version=v1, namespace=ns)
            assert v2 > v1
            with pytest.raises(VersionConflict):
                await c.update("k", b"three", expected_version=v1, namespace=ns)
            with pytest.raises(NotFound):
                await c.update("absent", b"x", namespace=ns)
            assert await c.get("k", namespace=ns) == b"two"
            assert await c.delete("k", namespace=ns) is True
            assert await c.delete("k", namespace=ns) is False
            assert await c.get("k", namespace=ns) is None
            with pytest.raises(InvalidArgument):
                await c.put(b"", b"v", namespace=ns)
            with pytest.raises(TooLarge) as e:
                await c.put("big", b"x" * (MAX_VALUE_BYTES + 1), namespace=ns)
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = await c.cluster_status()
            assert {n.state for n in status.nodes} == {"UP"} and len(status.nodes) == 3
            assert status.address in cluster.coordinator_addresses

    run(main())


def test_batches(cluster, ns):
    async def main():
        async with AsyncClient(cluster.coordinator_addresses) as c:
            items = [(f"e{i}", i.to_bytes(3, "big")) for i in range(5000)]  # two calls
            versions = await c.put_many(items, namespace=ns)
            assert len(versions) == 5000
            got = await c.get_many([k for k, _ in items] + ["missing"], namespace=ns)
            assert got == [v for _, v in items] + [None]
            versioned = await c.get_many_versioned(["e0", "e4999"], namespace=ns)
            assert [r.version for r in versioned] == [versions[0], versions[-1]]

    run(main())


def test_streams(cluster, ns, tmp_path):
    data = random.Random(2).randbytes(3 * MIB + 5)

    async def agen():
        for i in range(0, len(data), 500_000):
            yield data[i : i + 500_000]

    async def main():
        async with AsyncClient(cluster.coordinator_addresses) as c:
            v1 = await c.put_stream("from-async-gen", agen(), total_size=len(data), namespace=ns)
            v2 = await c.put_stream("from-async-gen-spooled", agen(), namespace=ns)
            src = tmp_path / "src.bin"
            src.write_bytes(data)
            v3 = await c.put_stream("from-path", src, namespace=ns)
            with open(src, "rb") as f:
                v4 = await c.put_stream("from-file", f, namespace=ns)
            v5 = await c.put_stream("from-list", [data[:10], data[10:]], total_size=len(data), namespace=ns)
            for key, version in [
                ("from-async-gen", v1),
                ("from-async-gen-spooled", v2),
                ("from-path", v3),
                ("from-file", v4),
                ("from-list", v5),
            ]:
                stream = await c.get_stream(key, namespace=ns)
                assert (stream.version, stream.total_size) == (version, len(data))
                chunks = [chunk async for chunk in stream]
                assert all(len(chunk) <= MIB for chunk in chunks)
                assert b"".join(chunks) == data, key
            out = tmp_path / "out.bin"
            assert await c.get_stream("from-path", dest=out, namespace=ns) == StreamInfo(v3, len(data))
            assert out.read_bytes() == data
            buffer = io.BytesIO()
            await c.get_stream("from-file", dest=buffer, namespace=ns)
            assert buffer.getvalue() == data
            assert await c.get_stream("absent", namespace=ns) is None
            with pytest.raises(InvalidArgument, match="ended after"):
                await c.put_stream("short", agen(), total_size=len(data) + 1, namespace=ns)
            assert await c.get("short", namespace=ns) is None

    run(main())


def test_arrays_and_params(cluster, ns):
    arrays = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, 2, 3], dtype=">i8"),
        "big": np.ones(5 * MIB // 8),  # streamed
        "scalar": np.array(True),
    }

    async def main():
        async with AsyncClient(cluster.coordinator_addresses) as c:
            for name, array in arrays.items():
                await c.put_array(name, array, namespace=ns)
                got = await c.get_array(name, namespace=ns)
                assert got.dtype.str == array.dtype.str and got.shape == array.shape
                assert got.tobytes() == array.tobytes()
            assert await c.get_array("absent", namespace=ns) is None
            model = ns + "-model"
            assert await c.latest_params_version(model) is None
            await c.put_params(model, 1, arrays)
            await c.put_params(model, 2, {"w": arrays["w"] * 2})
            assert await c.latest_params_version(model) == 2
            latest = await c.get_params(model)
            assert list(latest) == ["w"] and latest["w"].tobytes() == (arrays["w"] * 2).tobytes()
            first = await c.get_params(model, 1)
            assert {n: a.tobytes() for n, a in first.items()} == {n: a.tobytes() for n, a in arrays.items()}
            assert await c.delete_params(model, 1) is True
            with pytest.raises(NotFound):
                await c.get_params(model, 1)

    run(main())
