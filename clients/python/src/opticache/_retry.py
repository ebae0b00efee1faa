"""When a failed attempt is tried again, where, after how long, and what the
caller is told when the client gives up. Pure functions, shared by
:class:`~opticache.Client` and :class:`~opticache.AsyncClient`; the rules are
those of the Rust client (``client/src/retry.rs``):

- A failure that says "this coordinator could not serve the call" (a connect
  error, UNAVAILABLE, a transport error mid-call, DEADLINE_EXCEEDED) moves the
  call to the next coordinator. Any other status is the cluster's answer and
  is raised as is: another coordinator would say the same.
- Whether the call is *repeated* depends on what a repeat could do:

  * reads (ReadCache, BatchRead, opening a ReadStream, ClusterStatus) change
    nothing: always repeated;
  * WriteCache, BatchWrite and DeleteCache are repeated too: each attempt
    gets a fresh, higher version and the store keeps the highest version per
    key, so a repeat of an attempt that was applied after all just supersedes
    it with the same value (a repeated delete may then report False);
  * UpdateCache is a compare-and-set: repeated only after a connect error,
    which proves the request never left this process (gRPC core's "failed
    to connect to all addresses"; a connection attempt that does not finish
    within ``connect_timeout_s`` ends that way too);
  * WriteStream consumes its source as it goes: repeated only if it failed
    before its first chunk was handed to gRPC.

- Each attempt runs under its own deadline (``timeout_s``) and the whole call
  under an overall one (``deadline_s``, by default all attempts and the pauses
  between them). Between attempts the client pauses 25 ms, doubling up to
  400 ms. The next call starts at the coordinator that answered last.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Sequence

import grpc

from .errors import DeadlineExceeded, Unavailable

#: Pause before the first retry, and the longest pause.
BACKOFF_INITIAL_S = 0.025
BACKOFF_MAX_S = 0.4


class CallKind(enum.Enum):
    """What a call may do to the cluster, which decides when it may be repeated."""

    IDEMPOTENT = "idempotent"
    COMPARE_AND_SET = "compare-and-set"
    STREAM = "stream"


class Failure(enum.Enum):
    """What a failed attempt says about the coordinator it went to."""

    CONNECT = "connect"  # the connection could not be made: nothing was sent
    UNAVAILABLE = "unavailable"  # UNAVAILABLE from the coordinator or the transport
    TRANSPORT = "transport"  # the connection broke during the call
    DEADLINE = "deadline"  # the attempt's deadline passed
    ANSWER = "answer"  # any other status: the cluster's answer

    @property
    def is_failover(self) -> bool:
        return self is not Failure.ANSWER


# gRPC core's words for "no connection could be made" (the request was never
# sent) and for a connection lost mid-call. The codes alone cannot tell a
# coordinator's own UNAVAILABLE from a refused connection.
# Only gRPC core's own picker messages count as "never sent": a coordinator's
# UNAVAILABLE may quote a node's connect error, and an update it answered so
# may have been applied on another replica.
_CONNECT_PHRASES = (
    "failed to connect to all addresses",
    "connections to all backends failing",
)
_TRANSPORT_PHRASES = (
    "stream removed",
    "rst_stream",
    "socket closed",
    "connection reset",
    "goaway",
    "broken pipe",
    "end of tcp stream",
)


def classify(code: grpc.StatusCode, details: Optional[str]) -> Failure:
    """Sorts a failed attempt by its status code and message."""
    text = (details or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(phrase in text for phrase in _CONNECT_PHRASES):
            return Failure.CONNECT
        return Failure.UNAVAILABLE
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure.DEADLINE
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and any(
        phrase in text for phrase in _TRANSPORT_PHRASES
    ):
        return Failure.TRANSPORT
    return Failure.ANSWER


def should_retry(kind: CallKind, failure: Failure, data_sent: bool) -> bool:
    """Whether a call of ``kind`` that failed with ``failure`` may be
    attempted again; ``data_sent``: a stream handed a chunk to gRPC."""
    if not failure.is_failover:
        return False
    if kind is CallKind.IDEMPOTENT:
        return True
    if kind is CallKind.COMPARE_AND_SET:
        return failure is Failure.CONNECT
    return not data_sent


def backoff(retry: int) -> float:
    """The pause in seconds before retry number ``retry`` (1: the second attempt)."""
    doublings = min(max(retry - 1, 0), 32)
    return min(BACKOFF_INITIAL_S * (1 << doublings), BACKOFF_MAX_S)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, each under which deadline, all under which one."""

    attempts: int
    attempt_timeout_s: float
    deadline_s: float

    @classmethod
    def make(cls, attempts: int, attempt_timeout_s: float, deadline_s: Optional[float] = None) -> "RetryPolicy":
        if not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"retries is the number of attempts in total, at least 1 (got {attempts!r})")
        if not attempt_timeout_s > 0:
            raise ValueError(f"timeout_s must be positive (got {attempt_timeout_s!r})")
        if deadline_s is None:
            deadline_s = attempt_timeout_s * attempts + sum(backoff(r) for r in range(1, attempts))
        elif not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive (got {deadline_s!r})")
        return cls(attempts, float(attempt_timeout_s), float(deadline_s))

    def attempt_timeout(self, now: float, call_deadline: float) -> Optional[float]:
        """Seconds the attempt starting at ``now`` may take, or None when the
        call's deadline has passed."""
        if now >= call_deadline:
            return None
        return min(self.attempt_timeout_s, call_deadline - now)

    def pause_before(self, retry: int, now: float, call_deadline: float) -> Optional[float]:
        """The pause before retry number ``retry``, or None when the attempts
        are used up or the pause would reach the call's deadline."""
        if retry >= self.attempts:
            return None
        pause = backoff(retry)
        return pause if now + pause < call_deadline else None


def coordinator_for(first: int, attempt: int, count: int) -> int:
    """Which coordinator attempt number ``attempt`` (0-based) goes to: the
    one that answered last first, then round the list."""
    return (first + attempt) % count


@dataclass(frozen=True)
class AttemptFailure:
    """One failed attempt, for the error raised when the client gives up."""

    address: str
    failure: Failure
    detail: str

    def __str__(self) -> str:
        return f"{self.address} ({self.detail})"


class Stop(enum.Enum):
    EXHAUSTED = "exhausted"
    DEADLINE = "deadline"
    UNSAFE = "unsafe"


def give_up(failures: Sequence[AttemptFailure], stop: Stop, kind: CallKind):
    """The error for a call whose attempts all failed over: DeadlineExceeded
    when every attempt ran out of time, Unavailable naming every coordinator
    tried (and why) otherwise."""
    if failures and all(f.failure is Failure.DEADLINE for f in failures):
        tried = ", ".join(str(f) for f in failures)
        return DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer in time; tried {tried}")
    why = ""
    if stop is Stop.DEADLINE:
        why = "; the call's deadline left no time for another attempt"
    elif stop is Stop.UNSAFE and kind is CallKind.COMPARE_AND_SET:
        why = "; not retried: the update may already have been applied"
    elif stop is Stop.UNSAFE and kind is CallKind.STREAM:
        why = "; not retried: data was already sent from a source that cannot be replayed"
    tried = ", ".join(str(f) for f in failures)
    return Unavailable(
        grpc.StatusCode.UNAVAILABLE,
        f"no coordinator could serve the call; tried {tried}{why}",
        attempts=[(f.address, f.detail) for f in failures],
    )
