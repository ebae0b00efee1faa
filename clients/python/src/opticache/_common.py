"""What the blocking and the asyncio clients share: limits, argument
conversion, TLS and channel settings, batch planning, cutting a value into
stream chunks, and the result types. No I/O here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import (
    Any,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import grpc

from .errors import InvalidArgument

# --------------------------------------------------------------------------
# Limits

#: Largest ``data`` of one WriteChunk: the contract caps chunks at 1 MiB. Also
#: the read size when a file is streamed, so memory per upload is one chunk.
STREAM_CHUNK_BYTES = 1 << 20

#: Entries (keys) one BatchWrite/BatchRead takes at most: the coordinator's
#: and nodes' limit (``coordinator/src/service.rs``, BATCH_LEN_MAX).
BATCH_LEN_MAX = 4096

#: Key and value bytes one batch carries at most (BATCH_BYTES_MAX there).
#: For BatchRead the coordinator applies it to the values it reads back.
BATCH_BYTES_MAX = 64 << 20

#: Largest gRPC message sent or accepted: the largest max_value_bytes a
#: cluster may be configured with (256 MiB) plus room for the envelope.
#: Beyond that, values must be streamed.
MESSAGE_BYTES_MAX = (256 << 20) + (2 << 20)

#: Longest TTL accepted (ten years); beyond that "never expires" is meant.
TTL_MS_MAX = 10 * 365 * 24 * 60 * 60 * 1000

#: The local cluster of ``config/config.yaml``.
DEFAULT_COORDINATORS = ("127.0.0.1:50051", "127.0.0.1:50052")

#: Per-attempt deadline, attempts, and connect deadline by default.
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 3
DEFAULT_CONNECT_TIMEOUT_S = 1.0

KeyLike = Union[bytes, bytearray, memoryview, str]
ValueLike = Union[bytes, bytearray, memoryview, str]

# --------------------------------------------------------------------------
# Results


class Value(NamedTuple):
    """A stored value and the version the cluster gave the write that stored it."""

    value: bytes
    version: int


@dataclass(frozen=True)
class StreamInfo:
    """What :meth:`Client.get_stream` with a ``dest`` wrote."""

    version: int
    total_size: int


@dataclass(frozen=True)
class NodeStatus:
    address: str
    state: str  # "UP", "SUSPECT", "DOWN", "RECOVERING" or "NODE_STATE_UNSPECIFIED"
    shards: int
    keys: int
    disk_bytes: int


@dataclass(frozen=True)
class ClusterStatus:
    """One coordinator's view of the cluster."""

    role: str  # "PRIMARY", "STANDBY" or "ROLE_UNSPECIFIED"
    epoch: int
    nodes: List[NodeStatus] = field(default_factory=list)
    #: The coordinator that answered.
    address: str = ""


def cluster_status_from(pb2: Any, response: Any, address: str) -> ClusterStatus:
    return ClusterStatus(
        role=pb2.Role.Name(response.role),
        epoch=response.epoch,
        nodes=[
            NodeStatus(
                address=n.address,
                state=pb2.NodeState.Name(n.state),
                shards=n.shards,
                keys=n.keys,
                disk_bytes=n.disk_bytes,
            )
            for n in response.nodes
        ],
        address=address,
    )


# --------------------------------------------------------------------------
# Arguments


def to_key(key: KeyLike) -> bytes:
    """A key as bytes: str is encoded as UTF-8."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a key is bytes or str, not {type(key).__name__}")


def to_value(value: ValueLike) -> bytes:
    """A value as bytes (protobuf takes nothing else): str is encoded as UTF-8."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"a value is bytes-like or str, not {type(value).__name__}")


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"a namespace is a str, not {type(namespace).__name__}")
    try:
        namespace.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, f"namespace is not valid UTF-8: {e}") from None
    return namespace


def ttl_ms(ttl_s: Optional[float]) -> int:
    """The wire form of a TTL: 0 for none; fractions of a millisecond round
    up, since rounding down to 0 would turn "expire soon" into "never"."""
    if ttl_s is None:
        return 0
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)):
        raise TypeError(f"ttl_s is a number of seconds or None, not {type(ttl_s).__name__}")
    if not ttl_s > 0:
        raise InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a TTL of {ttl_s} s expires at once; pass ttl_s=None to never expire",
        )
    ms = math.ceil(ttl_s * 1000) if math.isfinite(ttl_s) else math.inf
    if ms > TTL_MS_MAX:
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, f"TTL of {ttl_s} s is over the limit of ten years")
    return int(ms)


def expected_version(version: Optional[int]) -> int:
    if version is None:
        return 0
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise TypeError(f"expected_version is a non-negative int or None, not {version!r}")
    return version


def coordinator_list(coordinators: Union[str, Sequence[str]], tls: bool = False) -> List[str]:
    """``host:port`` addresses; a str may hold several, comma-separated. An
    ``https://`` address without TLS configured is refused rather than
    silently spoken to in plaintext."""
    if isinstance(coordinators, str):
        coordinators = [a for a in coordinators.split(",")]
    addresses = []
    for address in coordinators:
        if not isinstance(address, str):
            raise TypeError(f"a coordinator address is a str 'host:port', not {type(address).__name__}")
        address = address.strip()
        if address.startswith("https://") and not tls:
            raise ValueError(f"coordinator address {address!r} asks for TLS: pass tls= (a CA path or a TlsConfig)")
        for scheme in ("http://", "https://"):
            if address.startswith(scheme):
                address = address[len(scheme) :]
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"coordinator address {address!r} is not host:port")
        addresses.append(address)
    if not addresses:
        raise ValueError("no coordinator address given")
    return addresses


def auth_metadata(token: Optional[str]) -> Optional[Tuple[Tuple[str, str], ...]]:
    """The metadata every call carries: ``authorization: Bearer <token>``."""
    if token is None:
        return None
    if not isinstance(token, str) or not token:
        raise ValueError("token must be a non-empty str")
    if not all(0x20 <= ord(c) < 0x7F for c in token):
        raise ValueError("token must be printable ASCII (it travels in an HTTP/2 header)")
    return (("authorization", f"Bearer {token}"),)


# --------------------------------------------------------------------------
# TLS and channels


PathOrPem = Union[str, "os.PathLike[str]", bytes]


def _read_pem(what: str, source: PathOrPem) -> bytes:
    if isinstance(source, bytes):
        return source  # PEM content given directly
    try:
        with open(source, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {os.fspath(source)!r}: {e.strerror or e}") from e


@dataclass(frozen=True)
class TlsConfig:
    """TLS towards the coordinators.

    Args:
        ca_cert: path of the PEM file of the CA that signed the coordinators'
            certificates (or the PEM bytes); None trusts the system's roots.
        client_cert, client_key: paths (or PEM bytes) of this client's
            certificate chain and private key, for mutual TLS; both or neither.
        server_name: the name to verify the coordinators' certificates
            against (and to send as SNI and authority) instead of the host of
            the address, e.g. when connecting by IP address.
    """

    ca_cert: Optional[PathOrPem] = None
    client_cert: Optional[PathOrPem] = None
    client_key: Optional[PathOrPem] = None
    server_name: Optional[str] = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("TlsConfig: client_cert and client_key go together (mutual TLS needs both)")
        root = _read_pem("CA certificate", self.ca_cert) if self.ca_cert is not None else None
        key = _read_pem("client key", self.client_key) if self.client_key is not None else None
        chain = _read_pem("client certificate", self.client_cert) if self.client_cert is not None else None
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)

    def channel_options(self) -> List[Tuple[str, Any]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


TlsLike = Union[None, bool, str, "os.PathLike[str]", TlsConfig]


def tls_config(tls: TlsLike) -> Optional[TlsConfig]:
    """None: plaintext. A path: TLS trusting that CA. True: TLS trusting the
    system's roots. A TlsConfig: as given."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return TlsConfig()
    if isinstance(tls, TlsConfig):
        return tls
    if isinstance(tls, (str, os.PathLike)):
        return TlsConfig(ca_cert=tls)
    raise TypeError(f"tls is None, a CA certificate path or a TlsConfig, not {type(tls).__name__}")


def channel_options(tls: Optional[TlsConfig], connect_timeout_s: float) -> List[Tuple[str, Any]]:
    connect_ms = max(int(connect_timeout_s * 1000), 1)
    options: List[Tuple[str, Any]] = [
        ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
        ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        # gRPC core uses the minimum reconnect backoff as the deadline of a
        # connection attempt (TCP and HTTP/2 handshake): a coordinator that
        # does not complete one in time fails the call with UNAVAILABLE
        # "failed to connect to all addresses", which proves nothing was
        # sent, so even an update may move to the next coordinator.
        ("grpc.min_reconnect_backoff_ms", connect_ms),
        ("grpc.initial_reconnect_backoff_ms", min(100, connect_ms)),
        # gRPC's default backoff grows to 2 minutes: a coordinator that was
        # down that long would be skipped long after it came back.
        ("grpc.max_reconnect_backoff_ms", max(1000, connect_ms)),
    ]
    if tls is not None:
        options += tls.channel_options()
    return options


# --------------------------------------------------------------------------
# Batches


def plan_batches(sizes: Sequence[int], max_len: int = BATCH_LEN_MAX, max_bytes: int = BATCH_BYTES_MAX) -> List[range]:
    """Cuts entries of the given sizes into consecutive runs of at most
    ``max_len`` entries and ``max_bytes`` bytes each. An entry larger than
    ``max_bytes`` on its own gets a run of its own (the cluster then says
    whether it fits)."""
    runs: List[range] = []
    start = 0
    total = 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_len or total + size > max_bytes):
            runs.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        runs.append(range(start, len(sizes)))
    return runs


def batch_items(items: Union[Mapping[Any, Any], Iterable[Tuple[Any, Any]]]) -> List[Tuple[bytes, bytes]]:
    pairs = items.items() if isinstance(items, Mapping) else items
    out = []
    for pair in pairs:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError("put_many takes a mapping or (key, value) pairs") from None
        out.append((to_key(key), to_value(value)))
    return out


# --------------------------------------------------------------------------
# Stream chunks


class SizeMismatch(InvalidArgument):
    """A streamed value's source was shorter or longer than its total_size.
    Nothing was stored: the stream was ended short on purpose."""


class Rechunker:
    """Turns pieces of any size into the chunks of one WriteStream: at most
    :data:`STREAM_CHUNK_BYTES` each, adding up to exactly ``total`` bytes.

    Memory stays one chunk plus the piece being fed. The chunk that completes
    the total is held back until :meth:`finish` has seen the source end, so
    that a source longer than announced never sends a complete value (the
    stream is ended short instead and the coordinator stores nothing)."""

    def __init__(self, total: int) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise TypeError(f"total_size is a non-negative int, not {total!r}")
        self.total = total
        self.seen = 0  # bytes fed so far
        self.sent = 0  # bytes handed out as chunks
        self.chunks = 0
        self._buf = bytearray()

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        self.sent += n
        self.chunks += 1
        return chunk

    def feed(self, piece: Any) -> Iterator[bytes]:
        """Accepts a bytes-like piece; yields every chunk it completes."""
        view = memoryview(piece)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        n = len(view)
        if self.seen + n > self.total:
            raise SizeMismatch(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the value is longer than its announced total_size of {self.total} bytes; nothing was stored",
            )
        self.seen += n
        pos = 0
        while pos < n:
            # A whole chunk straight from the piece, when nothing is buffered
            # and it is not the last one.
            if not self._buf and n - pos >= STREAM_CHUNK_BYTES and self.sent + STREAM_CHUNK_BYTES < self.total:
                whole = isinstance(piece, bytes) and pos == 0 and n == STREAM_CHUNK_BYTES
                chunk = piece if whole else bytes(view[pos : pos + STREAM_CHUNK_BYTES])
                pos += STREAM_CHUNK_BYTES
                self.sent += STREAM_CHUNK_BYTES
                self.chunks += 1
                yield chunk
                continue
            take = min(STREAM_CHUNK_BYTES - len(self._buf), n - pos)
            self._buf += view[pos : pos + take]
            pos += take
            if len(self._buf) == STREAM_CHUNK_BYTES and self.sent + STREAM_CHUNK_BYTES < self.total:
                yield self._take(STREAM_CHUNK_BYTES)

    def finish(self) -> Iterator[bytes]:
        """The source ended: yields what is left, or raises SizeMismatch."""
        if self.seen < self.total:
            raise SizeMismatch(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the value ended after {self.seen} of its announced {self.total} bytes; nothing was stored",
            )
        while self._buf:
            yield self._take(min(len(self._buf), STREAM_CHUNK_BYTES))
        if self.chunks == 0:
            # An empty value still takes one (empty) chunk: it carries the key.
            self.chunks = 1
            yield b""


def is_path(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def is_bytes_like(source: Any) -> bool:
    return isinstance(source, (bytes, bytearray, memoryview))


def file_size_left(f: Any) -> Optional[int]:
    """Bytes from the current position to the end of a regular file, or None."""
    try:
        st = os.fstat(f.fileno())
        import stat

        if not stat.S_ISREG(st.st_mode):
            return None
        return max(st.st_size - f.tell(), 0)
    except (AttributeError, OSError, ValueError, TypeError):
        pass
    try:
        if f.seekable():
            here = f.tell()
            end = f.seek(0, os.SEEK_END)
            f.seek(here)
            return end - here
    except (AttributeError, OSError, ValueError):
        pass
    return None


def read_pieces(f: Any) -> Iterator[bytes]:
    """Reads a binary file object in pieces of one chunk."""
    while True:
        piece = f.read(STREAM_CHUNK_BYTES)
        if piece is None:  # non-blocking raw file with nothing to read yet
            raise ValueError("put_stream needs a blocking file object")
        if not piece:
            return
        if isinstance(piece, str):
            raise TypeError("put_stream needs a binary file object (opened with 'rb'), not a text one")
        yield piece


def spool(pieces: Iterable[Any]) -> Tuple[Any, int]:
    """Copies an iterable of unknown total size to a temporary file (memory
    stays one piece); the file, rewound, and its size."""
    import tempfile

    f = tempfile.TemporaryFile()
    size = 0
    try:
        for piece in pieces:
            view = memoryview(piece)
            f.write(view)
            size += view.nbytes
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f, size
