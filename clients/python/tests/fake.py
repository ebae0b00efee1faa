"""An in-process stand-in for a coordinator (a grpc server with the
generated servicer), to test the client's own plumbing without a cluster:
the metadata it sends, TLS, and which calls it repeats where.

A ``FakeCoordinator`` keeps values in a dict, records every call with its
metadata, and runs a hook instead of its own answer where a test set one
(``fake.hooks["UpdateCache"] = lambda request, context: ...``)."""

from __future__ import annotations

import socket
import threading
from concurrent import futures
from typing import Callable, Dict, List, Optional, Tuple

import grpc

from opticache.v1 import opticache_pb2 as pb2
from opticache.v1 import opticache_pb2_grpc as pb2_grpc

MIB = 1 << 20


def closed_address() -> str:
    """An address nothing listens on: bound to learn a free port, then closed."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


class FakeCoordinator(pb2_grpc.OptiCacheServicer):
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.lock = threading.Lock()
        self.calls: List[Tuple[str, Dict[str, str]]] = []
        self.hooks: Dict[str, Callable] = {}
        self.store: Dict[Tuple[str, bytes], Tuple[bytes, int]] = {}
        self.version = 0
        self.received_streams: List[bytes] = []

    # ------------------------------------------------------------------

    def count(self, method: str) -> int:
        with self.lock:
            return sum(1 for m, _ in self.calls if m == method)

    def _enter(self, method: str, context) -> Optional[Callable]:
        with self.lock:
            self.calls.append((method, dict(context.invocation_metadata())))
        return self.hooks.get(method)

    def _next_version(self) -> int:
        with self.lock:
            self.version += 1
            return self.version

    # ------------------------------------------------------------------

    def WriteCache(self, request, context):
        hook = self._enter("WriteCache", context)
        if hook:
            return hook(request, context)
        version = self._next_version()
        self.store[(request.namespace, request.key)] = (request.value, version)
        return pb2.WriteResponse(version=version)

    def ReadCache(self, request, context):
        hook = self._enter("ReadCache", context)
        if hook:
            return hook(request, context)
        found = self.store.get((request.namespace, request.key))
        if found is None:
            return pb2.ReadResponse(found=False)
        return pb2.ReadResponse(found=True, value=found[0], version=found[1])

    def UpdateCache(self, request, context):
        hook = self._enter("UpdateCache", context)
        if hook:
            return hook(request, context)
        found = self.store.get((request.namespace, request.key))
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such key")
        if request.expected_version and request.expected_version != found[1]:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"stored version is {found[1]}")
        version = self._next_version()
        self.store[(request.namespace, request.key)] = (request.value, version)
        return pb2.UpdateResponse(version=version)

    def DeleteCache(self, request, context):
        hook = self._enter("DeleteCache", context)
        if hook:
            return hook(request, context)
        return pb2.DeleteResponse(deleted=self.store.pop((request.namespace, request.key), None) is not None)

    def BatchWrite(self, request, context):
        hook = self._enter("BatchWrite", context)
        if hook:
            return hook(request, context)
        versions = []
        for e in request.entries:
            version = self._next_version()
            self.store[(request.namespace, e.key)] = (e.value, version)
            versions.append(version)
        return pb2.BatchWriteResponse(versions=versions)

    def BatchRead(self, request, context):
        hook = self._enter("BatchRead", context)
        if hook:
            return hook(request, context)
        results = []
        for k in request.keys:
            found = self.store.get((request.namespace, k))
            results.append(
                pb2.ReadResponse(found=True, value=found[0], version=found[1])
                if found
                else pb2.ReadResponse(found=False)
            )
        return pb2.BatchReadResponse(results=results)

    def WriteStream(self, request_iterator, context):
        hook = self._enter("WriteStream", context)
        if hook:
            return hook(request_iterator, context)
        first = next(request_iterator)
        data = bytearray(first.data)
        for chunk in request_iterator:
            if len(chunk.data) > MIB:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "chunk over 1 MiB")
            data += chunk.data
        if len(data) != first.total_size:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"got {len(data)} of {first.total_size} bytes")
        version = self._next_version()
        self.store[(first.namespace, first.key)] = (bytes(data), version)
        self.received_streams.append(bytes(data))
        return pb2.WriteResponse(version=version)

    def ReadStream(self, request, context):
        hook = self._enter("ReadStream", context)
        if hook:
            yield from hook(request, context)
            return
        found = self.store.get((request.namespace, request.key))
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such key")
        value, version = found
        yield pb2.ReadChunk(version=version, total_size=len(value), data=value[:MIB])
        for i in range(MIB, len(value), MIB):
            yield pb2.ReadChunk(data=value[i : i + MIB])

    def ClusterStatus(self, request, context):
        hook = self._enter("ClusterStatus", context)
        if hook:
            return hook(request, context)
        return pb2.ClusterStatusResponse(
            role=pb2.PRIMARY,
            epoch=3,
            nodes=[pb2.NodeStatus(address="10.0.0.1:6001", state=pb2.UP, shards=2, keys=5, disk_bytes=4096)],
        )


class FakeServer:
    """A FakeCoordinator served on 127.0.0.1 (plaintext, or TLS with
    ``credentials``)."""

    def __init__(self, name: str = "fake", credentials: Optional[grpc.ServerCredentials] = None) -> None:
        self.fake = FakeCoordinator(name)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            options=[
                ("grpc.max_receive_message_length", 300 * MIB),
                ("grpc.max_send_message_length", 300 * MIB),
            ],
        )
        pb2_grpc.add_OptiCacheServicer_to_server(self.fake, self.server)
        if credentials is None:
            port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)
