"""numpy arrays and parameter sets: exact round trips (dtype, shape, bytes)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from cluster import MIB

from opticache import ARRAY_STREAM_THRESHOLD, NotFound, ProtocolError, decode_array, encode_array


def sample_arrays() -> dict:
    rng = np.random.default_rng(42)
    base = rng.standard_normal((8, 6))
    return {
        "float32": rng.standard_normal((3, 4, 5)).astype(np.float32),
        "float16": rng.standard_normal(17).astype(np.float16),
        "float64-nan-inf": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-300]),
        "int8": rng.integers(-128, 128, size=(2, 3), dtype=np.int8),
        "int64": rng.integers(-(2**62), 2**62, size=11, dtype=np.int64),
        "uint16": rng.integers(0, 2**16, size=(4, 4), dtype=np.uint16),
        "bool": rng.integers(0, 2, size=(5, 3)).astype(bool),
        "complex64": (rng.standard_normal(6) + 1j * rng.standard_normal(6)).astype(np.complex64),
        "zero-d": np.array(3.25, dtype=np.float64),
        "zero-d-int": np.array(-7, dtype=np.int32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "non-contiguous-slice": base[::2, 1::3],
        "fortran-order": np.asfortranarray(base),
        "transposed-view": base.T,
        "big-endian-f8": base.astype(">f8"),
        "big-endian-i4": np.arange(10, dtype=">i4").reshape(2, 5),
        "bytes": np.array([b"ab", b"", b"xyz"], dtype="S3"),
        "unicode": np.array(["héllo", "wörld"], dtype="<U5"),
        "datetime": np.array(["2024-01-02T03:04:05", "1970-01-01"], dtype="datetime64[s]"),
        "structured": np.array([(1, 2.5), (3, -1.0)], dtype=[("id", "<i4"), ("w", ">f8")]),
    }


def assert_same(got: np.ndarray, want: np.ndarray, name: str = "") -> None:
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.dtype.str == want.dtype.str, f"{name}: byte order {got.dtype.str} != {want.dtype.str}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert got.tobytes() == want.tobytes(), f"{name}: elements differ"
    if want.dtype.kind in "fc":
        np.testing.assert_array_equal(got, want)


def test_encoding_round_trips_locally_and_is_plain_npy():
    for name, array in sample_arrays().items():
        encoded = encode_array(array)
        value = encoded.join()
        assert len(value) == encoded.total
        assert_same(decode_array(value), array, name)
        # Any numpy reads it, without pickle.
        assert_same(np.load(io.BytesIO(value), allow_pickle=False), array, name)
        # The header is padded so that the elements start 64-byte aligned.
        assert len(encoded.header) % 64 == 0


def test_writing_a_contiguous_array_does_not_copy_it():
    array = np.arange(1000, dtype=np.float32)
    encoded = encode_array(array)
    assert np.shares_memory(np.frombuffer(encoded.data, dtype=np.uint8), array)
    fortran = np.asfortranarray(np.ones((30, 40)))
    assert np.shares_memory(np.frombuffer(encode_array(fortran).data, dtype=np.uint8), fortran)


def test_reading_is_a_view_of_the_received_buffer_unless_copied():
    value = encode_array(np.arange(100, dtype=np.int16)).join()
    view = decode_array(value)
    assert not view.flags.writeable
    assert np.shares_memory(view, np.frombuffer(value, dtype=np.uint8))
    copy = decode_array(value, copy=True)
    assert copy.flags.writeable and not np.shares_memory(copy, np.frombuffer(value, dtype=np.uint8))


def test_object_arrays_are_refused_with_a_clear_error(client, ns):
    for bad in (np.array([{"a": 1}, None], dtype=object), np.array([(1, None)], dtype=[("a", "i4"), ("b", "O")])):
        with pytest.raises(TypeError, match="object"):
            client.put_array("obj", bad, namespace=ns)
    assert client.get("obj", namespace=ns) is None


def test_values_that_are_not_arrays_are_refused_on_read(client, ns):
    client.put("not-an-array", b"plain bytes", namespace=ns)
    with pytest.raises(ProtocolError):
        client.get_array("not-an-array", namespace=ns)
    # A pickled object array in .npy form is refused, never unpickled.
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, None], dtype=object), allow_pickle=True)
    client.put("pickled", buffer.getvalue(), namespace=ns)
    with pytest.raises(ProtocolError, match="object"):
        client.get_array("pickled", namespace=ns)


def test_arrays_round_trip_through_the_cluster(client, ns):
    versions = []
    for name, array in sample_arrays().items():
        versions.append(client.put_array(name, array, namespace=ns))
        got = client.get_array(name, namespace=ns)
        assert_same(got, array, name)
        assert not got.flags.writeable
        writable = client.get_array(name, namespace=ns, copy=True)
        assert_same(writable, array, name)
        assert writable.flags.writeable
    assert client.get_array("absent", namespace=ns) is None


def test_large_arrays_are_streamed(client, ns):
    # 6 MiB of float32: over the 4 MiB threshold (and the test cluster's
    # 4 MiB max_value_bytes, so a unary write would be refused).
    big = np.random.default_rng(1).standard_normal((1536, 1024)).astype(np.float32)
    assert big.nbytes > ARRAY_STREAM_THRESHOLD
    client.put_array("big", big, namespace=ns)
    assert_same(client.get_array("big", namespace=ns), big)
    # A non-contiguous view of it, streamed too.
    view = big[:, ::2]
    client.put_array("big-view", view, namespace=ns)
    assert_same(client.get_array("big-view", namespace=ns), np.ascontiguousarray(view))
    # The same array forced through the unary path fails at the cluster's limit.
    with pytest.raises(Exception) as e:
        client.put_array("big-unary", big, namespace=ns, stream_threshold_bytes=1 << 40)
    assert type(e.value).__name__ == "TooLarge"


def test_put_params_and_get_params_round_trip(client, ns):
    arrays = sample_arrays()
    arrays["large"] = np.arange(5 * MIB // 8, dtype=np.float64)  # streamed
    model = ns
    assert client.latest_params_version(model) is None
    with pytest.raises(NotFound):
        client.get_params(model)
    manifest_version = client.put_params(model, 7, arrays)
    assert manifest_version > 0
    assert client.latest_params_version(model) == 7
    for got in (client.get_params(model), client.get_params(model, 7)):
        assert list(got) == list(arrays), "names in publishing order"
        for name, array in arrays.items():
            assert_same(got[name], array, name)
    # The layout: arrays under f"{version}/{name}", the manifest, the pointer.
    assert client.get_array("7/int8", namespace=model) is not None
    manifest = json.loads(client.get("manifest/7", namespace=model))
    assert [e["name"] for e in manifest["arrays"]] == list(arrays)
    assert json.loads(client.get("latest", namespace=model))["version"] == 7
    with pytest.raises(NotFound):
        client.get_params(model, 8)


def test_the_latest_pointer_only_moves_forward(client, ns):
    model = ns
    one = {"w": np.ones(3, dtype=np.float32)}
    two = {"w": np.full(3, 2, dtype=np.float32)}
    client.put_params(model, 1, one)
    client.put_params(model, 3, two)
    assert client.latest_params_version(model) == 3
    # Publishing an older version later leaves the pointer where it is.
    client.put_params(model, 2, one)
    assert client.latest_params_version(model) == 3
    assert_same(client.get_params(model)["w"], two["w"])
    assert_same(client.get_params(model, 2)["w"], one["w"])
    # Without make_latest the pointer is left alone.
    client.put_params(model, 4, two, make_latest=False)
    assert client.latest_params_version(model) == 3
    assert_same(client.get_params(model, 4)["w"], two["w"])


def test_a_set_without_its_manifest_is_invisible(client, ns):
    model = ns
    client.put_params(model, 1, {"w": np.zeros(2)})
    # A writer that died after the arrays of version 2 but before its manifest.
    client.put_array("2/w", np.ones(2), namespace=model)
    assert client.latest_params_version(model) == 1
    with pytest.raises(NotFound):
        client.get_params(model, 2)
    assert_same(client.get_params(model)["w"], np.zeros(2))


def test_a_republished_array_is_noticed_by_its_version(client, ns):
    model = ns
    client.put_params(model, 1, {"w": np.zeros(4)})
    # Someone rewrites an array behind the manifest's back: its version no
    # longer matches the manifest, and the reader refuses the mixed set.
    client.put_array("1/w", np.ones(4), namespace=model)
    with pytest.raises(Exception) as e:
        client.get_params(model, 1)
    assert "kept changing" in str(e.value)


def test_delete_params_removes_manifest_then_arrays(client, ns):
    model = ns
    client.put_params(model, 1, {"a": np.zeros(2), "b": np.ones(2)})
    client.put_params(model, 2, {"a": np.zeros(2)})
    assert client.delete_params(model, 1) is True
    assert client.delete_params(model, 1) is False
    with pytest.raises(NotFound):
        client.get_params(model, 1)
    assert client.get("1/a", namespace=model) is None and client.get("1/b", namespace=model) is None
    assert list(client.get_params(model)) == ["a"]


def test_put_params_batches_small_arrays_streams_large_ones_and_writes_the_manifest_last(cluster, ns):
    from opticache import Client

    class Recording(Client):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = []

        def put_many(self, items, namespace="", ttl_s=None):
            self.calls.append(("put_many", [k for k, _ in items]))
            return super().put_many(items, namespace, ttl_s)

        def put_stream(self, key, source, total_size=None, namespace="", ttl_s=None):
            self.calls.append(("put_stream", key))
            return super().put_stream(key, source, total_size, namespace, ttl_s)

        def put(self, key, value, namespace="", ttl_s=None):
            self.calls.append(("put", key))
            return super().put(key, value, namespace, ttl_s)

        def update(self, key, value, expected_version=0, namespace="", ttl_s=None):
            self.calls.append(("update", key))
            return super().update(key, value, expected_version, namespace, ttl_s)

    arrays = {f"row{i}": np.full(16, i, dtype=np.float32) for i in range(5)}
    arrays["big"] = np.zeros(ARRAY_STREAM_THRESHOLD // 4 + 1, dtype=np.float32)
    with Recording(cluster.coordinator_addresses) as c:
        c.put_params(ns, 1, arrays)
        assert c.calls == [
            ("put_many", [f"1/row{i}" for i in range(5)]),
            ("put_stream", "1/big"),
            ("put", "manifest/1"),
            ("put", "latest"),  # the first version: the pointer is created
        ]
        c.calls.clear()
        c.put_params(ns, 2, {"row0": arrays["row0"]})
        assert c.calls == [("put_many", ["2/row0"]), ("put", "manifest/2"), ("update", "latest")]
        assert list(c.get_params(ns)) == ["row0"]
