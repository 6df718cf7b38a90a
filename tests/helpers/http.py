"""The client side of the tests: replies, stdlib HTTPS clients, and raw sockets for what
``http.client`` hides (framing, 100-continue, garbage, ClientHellos).

Everything connects to 127.0.0.1 (``localhost`` where the server name matters) with a timeout,
so a gateway that hangs fails the test instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from emulator.core.http.pages import GatewayPage, render_page
from emulator.pki import IssuedCert
from tests.helpers.pki import PkiBundle

#: The Server header of the gateway's own pages (observed on a real Standard_v2 gateway),
#: written out here rather than imported so that the tests check the emulator's value.
SERVER_TOKEN: Final = "Microsoft-Azure-Application-Gateway/v2"
#: Timeout of one HTTPS request from the stdlib client.
REQUEST_TIMEOUT_S: Final = 10.0
#: Seconds a raw test socket waits for the gateway before the test fails instead of hanging.
RAW_SOCKET_TIMEOUT_S: Final = 10.0
#: A second loopback address: on Linux the whole 127.0.0.0/8 is local, so a client can bind
#: its end to it and the gateway sees a different client address.
OTHER_LOOPBACK: Final = "127.0.0.2"
TLS_VERSIONS: Final[Sequence[ssl.TLSVersion]] = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP response as the client received it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def forwarded(reply: Reply, name: str) -> list[str]:
    """Values of request header ``name`` that the stub backend received (from its JSON echo)."""
    return [v for k, v in reply.json()["headers"] if k.lower() == name.lower()]


#: RFC 9110 section 5.6.7: the Date of a gateway page.
IMF_FIXDATE: Final = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
#: The first head fields of every gateway page, in nginx's order (real gateway captures).
PAGE_HEAD_ORDER: Final = ("server", "date", "content-type", "content-length")


def assert_gateway_page(reply: Reply, page: GatewayPage) -> None:
    """``reply`` is the gateway's own page: status, Azure's Server token, nginx's body, a
    Date, and the head in nginx's order with Connection last."""
    assert reply.status == page.status
    assert reply.header("Server") == SERVER_TOKEN
    assert reply.body == render_page(page)
    assert IMF_FIXDATE.fullmatch(reply.header("Date") or "")
    names = [name.lower() for name, _ in reply.headers]
    assert tuple(names[:4]) == PAGE_HEAD_ORDER
    assert names[-1] == "connection"
    assert reply.header("Connection") in ("keep-alive", "close")


# -- the stdlib client ------------------------------------------------------------------------


def client_context(
    pki: PkiBundle,
    cert: IssuedCert | None = None,
    *,
    with_chain: bool = False,
    tls_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client trusting the gateway's server root, presenting ``cert`` (with its chain when
    asked), pinned to ``tls_version`` when given."""
    ctx = ssl.create_default_context(cadata=pki.server_ca.decode())
    if cert is not None:
        name = f"client-{id(cert)}-{int(with_chain)}"
        cert_path, key_path = pki.client_files(cert, name, with_chain=with_chain)
        ctx.load_cert_chain(cert_path, key_path)
    if tls_version is not None:
        ctx.minimum_version = tls_version
        ctx.maximum_version = tls_version
    return ctx


def _request_blocking(
    port: int,
    ctx: ssl.SSLContext,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes | None,
    repeat: int,
) -> list[Reply]:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=REQUEST_TIMEOUT_S)
    replies = []
    try:
        for _ in range(repeat):
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            replies.append(Reply(resp.status, resp.getheaders(), resp.read()))
    finally:
        conn.close()
    return replies


async def https_request(
    port: int,
    ctx: ssl.SSLContext,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One HTTPS request with the stdlib client, run in a worker thread."""
    replies = await trio.to_thread.run_sync(
        _request_blocking, port, ctx, method, path, headers or {}, body, 1
    )
    return replies[0]


async def https_requests(
    port: int, ctx: ssl.SSLContext, count: int, path: str = "/"
) -> list[Reply]:
    """``count`` requests over one keep-alive connection."""
    return await trio.to_thread.run_sync(_request_blocking, port, ctx, "GET", path, {}, None, count)


def https_get(
    port: int,
    *,
    cafile: Path,
    cert: Path | None = None,
    key: Path | None = None,
    headers: Mapping[str, str] | None = None,
    path: str = "/",
) -> Reply:
    """One blocking HTTPS GET to ``localhost:port`` with PEM files, as a script would send it."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return _request_blocking(port, ctx, "GET", path, headers or {}, None, 1)[0]


def demo_get(port: int, certs: Path, client: str | None = None, **options: Any) -> Reply:
    """One GET through a gateway using the demo PKI that ``certs init`` wrote into ``certs``,
    presenting ``client``.pem/.key when named; ``options`` go to :func:`https_get`."""
    return https_get(
        port,
        cafile=certs / "server-root-ca.pem",
        cert=certs / f"{client}.pem" if client else None,
        key=certs / f"{client}.key" if client else None,
        **options,
    )


# -- raw sockets ------------------------------------------------------------------------------


def raw_tls_socket(
    port: int, ctx: ssl.SSLContext, *, timeout: float = RAW_SOCKET_TIMEOUT_S
) -> ssl.SSLSocket:
    """A TLS connection to the gateway, handshake done, for writing HTTP bytes by hand."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a TLS close without close_notify counts)."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_head(sock: socket.socket) -> bytes:
    """Bytes up to and including the first blank line (one response head), read byte-wise so
    nothing after it is consumed."""
    data = bytearray()
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"connection closed inside a response head: {bytes(data)!r}")
        data += byte
    return bytes(data)


def tls_exchange(port: int, ctx: ssl.SSLContext, request: bytes) -> bytes:
    """Send ``request`` on one TLS connection; all bytes until the gateway closes it."""
    with raw_tls_socket(port, ctx) as tls:
        tls.sendall(request)
        return read_to_eof(tls)


def tcp_exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` over plain TCP; everything until the gateway closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def client_hello(server_name: str = "localhost") -> bytes:
    """A real ClientHello from the stdlib client (TLS 1.2 and 1.3 offered), as sent on the wire."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()  # stops at once, waiting for a ServerHello that never comes
    return outgoing.read()


def parse_responses(data: bytes, *, bodyless: Sequence[bool] = ()) -> list[Reply]:
    """Split raw HTTP/1.1 bytes into responses (Content-Length, chunked, or no body).

    ``bodyless[i]`` says response ``i`` answers a HEAD request; 1xx, 204 and 304 never have a
    body. A response without framing takes the rest of the data (read-until-close).
    """
    replies: list[Reply] = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"incomplete response head: {head[:200]!r}")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
        names = {k.lower(): v for k, v in headers}
        head_only = len(replies) < len(bodyless) and bodyless[len(replies)]
        if head_only or status < 200 or status in (204, 304):
            body = b""
        elif "content-length" in names:
            length = int(names["content-length"])
            body, rest = rest[:length], rest[length:]
        elif names.get("transfer-encoding", "").lower() == "chunked":
            body, rest = _dechunk(rest)
        else:
            body, rest = rest, b""
        replies.append(Reply(status, headers, body))
    return replies


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _trailers, _, data = data.partition(b"\r\n")
            return bytes(body), data
        body += data[:size]
        data = data[size + 2 :]
