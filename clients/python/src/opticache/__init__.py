"""Python client for OptiCache, a distributed parameter cache.

>>> from opticache import Client
>>> with Client(["127.0.0.1:50051", "127.0.0.1:50052"]) as cache:
...     version = cache.put("greeting", b"hello")
...     cache.get("greeting")
b'hello'

:class:`Client` blocks; :class:`AsyncClient` has the same methods for
asyncio. Both fail over between coordinators, retry what is safe to retry,
and raise the typed errors of :mod:`opticache.errors`.
"""

from ._common import (
    BATCH_BYTES_MAX,
    BATCH_LEN_MAX,
    STREAM_CHUNK_BYTES,
    ClusterStatus,
    NodeStatus,
    StreamInfo,
    TlsConfig,
    Value,
)
from . import errors as _errors
from .aio import AsyncClient, AsyncValueStream
from .client import Client, ValueStream
from .errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    OptiCacheError,
    PermissionDenied,
    ProtocolError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)
from .params import ARRAY_STREAM_THRESHOLD, decode_array, encode_array

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "ValueStream",
    "AsyncValueStream",
    "Value",
    "StreamInfo",
    "ClusterStatus",
    "NodeStatus",
    "TlsConfig",
    # The error classes, as listed in opticache.errors.
    *(name for name in _errors.__all__ if name != "error_from_code"),
    "encode_array",
    "decode_array",
    "ARRAY_STREAM_THRESHOLD",
    "STREAM_CHUNK_BYTES",
    "BATCH_LEN_MAX",
    "BATCH_BYTES_MAX",
]
