"""HTTP/1.1 client side towards the backend pool: connections, reuse, and error mapping.

One :class:`BackendClient` per gateway keeps idle keep-alive connections per backend address.
A connection that the backend closed while idle is detected before reuse (a non-blocking peek
sees EOF) and dropped, so a request is never written into a dead socket. The backend can still
close it a moment later, while our request is on its way (its keep-alive timeout firing just
then): when a *reused* connection fails before a single response byte arrived, a GET, HEAD or
OPTIONS without a body is sent once more on a new connection (RFC 9110 section 9.2.2: those are
safe to repeat; nginx's ``proxy_next_upstream error`` does the same). Anything else, a POST
above all, is never repeated: the client gets 502.

trio's network errors are mapped exactly once, here (httpcore's ``map_exceptions`` idea):
connection failures become :class:`~emulator.errors.BackendConnectError` (the proxy answers
502) and timeouts :class:`~emulator.errors.BackendTimeout` (504).

HTTPS backends (backend settings ``protocol: Https``) get TLS from the stdlib ``ssl`` module via
``trio.SSLStream``, configured by :class:`BackendTls`: the trusted roots
(``trustedRootCertificates``, else the system's well-known CAs, as on Azure v2), the SNI, and
Azure's two switches ``validateCertChainAndExpiry`` and ``validateSNI``. A failed handshake or
check is a connection failure (502), like an unreachable backend.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Final, TypeAlias

import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from emulator.core.http.codec import BodyReader, HttpError, ResponseHead, parse_response_head
from emulator.errors import BackendConnectError, BackendTimeout
from emulator.logsafe import escaped_logger
from emulator.runtime.transport import SocketTransport, detach_socket, socket_closed_by_peer

__all__ = [
    "RETRY_METHODS",
    "BackendClient",
    "BackendConnection",
    "BackendTls",
    "open_backend_connection",
    "read_response",
    "receive_response_head",
]

LOGGER = escaped_logger("emulator.backend")

#: Connect attempts give up after this; Azure's own connect timeout is not documented, and a
#: local backend either answers at once or is not there.
CONNECT_TIMEOUT_S: Final = 5.0
#: Idle pooled connections older than this are closed rather than reused (most servers' keep-alive
#: timeouts are 5 s or more, so a reused connection is unlikely to race a server-side close).
IDLE_REUSE_S: Final = 4.0
MAX_IDLE_PER_ADDRESS: Final = 64
#: Towards backends: TLS 1.2 at least, 1.3 preferred, whatever the listener's SSL policy
#: (application-gateway-tls-version-retirement, "Backend TLS connections").
BACKEND_MIN_TLS: Final = ssl.TLSVersion.TLSv1_2
BACKEND_MAX_TLS: Final = ssl.TLSVersion.TLSv1_3
RECEIVE_SIZE: Final = 65536
#: Methods repeated on a new connection when a reused one failed before any response byte
#: (safe methods, RFC 9110 section 9.2.1; PUT and DELETE are idempotent too, but a gateway
#: that repeats a write surprises more than it helps).
RETRY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class BackendTls:
    """TLS towards an HTTPS backend, from its backend settings.

    Attributes:
        server_name: the SNI to send and, with ``validate_sni``, the name the certificate must
            carry (``sniName``, else the Host the backend receives).
        trusted_roots_pem: the uploaded roots (PEM); None trusts the system's CAs.
        validate_chain: ``validateCertChainAndExpiry`` (default true).
        validate_sni: ``validateSNI`` (default true): the certificate's CN or a DNS SAN must
            match ``server_name``, wildcards in the left-most label allowed.
    """

    server_name: str | None
    trusted_roots_pem: bytes | None
    validate_chain: bool = True
    validate_sni: bool = True

    def context(self) -> ssl.SSLContext:
        return _client_context(self.trusted_roots_pem, self.validate_chain)


@functools.lru_cache(maxsize=64)
def _client_context(roots_pem: bytes | None, validate_chain: bool) -> ssl.SSLContext:
    """One stdlib client context per trust setting (loading the system store takes time)."""
    ctx = ssl.create_default_context()
    if roots_pem is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=roots_pem.decode("ascii"))
    # The name is checked by _name_matches (CN or SAN, as Azure's validateSNI says), not by
    # the ssl module (SAN only), so the two switches stay independent.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED if validate_chain else ssl.CERT_NONE
    # "For V2 SKUs: the connections to backend servers will always be with preferred TLS v1.3
    # and minimum up to TLS v1.2" (TLS 1.0/1.1 retirement page, "Backend TLS connections");
    # the SSL policy has no say here.
    ctx.minimum_version = BACKEND_MIN_TLS
    ctx.maximum_version = BACKEND_MAX_TLS
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _name_matches(der: bytes, name: str) -> bool:
    """True when the certificate names ``name`` in a DNS SAN, an IP SAN or its CN."""
    cert = x509.load_der_x509_certificate(der)
    wanted = name.lower().rstrip(".")
    candidates: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        candidates += [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
        candidates += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    candidates += [
        str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    for candidate in candidates:
        if candidate == wanted:
            return True
        wildcard_ok = candidate.startswith("*.") and "." in wanted
        if wildcard_ok and wanted.split(".", 1)[1] == candidate[2:]:
            return True
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class BackendConnection:
    """One connection to a backend (TCP, or TLS over TCP): bytes out, bytes in, and what has
    been received but not yet used.

    The proxy parses responses itself (:mod:`emulator.core.http.codec`) from :attr:`buffer`; this
    class only moves bytes and knows when a request may be sent again. A plain TCP connection
    is driven through its socket directly (:class:`emulator.runtime.transport.SocketTransport`
    says why); HTTPS backends go through ``trio.SSLStream``.

    A request on a connection taken from the pool (``reused``) may be repeated once, on a new
    connection, when the old one fails before any response byte (see the module docstring);
    the socket or stream is then replaced, so the caller keeps using the same object.
    """

    __slots__ = (
        "_just_sent",
        "_local_port",
        "_received",
        "_repeatable",
        "_replay",
        "_sock",
        "address",
        "buffer",
        "eof",
        "idle_since",
        "reused",
        "stream",
        "tls",
    )

    def __init__(
        self,
        address: tuple[str, int],
        *,
        sock: SocketTransport | None = None,
        stream: trio.SSLStream[trio.SocketStream] | None = None,
        tls: BackendTls | None = None,
    ) -> None:
        self.address = address
        #: The TCP socket of a plain connection (non-blocking); None for TLS.
        self._sock = sock
        #: The TLS stream of an HTTPS connection; None for plain TCP.
        self.stream = stream
        self.tls = tls
        #: Bytes received and not consumed yet (the start of a response, or its body).
        self.buffer = b""
        #: The backend closed its side (a receive returned no bytes).
        self.eof = False
        self.idle_since = 0.0
        #: Taken from the pool of idle connections (cleared once it was replaced by a new one).
        self.reused = False
        #: The current request's head, to send again (never body bytes: a request with a body
        #: is not repeatable), and whether the request may be repeated at all.
        self._replay = b""
        self._repeatable = False
        self._received = 0
        #: A request went out since the last read: its answer cannot be there yet, so the
        #: next read waits for readiness first instead of failing a recv with EAGAIN.
        self._just_sent = False
        #: The source port, read from the socket once (None: not read yet).
        self._local_port: int | None = None

    @property
    def addr_text(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def local_port(self) -> int | None:
        """The gateway's source port of this connection (the access log's
        ``upstreamSourcePort``); None when the socket is already gone. Read once per socket:
        a pooled connection serves many requests from the same port."""
        if self._local_port is not None:
            return self._local_port
        sock = self._sock.socket if self._sock is not None else None
        if sock is None and self.stream is not None:
            transport = self.stream.transport_stream
            sock = transport.socket
        if sock is None:
            return None
        try:
            self._local_port = int(sock.getsockname()[1])
        except OSError:
            return None
        return self._local_port

    def start_request(self, head: bytes, *, repeatable: bool) -> None:
        """A new request begins with ``head``: remember it in case it has to go again."""
        self._replay = head
        self._repeatable = repeatable
        self._received = 0

    async def send(self, data: bytes, *, deadline: float = math.inf) -> None:
        """Send ``data``: the request's head, or body bytes; the backend must have taken all
        of it by ``deadline`` (trio's clock; one deadline per call, as nginx's
        ``proxy_send_timeout`` bounds each write).

        Raises:
            BackendConnectError: the connection broke and the request cannot be repeated.
            BackendTimeout: the backend did not read ``data`` by ``deadline``.
        """
        self._just_sent = True
        try:
            await self._send_raw(data, deadline)
        except trio.TooSlowError as exc:
            raise BackendTimeout(
                f"backend {self.addr_text} stopped reading the request (send timed out)"
            ) from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self._may_repeat():
                await self._repeat_on_new_connection(f"sending failed: {exc}")
                return
            raise BackendConnectError(
                f"backend {self.addr_text} closed the connection while sending"
            ) from exc

    async def receive(self, deadline: float) -> bytes:
        """The backend's next bytes (b"" once it closed), waiting until ``deadline`` at most.

        Raises:
            trio.TooSlowError: nothing arrived by ``deadline`` (trio's clock).
            BackendConnectError: the connection broke (after one repeat, when allowed).
        """
        while True:
            try:
                data = await self._receive_raw(deadline)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                if self._may_repeat():
                    await self._repeat_on_new_connection(f"reset: {exc}")
                    continue
                raise BackendConnectError(f"backend {self.addr_text} reset the connection") from exc
            if not data and self._may_repeat():
                await self._repeat_on_new_connection("closed without answering")
                continue
            self._received += len(data)
            return data

    async def _send_raw(self, data: bytes, deadline: float = math.inf) -> None:
        sock = self._sock
        if sock is None:
            assert self.stream is not None
            with trio.fail_at(deadline):
                await self.stream.send_all(data)
            return
        await sock.send_all(data, deadline)

    async def _receive_raw(self, deadline: float) -> bytes:
        sock = self._sock
        if sock is None:
            assert self.stream is not None
            with trio.fail_at(deadline):
                return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        wait = self._just_sent
        self._just_sent = False
        return await sock.receive(RECEIVE_SIZE, deadline, wait_first=wait)

    def _may_repeat(self) -> bool:
        """True when the current request can go again on a new connection: this one came
        from the pool, not one response byte has arrived, and :meth:`start_request` said the
        request may go again (a body-less GET, HEAD or OPTIONS)."""
        return self.reused and self._repeatable and not self._received and bool(self._replay)

    async def _repeat_on_new_connection(self, reason: str) -> None:
        """Replace the failed pooled connection by a new one and send the request again.

        Raises:
            BackendConnectError, BackendTimeout: the new connection failed too (no third try).
        """
        method, target, _version = self._replay.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        LOGGER.info(
            "backend.retry backend=%s method=%s target=%s reason=%s: a reused keep-alive "
            "connection failed before any response byte; sending the request again on a new "
            "connection",
            self.addr_text,
            method,
            target,
            reason,
        )
        self.reused = False
        self.close()
        fresh = await open_backend_connection(self.address, self.tls)
        self._sock, self.stream = fresh._sock, fresh.stream
        self._local_port = None
        self.buffer = b""
        self.eof = False
        try:
            await self._send_raw(self._replay)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise BackendConnectError(
                f"backend {self.addr_text} closed the connection while sending"
            ) from exc

    @property
    def clean(self) -> bool:
        """Nothing was received past the end of the last response, and the backend did not
        close: the connection may carry another request."""
        return not self.buffer and not self.eof

    def take_buffered(self) -> bytes:
        """What was received and not used yet (the first bytes after a 101), now the caller's."""
        data, self.buffer = self.buffer, b""
        return data

    def body_bytes(self, reader: BodyReader) -> bytes | None:
        """Decode the response body from what was received: body bytes (b"" when more must be
        received first, :meth:`fill`), or None once the body has ended.

        Raises:
            BackendConnectError: the body's framing is broken.
        """
        try:
            while not reader.done:
                data = self.buffer
                if data:
                    self.buffer = b""
                    body, self.buffer = reader.feed(data)
                    if body:
                        return body
                elif self.eof:
                    reader.eof()
                else:
                    return b""
        except HttpError as exc:
            raise BackendConnectError(
                f"backend {self.addr_text} broke its response body: {exc.reason}"
            ) from exc
        return None

    async def fill(self, deadline: float) -> None:
        """Receive the backend's next bytes into :attr:`buffer` (or note its EOF).

        Raises:
            trio.TooSlowError: nothing by ``deadline``.
            BackendConnectError: the connection broke.
        """
        data = await self.receive(deadline)
        if data:
            self.buffer += data
        else:
            self.eof = True

    def peer_closed(self) -> bool:
        """True when an idle connection became readable: the backend closed it (EOF) or sent
        bytes nobody asked for. Either way it cannot carry another request."""
        sock = self._sock
        if sock is not None:
            return sock.closed_by_peer()
        assert self.stream is not None
        return socket_closed_by_peer(self.stream.transport_stream)

    def close(self) -> None:
        """Close at once, without TLS close_notify (a backend connection is dropped, not
        ended); no task may be waiting on it."""
        sock = self._sock
        if sock is not None:
            self._sock = None
            sock.close()
        elif self.stream is not None:
            self.stream.transport_stream.socket.close()
            self.stream = None


class BackendClient:
    """Opens, reuses and closes backend connections for the whole gateway."""

    def __init__(self) -> None:
        self._idle: dict[_PoolKey, list[BackendConnection]] = defaultdict(list)

    async def acquire(
        self, address: tuple[str, int], *, tls: BackendTls | None = None
    ) -> BackendConnection:
        """A connection for one request: an idle one of the pool, else a new one.

        ``tls`` makes it an HTTPS connection; idle connections are only reused for the same
        address *and* TLS settings (another SNI is another connection). Every connection
        acquired goes back through :meth:`release`.

        Raises:
            BackendConnectError, BackendTimeout: a new connection could not be opened.
        """
        conn = self._take_idle((address, tls))
        if conn is None:
            conn = await open_backend_connection(address, tls)
        return conn

    def release(self, conn: BackendConnection, *, reusable: bool) -> None:
        """Give ``conn`` back after a request: pooled when ``reusable`` (the exchange ended
        cleanly and nothing else arrived), closed otherwise.

        Bytes past the end of a response would be read as the answer to the next request
        (response desync), so the caller says ``reusable`` only when :attr:`buffer` is empty.
        """
        idle = self._idle[(conn.address, conn.tls)]
        if reusable and not conn.buffer and not conn.eof and len(idle) < MAX_IDLE_PER_ADDRESS:
            conn.idle_since = time.monotonic()
            idle.append(conn)
            return
        conn.close()

    def _take_idle(self, key: _PoolKey) -> BackendConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < IDLE_REUSE_S and not conn.peer_closed():
                conn.reused = True
                return conn
            conn.close()
        return None

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


_PoolKey: TypeAlias = tuple[tuple[str, int], BackendTls | None]


async def open_backend_connection(
    address: tuple[str, int], tls: BackendTls | None = None
) -> BackendConnection:
    """A new connection to ``address``, TLS-wrapped and checked when ``tls`` is given.

    Also used by the health probes, which never reuse connections.

    Raises:
        BackendConnectError: refused, unreachable, or the TLS handshake / name check failed.
        BackendTimeout: the TCP connect or the TLS handshake took longer than
            ``CONNECT_TIMEOUT_S``.
    """
    host, port = address
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            tcp = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError as exc:
        raise BackendTimeout(
            f"connecting to backend {host}:{port} timed out after {CONNECT_TIMEOUT_S:g} s"
        ) from exc
    except OSError as exc:
        raise BackendConnectError(
            f"cannot connect to backend {host}:{port}: {exc.strerror or exc}"
        ) from exc
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        # From here on the socket is driven directly (see BackendConnection).
        return BackendConnection(address, sock=detach_socket(tcp))
    server_name = tls.server_name if tls.server_name and not _is_ip(tls.server_name) else None
    stream = trio.SSLStream(tcp, tls.context(), server_hostname=server_name)
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            await stream.do_handshake()
    except trio.TooSlowError as exc:
        await trio.aclose_forcefully(tcp)
        raise BackendTimeout(
            f"TLS handshake with backend {host}:{port} timed out after {CONNECT_TIMEOUT_S:g} s"
        ) from exc
    except (trio.BrokenResourceError, ssl.SSLError) as exc:
        await trio.aclose_forcefully(tcp)
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
        raise BackendConnectError(
            f"TLS handshake with backend {host}:{port} failed: {reason}"
        ) from exc
    if tls.validate_sni and tls.server_name:
        der = stream.getpeercert(binary_form=True)
        if der is None or not _name_matches(der, tls.server_name):
            await trio.aclose_forcefully(stream)
            raise BackendConnectError(
                f"backend {host}:{port}: its certificate does not name '{tls.server_name}' "
                "(validateSNI: the CN or a DNS name must match the SNI)"
            )
    return BackendConnection(address, stream=stream, tls=tls)


async def read_response(
    conn: BackendConnection, *, request_method: str, deadline: float, max_body: int
) -> tuple[ResponseHead, bytes]:
    """A whole response (1xx skipped), keeping at most ``max_body`` bytes of its body; for
    callers that need the answer, not a stream (the health probes).

    Raises:
        trio.TooSlowError: not complete by ``deadline``.
        BackendConnectError: invalid response, or the connection ended early.
    """
    while True:
        head = await receive_response_head(conn, request_method=request_method, deadline=deadline)
        if not 100 <= head.status < 200:
            break
    reader = BodyReader(head.framing, head.length)
    body = bytearray()
    while True:
        data = conn.buffer
        conn.buffer = b""
        try:
            if data:
                chunk, conn.buffer = reader.feed(data)
                if len(body) < max_body:
                    body += chunk[: max_body - len(body)]
            elif conn.eof:
                reader.eof()
        except HttpError as exc:
            raise BackendConnectError(
                f"backend {conn.addr_text} sent an invalid HTTP response: {exc.reason}"
            ) from exc
        if reader.done:
            return head, bytes(body)
        if not conn.buffer:
            await conn.fill(deadline)


async def receive_response_head(
    conn: BackendConnection, *, request_method: str, deadline: float
) -> ResponseHead:
    """The next response head on ``conn`` (an interim 1xx is returned like any other).

    Raises:
        trio.TooSlowError: no complete head by ``deadline``.
        BackendConnectError: the backend sent something that is not an HTTP response, or
            closed the connection before a complete head.
    """
    while True:
        if not conn.buffer and not conn.eof:
            await conn.fill(deadline)
            continue
        try:
            parsed = parse_response_head(conn.buffer, request_method=request_method)
        except HttpError as exc:
            raise BackendConnectError(
                f"backend {conn.addr_text} sent an invalid HTTP response: {exc.reason}"
            ) from exc
        if parsed is not None:
            head, used = parsed
            conn.buffer = conn.buffer[used:]
            return head
        if conn.eof:
            raise BackendConnectError(
                f"backend {conn.addr_text} closed the connection without a complete response"
            )
        await conn.fill(deadline)
