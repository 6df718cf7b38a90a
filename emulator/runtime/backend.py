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
import itertools
import logging
import select
import socket
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import h11
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from emulator.errors import BackendConnectError, BackendTimeout
from emulator.model import BackendPool

__all__ = ["RETRY_METHODS", "BackendClient", "BackendConnection", "BackendTls"]

LOGGER = logging.getLogger("emulator.backend")

#: Connect attempts give up after this; Azure's own connect timeout is not documented, and a
#: local backend either answers at once or is not there.
CONNECT_TIMEOUT_S: Final = 5.0
#: Idle pooled connections older than this are closed rather than reused (most servers' keep-alive
#: timeouts are 5 s or more, so a reused connection is unlikely to race a server-side close).
IDLE_REUSE_S: Final = 4.0
MAX_IDLE_PER_ADDRESS: Final = 64
RECEIVE_SIZE: Final = 65536
#: Methods repeated on a new connection when a reused one failed before any response byte
#: (safe methods, RFC 9110 section 9.2.1; PUT and DELETE are idempotent too, but a gateway
#: that repeats a write surprises more than it helps).
RETRY_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS"})


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


def _raw_socket(stream: trio.abc.Stream) -> trio.socket.SocketType:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket


@dataclass(eq=False)
class BackendConnection:
    """One connection to a backend (TCP, or TLS over TCP) with its h11 client state.

    A request on a connection taken from the pool (``reused``) may be repeated once, on a new
    connection, when the old one fails before any response byte (see the module docstring);
    ``stream`` and ``conn`` are then replaced, so the caller keeps using the same object.
    """

    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    conn: h11.Connection
    address: tuple[str, int]
    idle_since: float = 0.0
    tls: BackendTls | None = None
    #: Taken from the pool of idle connections (cleared once it was replaced by a new one).
    reused: bool = False
    #: What the current request sent so far, to send again: its head and, once sent, its end
    #: (never body bytes: a request with a body is not repeated).
    _replay: list[h11.Event] = field(default_factory=list)
    _body_sent: bool = False
    _received: int = 0

    async def send(self, event: h11.Event) -> None:
        if isinstance(event, h11.Request):
            self._replay = [event]
            self._body_sent = False
            self._received = 0
        elif isinstance(event, h11.Data):
            self._body_sent = True
        else:
            self._replay.append(event)
        data = self.conn.send(event)
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                if self._may_repeat():
                    await self._repeat_on_new_connection(f"sending failed: {exc}")
                    return
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
                    if self._may_repeat():
                        await self._repeat_on_new_connection(f"reset: {exc}")
                        continue
                    raise BackendConnectError(
                        f"backend {self.addr_text} reset the connection"
                    ) from exc
                if not data and self._may_repeat():
                    await self._repeat_on_new_connection("closed without answering")
                    continue
                self._received += len(data)
                self.conn.receive_data(bytes(data))
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise BackendConnectError(
                    f"backend {self.addr_text} closed the connection without a complete response"
                )
            if isinstance(event, h11.Event):
                return event
            return h11.PAUSED

    def _may_repeat(self) -> bool:
        """True when the current request can go again on a new connection: this one came
        from the pool, not one response byte has arrived, and the request is a body-less
        GET, HEAD or OPTIONS."""
        if not self.reused or self._received or self._body_sent or not self._replay:
            return False
        request = self._replay[0]
        if not isinstance(request, h11.Request) or request.method not in RETRY_METHODS:
            return False
        for name, value in request.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return False
        return True

    async def _repeat_on_new_connection(self, reason: str) -> None:
        """Replace the failed pooled connection by a new one and send the request again.

        Raises:
            BackendConnectError, BackendTimeout: the new connection failed too (no third try).
        """
        request = self._replay[0]
        assert isinstance(request, h11.Request)
        LOGGER.info(
            "backend.retry backend=%s method=%s target=%s reason=%s: a reused keep-alive "
            "connection failed before any response byte; sending the request again on a new "
            "connection",
            self.addr_text,
            request.method.decode("ascii", "replace"),
            request.target.decode("latin-1"),
            reason,
        )
        self.reused = False
        old = self.stream
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(old)
        fresh = await open_backend_connection(self.address, self.tls)
        self.stream = fresh.stream
        self.conn = fresh.conn
        for event in self._replay:
            data = self.conn.send(event)
            if not data:
                continue
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise BackendConnectError(
                    f"backend {self.addr_text} closed the connection while sending"
                ) from exc

    @property
    def addr_text(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def reusable(self) -> bool:
        """True when the exchange ended cleanly and nothing else arrived: bytes past the end
        of the response would be read as the answer to the next request (response desync),
        so such a connection is closed, never pooled."""
        return (
            self.conn.our_state is h11.DONE
            and self.conn.their_state is h11.DONE
            and self.conn.trailing_data == (b"", False)
        )

    def peer_closed(self) -> bool:
        """True when an idle connection became readable: the backend closed it (EOF) or sent
        bytes nobody asked for. Either way it cannot carry another request."""
        poller = select.poll()
        poller.register(_raw_socket(self.stream).fileno(), select.POLLIN | select.POLLRDHUP)
        return bool(poller.poll(0))


class BackendClient:
    """Opens, reuses and closes backend connections for the whole gateway."""

    def __init__(self) -> None:
        self._idle: dict[_PoolKey, list[BackendConnection]] = defaultdict(list)
        self._round_robin: dict[str, itertools.count[int]] = {}

    def pick(self, pool: BackendPool, default_port: int) -> tuple[str, int]:
        """Round-robin over the pool's addresses (Azure's default distribution)."""
        if not pool.addresses:
            raise BackendConnectError(f"backend pool '{pool.name}' has no addresses")
        counter = self._round_robin.setdefault(pool.name, itertools.count())
        address = pool.addresses[next(counter) % len(pool.addresses)]
        return (address.host, address.port if address.port is not None else default_port)

    @asynccontextmanager
    async def connection(
        self, address: tuple[str, int], *, tls: BackendTls | None = None
    ) -> AsyncIterator[BackendConnection]:
        """A connection for one request; returned to the pool afterwards when still usable.

        ``tls`` makes it an HTTPS connection; idle connections are only reused for the same
        address *and* TLS settings (another SNI is another connection).
        The connection is closed when the body of the ``async with`` raises or leaves it in a
        state that cannot carry another request.
        """
        key = (address, tls)
        conn = self._take_idle(key)
        if conn is None:
            conn = await self._open(address, tls)
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok and conn.reusable() and len(self._idle[key]) < MAX_IDLE_PER_ADDRESS:
                conn.conn.start_next_cycle()
                conn.idle_since = trio.current_time()
                self._idle[key].append(conn)
            else:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(conn.stream)

    def _take_idle(self, key: _PoolKey) -> BackendConnection | None:
        idle = self._idle.get(key)
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < IDLE_REUSE_S and not conn.peer_closed():
                conn.reused = True
                return conn
            _raw_socket(conn.stream).close()
        return None

    async def _open(
        self, address: tuple[str, int], tls: BackendTls | None = None
    ) -> BackendConnection:
        return await open_backend_connection(address, tls)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                await trio.aclose_forcefully(conn.stream)
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
        return BackendConnection(tcp, h11.Connection(h11.CLIENT), address, tls=None)
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
    return BackendConnection(stream, h11.Connection(h11.CLIENT), address, tls=tls)
