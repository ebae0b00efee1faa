"""The asyncio client (grpc.aio): the methods of :class:`opticache.Client`,
as coroutines, with the same fail-over, retries and deadlines. Use one
:class:`AsyncClient` from one event loop; its channels are opened on the
first call, in that loop."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
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

from . import _retry, params
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
    auth_metadata,
    batch_items,
    channel_options,
    check_namespace,
    cluster_status_from,
    coordinator_list,
    file_size_left,
    is_bytes_like,
    is_path,
    plan_batches,
    tls_config,
    to_key,
    to_value,
    ttl_ms,
)
from ._common import expected_version as _expected_version
from ._proto import pb2, pb2_grpc
from ._retry import AttemptFailure, CallKind, Failure, Stop
from .client import _data_sent, _Failed, partial_path
from .errors import DeadlineExceeded, OptiCacheError, ProtocolError, TooLarge, error_from_code

T = TypeVar("T")


class _AConn:
    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = pb2_grpc.OptiCacheStub(channel)


class AsyncValueStream:
    """A value being read chunk by chunk: ``async for chunk in stream``.
    ``version`` and ``total_size`` are known from the start."""

    def __init__(self, call: Any, first: Any, idle_s: float, address: str) -> None:
        self.version: int = first.version
        self.total_size: int = first.total_size
        self.address = address
        self._call = call
        self._idle_s = idle_s
        self._received = 0
        self._done = False
        self._pending: Optional[bytes] = self._account(first.data)

    def _account(self, data: bytes) -> bytes:
        self._received += len(data)
        if self._received > self.total_size:
            self.close()
            raise ProtocolError(None, f"ReadStream sent {self._received} bytes of a value of {self.total_size} bytes")
        return data

    def __aiter__(self) -> "AsyncValueStream":
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._pending is not None:
                data, self._pending = self._pending, None
                if data:
                    return data
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await asyncio.wait_for(self._call.read(), self._idle_s)
            except asyncio.TimeoutError:
                self.close()
                raise DeadlineExceeded(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"ReadStream from {self.address} sent nothing for {self._idle_s:g} s",
                ) from None
            except grpc.RpcError as e:
                self._done = True
                raise error_from_code(e.code(), e.details() or "") from None
            if chunk is grpc.aio.EOF:
                self._done = True
                if self._received != self.total_size:
                    raise ProtocolError(None, f"ReadStream ended after {self._received} of its {self.total_size} bytes")
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
        self._tls = tls_config(tls)
        self._addresses = coordinator_list(coordinators, tls=self._tls is not None)
        self._policy = _retry.RetryPolicy.make(retries, timeout_s, deadline_s)
        self._metadata = auth_metadata(token)
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be positive (got {connect_timeout_s!r})")
        self._connect_timeout_s = float(connect_timeout_s)
        self._credentials = self._tls.credentials() if self._tls is not None else None
        self._options = channel_options(self._tls, connect_timeout_s) + list(options or ())
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
        policy = self._policy
        call_deadline = time.monotonic() + policy.deadline_s
        first = self._preferred
        failures: List[AttemptFailure] = []
        attempt = 0
        while True:
            index = _retry.coordinator_for(first, attempt, len(conns))
            conn = conns[index]
            timeout = policy.attempt_timeout(time.monotonic(), call_deadline)
            if timeout is None:
                raise _retry.give_up(failures, Stop.DEADLINE, kind)
            data_sent = False
            try:
                result = await op(conn, timeout)
            except _Failed as e:
                failure, code, detail, data_sent = e.failure, e.code, e.detail, e.data_sent
            except grpc.RpcError as e:
                code, detail = e.code(), e.details() or ""
                failure = _retry.classify(code, detail)
            else:
                self._preferred = index
                return result
            if failure is Failure.ANSWER:
                self._preferred = index
                raise error_from_code(code, detail)
            failures.append(AttemptFailure(conn.address, failure, detail or code.name))
            if not _retry.should_retry(kind, failure, data_sent):
                raise _retry.give_up(failures, Stop.UNSAFE, kind)
            attempt += 1
            if attempt >= policy.attempts:
                raise _retry.give_up(failures, Stop.EXHAUSTED, kind)
            pause = policy.pause_before(attempt, time.monotonic(), call_deadline)
            if pause is None:
                raise _retry.give_up(failures, Stop.DEADLINE, kind)
            await asyncio.sleep(pause)

    # ------------------------------------------------------------------
    # Point calls

    async def put(self, key: KeyLike, value: ValueLike, namespace: str = "", ttl_s: Optional[float] = None) -> int:
        request = pb2.WriteRequest(
            namespace=check_namespace(namespace), key=to_key(key), value=to_value(value), ttl_ms=ttl_ms(ttl_s)
        )
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> int:
            return (await conn.stub.WriteCache(request, timeout=timeout, metadata=md)).version

        return await self._call(CallKind.IDEMPOTENT, op)

    async def get_versioned(self, key: KeyLike, namespace: str = "") -> Optional[Value]:
        request = pb2.ReadRequest(namespace=check_namespace(namespace), key=to_key(key))
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> Any:
            return await conn.stub.ReadCache(request, timeout=timeout, metadata=md)

        found = await self._call(CallKind.IDEMPOTENT, op)
        return Value(found.value, found.version) if found.found else None

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
        request = pb2.UpdateRequest(
            namespace=check_namespace(namespace),
            key=to_key(key),
            value=to_value(value),
            expected_version=_expected_version(expected_version),
            ttl_ms=ttl_ms(ttl_s),
        )
        md = self._metadata

        async def op(conn: _AConn, timeout: float) -> int:
            return (await conn.stub.UpdateCache(request, timeout=timeout, metadata=md)).version

        return await self._call(CallKind.COMPARE_AND_SET, op)

    async def delete(self, key: KeyLike, namespace: str = "") -> bool:
        request = pb2.DeleteRequest(namespace=check_namespace(namespace), key=to_key(key))
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
        pairs = batch_items(items)
        ns = check_namespace(namespace)
        ttl = ttl_ms(ttl_s)
        md = self._metadata
        versions: List[int] = []
        for run in plan_batches([len(k) + len(v) for k, v in pairs]):
            request = pb2.BatchWriteRequest(
                namespace=ns, entries=[pb2.KeyValue(key=k, value=v, ttl_ms=ttl) for k, v in pairs[run.start : run.stop]]
            )

            async def op(conn: _AConn, timeout: float, request: Any = request) -> List[int]:
                return list((await conn.stub.BatchWrite(request, timeout=timeout, metadata=md)).versions)

            got = await self._call(CallKind.IDEMPOTENT, op)
            if len(got) != len(run):
                raise ProtocolError(None, f"BatchWrite of {len(run)} entries returned {len(got)} versions")
            versions += got
        return versions

    async def get_many_versioned(
        self, keys: Iterable[KeyLike], namespace: str = "", *, _sizes: Optional[Sequence[int]] = None
    ) -> List[Optional[Value]]:
        keys = [to_key(k) for k in keys]
        ns = check_namespace(namespace)
        md = self._metadata
        results: List[Optional[Value]] = [None] * len(keys)
        sizes = list(_sizes) if _sizes is not None else [len(k) for k in keys]
        todo = [(run.start, run.stop) for run in plan_batches(sizes)]
        todo.reverse()
        while todo:
            start, stop = todo.pop()
            request = pb2.BatchReadRequest(namespace=ns, keys=keys[start:stop])

            async def op(conn: _AConn, timeout: float, request: Any = request) -> List[Any]:
                return list((await conn.stub.BatchRead(request, timeout=timeout, metadata=md)).results)

            try:
                got = await self._call(CallKind.IDEMPOTENT, op)
            except TooLarge:
                if stop - start == 1:
                    results[start] = await self._read_value(keys[start], ns, as_bytes=True)
                    continue
                middle = (start + stop) // 2
                todo += [(middle, stop), (start, middle)]
                continue
            if len(got) != stop - start:
                raise ProtocolError(None, f"BatchRead of {stop - start} keys returned {len(got)} results")
            for i, r in enumerate(got, start):
                results[i] = Value(r.value, r.version) if r.found else None
        return results

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
        ns = check_namespace(namespace)
        key_bytes = to_key(key)
        ttl = ttl_ms(ttl_s)
        pieces, total, close = await _open_source(source, total_size)
        try:
            chunks = _chunks(pieces, Rechunker(total))
            head = pb2.WriteChunk(
                namespace=ns, key=key_bytes, ttl_ms=ttl, total_size=total, data=await chunks.__anext__()
            )

            async def op(conn: _AConn, timeout: float) -> int:
                return await self._upload(conn, timeout, head, chunks)

            return await self._call(CallKind.STREAM, op)
        finally:
            await close()

    async def _upload(self, conn: _AConn, timeout: float, head: Any, chunks: AsyncIterator[bytes]) -> int:
        idle = self._policy.attempt_timeout_s
        state: dict = {"sent": False, "advanced": False, "last": time.monotonic(), "failure": None}

        async def body() -> AsyncIterator[Any]:
            state["sent"] = True
            state["last"] = time.monotonic()
            yield head
            while True:
                state["advanced"] = True
                try:
                    data = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as e:  # noqa: BLE001 - reported to the caller below
                    state["failure"] = e  # ending short makes the coordinator store nothing
                    return
                state["last"] = time.monotonic()
                yield pb2.WriteChunk(data=data)

        call = conn.stub.WriteStream(body(), metadata=self._metadata)

        async def answer() -> Any:
            return await call

        task = asyncio.ensure_future(answer())
        stalled = False
        try:
            while not task.done():
                left = state["last"] + idle - time.monotonic()
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
            if state["failure"] is not None:
                raise state["failure"] from None  # type: ignore[misc]
            code, detail = e.code(), e.details() or ""
            failure = _retry.classify(code, detail)
            raise _Failed(failure, code, detail, _data_sent(state, failure)) from None
        finally:
            if not task.done():
                task.cancel()
        if state["failure"] is not None:
            raise state["failure"]  # type: ignore[misc]
        if stalled or response is None:
            raise _Failed(
                Failure.DEADLINE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"WriteStream made no progress for {idle:g} s",
                _data_sent(state, Failure.DEADLINE),
            )
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
        request = pb2.ReadRequest(namespace=namespace, key=key)
        md = self._metadata
        idle = self._policy.attempt_timeout_s

        async def op(conn: _AConn, timeout: float) -> Optional[AsyncValueStream]:
            call = conn.stub.ReadStream(request, metadata=md)
            try:
                first = await asyncio.wait_for(call.read(), timeout)
            except asyncio.TimeoutError:
                call.cancel()
                raise _Failed(
                    Failure.DEADLINE, grpc.StatusCode.DEADLINE_EXCEEDED, f"ReadStream sent nothing for {timeout:g} s"
                ) from None
            except grpc.RpcError as e:
                code, detail = e.code(), e.details() or ""
                if code == grpc.StatusCode.NOT_FOUND and _retry.classify(code, detail) is Failure.ANSWER:
                    return None
                raise
            if first is grpc.aio.EOF:
                raise ProtocolError(None, "ReadStream ended before its first chunk")
            return AsyncValueStream(call, first, idle, conn.address)

        return await self._call(CallKind.IDEMPOTENT, op)

    async def _read_value(self, key: KeyLike, namespace: str = "", as_bytes: bool = False) -> Optional[Value]:
        stream = await self._open_stream(to_key(key), check_namespace(namespace))
        if stream is None:
            return None
        async with stream:
            buffer = bytearray(stream.total_size)
            await stream.readinto(buffer)
        return Value(bytes(buffer) if as_bytes else buffer, stream.version)  # type: ignore[arg-type]

    # ------------------------------------------------------------------
    # Arrays and parameter sets (see opticache.params)

    async def _run(self, flow: params.Flow) -> Any:
        result: Any = None
        error: Optional[BaseException] = None
        while True:
            try:
                op = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as stop:
                return stop.value
            result, error = None, None
            try:
                result = await getattr(self, op.name)(*op.args, **op.kwargs)
            except OptiCacheError as e:
                error = e

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
        return _file_pieces(f), (size if total_size is None else total_size), closer(f)  # type: ignore[return-value]
    if is_bytes_like(source):
        view = memoryview(source)
        return _iter_pieces([view]), (view.nbytes if total_size is None else total_size), nothing
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
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
