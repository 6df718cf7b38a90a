"""HTTP/1.1 client side towards the backend pool: connections, reuse, and error mapping.

One :class:`BackendClient` per gateway keeps idle keep-alive connections per backend address.
A connection that the backend closed while idle is detected before reuse (a non-blocking peek
sees EOF) and dropped, so a request is never written into a dead socket.

trio's network errors are mapped exactly once, here (httpcore's ``map_exceptions`` idea):
connection failures become :class:`~emulator.errors.BackendConnectError` (the proxy answers
502) and timeouts :class:`~emulator.errors.BackendTimeout` (504).
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import h11
import trio

from emulator.errors import BackendConnectError, BackendTimeout
from emulator.model import BackendPool

__all__ = ["BackendClient", "BackendConnection"]

LOGGER = logging.getLogger("emulator.backend")

#: Connect attempts give up after this; Azure's own connect timeout is not documented, and a
#: local backend either answers at once or is not there.
CONNECT_TIMEOUT_S: Final = 5.0
#: Idle pooled connections older than this are closed rather than reused (most servers' keep-alive
#: timeouts are 5 s or more, so a reused connection is unlikely to race a server-side close).
IDLE_REUSE_S: Final = 4.0
MAX_IDLE_PER_ADDRESS: Final = 64
RECEIVE_SIZE: Final = 65536


@dataclass(eq=False)
class BackendConnection:
    """One TCP connection to a backend with its h11 client state."""

    stream: trio.SocketStream
    conn: h11.Connection
    address: tuple[str, int]
    idle_since: float = 0.0

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise BackendConnectError(
                    f"backend {self.addr_text} closed the connection while sending"
                ) from exc

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BackendConnectError(
                    f"backend {self.addr_text} sent an invalid HTTP response: {exc}"
                ) from exc
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise BackendConnectError(
                        f"backend {self.addr_text} reset the connection"
                    ) from exc
                self.conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise BackendConnectError(
                    f"backend {self.addr_text} closed the connection without a complete response"
                )
            if isinstance(event, h11.Event):
                return event
            return h11.PAUSED

    @property
    def addr_text(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def peer_closed(self) -> bool:
        """True when an idle connection became readable: the backend closed it (EOF) or sent
        bytes nobody asked for. Either way it cannot carry another request."""
        poller = select.poll()
        poller.register(self.stream.socket.fileno(), select.POLLIN | select.POLLRDHUP)
        return bool(poller.poll(0))


class BackendClient:
    """Opens, reuses and closes backend connections for the whole gateway."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[BackendConnection]] = defaultdict(list)
        self._round_robin: dict[str, itertools.count[int]] = {}

    def pick(self, pool: BackendPool, default_port: int) -> tuple[str, int]:
        """Round-robin over the pool's addresses (Azure's default distribution)."""
        if not pool.addresses:
            raise BackendConnectError(f"backend pool '{pool.name}' has no addresses")
        counter = self._round_robin.setdefault(pool.name, itertools.count())
        address = pool.addresses[next(counter) % len(pool.addresses)]
        return (address.host, address.port if address.port is not None else default_port)

    @asynccontextmanager
    async def connection(self, address: tuple[str, int]) -> AsyncIterator[BackendConnection]:
        """A connection for one request; returned to the pool afterwards when still usable.

        The connection is closed when the body of the ``async with`` raises or leaves it in a
        state that cannot carry another request.
        """
        conn = self._take_idle(address)
        if conn is None:
            conn = await self._open(address)
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok and conn.reusable() and len(self._idle[address]) < MAX_IDLE_PER_ADDRESS:
                conn.conn.start_next_cycle()
                conn.idle_since = trio.current_time()
                self._idle[address].append(conn)
            else:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(conn.stream)

    def _take_idle(self, address: tuple[str, int]) -> BackendConnection | None:
        idle = self._idle.get(address)
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < IDLE_REUSE_S and not conn.peer_closed():
                return conn
            conn.stream.socket.close()
        return None

    async def _open(self, address: tuple[str, int]) -> BackendConnection:
        host, port = address
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError as exc:
            raise BackendTimeout(
                f"connecting to backend {host}:{port} timed out after {CONNECT_TIMEOUT_S:g} s"
            ) from exc
        except OSError as exc:
            raise BackendConnectError(
                f"cannot connect to backend {host}:{port}: {exc.strerror or exc}"
            ) from exc
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return BackendConnection(stream, h11.Connection(h11.CLIENT), address)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                await trio.aclose_forcefully(conn.stream)
        self._idle.clear()
