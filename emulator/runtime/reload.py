"""Hot reload for ``run``: ``--watch`` (a template or parameters file changed) and ``SIGHUP``.

The new configuration is loaded and checked first; if it is invalid, the gateway serving now
keeps serving and the problems are reported. If it is valid, the current gateway is drained
(its listening sockets close at once, idle keep-alive connections close, requests in flight
finish within the drain's grace) and a new gateway for the new configuration binds its ports
right after: new connections get the new configuration, a port the new template added is
bound, a port it removed stays closed. Between the old sockets closing and the new ones
binding, a connection attempt may be refused for a few milliseconds.

Files are watched by polling their modification time and size (no extra dependency, works on
every file system, including bind mounts into containers).
"""

from __future__ import annotations

import errno
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from emulator.errors import EmulatorError, StartupError
from emulator.model import GatewayConfig
from emulator.runtime.gateway import DRAIN_GRACE_S, Gateway, Readiness

__all__ = ["WATCH_INTERVAL_S", "Reloader", "file_stamps"]

LOGGER = logging.getLogger("emulator.reload")

#: How often watched files are looked at: quick enough for an edit-and-retry loop, cheap.
WATCH_INTERVAL_S: Final = 0.5
#: A port the old gateway just released may take a moment to be free for the new one.
REBIND_ATTEMPTS: Final = 50
REBIND_PAUSE_S: Final = 0.02


def file_stamps(paths: Sequence[Path]) -> tuple[tuple[float, int] | None, ...]:
    """Modification time and size of each file (None when missing): a change means reload."""
    stamps: list[tuple[float, int] | None] = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_mtime, stat.st_size))
    return tuple(stamps)


@dataclass(eq=False)
class Reloader:
    """Serves one gateway at a time and swaps it for a new one on a valid reload.

    Args:
        gateway: the gateway to start with (not serving yet).
        load: reads and checks the configuration again; raises EmulatorError when invalid.
        make_gateway: a gateway for a newly loaded configuration.
        on_ready: called after each gateway (the first one included) is serving.
        on_error: called with each problem of a reload that was refused.
        watched: the files whose change triggers a reload (``--watch``); empty for none.
    """

    gateway: Gateway
    load: Callable[[], GatewayConfig]
    make_gateway: Callable[[GatewayConfig], Gateway]
    on_ready: Callable[[Gateway], None]
    on_error: Callable[[EmulatorError], None]
    watched: Sequence[Path] = ()
    reloads: int = 0
    _scopes: dict[int, trio.CancelScope] = field(default_factory=dict)

    def readiness(self) -> Readiness:
        """The current gateway's readiness (the health endpoint asks this object)."""
        return self.gateway.readiness()

    async def _serve_one(
        self,
        gateway: Gateway,
        *,
        task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            self._scopes[id(gateway)] = scope
            try:
                await gateway.serve(task_status=task_status)
            finally:
                self._scopes.pop(id(gateway), None)

    async def run(self, nursery: trio.Nursery) -> None:
        """Start the first gateway, then reload on SIGHUP or a watched change, until cancelled.

        Raises:
            StartupError: the first gateway cannot bind.
        """
        # Both before the ready lines: a script may edit a file or send SIGHUP as soon as it
        # sees them, and neither may be missed (an unhandled SIGHUP would end the process).
        seen = file_stamps(self.watched)
        await nursery.start(self._on_signal, nursery)
        await nursery.start(self._serve_one, self.gateway)
        self.on_ready(self.gateway)
        if self.watched:
            nursery.start_soon(self._watch, nursery, seen)

    async def _on_signal(
        self,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                await self.reload(nursery, "SIGHUP")

    async def _watch(
        self, nursery: trio.Nursery, seen: tuple[tuple[float, int] | None, ...]
    ) -> None:
        while True:
            await trio.sleep(WATCH_INTERVAL_S)
            now = file_stamps(self.watched)
            if now != seen:
                seen = now
                await self.reload(nursery, "a watched file changed")

    async def reload(self, nursery: trio.Nursery, reason: str) -> bool:
        """Load again; swap gateways when the result is valid. True when it was swapped."""
        LOGGER.info("reload.start reason=%s", reason)
        try:
            config = self.load()
            new = self.make_gateway(config)
        except EmulatorError as exc:
            problems = getattr(exc, "problems", None) or [exc]
            for problem in problems:
                self.on_error(problem)
            LOGGER.warning(
                "reload.refused problems=%s: the previous configuration serves", len(problems)
            )
            return False
        old = self.gateway
        nursery.start_soon(self._retire, old)
        for attempt in range(REBIND_ATTEMPTS):
            try:
                await nursery.start(self._serve_one, new)
                break
            except StartupError as exc:
                busy = exc.error_code == "EmulatorPortInUse" or (
                    isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EADDRINUSE
                )
                if not busy or attempt == REBIND_ATTEMPTS - 1:
                    # The old gateway is already closing: nothing may serve now. Say so loudly.
                    self.on_error(exc)
                    raise
                await trio.sleep(REBIND_PAUSE_S)
        self.gateway = new
        self.reloads += 1
        LOGGER.info("reload.done reason=%s", reason)
        self.on_ready(new)
        return True

    async def _retire(self, old: Gateway) -> None:
        await old.drain(DRAIN_GRACE_S)
        scope = self._scopes.get(id(old))
        if scope is not None:
            scope.cancel()
