"""The HTTP/2 entry point under attack, at the socket level over real TLS.

Each test writes what a hostile client would (frames by hand where a client library refuses):
a rapid-reset burst (CVE-2023-44487), a CONTINUATION flood, a stream whose response is never
read, h2→h1 desync attempts; and HTTP/2 where it is not offered: a prior-knowledge preface on an
HTTP listener or on a TLS connection that negotiated http/1.1 gets nginx's 400, an h2c upgrade
stays 403. Nothing refused may reach the backend, and the gateway keeps serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from emulator.arm.demo_template import STRICT_LISTENER
from emulator.core.http.pages import GatewayPage, render_page
from emulator.core.limits import ProxyLimits
from tests.helpers.h2client import RawH2, frame, h2_template
from tests.helpers.http import (
    assert_gateway_page,
    client_context,
    parse_responses,
    tcp_exchange,
    tls_exchange,
)
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.routing import RoutingPki, running
from tests.helpers.stack import DEMO_LISTEN, SHORT_LINGER, Stack, start_stack

pytestmark = pytest.mark.usefixtures("no_internal_errors")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, RST_STREAM, CONTINUATION = 0x1, 0x3, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
ENHANCE_YOUR_CALM, PROTOCOL_ERROR, CANCEL, REFUSED_STREAM = 0xB, 0x1, 0x8, 0x7


async def _stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path, **options: Any) -> Stack:
    return await start_stack(
        nursery,
        h2_template(),
        template_parameters(pki),
        tmp_path=tmp_path,
        listen=DEMO_LISTEN,
        backend_pool="stub-backend",
        **options,
    )


@pytest.fixture
async def h2_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    return await _stack(pki, nursery, tmp_path, limits=SHORT_LINGER)


def _still_serves(port: int, pki: PkiBundle) -> int:
    with httpx.Client(http2=True, verify=client_context(pki, pki.client), timeout=10) as client:
        reply = client.get(f"https://localhost:{port}/after")
        assert reply.http_version == "HTTP/2"
        return reply.status_code


def _rapid_reset(port: int, pki: PkiBundle, count: int) -> tuple[int, int, int]:
    """HEADERS then RST_STREAM for each stream, all in one write (CVE-2023-44487); returns
    (streams answered or refused by the server, streams it refused, the GOAWAY's code or -1)."""
    with RawH2(port, client_context(pki, pki.client)) as h2c:
        fields = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]
        for _ in range(count):
            sid = h2c.conn.get_next_available_stream_id()
            h2c.conn.send_headers(sid, [*fields, (":path", "/delay/5")], end_stream=True)
            h2c.conn.reset_stream(sid, CANCEL)
        h2c.send_raw(h2c.conn.data_to_send())
        h2c.read_until_closed(3)
        refused = sum(1 for r in h2c.replies.values() if r.reset == REFUSED_STREAM)
        goaway = h2c.goaway[1] if h2c.goaway is not None else -1
        return len(h2c.replies), refused, goaway


async def test_rapid_reset_is_bounded(h2_stack: Stack, pki: PkiBundle) -> None:
    port = h2_stack.port(STRICT_LISTENER)
    count = 2000
    _answered, refused, goaway = await trio.to_thread.run_sync(_rapid_reset, port, pki, count)
    # Each reset stream's task is cancelled before its backend request, or right after it;
    # the codec refuses streams beyond the concurrency limit (REFUSED_STREAM), and the
    # connection ends after too many refusals or at the 1,000-request limit.
    assert len(h2_stack.recorded) < 1000
    assert refused > 0 or goaway == 0
    assert await trio.to_thread.run_sync(_still_serves, port, pki) == 200


def _continuation_flood(port: int, pki: PkiBundle) -> tuple[tuple[int, int] | None, bool]:
    with RawH2(port, client_context(pki, pki.client)) as h2c:
        h2c.send_raw(frame(HEADERS, END_STREAM, 1, b"\x82"))  # :method GET, no END_HEADERS
        junk = b"\x00" * 16000
        try:
            for _ in range(200):  # 3.2 MB of header block, far past any limit
                h2c.send_raw(frame(CONTINUATION, 0, 1, junk))
        except (ConnectionError, OSError):
            pass  # the gateway closed while we were still writing
        h2c.read_until_closed(5)
        return h2c.goaway, h2c.closed


async def test_continuation_flood_ends_the_connection(h2_stack: Stack, pki: PkiBundle) -> None:
    port = h2_stack.port(STRICT_LISTENER)
    goaway, closed = await trio.to_thread.run_sync(_continuation_flood, port, pki)
    assert closed
    if goaway is not None:  # the GOAWAY is lost when the client was still writing (a reset)
        assert goaway[1] == ENHANCE_YOUR_CALM
    assert h2_stack.recorded == []
    assert await trio.to_thread.run_sync(_still_serves, port, pki) == 200


def _never_read(port: int, pki: PkiBundle) -> tuple[int | None, int | None, int]:
    # A window of 0: the gateway may send the response head, never a byte of the body.
    with RawH2(port, client_context(pki, pki.client), window=0, auto_window=False) as h2c:
        sid = h2c.request("/bytes/100000")
        (reply,) = h2c.wait(sid, timeout_s=15)
        return reply.status, reply.reset, len(reply.body)


async def test_a_stream_never_read_is_reset_after_the_send_timeout(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await _stack(
        pki, nursery, tmp_path, limits=ProxyLimits(client_send_timeout_s=1, linger_idle_s=0.05)
    )
    port = stack.port(STRICT_LISTENER)
    status, reset, received = await trio.to_thread.run_sync(_never_read, port, pki)
    assert (status, received) == (200, 0)
    assert reset is not None  # RST_STREAM: the stream is given up, not held open
    assert await trio.to_thread.run_sync(_still_serves, port, pki) == 200


#: h2→h1 desync attempts (each would smuggle a second request past the downgrade if the
#: gateway copied it into HTTP/1.1): name → extra request fields.
DESYNC: dict[str, list[tuple[str, str]]] = {
    "transfer-encoding": [("transfer-encoding", "chunked")],
    "crlf-in-value": [("x-a", "1\r\nGET /smuggled HTTP/1.1")],
    "crlf-in-name": [("x-a\r\nx-b", "1")],
    "connection-header": [("connection", "keep-alive")],
    "te-gzip": [("te", "gzip")],
    "upgrade": [("upgrade", "websocket")],
    "uppercase-name": [("X-Upper", "1")],
    "host-disagrees": [("host", "evil.test")],
}


def _desync(port: int, pki: PkiBundle, fields: list[tuple[str, str]]) -> tuple[Any, Any]:
    with RawH2(port, client_context(pki, pki.client), validate=False) as h2c:
        bad = h2c.request("/smuggle", headers=fields)
        good = h2c.request("/next")
        return tuple(h2c.wait(bad, good))  # type: ignore[return-value]


@pytest.mark.parametrize("fields", DESYNC.values(), ids=DESYNC.keys())
async def test_h2_to_h1_desync_attempts_are_refused_per_stream(
    h2_stack: Stack, pki: PkiBundle, fields: list[tuple[str, str]]
) -> None:
    bad, good = await trio.to_thread.run_sync(_desync, h2_stack.port(STRICT_LISTENER), pki, fields)
    # A stream error: the 400 page or RST_STREAM PROTOCOL_ERROR; the connection goes on.
    assert bad.status == 400 or bad.reset == PROTOCOL_ERROR
    if bad.status == 400:
        assert bad.body == render_page(GatewayPage.BAD_REQUEST)
    assert good.status == 200
    assert [r.path for r in h2_stack.recorded] == ["/next"]


def _length_overrun(port: int, pki: PkiBundle) -> tuple[Any, Any]:
    with RawH2(port, client_context(pki, pki.client), validate=False) as h2c:
        bad = h2c.request(
            "/upload",
            method="POST",
            headers=[("content-length", "5")],
            body=b"0123456789GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        good = h2c.request("/next")
        return tuple(h2c.wait(bad, good))  # type: ignore[return-value]


async def test_data_beyond_the_content_length_is_a_stream_error(
    h2_stack: Stack, pki: PkiBundle
) -> None:
    bad, good = await trio.to_thread.run_sync(_length_overrun, h2_stack.port(STRICT_LISTENER), pki)
    assert bad.reset == PROTOCOL_ERROR
    assert good.status == 200
    assert "/smuggled" not in [r.path for r in h2_stack.recorded]
    assert all(r.body_bytes <= 5 for r in h2_stack.recorded)


async def test_h2_preface_on_an_http_listener_gets_400(rpki: RoutingPki) -> None:
    settings = frame(0x4, 0, 0, b"")
    async with running(rpki, limits=SHORT_LINGER) as routing:
        data = await trio.to_thread.run_sync(tcp_exchange, routing.http_port, PREFACE + settings)
        assert all(not b.requests for b in (*routing.orders, routing.inventory))
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.BAD_REQUEST)


async def test_h2_preface_without_alpn_h2_gets_400(h2_stack: Stack, pki: PkiBundle) -> None:
    # The client did not negotiate h2 (no ALPN): the connection is HTTP/1.1, the preface a
    # request line with version HTTP/2.0.
    ctx = client_context(pki, pki.client)
    data = await trio.to_thread.run_sync(
        tls_exchange, h2_stack.port(STRICT_LISTENER), ctx, PREFACE + frame(0x4, 0, 0, b"")
    )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.BAD_REQUEST)
    assert h2_stack.recorded == []


async def test_h2c_upgrade_stays_403_with_enable_http2(h2_stack: Stack, pki: PkiBundle) -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: close\r\n\r\n"
    )
    ctx = client_context(pki, pki.client)
    ctx.set_alpn_protocols(["http/1.1"])
    data = await trio.to_thread.run_sync(tls_exchange, h2_stack.port(STRICT_LISTENER), ctx, request)
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.FORBIDDEN)
    assert h2_stack.recorded == []
