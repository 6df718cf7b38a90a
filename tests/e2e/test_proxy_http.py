"""The HTTP proxy end to end: bodies both ways, framing, default headers, errors, reuse.

Real TLS over 127.0.0.1 to a real gateway in front of the real stub backend. The stdlib client
covers ordinary requests; raw TLS sockets cover what it hides (chunked uploads, 100-continue,
garbage, what exactly comes back on the wire). Requests go to the Passthrough listener unless
the test is about the client certificate, so no client certificate is needed.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path

import h11
import pytest
import trio

import backend_stub
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER
from emulator.core.http.pages import GatewayPage
from emulator.core.limits import ProxyLimits
from emulator.core.request import plan
from tests.helpers.http import (
    assert_gateway_page,
    client_context,
    https_request,
    https_requests,
    parse_responses,
    raw_tls_socket,
    read_head,
    read_to_eof,
)
from tests.helpers.http import (
    tls_exchange as raw_exchange,
)
from tests.helpers.pki import PkiBundle
from tests.helpers.ports import free_port
from tests.helpers.stack import (
    TEMPLATE_PORTS,
    Stack,
    start_demo,
    wait_for_access_records,
)

MIB = 1024 * 1024
#: The stub's /bytes/<n> body: a repeating pattern, so content can be checked, not just length.
STUB_PATTERN = b"0123456789abcdef"

pytestmark = pytest.mark.usefixtures("no_internal_errors")


def stub_bytes(n: int) -> bytes:
    return (STUB_PATTERN * (n // len(STUB_PATTERN) + 1))[:n]


# -- request and response bodies --------------------------------------------------------------


async def test_content_length_request_body_reaches_backend_whole(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    body = b"x" * (5 * MIB)
    reply = await https_request(
        demo_stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        "/upload",
        method="POST",
        body=body,
    )
    assert reply.status == 200
    assert reply.json()["body_bytes"] == len(body)
    assert demo_stack.recorded[-1].body_bytes == len(body)
    assert demo_stack.recorded[-1].header_values("Content-Length") == (str(len(body)),)


def _chunked_upload(port: int, ctx: ssl.SSLContext, chunks: list[bytes]) -> bytes:
    head = (
        b"POST /chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(head)
        for chunk in chunks:
            tls.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        tls.sendall(b"0\r\n\r\n")
        return read_to_eof(tls)


async def test_chunked_request_body_reaches_backend_dechunked(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    chunks = [b"a" * 1000, b"b" * 70000, b"c", b"d" * 300000]
    data = await trio.to_thread.run_sync(
        _chunked_upload, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), chunks
    )
    (reply,) = parse_responses(data)
    assert reply.status == 200
    assert reply.json()["body_bytes"] == sum(map(len, chunks))
    assert demo_stack.recorded[-1].body_bytes == sum(map(len, chunks))


async def test_large_response_body_arrives_complete(demo_stack: Stack, pki: PkiBundle) -> None:
    size = 20_000_000
    reply = await https_request(
        demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), f"/bytes/{size}"
    )
    assert reply.status == 200
    assert reply.header("Content-Length") == str(size)
    assert len(reply.body) == size
    assert reply.body == stub_bytes(size)


async def _held_backend(
    release: trio.Event,
    first: bytes,
    second: bytes,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A backend that sends the response head and ``first``, then waits for ``release`` before
    sending ``second``: a gateway that buffers whole responses never delivers ``first``."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.EndOfMessage):
                break
        length = str(len(first) + len(second)).encode()
        head = h11.Response(status_code=200, headers=[(b"Content-Length", length)])
        await stream.send_all(conn.send(head) or b"")
        await stream.send_all(conn.send(h11.Data(data=first)) or b"")
        await release.wait()
        await stream.send_all(conn.send(h11.Data(data=second)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(int(listeners[0].socket.getsockname()[1]))


def _read_first_then_rest(
    port: int, ctx: ssl.SSLContext, first_size: int, release: Callable[[], None]
) -> tuple[bytes, bytes]:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/held")
        resp = conn.getresponse()
        first = resp.read(first_size)
        release()
        return first, resp.read()
    finally:
        conn.close()


async def test_response_streams_before_backend_finished_sending(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    release = trio.Event()
    first, second = b"F" * 100_000, b"S" * 100_000
    port = await nursery.start(_held_backend, release, first, second)
    stack = await start_demo(nursery, pki, tmp_path, backend_port=port)
    token = trio.lowlevel.current_trio_token()

    def release_backend() -> None:
        trio.from_thread.run_sync(release.set, trio_token=token)

    got_first, got_rest = await trio.to_thread.run_sync(
        _read_first_then_rest,
        stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        len(first),
        release_backend,
    )
    assert (got_first, got_rest) == (first, second)


# -- framing: HEAD, bodiless statuses, Connection: close, 100-continue -----------------------


def _head_then_get(port: int, ctx: ssl.SSLContext) -> tuple[bytes, bytes]:
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = read_head(tls)
        tls.sendall(b"GET /after-head HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return head, read_to_eof(tls)


async def test_head_gets_headers_without_body(demo_stack: Stack, pki: PkiBundle) -> None:
    head, rest = await trio.to_thread.run_sync(
        _head_then_get, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki)
    )
    (head_reply,) = parse_responses(head, bodyless=[True])
    assert head_reply.status == 200
    assert head_reply.header("Content-Length") == "5000"
    assert head_reply.header("Content-Type") == "application/octet-stream"
    assert head_reply.header("Server") == backend_stub.SERVER_NAME
    # Not a single body byte between the HEAD's head and the next response.
    assert rest.startswith(b"HTTP/1.1 200 ")
    (get_reply,) = parse_responses(rest)
    assert get_reply.json()["path"] == "/after-head"
    assert [r.method for r in demo_stack.recorded] == ["HEAD", "GET"]


async def test_bodiless_statuses_keep_the_connection_usable(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()
        for path, extra in [
            ("/status/204", ""),
            ("/status/304", ""),
            ("/last", "Connection: close\r\n"),
        ]
    )
    data = await trio.to_thread.run_sync(
        raw_exchange, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), requests
    )
    replies = parse_responses(data)
    assert [r.status for r in replies] == [204, 304, 200]
    assert [r.body for r in replies[:2]] == [b"", b""]
    assert replies[2].json()["path"] == "/last"
    client_ports = {record.clientPort for record in demo_stack.gateway.access_log}
    assert len(client_ports) == 1


async def test_client_connection_close_is_honoured(demo_stack: Stack, pki: PkiBundle) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    started = time.monotonic()
    data = await trio.to_thread.run_sync(
        raw_exchange, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), request
    )
    (reply,) = parse_responses(data)  # read_to_eof returned: the gateway closed
    assert time.monotonic() - started < 3
    assert reply.status == 200
    assert reply.header("Connection") == "close"


def _expect_continue(port: int, ctx: ssl.SSLContext, body: bytes) -> tuple[bytes, bytes]:
    head = (
        b"PUT /upload HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(head)
        interim = read_head(tls)
        tls.sendall(body)
        return interim, read_to_eof(tls)


async def test_expect_100_continue_upload_works(demo_stack: Stack, pki: PkiBundle) -> None:
    body = b"z" * 200_000
    interim, data = await trio.to_thread.run_sync(
        _expect_continue, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), body
    )
    assert interim.startswith(b"HTTP/1.1 100 ")
    (reply,) = parse_responses(data)
    assert reply.status == 200
    assert reply.json()["body_bytes"] == len(body)
    assert demo_stack.recorded[-1].header_values("Expect") == ()


# -- backend failures -------------------------------------------------------------------------


async def test_unreachable_backend_gives_502_gateway_page(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    stack = await start_demo(nursery, pki, tmp_path, backend_port=free_port())
    reply = await https_request(stack.port(PASSTHROUGH_LISTENER), client_context(pki))
    assert_gateway_page(reply, GatewayPage.BAD_GATEWAY)
    record = stack.gateway.access_log[-1]
    assert record.httpStatus == 502
    # Nothing answered the connection: the reference's "no reachable backend".
    assert record.error_info == "ERRORINFO_UPSTREAM_NO_LIVE"
    assert stack.recorded == []


async def test_backend_slower_than_request_timeout_gives_504_in_time(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    stack = await start_demo(nursery, pki, tmp_path, request_timeout_s=1)
    started = time.monotonic()
    reply = await https_request(stack.port(PASSTHROUGH_LISTENER), client_context(pki), "/delay/3")
    elapsed = time.monotonic() - started
    assert_gateway_page(reply, GatewayPage.GATEWAY_TIMEOUT)
    assert 0.9 < elapsed < 1.6
    record = stack.gateway.access_log[-1]
    assert (record.httpStatus, record.requestUri) == (504, "/delay/3")


async def test_connection_stays_usable_after_504(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    stack = await start_demo(nursery, pki, tmp_path, request_timeout_s=1)
    requests = (
        b"GET /delay/2 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    data = await trio.to_thread.run_sync(
        raw_exchange, stack.port(PASSTHROUGH_LISTENER), client_context(pki), requests
    )
    replies = parse_responses(data)
    assert [r.status for r in replies] == [504, 200]
    assert replies[1].json()["path"] == "/next"


# -- what the backend sees --------------------------------------------------------------------


@pytest.mark.parametrize("listener", [STRICT_LISTENER, PASSTHROUGH_LISTENER])
async def test_backend_sees_azure_default_headers(
    demo_stack: Stack, pki: PkiBundle, listener: str
) -> None:
    ctx = client_context(pki, pki.client)
    target = "/a/b%20c/../d?x=1&y=%2F"
    headers = {"X-Forwarded-For": "203.0.113.7", "X_Under_Score": "dropped", "X-Kept": "yes"}
    reply = await https_request(demo_stack.port(listener), ctx, target, headers=headers)
    assert reply.status == 200
    seen = demo_stack.recorded[-1]
    record = demo_stack.gateway.access_log[-1]
    host = f"localhost:{demo_stack.port(listener)}"
    assert seen.target == target
    assert seen.header_values("Host") == (host,)
    assert seen.header_values("X-Forwarded-For") == (f"203.0.113.7, 127.0.0.1:{record.clientPort}",)
    assert seen.header_values("X-Forwarded-Proto") == ("https",)
    assert seen.header_values("X-Forwarded-Port") == (str(TEMPLATE_PORTS[listener]),)
    assert seen.header_values("X-Original-Host") == (host,)
    assert seen.header_values("X-Original-URL") == (target,)
    (trace_id,) = seen.header_values("X-AppGW-Trace-Id")
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert trace_id == record.transactionId
    assert seen.header_values("X_Under_Score") == ()
    assert seen.header_values("X-Kept") == ("yes",)


async def test_trace_id_differs_per_request(demo_stack: Stack, pki: PkiBundle) -> None:
    replies = await https_requests(demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), 3)
    assert [r.status for r in replies] == [200] * 3
    trace_ids = {r.header_values("X-AppGW-Trace-Id")[0] for r in demo_stack.recorded}
    assert len(trace_ids) == 3


# -- bad and idle clients ---------------------------------------------------------------------


async def test_malformed_request_gets_400_gateway_page(demo_stack: Stack, pki: PkiBundle) -> None:
    data = await trio.to_thread.run_sync(
        raw_exchange,
        demo_stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        b"\x01\x02 this is not HTTP\r\n\r\n",
    )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.BAD_REQUEST)
    assert reply.header("Connection") == "close"
    assert demo_stack.recorded == []


@pytest.mark.parametrize("size", [33 * 1024, 40 * 1024, 100 * 1024], ids=["33k", "40k", "100k"])
async def test_request_headers_over_32k_get_nginx_header_or_cookie_too_large_page(
    demo_stack: Stack, pki: PkiBundle, size: int
) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    data = await trio.to_thread.run_sync(
        raw_exchange, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), request
    )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.HEADER_OR_COOKIE_TOO_LARGE)
    assert reply.status == 400
    assert demo_stack.recorded == []


async def test_request_headers_just_under_32k_pass(demo_stack: Stack, pki: PkiBundle) -> None:
    prefix = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: "
    filler = b"a" * (ProxyLimits().max_request_header_bytes - len(prefix) - 4)
    data = await trio.to_thread.run_sync(
        raw_exchange,
        demo_stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        prefix + filler + b"\r\n\r\n",
    )
    (reply,) = parse_responses(data)
    assert reply.status == 200
    assert demo_stack.recorded[-1].header_values("X-Big") == (filler.decode(),)


def _idle_tls_client(port: int, ctx: ssl.SSLContext) -> tuple[bytes, float]:
    with raw_tls_socket(port, ctx) as tls:
        started = time.monotonic()
        data = read_to_eof(tls)
        return data, time.monotonic() - started


async def test_idle_client_gets_408_and_is_closed(
    pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    demo_stack = await start_demo(
        nursery, pki, tmp_path, limits=ProxyLimits(request_header_timeout_s=0.5)
    )
    data, elapsed = await trio.to_thread.run_sync(
        _idle_tls_client, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki)
    )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.REQUEST_TIMEOUT)
    assert 0.4 < elapsed < 2.5
    assert demo_stack.recorded == []


# -- backend connection reuse and robustness --------------------------------------------------


async def test_backend_connections_are_reused_across_requests(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    replies = await https_requests(demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), 20)
    assert [r.status for r in replies] == [200] * 20
    backend_sockets = {record.client for record in demo_stack.recorded}
    assert len(demo_stack.recorded) == 20
    assert len(backend_sockets) <= 2


async def _closing_backend(
    close_after_s: float, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A keep-alive backend whose idle timeout is ``close_after_s``: it answers one request per
    connection without ``Connection: close``, then closes the idle connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
        body = b"short-lived"
        head = h11.Response(status_code=200, headers=[(b"Content-Length", b"%d" % len(body))])
        for event in (head, h11.Data(data=body), h11.EndOfMessage()):
            await stream.send_all(conn.send(event) or b"")
        await trio.sleep(close_after_s)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(int(listeners[0].socket.getsockname()[1]))


async def test_backend_closing_idle_connection_is_not_reused(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    port = await nursery.start(_closing_backend, 0.05)
    stack = await start_demo(nursery, pki, tmp_path, backend_port=port)
    gateway_port = stack.port(PASSTHROUGH_LISTENER)
    for _ in range(3):
        reply = await https_request(gateway_port, client_context(pki))
        assert (reply.status, reply.body) == (200, b"short-lived")
        await trio.sleep(0.2)  # the backend has closed the pooled connection by now


def _abandon_upload(port: int, ctx: ssl.SSLContext) -> None:
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(b"POST /never HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n")
        tls.sendall(b"x" * 100_000)
    # Leaving the block closes the socket with 900 000 bytes of the body never sent.


def _reset_upload(port: int, ctx: ssl.SSLContext) -> None:
    tls = raw_tls_socket(port, ctx)
    tls.sendall(b"POST /never HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n")
    tls.sendall(b"x" * 100_000)
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()


@pytest.mark.parametrize("abandon", [_abandon_upload, _reset_upload], ids=["close", "reset"])
async def test_client_vanishing_mid_body_does_not_hurt_the_gateway(
    demo_stack: Stack, pki: PkiBundle, abandon: Callable[[int, ssl.SSLContext], None]
) -> None:
    port = demo_stack.port(PASSTHROUGH_LISTENER)
    await trio.to_thread.run_sync(abandon, port, client_context(pki))
    await trio.sleep(0.2)  # let the gateway notice
    reply = await https_request(port, client_context(pki), "/after")
    assert reply.status == 200
    assert [r.path for r in demo_stack.recorded] == ["/after"]


def _read_some_then_vanish(port: int, ctx: ssl.SSLContext, keep: int) -> bytes:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
    try:
        conn.request("GET", f"/bytes/{50 * MIB}")
        return conn.getresponse().read(keep)
    finally:
        conn.close()  # with ~50 MiB still coming


async def test_client_vanishing_mid_response_is_logged_and_harmless(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    port = demo_stack.port(PASSTHROUGH_LISTENER)
    got = await trio.to_thread.run_sync(_read_some_then_vanish, port, client_context(pki), 70_000)
    assert got == stub_bytes(70_000)
    await wait_for_access_records(demo_stack.gateway)
    record = demo_stack.gateway.access_log[-1]
    assert (record.requestUri, record.httpStatus) == (f"/bytes/{50 * MIB}", 200)
    reply = await https_request(port, client_context(pki), "/after")
    assert reply.status == 200


def _read_truncated(port: int, ctx: ssl.SSLContext) -> tuple[int, bytes, float]:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
    started = time.monotonic()
    try:
        conn.request("GET", "/stalls")
        resp = conn.getresponse()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return resp.status, body, time.monotonic() - started
    finally:
        conn.close()


async def test_backend_stalling_mid_response_aborts_the_client_connection(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    never = trio.Event()
    first = b"F" * 50_000
    port = await nursery.start(_held_backend, never, first, b"never sent")
    stack = await start_demo(nursery, pki, tmp_path, backend_port=port, request_timeout_s=1)
    status, body, elapsed = await trio.to_thread.run_sync(
        _read_truncated, stack.port(PASSTHROUGH_LISTENER), client_context(pki)
    )
    # The status line went out before the stall: all the gateway can do is cut the body short.
    assert (status, body) == (200, first)
    assert elapsed < 2.5
    record = stack.gateway.access_log[-1]
    assert (record.requestUri, record.httpStatus) == ("/stalls", 200)


async def test_client_vanishing_mid_body_is_logged_as_499(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    await trio.to_thread.run_sync(
        _abandon_upload, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki)
    )
    await wait_for_access_records(demo_stack.gateway)
    record = demo_stack.gateway.access_log[-1]
    assert (record.requestUri, record.httpStatus, record.serverStatus) == ("/never", 499, "")


# -- HTTP/1.0 and internal errors -------------------------------------------------------------


async def test_http10_request_without_host_is_forwarded_with_backend_as_host(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    data = await trio.to_thread.run_sync(
        raw_exchange,
        demo_stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        b"GET /old HTTP/1.0\r\n\r\n",
    )
    (reply,) = parse_responses(data)
    assert reply.status == 200
    seen = demo_stack.recorded[-1]
    assert seen.header_values("Host") == (f"127.0.0.1:{demo_stack.backend_port}",)
    assert seen.header_values("X-Original-Host") == ()


async def test_internal_error_answers_500_and_the_gateway_keeps_serving(
    demo_stack: Stack,
    pki: PkiBundle,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_rewrite(*args: object, **kwargs: object) -> list[tuple[str, str]]:
        raise RuntimeError("injected bug")

    port = demo_stack.port(PASSTHROUGH_LISTENER)
    with monkeypatch.context() as patch:
        patch.setattr(plan, "rewrite_request", broken_rewrite)
        reply = await https_request(port, client_context(pki))
    assert_gateway_page(reply, GatewayPage.INTERNAL_ERROR)
    assert reply.header("Connection") == "close"
    logged = [r for r in caplog.records if "connection.internal_error" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    caplog.clear()  # the error above was the point of this test
    assert (await https_request(port, client_context(pki))).status == 200


async def test_content_length_with_transfer_encoding_is_rejected_400(
    demo_stack: Stack, pki: PkiBundle
) -> None:
    # The request-smuggling shape: a backend framing by Content-Length would read "0\r\n\r\n"
    # as the start of a second request.
    request = (
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    data = await trio.to_thread.run_sync(
        raw_exchange, demo_stack.port(PASSTHROUGH_LISTENER), client_context(pki), request
    )
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.BAD_REQUEST)
    assert reply.header("Connection") == "close"
    assert demo_stack.recorded == []
    assert demo_stack.gateway.access_log[-1].httpStatus == 400
