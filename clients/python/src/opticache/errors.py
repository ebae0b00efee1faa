"""Typed errors: one class per row of the API's status table.

Every error a client call raises is an :class:`OptiCacheError`. Errors that
come from the cluster keep their gRPC code in ``code``; errors the client
finds on its own (a coordinator that breaks the contract) have ``code=None``.
Invalid arguments the client refuses before sending (a TTL of zero, a value
of the wrong type) are :class:`InvalidArgument` with the INVALID_ARGUMENT
code, as the cluster would have answered, or ``TypeError`` for wrong types.
"""

from __future__ import annotations

from typing import Optional, Sequence

import grpc

__all__ = [
    "OptiCacheError",
    "NotFound",
    "VersionConflict",
    "Unavailable",
    "InvalidArgument",
    "TooLarge",
    "Unauthenticated",
    "PermissionDenied",
    "DeadlineExceeded",
    "ProtocolError",
    "error_from_code",
]


class OptiCacheError(Exception):
    """Base class of every error raised by the client.

    Attributes:
        code: the ``grpc.StatusCode`` of the answer, or ``None`` for an error
            the client found itself.
        message: the explanation (the coordinator's status message when it
            came from the cluster).
    """

    #: The status code this class stands for (None: any or none).
    CODE: Optional[grpc.StatusCode] = None

    def __init__(self, code: Optional[grpc.StatusCode], message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else type(self).__name__
        return f"{name}: {self.message}" if self.message else name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class NotFound(OptiCacheError):
    """NOT_FOUND: UpdateCache on a missing key (point reads return None)."""

    CODE = grpc.StatusCode.NOT_FOUND


class VersionConflict(OptiCacheError):
    """FAILED_PRECONDITION: UpdateCache whose expected_version is stale."""

    CODE = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(OptiCacheError):
    """UNAVAILABLE: no live replica for the key, or no coordinator could be
    reached (the message names every coordinator tried and why it failed;
    ``attempts`` lists them)."""

    CODE = grpc.StatusCode.UNAVAILABLE

    def __init__(
        self,
        code: Optional[grpc.StatusCode],
        message: str = "",
        attempts: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(code, message)
        #: (coordinator address, what went wrong there) for every attempt.
        self.attempts = list(attempts)


class InvalidArgument(OptiCacheError):
    """INVALID_ARGUMENT: empty key, key over 1024 bytes, namespace over 255
    bytes, a stream that ended before its total size, a bad TTL, ..."""

    CODE = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(OptiCacheError):
    """RESOURCE_EXHAUSTED: value over max_value_bytes, batch over its limit,
    stream over its total_size, or a node's disk (budget) full."""

    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(OptiCacheError):
    """UNAUTHENTICATED: missing or wrong auth token."""

    CODE = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(OptiCacheError):
    """PERMISSION_DENIED: the token is valid but may not do this."""

    CODE = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceeded(OptiCacheError):
    """DEADLINE_EXCEEDED: from the coordinator, or the client's own
    per-attempt, overall or stream-stall deadline passed."""

    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class ProtocolError(OptiCacheError):
    """A coordinator answered in a way the contract forbids (a batch with the
    wrong number of results, a stream longer or shorter than its size). The
    outcome of the call is unknown."""

    CODE = None


_BY_CODE = {
    cls.CODE: cls
    for cls in (
        NotFound,
        VersionConflict,
        Unavailable,
        InvalidArgument,
        TooLarge,
        Unauthenticated,
        PermissionDenied,
        DeadlineExceeded,
    )
}


def error_from_code(code: grpc.StatusCode, message: str) -> OptiCacheError:
    """The typed error for a status; other codes give a plain OptiCacheError."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return OptiCacheError(code, message)
    return cls(code, message)
