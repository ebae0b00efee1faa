"""The asyncio client (grpc.aio): the methods of :class:`opticache.Client`,
as coroutines, with the same fail-over, retries and deadlines. Use one
:class:`AsyncClient` from one event loop; its channels are opened on the
first call, in that loop."""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import grpc
import grpc.aio

from . import _calls, params
from ._calls import Failed as _Failed
from ._calls import partial_path
from ._common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_COORDINATORS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    STREAM_CHUNK_BYTES,
    ClusterStatus,
    KeyLike,
    Rechunker,
    StreamInfo,
    TlsLike,
    Value,
    ValueLike,
    check_namespace,
    cluster_status_from,
    file_size_left,
    is_bytes_like,
    is_path,
    to_key,
)
from ._proto import pb2, pb2_grpc
from ._retry import CallKind
from .errors import OptiCacheError, TooLarge, error_from_code

T = TypeVar("T")


class _AConn:
    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = pb2_grpc.OptiCacheStub(channel)


class AsyncValueStream(_calls.StreamReading):
    """A value being read chunk by chunk: ``async for chunk in stream``.
    ``version`` and ``total_size`` are known from the start."""

    def __init__(self, call: Any, first: Any, idle_s: float, address: str) -> None:
        self._call = call
        self._start(first, idle_s, address)

    def __aiter__(self) -> "AsyncValueStream":
        return self

    async def __anext__(self) -> bytes:
        while True:
            data = self._take_pending()
            if data:
                return data
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await asyncio.wait_for(self._call.read(), self._idle_s)
            except asyncio.TimeoutError:
                self.close()
                raise self._stall() from None
            except grpc.RpcError as e:
                self._done = True
                raise error_from_code(e.code(), e.details() or "") from None
            if chunk is grpc.aio.EOF:
                self._done = True
                short = self._short()
                if short is not None:
                    raise short
                raise StopAsyncIteration
            self._pending = self._account(chunk.data)

    async def read_all(self) -> bytes:
        """The rest of the value in one bytes object."""
        return b"".join([chunk async for chunk in self])

    async def readinto(self, buffer: Any) -> int:
        """Reads the rest of the value into ``buffer``; the bytes written."""
        view = memoryview(buffer).cast("B")
        pos = 0
        async for chunk in self:
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        return pos

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._call.cancel()

    async def __aenter__(self) -> "AsyncValueStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of :class:`opticache.Client`; same arguments."""

    def __init__(
        self,
        coordinators: Union[str, Sequence[str]] = DEFAULT_COORDINATORS,
        *,
        token: Optional[str] = None,
        tls: TlsLike = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        deadline_s: Optional[float] = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        options: Optional[Sequence[Tuple[str, Any]]] = None,
    ) -> None:
        s = _calls.settings(coordinators, token, tls, timeout_s, retries, deadline_s, connect_timeout_s, options)
        self._tls, self._addresses, self._policy, self._metadata = s.tls, s.addresses, s.policy, s.metadata
        self._connect_timeout_s = s.connect_timeout_s
        self._credentials, self._options = s.credentials, s.options
        self._conns: Optional[List[_AConn]] = None
        self._preferred = 0
        self._closed = False

    def _connections(self) -> List[_AConn]:
        if self._closed:
            raise ValueError("the client is closed")
        if self._conns is None:
            conns = []
            for address in self._addresses:
                if self._credentials is None:
                    channel = grpc.aio.insecure_channel(address, options=self._options)
                else:
                    channel = grpc.aio.secure_channel(address, self._credentials, options=self._options)
                conns.append(_AConn(address, channel))
            self._conns = conns
        return self._conns

    @property
    def coordinators(self) -> List[str]:
        return list(self._addresses)

    @property
    def preferred(self) -> str:
        """The coordinator the next call goes to first (the last that answered)."""
        return self._addresses[self._preferred]

    async def close(self) -> None:
        self._closed = True
        conns, self._conns = self._conns, None
        for conn in conns or ():
            await conn.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self._addresses!r}, preferred={self.preferred!r})"

    # ------------------------------------------------------------------
    # The retry loop (the rules of opticache._retry)

    async def _call(self, kind: CallKind, op: Callable[[_AConn, float], Awaitable[T]]) -> T:
        conns = self._connections()
        attempts = _calls.Attempts(self._policy, kind, self._preferred, len(conns))
        while True:
            index, timeout = attempts.next()
            conn = conns[index]
            try:
                result = await op(conn, timeout)
            except (_Failed, grpc.RpcError) as e:
                answer = attempts.failed(conn.address, e)
            else:
                self._preferred = index
                return result
            if answer is not None:
                self._preferred = index
                raise answer
            await asyncio.sleep(attempts.pause())

    # ------------------------------------------------------------------
    # Point calls

    async def put(self, key: KeyLike, value: ValueLike, namespace: str = "", ttl_s: Optional[float] = None) -> int:
        request = _calls.write_request(key, value, namespace, ttl_s)
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> int:
            return (await conn.stub.WriteCache(request, timeout=timeout, metadata=md)).version

        return await self._call(CallKind.IDEMPOTENT, op)

    async def get_versioned(self, key: KeyLike, namespace: str = "") -> Optional[Value]:
        request = _calls.read_request(key, namespace)
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> Any:
            return await conn.stub.ReadCache(request, timeout=timeout, metadata=md)

        return _calls.value_from(await self._call(CallKind.IDEMPOTENT, op))

    async def get(self, key: KeyLike, namespace: str = "") -> Optional[bytes]:
        found = await self.get_versioned(key, namespace)
        return None if found is None else found.value

    async def update(
        self,
        key: KeyLike,
        value: ValueLike,
        expected_version: Optional[int] = 0,
        namespace: str = "",
        ttl_s: Optional[float] = None,
    ) -> int:
        request = _calls.update_request(key, value, expected_version, namespace, ttl_s)
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> int:
            return (await conn.stub.UpdateCache(request, timeout=timeout, metadata=md)).version

        return await self._call(CallKind.COMPARE_AND_SET, op)

    async def delete(self, key: KeyLike, namespace: str = "") -> bool:
        request = _calls.delete_request(key, namespace)
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> bool:
            return (await conn.stub.DeleteCache(request, timeout=timeout, metadata=md)).deleted

        return await self._call(CallKind.IDEMPOTENT, op)

    async def cluster_status(self) -> ClusterStatus:
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> ClusterStatus:
            response = await conn.stub.ClusterStatus(pb2.ClusterStatusRequest(), timeout=timeout, metadata=md)
            return cluster_status_from(pb2, response, conn.address)

        return await self._call(CallKind.IDEMPOTENT, op)

    # ------------------------------------------------------------------
    # Batches

    async def put_many(
        self,
        items: Union[Mapping[Any, Any], Iterable[Tuple[Any, Any]]],
        namespace: str = "",
        ttl_s: Optional[float] = None,
    ) -> List[int]:
        md = self._metadata
        versions: List[int] = []
        for request, count in _calls.batch_writes(items, namespace, ttl_s):

            async def op(conn: _AConn, timeout: float, request: Any = request) -> List[int]:
                return list((await conn.stub.BatchWrite(request, timeout=timeout, metadata=md)).versions)

            versions += _calls.batch_versions(await self._call(CallKind.IDEMPOTENT, op), count)
        return versions

    async def get_many_versioned(
        self, keys: Iterable[KeyLike], namespace: str = "", *, _sizes: Optional[Sequence[int]] = None
    ) -> List[Optional[Value]]:
        md = self._metadata
        batches = _calls.BatchReads(keys, namespace, _sizes)
        for request in batches:

            async def op(conn: _AConn, timeout: float, request: Any = request) -> List[Any]:
                return list((await conn.stub.BatchRead(request, timeout=timeout, metadata=md)).results)

            try:
                got = await self._call(CallKind.IDEMPOTENT, op)
            except TooLarge:
                key = batches.split()
                if key is not None:
                    batches.results[batches.start] = await self._read_value(key, batches.namespace, as_bytes=True)
                continue
            batches.receive(got)
        return batches.results

    async def get_many(self, keys: Iterable[KeyLike], namespace: str = "") -> List[Optional[bytes]]:
        return [None if r is None else r.value for r in await self.get_many_versioned(keys, namespace)]

    # ------------------------------------------------------------------
    # Streams

    async def put_stream(
        self,
        key: KeyLike,
        source: Any,
        total_size: Optional[int] = None,
        namespace: str = "",
        ttl_s: Optional[float] = None,
    ) -> int:
        """As :meth:`opticache.Client.put_stream`; ``source`` may also be an
        async iterable of bytes. Files are read in a worker thread."""
        head = _calls.write_head(key, namespace, ttl_s)
        pieces, total, close = await _open_source(source, total_size)
        try:
            chunks = _chunks(pieces, Rechunker(total))
            head.total_size, head.data = total, await chunks.__anext__()

            async def op(conn: _AConn, timeout: float) -> int:
                return await self._upload(conn, timeout, head, chunks)

            return await self._call(CallKind.STREAM, op)
        finally:
            await close()

    async def _upload(self, conn: _AConn, timeout: float, head: Any, chunks: AsyncIterator[bytes]) -> int:
        upload = _calls.Upload(self._policy.attempt_timeout_s)

        async def body() -> AsyncIterator[Any]:
            upload.started()
            yield head
            while True:
                upload.advanced = True
                try:
                    data = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as e:  # noqa: BLE001 - reported to the caller below
                    upload.failure = e  # ending short makes the coordinator store nothing
                    return
                upload.progressed()
                yield pb2.WriteChunk(data=data)

        call = conn.stub.WriteStream(body(), metadata=self._metadata)

        async def answer() -> Any:
            return await call

        task = asyncio.ensure_future(answer())
        stalled = False
        try:
            while not task.done():
                left = upload.time_left()
                if left <= 0:
                    stalled = True
                    call.cancel()
                    break
                await asyncio.wait({task}, timeout=left)
            if stalled:
                try:
                    await task
                except (asyncio.CancelledError, grpc.RpcError):
                    pass
                response = None
            else:
                response = task.result()
        except asyncio.CancelledError:
            if not task.done():  # we were cancelled ourselves
                call.cancel()
                raise
            stalled = True
            response = None
        except grpc.RpcError as e:
            raise upload.rpc_error(e) from None
        finally:
            if not task.done():
                task.cancel()
        if upload.failure is not None:
            raise upload.failure
        if stalled or response is None:
            raise upload.stalled()
        return response.version

    async def get_stream(
        self, key: KeyLike, dest: Any = None, namespace: str = ""
    ) -> Union[None, AsyncValueStream, StreamInfo]:
        """As :meth:`opticache.Client.get_stream`: an :class:`AsyncValueStream`
        (``async for chunk in stream``), None on a miss, or with ``dest`` (a
        path or a file object, whose ``write`` may be a coroutine) a
        :class:`StreamInfo`."""
        stream = await self._open_stream(to_key(key), check_namespace(namespace))
        if stream is None or dest is None:
            return stream
        async with stream:
            if is_path(dest):
                await _write_path(os.fspath(dest), stream)
            else:
                async for chunk in stream:
                    written = dest.write(chunk)
                    if inspect.isawaitable(written):
                        await written
        return StreamInfo(stream.version, stream.total_size)

    async def _open_stream(self, key: bytes, namespace: str) -> Optional[AsyncValueStream]:
        request = _calls.read_request(key, namespace)
        md = self._metadata
        idle = self._policy.attempt_timeout_s

        async def op(conn: _AConn, timeout: float) -> Optional[AsyncValueStream]:
            call = conn.stub.ReadStream(request, metadata=md)
            try:
                first = await asyncio.wait_for(call.read(), timeout)
            except asyncio.TimeoutError:
                call.cancel()
                raise _calls.first_chunk_timeout(timeout) from None
            except grpc.RpcError as e:
                if _calls.is_miss(e):
                    return None
                raise
            if first is grpc.aio.EOF:
                raise _calls.first_chunk_missing()
            return AsyncValueStream(call, first, idle, conn.address)

        return await self._call(CallKind.IDEMPOTENT, op)

    async def _read_value(self, key: KeyLike, namespace: str = "", as_bytes: bool = False) -> Optional[Value]:
        stream = await self._open_stream(to_key(key), check_namespace(namespace))
        if stream is None:
            return None
        async with stream:
            buffer = bytearray(stream.total_size)
            await stream.readinto(buffer)
        return _calls.value_in(buffer, stream.version, as_bytes)

    # ------------------------------------------------------------------
    # Arrays and parameter sets (see opticache.params)

    async def _run(self, flow: params.Flow) -> Any:
        steps = _calls.FlowSteps(flow)
        for op in steps:
            try:
                steps.result = await getattr(self, op.name)(*op.args, **op.kwargs)
            except OptiCacheError as e:
                steps.error = e
        return steps.value

    async def put_array(
        self,
        key: KeyLike,
        array: Any,
        namespace: str = "",
        ttl_s: Optional[float] = None,
        *,
        stream_threshold_bytes: int = params.ARRAY_STREAM_THRESHOLD,
    ) -> int:
        return await self._run(params.put_array_flow(key, array, namespace, ttl_s, stream_threshold_bytes))

    async def get_array(self, key: KeyLike, namespace: str = "", *, copy: bool = False) -> Any:
        return await self._run(params.get_array_flow(key, namespace, copy))

    async def put_params(
        self,
        model: str,
        version: int,
        arrays: Mapping[str, Any],
        *,
        ttl_s: Optional[float] = None,
        make_latest: bool = True,
        stream_threshold_bytes: int = params.ARRAY_STREAM_THRESHOLD,
    ) -> int:
        return await self._run(
            params.put_params_flow(model, version, arrays, ttl_s, make_latest, stream_threshold_bytes)
        )

    async def get_params(
        self,
        model: str,
        version: Optional[int] = None,
        *,
        copy: bool = False,
        stream_threshold_bytes: int = params.ARRAY_STREAM_THRESHOLD,
    ) -> dict:
        return await self._run(params.get_params_flow(model, version, copy, stream_threshold_bytes))

    async def latest_params_version(self, model: str) -> Optional[int]:
        return await self._run(params.latest_params_version_flow(model))

    async def delete_params(self, model: str, version: int) -> bool:
        return await self._run(params.delete_params_flow(model, version))


async def _chunks(pieces: AsyncIterator[Any], rechunker: Rechunker) -> AsyncIterator[bytes]:
    async for piece in pieces:
        for chunk in rechunker.feed(piece):
            yield chunk
    for chunk in rechunker.finish():
        yield chunk


async def _file_pieces(f: Any) -> AsyncIterator[bytes]:
    """A blocking binary file read in a worker thread, one chunk at a time."""
    while True:
        piece = await asyncio.to_thread(f.read, STREAM_CHUNK_BYTES)
        if piece is None:
            raise ValueError("put_stream needs a blocking file object")
        if isinstance(piece, str):
            raise TypeError("put_stream needs a binary file object (opened with 'rb'), not a text one")
        if not piece:
            return
        yield piece


async def _async_file_pieces(f: Any) -> AsyncIterator[bytes]:
    """A file object whose read is a coroutine (aiofiles and the like)."""
    while True:
        piece = await f.read(STREAM_CHUNK_BYTES)
        if not piece:
            return
        yield piece


async def _iter_pieces(source: Iterable[Any]) -> AsyncIterator[Any]:
    for piece in source:
        yield piece


async def _spool(pieces: AsyncIterator[Any]) -> Tuple[Any, int]:
    import tempfile

    f = tempfile.TemporaryFile()
    size = 0
    try:
        async for piece in pieces:
            view = memoryview(piece)
            await asyncio.to_thread(f.write, view)
            size += view.nbytes
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f, size


async def _open_source(
    source: Any, total_size: Optional[int]
) -> Tuple[AsyncIterator[Any], int, Callable[[], Awaitable[None]]]:
    async def nothing() -> None:
        pass

    def closer(f: Any) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            f.close()

        return close

    if is_path(source):
        f = await asyncio.to_thread(open, source, "rb")
        size = file_size_left(f)
        return _file_pieces(f), _calls.source_total(size, total_size), closer(f)  # type: ignore[return-value]
    if is_bytes_like(source):
        view = memoryview(source)
        return _iter_pieces([view]), _calls.source_total(view.nbytes, total_size), nothing
    if hasattr(source, "read"):
        coroutine_read = inspect.iscoroutinefunction(source.read)
        pieces = _async_file_pieces(source) if coroutine_read else _file_pieces(source)
        if total_size is None and not coroutine_read:
            total_size = file_size_left(source)
        if total_size is None:
            f, size = await _spool(pieces)
            return _file_pieces(f), size, closer(f)
        return pieces, total_size, nothing
    if hasattr(source, "__aiter__"):
        pieces = source.__aiter__()
    elif isinstance(source, Iterable):
        pieces = _iter_pieces(source)
    else:
        raise TypeError(
            f"put_stream takes a path, a binary file, a bytes-like object or an (async) iterable of bytes, "
            f"not {type(source).__name__}"
        )
    if total_size is None:
        f, size = await _spool(pieces)
        return _file_pieces(f), size, closer(f)
    return pieces, total_size, nothing


async def _write_path(path: str, stream: AsyncValueStream) -> None:
    partial = partial_path(path)
    f = await asyncio.to_thread(open, partial, "xb")
    try:
        try:
            async for chunk in stream:
                await asyncio.to_thread(f.write, chunk)
        finally:
            f.close()
        os.replace(partial, path)
    except BaseException:
        _calls.discard(partial)
        raise
