"""The running gateway: listeners bound to local ports, serving connections until cancelled.

:class:`Gateway` is the one object the CLI, the tests and the pytest plugin drive. Build it from
a template (:meth:`Gateway.from_template`), from JSON already in memory or a resolved model
(:meth:`Gateway.from_config`), or from a :class:`~emulator.model.GatewayConfig` directly; then
either ``async with gateway:`` (it serves in the background for the block) or
``await nursery.start(gateway.serve)`` (it serves until the nursery is cancelled).

Resource ownership: the sockets belong to whoever started serving. Leaving the ``async with``
block, or cancelling ``serve``, closes every listening socket, every client connection and the
backend client before control returns, so the ports are free again at that point.

Hostile and busy clients: connections are counted, in total and per client address; one over
either limit is closed as soon as it is accepted (:mod:`emulator.runtime.listener`, which also
binds the ports and runs the accept loops). :meth:`Gateway.drain` is the
graceful stop (SIGTERM in the CLI): stop accepting, close idle keep-alive connections, let
requests in flight finish for a bounded grace period, then cancel what is left.
"""

from __future__ import annotations

import contextvars
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypedDict

import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from emulator.core.access import AccessRecord
from emulator.core.limits import ProxyLimits
from emulator.core.request.balancing import HealthTable, Rotation
from emulator.core.request.plan import PortPlanner
from emulator.core.request.routing import rules_by_port
from emulator.core.tls.policy import build_port_contexts, offer_alpn
from emulator.errors import StartupError
from emulator.loading import BackendSpec, Parameters, load_config, parse_backends
from emulator.logsafe import escaped_logger
from emulator.model import (
    GatewayConfig,
    Listener,
    ListenerProtocol,
    with_backend_overrides,
)
from emulator.runtime.backend import BackendClient
from emulator.runtime.listener import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_CLIENT,
    ConnectionLimits,
    PortRuntime,
    accept_loop,
    listen_socket,
)
from emulator.runtime.ocsp_client import OcspChecker
from emulator.runtime.probes import run_probes
from emulator.runtime.proxy import ClientConnection

__all__ = [
    "ACCESS_WAIT_S",
    "DRAIN_GRACE_S",
    "Gateway",
    "Readiness",
    "drain_serving",
    "serving_gateways",
]

LOGGER = escaped_logger("emulator.gateway")

#: Access records kept in memory for ``Gateway.access_log`` (tests, the later dashboard).
ACCESS_LOG_KEEP: Final = 10_000
#: Default bound of :meth:`Gateway.wait_for_access`: the gateway logs a request right after the
#: response's last byte, so anything longer than a few milliseconds means it never will.
ACCESS_WAIT_S: Final = 5.0
#: :meth:`Gateway.drain`: how long requests in flight may take to finish after a stop request
#: before they are cancelled (Kubernetes gives 30 s by default; a local tool should stop fast).
DRAIN_GRACE_S: Final = 5.0
#: While draining, how often connections are looked at to close the ones that became idle.
DRAIN_POLL_S: Final = 0.05
#: After the grace period, how long cancelled connections get to close their sockets (each
#: close is bounded by the TLS stream's close_notify timeout of 1 s).
DRAIN_CANCEL_WAIT_S: Final = 2.0
#: TLS alert ``no_renegotiation`` (RFC 5246 section 7.2.2), and OpenSSL's info-callback value
#: for an alert the server writes.
_ALERT_NO_RENEGOTIATION: Final = 100


def _check_listen(config: GatewayConfig, listen: Mapping[int, int]) -> None:
    """Refuse a ``listen`` entry for a port no listener uses: a typo must not go unnoticed."""
    frontend_ports = sorted({rule.listener.frontend_port for rule in config.rules})
    unknown = sorted(set(listen) - set(frontend_ports))
    if unknown:
        raise StartupError(
            f"listen maps template port {', '.join(map(str, unknown))}, which no listener of "
            "the gateway uses",
            file=config.file,
            fix="map one of the template's frontend ports: "
            + ", ".join(f"{{{port}: 0}}" for port in frontend_ports),
            code="EmulatorUnknownListenPort",
        )


def _trust_anchor(listener: Listener) -> x509.Certificate | None:
    """What a client should trust for this listener: the PFX chain's root when it carries one,
    else the leaf itself (trusted directly, which needs ``VERIFY_X509_PARTIAL_CHAIN``)."""
    server_cert = listener.server_certificate
    if listener.protocol is not ListenerProtocol.HTTPS or server_cert is None:
        return None
    if server_cert.chain:
        top = server_cert.chain[-1]
        if top.issuer == top.subject:
            return top
    return server_cert.certificate


class GatewayOptions(TypedDict, total=False):
    """The keyword options of :meth:`Gateway.from_template` and :meth:`Gateway.from_config`,
    for wrappers that pass them on unchanged (:class:`emulator.sync.Gateway`): written once
    here, so a new option cannot be forgotten in one of them. The meanings and defaults are
    those of :meth:`Gateway.from_template`."""

    backends: Mapping[str, BackendSpec] | None
    listen: Mapping[int, int] | None
    bind: str
    gateway: str | None
    server_ca: bytes | None
    limits: ProxyLimits


class Gateway:
    """A gateway serving ``config`` on local ports.

    Args:
        config: the resolved gateway model.
        bind: the local address to listen on (loopback by default: this is a development tool).
        listen: template frontend port → local port; 0 picks a free port. Ports not in the map
            are bound as written in the template.
        server_ca: PEM that clients should trust, overriding what :attr:`server_ca` derives from
            the listeners' PFX files (which usually do not carry their root).
        strip_client_cert_headers: remove, before the rewrite rules run, every client header that
            a rule fills from a client certificate variable (not what Azure does; off by default).
        access_log_sink: called with every access record, after it is kept in
            :attr:`access_log` (``--access-log``:
            :class:`emulator.runtime.access_log.AccessLogWriter`).
        ocsp: the OCSP checker (and so the answer cache) for ``verifyClientRevocation: OCSP``
            listeners; one is made when not given.
        explain: ``--explain``: Strict 400s carry the failure's explanation in a header.
        max_connections: open client connections at most, over all listeners.
        max_connections_per_client: open client connections at most from one IP address.
        limits: the timeouts and size limits of client connections (the defaults are the
            gateway's; tests pass small timeouts rather than wait the real ones out).

    One instance serves at most once at a time; after it stops it may be started again, and
    :attr:`ports` keeps the last bound ports until then.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        bind: str = "127.0.0.1",
        listen: Mapping[int, int] | None = None,
        server_ca: bytes | None = None,
        strip_client_cert_headers: bool = False,
        access_log_sink: Callable[[AccessRecord], None] | None = None,
        ocsp: OcspChecker | None = None,
        explain: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
        limits: ProxyLimits | None = None,
    ) -> None:
        if max_connections < 1 or max_connections_per_client < 1:
            msg = "max_connections and max_connections_per_client must be at least 1"
            raise ValueError(msg)
        self.config = config
        self.access_log_sink = access_log_sink
        self.ocsp = ocsp if ocsp is not None else OcspChecker()
        self.explain = explain
        self.bind = bind
        self.listen = dict(listen or {})
        self.strip_client_cert_headers = strip_client_cert_headers
        self.limits = limits if limits is not None else ProxyLimits()
        self.ports: dict[str, int] = {}
        self.access_log: deque[AccessRecord] = deque(maxlen=ACCESS_LOG_KEEP)
        self._server_ca = server_ca
        #: Backend health as the custom probes last saw it (shared by every connection).
        self.health = HealthTable()
        #: Where each pool's round-robin stands (shared by every port).
        self.rotation = Rotation()
        self._runtimes = self._build_runtimes()
        self._serving = False
        #: new, binding, serving, draining or stopped: what :meth:`readiness` reports.
        self._phase = "new"
        #: Set at the next access record; made only while someone waits (wait_for_access).
        self._access_event: trio.Event | None = None
        # Set while inside ``async with gateway:``; the nursery serving the block's listeners.
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._admission = ConnectionLimits(max_connections, max_connections_per_client)
        # Set while serving: the accept loops' scope, the bound sockets, the open connections.
        self._accepting: trio.CancelScope | None = None
        self._accept_done = trio.Event()
        self._sockets: list[trio.SocketListener] = []
        self._connections: set[_Tracked] = set()
        self._connections_changed = trio.Event()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_template(
        cls,
        path: str | os.PathLike[str],
        parameters: Parameters = (),
        *,
        backends: Mapping[str, BackendSpec] | None = None,
        listen: Mapping[int, int] | None = None,
        bind: str = "127.0.0.1",
        gateway: str | None = None,
        server_ca: bytes | None = None,
        limits: ProxyLimits | None = None,
    ) -> Self:
        """A gateway for the ARM template at ``path``, as ``appgw-emulator run`` would load it.

        Args:
            path: the deployment template (or one exported gateway resource).
            parameters: ``--parameters``-style strings, or a mapping of name to value (``bytes``
                values are base64-encoded, the form a template's ``data`` fields take).
            backends: pool name → replacement address(es), like ``--backend``; the port given
                replaces the backend settings' port for that pool.
            listen: template frontend port → local port; 0 picks a free port (read it back with
                :meth:`port`). A port no listener uses is an error, to catch typos.
            bind: local address to listen on.
            gateway: which gateway resource, when the template declares several.
            server_ca: PEM overriding :attr:`server_ca` (pass the root that issued the PFX).
            limits: timeouts and size limits of client connections (:class:`ProxyLimits`).

        Raises:
            TemplateError, UnsupportedFeature, CertificateError: the template cannot be run.
            StartupError: ``listen`` names a port that no listener uses.
            ValueError: a malformed ``backends`` entry.
        """
        config = load_config(path, parameters, gateway=gateway)
        return cls._prepared(
            config, backends, listen, bind=bind, server_ca=server_ca, limits=limits
        )

    @classmethod
    def from_config(
        cls,
        source: Mapping[str, Any] | GatewayConfig,
        parameters: Parameters = (),
        *,
        backends: Mapping[str, BackendSpec] | None = None,
        listen: Mapping[int, int] | None = None,
        bind: str = "127.0.0.1",
        gateway: str | None = None,
        server_ca: bytes | None = None,
        limits: ProxyLimits | None = None,
    ) -> Self:
        """A gateway from Python objects, for tests that do not keep a template file.

        ``source`` is a template as a dict (what ``json.load`` gives for a deployment template,
        evaluated like a file) or an already-built :class:`GatewayConfig`. The other arguments
        are those of :meth:`from_template`; ``parameters`` and ``gateway`` only apply to a dict.

        Raises:
            ValueError: ``parameters`` or ``gateway`` given with a ``GatewayConfig``.
            TemplateError, UnsupportedFeature, CertificateError, StartupError: as
                :meth:`from_template`.
        """
        if isinstance(source, GatewayConfig):
            if parameters or gateway is not None:
                msg = "parameters and gateway apply to a template; this config is already resolved"
                raise ValueError(msg)
            config = source
        else:
            config = load_config(source, parameters, gateway=gateway)
        return cls._prepared(
            config, backends, listen, bind=bind, server_ca=server_ca, limits=limits
        )

    @classmethod
    def _prepared(
        cls,
        config: GatewayConfig,
        backends: Mapping[str, BackendSpec] | None,
        listen: Mapping[int, int] | None,
        *,
        bind: str,
        server_ca: bytes | None,
        limits: ProxyLimits | None = None,
    ) -> Self:
        if backends:
            config = with_backend_overrides(config, parse_backends(backends))
        listen = dict(listen or {})
        _check_listen(config, listen)
        return cls(config, bind=bind, listen=listen, server_ca=server_ca, limits=limits)

    def _build_runtimes(self) -> dict[int, PortRuntime]:
        """One runtime per frontend port, holding every listener on it in Azure's order.

        An HTTPS port gets one TLS context per listener plus the port's starting context,
        which picks among them by SNI (:func:`build_port_contexts`).
        """
        by_port: dict[int, PortRuntime] = {}
        for port, rules in rules_by_port(self.config.rules).items():
            port_ctx = None
            if rules[0].listener.protocol is ListenerProtocol.HTTPS:
                port_ctx, contexts = build_port_contexts(rules)
                _log_refused_renegotiation(port_ctx, rules[0].listener.name)
                for listener_name, ctx in contexts.items():
                    _log_refused_renegotiation(ctx, listener_name)
                if self.config.enable_http2:
                    # OpenSSL asks the context the SNI callback switched to, so every one
                    # offers h2, before the first connection uses it.
                    for ctx in {id(c): c for c in (port_ctx, *contexts.values())}.values():
                        offer_alpn(ctx, enable_http2=True)
            planner = PortPlanner.build(
                rules,
                rotation=self.rotation,
                health=self.health,
                strip_client_cert_headers=self.strip_client_cert_headers,
                redirect_port=self._bound_port,
            )
            by_port[port] = PortRuntime(
                rules,
                port_ctx,
                planner,
                explain=self.explain,
                ocsp=self.ocsp,
                buffering=self.config.buffering,
                limits=self.limits,
            )
        return by_port

    def _bound_port(self, listener: Listener) -> int | None:
        """The local port a client reaches ``listener`` on (redirect Locations use it).

        A redirect may target a listener without a rule of its own; it shares its frontend
        port with listeners that are served, so the port is theirs.
        """
        if listener.name in self.ports:
            return self.ports[listener.name]
        for rule in self.config.rules:
            if rule.listener.frontend_port == listener.frontend_port:
                return self.ports.get(rule.listener.name)
        return None

    # -- what a client needs ------------------------------------------------------------------

    def local_port_for(self, listener: Listener) -> int:
        return self.listen.get(listener.frontend_port, listener.frontend_port)

    @property
    def listener_names(self) -> tuple[str, ...]:
        """The listeners this gateway serves, in rule order."""
        return tuple(rule.listener.name for rule in self.config.rules)

    def _listener_name(self, listener: str | None) -> str:
        names = self.listener_names
        if listener is None:
            if len(names) == 1:
                return names[0]
            msg = f"this gateway has several listeners; name one of: {', '.join(names)}"
            raise ValueError(msg)
        if listener not in names:
            msg = f"no listener '{listener}' is served; listeners: {', '.join(names)}"
            raise KeyError(msg)
        return listener

    def port(self, listener: str | None = None) -> int:
        """The local port ``listener`` is bound to (the only listener when ``None``).

        Raises:
            RuntimeError: the gateway has not started serving yet.
            KeyError, ValueError: an unknown listener, or ``None`` with several listeners.
        """
        name = self._listener_name(listener)
        if name not in self.ports:
            msg = "the gateway is not serving yet: use 'async with gateway:' or nursery.start"
            raise RuntimeError(msg)
        return self.ports[name]

    def url(self, listener_name: str | None = None, host: str = "localhost") -> str:
        """``https://localhost:PORT/`` for a listener (``localhost`` matches the usual SAN)."""
        name = self._listener_name(listener_name)
        listener = self.config.listener(name)
        scheme = "https" if listener.protocol is ListenerProtocol.HTTPS else "http"
        return f"{scheme}://{host}:{self.port(name)}/"

    @property
    def server_ca(self) -> bytes:
        """PEM certificates a client should trust to reach every HTTPS listener.

        The ``server_ca=`` given at construction when there was one. Otherwise, per listener,
        the root at the end of its PFX chain when the PFX carries it, else the listener's leaf
        certificate: an Azure PFX usually holds leaf + intermediates only. A leaf (or an
        intermediate) is not self-signed, so a stdlib client must set
        ``ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN`` to trust it directly. Empty when
        no listener is HTTPS.
        """
        if self._server_ca is not None:
            return self._server_ca
        seen: dict[bytes, bytes] = {}
        for rule in self.config.rules:
            anchor = _trust_anchor(rule.listener)
            if anchor is not None:
                seen.setdefault(
                    anchor.public_bytes(Encoding.DER), anchor.public_bytes(Encoding.PEM)
                )
        return b"".join(seen.values())

    def _record(self, record: AccessRecord) -> None:
        self.access_log.append(record)
        # Wake every waiter (the next wait arms a fresh event); before the sink, so a failing
        # sink cannot leave a ``wait_for_access`` hanging.
        event = self._access_event
        if event is not None:
            self._access_event = None
            event.set()
        if self.access_log_sink is not None:
            self.access_log_sink(record)

    async def wait_for_access(self, count: int = 1) -> None:
        """Wait until :attr:`access_log` holds at least ``count`` records.

        The gateway logs a request after sending the response's last byte, so a client that
        just read a response may look at the log a moment too early; this closes that gap.
        It waits as long as it takes: bound it with ``trio.fail_after(ACCESS_WAIT_S)``.
        """
        while len(self.access_log) < count:
            if self._access_event is None:
                self._access_event = trio.Event()
            await self._access_event.wait()

    async def _bind(self, runtime: PortRuntime) -> trio.SocketListener:
        listener = runtime.listener
        port = self.local_port_for(listener)
        sock = await listen_socket(self.bind, port, listener, file=self.config.file)
        bound = sock.getsockname()[1]
        for rule in runtime.rules:  # every listener of the port answers on it
            self.ports[rule.listener.name] = bound
        return trio.SocketListener(sock)

    async def _bind_all(self) -> list[tuple[trio.SocketListener, PortRuntime]]:
        """Bind every listener in rule order; on failure close what was bound and re-raise.

        ``ports`` keeps the ports bound before the failure (the CLI names the next listener).
        """
        listeners: list[tuple[trio.SocketListener, PortRuntime]] = []
        try:
            for runtime in self._runtimes.values():
                listeners.append((await self._bind(runtime), runtime))
        except BaseException:
            with trio.CancelScope(shield=True):
                for sock_listener, _ in listeners:
                    await sock_listener.aclose()
            raise
        return listeners

    def _claim(self) -> None:
        if self._serving:
            msg = "this gateway is already serving; one instance serves once at a time"
            raise RuntimeError(msg)
        self._serving = True
        self._phase = "binding"
        self.ports = {}

    def readiness(self) -> Readiness:
        """Whether every listener is bound and accepting, for ``GET /health``.

        Ready only between the last bind and the start of a drain: a load balancer must stop
        sending new connections as soon as a stop is asked for.
        """
        bound = {
            name: _address(self.bind, self.ports[name])
            for name in self.listener_names
            if name in self.ports and self._phase in ("serving", "draining")
        }
        return Readiness(ready=self._phase == "serving", state=self._phase, listeners=bound)

    async def serve(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every listener, report ``self`` as started, then serve until cancelled.

        Cancelling it closes the listening sockets, the client connections and the backend
        client before it returns.

        Raises:
            StartupError: a port is busy or needs root; nothing stays bound then.
            RuntimeError: this instance is already serving.
        """
        self._claim()
        try:
            listeners = await self._bind_all()
            await self._serve_bound(listeners, task_status=task_status)
        finally:
            self._serving = False
            self._phase = "stopped"

    async def _serve_bound(
        self,
        listeners: list[tuple[trio.SocketListener, PortRuntime]],
        *,
        task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        backend = BackendClient()
        registry = _SERVING.get()
        self._sockets = [sock_listener for sock_listener, _ in listeners]
        self._accepting = trio.CancelScope()
        self._accept_done = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._accept_all, listeners, backend, nursery)
                nursery.start_soon(run_probes, self.config.rules, self.health)
                if registry is not None:
                    registry.add(self)
                self._phase = "serving"
                task_status.started(self)
        finally:
            if registry is not None:
                registry.discard(self)
            self._accepting = None
            self._phase = "stopped"
            with trio.CancelScope(shield=True):
                await backend.aclose()
                for sock_listener, _ in listeners:
                    await sock_listener.aclose()

    async def _accept_all(
        self,
        listeners: list[tuple[trio.SocketListener, PortRuntime]],
        backend: BackendClient,
        connections: trio.Nursery,
    ) -> None:
        """Run every listener's accept loop until :meth:`drain` (or the nursery) cancels them."""
        assert self._accepting is not None
        try:
            with self._accepting:
                async with trio.open_nursery() as nursery:
                    for sock_listener, runtime in listeners:
                        nursery.start_soon(
                            self._accept_loop, sock_listener, runtime, backend, connections
                        )
        finally:
            self._accept_done.set()

    async def _accept_loop(
        self,
        sock_listener: trio.SocketListener,
        runtime: PortRuntime,
        backend: BackendClient,
        nursery: trio.Nursery,
    ) -> None:
        def admitted(stream: trio.SocketStream, peer: tuple[str, int]) -> None:
            nursery.start_soon(self._serve_client, stream, peer, runtime, backend)

        await accept_loop(sock_listener, runtime.listener.name, self._admission, admitted)

    async def _serve_client(
        self,
        stream: trio.SocketStream,
        peer: tuple[str, int],
        runtime: PortRuntime,
        backend: BackendClient,
    ) -> None:
        """Serve one admitted connection; it counts against the limits until it has closed."""
        tracked: _Tracked | None = None

        def on_access(record: AccessRecord) -> None:
            if tracked is not None:
                tracked.answered = True
            self._record(record)

        tracked = _Tracked(ClientConnection(runtime, stream, peer, backend, on_access))
        self._connections.add(tracked)
        try:
            with tracked.scope:
                await tracked.connection.run()
        finally:
            self._connections.discard(tracked)
            self._admission.release(peer[0])
            self._connections_changed.set()

    @property
    def open_connections(self) -> int:
        """Client connections open right now (admitted and not yet closed)."""
        return len(self._connections)

    async def drain(self, grace_s: float = DRAIN_GRACE_S) -> int:
        """Stop gracefully: no new connections, requests in flight may finish, then cancel.

        The listening sockets are closed at once (new clients are refused; the ports are free).
        A connection with no request in progress (idle keep-alive, or still in its handshake)
        is closed at once, and a busy one after its response, which says ``Connection:
        close``; after ``grace_s`` whatever is left is cancelled. Returns once every client
        connection is closed, with the number that had to be cancelled. The gateway keeps
        running otherwise (health probes); cancel ``serve`` or leave the ``async with`` block
        afterwards.
        A gateway that is not serving returns 0 at once.
        """
        accepting = self._accepting
        if accepting is None:
            await trio.lowlevel.checkpoint()
            return 0
        self._phase = "draining"
        accepting.cancel()
        for tracked in self._connections:
            # A request in progress is answered with Connection: close, and its connection
            # ends after the response.
            tracked.connection.close_after_response()
        with trio.CancelScope(shield=True):
            await self._accept_done.wait()
            for sock_listener in self._sockets:
                await sock_listener.aclose()
        LOGGER.info(
            "gateway.draining connections=%s grace=%ss: no longer accepting",
            len(self._connections),
            grace_s,
        )
        with trio.move_on_after(grace_s):
            while self._connections:
                for tracked in list(self._connections):
                    if tracked.idle():
                        tracked.scope.cancel()
                self._connections_changed = trio.Event()
                with trio.move_on_after(DRAIN_POLL_S):
                    await self._connections_changed.wait()
        cancelled = len(self._connections)
        for tracked in list(self._connections):
            tracked.scope.cancel()
        with trio.move_on_after(DRAIN_CANCEL_WAIT_S):
            while self._connections:
                self._connections_changed = trio.Event()
                await self._connections_changed.wait()
        if cancelled:
            LOGGER.warning(
                "gateway.drained cancelled=%s: requests still running after %ss were cut off",
                cancelled,
                grace_s,
            )
        else:
            LOGGER.info("gateway.drained: every request in flight finished")
        return cancelled

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """``async with gateway.running():`` — the same as ``async with gateway:``."""
        async with self as gateway:
            yield gateway

    async def __aenter__(self) -> Self:
        """Bind every listener, then serve in a nursery owned by this block.

        Ports are bound before the nursery opens, so a busy port raises a plain
        :class:`StartupError` rather than one wrapped in an exception group. The block runs
        inside the nursery: if serving crashes, the block is cancelled and the error raised.

        Raises:
            StartupError: a port is busy or needs root; nothing stays bound then.
            RuntimeError: this instance is already serving.
        """
        self._claim()
        try:
            listeners = await self._bind_all()
        except BaseException:
            self._serving = False
            self._phase = "stopped"
            raise
        manager = trio.open_nursery()
        try:
            nursery = await manager.__aenter__()
            await nursery.start(self._serve_bound, listeners)
        except BaseException as exc:
            self._serving = False
            self._phase = "stopped"
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._nursery = nursery
        self._nursery_manager = manager
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Stop serving and close every socket before returning.

        An exception from the block propagates as it was raised, not wrapped in the nursery's
        exception group, so ``pytest.raises`` and plain ``except`` keep working around it.
        """
        manager, nursery = self._nursery_manager, self._nursery
        if manager is None or nursery is None:
            msg = "__aexit__ without a matching __aenter__"
            raise RuntimeError(msg)
        self._nursery_manager = self._nursery = None
        nursery.cancel_scope.cancel()
        try:
            return bool(await manager.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False  # re-raised by the ``async with`` statement itself, unwrapped
            raise
        finally:
            self._serving = False
            self._phase = "stopped"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Readiness:
    """What ``GET /health`` reports for one gateway.

    Attributes:
        ready: every listener is bound and the gateway is not draining.
        state: ``new`` (never served), ``binding``, ``serving``, ``draining`` or ``stopped``.
        listeners: listener name to the ``HOST:PORT`` it is bound to (empty before binding).
    """

    ready: bool
    state: str
    listeners: Mapping[str, str]


@dataclass(eq=False, slots=True)
class _Tracked:
    """One open client connection and the scope that cancels it (compared by identity)."""

    connection: ClientConnection
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: A request on it was answered (or refused with a logged status).
    answered: bool = False

    def idle(self) -> bool:
        """True when a drain may close it at once: a keep-alive connection between requests.

        A connection that has had no request answered yet (still in its TLS handshake, or
        waiting for its first request) is not idle: its client is about to send a request,
        which it gets the drain's grace to do. nginx closes only keep-alive connections at a
        graceful stop; a new connection a stopping worker accepted is served. Without it, a
        reload under ``--workers`` would fail the handshakes the old workers had just
        accepted on a port the new workers keep serving.
        """
        return self.answered and self.connection.idle


def _log_refused_renegotiation(context: SSL.Context, listener: str) -> None:
    """Log a client's TLS 1.2 renegotiation attempt, which the context refuses.

    ``build_server_context`` sets ``OP_NO_RENEGOTIATION``: OpenSSL answers the client's new
    ClientHello with a ``no_renegotiation`` warning alert and carries on (the client usually
    gives up and closes). Nothing reaches the proxy but a closed connection, so the info
    callback, which sees every alert the server writes, is where it can be said.
    """

    def on_info(conn: SSL.Connection, where: int, ret: int) -> None:
        if where & SSL.SSL_CB_WRITE_ALERT and ret & 0xFF == _ALERT_NO_RENEGOTIATION:
            LOGGER.info(
                "tls.renegotiation_refused listener=%s sni=%s: the client asked to renegotiate "
                "TLS; refused with a no_renegotiation alert",
                listener,
                (conn.get_servername() or b"-").decode("ascii", "replace"),
            )

    context.set_info_callback(on_info)


#: The gateways serving inside the current :func:`serving_gateways` block (a context variable,
#: so tasks started from that block see it and nothing else does).
_SERVING: contextvars.ContextVar[set[Gateway] | None] = contextvars.ContextVar(
    "appgw_emulator_serving", default=None
)


@contextmanager
def serving_gateways() -> Iterator[set[Gateway]]:
    """Collect every :class:`Gateway` that starts serving from tasks started in this block.

    The CLI wraps its servers in it so that a stop signal can :func:`drain_serving` the
    gateways without being handed each one. The set is live: a gateway is in it while it
    serves.
    """
    serving: set[Gateway] = set()
    token = _SERVING.set(serving)
    try:
        yield serving
    finally:
        _SERVING.reset(token)


async def drain_serving(gateways: set[Gateway], grace_s: float = DRAIN_GRACE_S) -> int:
    """:meth:`Gateway.drain` every gateway in ``gateways`` at the same time.

    Returns the number of connections cancelled after the grace period, over all gateways.
    """
    cancelled: list[int] = []

    async def one(gateway: Gateway) -> None:
        cancelled.append(await gateway.drain(grace_s))

    async with trio.open_nursery() as nursery:
        for gateway in list(gateways):
            nursery.start_soon(one, gateway)
    return sum(cancelled)
