"""The blocking client: typed calls of ``opticache.v1`` with fail-over
between coordinators, retries and deadlines. Thread-safe: one client may be
shared by many threads (it holds one gRPC channel per coordinator)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import _calls, params
from ._calls import Failed as _Failed
from ._calls import partial_path
from ._common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_COORDINATORS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
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
    read_pieces,
    spool,
    to_key,
)
from ._proto import pb2, pb2_grpc
from ._retry import CallKind
from .errors import OptiCacheError, TooLarge, error_from_code

T = TypeVar("T")


class _Conn:
    """One coordinator: its address, channel and stub."""

    def __init__(self, address: str, channel: grpc.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = pb2_grpc.OptiCacheStub(channel)


class _Watchdog:
    """Cancels a call when it waits longer than armed for: the stall
    deadline of a stream (one thread per stream)."""

    def __init__(self, on_fire: Callable[[], Any]) -> None:
        self._on_fire = on_fire
        self._cond = threading.Condition()
        self._deadline: Optional[float] = None
        self._stopped = False
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="opticache-stream-watchdog", daemon=True)
        self._thread.start()

    def arm(self, timeout_s: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left <= 0:
                    self.fired = True
                    self._stopped = True
                    break
                self._cond.wait(left)
        if self.fired:
            self._on_fire()


class ValueStream(_calls.StreamReading):
    """A value being read chunk by chunk (ReadStream). Iterate it for the
    chunks (bytes, at most 1 MiB each); ``version`` and ``total_size`` are
    known from the start. Close it (or use ``with``) to stop early."""

    def __init__(self, call: Any, first: Any, watchdog: _Watchdog, idle_s: float, address: str) -> None:
        self._call = call
        self._watchdog = watchdog
        self._start(first, idle_s, address)

    def __iter__(self) -> "ValueStream":
        return self

    def __next__(self) -> bytes:
        while True:
            data = self._take_pending()
            if data:
                return data
            if self._done:
                raise StopIteration
            self._watchdog.arm(self._idle_s)
            try:
                chunk = next(self._call)
            except StopIteration:
                self._finish()
                short = self._short()
                if short is not None:
                    raise short from None
                raise
            except grpc.RpcError as e:
                self._finish()
                if self._watchdog.fired:
                    raise self._stall() from None
                raise error_from_code(e.code(), e.details() or "") from None
            finally:
                self._watchdog.disarm()
            self._pending = self._account(chunk.data)

    def _finish(self) -> None:
        self._done = True
        self._watchdog.stop()

    def read_all(self) -> bytes:
        """The rest of the value in one bytes object."""
        return b"".join(self)

    def readinto(self, buffer: Any) -> int:
        """Reads the rest of the value into ``buffer`` (a writable buffer of
        at least the remaining size); the number of bytes written."""
        view = memoryview(buffer).cast("B")
        pos = 0
        for chunk in self:
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        return pos

    def close(self) -> None:
        if not self._done:
            self._finish()
            self._call.cancel()

    def __enter__(self) -> "ValueStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class Client:
    """A handle on an OptiCache cluster (blocking calls).

    Args:
        coordinators: every coordinator, ``"host:port"`` (a list, or one str
            with commas), primary and standby alike: both serve the data
            path, and the client fails over between them in this order.
        token: sent with every call as ``authorization: Bearer <token>``.
        tls: None for plaintext; the path of a CA certificate (PEM) for TLS
            trusting that CA; or a :class:`TlsConfig` (mutual TLS, server name).
        timeout_s: deadline of one attempt; for streams, the longest they
            may go without progress.
        retries: attempts in total (not extra ones) for a call that may be
            repeated, as the Rust client's ``retries``; at least 1.
        deadline_s: overall deadline of a call, attempts and pauses
            included; default: as long as all attempts and pauses may take.
        connect_timeout_s: how long a connection attempt (TCP and HTTP/2
            handshake) may take; one that fails or times out moves even an
            update or a stream to the next coordinator, since it proves
            nothing was sent.
        options: extra gRPC channel options.
    """

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
        self._conns: List[_Conn] = []
        for address in self._addresses:
            if s.credentials is None:
                channel = grpc.insecure_channel(address, options=s.options)
            else:
                channel = grpc.secure_channel(address, s.credentials, options=s.options)
            self._conns.append(_Conn(address, channel))
        self._preferred = 0
        self._closed = False

    # ------------------------------------------------------------------
    # Life

    @property
    def coordinators(self) -> List[str]:
        """The coordinator addresses, in fail-over order."""
        return list(self._addresses)

    @property
    def preferred(self) -> str:
        """The coordinator the next call goes to first (the last that answered)."""
        return self._addresses[self._preferred]

    def close(self) -> None:
        """Closes every channel; calls in flight are cancelled."""
        if not self._closed:
            self._closed = True
            for conn in self._conns:
                conn.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self._addresses!r}, preferred={self.preferred!r})"

    # ------------------------------------------------------------------
    # The retry loop

    def _call(self, kind: CallKind, op: Callable[[_Conn, float], T]) -> T:
        """Runs ``op(coordinator, attempt_timeout_s)`` until it succeeds, gets
        an answer that is not a fail-over reason, or the policy says stop."""
        if self._closed:
            raise ValueError("the client is closed")
        attempts = _calls.Attempts(self._policy, kind, self._preferred, len(self._conns))
        while True:
            index, timeout = attempts.next()
            conn = self._conns[index]
            try:
                result = op(conn, timeout)
            except (_Failed, grpc.RpcError) as e:
                answer = attempts.failed(conn.address, e)
            else:
                self._preferred = index
                return result
            if answer is not None:
                # The coordinator is alive and this is the cluster's answer.
                self._preferred = index
                raise answer
            time.sleep(attempts.pause())

    # ------------------------------------------------------------------
    # Point calls

    def put(self, key: KeyLike, value: ValueLike, namespace: str = "", ttl_s: Optional[float] = None) -> int:
        """Stores ``value`` under ``key`` (WriteCache, an upsert); the version
        the cluster gave the write. ``ttl_s``: None never expires."""
        request = _calls.write_request(key, value, namespace, ttl_s)
        md = self._metadata
        return self._call(
            CallKind.IDEMPOTENT,
            lambda conn, timeout: conn.stub.WriteCache(request, timeout=timeout, metadata=md).version,
        )

    def get_versioned(self, key: KeyLike, namespace: str = "") -> Optional[Value]:
        """Reads ``key`` (ReadCache): ``Value(value, version)``, or None on a miss."""
        request = _calls.read_request(key, namespace)
        md = self._metadata
        found = self._call(
            CallKind.IDEMPOTENT,
            lambda conn, timeout: conn.stub.ReadCache(request, timeout=timeout, metadata=md),
        )
        return _calls.value_from(found)

    def get(self, key: KeyLike, namespace: str = "") -> Optional[bytes]:
        """Reads ``key``: its value, or None on a miss."""
        found = self.get_versioned(key, namespace)
        return None if found is None else found.value

    def update(
        self,
        key: KeyLike,
        value: ValueLike,
        expected_version: Optional[int] = 0,
        namespace: str = "",
        ttl_s: Optional[float] = None,
    ) -> int:
        """Replaces the value of an existing ``key`` (UpdateCache); the new
        version. ``expected_version``: 0 (or None) accepts any stored version,
        another number only that one (:class:`VersionConflict` otherwise). A
        missing key is :class:`NotFound`. Repeated on another coordinator
        only after a connect failure: a compare-and-set that may have been
        applied is never sent twice."""
        request = _calls.update_request(key, value, expected_version, namespace, ttl_s)
        md = self._metadata
        return self._call(
            CallKind.COMPARE_AND_SET,
            lambda conn, timeout: conn.stub.UpdateCache(request, timeout=timeout, metadata=md).version,
        )

    def delete(self, key: KeyLike, namespace: str = "") -> bool:
        """Deletes ``key`` (DeleteCache): True if it existed. After a retried
        attempt the answer may be False although this call deleted it."""
        request = _calls.delete_request(key, namespace)
        md = self._metadata
        return self._call(
            CallKind.IDEMPOTENT,
            lambda conn, timeout: conn.stub.DeleteCache(request, timeout=timeout, metadata=md).deleted,
        )

    def cluster_status(self) -> ClusterStatus:
        """Who is primary, at which epoch, and every cache node's state, as
        the coordinator that answers sees it (``address``)."""
        md = self._metadata
        return self._call(
            CallKind.IDEMPOTENT,
            lambda conn, timeout: cluster_status_from(
                pb2,
                conn.stub.ClusterStatus(pb2.ClusterStatusRequest(), timeout=timeout, metadata=md),
                conn.address,
            ),
        )

    # ------------------------------------------------------------------
    # Batches

    def put_many(
        self,
        items: Union[Mapping[Any, Any], Iterable[Tuple[Any, Any]]],
        namespace: str = "",
        ttl_s: Optional[float] = None,
    ) -> List[int]:
        """Stores many values (BatchWrite): a mapping or (key, value) pairs;
        the versions, in order. Cut into several calls when over the
        cluster's batch limits (4096 entries, 64 MiB of keys and values).
        Not atomic: if a call fails, entries of earlier calls stay written."""
        md = self._metadata
        versions: List[int] = []
        for request, count in _calls.batch_writes(items, namespace, ttl_s):
            got = self._call(
                CallKind.IDEMPOTENT,
                lambda conn, timeout, request=request: list(
                    conn.stub.BatchWrite(request, timeout=timeout, metadata=md).versions
                ),
            )
            versions += _calls.batch_versions(got, count)
        return versions

    def get_many_versioned(
        self, keys: Iterable[KeyLike], namespace: str = "", *, _sizes: Optional[Sequence[int]] = None
    ) -> List[Optional[Value]]:
        """Reads many keys (BatchRead): ``Value`` or None for each, in order.
        Cut into several calls when over the batch limits; a call whose values
        come to more than 64 MiB is cut in halves."""
        md = self._metadata
        batches = _calls.BatchReads(keys, namespace, _sizes)
        for request in batches:
            try:
                got = self._call(
                    CallKind.IDEMPOTENT,
                    lambda conn, timeout, request=request: list(
                        conn.stub.BatchRead(request, timeout=timeout, metadata=md).results
                    ),
                )
            except TooLarge:
                key = batches.split()
                if key is not None:
                    batches.results[batches.start] = self._read_value(key, batches.namespace, as_bytes=True)
                continue
            batches.receive(got)
        return batches.results

    def get_many(self, keys: Iterable[KeyLike], namespace: str = "") -> List[Optional[bytes]]:
        """Reads many keys: the value or None for each, in order."""
        return [None if r is None else r.value for r in self.get_many_versioned(keys, namespace)]

    # ------------------------------------------------------------------
    # Streams

    def put_stream(
        self,
        key: KeyLike,
        source: Any,
        total_size: Optional[int] = None,
        namespace: str = "",
        ttl_s: Optional[float] = None,
    ) -> int:
        """Stores a value of any size (WriteStream) in chunks of 1 MiB; the
        version. Memory stays about one chunk whatever the size.

        ``source``: a path, a binary file object (read from its current
        position), a bytes-like object, or an iterable of bytes-like pieces
        of any size. ``total_size`` is found from a path, bytes or a regular
        file; an iterable without ``total_size`` is first copied to a
        temporary file to learn it. A source shorter or longer than
        ``total_size`` raises :class:`InvalidArgument` and stores nothing.

        Repeated on another coordinator only if no data was sent yet; once
        data flows, the stream fails when it makes no progress for
        ``timeout_s``."""
        head = _calls.write_head(key, namespace, ttl_s)
        pieces, total, close = _open_source(source, total_size)
        try:
            chunks = _chunks(pieces, Rechunker(total))
            head.total_size, head.data = total, next(chunks)
            return self._call(CallKind.STREAM, lambda conn, timeout: self._upload(conn, timeout, head, chunks))
        finally:
            close()

    def _upload(self, conn: _Conn, timeout: float, head: Any, chunks: Iterator[bytes]) -> int:
        upload = _calls.Upload(self._policy.attempt_timeout_s)

        def body() -> Iterator[Any]:
            upload.started()
            yield head
            while True:
                upload.advanced = True
                try:
                    data = next(chunks)
                except StopIteration:
                    return
                except BaseException as e:  # noqa: BLE001 - reported to the caller below
                    # Ending the stream short makes the coordinator store nothing.
                    upload.failure = e
                    return
                upload.progressed()
                yield pb2.WriteChunk(data=data)

        future = conn.stub.WriteStream.future(body(), metadata=self._metadata)
        stalled = False
        try:
            while True:
                left = upload.time_left()
                if left <= 0:
                    stalled = True
                    future.cancel()
                    break
                try:
                    response = future.result(timeout=left)
                    break
                except grpc.FutureTimeoutError:
                    continue
        except grpc.RpcError as e:
            raise upload.rpc_error(e) from None
        except grpc.FutureCancelledError:
            stalled = True
        if upload.failure is not None:
            raise upload.failure
        if stalled:
            raise upload.stalled()
        return response.version

    def get_stream(self, key: KeyLike, dest: Any = None, namespace: str = "") -> Union[None, ValueStream, StreamInfo]:
        """Reads a value of any size (ReadStream); None on a miss.

        Without ``dest``: a :class:`ValueStream`, an iterator of chunks
        (bytes) with ``version`` and ``total_size``. With ``dest``, a path
        or a binary file object, the value is written there and a
        :class:`StreamInfo` (version, total_size) returned; a path is written
        to a temporary file next to it and renamed into place once complete.

        Opening (up to the first chunk) is retried like any read; the chunks
        after it are not, and each must come within ``timeout_s``."""
        stream = self._open_stream(to_key(key), check_namespace(namespace))
        if stream is None or dest is None:
            return stream
        with stream:
            if is_path(dest):
                _write_path(os.fspath(dest), stream)
            else:
                for chunk in stream:
                    dest.write(chunk)
        return StreamInfo(stream.version, stream.total_size)

    def _open_stream(self, key: bytes, namespace: str) -> Optional[ValueStream]:
        request = _calls.read_request(key, namespace)
        md = self._metadata
        idle = self._policy.attempt_timeout_s

        def op(conn: _Conn, timeout: float) -> Optional[ValueStream]:
            # No gRPC deadline: it would cut a long transfer short. The
            # watchdog bounds the wait for each chunk instead.
            call = conn.stub.ReadStream(request, metadata=md)
            watchdog = _Watchdog(call.cancel)
            watchdog.arm(timeout)
            try:
                first = next(call)
            except StopIteration:
                watchdog.stop()
                raise _calls.first_chunk_missing() from None
            except grpc.RpcError as e:
                watchdog.stop()
                if watchdog.fired:
                    raise _calls.first_chunk_timeout(timeout) from None
                if _calls.is_miss(e):
                    return None  # a miss
                raise
            watchdog.disarm()
            return ValueStream(call, first, watchdog, idle, conn.address)

        return self._call(CallKind.IDEMPOTENT, op)

    def _read_value(self, key: KeyLike, namespace: str = "", as_bytes: bool = False) -> Optional[Value]:
        """A whole value through ReadStream, received into one buffer of its
        size (a bytearray, or bytes with ``as_bytes``)."""
        stream = self._open_stream(to_key(key), check_namespace(namespace))
        if stream is None:
            return None
        with stream:
            buffer = bytearray(stream.total_size)
            stream.readinto(buffer)
        return _calls.value_in(buffer, stream.version, as_bytes)

    # ------------------------------------------------------------------
    # Arrays and parameter sets (see opticache.params)

    def _run(self, flow: params.Flow) -> Any:
        steps = _calls.FlowSteps(flow)
        for op in steps:
            try:
                steps.result = getattr(self, op.name)(*op.args, **op.kwargs)
            except OptiCacheError as e:
                steps.error = e
        return steps.value

    def put_array(
        self,
        key: KeyLike,
        array: Any,
        namespace: str = "",
        ttl_s: Optional[float] = None,
        *,
        stream_threshold_bytes: int = params.ARRAY_STREAM_THRESHOLD,
    ) -> int:
        """Stores a numpy array (dtype and shape in a .npy header; no pickle,
        object dtypes refused); the version. Streamed when over
        ``stream_threshold_bytes``."""
        return self._run(params.put_array_flow(key, array, namespace, ttl_s, stream_threshold_bytes))

    def get_array(self, key: KeyLike, namespace: str = "", *, copy: bool = False) -> Any:
        """The numpy array stored by :meth:`put_array`, or None on a miss: a
        read-only view of the received bytes, or a writable copy with ``copy``."""
        return self._run(params.get_array_flow(key, namespace, copy))

    def put_params(
        self,
        model: str,
        version: int,
        arrays: Mapping[str, Any],
        *,
        ttl_s: Optional[float] = None,
        make_latest: bool = True,
        stream_threshold_bytes: int = params.ARRAY_STREAM_THRESHOLD,
    ) -> int:
        """Stores a whole parameter set (name -> array) of ``model`` at
        ``version``: arrays first, the manifest last, then the "latest"
        pointer (moved forward only, by compare-and-set). The manifest's
        version."""
        return self._run(params.put_params_flow(model, version, arrays, ttl_s, make_latest, stream_threshold_bytes))

    def get_params(
        self,
        model: str,
        version: Optional[int] = None,
        *,
        copy: bool = False,
        stream_threshold_bytes: int = params.ARRAY_STREAM_THRESHOLD,
    ) -> dict:
        """The parameter set (name -> array) of ``model`` at ``version``
        (default: the latest); :class:`NotFound` if there is none."""
        return self._run(params.get_params_flow(model, version, copy, stream_threshold_bytes))

    def latest_params_version(self, model: str) -> Optional[int]:
        """The newest published version of ``model``'s parameters, or None."""
        return self._run(params.latest_params_version_flow(model))

    def delete_params(self, model: str, version: int) -> bool:
        """Deletes one version's parameter set (manifest first); True if it existed."""
        return self._run(params.delete_params_flow(model, version))


def _chunks(pieces: Iterable[Any], rechunker: Rechunker) -> Iterator[bytes]:
    for piece in pieces:
        yield from rechunker.feed(piece)
    yield from rechunker.finish()


def _open_source(source: Any, total_size: Optional[int]) -> Tuple[Iterable[Any], int, Callable[[], None]]:
    """The pieces of a put_stream source, its total size, and how to close
    what was opened for it."""

    def nothing() -> None:
        pass

    if is_path(source):
        f = open(source, "rb")
        size = file_size_left(f)
        return read_pieces(f), _calls.source_total(size, total_size), f.close  # type: ignore[return-value]
    if is_bytes_like(source):
        view = memoryview(source)
        return [view], _calls.source_total(view.nbytes, total_size), nothing
    if hasattr(source, "read"):
        if total_size is None:
            total_size = file_size_left(source)
        if total_size is None:
            f, size = spool(read_pieces(source))
            return read_pieces(f), size, f.close
        return read_pieces(source), total_size, nothing
    if isinstance(source, Iterable):
        if total_size is None:
            f, size = spool(source)
            return read_pieces(f), size, f.close
        return source, total_size, nothing
    raise TypeError(
        f"put_stream takes a path, a binary file, a bytes-like object or an iterable of bytes, "
        f"not {type(source).__name__}"
    )


def _write_path(path: str, stream: ValueStream) -> None:
    partial = partial_path(path)
    try:
        with open(partial, "xb") as f:
            for chunk in stream:
                f.write(chunk)
        os.replace(partial, path)
    except BaseException:
        _calls.discard(partial)
        raise
