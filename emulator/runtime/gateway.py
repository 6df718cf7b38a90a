"""The running gateway: listeners bound to local ports, serving connections until cancelled.

:class:`Gateway` is the one object the CLI, the tests and (later) the pytest plugin drive: give
it a :class:`~emulator.model.GatewayConfig`, ``await nursery.start(gateway.serve)`` (or use it
as an async context manager), and read the bound ports from :attr:`Gateway.ports`.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import trio

from emulator.core.tls_policy import build_server_context
from emulator.errors import StartupError, UnsupportedFeature
from emulator.model import GatewayConfig, Listener, ListenerProtocol
from emulator.runtime.backend import BackendClient
from emulator.runtime.proxy import AccessRecord, ListenerRuntime, serve_connection

__all__ = ["Gateway"]

LOGGER = logging.getLogger("emulator.gateway")

#: Accepted-connection queue per listening socket (nginx's default on Linux is 511).
LISTEN_BACKLOG: Final = 511
#: Access records kept in memory for ``Gateway.access_log`` (tests, the later dashboard).
ACCESS_LOG_KEEP: Final = 10_000


class Gateway:
    """A gateway serving ``config`` on local ports.

    Args:
        config: the resolved gateway model.
        bind: the local address to listen on (loopback by default: this is a development tool).
        listen: template frontend port → local port; 0 picks a free port. Ports not in the map
            are bound as written in the template.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        bind: str = "127.0.0.1",
        listen: Mapping[int, int] | None = None,
    ) -> None:
        self.config = config
        self.bind = bind
        self.listen = dict(listen or {})
        self.ports: dict[str, int] = {}
        self.access_log: deque[AccessRecord] = deque(maxlen=ACCESS_LOG_KEEP)
        self._runtimes = self._build_runtimes()

    def _build_runtimes(self) -> dict[int, ListenerRuntime]:
        by_port: dict[int, ListenerRuntime] = {}
        for rule in self.config.rules:
            listener = rule.listener
            if listener.frontend_port in by_port:
                other = by_port[listener.frontend_port].listener.name
                raise UnsupportedFeature(
                    f"listeners '{other}' and '{listener.name}' share frontend port "
                    f"{listener.frontend_port}; several listeners on one port are not emulated yet",
                    file=self.config.file,
                    path=listener.path,
                    fix="give each listener its own frontend port",
                )
            ctx = (
                build_server_context(listener)
                if listener.protocol is ListenerProtocol.HTTPS
                else None
            )
            by_port[listener.frontend_port] = ListenerRuntime(listener, rule, ctx)
        return by_port

    def local_port_for(self, listener: Listener) -> int:
        return self.listen.get(listener.frontend_port, listener.frontend_port)

    def url(self, listener_name: str, host: str = "localhost") -> str:
        listener = self.config.listener(listener_name)
        scheme = "https" if listener.protocol is ListenerProtocol.HTTPS else "http"
        return f"{scheme}://{host}:{self.ports[listener_name]}/"

    def _record(self, record: AccessRecord) -> None:
        self.access_log.append(record)

    async def _bind(self, runtime: ListenerRuntime) -> trio.SocketListener:
        listener = runtime.listener
        port = self.local_port_for(listener)
        if 0 < port < 1024 and hasattr(os, "geteuid") and os.geteuid() != 0:
            raise StartupError(
                f"listener '{listener.name}' uses port {port}, which needs root",
                file=self.config.file,
                path=listener.path,
                fix=f"map it to a free local port: --listen {listener.frontend_port}=8{port:03d} "
                f"(or --listen {listener.frontend_port}=0 for any free port)",
                code="EmulatorPrivilegedPort",
            )
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await sock.bind((self.bind, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {self.bind} is already in use (listener '{listener.name}')",
                    fix=f"stop what uses it, or choose another port: --listen {listener.frontend_port}=PORT",
                    code="EmulatorPortInUse",
                ) from exc
            raise StartupError(
                f"cannot listen on {self.bind}:{port} for listener '{listener.name}': {exc.strerror}",
                fix="check --bind and --listen",
                code="EmulatorBindFailed",
            ) from exc
        self.ports[listener.name] = sock.getsockname()[1]
        return trio.SocketListener(sock)

    async def serve(
        self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every listener, report ``self`` as started, then serve until cancelled.

        Raises:
            StartupError: a port is busy or needs root; nothing stays bound then.
        """
        listeners: list[tuple[trio.SocketListener, ListenerRuntime]] = []
        try:
            for runtime in self._runtimes.values():
                listeners.append((await self._bind(runtime), runtime))
        except StartupError:
            for sock_listener, _ in listeners:
                await sock_listener.aclose()
            raise
        backend = BackendClient()
        try:
            async with trio.open_nursery() as nursery:
                for sock_listener, runtime in listeners:
                    nursery.start_soon(self._accept_loop, sock_listener, runtime, backend, nursery)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                await backend.aclose()
                for sock_listener, _ in listeners:
                    await sock_listener.aclose()

    async def _accept_loop(
        self,
        sock_listener: trio.SocketListener,
        runtime: ListenerRuntime,
        backend: BackendClient,
        nursery: trio.Nursery,
    ) -> None:
        while True:
            try:
                stream = await sock_listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    LOGGER.error(  # noqa: TRY400 - a known resource limit, not a bug
                        "accept.failed listener=%s: %s; retrying in 0.1 s",
                        runtime.listener.name,
                        exc,
                    )
                    await trio.sleep(0.1)
                    continue
                raise
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(serve_connection, stream, runtime, backend, self._record)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """``async with gateway.running():`` — serve in the background for the block's duration."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.serve)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()
