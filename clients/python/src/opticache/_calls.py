"""The parts of a call that the blocking and the asyncio clients share:
building requests (with their argument checks), cutting batches, decoding
answers into results, sorting failures and keeping count of attempts, and the
bookkeeping of streams. Each client keeps only the transport calls (``stub.X``
or ``await stub.X``) and the waiting. No I/O here."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from . import _retry
from ._common import (
    KeyLike,
    TlsConfig,
    TlsLike,
    Value,
    ValueLike,
    auth_metadata,
    batch_items,
    channel_options,
    check_namespace,
    coordinator_list,
    expected_version,
    plan_batches,
    tls_config,
    to_key,
    to_value,
    ttl_ms,
)
from ._proto import pb2
from ._retry import AttemptFailure, CallKind, Failure, RetryPolicy, Stop
from .errors import DeadlineExceeded, OptiCacheError, ProtocolError, error_from_code

# --------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """A client's arguments, checked and converted."""

    tls: Optional[TlsConfig]
    addresses: List[str]
    policy: RetryPolicy
    metadata: Optional[Tuple[Tuple[str, str], ...]]
    connect_timeout_s: float
    credentials: Optional[grpc.ChannelCredentials]
    #: The gRPC channel options.
    options: List[Tuple[str, Any]]


def settings(
    coordinators: Union[str, Sequence[str]],
    token: Optional[str],
    tls: TlsLike,
    timeout_s: float,
    retries: int,
    deadline_s: Optional[float],
    connect_timeout_s: float,
    options: Optional[Sequence[Tuple[str, Any]]],
) -> Settings:
    """Checks the arguments of :class:`~opticache.Client` (and
    :class:`~opticache.AsyncClient`)."""
    config = tls_config(tls)
    addresses = coordinator_list(coordinators, tls=config is not None)
    policy = RetryPolicy.make(retries, timeout_s, deadline_s)
    metadata = auth_metadata(token)
    if not connect_timeout_s > 0:
        raise ValueError(f"connect_timeout_s must be positive (got {connect_timeout_s!r})")
    return Settings(
        tls=config,
        addresses=addresses,
        policy=policy,
        metadata=metadata,
        connect_timeout_s=float(connect_timeout_s),
        credentials=config.credentials() if config is not None else None,
        options=channel_options(config, connect_timeout_s) + list(options or ()),
    )


# --------------------------------------------------------------------------
# Attempts


class Failed(Exception):
    """One attempt failed in a way the client sorted itself (a connect
    timeout, a stalled stream), or a stream failed after sending data."""

    def __init__(self, failure: Failure, code: grpc.StatusCode, detail: str, data_sent: bool = False) -> None:
        super().__init__(detail)
        self.failure = failure
        self.code = code
        self.detail = detail
        self.data_sent = data_sent


class Attempts:
    """The attempts of one call, by the rules of :mod:`opticache._retry`:
    which coordinator and deadline each gets, what a failure means, and when
    to give up. The client runs each attempt and sleeps the pauses."""

    def __init__(self, policy: RetryPolicy, kind: CallKind, first: int, count: int) -> None:
        self._policy = policy
        self._kind = kind
        self._first = first
        self._count = count
        self._deadline = time.monotonic() + policy.deadline_s
        self._failures: List[AttemptFailure] = []
        self._attempt = 0
        self._failure = Failure.ANSWER
        self._data_sent = False

    def next(self) -> Tuple[int, float]:
        """The index of the coordinator for the next attempt and its timeout;
        raises when the call's deadline has passed."""
        index = _retry.coordinator_for(self._first, self._attempt, self._count)
        timeout = self._policy.attempt_timeout(time.monotonic(), self._deadline)
        if timeout is None:
            raise _retry.give_up(self._failures, Stop.DEADLINE, self._kind)
        return index, timeout

    def failed(self, address: str, error: BaseException) -> Optional[OptiCacheError]:
        """Records the failure of the attempt at ``address`` (a :class:`Failed`
        or a ``grpc.RpcError``). The error to raise when it is the cluster's
        answer (no fail-over), else None."""
        if isinstance(error, Failed):
            failure, code, detail, data_sent = error.failure, error.code, error.detail, error.data_sent
        else:
            code, detail = error.code(), error.details() or ""  # type: ignore[attr-defined]
            failure, data_sent = _retry.classify(code, detail), False
        if failure is Failure.ANSWER:
            return error_from_code(code, detail)
        self._failures.append(AttemptFailure(address, failure, detail or code.name))
        self._failure, self._data_sent = failure, data_sent
        return None

    def pause(self) -> float:
        """After a failure: how long to pause before the next attempt; raises
        when the call may not or need not be tried again."""
        if not _retry.should_retry(self._kind, self._failure, self._data_sent):
            raise _retry.give_up(self._failures, Stop.UNSAFE, self._kind)
        self._attempt += 1
        if self._attempt >= self._policy.attempts:
            raise _retry.give_up(self._failures, Stop.EXHAUSTED, self._kind)
        pause = self._policy.pause_before(self._attempt, time.monotonic(), self._deadline)
        if pause is None:
            raise _retry.give_up(self._failures, Stop.DEADLINE, self._kind)
        return pause


# --------------------------------------------------------------------------
# Point calls


def write_request(key: KeyLike, value: ValueLike, namespace: str, ttl_s: Optional[float]) -> Any:
    return pb2.WriteRequest(
        namespace=check_namespace(namespace), key=to_key(key), value=to_value(value), ttl_ms=ttl_ms(ttl_s)
    )


def read_request(key: KeyLike, namespace: str) -> Any:
    return pb2.ReadRequest(namespace=check_namespace(namespace), key=to_key(key))


def update_request(
    key: KeyLike, value: ValueLike, version: Optional[int], namespace: str, ttl_s: Optional[float]
) -> Any:
    return pb2.UpdateRequest(
        namespace=check_namespace(namespace),
        key=to_key(key),
        value=to_value(value),
        expected_version=expected_version(version),
        ttl_ms=ttl_ms(ttl_s),
    )


def delete_request(key: KeyLike, namespace: str) -> Any:
    return pb2.DeleteRequest(namespace=check_namespace(namespace), key=to_key(key))


def value_from(found: Any) -> Optional[Value]:
    """A ReadCache answer (or a BatchRead result) as a Value, None on a miss."""
    return Value(found.value, found.version) if found.found else None


# --------------------------------------------------------------------------
# Batches


def batch_writes(
    items: Union[Mapping[Any, Any], Iterable[Tuple[Any, Any]]], namespace: str, ttl_s: Optional[float]
) -> Iterator[Tuple[Any, int]]:
    """The BatchWrite requests of a put_many, each with its number of
    entries; the arguments are checked at once, the requests made as taken."""
    pairs = batch_items(items)
    ns = check_namespace(namespace)
    ttl = ttl_ms(ttl_s)
    runs = plan_batches([len(k) + len(v) for k, v in pairs])

    def requests() -> Iterator[Tuple[Any, int]]:
        for run in runs:
            entries = [pb2.KeyValue(key=k, value=v, ttl_ms=ttl) for k, v in pairs[run.start : run.stop]]
            yield pb2.BatchWriteRequest(namespace=ns, entries=entries), len(run)

    return requests()


def batch_versions(got: List[int], count: int) -> List[int]:
    if len(got) != count:
        raise ProtocolError(None, f"BatchWrite of {count} entries returned {len(got)} versions")
    return got


class BatchReads:
    """The BatchRead requests of a get_many_versioned, and its results.
    Iterate it for the requests; after one failed with TooLarge call
    :meth:`split` (which cuts the keys in halves) before taking the next,
    else :meth:`receive` with its results."""

    def __init__(self, keys: Iterable[KeyLike], namespace: str, sizes: Optional[Sequence[int]]) -> None:
        self.keys = [to_key(k) for k in keys]
        self.namespace = check_namespace(namespace)
        self.results: List[Optional[Value]] = [None] * len(self.keys)
        sizes = list(sizes) if sizes is not None else [len(k) for k in self.keys]
        self._todo = [(run.start, run.stop) for run in plan_batches(sizes)]
        self._todo.reverse()
        self.start = self.stop = 0

    def __iter__(self) -> Iterator[Any]:
        while self._todo:
            self.start, self.stop = self._todo.pop()
            yield pb2.BatchReadRequest(namespace=self.namespace, keys=self.keys[self.start : self.stop])

    def split(self) -> Optional[bytes]:
        """The current request was too large: queues its halves, or, for a
        single key, returns it (to be read as a stream into ``results[start]``)."""
        start, stop = self.start, self.stop
        if stop - start == 1:
            return self.keys[start]
        middle = (start + stop) // 2
        self._todo += [(middle, stop), (start, middle)]
        return None

    def receive(self, got: List[Any]) -> None:
        start, stop = self.start, self.stop
        if len(got) != stop - start:
            raise ProtocolError(None, f"BatchRead of {stop - start} keys returned {len(got)} results")
        for i, r in enumerate(got, start):
            self.results[i] = value_from(r)


# --------------------------------------------------------------------------
# Streams


def write_head(key: KeyLike, namespace: str, ttl_s: Optional[float]) -> Any:
    """The first WriteChunk of a put_stream, its arguments checked; the
    caller fills in ``total_size`` and ``data``."""
    ns = check_namespace(namespace)
    key_bytes = to_key(key)
    return pb2.WriteChunk(namespace=ns, key=key_bytes, ttl_ms=ttl_ms(ttl_s))


class Upload:
    """The progress of one WriteStream attempt. ``sent``: the first chunk was
    handed to gRPC; ``advanced``: the source was read past it (it cannot be
    replayed any more); ``failure``: the source failed (the stream was then
    ended short, which makes the coordinator store nothing)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.sent = False
        self.advanced = False
        self.last = time.monotonic()
        self.failure: Optional[BaseException] = None

    def started(self) -> None:
        self.sent = True
        self.last = time.monotonic()

    def progressed(self) -> None:
        self.last = time.monotonic()

    def time_left(self) -> float:
        """How long the stream may still go without progress."""
        return self.last + self.idle_s - time.monotonic()

    def data_sent(self, failure: Failure) -> bool:
        """Whether a failed attempt may not be repeated: its source was read
        past the first chunk (which is kept for a repeat), or that chunk went
        out on a connection (a connect failure proves it did not)."""
        return bool(self.advanced or (self.sent and failure is not Failure.CONNECT))

    def rpc_error(self, e: grpc.RpcError) -> BaseException:
        """What to raise when the call failed: the source's own error, or a
        :class:`Failed` for the retry loop."""
        if self.failure is not None:
            return self.failure
        code, detail = e.code(), e.details() or ""
        failure = _retry.classify(code, detail)
        return Failed(failure, code, detail, self.data_sent(failure))

    def stalled(self) -> Failed:
        return Failed(
            Failure.DEADLINE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"WriteStream made no progress for {self.idle_s:g} s",
            self.data_sent(Failure.DEADLINE),
        )


def first_chunk_timeout(timeout: float) -> Failed:
    return Failed(Failure.DEADLINE, grpc.StatusCode.DEADLINE_EXCEEDED, f"ReadStream sent nothing for {timeout:g} s")


def first_chunk_missing() -> ProtocolError:
    return ProtocolError(None, "ReadStream ended before its first chunk")


def is_miss(e: grpc.RpcError) -> bool:
    """Whether a ReadStream failed because the key is missing."""
    code, detail = e.code(), e.details() or ""
    return code == grpc.StatusCode.NOT_FOUND and _retry.classify(code, detail) is Failure.ANSWER


class StreamReading:
    """What :class:`~opticache.ValueStream` and
    :class:`~opticache.AsyncValueStream` share: the header, the count of bytes
    received, and the errors of a stream that breaks the contract or stalls."""

    version: int
    total_size: int
    address: str
    _idle_s: float
    _received: int
    _done: bool
    _pending: Optional[bytes]

    def _start(self, first: Any, idle_s: float, address: str) -> None:
        self.version = first.version
        self.total_size = first.total_size
        #: The coordinator that serves the stream.
        self.address = address
        self._idle_s = idle_s
        self._received = 0
        self._done = False
        self._pending = self._account(first.data)

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _account(self, data: bytes) -> bytes:
        self._received += len(data)
        if self._received > self.total_size:
            self.close()
            raise ProtocolError(None, f"ReadStream sent {self._received} bytes of a value of {self.total_size} bytes")
        return data

    def _take_pending(self) -> Optional[bytes]:
        """The chunk received but not handed out yet, if not empty."""
        data, self._pending = self._pending, None
        return data or None

    def _short(self) -> Optional[ProtocolError]:
        """At the end of the stream: the error if it was short."""
        if self._received != self.total_size:
            return ProtocolError(None, f"ReadStream ended after {self._received} of its {self.total_size} bytes")
        return None

    def _stall(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"ReadStream from {self.address} sent nothing for {self._idle_s:g} s",
        )


def value_in(buffer: bytearray, version: int, as_bytes: bool) -> Value:
    """A value read through a stream into ``buffer``."""
    return Value(bytes(buffer) if as_bytes else buffer, version)  # type: ignore[arg-type]


def partial_path(path: str) -> str:
    """A fresh name next to ``path`` for the file being downloaded."""
    return f"{path}.{os.getpid()}.{secrets.token_hex(4)}.part"


def discard(path: str) -> None:
    """Removes a partial download, if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass


def source_total(size: Optional[int], total_size: Optional[int]) -> Optional[int]:
    """A put_stream's total size: as given, else as found from its source."""
    return size if total_size is None else total_size


# --------------------------------------------------------------------------
# Arrays and parameter sets


class FlowSteps:
    """The calls of a :mod:`opticache.params` flow, in order: iterate it,
    set ``result`` (or ``error``) after each, and take ``value`` at the end."""

    def __init__(self, flow: Any) -> None:
        self._flow = flow
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.value: Any = None

    def __iter__(self) -> "FlowSteps":
        return self

    def __next__(self) -> Any:
        result, error = self.result, self.error
        self.result, self.error = None, None
        try:
            return self._flow.throw(error) if error is not None else self._flow.send(result)
        except StopIteration as stop:
            self.value = stop.value
            raise StopIteration from None
