"""HTTP/1.1 client side towards the backend pool: connections, reuse, and error mapping.

One :class:`BackendClient` per gateway keeps idle keep-alive connections per backend address.
A connection that the backend closed while idle is detected before reuse (a non-blocking peek
sees EOF) and dropped, so a request is never written into a dead socket.

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
from dataclasses import dataclass
from typing import Final, TypeAlias

import h11
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from emulator.errors import BackendConnectError, BackendTimeout
from emulator.model import BackendPool

__all__ = ["BackendClient", "BackendConnection", "BackendTls"]

LOGGER = logging.getLogger("emulator.backend")

#: Connect attempts give up after this; Azure's own connect timeout is not documented, and a
#: local backend either answers at once or is not there.
CONNECT_TIMEOUT_S: Final = 5.0
#: Idle pooled connections older than this are closed rather than reused (most servers' keep-alive
#: timeouts are 5 s or more, so a reused connection is unlikely to race a server-side close).
IDLE_REUSE_S: Final = 4.0
MAX_IDLE_PER_ADDRESS: Final = 64
RECEIVE_SIZE: Final = 65536


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
    """One connection to a backend (TCP, or TLS over TCP) with its h11 client state."""

    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
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
                self.conn.receive_data(bytes(data))
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
        return BackendConnection(tcp, h11.Connection(h11.CLIENT), address)
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
    return BackendConnection(stream, h11.Connection(h11.CLIENT), address)
