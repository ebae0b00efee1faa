"""The generated stubs of ``opticache.v1``, with a clear error when they are
missing (the package was not built with its build hook)."""

from __future__ import annotations

try:
    from .v1 import opticache_pb2 as pb2
    from .v1 import opticache_pb2_grpc as pb2_grpc
except ImportError as e:  # pragma: no cover - only without a proper build
    raise ImportError(
        "opticache's generated gRPC stubs (opticache.v1.opticache_pb2) are missing: install the package "
        "with pip (`pip install ./clients/python`), which generates them from proto/ at build time"
    ) from e

__all__ = ["pb2", "pb2_grpc"]
