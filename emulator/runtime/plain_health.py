"""The health routes for a process that runs no trio loop: the ``--workers`` supervisor.

The supervisor forks its workers, so it must never have a trio loop running; it waits in a
``selectors`` loop of its own instead, and this module answers ``GET /health`` and
``/health/live`` from that loop: non-blocking sockets, one h11 connection per probe, the same
responses as :mod:`emulator.runtime.health` (:func:`~emulator.runtime.health.respond`).

Every registration's ``data`` is a callable taking the ready events, which the owner of the
loop calls; a probe that has not sent its request within ``REQUEST_TIMEOUT_S`` is dropped
(:meth:`PlainHealthServer.expire`), and when ``MAX_CLIENTS`` connections are open the oldest
goes, so connections held open idle cannot keep a real probe from an answer.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import h11

from emulator.runtime.health import HEALTH_PATH, MAX_HEAD_BYTES, REQUEST_TIMEOUT_S, respond

if TYPE_CHECKING:
    from emulator.runtime.gateway import Readiness

__all__ = ["MAX_CLIENTS", "PlainHealthServer", "health_url"]

LOGGER = logging.getLogger("emulator.health")

#: Health connections held at once; a new one beyond it closes the oldest.
MAX_CLIENTS: Final = 32
RECEIVE_BYTES: Final = 8 * 1024

#: What the owner provides: the readiness, and further fields of the ``/health`` document.
ReadinessSource = Callable[[], tuple["Readiness", Mapping[str, object]]]


def health_url(sock: socket.socket) -> str:
    """The ``/health`` URL of a listening socket made by ``health.bind_plain``."""
    host, port = sock.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"http://{where}{HEALTH_PATH}"


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    deadline: float
    conn: h11.Connection = field(
        default_factory=lambda: h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    )
    out: bytes = b""


class PlainHealthServer:
    """Answers the health routes on ``sock`` (bound and listening) from ``selector``'s loop."""

    def __init__(
        self, sock: socket.socket, selector: selectors.BaseSelector, readiness: ReadinessSource
    ) -> None:
        self._sock = sock
        self._selector = selector
        self._readiness = readiness
        self._clients: dict[int, _Client] = {}
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, self._accept)

    @property
    def url(self) -> str:
        return health_url(self._sock)

    def deadline(self) -> float | None:
        """When the next slow probe is to be dropped (for the loop's timeout)."""
        return min((client.deadline for client in self._clients.values()), default=None)

    def expire(self, now: float) -> None:
        """Drop the probes that did not send their request in time."""
        for client in list(self._clients.values()):
            if now >= client.deadline:
                self._close(client)

    def close(self) -> None:
        """Close every probe connection (the listening socket stays the caller's)."""
        for client in list(self._clients.values()):
            self._close(client)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._sock)

    def forget(self) -> None:
        """In a forked child: close this process's copies of the sockets, touching no loop."""
        for client in self._clients.values():
            client.sock.close()
        self._clients.clear()

    def _accept(self, _events: int) -> None:
        while True:
            try:
                sock, _peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    LOGGER.warning("health.accept_failed: %s", exc)
                    return
                raise
            if len(self._clients) >= MAX_CLIENTS:
                self._close(min(self._clients.values(), key=lambda c: c.deadline))
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + REQUEST_TIMEOUT_S)
            self._clients[sock.fileno()] = client
            self._selector.register(
                sock, selectors.EVENT_READ, lambda events, c=client: self._serve(c, events)
            )

    def _serve(self, client: _Client, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE and client.out:
                sent = client.sock.send(client.out)
                client.out = client.out[sent:]
                if not client.out:
                    self._close(client)
                return
            data = client.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        try:
            client.conn.receive_data(data)
            event = client.conn.next_event()
        except h11.RemoteProtocolError as exc:
            LOGGER.debug("health.bad_request: %s", exc)
            self._close(client)
            return
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):
            self._close(client)  # closed before a request
            return
        readiness, details = self._readiness()
        client.out = respond(client.conn, event, readiness, details)
        self._selector.modify(
            client.sock, selectors.EVENT_WRITE, lambda events, c=client: self._serve(c, events)
        )

    def _close(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd >= 0 and self._clients.pop(fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(client.sock)
        client.sock.close()
