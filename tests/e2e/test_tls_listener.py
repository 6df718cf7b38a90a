"""The HTTPS listener's TLS side end to end: protocol versions, ALPN, the CertificateRequest,
plain HTTP on the TLS port, clients that never finish or break the handshake, and load.

Under the demo template's AppGwSslPolicy20220101 the listener accepts TLS 1.2 and 1.3 only.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
import warnings
from pathlib import Path

import pytest
import trio
from OpenSSL import SSL

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.core.http.pages import GatewayPage, render_page
from emulator.core.limits import ProxyLimits
from tests.helpers.http import (
    RAW_SOCKET_TIMEOUT_S,
    SERVER_TOKEN,
    client_context,
    https_request,
    parse_responses,
    raw_tls_socket,
    read_to_eof,
)
from tests.helpers.http import (
    tcp_exchange as plain_exchange,
)
from tests.helpers.pki import PkiBundle
from tests.helpers.stack import Stack, start_demo

LISTENERS = [STRICT_LISTENER, PASSTHROUGH_LISTENER]
#: Concurrent clients in the load test, and how many client threads run at once.
CONCURRENT_CLIENTS = 50
CLIENT_THREADS = 16

pytestmark = pytest.mark.usefixtures("no_internal_errors")


# -- plain HTTP on the HTTPS port -------------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
async def test_plain_http_to_https_port_gets_400_page_in_clear_text(
    demo_stack: Stack, listener: str
) -> None:
    data = await trio.to_thread.run_sync(
        plain_exchange,
        demo_stack.port(listener),
        b"GET /plain HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    (reply,) = parse_responses(data)
    assert reply.header("Server") == SERVER_TOKEN
    assert reply.header("Connection") == "close"
    assert reply.body == render_page(GatewayPage.PLAIN_HTTP_TO_HTTPS)
    assert b"The plain HTTP request was sent to HTTPS port" in reply.body
    assert demo_stack.recorded == []


# -- protocol versions ------------------------------------------------------------------------


def _legacy_handshake(port: int, ctx: ssl.SSLContext) -> ssl.SSLError | None:
    try:
        with raw_tls_socket(port, ctx):
            return None
    except ssl.SSLError as exc:
        return exc


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"], ids=["tls10", "tls11"])
async def test_tls10_and_tls11_are_refused_under_2022_policy(
    demo_stack: Stack, pki: PkiBundle, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the old versions are the point
        legacy = getattr(ssl.TLSVersion, version)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=pki.server_root.cert_pem.decode())
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = legacy
            ctx.maximum_version = legacy
        except (ssl.SSLError, ValueError) as exc:
            pytest.skip(f"the local OpenSSL cannot offer {version}: {exc}")
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    error = await trio.to_thread.run_sync(_legacy_handshake, demo_stack.port(STRICT_LISTENER), ctx)
    assert error is not None, f"{version} handshake succeeded"
    if "NO_PROTOCOLS_AVAILABLE" in str(error) or "NO_CIPHERS_AVAILABLE" in str(error):
        pytest.skip(f"the local OpenSSL refuses to offer {version}: {error}")
    failures = [r.getMessage() for r in caplog.records if "tls.handshake_failed" in r.getMessage()]
    assert failures, "the gateway logged no handshake failure"
    assert "unsupported protocol" in failures[-1]
    assert len(demo_stack.gateway.access_log) == 0


@pytest.mark.parametrize("listener", LISTENERS)
async def test_tls12_and_tls13_are_accepted(
    demo_stack: Stack, pki: PkiBundle, tls_version: ssl.TLSVersion, listener: str
) -> None:
    ctx = client_context(pki, pki.client, tls_version=tls_version)
    reply = await https_request(demo_stack.port(listener), ctx)
    assert reply.status == 200
    expected = "TLSv1.3" if tls_version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
    assert demo_stack.gateway.access_log[-1].sslProtocol == expected


# -- ALPN -------------------------------------------------------------------------------------


def _alpn_request(port: int, ctx: ssl.SSLContext) -> tuple[str | None, bytes]:
    with raw_tls_socket(port, ctx) as tls:
        chosen = tls.selected_alpn_protocol()
        tls.sendall(b"GET /alpn HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return chosen, read_to_eof(tls)


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["h2"], None),
        (["h2", "http/1.1"], "http/1.1"),
        (["http/1.1"], "http/1.1"),
    ],
    ids=["h2-only", "h2-and-http11", "http11-only"],
)
async def test_alpn_selects_http11_or_nothing_and_http11_works(
    demo_stack: Stack, pki: PkiBundle, offered: list[str], expected: str | None
) -> None:
    ctx = client_context(pki)
    ctx.set_alpn_protocols(offered)
    chosen, data = await trio.to_thread.run_sync(
        _alpn_request, demo_stack.port(PASSTHROUGH_LISTENER), ctx
    )
    assert chosen == expected
    (reply,) = parse_responses(data)
    assert reply.status == 200
    assert reply.json()["path"] == "/alpn"


# -- the CertificateRequest -------------------------------------------------------------------


def _advertised_ca_names(port: int, tls13: bool) -> list[bytes]:
    """Handshake with pyOpenSSL (stdlib ssl cannot show it); return the CA names the server's
    CertificateRequest listed, DER-encoded."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    version = SSL.TLS1_3_VERSION if tls13 else SSL.TLS1_2_VERSION
    ctx.set_min_proto_version(version)
    ctx.set_max_proto_version(version)
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S) as sock:
        conn = SSL.Connection(ctx, sock)
        conn.set_connect_state()
        conn.set_tlsext_host_name(b"localhost")
        # A socket with a timeout is non-blocking underneath: wait for readability ourselves.
        deadline = time.monotonic() + RAW_SOCKET_TIMEOUT_S
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                    raise TimeoutError("the TLS handshake did not finish") from None
        return [name.der() for name in conn.get_client_ca_list()]


@pytest.mark.parametrize("tls13", [False, True], ids=["tls12", "tls13"])
async def test_strict_certificate_request_lists_uploaded_cas(
    demo_stack: Stack, pki: PkiBundle, tls13: bool
) -> None:
    names = await trio.to_thread.run_sync(
        _advertised_ca_names, demo_stack.port(STRICT_LISTENER), tls13
    )
    expected = [pki.client_root.cert.subject, pki.client_ca.cert.subject]
    assert sorted(names) == sorted(name.public_bytes() for name in expected)


@pytest.mark.parametrize("tls13", [False, True], ids=["tls12", "tls13"])
async def test_passthrough_certificate_request_lists_no_cas(demo_stack: Stack, tls13: bool) -> None:
    names = await trio.to_thread.run_sync(
        _advertised_ca_names, demo_stack.port(PASSTHROUGH_LISTENER), tls13
    )
    assert names == []


# -- clients that never finish or break the handshake -----------------------------------------


def _silent_tcp_client(port: int) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S) as sock:
        started = time.monotonic()
        data = read_to_eof(sock)
        return data, time.monotonic() - started


@pytest.fixture
async def short_handshake_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    """The demo gateway with a 0.3 s handshake timeout."""
    return await start_demo(nursery, pki, tmp_path, limits=ProxyLimits(handshake_timeout_s=0.3))


async def test_stalled_handshake_is_dropped_after_timeout_and_others_are_served(
    short_handshake_stack: Stack,
    pki: PkiBundle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    demo_stack = short_handshake_stack
    caplog.set_level(logging.INFO, logger="emulator.proxy")
    port = demo_stack.port(PASSTHROUGH_LISTENER)
    async with trio.open_nursery() as nursery:
        results: list[tuple[bytes, float]] = []

        async def silent() -> None:
            results.append(await trio.to_thread.run_sync(_silent_tcp_client, port))

        nursery.start_soon(silent)
        await trio.sleep(0.05)
        # While the silent client holds its connection, others are served.
        assert (await https_request(port, client_context(pki))).status == 200
    ((data, elapsed),) = results
    assert data == b""
    assert 0.25 < elapsed < 2.0
    assert any("tls.handshake_timeout" in r.getMessage() for r in caplog.records)
    assert (await https_request(port, client_context(pki))).status == 200


#: What a broken client might send instead of a ClientHello.
GARBAGE = {
    "binary-noise": bytes(range(256)) * 4,
    "bogus-handshake-record": b"\x16\x03\x01\x00\x20" + b"\xff" * 32,
    "truncated-record": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "lowercase-text": b"hello there, are you TLS?\r\n\r\n",
}


def _send_garbage(port: int, data: bytes, *, close_early: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S) as sock:
        sock.sendall(data)
        if close_early:
            return b""
        return read_to_eof(sock)


@pytest.mark.parametrize("close_early", [False, True], ids=["wait", "hang-up"])
@pytest.mark.parametrize("garbage", list(GARBAGE), ids=list(GARBAGE))
async def test_broken_handshake_does_not_affect_the_next_client(
    short_handshake_stack: Stack,
    pki: PkiBundle,
    garbage: str,
    close_early: bool,
) -> None:
    # A truncated record makes the gateway wait for the rest; the short timeout ends that wait.
    demo_stack = short_handshake_stack
    port = demo_stack.port(STRICT_LISTENER)
    answer = await trio.to_thread.run_sync(
        lambda: _send_garbage(port, GARBAGE[garbage], close_early=close_early)
    )
    assert b"HTTP/" not in answer  # never an HTTP answer to a failed handshake
    reply = await https_request(port, client_context(pki, pki.client))
    assert reply.status == 200
    assert demo_stack.gateway.access_log[-1].sslClientVerify == "SUCCESS"


# -- load -------------------------------------------------------------------------------------


async def test_fifty_concurrent_clients_all_get_200(demo_stack: Stack, pki: PkiBundle) -> None:
    ports = {
        STRICT_LISTENER: demo_stack.port(STRICT_LISTENER),
        PASSTHROUGH_LISTENER: demo_stack.port(PASSTHROUGH_LISTENER),
    }
    ctx = client_context(pki, pki.client)
    limiter = trio.CapacityLimiter(CLIENT_THREADS)
    statuses: dict[int, int] = {}

    async def one(i: int) -> None:
        listener = LISTENERS[i % 2]
        async with limiter:
            reply = await https_request(ports[listener], ctx, f"/client/{i}")
        statuses[i] = reply.status

    async with trio.open_nursery() as nursery:
        for i in range(CONCURRENT_CLIENTS):
            nursery.start_soon(one, i)
    assert statuses == {i: 200 for i in range(CONCURRENT_CLIENTS)}
    assert sorted(r.path for r in demo_stack.recorded) == sorted(
        f"/client/{i}" for i in range(CONCURRENT_CLIENTS)
    )
    assert len({(r.clientIP, r.clientPort) for r in demo_stack.gateway.access_log}) == 50
