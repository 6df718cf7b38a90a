"""Backends that fail (issue #10, item 4): the client gets 502/504 or a correctly framed
response, never a hang and never a cut-off response that looks complete.

Each backend here is a small trio server doing one wrong thing on purpose
(:func:`tests.helpers.backends.raw_backend`). The client reads raw bytes and checks the framing
itself, as a careful HTTP client would: a body shorter than its Content-Length, or a chunked
body without its last chunk, is a truncated response even when the connection closed cleanly.

Already covered elsewhere: an unreachable backend (502) and one slower than ``requestTimeout``
(504, before and after the status line) in ``test_proxy_http.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER
from emulator.core.http.pages import GatewayPage
from tests.helpers.backends import raw_backend, read_request, reset, send_response
from tests.helpers.http import (
    Reply,
    assert_gateway_page,
    client_context,
    parse_responses,
    tls_exchange,
)
from tests.helpers.logs import logged
from tests.helpers.pki import PkiBundle
from tests.helpers.stack import start_demo

#: The body the misbehaving backends start to send; the client must never take a prefix of
#: it for the whole.
BODY = b"B" * 100_000
#: Seconds a test allows the gateway to notice a failure; a hang fails the test instead.
ANSWER_WITHIN_S = 5.0


pytestmark = pytest.mark.usefixtures("no_internal_errors")


@dataclass(frozen=True)
class Framed:
    """A response as a strict client reads it: ``complete`` only when its framing says so."""

    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool


def read_framed(data: bytes) -> Framed:
    """The first response in ``data``, with whether its body arrived whole per its framing.

    Content-Length: exactly that many bytes. Chunked: up to and including the last (0) chunk.
    Neither: the body runs to the connection's end, which a client cannot tell from a cut;
    the gateway never sends that to an HTTP/1.1 client, and the tests assert so.
    """
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {data[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    status = int(status_line.split(" ", 2)[1])
    if "content-length" in headers:
        length = int(headers["content-length"])
        return Framed(status, headers, rest[:length], len(rest) >= length)
    assert headers.get("transfer-encoding", "").lower() == "chunked", headers
    body = bytearray()
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return Framed(status, headers, bytes(body), complete=False)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return Framed(status, headers, bytes(body), complete=rest.startswith(b"\r\n"))
        if len(rest) < size + 2:
            body += rest[:size]
            return Framed(status, headers, bytes(body), complete=False)
        body += rest[:size]
        rest = rest[size + 2 :]


async def exchange(port: int, pki: PkiBundle, request: bytes) -> bytes:
    with trio.fail_after(ANSWER_WITHIN_S):
        return await trio.to_thread.run_sync(tls_exchange, port, client_context(pki), request)


def get(path: str, *, method: str = "GET", close: bool = True, body: bytes = b"") -> bytes:
    headers = "Host: localhost\r\n"
    if close:
        headers += "Connection: close\r\n"
    if body:
        headers += f"Content-Length: {len(body)}\r\n"
    return f"{method} {path} HTTP/1.1\r\n{headers}\r\n".encode() + body


# -- failures after the status line ----------------------------------------------------------


def _head_then_reset(framing: str) -> object:
    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        if framing == "content-length":
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
            data = head + BODY[:10_000]
        elif framing == "chunked":
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            data = head + b"%x\r\n%s\r\n" % (10_000, BODY[:10_000])
        else:  # close-delimited: HTTP/1.0 style, the end of the connection ends the body
            data = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY[:10_000]
        await stream.send_all(data)
        await trio.sleep(0.1)
        reset(stream)

    return behaviour


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close-delimited"])
async def test_backend_reset_mid_response_is_never_passed_off_as_complete(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, framing: str
) -> None:
    async with raw_backend(_head_then_reset(framing)) as backend:  # type: ignore[arg-type]
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        data = await exchange(stack.port(PASSTHROUGH_LISTENER), pki, get("/cut"))
    response = read_framed(data)
    assert response.status == 200
    assert not response.complete
    assert BODY.startswith(response.body)
    assert len(response.body) < len(BODY)


async def test_invalid_chunk_from_backend_cuts_the_response_visibly(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nnope\r\n"
        )
        await trio.sleep(ANSWER_WITHIN_S)

    async with raw_backend(behaviour) as backend:
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        data = await exchange(stack.port(PASSTHROUGH_LISTENER), pki, get("/bad-chunk"))
    response = read_framed(data)
    assert (response.status, response.body, response.complete) == (200, b"hello", False)


# -- failures before the status line ---------------------------------------------------------

GARBAGE = {
    "not-http": b"\x00\x01\x02 binary noise \xff\xfe\r\n\r\n",
    "bad-status-line": b"HTTP/1.1 OK 200\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nContent Length: 5\r\n\r\nhello",
    "bad-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
    "conflicting-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "head-then-eof": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",
}


@pytest.mark.parametrize("garbage", list(GARBAGE), ids=list(GARBAGE))
async def test_backend_sending_garbage_gives_502(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, garbage: str
) -> None:
    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        await stream.send_all(GARBAGE[garbage])
        await stream.aclose()

    async with raw_backend(behaviour) as backend:
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        data = await exchange(stack.port(PASSTHROUGH_LISTENER), pki, get("/garbage"))
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.BAD_GATEWAY)
    assert stack.gateway.access_log[-1].httpStatus == 502
    # The request went out and the answer was broken (the monitoring reference's code).
    assert stack.gateway.access_log[-1].error_info == "ERRORINFO_UPSTREAM_CLOSED_CONNECTION"


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_backend_dropping_a_new_connection_gives_502_without_retry(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, how: str
) -> None:
    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        if how == "reset":
            reset(stream)
        else:
            await stream.aclose()

    async with raw_backend(behaviour) as backend:
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        data = await exchange(stack.port(PASSTHROUGH_LISTENER), pki, get("/dropped"))
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.BAD_GATEWAY)
    # A fresh connection failing is the backend's answer, not a stale-pool race: no retry.
    assert [(c, r, m) for c, r, m, _ in backend.requests] == [(1, 1, "GET")]
    assert stack.gateway.access_log[-1].error_info == "ERRORINFO_UPSTREAM_CLOSED_CONNECTION"


async def test_backend_that_never_answers_gives_504_within_request_timeout(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        await trio.sleep_forever()

    async with raw_backend(behaviour) as backend:
        stack = await start_demo(
            nursery, pki, tmp_path, backend_port=backend.port, request_timeout_s=1
        )
        data = await exchange(stack.port(PASSTHROUGH_LISTENER), pki, get("/silent"))
    (reply,) = parse_responses(data)
    assert_gateway_page(reply, GatewayPage.GATEWAY_TIMEOUT)
    record = stack.gateway.access_log[-1]
    assert (record.error_info, record.serverStatus) == ("ERRORINFO_UPSTREAM_TIMED_OUT", "")
    assert record.upstreamSourcePort.isdigit()


# -- a pooled keep-alive connection closed just as it is reused ------------------------------


def _drops_reused(how: str, *, every_later_request: bool = False) -> object:
    """Answers the first request on each connection and keeps it open; drops the second one
    (as a backend whose keep-alive timeout fires just when the gateway reuses the connection).
    ``every_later_request``: drops every request but the very first one it ever gets."""
    served = 0

    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        nonlocal served
        if number == 1 and not (every_later_request and served):
            served += 1
            await send_response(stream, conn, b"fresh:" + request.target)
            return
        if how == "reset":
            reset(stream)
        else:
            await stream.aclose()

    return behaviour


async def _two_requests(port: int, pki: PkiBundle, second: bytes) -> tuple[Reply, Reply]:
    first = parse_responses(await exchange(port, pki, get("/one")))[0]
    again = parse_responses(await exchange(port, pki, second))[0]
    return first, again


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_idempotent_request_on_a_stale_pooled_connection_is_retried_once(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    how: str,
    method: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="emulator.backend")
    async with raw_backend(_drops_reused(how)) as backend:  # type: ignore[arg-type]
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        port = stack.port(PASSTHROUGH_LISTENER)
        first = parse_responses(await exchange(port, pki, get("/one")))[0]
        data = await exchange(port, pki, get("/two", method=method))
    again = parse_responses(data, bodyless=[method == "HEAD"])[0]
    assert (first.status, first.body) == (200, b"fresh:/one")
    assert again.status == 200
    if method != "HEAD":
        assert again.body == b"fresh:/two"
    # Connection 1 served /one and dropped /two; /two went again on connection 2.
    assert [(c, r, t) for c, r, _, t in backend.requests] == [
        (1, 1, "/one"),
        (1, 2, "/two"),
        (2, 1, "/two"),
    ]
    (line,) = logged(caplog, "backend.retry")
    assert f"method={method}" in line


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_post_on_a_stale_pooled_connection_is_never_retried(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, how: str
) -> None:
    async with raw_backend(_drops_reused(how)) as backend:  # type: ignore[arg-type]
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        first, again = await _two_requests(
            stack.port(PASSTHROUGH_LISTENER), pki, get("/pay", method="POST", body=b"1 EUR")
        )
    assert first.status == 200
    assert_gateway_page(again, GatewayPage.BAD_GATEWAY)
    assert [(c, r, m) for c, r, m, _ in backend.requests] == [(1, 1, "GET"), (1, 2, "POST")]


async def test_get_with_a_body_on_a_stale_pooled_connection_is_not_retried(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    async with raw_backend(_drops_reused("close")) as backend:  # type: ignore[arg-type]
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        _first, again = await _two_requests(
            stack.port(PASSTHROUGH_LISTENER), pki, get("/search", body=b"q=1")
        )
    assert_gateway_page(again, GatewayPage.BAD_GATEWAY)
    assert len(backend.requests) == 2


async def test_retry_is_attempted_only_once(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    behaviour = _drops_reused("close", every_later_request=True)
    async with raw_backend(behaviour) as backend:  # type: ignore[arg-type]
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        _first, again = await _two_requests(stack.port(PASSTHROUGH_LISTENER), pki, get("/two"))
    assert_gateway_page(again, GatewayPage.BAD_GATEWAY)
    assert [(c, r) for c, r, _, _ in backend.requests] == [(1, 1), (1, 2), (2, 1)]


async def test_bytes_after_a_backend_response_never_answer_the_next_request(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    # A backend that appends a second, unasked-for response: pooled with those bytes still
    # buffered, the connection would hand "forged" to the next client (response desync).
    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, number: int, request: h11.Request
    ) -> None:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
        )
        if number == 1:
            # Stay open and answer the next request honestly, if it ever comes here.
            next_request = await read_request(stream, _fresh_server_conn())
            if next_request is not None:
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhonest")
        await stream.aclose()

    async with raw_backend(behaviour) as backend:
        stack = await start_demo(nursery, pki, tmp_path, backend_port=backend.port)
        port = stack.port(PASSTHROUGH_LISTENER)
        first = parse_responses(await exchange(port, pki, get("/one")))[0]
        second = parse_responses(await exchange(port, pki, get("/two")))[0]
    assert (first.status, first.body) == (200, b"ok")
    assert second.body != b"forged"


def _fresh_server_conn() -> h11.Connection:
    return h11.Connection(h11.SERVER)
