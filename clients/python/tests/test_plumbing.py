"""The client's own plumbing, against in-process fake coordinators (no
cluster): the token on every call, TLS (server name, mutual TLS), and which
failures move a call to the next coordinator and which calls are repeated."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from fake import MIB, FakeServer, closed_address

from opticache import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ProtocolError,
    TlsConfig,
    Unavailable,
    VersionConflict,
)
from opticache.v1 import opticache_pb2 as pb2


@pytest.fixture
def servers():
    started = []

    def start(name="fake", credentials=None):
        s = FakeServer(name, credentials)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def every_call(c: Client) -> None:
    """Calls every RPC once (put_stream with several chunks)."""
    v = c.put("k", b"v")
    c.get("k")
    c.update("k", b"w", expected_version=v)
    c.delete("k")
    c.put_many([("a", b"1"), ("b", b"2")])
    c.get_many(["a", "b"])
    c.put_stream("s", b"x" * (2 * MIB + 1))
    assert c.get_stream("s").read_all() == b"x" * (2 * MIB + 1)
    c.cluster_status()


async def every_call_async(c: AsyncClient) -> None:
    v = await c.put("k", b"v")
    await c.get("k")
    await c.update("k", b"w", expected_version=v)
    await c.delete("k")
    await c.put_many([("a", b"1"), ("b", b"2")])
    await c.get_many(["a", "b"])
    await c.put_stream("s", b"x" * (2 * MIB + 1))
    assert await (await c.get_stream("s")).read_all() == b"x" * (2 * MIB + 1)
    await c.cluster_status()


ALL_RPCS = {
    "WriteCache",
    "ReadCache",
    "UpdateCache",
    "DeleteCache",
    "BatchWrite",
    "BatchRead",
    "WriteStream",
    "ReadStream",
    "ClusterStatus",
}


# --------------------------------------------------------------------------
# The token


def test_the_token_is_sent_as_bearer_metadata_on_every_call(servers):
    s = servers()
    with Client([s.address], token="s3cret-t0ken") as c:
        every_call(c)
    assert {m for m, _ in s.fake.calls} == ALL_RPCS
    for method, metadata in s.fake.calls:
        assert metadata.get("authorization") == "Bearer s3cret-t0ken", method


def test_the_async_client_sends_the_token_on_every_call(servers):
    s = servers()

    async def main():
        async with AsyncClient([s.address], token="async-token") as c:
            await every_call_async(c)

    asyncio.run(main())
    assert {m for m, _ in s.fake.calls} == ALL_RPCS
    assert all(md.get("authorization") == "Bearer async-token" for _, md in s.fake.calls)


def test_without_a_token_no_authorization_is_sent(servers):
    s = servers()
    with Client([s.address]) as c:
        every_call(c)
    assert all("authorization" not in md for _, md in s.fake.calls)


def test_bad_tokens_are_refused_before_any_call():
    for bad in ("", "two\nlines", "tëst"):
        with pytest.raises(ValueError):
            Client(["127.0.0.1:1"], token=bad)


def test_the_cluster_answers_unauthenticated_and_permission_denied_as_typed_errors(servers):
    from opticache import PermissionDenied, Unauthenticated

    s = servers()
    s.fake.hooks["WriteCache"] = lambda r, ctx: ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "missing token")
    s.fake.hooks["ReadCache"] = lambda r, ctx: ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "read-only")
    with Client([s.address]) as c:
        with pytest.raises(Unauthenticated) as e:
            c.put("k", b"v")
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED and "missing token" in str(e.value)
        with pytest.raises(PermissionDenied):
            c.get("k")
    assert s.fake.count("WriteCache") == 1, "an answer is not retried"


# --------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for the names localhost and
    opticache.test (not for 127.0.0.1), a client certificate, and a second
    CA that signed nothing of this."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
            "-subj", f"/CN={ca}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=DNS:localhost,DNS:opticache.test\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        )  # fmt: skip
    return d


def tls_server(servers, certs: Path, mutual: bool = False) -> FakeServer:
    credentials = grpc.ssl_server_credentials(
        [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes() if mutual else None,
        require_client_auth=mutual,
    )
    return servers("tls", credentials)


def test_tls_with_a_ca_path_and_the_token(servers, certs):
    s = tls_server(servers, certs)
    # A path: TLS trusting that CA; the certificate names localhost.
    with Client([f"localhost:{s.port}"], tls=str(certs / "ca.pem"), token="t") as c:
        every_call(c)
    assert {m for m, _ in s.fake.calls} == ALL_RPCS
    assert all(md.get("authorization") == "Bearer t" for _, md in s.fake.calls)


def test_tls_server_name_overrides_the_name_checked(servers, certs):
    s = tls_server(servers, certs)
    # The certificate does not name 127.0.0.1, so verification fails...
    with Client([s.address], tls=str(certs / "ca.pem"), timeout_s=2.0, retries=1) as c:
        with pytest.raises(Unavailable):
            c.get("k")
    # ...unless the name to check is given.
    with Client([s.address], tls=TlsConfig(ca_cert=certs / "ca.pem", server_name="opticache.test")) as c:
        c.put("k", b"v")
        assert c.get("k") == b"v"


def test_tls_refuses_a_server_signed_by_another_ca(servers, certs):
    s = tls_server(servers, certs)
    tls = TlsConfig(ca_cert=certs / "other-ca.pem", server_name="opticache.test")
    with Client([s.address], tls=tls, timeout_s=2.0, retries=1) as c:
        with pytest.raises(Unavailable):
            c.get("k")
    assert s.fake.calls == []


def test_mutual_tls_sends_the_client_certificate(servers, certs):
    s = tls_server(servers, certs, mutual=True)
    server_only = TlsConfig(ca_cert=certs / "ca.pem", server_name="opticache.test")
    with Client([s.address], tls=server_only, timeout_s=2.0, retries=1) as c:
        with pytest.raises(Unavailable):
            c.get("k")
    mutual = TlsConfig(
        ca_cert=certs / "ca.pem",
        client_cert=certs / "client.pem",
        client_key=certs / "client.key",
        server_name="opticache.test",
    )
    with Client([s.address], tls=mutual, token="m") as c:
        c.put("k", b"v")
        assert c.get("k") == b"v"

    async def main():
        async with AsyncClient([s.address], tls=mutual, token="m") as c:
            await every_call_async(c)

    asyncio.run(main())
    assert all(md.get("authorization") == "Bearer m" for _, md in s.fake.calls)


def test_tls_configuration_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        Client(["127.0.0.1:1"], tls=TlsConfig(ca_cert=b"pem", client_cert=b"pem"))
    with pytest.raises(ValueError, match="cannot read the CA certificate"):
        Client(["127.0.0.1:1"], tls=str(tmp_path / "missing.pem"))
    with pytest.raises(TypeError):
        Client(["127.0.0.1:1"], tls=42)


# --------------------------------------------------------------------------
# Fail-over and retries


def unavailable(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "no live replica")


def test_a_dead_coordinator_is_skipped_and_the_next_call_starts_where_the_last_answer_came_from(servers):
    live = servers("live")
    dead = closed_address()
    with Client([dead, live.address], timeout_s=2.0) as c:
        assert c.preferred == dead
        c.put("k", b"v")
        assert c.preferred == live.address
        assert c.get("k") == b"v"
    assert live.fake.count("WriteCache") == 1 and live.fake.count("ReadCache") == 1


def test_unavailable_moves_an_idempotent_call_to_the_next_coordinator(servers):
    a, b = servers("a"), servers("b")
    a.fake.hooks["WriteCache"] = unavailable
    a.fake.hooks["ReadCache"] = unavailable
    with Client([a.address, b.address]) as c:
        c.put("k", b"v")
        assert c.preferred == b.address
        # The next call goes straight to b.
        assert c.get("k") == b"v"
    assert (a.fake.count("WriteCache"), b.fake.count("WriteCache")) == (1, 1)
    assert (a.fake.count("ReadCache"), b.fake.count("ReadCache")) == (0, 1)


def test_an_update_that_may_have_been_applied_is_not_repeated(servers):
    a, b = servers("a"), servers("b")
    a.fake.hooks["UpdateCache"] = unavailable
    with Client([a.address, b.address]) as c:
        with pytest.raises(Unavailable) as e:
            c.update("k", b"v")
    assert "not retried: the update may already have been applied" in str(e.value)
    assert (a.fake.count("UpdateCache"), b.fake.count("UpdateCache")) == (1, 0)


def test_an_update_moves_on_after_a_connect_failure(servers):
    b = servers("b")
    b.fake.store[("", b"k")] = (b"old", 5)
    with Client([closed_address(), b.address]) as c:
        assert c.update("k", b"new", expected_version=5) == 1
    assert b.fake.store[("", b"k")] == (b"new", 1)


def test_answers_are_raised_without_retrying(servers):
    a, b = servers("a"), servers("b")
    a.fake.store[("", b"k")] = (b"v", 9)
    a.fake.hooks["WriteCache"] = lambda r, ctx: ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty key")
    with Client([a.address, b.address]) as c:
        with pytest.raises(NotFound):
            c.update("missing", b"v")
        with pytest.raises(VersionConflict, match="stored version is 9"):
            c.update("k", b"w", expected_version=8)
        with pytest.raises(InvalidArgument, match="empty key"):
            c.put("", b"v")
        assert c.preferred == a.address
    assert b.fake.calls == []


def test_a_stream_is_not_repeated_once_data_was_sent(servers):
    a, b = servers("a"), servers("b")

    def two_chunks_then_unavailable(chunks, context):
        next(chunks)
        next(chunks)
        context.abort(grpc.StatusCode.UNAVAILABLE, "replica lost")

    a.fake.hooks["WriteStream"] = two_chunks_then_unavailable
    with Client([a.address, b.address]) as c:
        with pytest.raises(Unavailable) as e:
            c.put_stream("s", (b"y" * MIB for _ in range(8)), total_size=8 * MIB)
    assert "not retried: data was already sent" in str(e.value)
    assert b.fake.count("WriteStream") == 0


def test_a_stream_moves_on_when_the_first_coordinator_cannot_be_reached(servers):
    b = servers("b")
    data = bytes(range(256)) * (5 * 4096 + 3)  # 5 MiB + 768 bytes
    with Client([closed_address(), b.address]) as c:
        pieces = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
        assert c.put_stream("s", pieces, total_size=len(data)) == 1
    assert b.fake.received_streams == [data]


def test_the_async_client_follows_the_same_rules(servers):
    a, b = servers("a"), servers("b")
    a.fake.hooks["WriteCache"] = unavailable
    a.fake.hooks["UpdateCache"] = unavailable

    async def main():
        async with AsyncClient([a.address, b.address]) as c:
            await c.put("k", b"v")  # retried on b
            assert c.preferred == b.address
        async with AsyncClient([a.address, b.address]) as c:
            with pytest.raises(Unavailable, match="may already have been applied"):
                await c.update("k", b"w")
        async with AsyncClient([closed_address(), b.address]) as c:
            assert await c.update("k", b"w") > 0  # connect failure: moved on
            assert await c.get("k") == b"w"

    asyncio.run(main())
    assert a.fake.count("UpdateCache") == 1
    assert b.fake.count("UpdateCache") == 1


def test_deadlines_bound_each_attempt_and_the_whole_call(servers):
    a, b = servers("a"), servers("b")
    release = threading.Event()

    def hang(request, context):
        release.wait(10)
        return pb2.ReadResponse()

    for s in (a, b):
        s.fake.hooks["ReadCache"] = hang
        s.fake.hooks["UpdateCache"] = hang
    try:
        with Client([a.address, b.address], timeout_s=0.3, retries=3) as c:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                c.get("k")
            elapsed = time.monotonic() - started
            assert 0.9 <= elapsed < 3.0, elapsed  # three attempts of 0.3 s and two pauses
            # An update that timed out may have been applied: not repeated.
            with pytest.raises(DeadlineExceeded):
                c.update("k", b"v")
        with Client([a.address, b.address], timeout_s=0.3, retries=5, deadline_s=0.5) as c:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                c.get("k")
            # Five attempts would take 2.3 s; the overall deadline cuts it at 0.5 s.
            assert time.monotonic() - started < 1.5
    finally:
        release.set()
    assert a.fake.count("ReadCache") + b.fake.count("ReadCache") == 3 + 2
    assert a.fake.count("UpdateCache") + b.fake.count("UpdateCache") == 1


def test_a_read_stream_that_stalls_fails_with_deadline_exceeded(servers):
    s = servers()
    release = threading.Event()

    def first_chunk_then_stall(request, context):
        yield pb2.ReadChunk(version=1, total_size=3 * MIB, data=b"a" * MIB)
        release.wait(10)
        yield pb2.ReadChunk(data=b"b" * MIB)

    s.fake.hooks["ReadStream"] = first_chunk_then_stall
    try:
        with Client([s.address], timeout_s=0.5) as c:
            stream = c.get_stream("k")
            assert (stream.version, stream.total_size) == (1, 3 * MIB)
            assert next(stream) == b"a" * MIB
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                next(stream)
            assert time.monotonic() - started < 3
    finally:
        release.set()


def test_contract_violations_are_protocol_errors(servers):
    s = servers()
    s.fake.hooks["BatchRead"] = lambda r, ctx: pb2.BatchReadResponse(results=[pb2.ReadResponse()])

    def too_long(request, context):
        yield pb2.ReadChunk(version=1, total_size=4, data=b"abc")
        yield pb2.ReadChunk(data=b"de")

    def too_short(request, context):
        yield pb2.ReadChunk(version=1, total_size=4, data=b"abc")

    with Client([s.address]) as c:
        with pytest.raises(ProtocolError, match="returned 1 results"):
            c.get_many(["a", "b"])
        s.fake.hooks["ReadStream"] = too_long
        with pytest.raises(ProtocolError):
            c.get_stream("k").read_all()
        s.fake.hooks["ReadStream"] = too_short
        with pytest.raises(ProtocolError, match="ended after 3 of its 4 bytes"):
            c.get_stream("k").read_all()


def test_cluster_status_is_typed(servers):
    s = servers()
    with Client([s.address]) as c:
        status = c.cluster_status()
    assert (status.role, status.epoch, status.address) == ("PRIMARY", 3, s.address)
    node = status.nodes[0]
    assert (node.address, node.state, node.shards, node.keys, node.disk_bytes) == ("10.0.0.1:6001", "UP", 2, 5, 4096)
