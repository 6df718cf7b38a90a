"""Slow clients against buffering and timeouts, end to end (issue #15, findings 9 and 10).

A slow client must cost the gateway a client connection at most, never a backend one: with
request buffering (Azure's default) an upload trickling in opens no backend connection until
it is complete, and with response buffering a client reading slowly does not keep the backend
connection busy. A request head has one deadline in all (nginx ``client_header_timeout``),
which a byte now and then does not move. The backends here count the connections they accept
and record what they receive; the clients are real TLS clients on 127.0.0.1.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Final

import h11
import pytest
import trio

from emulator.arm.demo_template import PASSTHROUGH_LISTENER
from emulator.core.http.pages import GatewayPage
from emulator.model import Buffering
from tests.helpers.backends import RawBackend, raw_backend, send_response
from tests.helpers.http import (
    SERVER_TOKEN,
    Reply,
    assert_gateway_page,
    client_context,
    parse_responses,
)
from tests.helpers.pki import PkiBundle
from tests.helpers.resources import raise_fd_limit, wait_until
from tests.helpers.stack import SHORT_LINGER, start_demo

pytestmark = pytest.mark.usefixtures("no_internal_errors")

STREAMED: Final = {"enableRequestBuffering": False, "enableResponseBuffering": False}
#: The slow uploads: how many, and how often each sends one more byte of its body.
SLOW_UPLOADS: Final = 50
TRICKLE_EVERY_S: Final = 1.0
TRICKLED_BYTES: Final = 3
#: A response far larger than what the kernel buffers between the gateway and a client that
#: reads nothing (the client's receive buffer is made small too).
BIG_RESPONSE: Final = b"0123456789abcdef" * (12 * 1024 * 1024 // 16)
SLOW_READERS: Final = 3
CLIENT_RCVBUF: Final = 4096


async def _tls(
    port: int, ctx: ssl.SSLContext, *, rcvbuf: int | None = None
) -> trio.SSLStream[trio.SocketStream]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the TCP window offered in the handshake is small as well.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    tls = trio.SSLStream(trio.SocketStream(sock), ctx, server_hostname="localhost")
    await tls.do_handshake()
    return tls


def _response_length(data: bytes | bytearray) -> int | None:
    """The length of the one response at the start of ``data`` (framed by Content-Length,
    as every response in these tests is), once its head is complete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return end + 4 + int(value)
    return end + 4


async def _read_reply(tls: trio.SSLStream[trio.SocketStream], *, within_s: float) -> list[Reply]:
    """The next response on ``tls`` (a list: empty when none came in time, or more than one
    if the gateway sent more)."""
    data = bytearray()
    length = None
    with trio.move_on_after(within_s):
        while length is None or len(data) < length:
            try:
                more = await tls.receive_some(1024 * 1024)
            except trio.BrokenResourceError:
                break
            if not more:
                break
            data += more
            if length is None:
                length = _response_length(data)
    return parse_responses(bytes(data))


# -- finding 9: one deadline for the whole head --------------------------------------------


@pytest.mark.parametrize("keep_alive", [False, True], ids=["first-request", "keep-alive"])
async def test_trickled_request_head_gets_408_within_the_deadline(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    keep_alive: bool,
) -> None:
    deadline_s = 1.5
    limits = replace(SHORT_LINGER, request_header_timeout_s=deadline_s)
    stack = await start_demo(nursery, pki, tmp_path, limits=limits)
    tls = await _tls(stack.port(PASSTHROUGH_LISTENER), client_context(pki))
    expected = 1
    if keep_alive:
        await tls.send_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert [r.status for r in await _read_reply(tls, within_s=5)] == [200]
        expected = 2
    await tls.send_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    started = trio.current_time()
    data = b""

    async def trickle() -> None:
        # A byte every 0.25 s: each one re-armed a per-read timeout, so this never ended.
        while True:
            await trio.sleep(0.25)
            try:
                await tls.send_all(b"a")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async with trio.open_nursery() as inner:
        inner.start_soon(trickle)
        with trio.move_on_after(10):
            while True:
                try:
                    more = await tls.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not more:
                    break
                data += more
        elapsed = trio.current_time() - started
        inner.cancel_scope.cancel()
    replies = parse_responses(data)
    assert elapsed < deadline_s + 3.0, f"no answer within the head deadline ({elapsed:.1f} s)"
    assert elapsed > deadline_s * 0.8
    assert len(replies) == 1
    assert_gateway_page(replies[0], GatewayPage.REQUEST_TIMEOUT)
    assert replies[0].header("Connection") == "close"
    assert [r.path for r in stack.recorded] == (["/first"] if keep_alive else [])
    await wait_until(lambda: len(stack.gateway.access_log) == expected)
    assert stack.gateway.access_log[-1].httpStatus == 408


# -- finding 10: slow uploads -------------------------------------------------------------


async def _answer_ok(
    stream: trio.SocketStream, conn: h11.Connection, count: int, request: h11.Request
) -> None:
    await send_response(stream, conn, b"ok")


async def _slow_upload(
    port: int, ctx: ssl.SSLContext, index: int, go: trio.Event, replies: list[Reply]
) -> None:
    """POST a body of TRICKLED_BYTES + 1 bytes: a byte per TRICKLE_EVERY_S, the last on ``go``."""
    tls = await _tls(port, ctx)
    body = f"{index % 10}" * (TRICKLED_BYTES + 1)
    head = (
        f"POST /upload/{index} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    await tls.send_all(head)
    for byte in body[:-1]:
        await tls.send_all(byte.encode())
        await trio.sleep(TRICKLE_EVERY_S)
    await go.wait()
    await tls.send_all(body[-1].encode())
    replies.extend(await _read_reply(tls, within_s=10))
    await tls.aclose()


@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
async def test_slow_uploads_hold_no_backend_connection_until_complete(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    streamed: bool,
) -> None:
    # Lowered, yet above the trickle's pace: the per-read body timeout does not fire, so
    # only buffering can keep the backend free.
    limits = replace(SHORT_LINGER, client_body_timeout_s=10 * TRICKLE_EVERY_S)
    raise_fd_limit(4 * SLOW_UPLOADS + 1024)
    async with raw_backend(_answer_ok) as backend:
        stack = await start_demo(
            nursery,
            pki,
            tmp_path,
            backend_port=backend.port,
            global_configuration=STREAMED if streamed else None,
            limits=limits,
        )
        assert stack.gateway.config.buffering == Buffering(
            request=not streamed, response=not streamed
        )
        port = stack.port(PASSTHROUGH_LISTENER)
        ctx = client_context(pki)
        go = trio.Event()
        replies: list[Reply] = []
        async with trio.open_nursery() as uploads:
            for index in range(SLOW_UPLOADS):
                uploads.start_soon(_slow_upload, port, ctx, index, go, replies)
            await wait_until(lambda: stack.gateway.open_connections == SLOW_UPLOADS, timeout_s=20)
            await trio.sleep(TRICKLED_BYTES * TRICKLE_EVERY_S * 0.8)
            during = backend.connections
            forwarded_during = len(backend.requests)
            go.set()
        assert [r.status for r in replies] == [200] * SLOW_UPLOADS
    assert forwarded_during == 0
    if streamed:
        # Streamed (the flags off): each upload holds its backend connection meanwhile.
        assert during == SLOW_UPLOADS
    else:
        assert during == 0
    assert sorted(target for _c, _n, _m, target in backend.requests) == sorted(
        f"/upload/{i}" for i in range(SLOW_UPLOADS)
    )


class _RecordingBackend:
    """A backend that records the exact bytes of each connection and answers one request
    (whose end it finds through Content-Length or the last chunk) with 200."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while not _request_complete(data):
                more = await stream.receive_some(65536)
                if not more:
                    break
                data += more
            self.received.append(data)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )


def _request_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
        if name.strip().lower() == b"transfer-encoding":
            return body.endswith(b"0\r\n\r\n")
    return True


@pytest.fixture
async def recording_backend(nursery: trio.Nursery) -> _RecordingBackend:
    backend = _RecordingBackend()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, backend.handle, 0, host="127.0.0.1")
    )
    backend.port = int(listeners[0].socket.getsockname()[1])
    return backend


def _chunked(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
async def test_chunked_upload_reaches_the_backend_whole(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    recording_backend: _RecordingBackend,
    streamed: bool,
) -> None:
    # A small memory part, so the buffered body spills to the temporary file.
    limits = replace(SHORT_LINGER, request_body_memory_bytes=1000)
    stack = await start_demo(
        nursery,
        pki,
        tmp_path,
        backend_port=recording_backend.port,
        global_configuration=STREAMED if streamed else None,
        limits=limits,
    )
    assert stack.gateway.config.buffering.request is not streamed
    body = bytes(range(256)) * 40  # 10 240 bytes
    tls = await _tls(stack.port(PASSTHROUGH_LISTENER), client_context(pki))
    await tls.send_all(
        b"POST /chunks HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for piece in _chunked(body, 777):
        await tls.send_all(piece)
    replies = await _read_reply(tls, within_s=10)
    assert [r.status for r in replies] == [200]
    [received] = recording_backend.received
    head, _, sent_body = received.partition(b"\r\n\r\n")
    lines = [line.lower() for line in head.split(b"\r\n")]
    if streamed:
        assert b"transfer-encoding: chunked" in lines
        assert sent_body.endswith(b"0\r\n\r\n")
    else:
        # Buffered: the whole body, with its length, in one request (nginx does the same).
        assert f"content-length: {len(body)}".encode() in lines
        assert not any(line.startswith(b"transfer-encoding") for line in lines)
        assert sent_body == body


# -- 413 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "streamed"),
    [("length", False), ("chunked", False), ("length", True), ("chunked", True)],
)
async def test_body_over_the_maximum_request_size_gets_413(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    recording_backend: _RecordingBackend,
    framing: str,
    streamed: bool,
) -> None:
    limit = 1000
    limits = replace(SHORT_LINGER, max_request_body_bytes=limit)
    stack = await start_demo(
        nursery,
        pki,
        tmp_path,
        backend_port=recording_backend.port,
        global_configuration=STREAMED if streamed else None,
        limits=limits,
    )
    body = b"x" * (limit + 1)
    tls = await _tls(stack.port(PASSTHROUGH_LISTENER), client_context(pki))
    if framing == "length":
        request = (
            b"POST /big HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
    else:
        request = b"POST /big HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        request += b"".join(_chunked(body, 600))
    await tls.send_all(request)
    replies = await _read_reply(tls, within_s=10)
    assert len(replies) == 1
    assert_gateway_page(replies[0], GatewayPage.REQUEST_TOO_LARGE)
    assert replies[0].status == 413
    assert replies[0].header("Server") == SERVER_TOKEN
    assert b"<center><h1>413 Request Entity Too Large</h1></center>" in replies[0].body
    if framing == "length" or not streamed:
        # Refused before anything was forwarded.
        assert recording_backend.received == []
    else:
        # Streamed: the head and the first chunk went out before the limit was passed; the
        # backend's request was cut there, never completed.
        assert all(not _request_complete(r) for r in recording_backend.received)
    await wait_until(lambda: len(stack.gateway.access_log) == 1)
    assert stack.gateway.access_log[0].httpStatus == 413


async def test_body_at_the_maximum_request_size_passes(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    recording_backend: _RecordingBackend,
) -> None:
    limit = 1000
    limits = replace(SHORT_LINGER, max_request_body_bytes=limit)
    stack = await start_demo(
        nursery, pki, tmp_path, backend_port=recording_backend.port, limits=limits
    )
    tls = await _tls(stack.port(PASSTHROUGH_LISTENER), client_context(pki))
    body = b"y" * limit
    await tls.send_all(
        b"POST /fits HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(_chunked(body, 300))
    )
    assert [r.status for r in await _read_reply(tls, within_s=10)] == [200]
    assert recording_backend.received[0].endswith(b"\r\n\r\n" + body)


# -- finding 10: slow readers ---------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
async def test_slow_reader_of_a_large_response_frees_the_backend_connection(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path, streamed: bool
) -> None:
    sent: list[str] = []
    all_sent = trio.Event()

    async def behaviour(
        stream: trio.SocketStream, conn: h11.Connection, count: int, request: h11.Request
    ) -> None:
        if request.target == b"/big":
            await send_response(stream, conn, BIG_RESPONSE)
        else:
            await send_response(stream, conn, b"small")
        sent.append(request.target.decode())
        if sent.count("/big") == SLOW_READERS:
            all_sent.set()

    backend: RawBackend
    async with raw_backend(behaviour) as backend:
        stack = await start_demo(
            nursery,
            pki,
            tmp_path,
            backend_port=backend.port,
            global_configuration=STREAMED if streamed else None,
            limits=SHORT_LINGER,
        )
        assert stack.gateway.config.buffering.response is not streamed
        port = stack.port(PASSTHROUGH_LISTENER)
        ctx = client_context(pki)
        readers = []
        for _ in range(SLOW_READERS):
            tls = await _tls(port, ctx, rcvbuf=CLIENT_RCVBUF)
            await tls.send_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            readers.append(tls)
        # Nobody reads yet. Buffered, the gateway takes the whole responses anyway.
        await wait_until(lambda: len(backend.requests) == SLOW_READERS, timeout_s=10)
        with trio.move_on_after(3 if streamed else 20):
            await all_sent.wait()
        big_done = sent.count("/big")
        # The backend's last bytes may still sit in the kernel's buffers when its send
        # returns; the gateway reads them at once, then frees the connection.
        await trio.sleep(1.0)
        # Other clients now: buffered, they reuse the freed backend connections.
        for _ in range(SLOW_READERS):
            other = await _tls(port, ctx)
            await other.send_all(b"GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert [r.body for r in await _read_reply(other, within_s=10)] == [b"small"]
            await other.aclose()
        accepted = backend.connections
        if streamed:
            # Held by the clients that do not read (the backend may have written all of its
            # response into the kernel's buffers meanwhile): the small requests needed a new
            # one, which they share as they come one after the other.
            assert accepted == SLOW_READERS + 1
        else:
            assert big_done == SLOW_READERS
            assert accepted == SLOW_READERS
        # The slow readers still get every byte.
        for tls in readers:
            replies = await _read_reply(tls, within_s=60)
            assert [(r.status, len(r.body)) for r in replies] == [(200, len(BIG_RESPONSE))]
            assert replies[0].body == BIG_RESPONSE
            await tls.aclose()


# -- a backend that stops reading ------------------------------------------------------------

#: Far more than the kernel buffers between the gateway and a backend that reads nothing.
UNREAD_BODY: Final = b"u" * (32 * 1024 * 1024)


async def test_backend_that_stops_reading_the_body_gets_504_after_request_timeout(
    nursery: trio.Nursery, pki: PkiBundle, tmp_path: Path
) -> None:
    accepted: list[trio.SocketStream] = []

    async def never_reads(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, never_reads, 0, host="127.0.0.1")
    )
    port = int(listeners[0].socket.getsockname()[1])
    stack = await start_demo(
        nursery, pki, tmp_path, backend_port=port, request_timeout_s=1, limits=SHORT_LINGER
    )
    tls = await _tls(stack.port(PASSTHROUGH_LISTENER), client_context(pki))
    # Bounded: without a send timeout towards the backend, this upload never ended.
    with trio.fail_after(30):
        await tls.send_all(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
            + str(len(UNREAD_BODY)).encode()
            + b"\r\n\r\n"
        )
        await tls.send_all(UNREAD_BODY)
        sent = trio.current_time()
        replies = await _read_reply(tls, within_s=15)
        elapsed = trio.current_time() - sent
    assert len(accepted) == 1
    assert len(replies) == 1
    assert_gateway_page(replies[0], GatewayPage.GATEWAY_TIMEOUT)
    assert elapsed < 1 + 5.0
