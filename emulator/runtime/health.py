"""Health and readiness over HTTP: ``GET /health`` and ``GET /health/live``.

The dashboard serves both routes on its own port; ``run --health-port PORT`` serves them alone
(no dashboard), for a container ``HEALTHCHECK``, a Kubernetes probe or ``appgw-emulator wait``.

``/health`` is readiness: 200 with each listener's bound address once every listener of the
gateway is bound, 503 before (the endpoint is started before the listeners bind, so a client can
see "not yet") and while draining after a stop signal, so a load balancer stops sending new
connections while requests in flight finish. ``/health/live`` is liveness: 200 while the process
runs, draining included, so an orchestrator does not kill a pod that is stopping on purpose.

Resource ownership: :func:`serve_health` owns its listening socket and each connection;
cancelling it closes them before it returns.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import h11
import trio

from emulator.errors import StartupError

if TYPE_CHECKING:
    from emulator.runtime.gateway import Readiness

__all__ = ["HEALTH_PATH", "LIVE_PATH", "bind_plain", "health_response", "respond", "serve_health"]

LOGGER = logging.getLogger("emulator.health")

HEALTH_PATH: Final = "/health"
LIVE_PATH: Final = "/health/live"
#: A probe's request head is a few hundred bytes; anything larger is not a probe.
MAX_HEAD_BYTES: Final = 8 * 1024
#: A probe that has not sent its request within this time is dropped (probes time out at 1 s
#: by default in Kubernetes; this only bounds a stuck client).
REQUEST_TIMEOUT_S: Final = 10.0
RECEIVE_BYTES: Final = 8 * 1024


def health_response(path: str, readiness: Readiness) -> tuple[int, dict[str, object]] | None:
    """The status and JSON document for a health path, or None for any other path."""
    if path == LIVE_PATH:
        return 200, {"live": True}
    if path != HEALTH_PATH:
        return None
    state = readiness.state
    if state in ("new", "binding"):
        state = "starting"
    document: dict[str, object] = {
        "ready": readiness.ready,
        "state": state,
        "listeners": dict(readiness.listeners),
    }
    return (200 if readiness.ready else 503), document


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_plain(host: str, port: int, *, port_flag: str = "--health-port") -> socket.socket:
    """A listening stdlib socket for the health routes, for a process without a trio loop.

    The ``--workers`` supervisor answers ``/health`` itself and must not run trio (it forks),
    so it binds here, with the same errors as :func:`serve_health`.

    Raises:
        StartupError: the port is busy or the address cannot be bound.
    """
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _bind_error(host, port, port_flag, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, port_flag, exc) from exc
    return sock


def _bind_error(host: str, port: int, port_flag: str, exc: OSError) -> StartupError:
    where = _address(host, port)
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"the health port {where} is already in use",
            fix=f"stop what uses it, or choose another port: {port_flag} PORT",
            code="EmulatorPortInUse",
        )
    return StartupError(
        f"cannot serve the health endpoint on {where}: {exc.strerror or exc}",
        fix=f"check --dashboard-bind and {port_flag}",
        code="EmulatorBindFailed",
    )


async def serve_health(
    readiness: Callable[[], Readiness],
    *,
    host: str,
    port: int,
    port_flag: str = "--health-port",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the two health routes on ``host:port`` until cancelled; started with the URL.

    Raises:
        StartupError: the port is busy or the address cannot be bound.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise _bind_error(host, port, port_flag, exc) from exc
    bound = listeners[0].socket.getsockname()[1]

    async def one(stream: trio.SocketStream) -> None:
        try:
            await _answer(stream, readiness)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            LOGGER.debug("health.connection_closed")
        except h11.RemoteProtocolError as exc:
            LOGGER.debug("health.bad_request: %s", exc)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    try:
        async with trio.open_nursery() as nursery:
            task_status.started(f"http://{_address(host, bound)}{HEALTH_PATH}")
            await trio.serve_listeners(one, listeners, handler_nursery=nursery)
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()


async def _answer(stream: trio.SocketStream, readiness: Callable[[], Readiness]) -> None:
    """One request, one response, then close: probes open a connection per check."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    with trio.fail_after(REQUEST_TIMEOUT_S):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
                continue
            if isinstance(event, h11.Request):
                break
            return  # closed before a request
    await stream.send_all(respond(conn, event, readiness()))


def respond(
    conn: h11.Connection,
    request: h11.Request,
    readiness: Readiness,
    details: Mapping[str, object] | None = None,
) -> bytes:
    """The bytes of the one response to ``request`` (then the connection closes).

    Shared by the trio endpoint above and the ``--workers`` supervisor, which answers the same
    routes from its own loop; ``details`` are further fields of the ``/health`` document.
    """
    method = request.method.decode("ascii", "replace")
    path = request.target.decode("latin-1").split("?", 1)[0]
    answer = health_response(path, readiness)
    document: dict[str, object]
    if method not in ("GET", "HEAD"):
        status, document = 405, {"error": "use GET"}
    elif answer is None:
        status, document = 404, {"error": f"no such page: {path}; try {HEALTH_PATH}"}
    else:
        status, document = answer
        if details and path == HEALTH_PATH:
            document = {**document, **details}
    body = json.dumps(document).encode("utf-8")
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
    ]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    if method != "HEAD":
        data += conn.send(h11.Data(data=body))
    return data
