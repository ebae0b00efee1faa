"""The pure parts: retry rules, argument conversion, batch planning, stream
chunking, error mapping. No network."""

from __future__ import annotations

import math

import grpc
import pytest

import opticache
from opticache import _common, _retry, errors
from opticache._common import STREAM_CHUNK_BYTES as CHUNK
from opticache._common import Rechunker, SizeMismatch, plan_batches
from opticache._retry import CallKind, Failure, RetryPolicy


def test_failures_are_sorted_like_the_rust_client():
    U = grpc.StatusCode.UNAVAILABLE
    connect = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    assert _retry.classify(U, connect) is Failure.CONNECT
    assert _retry.classify(U, "no live replica for the key") is Failure.UNAVAILABLE
    # A coordinator quoting a node's connect error is still its own answer.
    assert _retry.classify(U, "node 10.0.0.1:6001 (tcp connect error: Connection refused)") is Failure.UNAVAILABLE
    assert _retry.classify(U, "Socket closed") is Failure.UNAVAILABLE
    assert _retry.classify(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") is Failure.DEADLINE
    assert _retry.classify(grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2") is Failure.TRANSPORT
    assert _retry.classify(grpc.StatusCode.UNKNOWN, "Stream removed") is Failure.TRANSPORT
    for code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INTERNAL,
    ):
        assert _retry.classify(code, "why") is Failure.ANSWER, code


def test_which_calls_are_repeated_after_which_failures():
    failover = [Failure.CONNECT, Failure.UNAVAILABLE, Failure.TRANSPORT, Failure.DEADLINE]
    for failure in failover:
        assert _retry.should_retry(CallKind.IDEMPOTENT, failure, False)
        assert _retry.should_retry(CallKind.STREAM, failure, False)
        assert not _retry.should_retry(CallKind.STREAM, failure, True)
    assert _retry.should_retry(CallKind.COMPARE_AND_SET, Failure.CONNECT, False)
    for failure in failover[1:]:
        assert not _retry.should_retry(CallKind.COMPARE_AND_SET, failure, False)
    for kind in CallKind:
        assert not _retry.should_retry(kind, Failure.ANSWER, False)


def test_backoff_and_deadlines():
    assert [_retry.backoff(r) for r in range(1, 8)] == [0.025, 0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    p = RetryPolicy.make(3, 2.0)
    assert math.isclose(p.deadline_s, 6.075)
    assert p.attempt_timeout(10.0, 10.5) == 0.5  # never outlives the call
    assert p.attempt_timeout(10.5, 10.5) is None
    assert p.pause_before(1, 0.0, 10.0) == 0.025
    assert p.pause_before(3, 0.0, 10.0) is None  # three attempts, no fourth
    assert p.pause_before(2, 9.96, 10.0) is None  # no time left after the pause
    assert [_retry.coordinator_for(1, a, 2) for a in range(4)] == [1, 0, 1, 0]
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            RetryPolicy.make(bad, 1.0)


def test_giving_up_names_every_coordinator_and_why():
    f = [
        _retry.AttemptFailure("a:1", Failure.CONNECT, "Connection refused"),
        _retry.AttemptFailure("b:2", Failure.UNAVAILABLE, "no quorum"),
    ]
    err = _retry.give_up(f, _retry.Stop.EXHAUSTED, CallKind.IDEMPOTENT)
    assert isinstance(err, errors.Unavailable)
    assert err.message == "no coordinator could serve the call; tried a:1 (Connection refused), b:2 (no quorum)"
    assert err.attempts == [("a:1", "Connection refused"), ("b:2", "no quorum")]
    err = _retry.give_up(f[1:], _retry.Stop.UNSAFE, CallKind.COMPARE_AND_SET)
    assert err.message.endswith("not retried: the update may already have been applied")
    timeouts = [_retry.AttemptFailure("a:1", Failure.DEADLINE, "Deadline Exceeded")] * 2
    assert isinstance(_retry.give_up(timeouts, _retry.Stop.DEADLINE, CallKind.IDEMPOTENT), errors.DeadlineExceeded)


def test_every_status_table_code_has_its_exception():
    table = {
        grpc.StatusCode.INVALID_ARGUMENT: opticache.InvalidArgument,
        grpc.StatusCode.RESOURCE_EXHAUSTED: opticache.TooLarge,
        grpc.StatusCode.NOT_FOUND: opticache.NotFound,
        grpc.StatusCode.FAILED_PRECONDITION: opticache.VersionConflict,
        grpc.StatusCode.UNAVAILABLE: opticache.Unavailable,
        grpc.StatusCode.UNAUTHENTICATED: opticache.Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: opticache.PermissionDenied,
        grpc.StatusCode.DEADLINE_EXCEEDED: opticache.DeadlineExceeded,
    }
    for code, cls in table.items():
        err = errors.error_from_code(code, "why")
        assert type(err) is cls and isinstance(err, opticache.OptiCacheError)
        assert (err.code, err.message, str(err)) == (code, "why", f"{code.name}: why")
    other = errors.error_from_code(grpc.StatusCode.INTERNAL, "boom")
    assert type(other) is opticache.OptiCacheError and other.code == grpc.StatusCode.INTERNAL


def test_arguments():
    assert _common.to_key("clé") == "clé".encode()
    assert _common.to_key(b"\xff") == b"\xff"
    assert _common.to_value(bytearray(b"ab")) == b"ab"
    with pytest.raises(TypeError):
        _common.to_key(None)
    with pytest.raises(TypeError):
        _common.to_value(3)
    assert _common.ttl_ms(None) == 0
    assert _common.ttl_ms(0.0000001) == 1  # rounds up, never to "no TTL"
    assert _common.ttl_ms(1.5) == 1500
    assert _common.ttl_ms(_common.TTL_MS_MAX / 1000) == _common.TTL_MS_MAX
    for bad in (0, -2, float("inf"), _common.TTL_MS_MAX / 1000 + 1):
        with pytest.raises(opticache.InvalidArgument):
            _common.ttl_ms(bad)
    with pytest.raises(opticache.InvalidArgument):
        _common.check_namespace("\udc80")
    assert _common.coordinator_list("a:1, http://b:2") == ["a:1", "b:2"]
    for bad in ("", "nohost", "h:port", ":5"):
        with pytest.raises(ValueError):
            _common.coordinator_list(bad)
    with pytest.raises(ValueError, match="asks for TLS"):
        _common.coordinator_list("https://a:1")
    assert _common.coordinator_list("https://a:1", tls=True) == ["a:1"]


def test_batches_are_planned_within_both_limits():
    assert plan_batches([]) == []
    assert plan_batches([1] * 10, max_len=4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert plan_batches([3, 3, 3, 3], max_bytes=6) == [range(0, 2), range(2, 4)]
    # An entry over the byte limit on its own gets a batch of its own.
    assert plan_batches([1, 10, 1], max_bytes=5) == [range(0, 1), range(1, 2), range(2, 3)]
    sizes = [1000] * 10_000
    runs = plan_batches(sizes, max_len=4096, max_bytes=64 << 20)
    assert [len(r) for r in runs] == [4096, 4096, 1808]


def chunks_of(pieces, total):
    r = Rechunker(total)
    out = []
    for p in pieces:
        out += list(r.feed(p))
    out += list(r.finish())
    return out


def test_rechunking_makes_chunks_of_one_mib_adding_up_to_the_total():
    data = bytes(range(256)) * (CHUNK * 3 // 256) + b"tail"
    for piece_size in (1, 777, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK):
        if piece_size == 1 and len(data) > 100_000:
            pieces = [data[:100], data[100:]]
        else:
            pieces = [data[i : i + piece_size] for i in range(0, len(data), piece_size)]
        chunks = chunks_of(pieces, len(data))
        assert b"".join(chunks) == data
        assert all(0 < len(c) <= CHUNK for c in chunks)
        assert len(chunks) == 4
    assert chunks_of([], 0) == [b""], "an empty value is one empty chunk"
    assert chunks_of([memoryview(b"abc")], 3) == [b"abc"]


def test_rechunking_holds_back_the_last_chunk_until_the_source_ends():
    r = Rechunker(2 * CHUNK)
    out = list(r.feed(b"x" * 2 * CHUNK))
    assert len(out) == 1, "the chunk completing the total waits for the end of the source"
    with pytest.raises(SizeMismatch, match="longer"):
        list(r.feed(b"y"))
    r = Rechunker(10)
    list(r.feed(b"abc"))
    with pytest.raises(SizeMismatch, match="ended after 3 of its announced 10 bytes"):
        list(r.finish())


def test_the_public_names():
    for name in opticache.__all__:
        assert hasattr(opticache, name), name
    assert opticache.STREAM_CHUNK_BYTES == 1 << 20
    assert (opticache.BATCH_LEN_MAX, opticache.BATCH_BYTES_MAX) == (4096, 64 << 20)
