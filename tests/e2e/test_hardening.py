"""Hostile clients end to end (issue #10, items 1-3): malformed HTTP, slow and idle clients,
connection limits, and TLS garbage.

Each malformed request is written by hand on a real TLS connection to the demo gateway in front
of the stub backend, followed by a well-formed request on the same connection: the gateway must
answer the first with its own page and ``Connection: close``, close the connection, and forward
nothing (the stub's recorder stays empty). What the real gateway (nginx) does is the reference;
where the emulator is stricter, the test says so.
"""

from __future__ import annotations

import datetime
import http.client
import logging
import socket
import ssl
import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import Final

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.core.http.pages import GatewayPage
from emulator.core.limits import ProxyLimits
from tests.helpers.http import (
    OTHER_LOOPBACK,
    RAW_SOCKET_TIMEOUT_S,
    assert_gateway_page,
    client_context,
    client_hello,
    https_request,
    parse_responses,
    raw_tls_socket,
    read_to_eof,
    tcp_exchange,
    tls_exchange,
)
from tests.helpers.logs import logged
from tests.helpers.pki import PkiBundle
from tests.helpers.resources import raise_fd_limit, wait_until
from tests.helpers.stack import SHORT_LINGER, Stack, start_demo, wait_for_access_records

#: Appended after every malformed request: it must never reach the backend.
FOLLOW_UP = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
#: The gateway's own limits (the tests go one past them).
LIMITS: Final = ProxyLimits()


pytestmark = pytest.mark.usefixtures("no_internal_errors")


@pytest.fixture
async def demo_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    """The demo gateway with a short lingering close: these clients send everything at once."""
    return await start_demo(nursery, pki, tmp_path, limits=SHORT_LINGER)


def post(headers: bytes, body: bytes = b"hello") -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n" + body


#: Malformed requests and the page each one gets. Every one of them would let a front end and
#: a back end disagree on where the request ends, or on its headers.
MALFORMED: dict[str, tuple[bytes, GatewayPage]] = {
    # Two Content-Length lines, even equal ones: nginx refuses "duplicate header line".
    "duplicate-content-length": (
        post(b"Content-Length: 5\r\nContent-Length: 5\r\n"),
        GatewayPage.BAD_REQUEST,
    ),
    "conflicting-content-length": (
        post(b"Content-Length: 5\r\nContent-Length: 6\r\n"),
        GatewayPage.BAD_REQUEST,
    ),
    "content-length-list": (post(b"Content-Length: 5, 5\r\n"), GatewayPage.BAD_REQUEST),
    "content-length-plus": (post(b"Content-Length: +5\r\n"), GatewayPage.BAD_REQUEST),
    "content-length-negative": (post(b"Content-Length: -5\r\n"), GatewayPage.BAD_REQUEST),
    "content-length-hex": (post(b"Content-Length: 0x5\r\n"), GatewayPage.BAD_REQUEST),
    "content-length-text": (post(b"Content-Length: five\r\n"), GatewayPage.BAD_REQUEST),
    "content-length-and-chunked": (
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        GatewayPage.BAD_REQUEST,
    ),
    # nginx answers a transfer coding it does not know with 501 (issue 16: the codec's status
    # reaches the client; it was a 400 before).
    "unknown-transfer-coding": (
        post(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        GatewayPage.NOT_IMPLEMENTED,
    ),
    "transfer-coding-gzip": (
        post(b"Transfer-Encoding: gzip\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        GatewayPage.NOT_IMPLEMENTED,
    ),
    "transfer-coding-gzip-then-chunked": (
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        GatewayPage.NOT_IMPLEMENTED,
    ),
    # nginx: Transfer-Encoding is a unique header line; a second one is a 400.
    "duplicate-transfer-encoding": (
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        GatewayPage.BAD_REQUEST,
    ),
    # obs-fold (RFC 9112 section 5.2): a continuation line could hide a header from one parser.
    "obsolete-line-folding": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Note: a\r\n X-Client-Cert: forged\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "obsolete-line-folding-tab": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Note: a\r\n\tb\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    # Bare LF line ends (nginx tolerates them; the emulator refuses: a back end that only
    # splits on CRLF would read two lines as one).
    "bare-lf-everywhere": (b"GET / HTTP/1.1\nHost: localhost\n\n", GatewayPage.BAD_REQUEST),
    "bare-lf-one-line": (
        b"GET / HTTP/1.1\r\nHost: localhost\nX-Client-Cert: forged\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "space-before-colon": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length : 5\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "nul-in-header": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "two-hosts": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "too-many-header-fields": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(LIMITS.max_request_header_fields + 1))
        + b"\r\n",
        GatewayPage.HEADER_OR_COOKIE_TOO_LARGE,
    ),
    # Azure's 32 KB URL limit: a longer request line is nginx's 414.
    "request-line-over-32k": (
        b"GET /" + b"a" * (33 * 1024) + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        GatewayPage.URI_TOO_LARGE,
    ),
    "endless-request-line": (b"GET /" + b"a" * (40 * 1024), GatewayPage.URI_TOO_LARGE),
    # http-response-codes, the 400 table (issue 21, item 5), with its examples.
    "duplicate-authorization": (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YTpi\r\n"
        b"Authorization: Basic YzpK\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "method-GET123": (
        b"GET123 /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "lower-case-method": (b"get / HTTP/1.1\r\nHost: localhost\r\n\r\n", GatewayPage.BAD_REQUEST),
    "post-without-length": (
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "http-0.3": (b"GET /content.css HTTP/0.3\r\nHost: localhost\r\n\r\n", GatewayPage.BAD_REQUEST),
    "non-ascii-request-line": (
        "GET /«úü¡»¿.doc HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(),
        GatewayPage.BAD_REQUEST,
    ),
    "content-length-abc": (
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
    "content-length-minus-10": (
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -10\r\n\r\n",
        GatewayPage.BAD_REQUEST,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
async def test_malformed_request_is_refused_and_nothing_after_it_is_forwarded(
    demo_stack: Stack, pki: PkiBundle, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    request, page = MALFORMED[case]
    data = await trio.to_thread.run_sync(
        tls_exchange,
        demo_stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        request + FOLLOW_UP,
    )
    (reply,) = parse_responses(data)  # one answer, then the connection was closed
    assert_gateway_page(reply, page)
    assert reply.header("Connection") == "close"
    assert demo_stack.recorded == []
    assert logged(caplog, "http.bad_request")


async def test_malformed_request_after_a_good_one_stops_the_connection_there(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    good = b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n"
    bad = b"GET /second HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n folded\r\n\r\n"
    data = await trio.to_thread.run_sync(
        tls_exchange,
        demo_stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        good + bad + FOLLOW_UP,
    )
    replies = parse_responses(data)
    assert [r.status for r in replies] == [200, 400]
    assert [r.path for r in demo_stack.recorded] == ["/first"]


async def test_header_fields_up_to_the_limit_pass(demo_stack: Stack, pki: PkiBundle) -> None:
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(LIMITS.max_request_header_fields - 2))
    request = b"GET /many HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + fields + b"\r\n"
    data = await trio.to_thread.run_sync(
        tls_exchange, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), request
    )
    (reply,) = parse_responses(data)
    assert reply.status == 200
    assert demo_stack.recorded[-1].header_values("X-7") == ("1",)


# -- slow and idle clients --------------------------------------------------------------------


async def test_transfer_encoding_gzip_is_nginxs_501_with_a_501_access_record(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    # nginx (ngx_http_process_request_header): a coding other than "chunked" is
    # NGX_HTTP_NOT_IMPLEMENTED, its own page; the gateway closes and forwards nothing.
    request = post(b"Transfer-Encoding: gzip\r\n", b"5\r\nhello\r\n0\r\n\r\n")
    data = await trio.to_thread.run_sync(
        tls_exchange, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), request
    )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.NOT_IMPLEMENTED)
    assert reply.body == (
        b"<html>\r\n<head><title>501 Not Implemented</title></head>\r\n<body>\r\n"
        b"<center><h1>501 Not Implemented</h1></center>\r\n"
        b"<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
    )
    assert demo_stack.recorded == []
    await wait_for_access_records(demo_stack.gateway)
    record = demo_stack.gateway.access_log[-1]
    assert (record.httpStatus, record.httpMethod, record.serverRouted) == (501, "POST", "")


def _one_request_then_idle(port: int, ctx: ssl.SSLContext) -> tuple[int, bytes, float]:
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = http.client.HTTPResponse(tls)
        response.begin()
        response.read()
        started = time.monotonic()
        rest = read_to_eof(tls)
        return response.status, rest, time.monotonic() - started


async def test_idle_keep_alive_connection_is_closed_silently(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_demo(
        nursery, pki, tmp_path, limits=replace(SHORT_LINGER, keepalive_idle_s=0.3)
    )
    status, rest, idle = await trio.to_thread.run_sync(
        _one_request_then_idle, stack.port(PASSTHROUGH_LISTENER), client_context(pki)
    )
    assert status == 200
    assert rest == b""  # no 408 between requests: nginx closes an idle keep-alive silently
    assert 0.2 < idle < 2.0


def _hold_tcp(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S, source_address=(source, 0)
        )
        socks.append(sock)
    return socks


def _closed_at_once(port: int) -> bool:
    """True when the gateway closes a new connection without a word."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S) as sock:
        sock.sendall(client_hello())
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


def _get_from(port: int, ctx: ssl.SSLContext, source: str) -> int:
    conn = http.client.HTTPSConnection(
        "localhost", port, context=ctx, timeout=RAW_SOCKET_TIMEOUT_S, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def _wait_open(stack: Stack, count: int) -> None:
    await wait_until(lambda: stack.gateway.open_connections == count)


async def test_per_client_connection_limit_refuses_the_extra_connection_and_logs_it(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start_demo(
        nursery, pki, tmp_path, max_connections_per_client=3, limits=SHORT_LINGER
    )
    port = stack.port(PASSTHROUGH_LISTENER)
    held = await trio.to_thread.run_sync(_hold_tcp, port, 3)
    try:
        await _wait_open(stack, 3)
        assert await trio.to_thread.run_sync(_closed_at_once, port)
        (line,) = logged(caplog, "connection.limit_reached")
        assert "scope=client limit=3 open=3" in line
        # Another address is not affected by what 127.0.0.1 holds.
        status = await trio.to_thread.run_sync(_get_from, port, client_context(pki), OTHER_LOOPBACK)
        assert status == 200
    finally:
        for sock in held:
            sock.close()
    await _wait_open(stack, 0)
    assert (await https_request(port, client_context(pki))).status == 200


async def test_gateway_connection_limit_counts_every_client(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start_demo(nursery, pki, tmp_path, max_connections=2, limits=SHORT_LINGER)
    port = stack.port(STRICT_LISTENER)
    held = await trio.to_thread.run_sync(_hold_tcp, port, 1)
    held += await trio.to_thread.run_sync(_hold_tcp, port, 1, OTHER_LOOPBACK)
    try:
        await _wait_open(stack, 2)
        assert await trio.to_thread.run_sync(_closed_at_once, port)
        (line,) = logged(caplog, "connection.limit_reached")
        assert "scope=gateway limit=2 open=2" in line
    finally:
        for sock in held:
            sock.close()
    await _wait_open(stack, 0)
    assert (await https_request(port, client_context(pki, pki.client))).status == 200


#: The slow-loris test: connections held open by dribbling bytes, most of them inside the TLS
#: handshake (cheap for the test), some inside the request head (after a real handshake).
LORIS_CONNECTIONS = 1000
LORIS_IN_HEADERS = 100
#: Per-address limit for the test: lower than LORIS_CONNECTIONS, so it is exercised.
LORIS_PER_CLIENT_LIMIT = 900
LORIS_SECONDS = 4.0
LORIS_BYTE_EVERY_S = 1.0
NORMAL_CLIENT_EVERY_S = 0.25
NORMAL_CLIENT_MAX_S = 1.0


async def _loris_in_handshake(port: int, hello: bytes, stop: trio.Event) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        with trio.move_on_after(LORIS_SECONDS * 3):
            for byte in hello:
                if stop.is_set():
                    return
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return  # refused by the per-client limit
                with trio.move_on_after(LORIS_BYTE_EVERY_S):
                    await stop.wait()


async def _loris_in_headers(port: int, ctx: ssl.SSLContext, stop: trio.Event) -> None:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, ctx, server_hostname="localhost")
    async with tls:
        try:
            await tls.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            while not stop.is_set():
                await tls.send_all(b"a")
                with trio.move_on_after(LORIS_BYTE_EVERY_S):
                    await stop.wait()
        except trio.BrokenResourceError:
            return


def _timed_gets(port: int, ctx: ssl.SSLContext, seconds: float) -> list[tuple[int, float]]:
    """A normal client from 127.0.0.2: a new connection and a GET every so often."""
    results = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status = _get_from(port, ctx, OTHER_LOOPBACK)
        except OSError:
            status = 0
        results.append((status, time.monotonic() - started))
        time.sleep(NORMAL_CLIENT_EVERY_S)
    return results


async def test_thousand_slow_loris_connections_do_not_starve_a_normal_client(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each connection costs two descriptors in this process (client and gateway side).
    raise_fd_limit(2 * LORIS_CONNECTIONS + 1024)
    stack = await start_demo(
        nursery,
        pki,
        tmp_path,
        max_connections_per_client=LORIS_PER_CLIENT_LIMIT,
        limits=SHORT_LINGER,
    )
    port = stack.port(PASSTHROUGH_LISTENER)
    hello = client_hello()
    ctx = client_context(pki)
    stop = trio.Event()
    async with trio.open_nursery() as loris:
        for i in range(LORIS_CONNECTIONS):
            if i < LORIS_IN_HEADERS:
                loris.start_soon(_loris_in_headers, port, ctx, stop)
            else:
                loris.start_soon(_loris_in_handshake, port, hello, stop)
            if i % 100 == 99:
                await trio.sleep(0.05)  # stay inside the listen backlog
        await wait_until(
            lambda: stack.gateway.open_connections >= LORIS_PER_CLIENT_LIMIT, timeout_s=10
        )
        results = await trio.to_thread.run_sync(_timed_gets, port, ctx, LORIS_SECONDS)
        held = stack.gateway.open_connections
        stop.set()
    statuses = [status for status, _ in results]
    slowest = max(elapsed for _, elapsed in results)
    assert statuses == [200] * len(results)
    assert len(results) >= 5
    assert slowest < NORMAL_CLIENT_MAX_S, results
    assert held >= LORIS_PER_CLIENT_LIMIT  # the slow connections were still open meanwhile
    assert any("scope=client" in line for line in logged(caplog, "connection.limit_reached"))
    await _wait_open(stack, 0)


# -- TLS garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_random_bytes_instead_of_a_client_hello_are_logged_and_closed(
    demo_stack: Stack, pki: PkiBundle, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    import random

    caplog.set_level(logging.INFO, logger="emulator.proxy")
    noise = random.Random(seed).randbytes(512 * (seed + 1))
    noise = b"\x16" + noise[1:] if seed % 2 else noise  # half of them claim to be handshakes
    port = demo_stack.port(STRICT_LISTENER)
    answer = await trio.to_thread.run_sync(tcp_exchange, port, noise)
    assert b"HTTP/" not in answer
    assert logged(caplog, "tls.handshake_failed") or logged(caplog, "tls.plain_http")
    assert (await https_request(port, client_context(pki, pki.client))).status == 200


@pytest.mark.parametrize("cut", [1, 5, 9, 60, -1], ids=lambda n: f"cut-{n}")
@pytest.mark.parametrize("then", ["hang-up", "stall"])
async def test_truncated_client_hello_is_dropped(
    pki: PkiBundle,
    nursery: trio.Nursery,
    tmp_path: Path,
    cut: int,
    then: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    demo_stack = await start_demo(
        nursery, pki, tmp_path, limits=replace(SHORT_LINGER, handshake_timeout_s=0.3)
    )
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    hello = client_hello()[:cut]
    port = demo_stack.port(PASSTHROUGH_LISTENER)
    started = time.monotonic()
    answer = await trio.to_thread.run_sync(
        lambda: tcp_exchange(port, hello, half_close=then == "hang-up")
    )
    # Nothing, or a TLS alert record (content type 21): never an HTTP answer.
    assert answer == b"" or answer[:1] == b"\x15", answer
    assert time.monotonic() - started < 2.0
    event = "tls.handshake_failed" if then == "hang-up" else "tls.handshake_timeout"
    assert logged(caplog, event)
    assert (await https_request(port, client_context(pki))).status == 200


def _renegotiate(port: int) -> tuple[bytes, str]:
    """A TLS 1.2 pyOpenSSL client that asks to renegotiate after its first request."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    sock = socket.create_connection(("127.0.0.1", port))
    # pyOpenSSL wants a blocking socket; a receive timeout keeps a hang bounded.
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(RAW_SOCKET_TIMEOUT_S), 0)
    )
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    conn.set_tlsext_host_name(b"localhost")
    try:
        conn.do_handshake()
        conn.sendall(b"GET /before HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = conn.recv(65536)
        assert conn.renegotiate()
        try:
            conn.do_handshake()
            conn.sendall(b"GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
            conn.recv(65536)
        except SSL.Error as exc:
            return first, f"refused: {exc}"
        return first, "renegotiated"
    finally:
        sock.close()


async def test_renegotiation_attempt_is_refused_and_logged(
    demo_stack: Stack, pki: PkiBundle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.gateway")
    port = demo_stack.port(PASSTHROUGH_LISTENER)
    first, outcome = await trio.to_thread.run_sync(_renegotiate, port)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert outcome.startswith("refused")
    (line,) = logged(caplog, "tls.renegotiation_refused")
    assert f"listener={PASSTHROUGH_LISTENER}" in line
    assert [r.path for r in demo_stack.recorded] == ["/before"]
    assert (await https_request(port, client_context(pki))).status == 200


#: An oversized client chain: over OpenSSL's 100 KB default certificate list limit
#: (SSL_CTX_set_max_cert_list(3)), the size an attacker would send to make the server work.
BIG_CHAIN_LENGTH = 60
BIG_CHAIN_PADDING = 2000


def _oversized_chain(directory: Path) -> tuple[Path, Path, int]:
    """A leaf plus 59 CA certificates, each padded with a private extension; one key for all."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    padding = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"),
        b"\x04\x82" + BIG_CHAIN_PADDING.to_bytes(2, "big") + b"p" * BIG_CHAIN_PADDING,
    )
    pems = []
    for i in range(BIG_CHAIN_LENGTH):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"big-chain-{i}")])
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"big-chain-{i + 1}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=i > 0, path_length=None), critical=True)
            .add_extension(padding, critical=False)
            .sign(key, hashes.SHA256())
        )
        pems.append(cert.public_bytes(serialization.Encoding.PEM))
    cert_path = directory / "big-chain.pem"
    key_path = directory / "big-chain.key"
    cert_path.write_bytes(b"".join(pems))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    size = sum(
        len(x509.load_pem_x509_certificate(p).public_bytes(serialization.Encoding.DER))
        for p in pems
    )
    return cert_path, key_path, size


def _connect_with_chain(port: int, ctx: ssl.SSLContext) -> str:
    try:
        with raw_tls_socket(port, ctx) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = read_to_eof(tls)
    except (ssl.SSLError, OSError) as exc:
        return f"failed: {exc}"
    return f"answered: {data[:40]!r}"


@pytest.mark.parametrize("listener", [STRICT_LISTENER, PASSTHROUGH_LISTENER])
async def test_oversized_client_certificate_chain_is_refused_in_the_handshake(
    demo_stack: Stack,
    pki: PkiBundle,
    tmp_path: Path,
    listener: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    cert_path, key_path, size = _oversized_chain(tmp_path)
    assert size > 100 * 1024
    ctx = client_context(pki)
    ctx.load_cert_chain(cert_path, key_path)
    port = demo_stack.port(listener)
    outcome = await trio.to_thread.run_sync(_connect_with_chain, port, ctx)
    assert not outcome.startswith("answered: b'HTTP/1.1 200"), outcome
    (line,) = logged(caplog, "tls.handshake_failed")
    assert "excessive message size" in line
    assert demo_stack.recorded == []
    assert (await https_request(port, client_context(pki, pki.client))).status == 200


async def test_connect_method_is_refused_and_never_tunnelled(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    # Found by the HTTP fuzzer: forwarded, a CONNECT switches h11 to tunnel mode on the
    # backend's 200 and the proxy spun on the paused connection, freezing every listener.
    request = b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    port = demo_stack.port(PASSTHROUGH_LISTENER)
    with trio.fail_after(5):
        data = await trio.to_thread.run_sync(
            tls_exchange, port, client_context(pki), request + FOLLOW_UP
        )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.BAD_REQUEST)
    assert demo_stack.recorded == []
    assert (await https_request(port, client_context(pki))).status == 200
