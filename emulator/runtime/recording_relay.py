"""A TCP relay in front of a backend that notes the request heads passing through it.

``appgw-emulator verify`` needs to say which certificate headers the user's own backend received,
without touching that backend. The relay sits between the gateway and the backend: every byte is
passed on unchanged both ways, and the gateway-to-backend direction is also read as a sequence of
HTTP/1.1 request heads. Each head is kept by the gateway's trace id header
(``X-AppGW-Trace-Id``), which the access record carries as ``transactionId``.

Reading the stream as heads is exact for what ``verify`` sends (GET requests without a body) and
for requests with a ``Content-Length`` body; at the first chunked body the relay stops reading
that connection (it still relays it), because ``verify`` never sends one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import trio

from emulator.model import BackendAddress

__all__ = ["TRACE_HEADER", "RecordingRelay"]

LOGGER = logging.getLogger(__name__)

#: The header the gateway adds to every forwarded request (lowercase for comparison).
TRACE_HEADER: Final = "x-appgw-trace-id"
#: Bytes read from one side at a time.
RECEIVE_BYTES: Final = 64 * 1024
#: A request head larger than this is not the gateway's (its own limit is far lower); the relay
#: stops parsing that connection instead of buffering without bound.
MAX_HEAD_BYTES: Final = 256 * 1024
#: Heads kept: a verify run sends a few dozen requests; the bound only guards long runs.
KEEP_HEADS: Final = 4096
#: How long to wait for the backend's TCP connect before giving the gateway a closed socket
#: (which it reports as 502, as it would for a backend that is down).
CONNECT_TIMEOUT_S: Final = 5.0


class _HeadReader:
    """Splits one connection's request bytes into heads; bodies with Content-Length skipped."""

    def __init__(self, on_head: Callable[[list[tuple[str, str]]], None]) -> None:
        self._buffer = bytearray()
        self._skip = 0
        self._on_head = on_head
        self.stopped = False

    def feed(self, data: bytes) -> None:
        if self.stopped:
            return
        self._buffer += data
        while not self.stopped:
            if self._skip:
                taken = min(self._skip, len(self._buffer))
                del self._buffer[:taken]
                self._skip -= taken
                if self._skip:
                    return
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self.stopped = True
                return
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            headers = _parse_headers(head)
            self._on_head(headers)
            lowered = {name.lower(): value for name, value in headers}
            if "chunked" in lowered.get("transfer-encoding", "").lower():
                self.stopped = True
            elif lowered.get("content-length", "").isdigit():
                self._skip = int(lowered["content-length"])


def _parse_headers(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return headers


class RecordingRelay:
    """Relays TCP connections to ``target`` and keeps each request head by trace id.

    Serve it in a nursery with ``port = await nursery.start(relay.serve)``, then point the
    gateway's pool at ``127.0.0.1:port``.
    """

    def __init__(self, target: BackendAddress, *, host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self._heads: OrderedDict[str, tuple[tuple[str, str], ...]] = OrderedDict()

    def headers_for(self, trace_id: str) -> tuple[tuple[str, str], ...] | None:
        """The headers of the request the gateway forwarded with this trace id, if it did."""
        return self._heads.get(trace_id)

    def _keep(self, headers: list[tuple[str, str]]) -> None:
        trace = next((v for n, v in headers if n.lower() == TRACE_HEADER), "")
        if not trace:
            return
        self._heads[trace] = tuple(headers)
        while len(self._heads) > KEEP_HEADS:
            self._heads.popitem(last=False)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept on a free loopback port until cancelled; reports the port as started."""
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        port = self.target.port
        if port is None:  # --backend always gives one; a bare host cannot be relayed
            await downstream.aclose()
            return
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                upstream = await trio.open_tcp_stream(self.target.host, port)
        except (OSError, trio.TooSlowError) as exc:
            LOGGER.info("relay.connect_failed %s:%s %s", self.target.host, port, exc)
            await downstream.aclose()
            return
        reader = _HeadReader(self._keep)
        async with downstream, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, downstream, upstream, reader, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, downstream, None, nursery.cancel_scope)

    @staticmethod
    async def _pump(
        source: trio.SocketStream,
        sink: trio.SocketStream,
        reader: _HeadReader | None,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                data = await source.receive_some(RECEIVE_BYTES)
                if not data:
                    break
                if reader is not None:
                    reader.feed(bytes(data))
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        # Either side closing ends the relayed connection, as a proxy between them would.
        scope.cancel()
