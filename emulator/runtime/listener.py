"""Where client connections come in: what a frontend port serves (:class:`PortRuntime`),
binding it, the accept loop, and the connection limits that refuse a connection as soon as it
is accepted.

Cut out of :class:`~emulator.runtime.gateway.Gateway` so the gateway reads as what it serves
and this module as how connections arrive; the log lines keep the gateway's logger
(``emulator.gateway``), which operators already filter on. A refused connection gets a
``connection.limit_reached`` warning, at most one line per second with the count since the
last one.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio
from OpenSSL import SSL

from emulator.core.limits import ProxyLimits
from emulator.core.request.plan import PortPlanner
from emulator.core.tls.policy import VerdictCache
from emulator.errors import StartupError
from emulator.logsafe import escaped_logger
from emulator.model import Buffering, Listener, RoutingRule
from emulator.runtime.ocsp_client import OcspChecker

__all__ = [
    "LISTEN_BACKLOG",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_CLIENT",
    "ConnectionLimits",
    "PortRuntime",
    "accept_loop",
    "listen_socket",
]

LOGGER = escaped_logger("emulator.gateway")

#: Accepted-connection queue per listening socket (nginx's default on Linux is 511).
LISTEN_BACKLOG: Final = 511
#: Open client connections the whole gateway keeps; one more is closed as soon as it is accepted.
#: Each costs a file descriptor (two while it talks to a backend), so this stays well under a
#: raised ``ulimit -n``; nginx's ``worker_connections`` plays the same role. Azure scales out
#: instead and documents no number.
MAX_CONNECTIONS: Final = 10_000
#: Open connections per client IP address, so one noisy client (a load test, a slow-loris
#: script) cannot take every slot from the others. Generous: local load tests come from one
#: address. nginx's ``limit_conn`` is the model; Azure documents no such limit.
MAX_CONNECTIONS_PER_CLIENT: Final = 2_000
#: ``connection.limit_reached`` is logged at most this often; the line counts what it skipped.
LIMIT_LOG_INTERVAL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class PortRuntime:
    """What a connection needs to know about the frontend port that accepted it (built once
    when the gateway starts, shared by the port's connections)."""

    #: The routing rules of every listener on the port, in the order Azure tries them.
    rules: tuple[RoutingRule, ...]
    #: The context every handshake starts with (None: an HTTP port); its SNI callback switches
    #: to the selected listener's own context and records the rule.
    ssl_context: SSL.Context | None
    #: Decides each request of the port (it holds the port's compiled rewrite rule sets).
    planner: PortPlanner
    #: ``--explain``: Strict 400s carry the failure's explanation in ``plan.EXPLAIN_HEADER``.
    explain: bool = False
    #: Revocation lookups for ``verifyClientRevocation: OCSP`` (one checker per gateway).
    ocsp: OcspChecker | None = None
    #: ``globalConfiguration``: buffer request bodies / responses (False: stream them).
    buffering: Buffering = field(default_factory=Buffering)
    limits: ProxyLimits = field(default_factory=ProxyLimits)
    #: Strict verdicts of the port's handshakes (clients reconnect with the same chain).
    verdicts: VerdictCache = field(default_factory=VerdictCache)

    @property
    def listener(self) -> Listener:
        """The port's first listener (for messages about the port itself)."""
        return self.rules[0].listener

    @property
    def port(self) -> int:
        return self.listener.frontend_port


@dataclass(slots=True)
class ConnectionLimits:
    """Open connections in total and per client address, and the refusal log's throttle."""

    max_total: int
    max_per_client: int
    total: int = 0
    per_client: Counter[str] = field(default_factory=Counter)
    refused_unlogged: int = 0
    last_logged: float | None = None

    def admit(self, peer: tuple[str, int], listener: str) -> bool:
        """Count the connection in, or log why it is refused (the caller closes it)."""
        client_ip = peer[0]
        if self.total >= self.max_total:
            scope, limit, active = "gateway", self.max_total, self.total
        elif self.per_client[client_ip] >= self.max_per_client:
            scope, limit, active = "client", self.max_per_client, self.per_client[client_ip]
        else:
            self.total += 1
            self.per_client[client_ip] += 1
            return True
        self.refused_unlogged += 1
        now = trio.current_time()
        if self.last_logged is None or now - self.last_logged >= LIMIT_LOG_INTERVAL_S:
            LOGGER.warning(
                "connection.limit_reached listener=%s client=%s:%s scope=%s limit=%s open=%s "
                "refused=%s: connection closed on accept (refused counts this one and those "
                "not logged in the last %ss)",
                listener,
                *peer,
                scope,
                limit,
                active,
                self.refused_unlogged,
                LIMIT_LOG_INTERVAL_S,
            )
            self.last_logged = now
            self.refused_unlogged = 0
        return False

    def release(self, client_ip: str) -> None:
        self.total -= 1
        self.per_client[client_ip] -= 1
        if self.per_client[client_ip] <= 0:
            del self.per_client[client_ip]


async def listen_socket(
    bind: str, port: int, listener: Listener, *, file: str | None
) -> trio.socket.SocketType:
    """A socket listening on ``bind:port`` for ``listener`` (port 0: any free port).

    Raises:
        StartupError: the port needs root (``EmulatorPrivilegedPort``), is in use
            (``EmulatorPortInUse``) or cannot be bound (``EmulatorBindFailed``); nothing stays
            bound then.
    """
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((bind, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        # Tried, not predicted from the uid: CAP_NET_BIND_SERVICE, or a container whose
        # net.ipv4.ip_unprivileged_port_start is 0, lets a non-root process bind 444.
        if exc.errno == errno.EACCES and 0 < port < 1024:
            raise StartupError(
                f"listener '{listener.name}' uses port {port}, which this process may not "
                "bind (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
                file=file,
                path=listener.path,
                fix=f"map it to a free local port: --listen {listener.frontend_port}="
                f"8{port:03d} (or --listen {listener.frontend_port}=0 for any free port)",
                code="EmulatorPrivilegedPort",
            ) from exc
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {bind} is already in use (listener '{listener.name}')",
                fix="stop what uses it, or choose another port: "
                f"--listen {listener.frontend_port}=PORT",
                code="EmulatorPortInUse",
            ) from exc
        raise StartupError(
            f"cannot listen on {bind}:{port} for listener '{listener.name}': {exc.strerror}",
            fix="check --bind and --listen",
            code="EmulatorBindFailed",
        ) from exc
    return sock


async def accept_loop(
    sock_listener: trio.SocketListener,
    listener_name: str,
    limits: ConnectionLimits,
    admitted: Callable[[trio.SocketStream, tuple[str, int]], None],
) -> None:
    """Accept connections until cancelled; each one the limits admit goes to ``admitted``
    (which starts serving it, and calls ``limits.release`` when it closes), the others are
    closed at once. Running out of descriptors or memory is logged and retried, not fatal."""
    while True:
        try:
            stream = await sock_listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                LOGGER.error(  # noqa: TRY400 - a known resource limit, not a bug
                    "accept.failed listener=%s: %s; retrying in 0.1 s",
                    listener_name,
                    exc,
                )
                await trio.sleep(0.1)
                continue
            raise
        try:
            # No TCP_NODELAY here: trio.SocketStream sets it when it wraps the socket.
            address = stream.socket.getpeername()
        except OSError:
            # The client is already gone (reset while queued); nothing to serve.
            await trio.aclose_forcefully(stream)
            continue
        peer = (str(address[0]), int(address[1]))
        if not limits.admit(peer, listener_name):
            await trio.aclose_forcefully(stream)
            continue
        admitted(stream, peer)
