"""A deliberately cheap HTTP/1.1 backend for the benchmark.

The benchmark measures the proxy, so the backend must cost as little as possible and answer the
same bytes to every proxy. This one is an asyncio protocol that splits requests on the blank
line, skips any body announced by Content-Length, and answers a fixed 200 with a 3-byte body.
Keep-alive is the default (HTTP/1.1); ``Connection: close`` closes after the answer. Chunked
request bodies are not supported: neither proxy sends one in the benchmark.

It also reports whether a ``X-Client-Cert`` header arrived (``X-Saw-Client-Cert: 0|1``), so a
smoke check can see that both proxies forward the certificate.

``backend_stub`` (trio + h11 + JSON echo + certificate parsing) is the functional backend of the
project; it is several times slower than this one, which would make the backend, not the proxy,
the bottleneck. See bench/README.md for the measured figures.

Usage: python bench/backend.py --port 0 [--host 127.0.0.1]   (prints ``listening HOST:PORT``)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Final

#: Answer bodies are fixed, so the headers are built once per variant.
_BODY: Final = b"ok\n"
_RESPONSES: Final = {
    seen: (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        b"X-Saw-Client-Cert: %d\r\n\r\n%s" % (len(_BODY), seen, _BODY)
    )
    for seen in (0, 1)
}
#: A request head larger than this is refused by closing the connection; the benchmark's heads
#: are below 8 KiB even with every certificate header the emulator's demo template adds.
MAX_HEAD_BYTES: Final = 64 * 1024
LISTEN_BACKLOG: Final = 4096


class _Answerer(asyncio.Protocol):
    """One connection: answer each complete request head at once."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._pending = bytearray()
        self._skip = 0  # body bytes of the current request still to discard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buf = self._pending
        buf += data
        while True:
            if self._skip:
                dropped = min(self._skip, len(buf))
                del buf[:dropped]
                self._skip -= dropped
                if self._skip:
                    return
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    transport.close()
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self._skip = _content_length(head)
            seen = 1 if b"\r\nx-client-cert:" in head else 0
            transport.write(_RESPONSES[seen])
            if b"\r\nconnection: close" in head:
                transport.close()
                return


def _content_length(head: bytes) -> int:
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    start = at + len(b"\r\ncontent-length:")
    stop = head.find(b"\r\n", start)
    try:
        return int(head[start : stop if stop >= 0 else None])
    except ValueError:
        return 0


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Answerer, host, port, backlog=LISTEN_BACKLOG)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
