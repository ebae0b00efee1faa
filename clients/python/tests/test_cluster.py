"""Every call of the blocking client against the real cluster, and every row
of the API's status table the client can reach."""

from __future__ import annotations

import io
import random

import grpc
import pytest
from cluster import MAX_VALUE_BYTES, MIB

from opticache import (
    BATCH_LEN_MAX,
    Client,
    InvalidArgument,
    NotFound,
    OptiCacheError,
    StreamInfo,
    TooLarge,
    Value,
    VersionConflict,
)


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_put_get_roundtrip_byte_for_byte_with_increasing_versions(client, ns):
    values = [b"", b"\x00", b"hello, world", payload(1, 100), payload(2, 64 * 1024), payload(3, MAX_VALUE_BYTES)]
    last = 0
    for i, value in enumerate(values):
        version = client.put(f"k{i}", value, namespace=ns)
        assert isinstance(version, int) and version > last, "versions increase"
        last = version
        got = client.get_versioned(f"k{i}", namespace=ns)
        assert got == Value(value, version)
        assert client.get(f"k{i}", namespace=ns) == value
    # Overwrites of one key get increasing versions; the newest value wins.
    versions = [client.put("same", f"v{i}".encode(), namespace=ns) for i in range(5)]
    assert versions == sorted(versions) and len(set(versions)) == 5
    assert client.get_versioned("same", namespace=ns) == Value(b"v4", versions[-1])


def test_keys_and_values_accept_str_and_bytes_alike(client, ns):
    version = client.put("clé", "välue", namespace=ns)
    assert client.get("clé".encode("utf-8"), namespace=ns) == "välue".encode("utf-8")
    assert client.get_versioned(bytearray("clé".encode()), namespace=ns).version == version
    assert client.get(memoryview(b"cl\xc3\xa9"), namespace=ns) == "välue".encode()
    with pytest.raises(TypeError):
        client.put(42, b"x", namespace=ns)


def test_a_miss_is_none_not_an_error(client, ns):
    assert client.get("absent", namespace=ns) is None
    assert client.get_versioned("absent", namespace=ns) is None
    assert client.get_stream("absent", namespace=ns) is None


def test_namespaces_are_separate(client, ns):
    client.put("k", b"in ns", namespace=ns)
    client.put("k", b"in other", namespace=ns + "-other")
    assert client.get("k", namespace=ns) == b"in ns"
    assert client.get("k", namespace=ns + "-other") == b"in other"


def test_update_replaces_and_checks_the_expected_version(client, ns):
    v1 = client.put("k", b"one", namespace=ns)
    v2 = client.update("k", b"two", expected_version=v1, namespace=ns)
    assert v2 > v1
    assert client.get_versioned("k", namespace=ns) == Value(b"two", v2)
    # A stale expected version: VersionConflict (FAILED_PRECONDITION), nothing changes.
    with pytest.raises(VersionConflict) as stale:
        client.update("k", b"three", expected_version=v1, namespace=ns)
    assert stale.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert client.get_versioned("k", namespace=ns) == Value(b"two", v2)
    # 0 (the default) and None accept any version.
    v3 = client.update("k", b"three", namespace=ns)
    v4 = client.update("k", b"four", expected_version=None, namespace=ns)
    assert v2 < v3 < v4
    assert client.get("k", namespace=ns) == b"four"


def test_update_of_a_missing_key_is_not_found(client, ns):
    with pytest.raises(NotFound) as missing:
        client.update("never-written", b"x", namespace=ns)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert isinstance(missing.value, OptiCacheError)
    assert client.get("never-written", namespace=ns) is None


def test_delete_reports_whether_the_key_existed(client, ns):
    client.put("k", b"v", namespace=ns)
    assert client.delete("k", namespace=ns) is True
    assert client.get("k", namespace=ns) is None
    assert client.delete("k", namespace=ns) is False
    # A deleted key can be written again, at a higher version.
    v = client.put("k", b"again", namespace=ns)
    assert client.get_versioned("k", namespace=ns) == Value(b"again", v)


def test_ttl_is_sent_and_bad_ttls_are_refused_locally(client, ns):
    client.put("ttl", b"v", namespace=ns, ttl_s=3600)
    assert client.get("ttl", namespace=ns) == b"v"
    for bad in (0, -1, float("nan")):
        with pytest.raises(InvalidArgument):
            client.put("ttl", b"v", namespace=ns, ttl_s=bad)


def test_status_table_rows_reachable_from_the_client(client, ns):
    # Empty key, key over 1024 bytes: INVALID_ARGUMENT, on every path.
    for bad_key in (b"", b"k" * 1025):
        with pytest.raises(InvalidArgument) as e:
            client.put(bad_key, b"v", namespace=ns)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InvalidArgument):
            client.get(bad_key, namespace=ns)
        with pytest.raises(InvalidArgument):
            client.get_many([b"ok", bad_key], namespace=ns)
        with pytest.raises(InvalidArgument):
            client.put_many([(bad_key, b"v")], namespace=ns)
        with pytest.raises(InvalidArgument):
            client.put_stream(bad_key, b"v", namespace=ns)
    # 1024 bytes is still fine.
    client.put(b"k" * 1024, b"v", namespace=ns)
    assert client.get(b"k" * 1024, namespace=ns) == b"v"
    # Namespace over 255 bytes: INVALID_ARGUMENT.
    with pytest.raises(InvalidArgument):
        client.put("k", b"v", namespace="n" * 256)
    # Value over max_value_bytes: RESOURCE_EXHAUSTED, nothing stored.
    with pytest.raises(TooLarge) as e:
        client.put("big", b"x" * (MAX_VALUE_BYTES + 1), namespace=ns)
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(TooLarge):
        client.put_many([("big", b"x" * (MAX_VALUE_BYTES + 1))], namespace=ns)
    assert client.get("big", namespace=ns) is None
    # The same value streamed is fine (streams are not bound by max_value_bytes).
    client.put_stream("big", b"x" * (MAX_VALUE_BYTES + 1), namespace=ns)
    assert client.get_stream("big", namespace=ns).read_all() == b"x" * (MAX_VALUE_BYTES + 1)


def test_stream_size_mismatches_store_nothing(client, ns):
    # A source shorter than total_size: INVALID_ARGUMENT, nothing stored.
    with pytest.raises(InvalidArgument, match="ended after 3 of its announced 10 bytes"):
        client.put_stream("short", [b"abc"], total_size=10, namespace=ns)
    assert client.get("short", namespace=ns) is None
    # Longer than total_size: refused, and the complete prefix is not stored either.
    with pytest.raises(InvalidArgument, match="longer than its announced"):
        client.put_stream("long", [b"abc", b"def"], total_size=4, namespace=ns)
    assert client.get("long", namespace=ns) is None
    # Multi-chunk: short by one byte after several chunks were sent.
    pieces = [b"z" * MIB] * 3
    with pytest.raises(InvalidArgument):
        client.put_stream("short3", pieces, total_size=3 * MIB + 1, namespace=ns)
    assert client.get_stream("short3", namespace=ns) is None


def test_put_many_get_many_in_request_order(client, ns):
    items = [(f"key-{i:03}", payload(i, i * 7)) for i in range(50)]
    random.Random(0).shuffle(items)
    versions = client.put_many(items, namespace=ns)
    assert len(versions) == len(items) and all(v > 0 for v in versions)
    keys = [k for k, _ in items] + ["missing"]
    got = client.get_many(keys, namespace=ns)
    assert got == [v for _, v in items] + [None]
    versioned = client.get_many_versioned(keys, namespace=ns)
    assert [r.version for r in versioned[:-1]] == versions
    assert versioned[-1] is None
    # A mapping works as well; empty batches make no call.
    assert len(client.put_many({"a": b"1", "b": b"2"}, namespace=ns)) == 2
    assert client.put_many([], namespace=ns) == []
    assert client.get_many([], namespace=ns) == []


def test_batches_over_the_entry_limit_are_split(client, ns):
    count = BATCH_LEN_MAX + 904  # two calls each way
    items = [(f"e{i}", i.to_bytes(4, "little")) for i in range(count)]
    versions = client.put_many(items, namespace=ns)
    assert len(versions) == count
    got = client.get_many([k for k, _ in items], namespace=ns)
    assert got == [v for _, v in items]


def test_batches_over_the_byte_limit_are_split(client, ns):
    # 18 values of 4 MiB: 72 MiB, over the 64 MiB batch limit both ways.
    values = [payload(100 + i, MAX_VALUE_BYTES) for i in range(18)]
    keys = [f"big{i}" for i in range(18)]
    versions = client.put_many(list(zip(keys, values)), namespace=ns)
    assert len(versions) == 18 and len(set(versions)) == 18
    got = client.get_many_versioned(keys, namespace=ns)
    assert [r.value for r in got] == values
    assert [r.version for r in got] == versions


def test_streams_from_paths_files_and_iterables(client, ns, tmp_path):
    data = payload(9, 3 * MIB + 12345)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    v_path = client.put_stream("from-path", src, namespace=ns)
    with open(src, "rb") as f:
        v_file = client.put_stream("from-file", f, namespace=ns)
    # A non-seekable file object without total_size is spooled first.
    v_pipe = client.put_stream("from-pipe", _Unseekable(data), namespace=ns)
    # Pieces of odd sizes from a generator, with and without total_size.
    pieces = [data[i : i + 777_777] for i in range(0, len(data), 777_777)]
    v_gen = client.put_stream("from-gen", iter(pieces), total_size=len(data), namespace=ns)
    v_spooled = client.put_stream("from-gen-spooled", (p for p in pieces), namespace=ns)
    for key, version in [
        ("from-path", v_path),
        ("from-file", v_file),
        ("from-pipe", v_pipe),
        ("from-gen", v_gen),
        ("from-gen-spooled", v_spooled),
    ]:
        stream = client.get_stream(key, namespace=ns)
        assert (stream.version, stream.total_size) == (version, len(data))
        chunks = list(stream)
        assert all(len(c) <= MIB for c in chunks)
        assert b"".join(chunks) == data, key
    # To a path (written whole, then renamed into place) and to a file object.
    out = tmp_path / "out.bin"
    info = client.get_stream("from-gen", dest=out, namespace=ns)
    assert info == StreamInfo(v_gen, len(data))
    assert out.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    buffer = io.BytesIO()
    assert client.get_stream("from-path", dest=buffer, namespace=ns).total_size == len(data)
    assert buffer.getvalue() == data
    # A streamed value reads back with the unary calls too, and vice versa.
    small = payload(10, 1000)
    client.put_stream("small", small, namespace=ns)
    assert client.get("small", namespace=ns) == small
    client.put("unary", small, namespace=ns)
    assert client.get_stream("unary", namespace=ns).read_all() == small
    # The empty value.
    version = client.put_stream("empty", b"", namespace=ns)
    stream = client.get_stream("empty", namespace=ns)
    assert (stream.version, stream.total_size, stream.read_all()) == (version, 0, b"")


def test_closing_a_stream_early_leaves_the_client_usable(client, ns):
    client.put_stream("s", payload(11, 5 * MIB), namespace=ns)
    with client.get_stream("s", namespace=ns) as stream:
        first = next(stream)
        assert len(first) <= MIB
    assert client.get("k-after", namespace=ns) is None


def test_cluster_status(client, cluster):
    status = client.cluster_status()
    assert status.role in ("PRIMARY", "STANDBY")
    assert status.epoch >= 1
    assert status.address in cluster.coordinator_addresses
    assert sorted(n.address for n in status.nodes) == sorted(cluster.node_addresses)
    assert {n.state for n in status.nodes} == {"UP"}
    assert sorted(n.shards for n in status.nodes) == [1, 1, 2]


def test_unreachable_coordinators_fail_with_unavailable_naming_them():
    import socket
    import time

    from opticache import Unavailable

    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    addresses = [f"127.0.0.1:{p}" for p in ports]
    with Client(addresses, timeout_s=1.0, retries=3) as c:
        started = time.monotonic()
        with pytest.raises(Unavailable) as e:
            c.get("k")
        assert time.monotonic() - started < 3.5
    message = str(e.value)
    assert message.startswith("UNAVAILABLE: no coordinator could serve the call; tried ")
    assert addresses[0] in message and addresses[1] in message
    assert all("Connection refused" in why for _, why in e.value.attempts)
    assert [a for a, _ in e.value.attempts] == [addresses[0], addresses[1], addresses[0]]


class _Unseekable(io.RawIOBase):
    """A pipe-like binary reader: short reads, no size, no seek."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), 300_007, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def fileno(self) -> int:
        raise OSError("no file descriptor")
