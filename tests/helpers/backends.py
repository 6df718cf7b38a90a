"""Backends that misbehave on purpose, each a small trio server doing one wrong thing (the
well-behaved backend is the project's stub), and the h11 steps they are written with."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import h11
import trio

#: SO_LINGER {on, 0 s}: ``close()`` sends RST instead of FIN.
LINGER_RESET: Final = struct.pack("ii", 1, 0)


#: A backend's behaviour: gets the connection and the request number on it (1 for the first),
#: after the request was read; answers (or not) as it likes.
Behaviour = Callable[[trio.SocketStream, h11.Connection, int, h11.Request], Awaitable[None]]


@dataclass
class RawBackend:
    """A tiny HTTP/1.1 backend that delegates each request to a :data:`Behaviour`."""

    behaviour: Behaviour
    port: int = 0
    #: (connection number, request number on it, method, target) for each request read.
    requests: list[tuple[int, int, str, str]] = field(default_factory=list)
    connections: int = 0
    #: Every byte received, per connection (in connection order): what the gateway sent.
    received: list[bytearray] = field(default_factory=list)
    #: Connections the gateway closed (the backend read EOF or a reset on them).
    closed_by_peer: int = 0


async def read_request(
    stream: trio.SocketStream, conn: h11.Connection, sink: bytearray | None = None
) -> h11.Request | None:
    """The next request's head, with its body read and dropped; None when the peer closed.

    ``sink``: every byte received is appended to it (the exact bytes the gateway sent).
    """
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if sink is not None:
                sink += data
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def send_response(
    stream: trio.SocketStream,
    conn: h11.Connection,
    body: bytes,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> None:
    head = h11.Response(
        status_code=status,
        headers=[("Content-Length", str(len(body))), *(headers or {}).items()],
    )
    for event in (head, h11.Data(data=body), h11.EndOfMessage()):
        await stream.send_all(conn.send(event) or b"")


def reset(stream: trio.SocketStream) -> None:
    """Close ``stream`` with RST (SO_LINGER 0), the way a crashed process's socket ends."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    stream.socket.close()


@asynccontextmanager
async def raw_backend(behaviour: Behaviour) -> AsyncIterator[RawBackend]:
    """Serve ``behaviour`` on a free port of 127.0.0.1 for the duration of the block."""
    backend = RawBackend(behaviour)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    backend.port = int(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        backend.connections += 1
        number = backend.connections
        sink = bytearray()
        backend.received.append(sink)
        conn = h11.Connection(h11.SERVER)
        count = 0
        try:
            while True:
                request = await read_request(stream, conn, sink)
                if request is None:
                    backend.closed_by_peer += 1
                    return
                count += 1
                backend.requests.append(
                    (number, count, request.method.decode(), request.target.decode())
                )
                await backend.behaviour(stream, conn, count, request)
                if stream.socket.fileno() < 0 or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.ProtocolError:
            # The peer ended the connection inside a message (h11 saw EOF there).
            backend.closed_by_peer += 1
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            if stream.socket.fileno() >= 0:
                await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        try:
            yield backend
        finally:
            nursery.cancel_scope.cancel()
