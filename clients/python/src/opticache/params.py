"""numpy arrays and whole parameter sets on top of the key-value calls.

Arrays
------
An array is stored as one value in the NumPy ``.npy`` format: a small
self-describing header (format version, dtype descriptor, C or Fortran
order, shape; a Python literal, never a pickle) padded to 64 bytes, then the
raw element bytes. Any numpy can read such a value back with
``np.load(io.BytesIO(value))``. Object dtypes (which only pickle could
store) are refused with a ``TypeError``.

Writing sends the array's own memory (a ``memoryview`` of a C- or
Fortran-contiguous array; other arrays are copied once into C order).
Arrays whose encoded size is over ``stream_threshold_bytes`` (4 MiB by
default) are streamed in 1 MiB chunks, so no second full copy is made.
Reading receives the value into one buffer and wraps it with
``np.frombuffer``: the array is a read-only view of the received bytes
unless ``copy=True``.

Parameter sets
--------------
``put_params(model, version, arrays)`` stores each array under namespace
``model`` and key ``f"{version}/{name}"`` (small arrays in batch calls,
large ones streamed), then writes the manifest ``f"manifest/{version}"``,
which lists every array with the version the cluster gave its write, and
only then moves the pointer ``"latest"`` forward with a compare-and-set
(UpdateCache with the pointer's version). A reader goes through the pointer
and the manifest, so it never sees a set that is still being written, and
checks that every array it reads has the version the manifest recorded
(a set republished under the same version while it was being read is read
again). Versions are non-negative integers; larger is newer.

The functions here are written once as generators of client calls
(``Op``), run by :class:`opticache.Client` (blocking) and
:class:`opticache.AsyncClient` (asyncio).
"""

from __future__ import annotations

import io
import json
import struct
import time
from typing import Any, Dict, Generator, List, Mapping, NamedTuple, Optional, Tuple

import grpc

from ._common import plan_batches
from .errors import NotFound, OptiCacheError, ProtocolError, VersionConflict

#: Arrays (header included) up to this size go in one message (or a batch
#: entry); larger ones are streamed.
ARRAY_STREAM_THRESHOLD = 4 << 20

#: The pointer to the newest version of a model's parameters.
LATEST_KEY = "latest"
MANIFEST_FORMAT = "opticache-params/1"
#: How often a reader starts again when the set changed under it.
READ_ATTEMPTS = 3
#: How often a writer tries to move the "latest" pointer against others.
POINTER_ATTEMPTS = 16

_NPY_MAGIC = b"\x93NUMPY"


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError("numpy is needed for arrays and parameter sets: pip install 'opticache[numpy]'") from None
    return numpy


def _npformat() -> Any:
    from numpy.lib import format as npformat

    return npformat


# --------------------------------------------------------------------------
# Arrays <-> values


class EncodedArray(NamedTuple):
    header: bytes
    data: memoryview  # the element bytes, in the order the header says
    total: int  # len(header) + len(data)
    dtype: str
    shape: Tuple[int, ...]

    def pieces(self) -> List[Any]:
        return [self.header, self.data]

    def join(self) -> bytes:
        return b"".join((self.header, self.data))


def encode_array(array: Any) -> EncodedArray:
    """The header and element bytes of ``array`` (no copy of the elements
    when the array is C- or Fortran-contiguous)."""
    np = _numpy()
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(
            f"cannot store an array of dtype {array.dtype}: object arrays hold Python objects, which only "
            "pickle could store; convert it to a fixed-size dtype (numbers, bool, 'S'/'U' strings) first"
        )
    fortran = False
    if array.flags.c_contiguous:
        base = array
    elif array.flags.f_contiguous:
        fortran, base = True, array.T  # the transpose of an F-ordered array is C-ordered
    else:
        base = array.copy(order="C")  # a strided view: one copy into C order
    npformat = _npformat()
    header_fields = {
        "descr": npformat.dtype_to_descr(array.dtype),
        "fortran_order": fortran,
        "shape": tuple(array.shape),
    }
    out = io.BytesIO()
    try:
        npformat.write_array_header_1_0(out, header_fields)
    except ValueError:  # header over 64 KiB (huge structured dtypes)
        out = io.BytesIO()
        npformat.write_array_header_2_0(out, header_fields)
    header = out.getvalue()
    if base.nbytes == 0:
        data = memoryview(b"")
    else:
        data = memoryview(base.reshape(-1).view(np.uint8))
    return EncodedArray(header, data, len(header) + data.nbytes, str(array.dtype), tuple(array.shape))


def decode_array(value: Any, copy: bool = False) -> Any:
    """The array stored in ``value`` (bytes or bytearray) by
    :func:`encode_array`, as a read-only view of ``value`` unless ``copy``."""
    np = _numpy()
    view = memoryview(value)
    if view.nbytes < 10 or bytes(view[:6]) != _NPY_MAGIC:
        raise ProtocolError(None, "the value is not an array stored by put_array (no .npy header)")
    major = view[6]
    if major == 1:
        (header_len,) = struct.unpack("<H", view[8:10])
        start = 10
    elif major == 2:
        (header_len,) = struct.unpack("<I", view[8:12])
        start = 12
    else:
        raise ProtocolError(None, f"unsupported .npy format version {major}.{view[7]}")
    offset = start + header_len
    if offset > view.nbytes:
        raise ProtocolError(None, "the array header is cut short")
    npformat = _npformat()
    fp = io.BytesIO(bytes(view[:offset]))
    npformat.read_magic(fp)
    read_header = npformat.read_array_header_1_0 if major == 1 else npformat.read_array_header_2_0
    try:
        shape, fortran, dtype = read_header(fp, max_header_size=header_len + 1)
    except TypeError:  # numpy before 1.24 has no max_header_size
        fp.seek(8)
        shape, fortran, dtype = read_header(fp)
    if dtype.hasobject:
        raise ProtocolError(None, f"the stored array has an object dtype ({dtype}), which is never unpickled")
    count = 1
    for n in shape:
        count *= n
    expected = count * dtype.itemsize
    if view.nbytes - offset != expected:
        raise ProtocolError(
            None, f"the array {dtype}{list(shape)} needs {expected} bytes, the value holds {view.nbytes - offset}"
        )
    if expected == 0:
        array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    else:
        flat = np.frombuffer(value, dtype=dtype, count=count, offset=offset)
        array = flat.reshape(shape, order="F" if fortran else "C")
    if copy:
        return array.copy(order="K")
    if array.flags.writeable:
        array.flags.writeable = False  # a view of the received buffer
    return array


# --------------------------------------------------------------------------
# Flows: generators of client calls


class Op(NamedTuple):
    """One client call a flow asks for: ``getattr(client, name)(*args, **kwargs)``."""

    name: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


Flow = Generator[Op, Any, Any]


def put_array_flow(key: Any, array: Any, namespace: str, ttl_s: Optional[float], threshold: int) -> Flow:
    encoded = encode_array(array)
    if encoded.total <= threshold:
        return (yield Op("put", (key, encoded.join()), {"namespace": namespace, "ttl_s": ttl_s}))
    return (
        yield Op(
            "put_stream",
            (key, encoded.pieces()),
            {"total_size": encoded.total, "namespace": namespace, "ttl_s": ttl_s},
        )
    )


def get_array_flow(key: Any, namespace: str, copy: bool) -> Flow:
    got = yield Op("_read_value", (key,), {"namespace": namespace})
    if got is None:
        return None
    return decode_array(got.value, copy=copy)


def _check_model(model: Any) -> str:
    if not isinstance(model, str) or not model:
        raise TypeError(f"a model name is a non-empty str (it is the namespace), not {model!r}")
    return model


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise TypeError(f"a parameter version is a non-negative int, not {version!r}")
    return version


def array_key(version: int, name: str) -> str:
    return f"{version}/{name}"


def manifest_key(version: int) -> str:
    return f"manifest/{version}"


def _pointer_value(version: int, manifest_version: int) -> bytes:
    return json.dumps({"version": version, "manifest_version": manifest_version}).encode()


def _pointer_version(value: bytes) -> int:
    try:
        version = json.loads(value)["version"]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError(None, f"the {LATEST_KEY!r} pointer holds no version: {value[:100]!r}") from None
    return _check_version(version)


def put_params_flow(
    model: str,
    version: int,
    arrays: Mapping[str, Any],
    ttl_s: Optional[float],
    make_latest: bool,
    threshold: int,
) -> Flow:
    model = _check_model(model)
    version = _check_version(version)
    if not isinstance(arrays, Mapping):
        raise TypeError("put_params takes a mapping of name -> array")
    encoded: List[Tuple[str, EncodedArray]] = []
    for name, array in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"an array name is a non-empty str, not {name!r}")
        encoded.append((name, encode_array(array)))
    versions: Dict[str, int] = {}
    # Small arrays: batch calls, values built one batch at a time.
    small = [(name, enc) for name, enc in encoded if enc.total <= threshold]
    for run in plan_batches([len(array_key(version, n).encode()) + e.total for n, e in small]):
        batch = [(array_key(version, small[i][0]), small[i][1].join()) for i in run]
        got = yield Op("put_many", (batch,), {"namespace": model, "ttl_s": ttl_s})
        for i, written in zip(run, got):
            versions[small[i][0]] = written
        del batch
    # Large arrays: one stream each, straight from the array's memory.
    for name, enc in encoded:
        if enc.total > threshold:
            versions[name] = yield Op(
                "put_stream",
                (array_key(version, name), enc.pieces()),
                {"total_size": enc.total, "namespace": model, "ttl_s": ttl_s},
            )
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": model,
        "version": version,
        "created_unix_ms": int(time.time() * 1000),
        "arrays": [
            {
                "name": name,
                "key": array_key(version, name),
                "bytes": enc.total,
                "dtype": enc.dtype,
                "shape": list(enc.shape),
                "version": versions[name],
            }
            for name, enc in encoded
        ],
    }
    # The manifest last: until it exists, readers do not know the set.
    manifest_version = yield Op(
        "put",
        (manifest_key(version), json.dumps(manifest).encode()),
        {"namespace": model, "ttl_s": ttl_s},
    )
    if make_latest:
        yield from _advance_pointer(model, version, manifest_version)
    return manifest_version


def _advance_pointer(model: str, version: int, manifest_version: int) -> Flow:
    """Moves "latest" to ``version`` unless it already names this or a newer
    one: a compare-and-set against the pointer's stored version, repeated
    when another writer moved it in between."""
    value = _pointer_value(version, manifest_version)
    for _ in range(POINTER_ATTEMPTS):
        current = yield Op("get_versioned", (LATEST_KEY,), {"namespace": model})
        if current is None:
            # First version of this model. A plain write (the API has no
            # create-if-absent); the next round checks what it left.
            yield Op("put", (LATEST_KEY, value), {"namespace": model})
            continue
        if _pointer_version(current.value) >= version:
            return
        try:
            yield Op(
                "update",
                (LATEST_KEY, value),
                {"expected_version": current.version, "namespace": model},
            )
            return
        except (VersionConflict, NotFound):
            continue  # another writer moved it: look again
    raise OptiCacheError(
        grpc.StatusCode.ABORTED,
        f"could not move the {LATEST_KEY!r} pointer of {model!r} to version {version}: "
        f"other writers kept moving it ({POINTER_ATTEMPTS} tries)",
    )


def latest_params_version_flow(model: str) -> Flow:
    model = _check_model(model)
    current = yield Op("get_versioned", (LATEST_KEY,), {"namespace": model})
    if current is None:
        return None
    return _pointer_version(current.value)


def get_params_flow(model: str, version: Optional[int], copy: bool, threshold: int) -> Flow:
    model = _check_model(model)
    if version is not None:
        version = _check_version(version)
    for _attempt in range(READ_ATTEMPTS):
        wanted = version
        if wanted is None:
            wanted = yield from latest_params_version_flow(model)
            if wanted is None:
                raise NotFound(grpc.StatusCode.NOT_FOUND, f"model {model!r} has no published parameters")
        got = yield Op("get_versioned", (manifest_key(wanted),), {"namespace": model})
        if got is None:
            if version is None:
                continue  # the pointer moved on and this version was deleted
            raise NotFound(grpc.StatusCode.NOT_FOUND, f"no parameters of model {model!r} at version {wanted}")
        try:
            manifest = json.loads(got.value)
            entries = manifest["arrays"]
            if manifest.get("format") != MANIFEST_FORMAT:
                raise ValueError(manifest.get("format"))
        except (ValueError, KeyError, TypeError):
            raise ProtocolError(None, f"the manifest of {model!r} version {wanted} is not readable") from None
        values: Dict[str, Any] = {}
        small = [e for e in entries if e["bytes"] <= threshold]
        if small:
            results = yield Op(
                "get_many_versioned",
                ([e["key"] for e in small],),
                {"namespace": model, "_sizes": [e["bytes"] for e in small]},
            )
            for e, result in zip(small, results):
                values[e["name"]] = result
        for e in entries:
            if e["bytes"] > threshold:
                values[e["name"]] = yield Op("_read_value", (e["key"],), {"namespace": model})
        if any(values[e["name"]] is None or values[e["name"]].version != e["version"] for e in entries):
            continue  # deleted or republished while we read: start again
        out: Dict[str, Any] = {}
        for e in entries:
            array = decode_array(values[e["name"]].value, copy=copy)
            if str(array.dtype) != e["dtype"] or list(array.shape) != e["shape"]:
                raise ProtocolError(
                    None,
                    f"array {e['name']!r} is {array.dtype}{list(array.shape)}, "
                    f"its manifest says {e['dtype']}{e['shape']}",
                )
            out[e["name"]] = array
        return out
    raise OptiCacheError(
        grpc.StatusCode.ABORTED,
        f"the parameters of {model!r} kept changing while being read ({READ_ATTEMPTS} tries)",
    )


def delete_params_flow(model: str, version: int) -> Flow:
    """Deletes the manifest first (readers stop finding the set), then the
    arrays. True if the set existed."""
    model = _check_model(model)
    version = _check_version(version)
    got = yield Op("get_versioned", (manifest_key(version),), {"namespace": model})
    if got is None:
        return False
    try:
        keys = [e["key"] for e in json.loads(got.value)["arrays"]]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError(None, f"the manifest of {model!r} version {version} is not readable") from None
    yield Op("delete", (manifest_key(version),), {"namespace": model})
    for key in keys:
        yield Op("delete", (key,), {"namespace": model})
    return True
